"""Adaptive weights (the authors' rule) checked against hand computations, through the l1 family's state."""

import math

import pytest
import torch

from aen_lib import SAE, SAEConfig
from aen_lib.sae.adaptive import ema_step, raw_adaptive_weights, reference_count, reference_scale, warmup_factor
from aen_lib.sae.architectures import StepContext


class Adaptive:
    """The adaptive state of a one-member AEN run, driven directly with codes h [B, m]."""

    def __init__(self, m=10, gamma=1.0, beta=0.9, top_pct=0.2, w_min=0.01, w_max=10.0, warmup_steps=3, ramp_steps=4):
        cfg = SAEConfig(d_in=2, d_sae=m, architecture="aen", l1=1.0, gamma=gamma, ema_beta=beta, ref_top_pct=top_pct,
                        w_min=w_min, w_max=w_max, warmup_steps=warmup_steps, ramp_steps=ramp_steps)
        self.run = SAE(cfg).architecture

    @property
    def ema(self):
        return self.run.ema[0]

    @property
    def step(self):
        return self.run.step[0]

    def update(self, h):
        h3 = h.unsqueeze(0)
        self.run.penalty(h3, h3, None, None, None, StepContext(update=True, training=True))
        return self.run.weights()[0]


def make(m=10, **kw):
    return Adaptive(m, **kw)


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
    w = sae.architecture.weights()[0]
    assert not w.requires_grad
    # d(l1)/d b_enc = λ1 w_i #{b: h_bi > 0} / B exactly, i.e. no gradient path through the weights
    g = torch.autograd.grad(terms.l1, sae.b_enc)[0]
    assert w.max() > 1.5  # the weights really differ between features here
    assert torch.allclose(g, 0.1 * w * (out.h > 0).sum(0) / 5)


def test_batched_formulas_match_per_member():
    ema = torch.rand(3, 20) + 0.01
    gamma = torch.tensor([[0.5], [1.0], [2.0]])
    ref = reference_scale(ema, 0.1)
    w = raw_adaptive_weights(ema, ref, gamma, 0.01, 10.0)
    for i, g in enumerate([0.5, 1.0, 2.0]):
        wi = raw_adaptive_weights(ema[i], reference_scale(ema[i], 0.1), g, 0.01, 10.0)
        assert torch.allclose(w[i], wi)
    mean_abs = torch.rand(3, 20)
    beta = torch.tensor([[0.9], [0.99], [0.5]])
    for i in range(3):
        assert torch.allclose(ema_step(ema, mean_abs, beta)[i], ema_step(ema[i], mean_abs[i], float(beta[i])))


def test_the_ema_can_start_from_the_first_batch():
    """options={'ema_init': 'first_batch'}: after one step the EMA is that batch's mean |h| (the default starts at 1
    and moves by (1 − β) of it); the first step's weights already spread, the default's barely move."""
    import pytest
    import torch
    from aen_lib.sae.config import SAEConfig
    from aen_lib.sae.model import SAE

    base = dict(d_in=16, d_sae=32, architecture="aen", l1=0.01, l2=0.001, ema_beta=0.9999, warmup_steps=0,
                ramp_steps=0)
    cfgs = [SAEConfig(**base), SAEConfig(**base, options={"ema_init": "first_batch"})]
    sae = SAE(cfgs)
    x = torch.randn(64, 16).abs()
    out, _ = sae.loss(x, update=True)
    run = sae.runs[0]
    mean_abs = out.h.detach().abs().mean(dim=1)  # [M, m]
    assert torch.allclose(run.ema[1], mean_abs[1], atol=1e-6)
    assert torch.allclose(run.ema[0], 0.9999 + 0.0001 * mean_abs[0], atol=1e-6)
    assert float(run.weights()[1].std()) > 10 * float(run.weights()[0].std())
    # the second step is an ordinary EMA step for both
    before = run.ema.clone()
    out2, _ = sae.loss(x, update=True)
    assert torch.allclose(run.ema, 0.9999 * before + 0.0001 * out2.h.detach().abs().mean(dim=1), atol=1e-6)
    assert "EMA from first batch" in cfgs[1].label and "EMA" not in cfgs[0].label
    with pytest.raises(ValueError, match="applies to adaptive_lasso and aen only"):
        SAEConfig(d_in=16, d_sae=32, architecture="elastic_net", l1=0.01, l2=0.001, options={"ema_init": "first_batch"})
    with pytest.raises(ValueError, match="must be 'one' or 'first_batch'"):
        SAEConfig(**base, options={"ema_init": "zero"})
