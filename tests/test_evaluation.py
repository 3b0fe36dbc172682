"""Tests for aen_lib.evaluation.splice: spliced CE / KL / CE recovered (paper Figure 1, book: paper facts, language-model protocols)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aen_lib.evaluation.splice import activation_mean, mean_ablate, splice_sae, spliced_evaluation, zero_ablate
from aen_lib.data.lm import residual_hook_module
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = 1


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


class ShiftRelu(nn.Module):
    """A fixed nonlinear map (not scale-equivariant), so normalised and raw splicing differ."""

    def forward(self, x):
        return F.relu(x - 1.0)


def _manual_logits(model, ids, replace=None):
    """Logits with block LAYER's output (positions >= 1) replaced by replace(h [B, T-1, d])."""
    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[:, 1:] = replace(h[:, 1:])
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = residual_hook_module(model, LAYER).register_forward_hook(hook) if replace else None
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits.double()
    finally:
        if handle:
            handle.remove()


def _manual_ce(logits, ids):
    """Mean CE over predictions at positions 1..T-2, via log_softmax + gather (float64)."""
    lp = logits[:, 1:-1].log_softmax(-1)
    return -lp.gather(-1, ids[:, 2:].unsqueeze(-1)).mean()


def test_identity_sae_recovers_clean_ce(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    res = spliced_evaluation(model, Identity(), tiny_windows, LAYER, batch_size=5, progress=False)
    assert res.n_windows == 12 and res.n_tokens == 12 * 22
    assert res.ce_patched == pytest.approx(res.ce_clean, abs=1e-5)
    assert abs(res.kl) < 1e-6
    assert res.ce_recovered == pytest.approx(1.0, abs=1e-4)
    raw = spliced_evaluation(model, Identity(), tiny_windows, LAYER, batch_size=5, reproduce_reference_bug=True,
                             progress=False)
    assert raw.ce_patched == raw.ce_clean and raw.kl == 0.0  # exact: no normalisation round trip
    assert raw.reproduce_reference_bug and not res.reproduce_reference_bug


def test_zero_sae_hurts(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    res = spliced_evaluation(model, Zero(), tiny_windows, LAYER, batch_size=6, progress=False)
    assert res.ce_patched > res.ce_clean + 0.05
    assert res.kl > 0.01
    # CE recovered is the formula of book: paper facts, language-model protocols
    assert res.ce_recovered == pytest.approx(1 - (res.ce_patched - res.ce_clean) / (res.ce_ablated - res.ce_clean))


def test_clean_and_ablated_ce_match_manual(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:8]
    res = spliced_evaluation(model, Zero(), ids, LAYER, batch_size=4, progress=False)
    with torch.no_grad():
        h_all = model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1]
    mean = h_all[:, 1:].reshape(-1, D_MODEL).double().mean(0).float()  # one mean over all 8 windows, positions >= 1
    clean, ablated, zeroed, patched = [], [], [], []
    for b in (ids[:4], ids[4:]):
        clean.append(_manual_ce(_manual_logits(model, b), b))
        ablated.append(_manual_ce(_manual_logits(model, b, lambda x: mean.expand_as(x)), b))
        zeroed.append(_manual_ce(_manual_logits(model, b, torch.zeros_like), b))
        patched.append(_manual_ce(_manual_logits(model, b, torch.zeros_like), b))
    assert res.ce_clean == pytest.approx(float(torch.stack(clean).mean()), rel=1e-5)
    assert res.ce_ablated == pytest.approx(float(torch.stack(ablated).mean()), rel=1e-5)
    assert res.ce_zero_ablated == pytest.approx(float(torch.stack(zeroed).mean()), rel=1e-5)
    assert res.ce_patched == pytest.approx(float(torch.stack(patched).mean()), rel=1e-5)
    assert res.ce_ablated != pytest.approx(res.ce_clean, abs=1e-3)
    # a zero SAE is exactly zero ablation: it recovers nothing of the zero-ablation gap
    assert res.ce_recovered_zero_ablation == pytest.approx(0.0, abs=1e-5)
    assert res.ce_recovered == res.ce_recovered_mean_ablation
    assert res.ce_recovered_mean_ablation == pytest.approx(
        1 - (res.ce_patched - res.ce_clean) / (res.ce_ablated - res.ce_clean))
    assert res.ce_recovered_zero_ablation != pytest.approx(res.ce_recovered_mean_ablation, abs=1e-2)


def test_mean_ablation_does_not_depend_on_batch_size(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    sae = ShiftRelu()
    runs = [spliced_evaluation(model, sae, tiny_windows, LAYER, batch_size=bs, progress=False) for bs in (2, 12)]
    assert runs[0].ce_ablated == pytest.approx(runs[1].ce_ablated, rel=1e-6, abs=1e-6)
    assert runs[0].ce_recovered == pytest.approx(runs[1].ce_recovered, rel=1e-5, abs=1e-5)
    # the reference code's per-batch mean would not be: the mean of 2 windows differs from that of all 12
    m2 = activation_mean(model, tiny_windows[:2], LAYER)
    m12 = activation_mean(model, tiny_windows, LAYER, batch_size=5)
    assert (m2 - m12).norm() > 1e-2 * m12.norm()
    # a mean passed in is the one used; the same mean gives the same ablated CE
    given = spliced_evaluation(model, sae, tiny_windows, LAYER, batch_size=3, ablation_mean=m12, progress=False)
    assert given.ce_ablated == pytest.approx(runs[0].ce_ablated, rel=1e-6, abs=1e-6)
    other = spliced_evaluation(model, sae, tiny_windows, LAYER, batch_size=3, ablation_mean=m2, progress=False)
    assert other.ce_ablated != pytest.approx(given.ce_ablated, rel=1e-4)
    with pytest.raises(ValueError, match="ablation_mean holds NaN"):
        spliced_evaluation(model, sae, tiny_windows, LAYER, ablation_mean=m2 * math.nan, progress=False)


def test_kl_matches_manual(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:4]
    sae = ShiftRelu()
    res = spliced_evaluation(model, sae, ids, LAYER, batch_size=4, progress=False)
    d = math.sqrt(D_MODEL)

    def normalised(x):
        n = x.norm(dim=-1, keepdim=True)
        return sae(x * d / n) * n / d

    p = _manual_logits(model, ids)[:, 1:-1].log_softmax(-1)
    q = _manual_logits(model, ids, normalised)[:, 1:-1].log_softmax(-1)
    kl = F.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean()  # KL(p || q)
    assert res.kl == pytest.approx(float(kl), rel=1e-4)
    assert res.ce_patched == pytest.approx(float(_manual_ce(_manual_logits(model, ids, normalised), ids)), rel=1e-5)
    bug = spliced_evaluation(model, sae, ids, LAYER, batch_size=4, reproduce_reference_bug=True, progress=False)
    assert bug.ce_patched == pytest.approx(float(_manual_ce(_manual_logits(model, ids, sae), ids)), rel=1e-5)
    assert bug.ce_patched != pytest.approx(res.ce_patched, abs=1e-3)


def test_splice_and_mean_ablate_keep_skipped_positions():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 8, generator=g) * 10
    out = splice_sae(h, Zero(), skip_first=1)
    assert torch.equal(out[:, 0], h[:, 0]) and torch.equal(out[:, 1:], torch.zeros(3, 4, 8))
    sae = ShiftRelu()
    norms = h[:, 2:].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(splice_sae(h, sae, skip_first=2)[:, 2:], sae(h[:, 2:] * 8**0.5 / norms) * norms / 8**0.5)
    torch.testing.assert_close(splice_sae(h, sae, skip_first=0, normalize=False), sae(h))
    ab = mean_ablate(h, skip_first=1)
    assert torch.equal(ab[:, 0], h[:, 0])
    torch.testing.assert_close(ab[1, 3], h[:, 1:].mean(dim=(0, 1)))
    mu = torch.arange(8.0)
    fixed = mean_ablate(h, skip_first=1, mean=mu)
    assert torch.equal(fixed[:, 0], h[:, 0]) and torch.equal(fixed[2, 4], mu)
    z = zero_ablate(h, skip_first=2)
    assert torch.equal(z[:, :2], h[:, :2]) and not z[:, 2:].any()


def test_real_sae_module_and_errors(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    from aen_lib.sae.config import SAEConfig
    from aen_lib.sae.model import SAE

    sae = SAE(SAEConfig(d_in=D_MODEL, d_sae=64, architecture="relu_l1", l1=1e-3))
    sae.train()
    res = spliced_evaluation(model, sae, tiny_windows[:4], LAYER, batch_size=2, progress=False)
    assert all(math.isfinite(v) for v in (res.ce_clean, res.ce_patched, res.ce_ablated, res.kl))
    assert sae.training  # mode restored
    with pytest.raises(ValueError, match="skip_first=30"):
        spliced_evaluation(model, sae, tiny_windows[:2], LAYER, skip_first=30, progress=False)
    with pytest.raises(ValueError, match="windows is empty"):
        spliced_evaluation(model, sae, tiny_windows[:0], LAYER, progress=False)
    with pytest.raises(ValueError, match="layer=9"):
        spliced_evaluation(model, sae, tiny_windows, 9, progress=False)
