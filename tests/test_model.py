"""The SAE module and its loss terms (paper §2) against hand computations; one SAE and a stack."""

import pytest
import torch

from aen_lib import SAE, SAEConfig


def cfg(**kw):
    base = dict(d_in=6, d_sae=16, architecture="relu_l1", l1=0.01)
    base.update(kw)
    return SAEConfig(**base)


def test_parameter_layout_and_init():
    sae = SAE(cfg(d_in=64, d_sae=256))
    assert sae.W_enc.shape == (64, 256) and sae.W_dec.shape == (256, 64)
    assert sae.b_enc.shape == (256,) and sae.b_dec.shape == (64,)
    bound = 64**-0.5  # nn.Linear(64, 256) default: U(±1/sqrt(fan_in))
    assert sae.W_enc.abs().max() <= bound and sae.W_enc.abs().max() > 0.9 * bound
    assert sae.b_enc.abs().max() <= bound
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(256), atol=1e-6)
    assert torch.equal(sae.b_dec, torch.zeros(64))
    # untied: the encoder is not the decoder transpose
    assert not torch.allclose(sae.W_enc, sae.W_dec.T)


def test_same_seed_same_sae_different_seed_different():
    a, b, c = SAE(cfg(seed=3)), SAE(cfg(seed=3)), SAE(cfg(seed=4))
    assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.W_dec, b.W_dec)
    assert not torch.equal(a.W_enc, c.W_enc)


def test_forward_matches_formula_with_tied_bias():
    sae = SAE(cfg())
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(6))
    x = torch.randn(5, 6)
    out = sae(x)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert torch.allclose(out.pre, pre)
    assert torch.allclose(out.h, torch.relu(pre))
    assert torch.allclose(out.x_hat, torch.relu(pre) @ sae.W_dec + sae.b_dec)
    assert torch.allclose(sae.encode(x), out.h) and torch.allclose(sae.decode(out.h), out.x_hat)
    # leading dimensions are allowed: [batch, pos, d_in]
    assert sae(x.reshape(5, 1, 6)).x_hat.shape == (5, 1, 6)


def test_loss_terms_by_hand():
    c = cfg(architecture="elastic_net", l1=0.3, l2=0.2)
    sae = SAE(c)
    x = torch.randn(4, 6)
    out, t = sae.loss(x)
    h = out.h
    mse = ((x - out.x_hat) ** 2).sum() / (4 * 6)  # averaged over batch AND dimensions
    l1 = 0.3 * h.sum() / 4  # summed over features, averaged over batch
    l2 = 0.2 * (h**2).sum() / 4  # no 1/2 factor
    assert torch.allclose(t.mse, mse) and torch.allclose(t.l1, l1) and torch.allclose(t.l2, l2)
    assert torch.allclose(t.total, mse + l1 + l2)
    assert float(t.aux) == 0.0


def test_vanilla_has_no_l2_and_adaptive_uses_weights():
    x = torch.randn(8, 6)
    out, t = SAE(cfg(architecture="relu_l1", l1=0.5)).loss(x)
    assert float(t.l2) == 0.0
    c = cfg(architecture="adaptive_lasso", l1=0.5, warmup_steps=0, ramp_steps=0, ema_beta=0.5, gamma=1.0)
    sae = SAE(c)
    out, t = sae.loss(x)
    w = sae.architecture.weights()[0]
    assert torch.allclose(t.l1, 0.5 * (out.h * w).sum() / 8)


def test_decoder_atoms_unit_norm_after_optimizer_steps():
    sae = SAE(cfg(d_in=8, d_sae=24))
    opt = torch.optim.Adam(sae.parameters(), lr=0.1)  # an independent optimiser: the constraint is the SAE's
    for _ in range(5):
        _, t = sae.loss(torch.randn(16, 8))
        opt.zero_grad()
        t.total.backward()
        opt.step()
        assert not torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-4)
        sae.project_decoder_()
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-6)


def test_dtype_and_device_follow_the_caller():
    sae = SAE(cfg(), dtype=torch.float64)
    assert sae.W_enc.dtype == torch.float64
    out = sae(torch.randn(3, 6, dtype=torch.float64))
    assert out.x_hat.dtype == torch.float64


def test_wrong_shapes_raise():
    sae = SAE(cfg())
    with pytest.raises(ValueError, match="d_in=6"):
        sae(torch.randn(3, 5))
    with pytest.raises(ValueError, match="d_sae=16"):
        sae.decode(torch.randn(3, 15))
    with pytest.raises(TypeError):
        SAE({"d_in": 6})


def test_stack_members_start_as_single_saes_and_compute_the_same_map():
    cfgs = [cfg(seed=1), cfg(architecture="aen", l2=0.01, seed=2), cfg(architecture="topk", k=3, l1=0.0, seed=3)]
    stack = SAE(cfgs)
    assert stack.W_enc.shape == (3, 6, 16) and stack.member_shape == (3,)
    x = torch.randn(9, 6)
    out, terms = stack.loss(x, update=False)
    assert terms.total.shape == (3,)
    for j, c in enumerate(cfgs):
        one = SAE(c)
        assert torch.equal(one.W_enc, stack.W_enc[j]) and torch.equal(one.W_dec, stack.W_dec[j])
        o1, t1 = one.loss(x, update=False)
        assert torch.allclose(out.h[j], o1.h, atol=1e-6) and torch.allclose(out.x_hat[j], o1.x_hat, atol=1e-6)
        assert torch.allclose(terms.total[j], t1.total, atol=1e-6)
    # member() and stack() are inverses
    again = SAE.stack([stack.member(j) for j in range(3)])
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(again, name), getattr(stack, name))


def test_stack_needs_one_shape_and_configs():
    with pytest.raises(ValueError, match="one shape"):
        SAE([cfg(), cfg(d_sae=8)])
    with pytest.raises(ValueError, match="at least one"):
        SAE([])
    with pytest.raises(TypeError, match="cfgs"):
        SAE([cfg(), cfg()]).cfg
