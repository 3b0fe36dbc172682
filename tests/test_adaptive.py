"""Adaptive weights (DIGEST §2.3) checked against hand computations."""

import math

import pytest
import torch

from aen_lib import SAE, SAEConfig
from aen_lib.adaptive import (
    AdaptiveWeights,
    ema_update,
    raw_adaptive_weights,
    reference_count,
    reference_scale,
    warmup_factor,
)


def make(m=10, **kw):
    args = dict(gamma=1.0, beta=0.9, top_pct=0.2, w_min=0.01, w_max=10.0, warmup_steps=3, ramp_steps=4)
    args.update(kw)
    return AdaptiveWeights(m, **args)


def test_ema_initialised_to_one_and_updated_before_use():
    aw = make(m=4, beta=0.9)
    assert torch.equal(aw.ema, torch.ones(4))
    assert int(aw.step) == 0
    h = torch.tensor([[2.0, 0.0, 1.0, 4.0], [0.0, 0.0, 3.0, 0.0]])
    aw.update(h)
    # m(1) = 0.9 * 1 + 0.1 * mean_b |h|, no bias correction
    expected = 0.9 + 0.1 * torch.tensor([1.0, 0.0, 2.0, 2.0])
    assert torch.allclose(aw.ema, expected)
    assert int(aw.step) == 1
    aw.update(h)
    assert torch.allclose(aw.ema, 0.9 * expected + 0.1 * torch.tensor([1.0, 0.0, 2.0, 2.0]))


def test_reference_is_mean_of_top_floor_pm():
    ema = torch.tensor([0.1, 5.0, 3.0, 0.2, 1.0, 4.0, 0.0, 0.3, 0.4, 0.5])
    assert reference_count(10, 0.2) == 2
    assert reference_count(10, 0.05) == 1  # at least one
    assert reference_count(1024, 0.05) == 51  # floor(51.2)
    assert torch.isclose(reference_scale(ema, 0.2), torch.tensor(4.5))
    assert torch.isclose(reference_scale(ema, 0.01), torch.tensor(5.0))


def test_raw_weight_formula_floor_and_clamp():
    ema = torch.tensor([4.5, 1.0, 0.01, 0.0, 9.0])
    ref = torch.tensor(4.5)
    w = raw_adaptive_weights(ema, ref, gamma=0.5, w_min=0.8, w_max=10.0)
    hand = [1.0, math.sqrt(4.5), min(10.0, math.sqrt(450.0)), 10.0, max(0.8, math.sqrt(0.5))]
    assert torch.allclose(w, torch.tensor(hand))
    # the EMA floor 1e-5 matters when the clamp is wide
    w2 = raw_adaptive_weights(torch.tensor([0.0]), torch.tensor(1.0), gamma=1.0, w_min=0.01, w_max=1e9)
    assert torch.isclose(w2, torch.tensor([1e5]))


@pytest.mark.parametrize(
    "t, f", [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.25), (5, 0.5), (7, 1.0), (100, 1.0)]
)
def test_warmup_factor_hold_then_ramp(t, f):
    assert float(warmup_factor(t, 3, 4)) == pytest.approx(f)


def test_warmup_with_zero_ramp_switches_on_at_tw():
    assert float(warmup_factor(4, 5, 0)) == 0.0
    assert float(warmup_factor(5, 5, 0)) == 1.0


def test_effective_weights_during_hold_ramp_and_after():
    aw = make(m=10, beta=0.5, top_pct=0.2, warmup_steps=3, ramp_steps=4, gamma=1.0)
    h = torch.zeros(2, 10)
    h[:, :2] = 2.0  # two strong features, eight silent ones
    seen = []
    for t in range(1, 9):
        w = aw.update(h)
        ema = aw.ema
        ref = ema.topk(2).values.mean()
        raw = (ref / ema.clamp_min(1e-5)).clamp(0.01, 10.0)
        f = 0.0 if t < 3 else min(1.0, (t - 3) / 4)
        assert torch.allclose(w, 1 + f * (raw - 1)), t
        seen.append(float(w[5]))
    assert seen[:3] == [1.0, 1.0, 1.0]  # hold: plain elastic net
    assert seen[-1] == pytest.approx(10.0)  # silent feature pinned at w_max after the ramp


def test_weights_are_constants_for_autograd():
    cfg = SAEConfig(d_in=6, d_sae=12, architecture="aen", l1=0.1, l2=0.0, warmup_steps=0, ramp_steps=0,
                    ema_beta=0.5, gamma=1.0)
    sae = SAE(cfg)
    x = torch.randn(5, 6)
    out, terms = sae.loss(x)
    w = sae.objective.weights.weights()
    assert not w.requires_grad
    # d(l1)/dh = λ1 w / B exactly, i.e. no gradient path through the weights
    g = torch.autograd.grad(terms.l1, out.h)[0]
    assert w.max() > 1.5  # the weights really differ between features here
    active = out.h > 0
    assert torch.allclose(g[active], (0.1 * w / 5).expand_as(g)[active])


def test_batched_formulas_match_per_member():
    ema = torch.rand(3, 20) + 0.01
    gamma = torch.tensor([[0.5], [1.0], [2.0]])
    ref = reference_scale(ema, 0.1)
    w = raw_adaptive_weights(ema, ref, gamma, 0.01, 10.0)
    for i, g in enumerate([0.5, 1.0, 2.0]):
        wi = raw_adaptive_weights(ema[i], reference_scale(ema[i], 0.1), g, 0.01, 10.0)
        assert torch.allclose(w[i], wi)
    h = torch.rand(3, 7, 20)
    assert torch.allclose(ema_update(ema, h, 0.9)[1], ema_update(ema[1], h[1], 0.9))
