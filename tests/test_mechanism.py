"""Mechanism measures: the encoder's Jacobian norm, the amortisation gap, and weights against firing."""

from __future__ import annotations

import json

import pytest
import torch

from aen_lib.sae.config import SAEConfig
from aen_lib.theory.mechanism import amortisation_gap, jacobian_norms, mechanism_measures, weights_vs_firing
from aen_lib.sae.model import SAE
from aen_lib.results.reference import MECHANISM_FILE, mechanism_set, run_spiked, trained_members
from aen_lib.theory.sparse_coding import sae_to_theory_penalties


def _sae(arch: str, n: int = 8, m: int = 24, **kw) -> SAE:
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=n, d_sae=m, architecture=arch, seed=3, **kw))
    with torch.no_grad():
        sae.b_enc.add_(0.2)  # some latents fire on most samples
    return sae


@pytest.mark.parametrize("arch,kw", [("relu_l1", {"l1": 0.01}), ("topk", {"k": 3}), ("aen", {"l1": 0.01, "l2": 0.01})])
def test_the_jacobian_norm_is_that_of_autograds_jacobian(arch, kw):
    sae = _sae(arch, **kw)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    got = jacobian_norms(sae, x)
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda v: sae.encode(v.unsqueeze(0))[0], x[i])  # [m, n]
        assert got[i].item() == pytest.approx(torch.linalg.matrix_norm(J.double(), ord=2).item(), rel=1e-5)
    assert (got > 0).all()


def _orthonormal_sae(arch: str, n: int, **kw) -> SAE:
    """n = m, orthonormal decoder: the exact code is a shifted, scaled ReLU of Dᵀy, which a ReLU encoder can be."""
    sae = SAE(SAEConfig(d_in=n, d_sae=n, architecture=arch, seed=1, **kw))
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    with torch.no_grad():
        sae.W_dec.copy_(Q.float())
        sae.b_dec.zero_()
    return sae


def test_an_encoder_that_computes_the_exact_code_has_no_gap_and_a_shifted_one_has():
    n, l1, l2 = 16, 0.02, 0.01
    sae = _orthonormal_sae("elastic_net", n, l1=l1, l2=l2)
    l1_t, l2_t = sae_to_theory_penalties(l1, l2, n)
    with torch.no_grad():  # h* = relu(Dᵀy − λ1) / (1 + λ2) for an orthonormal dictionary
        sae.W_enc.copy_(sae.W_dec.T / (1 + l2_t))
        sae.b_enc.fill_(-l1_t / (1 + l2_t))
    x = torch.randn(256, n, generator=torch.Generator().manual_seed(3))
    exact = amortisation_gap(sae, x, tol=1e-10)
    assert exact["gap_reference"] == "exact" and exact["solver_unconverged"] == 0
    assert abs(exact["gap_rel_mean"]) < 1e-6
    with torch.no_grad():  # the broken input: a threshold half the right size
        sae.b_enc.mul_(0.5)
    broken = amortisation_gap(sae, x, tol=1e-10)
    assert broken["gap_rel_mean"] > 1e-3
    assert broken["exact_l0"] == pytest.approx(exact["exact_l0"])  # the reference code does not depend on the encoder


def test_topk_is_measured_against_the_refit_on_its_own_support():
    n = 16
    sae = _orthonormal_sae("topk", n, k=4)
    with torch.no_grad():
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
    x = torch.randn(128, n, generator=torch.Generator().manual_seed(4))
    right = amortisation_gap(sae, x)
    assert right["gap_reference"] == "support_refit"
    assert abs(right["gap_rel_mean"]) < 1e-6  # on an orthonormal dictionary the kept values are the refit
    with torch.no_grad():
        sae.W_enc.mul_(0.7)  # same supports, values shrunk: the refit is better
    assert amortisation_gap(sae, x)["gap_rel_mean"] > 1e-2


def test_weights_against_firing_group_every_latent_and_skip_fixed_weights():
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(5))
    assert weights_vs_firing(_sae("relu_l1", l1=0.01), x) is None
    sae = _sae("aen", l1=0.01, l2=0.01, warmup_steps=0, ramp_steps=0)
    with torch.no_grad():
        sae.architecture.ema.copy_(torch.linspace(0.01, 1.0, 24).unsqueeze(0))
    res = weights_vs_firing(sae, x)
    assert sum(g["latents"] for g in res["groups"]) == 24
    assert -1.0 <= res["spearman_w_freq"] <= 1.0
    full = mechanism_measures(sae, x)
    assert full["weights_vs_firing"] == res and full["lipschitz_max"] >= full["lipschitz_p99"]


def test_an_undefined_measure_is_none_and_the_measures_are_strict_json():
    """At step 0 the adaptive weights are all equal, so their rank correlation with firing is undefined: None, not
    a NaN that a strict JSON writer refuses."""
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(6))
    sae = _sae("aen", l1=0.01, l2=0.01, warmup_steps=0, ramp_steps=0)  # EMA untouched: constant weights
    res = mechanism_measures(sae, x)
    assert res["weights_vs_firing"]["spearman_w_freq"] is None
    json.dumps(res, allow_nan=False)


def test_unsupported_inputs_are_named():
    sae = _sae("relu_l1", l1=0.01)
    with pytest.raises(ValueError, match="d_in=8"):
        jacobian_norms(sae, torch.randn(4, 5))
    stack = SAE([SAEConfig(d_in=8, d_sae=24, l1=0.01, seed=s) for s in (1, 2)])
    with pytest.raises(ValueError, match="member"):
        amortisation_gap(stack, torch.randn(4, 8))


def test_a_set_gets_its_mechanism_file_from_its_checkpoints_and_keeps_it(tmp_path, monkeypatch):
    import aen_lib.results.reference as ref

    grid = {"relu_l1": {"l1": [0.005]}, "topk": {"k": [8]}}
    monkeypatch.setitem(ref.STUDIES, "paper", ref.Study(grid))
    out = run_spiked(0.0, 0, out_root=tmp_path / "out", work_root=tmp_path / "work", steps=3, command="test",
                     progress=False)
    with pytest.raises(FileNotFoundError, match="Train it again with `test`"):
        trained_members(out, tmp_path / "elsewhere")
    res = mechanism_set(out, work_root=tmp_path / "work", samples=64)
    assert sorted(res["members"]) == sorted(p.stem for p in out.glob("*-*.json"))
    assert {v["gap_reference"] for v in res["members"].values()} == {"exact", "support_refit"}
    saved = (out / MECHANISM_FILE).read_text()
    again = mechanism_set(out, work_root=tmp_path / "elsewhere", samples=64)  # kept: no checkpoints needed
    assert json.dumps(again, indent=1) + "\n" == saved
