"""Tests for aen_lib.data.synthetic (book: paper facts, synthetic protocol): spiked dictionary, sampler, resumable stream, geometry statistics."""

import math

import pytest
import torch

from aen_lib.data.synthetic import (
    SpikedDictionaryConfig,
    SpikedDictionaryData,
    active_gram_stats,
    dictionary_statistics,
    irrepresentable_condition,
    mean_abs_offdiag,
    mutual_coherence,
    sample_supports,
    spiked_dictionary,
)

# ---------------------------------------------------------------------------------------------------- dictionary


def test_spiked_dictionary_formula_and_unit_rows():
    n, m, rho = 8, 5, 0.4
    D = spiked_dictionary(n, m, rho, torch.Generator().manual_seed(3), dtype=torch.float64)
    # independent re-computation from the same draws (v first, then u)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    u = torch.randn(m, n, generator=g, dtype=torch.float64)
    v, u = v / v.norm(), u / u.norm(dim=1, keepdim=True)
    d = math.sqrt(0.6) * u + math.sqrt(0.4) * v
    torch.testing.assert_close(D, d / d.norm(dim=1, keepdim=True), atol=1e-15, rtol=0)
    assert D.shape == (m, n)
    torch.testing.assert_close(D.norm(dim=1), torch.ones(m, dtype=torch.float64), atol=1e-14, rtol=0)


def test_mean_abs_offdiag_tracks_rho():
    # book: paper facts, synthetic protocol: mean |offdiag| ≈ rho; at rho=0 it is E|N(0, 1/n)| = sqrt(2/(pi n)).
    D0 = spiked_dictionary(256, 300, 0.0, torch.Generator().manual_seed(0))
    assert mean_abs_offdiag(D0) == pytest.approx(math.sqrt(2 / (math.pi * 256)), rel=0.03)
    D9 = spiked_dictionary(256, 300, 0.9, torch.Generator().manual_seed(0))
    assert mean_abs_offdiag(D9) == pytest.approx(0.9, abs=0.01)


# ---------------------------------------------------------------------------------------------------- sampler


def _small_cfg(**kw):
    base = dict(n=12, m=20, k=3, rho=0.3, seed=5)
    base.update(kw)
    return SpikedDictionaryConfig(**base)


def test_sample_exactly_k_in_range_and_x_is_hD():
    data = SpikedDictionaryData(_small_cfg(), dtype=torch.float64)
    x, h = data.sample(500)
    assert x.shape == (500, 12) and h.shape == (500, 20)
    assert ((h != 0).sum(1) == 3).all()
    nz = h[h != 0]
    assert (nz >= 1).all() and (nz <= 3).all()
    torch.testing.assert_close(x, h @ data.dictionary, atol=1e-13, rtol=0)
    assert data.samples_drawn == 500


def test_sample_support_uniform_and_magnitudes_uniform():
    data = SpikedDictionaryData(_small_cfg(), dtype=torch.float64)
    N = 20000
    _, h = data.sample(N)
    counts = (h != 0).sum(0).double()  # each atom fires with prob k/m = 0.15
    p = 3 / 20
    sd = math.sqrt(N * p * (1 - p))
    assert (counts - N * p).abs().max() < 5 * sd
    mags = h[h != 0]
    # U[1,3]: mean 2, variance 1/3; the mean of 60000 draws has sd sqrt(1/3/60000)
    assert abs(mags.mean().item() - 2.0) < 5 * math.sqrt(1 / 3 / mags.numel())
    assert abs(mags.var().item() - 1 / 3) < 0.01


def test_signed_and_noise_options():
    data = SpikedDictionaryData(_small_cfg(signed=True, noise_std=0.1), dtype=torch.float64)
    x, h = data.sample(4000)
    nz = h[h != 0]
    assert (nz.abs() >= 1).all() and (nz.abs() <= 3).all()
    assert abs((nz < 0).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / nz.numel())
    resid = x - h @ data.dictionary
    assert resid.std().item() == pytest.approx(0.1, rel=0.02)


def test_reproducible_stream_and_seed_dependence():
    a = SpikedDictionaryData(_small_cfg())
    b = SpikedDictionaryData(_small_cfg())
    c = SpikedDictionaryData(_small_cfg(seed=6))
    assert torch.equal(a.dictionary, b.dictionary)
    assert not torch.equal(a.dictionary, c.dictionary)
    for _ in range(3):
        xa, ha = a.sample(7)
        xb, hb = b.sample(7)
        assert torch.equal(xa, xb) and torch.equal(ha, hb)
    # the dictionary is drawn first from the same generator: re-create it by hand
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(a.dictionary, spiked_dictionary(12, 20, 0.3, g), atol=0, rtol=0)


def test_state_dict_resumes_bit_identically():
    a = SpikedDictionaryData(_small_cfg())
    a.sample(5)
    state = a.state_dict()
    cont = [a.sample(4) for _ in range(2)]
    b = SpikedDictionaryData(_small_cfg())
    b.load_state_dict(state)
    assert b.samples_drawn == 5
    for xa, ha in cont:
        xb, hb = b.sample(4)
        assert torch.equal(xa, xb) and torch.equal(ha, hb)
    with pytest.raises(ValueError, match="does not match"):
        SpikedDictionaryData(_small_cfg(seed=1)).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"config": state["config"]})


def test_config_validation_and_round_trip():
    cfg = _small_cfg()
    assert SpikedDictionaryConfig.from_dict(cfg.to_dict()) == cfg
    assert SpikedDictionaryConfig() == SpikedDictionaryConfig(n=256, m=1024, k=16, rho=0.0)
    with pytest.raises(ValueError, match="k must be <= m"):
        SpikedDictionaryConfig(m=10, k=11)
    with pytest.raises(ValueError, match="rho"):
        SpikedDictionaryConfig(rho=1.0)
    with pytest.raises(ValueError, match="noise_std"):
        SpikedDictionaryConfig(noise_std=-0.1)
    with pytest.raises(ValueError, match="magnitude_high"):
        SpikedDictionaryConfig(magnitude_low=3.0, magnitude_high=1.0)
    with pytest.raises(ValueError, match="unknown"):
        SpikedDictionaryConfig.from_dict({"n": 4, "bogus": 1})
    with pytest.raises(ValueError, match="batch_size"):
        SpikedDictionaryData(cfg).sample(0)
    with pytest.raises(TypeError, match="generator"):
        spiked_dictionary(4, 4, 0.0, 0)


# ---------------------------------------------------------------------------------------------------- statistics


def _three_atoms():
    s = 1 / math.sqrt(2)
    return torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]], dtype=torch.float64)


def test_statistics_hand_values():
    D = _three_atoms()
    s = 1 / math.sqrt(2)
    assert mutual_coherence(D) == pytest.approx(s)
    assert mean_abs_offdiag(D) == pytest.approx((0 + s + s) * 2 / 6)
    # normalisation: scaling an atom does not change cosines
    assert mutual_coherence(D * torch.tensor([[2.0], [1.0], [0.5]], dtype=torch.float64)) == pytest.approx(s)
    # support {0,1}: G_AA = I, row of atom 2 is [s, s] -> |s + s|
    assert irrepresentable_condition(D, torch.tensor([0, 1])).item() == pytest.approx(2 * s)
    # with sign vector [1, -1] the two contributions cancel
    assert irrepresentable_condition(D, torch.tensor([0, 1]), torch.tensor([1.0, -1.0])).item() == pytest.approx(0.0, abs=1e-15)
    # support {0}: G_AA = 1, complement correlations [0, s]
    assert irrepresentable_condition(D, torch.tensor([[0], [2]])).tolist() == pytest.approx([s, s])
    # active Gram on {0, 2}: eigenvalues 1 ± s
    st = active_gram_stats(D, supports=torch.tensor([[0, 2], [0, 1]]))
    assert st["lambda_min"].tolist() == pytest.approx([1 - s, 1.0])
    assert st["cond"].tolist() == pytest.approx([(1 + s) / (1 - s), 1.0])
    assert st["lambda_min_mean"] == pytest.approx((1 - s + 1) / 2)


def test_irc_matches_dense_formula_on_random_dictionary():
    D = spiked_dictionary(10, 30, 0.5, torch.Generator().manual_seed(1), dtype=torch.float64)
    sup = sample_supports(30, 4, 3, torch.Generator().manual_seed(2))
    assert sup.shape == (3, 4) and (sup[:, 1:] > sup[:, :-1]).all()
    G = D @ D.T
    for i in range(3):
        A = sup[i]
        Ac = torch.tensor([j for j in range(30) if j not in A.tolist()])
        ref = (G[Ac][:, A] @ torch.linalg.inv(G[A][:, A]) @ torch.ones(4, dtype=torch.float64)).abs().max()
        assert irrepresentable_condition(D, A).item() == pytest.approx(ref.item(), rel=1e-10)


# Digest §4.1 table (n=256, m=1024, k=16; 100 sampled active sets), printed values and the half-unit of the
# last printed digit (the rounding slack).
TABLE = {
    0.0: {"mean_abs_offdiag": (0.05, 0.005), "max_abs_offdiag": (0.32, 0.005), "lambda_min_mean": (0.625, 0.0005),
          "cond_mean": (2.3, 0.05), "irc_mean": (0.868, 0.0005)},
    0.9: {"mean_abs_offdiag": (0.90, 0.005), "max_abs_offdiag": (0.93, 0.005), "lambda_min_mean": (0.063, 0.0005),
          "cond_mean": (230.0, 5.0), "irc_mean": (1.003, 0.0005)},
}


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_statistics_match_the_authors_table(rho):
    """Compare with the authors' dictionary-statistics table (their reference implementation) with a tolerance derived from our own sampling spread.

    The table comes from one dictionary and 100 supports. We draw S dictionaries (different seeds) with
    `n_sets` supports each. For a per-support statistic the spread of a table-like value (one dictionary, 100 sets)
    is estimated by var_between + var_within/100, where var_between is the variance of our per-dictionary means
    (conservative: it still contains var_within/n_sets). For per-dictionary scalars the spread is their variance
    over seeds. Tolerance = 4 * sqrt(spread + uncertainty of our mean) + the table's rounding slack.
    """
    S, n_sets = 5, 40
    per_dict = {key: [] for key in TABLE[rho]}
    within = {"lambda_min_mean": [], "cond_mean": [], "irc_mean": []}
    for seed in range(S):
        data = SpikedDictionaryData(SpikedDictionaryConfig(n=256, m=1024, k=16, rho=rho, seed=seed))
        st = dictionary_statistics(data.dictionary, 16, n_sets, torch.Generator().manual_seed(100 + seed))
        for key in per_dict:
            per_dict[key].append(st[key])
        within["lambda_min_mean"].append(st["lambda_min_std"] ** 2)
        within["cond_mean"].append(st["cond_std"] ** 2)
        within["irc_mean"].append(st["irc_std"] ** 2)
    for key, (table_value, slack) in TABLE[rho].items():
        vals = torch.tensor(per_dict[key], dtype=torch.float64)
        mean, var_between = vals.mean().item(), vals.var().item()
        spread = var_between + (sum(within[key]) / S / 100 if key in within else 0.0)
        tol = 4 * math.sqrt(spread + var_between / S) + slack
        assert abs(mean - table_value) <= tol, f"rho={rho} {key}: ours {mean:.4f} vs table {table_value} (tol {tol:.4f})"


def test_statistics_bad_input():
    with pytest.raises(ValueError, match="support indices"):
        irrepresentable_condition(_three_atoms(), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="m >= 2"):
        mutual_coherence(torch.ones(1, 3))
    with pytest.raises(ValueError, match="needs either"):
        active_gram_stats(_three_atoms())
    with pytest.raises(ValueError, match="k must be <= m"):
        sample_supports(3, 4, 1, torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stream_equals_cpu_stream():
    cpu = SpikedDictionaryData(_small_cfg(), dtype=torch.float64)
    gpu = SpikedDictionaryData(_small_cfg(), device="cuda", dtype=torch.float64)
    assert gpu.dictionary.device.type == "cuda"
    torch.testing.assert_close(gpu.dictionary.cpu(), cpu.dictionary, atol=0, rtol=0)
    xc, hc = cpu.sample(16)
    xg, hg = gpu.sample(16)
    torch.testing.assert_close(hg.cpu(), hc, atol=0, rtol=0)
    torch.testing.assert_close(xg.cpu(), xc, atol=1e-12, rtol=0)
