"""Tests for aen_lib.data.harvest: normalisation (book: paper facts, model and loss) and early-exit harvesting."""

from __future__ import annotations

import math

import pytest
import torch

from aen_lib.data.harvest import block_output, denormalize_per_token, harvest_activations, normalize_per_token
from aen_lib.data.lm import residual_hook_module
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = 1


def _full_forward_resid(model, ids, layer):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]


def test_normalize_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 16, generator=g) * torch.logspace(-3, 4, 50).unsqueeze(1)
    xn, norms = normalize_per_token(x)
    torch.testing.assert_close(xn.norm(dim=-1), torch.full((50,), 4.0), rtol=1e-6, atol=0)  # √16
    torch.testing.assert_close(norms, x.norm(dim=-1))
    torch.testing.assert_close(denormalize_per_token(xn, norms), x, rtol=1e-6, atol=0)
    # direction preserved, no centering
    torch.testing.assert_close(xn / 4.0, x / x.norm(dim=-1, keepdim=True))
    zero_n, zero_norm = normalize_per_token(torch.zeros(2, 16))
    assert torch.equal(zero_n, torch.zeros(2, 16)) and torch.equal(zero_norm, torch.zeros(2))
    with pytest.raises(ValueError, match="norms shape"):
        denormalize_per_token(xn, norms[:3])


def test_early_exit_matches_full_forward_and_skips_later_blocks(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:3]
    calls = {"later": 0, "head": 0}
    h1 = residual_hook_module(model, LAYER + 1).register_forward_hook(lambda *a: calls.__setitem__("later", calls["later"] + 1))
    h2 = model.get_output_embeddings().register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    try:
        early = block_output(model, ids, LAYER, early_exit=True)
        assert calls == {"later": 0, "head": 0}
        late = block_output(model, ids, LAYER, early_exit=False)
        assert calls == {"later": 1, "head": 1}
    finally:
        h1.remove()
        h2.remove()
    full = _full_forward_resid(model, ids, LAYER)
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    torch.testing.assert_close(late, full, rtol=0, atol=0)
    # the model still works normally afterwards (hook removed, no state left behind)
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[:2] == ids.shape


def test_harvest_drops_position0_normalises_and_records(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:5]
    full = _full_forward_resid(model, ids, LAYER)  # [5, T, d]
    T = ids.shape[1]
    acts = harvest_activations(model, ids, LAYER, batch_size=2, progress=False)
    assert acts.acts.shape == (5 * (T - 1), D_MODEL)
    raw = full[:, 1:].reshape(-1, D_MODEL)
    torch.testing.assert_close(acts.norms, raw.norm(dim=-1))
    torch.testing.assert_close(acts.acts, raw / raw.norm(dim=-1, keepdim=True) * math.sqrt(D_MODEL))
    torch.testing.assert_close(acts.raw(), raw, rtol=1e-5, atol=1e-6)
    assert acts.position.tolist() == list(range(1, T)) * 5
    assert acts.window_index.tolist() == [w for w in range(5) for _ in range(T - 1)]
    assert torch.equal(acts.token_ids, ids[:, 1:].reshape(-1))
    raw_mode = harvest_activations(model, iter(ids), LAYER, normalization="none", drop_first=0, progress=False)
    torch.testing.assert_close(raw_mode.acts, full.reshape(-1, D_MODEL))
    assert not raw_mode.normalized
    torch.testing.assert_close(raw_mode.raw(), full.reshape(-1, D_MODEL))
    with pytest.raises(ValueError, match="normalised and raw"):
        type(acts).cat([acts, raw_mode])
    with pytest.raises(ValueError, match="normalization='l2'"):
        harvest_activations(model, ids, LAYER, normalization="l2")
    with pytest.raises(ValueError, match="drop_first"):
        harvest_activations(model, ids, LAYER, drop_first=-1)


def test_outlier_filter_uses_window_median(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:4]
    norms = _full_forward_resid(model, ids, LAYER)[:, 1:].norm(dim=-1)  # [4, T-1]
    c = float((norms / norms.median(dim=1, keepdim=True).values).quantile(0.8))  # drops ~20%
    keep = norms <= c * norms.median(dim=1, keepdim=True).values
    assert 0 < int((~keep).sum()) < keep.numel()
    acts = harvest_activations(model, ids, LAYER, outlier_norm_multiple=c, batch_size=3, progress=False)
    torch.testing.assert_close(acts.norms, norms[keep])
    assert len(acts) == int(keep.sum())


