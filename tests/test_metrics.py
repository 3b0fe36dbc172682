"""Tests for aen_lib.evaluation.metrics (book: paper facts, synthetic protocol) against hand computations on tiny tensors."""

import math

import numpy as np
import pytest
import torch

from aen_lib.evaluation.metrics import (
    AtomMatch,
    DeadLatentTracker,
    StreamingExplainedVariance,
    explained_variance,
    explained_variance_from_sums,
    feature_utilisation,
    firing_entropy,
    firing_rates,
    gini,
    l0,
    match_atoms,
    mse,
    nearest_neighbour_coherence,
    shrinkage_ratio,
    support_metrics,
    top_mass,
)

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


# ---------------------------------------------------------------------------------------------------- L0, MSE


def test_l0_threshold_and_mean():
    h = torch.tensor([[0.0, 1e-13, 2.0], [-3.0, 0.5, 1e-11]])
    assert l0(h).item() == pytest.approx((1 + 3) / 2)
    assert l0(h, thresh=1.0).item() == pytest.approx((1 + 1) / 2)


def test_mse_mean_over_batch_and_dims():
    assert mse(X, torch.tensor([[1.0, 0.0], [0.0, 4.0]])).item() == pytest.approx((0 + 4 + 9 + 0) / 4)


# ---------------------------------------------------------------------------------------------------- EV


def test_explained_variance_hand_values():
    # column variances (biased, over the 2 rows): var([1,3]) = 1, var([2,4]) = 1 -> denominator 2
    x_hat = torch.tensor([[1.0, 0.0], [0.0, 4.0]])  # residual columns [0,3] (var 2.25) and [2,0] (var 1)
    assert explained_variance(X, x_hat).item() == pytest.approx(1 - 3.25 / 2)
    assert explained_variance(X, X).item() == pytest.approx(1.0)


def test_constant_bias_error_paper_vs_streaming():
    c = torch.tensor([1.0, -1.0])
    x_hat = X + c
    # paper's residual-centred EV ignores a constant offset
    assert explained_variance(X, x_hat).item() == pytest.approx(1.0)
    # streaming EV: E||e||² = 2, E||x||² = 15, ||E x||² = 2² + 3² = 13 -> 1 - 2/2 = 0
    ev = StreamingExplainedVariance()
    ev.update(X, x_hat)
    assert ev.compute().item() == pytest.approx(0.0, abs=1e-15)
    assert ev.compute(centre_residual=True).item() == pytest.approx(1.0)


def test_streaming_ev_cross_batch_equals_pooled_and_relation_to_paper():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g) * 3 + 1
    x_hat = x + 0.5 * torch.randn(50, 6, generator=g) + 0.2
    ev = StreamingExplainedVariance()
    for chunk in (slice(0, 7), slice(7, 30), slice(30, 50)):
        ev.update(x[chunk], x_hat[chunk])
    assert ev.n_tokens == 50
    x64, e64 = x.double(), x.double() - x_hat.double()
    var_x = (x64**2).sum(1).mean() - (x64.mean(0) ** 2).sum()
    expected = 1 - (e64**2).sum(1).mean() / var_x
    assert ev.compute().item() == pytest.approx(expected.item(), rel=1e-12)
    # on the pooled batch, the residual-centred streaming form equals the paper's metric ...
    assert ev.compute(centre_residual=True).item() == pytest.approx(explained_variance(x, x_hat).item(), rel=1e-5)
    # ... and the two differ by exactly ||E e||² / Var(x)
    gap = ev.compute(centre_residual=True) - ev.compute()
    assert gap.item() == pytest.approx(((e64.mean(0) ** 2).sum() / var_x).item(), rel=1e-10)


def test_streaming_ev_state_dict_and_errors():
    a = StreamingExplainedVariance()
    with pytest.raises(ValueError, match="before any update"):
        a.compute()
    a.update(X, X * 0.9)
    b = StreamingExplainedVariance()
    b.load_state_dict(a.state_dict())
    a.update(X + 1, X)
    b.update(X + 1, X)
    assert a.compute().item() == b.compute().item()
    with pytest.raises(ValueError, match="features"):
        a.update(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        explained_variance(X, X[:, :1])


def test_the_three_ev_callers_agree_with_each_other_and_with_sklearn():
    """explained_variance, the streaming form with centred residual, and the trainer's logged EV are one formula;
    scikit-learn's variance-weighted explained variance is the same metric, computed independently."""
    from sklearn.metrics import explained_variance_score

    from aen_lib.training.train import batch_metrics

    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g) * torch.linspace(0.5, 3, 8) + 2.0  # features of unequal scale, off-centre
    x_hat = 0.8 * x + 0.3 * torch.randn(64, 8, generator=g) + 0.1
    paper = explained_variance(x, x_hat).item()
    ev = StreamingExplainedVariance()
    ev.update(x, x_hat)
    streaming = ev.compute(centre_residual=True).item()
    logged = batch_metrics(x, x_hat[None], torch.zeros(1, 64, 4))[0]["ev"]
    sk = explained_variance_score(x.double().numpy(), x_hat.double().numpy(), multioutput="variance_weighted")
    assert 0.5 < sk < 0.99
    assert paper == pytest.approx(sk, rel=1e-6)
    assert streaming == pytest.approx(sk, rel=1e-12) and logged == pytest.approx(sk, rel=1e-12)


def test_explained_variance_from_sums_hand_cases():
    """EV is 1 only for a perfect reconstruction and 0 for predicting the mean; the residual-centred form forgives a
    constant offset and the globally centred one does not (an input that flips the two)."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(32, 5, generator=g) + 3.0).double()

    def ev(x_hat, centre_residual=True):
        e = x - x_hat
        return explained_variance_from_sums(x.shape[0], x.sum(0), (x * x).sum(), e.sum(0), (e * e).sum(),
                                            centre_residual=centre_residual).item()

    mean = x.mean(0).expand_as(x)
    for centre in (True, False):
        assert ev(x, centre) == 1.0
        assert ev(mean, centre) == pytest.approx(0.0, abs=1e-12)
        assert ev(0.9 * x + 0.1 * mean, centre) == pytest.approx(1 - 0.01, rel=1e-12)  # e = 0.1 (x − E x)
    assert ev(x + 0.5) == pytest.approx(1.0, abs=1e-12)
    assert ev(x + 0.5, centre_residual=False) == pytest.approx(1 - 5 * 0.25 / x.var(0, correction=0).sum().item())
    assert ev(torch.zeros_like(x)) == pytest.approx(0.0, abs=1e-12)  # x̂ = 0: Var(e) = Var(x)
    assert ev(torch.zeros_like(x), centre_residual=False) < -1  # E‖x‖² ≫ Var(x) here
    # batched: count and sums with a leading member dimension, one EV per member
    e = torch.stack([x - x, x - mean])  # [2, B, n]
    both = explained_variance_from_sums(torch.tensor([32.0, 32.0], dtype=torch.float64), x.sum(0).expand(2, -1),
                                        (x * x).sum().expand(2), e.sum(1), (e * e).sum((1, 2)))
    assert both.shape == (2,) and both[0].item() == 1.0 and both[1].item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------- dead latents


def test_dead_tracker_step_window_logic():
    t = DeadLatentTracker(3, window=2, unit="steps")
    t.update(torch.tensor([[1.0, 0.0, 0.0]]))
    assert t.dead_mask().tolist() == [False, True, True] and not t.window_complete
    t.update(torch.tensor([[0.0, 0.0, 0.0]]))
    assert t.dead_mask().tolist() == [False, True, True] and t.window_complete
    assert t.dead_fraction().item() == pytest.approx(2 / 3)
    # third step starts a new window: latent 0's firing from step 1 is forgotten
    t.update(torch.tensor([[0.0, -1.0, 0.0]]))  # |h| counts, so a negative code fires
    assert t.dead_mask().tolist() == [True, False, True]
    assert t.last_window_dead.tolist() == [False, True, True] and t.windows_completed == 1
    t.update(torch.tensor([[0.0, 0.0, 1e-13]]))  # below the 1e-12 threshold: still dead
    assert t.dead_mask().tolist() == [True, False, True]
    t.update(torch.tensor([[0.0, 0.0, 5.0]]))
    assert t.dead_mask().tolist() == [True, True, False]
    assert t.last_window_dead.tolist() == [True, False, True] and t.windows_completed == 2
    assert t.total_steps == 5 and t.total_tokens == 5


def test_dead_tracker_token_window():
    t = DeadLatentTracker(2, window=5, unit="tokens")
    t.update(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # 2 tokens
    t.update(torch.zeros(2, 2))  # 4 tokens: not complete
    assert not t.window_complete and t.dead_mask().tolist() == [False, True]
    t.update(torch.zeros(2, 2))  # 6 >= 5: complete (batches are not split)
    assert t.window_complete and t.tokens_in_window == 6
    t.update(torch.zeros(1, 2), tokens=128)  # explicit token count; the new window starts here
    assert t.dead_mask().tolist() == [True, True] and t.tokens_in_window == 128 and t.window_complete
    assert t.total_tokens == 134 and t.steps_in_window == 1


def test_dead_tracker_firing_counts_follow_the_window():
    g = torch.Generator().manual_seed(1)
    hs = [torch.relu(torch.randn(5, 4, generator=g) - 0.8) for _ in range(5)]
    t = DeadLatentTracker(4, window=2, unit="steps")
    for h in hs:
        t.update(h, fired=(h.abs() > t.threshold).sum(0))
    # five updates in windows of two: the current window holds the fifth batch only
    assert t.steps_in_window == 1
    assert t.window_counts().tolist() == (hs[4] > 0).sum(0).double().tolist()
    # never fired in the window <=> counted zero times
    assert torch.equal(t.window_counts() == 0, t.dead_mask())
    t2 = DeadLatentTracker(4, window=3, unit="steps")
    for h in hs[:3]:
        t2.update(h, fired=(h > 0).sum(0))
    assert t2.window_counts().tolist() == sum((h > 0).sum(0) for h in hs[:3]).double().tolist()
    state = t2.state_dict()
    t3 = DeadLatentTracker(4, window=3, unit="steps")
    t3.load_state_dict(state)
    assert torch.equal(t3.window_counts(), t2.window_counts())
    del state["counts"]  # a state saved before counts were kept: this window's counts are unknown
    t3.load_state_dict(state)
    assert t3.window_counts() is None
    t4 = DeadLatentTracker(4, window=2, unit="steps")
    t4.update(hs[0])  # an update without counts makes the window's counts unknown ...
    t4.update(hs[1], fired=(hs[1] > 0).sum(0))
    assert t4.window_counts() is None
    t4.update(hs[2], fired=(hs[2] > 0).sum(0))  # ... until the next window starts
    assert t4.window_counts().tolist() == (hs[2] > 0).sum(0).double().tolist()
    with pytest.raises(ValueError, match="fired must have shape"):
        t2.update(hs[0], fired=torch.ones(3))


def test_dead_tracker_state_dict_resume_and_validation():
    g = torch.Generator().manual_seed(0)
    hs = [torch.relu(torch.randn(4, 6, generator=g) - 1.2) for _ in range(7)]
    a = DeadLatentTracker(6, window=3)
    for h in hs[:4]:
        a.update(h)
    b = DeadLatentTracker(6, window=3)
    b.load_state_dict(a.state_dict())
    for h in hs[4:]:
        a.update(h)
        b.update(h)
        assert torch.equal(a.dead_mask(), b.dead_mask())
    assert torch.equal(a.last_window_dead, b.last_window_dead)
    # reference: window 2 covers steps 4..6 (0-based 3..5); step 7 (index 6) opens window 3
    expected = torch.stack(hs[3:6]).abs().amax(dim=(0, 1)) <= 1e-12
    assert torch.equal(a.last_window_dead, expected)
    with pytest.raises(ValueError, match="window"):
        DeadLatentTracker(6, window=4).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="unit"):
        DeadLatentTracker(6, window=3, unit="epochs")
    with pytest.raises(ValueError, match="d_sae"):
        a.update(torch.zeros(2, 5))


# ---------------------------------------------------------------------------------------------------- geometry


def test_shrinkage_ratio_hand_value():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    assert shrinkage_ratio(x, 0.5 * x).item() == pytest.approx(0.5)
    assert shrinkage_ratio(x, torch.tensor([[1.0, 2.0], [0.0, 0.0]])).item() == pytest.approx(3 / 6)


def test_nearest_neighbour_coherence_hand_values_and_chunking():
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.6, 0.8], [-1.0, 0.0]])  # row 1 not unit: normalised inside
    expected = [1.0, 0.8, 0.8, 1.0]
    for chunk in (1, 3, 4096):
        per_atom, summary = nearest_neighbour_coherence(W, chunk_size=chunk)
        assert per_atom.tolist() == pytest.approx(expected)
    ref = np.percentile(np.array(expected), [10, 50, 90])
    assert [summary["p10"], summary["p50"], summary["p90"]] == pytest.approx(ref.tolist())
    assert summary["mean"] == pytest.approx(0.9) and summary["max"] == pytest.approx(1.0)


def _random_dict(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, n, generator=g, dtype=torch.float64)
    return D / D.norm(dim=1, keepdim=True)


def test_match_atoms_recovers_permutation():
    D = _random_dict(6, 5, 0)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])  # learned row i is true atom perm[i]
    W = 2.0 * D[perm]
    res = match_atoms(W, D)
    assert isinstance(res, AtomMatch)
    assert res.true_idx.tolist() == list(range(6))
    assert torch.equal(perm[res.learned_idx], res.true_idx)
    assert res.mean_abs_cos == pytest.approx(1.0) and res.dictionary_error == pytest.approx(0.0, abs=1e-12)
    assert res.frobenius_error == pytest.approx(0.0, abs=1e-12)
    # a sign flip keeps |cos| = 1 but shows in the signed cosine and the Frobenius error
    W2 = W.clone()
    W2[0] *= -1
    res2 = match_atoms(W2, D)
    assert res2.mean_abs_cos == pytest.approx(1.0) and (res2.cos < 0).sum() == 1
    assert res2.frobenius_error == pytest.approx(2 / math.sqrt(6))
    # more learned atoms than true ones: the extra random rows are left unmatched
    W3 = torch.cat([_random_dict(3, 5, 1), W])
    res3 = match_atoms(W3, D)
    assert res3.learned_idx.tolist() == (perm.argsort() + 3).tolist() and res3.mean_abs_cos == pytest.approx(1.0)


def test_match_atoms_mean_cos_on_noisy_copy_is_below_one():
    D = _random_dict(8, 16, 2)
    W = D + 0.3 * _random_dict(8, 16, 3)
    res = match_atoms(W, D)
    Wn = W / W.norm(dim=1, keepdim=True)
    # identity is the best assignment here (noise is small); check the value directly
    assert res.learned_idx.tolist() == list(range(8))
    assert res.mean_abs_cos == pytest.approx((Wn * D).sum(1).abs().mean().item())
    assert res.mean_abs_cos < 1


# ---------------------------------------------------------------------------------------------------- support


def test_support_metrics_hand_counts_with_assignment():
    h_true = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    # learned latent 2 <-> true 0, 0 <-> 1, 1 <-> 2; latent 3 unmatched
    h = torch.tensor([[0.0, 0.0, 2.0, 0.5], [1.0, 4.0, 1e-7, 0.0]])
    res = support_metrics(h, h_true, thresh=1e-6, assignment=(torch.tensor([2, 0, 1]), torch.tensor([0, 1, 2])))
    # sample 0: TP (2<->0), FN (true 2 missed), FP (unmatched 3 fires); sample 1: TP (0<->1), FP (1 fires, true 2 off)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 2, 1)
    assert res["precision"] == pytest.approx(0.5)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(4 / 7)
    assert res["jaccard"] == pytest.approx(2 / 5)
    # the threshold matters: at the default 1e-12 latent 2 fires in sample 1 against an inactive true atom 0 -> one
    # more FP
    res2 = support_metrics(h, h_true, assignment=(torch.tensor([2, 0, 1]), torch.tensor([0, 1, 2])))
    assert res2["fp"] == 3


def test_support_metrics_identity_and_match_atoms_pipeline():
    D = _random_dict(6, 5, 4)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    W = D[perm]
    h_true = torch.tensor([[1.0, 0, 0, 2.0, 0, 0], [0, 0, 1.5, 0, 0, 1.0]])
    h_learned = h_true[:, perm]  # latent i carries true atom perm[i]
    perfect = support_metrics(h_learned, h_true, assignment=match_atoms(W, D))
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == perfect["jaccard"] == 1.0
    # without the assignment the identity pairing is wrong
    assert support_metrics(h_learned, h_true)["tp"] < 4
    with pytest.raises(ValueError, match="same number of latents"):
        support_metrics(torch.zeros(2, 4), h_true)


# ---------------------------------------------------------------------------------------------------- utilisation


def test_utilisation_hand_values():
    one_hot = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert firing_entropy(one_hot) == pytest.approx(0.0)
    assert gini(one_hot) == pytest.approx(0.75)
    assert top_mass(one_hot, 0.01) == pytest.approx(1.0)
    flat = torch.full((4,), 0.5)
    assert firing_entropy(flat) == pytest.approx(1.0) and gini(flat) == pytest.approx(0.0)
    assert top_mass(flat, 0.01) == pytest.approx(0.25)  # max(1, floor(0.04)) = 1 latent
    r = torch.tensor([1.0, 1.0, 2.0, 0.0])
    # q = [.25, .25, .5, 0]: H = .5 ln 4 + .5 ln 2 = .75 ln 4
    assert firing_entropy(r) == pytest.approx(0.75)
    assert gini(r) == pytest.approx(6 / 16)
    assert top_mass(r, 0.5) == pytest.approx(3 / 4)
    assert math.isnan(firing_entropy(torch.zeros(3)))


def test_gini_matches_mean_difference_formula_and_top_mass_count():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(200, generator=g, dtype=torch.float64) ** 3
    mean_diff = (r[:, None] - r[None, :]).abs().sum() / (2 * 200 * 200 * r.mean())
    assert gini(r) == pytest.approx(mean_diff.item(), rel=1e-10)
    # top 1% of 200 latents is 2 latents
    assert top_mass(r, 0.01) == pytest.approx((r.sort().values[-2:].sum() / r.sum()).item())
    u = feature_utilisation(r)
    assert set(u) == {"normalised_entropy", "gini", "top1_mass", "top10_mass"}
    assert u["top10_mass"] == pytest.approx((r.sort().values[-20:].sum() / r.sum()).item())


def test_firing_rates_from_codes():
    h = torch.tensor([[1.0, 0.0], [1.0, 1e-13], [0.0, 2.0]])
    assert firing_rates(h).tolist() == pytest.approx([2 / 3, 1 / 3])
    assert firing_entropy(h) == pytest.approx(firing_entropy(torch.tensor([2 / 3, 1 / 3])))
    with pytest.raises(ValueError, match="frac"):
        top_mass(h, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    x_hat = x + 0.1 * torch.randn(64, 8, generator=g)
    h = torch.relu(torch.randn(64, 12, generator=g))
    assert explained_variance(x.cuda(), x_hat.cuda()).item() == pytest.approx(explained_variance(x, x_hat).item(), rel=1e-5)
    t = DeadLatentTracker(12, window=2)
    t.update(h.cuda())
    assert t.max_abs.device.type == "cuda" and t.dead_fraction().item() == pytest.approx((h.amax(0) <= 1e-12).float().mean().item())
    per_atom, _ = nearest_neighbour_coherence(h.T.contiguous().cuda())
    torch.testing.assert_close(per_atom.cpu(), nearest_neighbour_coherence(h.T.contiguous())[0], atol=1e-5, rtol=0)


class _PermutedOracle(torch.nn.Module):
    """An 'SAE' whose atoms are the true dictionary permuted (and one sign flipped) and whose codes are the true codes
    in that permutation: recovery must be perfect."""

    def __init__(self, D, perm, codes_of):
        super().__init__()
        self.W_dec = torch.nn.Parameter(D[perm].clone())
        self.W_dec.data[0] *= -1
        self.W_enc = torch.nn.Parameter(torch.zeros(D.shape[1], D.shape[0]))
        self.perm, self.codes_of = perm, codes_of

    def encode(self, x):
        return self.codes_of(x)[:, self.perm]


def test_recovery_metrics_are_perfect_for_the_true_dictionary_and_fail_for_a_random_one():
    from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
    from aen_lib.evaluation.metrics import recovery_metrics

    data = SpikedDictionaryData(SpikedDictionaryConfig(n=32, m=64, k=3, rho=0.0, seed=0))
    x, h = data.sample(256)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    lookup = {tuple(xi.tolist()): hi for xi, hi in zip(x, h)}
    oracle = _PermutedOracle(data.dictionary, perm, lambda xs: torch.stack([lookup[tuple(r.tolist())] for r in xs]))
    good = recovery_metrics(oracle, data.dictionary, x, h)
    assert good["atoms_recovered"] == 1.0 and good["dictionary_mean_cos"] == pytest.approx(1.0, abs=1e-6)
    assert good["support_f1"] == 1.0 and good["eval_l0"] == 3.0
    # own generators: the global one may sit at the dictionary's seed, which would redraw the true atoms
    other = torch.Generator().manual_seed(12345)
    rand = _PermutedOracle(torch.randn(64, 32, generator=other), perm, lambda xs: torch.rand(len(xs), 64, generator=other))
    rand.W_dec.data /= rand.W_dec.data.norm(dim=1, keepdim=True)
    bad = recovery_metrics(rand, data.dictionary, x, h)
    assert bad["atoms_recovered"] < 0.1 and bad["dictionary_mean_cos"] < 0.6
    assert bad["support_precision"] < 0.2 and bad["eval_l0"] > 60


def test_latent_reach_tells_latents_out_of_reach_from_outcompeted_ones():
    from aen_lib.sae.config import SAEConfig
    from aen_lib.evaluation.metrics import latent_reach
    from aen_lib.sae.model import SAE

    x = torch.rand(500, 4, generator=torch.Generator().manual_seed(0)) + 0.1  # every coordinate positive
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=1))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.W_enc[0, 0] = 10.0   # latent 0: large on every sample, always the top-1
        sae.W_enc[1, 1] = 1.0    # latent 1: positive everywhere, never the largest: outcompeted
        sae.W_enc[2, 2] = -1.0   # latent 2: negative everywhere: out of reach
        sae.b_enc[3:] = -1.0     # latents 3-7: pre-activation -1 everywhere: out of reach
    r = latent_reach(sae, x)
    assert r["eval_dead_pct"] == pytest.approx(100 * 7 / 8) and r["eval_negative_pct"] == pytest.approx(100 * 6 / 8)
    relu = SAE(SAEConfig(d_in=4, d_sae=8, architecture="relu_l1", l1=0.01))
    relu.load_state_dict(sae.state_dict(), strict=False)
    r = latent_reach(relu, x, batch_size=7)  # several chunks; ReLU: dead on x <=> negative on x
    assert r["eval_dead_pct"] == r["eval_negative_pct"] == pytest.approx(100 * 6 / 8)
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        latent_reach(sae, x[0])


def test_firing_density_histogram_bins_by_decade():
    from aen_lib.evaluation.metrics import firing_density_histogram

    tokens = 1_000_000
    counts = torch.tensor([0, 0, 1, 9, 10, 999, 1000, 100_000, 999_999, 1_000_000])
    h = firing_density_histogram(counts, tokens, lowest_decade=-6)
    assert h["decades"] == [-6, -5, -4, -3, -2, -1] and h["never"] == 2 and h["m"] == 10
    # densities 1e-6, 9e-6 | 1e-5 | 9.99e-4 | 1e-3 | - | 0.1, 0.999999, 1.0 (the top decade takes a density of 1)
    assert h["latents"] == [2, 1, 1, 1, 0, 3]
    assert h["never"] + sum(h["latents"]) == counts.numel()
    assert firing_density_histogram(torch.tensor([1, 5]), 10**9, lowest_decade=-3)["latents"] == [2, 0, 0]
    for bad, match in ((torch.tensor([-1, 2]), "must lie in"), (torch.tensor([11]), "must lie in"),
                       (torch.ones(2, 2), "1-d")):
        with pytest.raises(ValueError, match=match):
            firing_density_histogram(bad, 10)
