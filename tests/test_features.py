"""Tests for aen_lib.evaluation.features (firing accounting, top-activating contexts, logit effect), and multi-SAE splicing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aen_lib import SAE, SAEConfig
from aen_lib.evaluation.splice import spliced_evaluation, spliced_evaluation_many
from aen_lib.data.harvest import Activations, harvest_activations
from aen_lib.evaluation.features import (
    Context,
    FiringTracker,
    dead_dense_accounting,
    feature_contexts,
    firing_statistics,
    logit_effect,
    render_contexts_html,
    render_contexts_text,
    top_activations,
    top_logit_tokens,
    unembedding_directions,
)
from aen_lib.evaluation.metrics import DeadLatentTracker
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

LAYER = 1


# ----------------------------------------------------------------------------------------------------------------
# firing accounting
# ----------------------------------------------------------------------------------------------------------------
def _codes(fires: list[list[int]], m: int) -> torch.Tensor:
    """Codes [B, m] with value 1 at the listed (row, latent) pairs."""
    h = torch.zeros(len(fires), m)
    for row, latents in enumerate(fires):
        h[row, latents] = 1.0
    return h


def test_firing_tracker_counts_steps_and_tokens_since_last_fire():
    t = FiringTracker(4)
    # step 1 (3 tokens): latent 0 fires on token 0, latent 1 on token 2
    t.update(_codes([[0], [], [1]], 4))
    # step 2 (2 tokens): latent 1 fires on token 0
    t.update(_codes([[1], []], 4))
    # step 3 (3 tokens): latent 2 fires on token 1
    t.update(_codes([[], [2], []], 4))
    assert t.total_steps == 3 and t.total_tokens == 8
    assert t.steps_since_fired.tolist() == [2, 1, 0, 3]
    # tokens after the last firing: latent 0 fired at global token 0 -> 7 after; latent 1 at token 3 -> 4;
    # latent 2 at token 6 -> 1; latent 3 never -> 8
    assert t.tokens_since_fired.tolist() == [7, 4, 1, 8]
    assert t.fire_count.tolist() == [1, 2, 1, 0]
    assert t.dead_mask(1, "steps").tolist() == [True, True, False, True]
    assert t.dead_mask(2, "steps").tolist() == [True, False, False, True]
    assert t.dead_mask(3, "steps").tolist() == [False, False, False, True]
    assert t.dead_mask(4, "tokens").tolist() == [True, True, False, True]
    assert t.dead_mask(5, "tokens").tolist() == [True, False, False, True]
    assert t.dead_mask(8, "tokens").tolist() == [False, False, False, True]
    assert t.frequencies().tolist() == pytest.approx([1 / 8, 2 / 8, 1 / 8, 0.0])
    with pytest.raises(ValueError, match="longer than"):
        t.dead_mask(4, "steps")
    with pytest.raises(ValueError, match="longer than"):
        t.dead_mask(9, "tokens")
    with pytest.raises(ValueError, match="unit"):
        t.dead_mask(1, "epochs")
    with pytest.raises(ValueError, match="d_sae=4"):
        t.update(torch.zeros(2, 5))


def test_firing_tracker_agrees_with_the_windowed_dead_tracker():
    """Over exactly one window, 'not fired in the last w steps' is the paper's windowed dead mask."""
    g = torch.Generator().manual_seed(0)
    m, steps = 64, 20
    ft, dt = FiringTracker(m), DeadLatentTracker(m, window=steps, unit="steps")
    scale = torch.logspace(-3, 0, m)  # latents fire with very different frequencies
    for _ in range(steps):
        h = F.relu(torch.rand(16, m, generator=g) - 1 + scale)
        ft.update(h)
        dt.update(h)
    assert 0 < int(dt.dead_mask().sum()) < m  # some dead, some alive: a test that can fail
    assert torch.equal(ft.dead_mask(steps, "steps"), dt.dead_mask())
    assert torch.equal(ft.dead_mask(steps * 16, "tokens"), dt.dead_mask())


def test_firing_statistics_matches_the_full_code_matrix():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="relu_l1", l1=1e-3))
    x = torch.randn(300, 8)
    st = firing_statistics(sae, x, chunk_size=7)
    h = sae.encode(x).detach()
    assert st.n_tokens == 300
    assert torch.equal(st.counts, (h > 1e-12).sum(0))
    assert torch.allclose(st.max, h.amax(0))
    assert torch.allclose(st.sum, h.double().sum(0))
    assert torch.allclose(st.rates, (h > 1e-12).double().mean(0))


def test_dead_dense_accounting_by_hand():
    t = FiringTracker(4)
    t.update(_codes([[0, 3], [3]], 4))  # step 1
    t.update(_codes([[1, 3], [3]], 4))  # step 2
    # last 1 step: 0 and 2 dead; last 2 tokens (step 2): 0 and 2 dead; eval below: 2 never fires, 3 fires on 3/4
    from aen_lib.evaluation.features import FiringStats

    ev = FiringStats(counts=torch.tensor([1, 0, 0, 3]), max=torch.ones(4), sum=torch.ones(4, dtype=torch.float64),
                     n_tokens=4)
    acc = dead_dense_accounting(t, ev, step_window=1, token_window=2, dense_thresholds=(0.5,))
    assert acc["dead_steps_pct"] == 50.0 and acc["dead_tokens_pct"] == 50.0
    assert acc["never_fired_eval_pct"] == 50.0  # latents 1 and 2
    assert acc["dead_all_pct"] == 25.0  # latent 2
    assert acc["dead_any_pct"] == 75.0  # latents 0, 1, 2
    assert acc["rare_alive_pct"] == 25.0  # latent 0: dead in the window, alive in eval
    assert acc["dense_0.5_pct"] == 25.0  # latent 3
    with pytest.raises(ValueError, match="latents"):
        dead_dense_accounting(FiringTracker(3), ev, step_window=1, token_window=1)


# ----------------------------------------------------------------------------------------------------------------
# top-activating contexts
# ----------------------------------------------------------------------------------------------------------------
def test_top_activations_match_topk_of_the_full_codes():
    torch.manual_seed(1)
    sae = SAE(SAEConfig(d_in=8, d_sae=16, architecture="relu_l1", l1=1e-3))
    x = torch.randn(257, 8)
    feats = [3, 0, 11]
    v, r = top_activations(sae, x, feats, k=5, chunk_size=10)
    h = sae.encode(x).detach()[:, feats].T  # [F, N]
    ref = h.topk(5, dim=1)
    assert torch.allclose(v, ref.values)
    assert torch.allclose(h.gather(1, r), ref.values)  # the rows hold those values (ties may reorder rows)
    with pytest.raises(ValueError, match="features must lie"):
        top_activations(sae, x, [16], k=2)
    with pytest.raises(ValueError, match="k must be"):
        top_activations(sae, x, [1], k=0)


def _toy_rows() -> Activations:
    """Two windows of 6 positions with position 0 dropped: rows = (w, p) for p = 1..5; token id = 10 w + p."""
    w = torch.tensor([0] * 5 + [1] * 5)
    p = torch.tensor([1, 2, 3, 4, 5] * 2)
    acts = torch.zeros(10, 3)
    acts[:, 0] = torch.arange(10).float()  # the "SAE" below returns acts, so latent 0's activation = row index
    return Activations(acts=acts, norms=torch.ones(10), token_ids=10 * w + p, window_index=w, position=p)


def test_feature_contexts_stay_inside_the_window():
    data = _toy_rows()
    decode = lambda i: f"<{i}>"  # noqa: E731
    ctx = feature_contexts(lambda x: x, data, 0, [5, 3], decode, left=2, right=2)
    # row 5 is (w1, p1): no left context inside window 1 (positions 0 and below do not exist / belong to window 0)
    assert ctx[0].tokens == ["<11>", "<12>", "<13>"] and ctx[0].highlight == 0
    assert ctx[0].activation == 5.0 and ctx[0].token_acts == [5.0, 6.0, 7.0]
    assert (ctx[0].window, ctx[0].position) == (1, 1)
    # row 3 is (w0, p4): right context stops at the window's end (p5)
    assert ctx[1].tokens == ["<2>", "<3>", "<4>", "<5>"] and ctx[1].highlight == 2
    assert ctx[1].text() == "<2><3><4><5>"
    # non-firing rows are skipped when values are given
    assert len(feature_contexts(lambda x: x, data, 0, [5, 3], decode, values=[1.0, 0.0])) == 1
    with pytest.raises(ValueError, match="out of range"):
        feature_contexts(lambda x: x, data, 0, [10], decode)


def test_renderings_mark_the_firing_token_and_escape_html():
    c = Context(tokens=["a", " <b>", "\nc"], highlight=1, activation=2.5, token_acts=[0.0, 2.5, 1.0])
    text = render_contexts_text([c])
    assert text.strip().startswith("2.50") and "a[[ <b>]]⏎c" in text
    page = render_contexts_html({"latent 7": [c]}, notes={"latent 7": "up: x"})
    assert "&lt;b&gt;" in page and "<b>latent 7</b>" in page and "up: x" in page
    assert page.count("text-decoration: underline") == 1
    assert "rgba(213, 94, 0, 1.00)" in page and "rgba(213, 94, 0, 0.40)" in page  # 2.5 / 2.5 and 1.0 / 2.5


# ----------------------------------------------------------------------------------------------------------------
# logit effect
# ----------------------------------------------------------------------------------------------------------------
def _final_logits_from_resid(model, resid):
    """lm_head(final_norm(resid)) for a residual [N, d] (float64)."""
    from aen_lib.evaluation.features import _FINAL_NORM_PATHS

    norm = model
    for attr in _FINAL_NORM_PATHS[model.config.model_type]:
        norm = getattr(norm, attr)
    m64 = model.double()
    try:
        return m64.get_output_embeddings()(norm.double()(resid.double()))
    finally:
        model.float()


def test_logit_effect_is_the_directional_derivative_of_the_unembedding(tiny_lm, single_thread):
    arch, model, tok = tiny_lm
    W, centred = unembedding_directions(model)
    assert centred == (arch == "gpt_neox")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(D_MODEL, generator=g, dtype=torch.float64)
    u = torch.randn(2, D_MODEL, generator=g, dtype=torch.float64)
    if centred:  # LayerNorm: the mean is removed and the derivative is taken orthogonally to the centred x
        x = x - x.mean()
        u = u - u.mean(dim=1, keepdim=True)
    u = u - (u @ x).unsqueeze(1) * x / (x @ x)  # orthogonal to x: the norm's scale does not change to first order
    if centred:
        u = u + 0.7  # a constant offset, which LayerNorm removes: logit_effect must centre it away
    scale = x.pow(2).mean().sqrt() if not centred else x.std(correction=0)
    t = 1e-3  # central difference: the error is O(t^2); RMSNorm computes in float32 internally
    fd = (_final_logits_from_resid(model, x + t * u) - _final_logits_from_resid(model, x - t * u)) / (2 * t) * scale
    eff = logit_effect(u.float(), (W, centred)).double()
    assert torch.allclose(eff, fd, rtol=1e-3, atol=1e-3 * fd.abs().max().item())
    top = top_logit_tokens(eff, tok, k=3)
    assert len(top) == 2 and len(top[0]["up"]) == 3
    assert top[0]["up"][0][1] == pytest.approx(float(eff[0].max()), rel=1e-5)
    assert top[0]["down"][0][1] == pytest.approx(float(eff[0].min()), rel=1e-5)
    with pytest.raises(ValueError, match="directions"):
        logit_effect(torch.zeros(2, D_MODEL + 1), W)


def test_unembedding_rejects_unknown_architectures():
    class Fake(nn.Module):
        config = type("C", (), {"model_type": "bert"})()

    with pytest.raises(ValueError, match="bert"):
        unembedding_directions(Fake())


# ----------------------------------------------------------------------------------------------------------------
# spliced evaluation of several SAEs
# ----------------------------------------------------------------------------------------------------------------
class Identity(nn.Module):
    def forward(self, x):
        return x


class ShiftRelu(nn.Module):
    def forward(self, x):
        return F.relu(x - 1.0)


def test_spliced_evaluation_many_equals_one_at_a_time(tiny_lm, tiny_windows, single_thread):
    _, model, _ = tiny_lm
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=D_MODEL, d_sae=64, architecture="topk", k=4))
    saes = {"identity": Identity(), "shift": ShiftRelu(), "sae": sae, "sae_raw": sae}
    many = spliced_evaluation_many(model, saes, tiny_windows, LAYER, raw_input={"sae_raw"}, batch_size=5,
                                   progress=False)
    for name, s in saes.items():
        one = spliced_evaluation(model, s, tiny_windows, LAYER, batch_size=5, progress=False,
                                 reproduce_reference_bug=name == "sae_raw")
        got = many[name]
        for f in ("ce_clean", "ce_patched", "ce_ablated", "ce_recovered", "kl"):
            assert getattr(got, f) == pytest.approx(getattr(one, f), rel=1e-6, abs=1e-7), (name, f)
        assert (got.n_tokens, got.n_windows, got.reproduce_reference_bug) == (one.n_tokens, one.n_windows,
                                                                              one.reproduce_reference_bug)
    assert many["sae_raw"].ce_patched != pytest.approx(many["sae"].ce_patched, rel=1e-4)
    assert many["identity"].kl == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="raw_input"):
        spliced_evaluation_many(model, {"a": Identity()}, tiny_windows, LAYER, raw_input={"b"})


def test_contexts_from_a_real_harvest(tiny_lm, tiny_windows, single_thread):
    """End to end on a tiny LM: harvested rows give back the window's own tokens around the firing token."""
    _, model, tok = tiny_lm
    acts = harvest_activations(model, tiny_windows, LAYER, batch_size=4, progress=False)
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=D_MODEL, d_sae=16, architecture="topk", k=3))
    v, r = top_activations(sae, acts.acts, [0, 5], k=3)
    ctxs = feature_contexts(sae, acts, 5, r[1], tok, left=4, right=2, values=v[1])
    assert ctxs, "latent 5 never fired"
    for c, row in zip(ctxs, r[1].tolist()):
        w, p = int(acts.window_index[row]), int(acts.position[row])
        lo, hi = max(1, p - 4), min(tiny_windows.shape[1] - 1, p + 2)
        assert c.tokens == [tok.decode([int(t)]) for t in tiny_windows[w, lo:hi + 1]]
        assert c.activation == pytest.approx(float(sae.encode(acts.acts[row:row + 1]).detach()[0, 5]), rel=1e-5)
        assert c.token_acts[c.highlight] == pytest.approx(c.activation)
    assert math.isfinite(ctxs[0].activation)
