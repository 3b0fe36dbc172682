"""Each architecture's activation, penalty and state (aen_lib.sae.architectures), against hand computations."""

import pytest
import torch

from aen_lib import ARCHITECTURES, SAE, SAEConfig
from aen_lib.sae.architectures import StepContext
from aen_lib.sae.architectures.topk import k_groups, topk_codes

TRAIN = StepContext(update=True, training=True)


def kwargs_for(arch):
    kw = {"topk": dict(k=3), "topk_auxk": dict(k=3), "batchtopk": dict(k=3), "jumprelu": dict(l0=1e-3)}.get(
        arch, dict(l1=1e-3))
    if arch in ("elastic_net", "aen"):
        kw["l2"] = 1e-4
    return kw


def test_registry_lists_every_architecture():
    assert set(ARCHITECTURES) == {"relu_l1", "elastic_net", "adaptive_lasso", "aen", "topk", "topk_auxk",
                                  "batchtopk", "jumprelu"}


def test_topk_forward_and_gradient_with_per_member_k():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5, -4.0], [-3.0, -2.0, -1.0, -0.5, 1.0]])
    pre = torch.stack([pre, pre]).requires_grad_(True)  # two members, k = 2 and k = 1
    h = topk_codes(pre, torch.tensor([2, 1]), 2)
    expected = torch.tensor([[3.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert torch.equal(h[0], expected)  # top-2 of row 2 is (1.0, -0.5): ReLU zeroes -0.5
    assert torch.equal(h[1], torch.tensor([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]]))
    h.sum().backward()
    assert torch.equal(pre.grad[0], expected.gt(0).float())  # gradient on kept positive entries only


def test_topk_codes_by_k_group_equal_the_shared_masked_call():
    assert k_groups([8, 8, 32, 8]) == [(0, 2, 8), (2, 3, 32), (3, 4, 8)]
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(4, 64, 200, generator=g)
    ks = [8, 8, 32, 128]
    a, b = pre.clone().requires_grad_(), pre.clone().requires_grad_()
    ha = topk_codes(a, torch.tensor(ks), 128)
    hb = topk_codes(b, torch.tensor(ks), 128, k_groups(ks))
    assert torch.equal(ha, hb)
    w = torch.randn(4, 64, 200, generator=g)
    (ha * w).sum().backward()
    (hb * w).sum().backward()
    assert torch.equal(a.grad, b.grad)
    assert ((hb > 0).sum(-1) <= torch.tensor(ks).reshape(-1, 1)).all()
    assert ((hb > 0).sum(-1)[:, :8] > 0).any()


def test_topk_sae_has_exactly_k_active_and_pure_mse():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=5))
    out, t = sae.loss(torch.randn(10, 8) * 3)
    assert ((out.h > 0).sum(-1) <= 5).all()
    assert torch.allclose(t.total, t.mse)


def test_batchtopk_keeps_k_times_batch_and_learns_threshold():
    sae = SAE(SAEConfig(d_in=4, d_sae=6, architecture="batchtopk", k=2, batchtopk_threshold_beta=0.5))
    run = sae.architecture
    pre = torch.tensor([[[5.0, 1.0, -1.0, 0, 0, 0], [4.0, 3.0, 0.5, 0, 0, 0]]])
    h = run.activate(pre, TRAIN)  # keep the 4 largest of the whole batch
    assert torch.equal(h[0], torch.tensor([[5.0, 1.0, 0, 0, 0, 0], [4.0, 3.0, 0, 0, 0, 0]]))
    assert float(run.threshold[0]) == 1.0  # the first batch initialises the threshold
    run.activate(pre * 2, TRAIN)
    assert float(run.threshold[0]) == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)
    sae.eval()  # inference: a plain threshold on the pre-activation
    x = torch.randn(8, 4)
    p = sae.pre_activation(x)
    assert torch.equal(sae.encode(x), p * (p > run.threshold[0]))


def test_jumprelu_forward_and_straight_through_gradients():
    eps = 0.2
    sae = SAE(SAEConfig(d_in=2, d_sae=3, architecture="jumprelu", l0=0.5, jumprelu_init_threshold=1.0,
                        jumprelu_bandwidth=eps))
    run = sae.architecture
    pre = torch.tensor([[[0.95, 1.5, 0.2], [1.05, 0.5, 3.0]]], requires_grad=True)
    h = run.activate(pre, TRAIN)
    assert torch.allclose(h[0], torch.tensor([[0.0, 1.5, 0.0], [1.05, 0.0, 3.0]]))
    h.sum().backward()
    assert torch.equal(pre.grad[0], torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    # dθ of Σ z·H(z-θ): -(θ/ε) Σ_b K((z-θ)/ε); only |z-θ| < ε/2 contributes (0.95 and 1.05 for latent 0)
    theta_grad = run.log_threshold.grad[0] / run.threshold[0]  # chain rule through θ = exp(log θ)
    assert torch.allclose(theta_grad, torch.tensor([-(1.0 / eps) * 2, 0.0, 0.0]))
    run.log_threshold.grad = None
    pen = run.penalty(h.detach(), pre.detach(), None, None, None, TRAIN)["aux"]
    assert float(pen.detach()) == pytest.approx(0.5 * 3 / 2)  # λ0 · mean_b #active
    pen.sum().backward()
    theta_grad = run.log_threshold.grad[0] / run.threshold[0]
    assert torch.allclose(theta_grad, torch.tensor([0.5 * (-(1.0 / eps) * 2 / 2), 0.0, 0.0]))


def test_topk_auxk_reconstructs_the_residual_with_dead_latents_only():
    cfg = SAEConfig(d_in=4, d_sae=8, architecture="topk_auxk", k=2,
                    options={"auxk_k": 2, "auxk_coef": 0.5, "auxk_dead_tokens": 6})
    sae = SAE(cfg)
    run = sae.architecture
    x = torch.randn(3, 4)
    _, t = sae.loss(x)  # nothing is dead yet: no auxiliary term; 3 tokens counted
    assert float(t.aux) == 0.0 and torch.allclose(t.total, t.mse)
    fired = (sae.encode(x) > 0).any(0)
    assert torch.equal(run.tokens_since_fired[0], torch.where(fired, 0, 3))
    with torch.no_grad():
        run.tokens_since_fired[0] = torch.tensor([0, 0, 0, 0, 0, 6, 9, 7])  # latents 5, 6, 7 are dead
    out, t = sae.loss(x, update=False)
    pre = out.pre
    masked = pre.masked_fill(~torch.tensor([False] * 5 + [True] * 3), float("-inf"))
    vals, idx = masked.topk(2, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    e = (x - out.x_hat).detach()
    hand = 0.5 * (e - codes @ sae.W_dec).pow(2).mean()
    assert torch.allclose(t.aux, hand) and float(t.aux.detach()) > 0
    g = torch.autograd.grad(t.aux, sae.b_enc)[0]
    assert g[:5].abs().sum() == 0 and g[5:].abs().sum() > 0  # only dead latents get a gradient from AuxK
    assert torch.equal(out.h, sae.encode(x))  # the auxiliary codes never enter the reconstruction


def test_topk_auxk_stacked_members_match_the_dense_auxiliary_loss():
    """The auxiliary decode runs over each member's dead latents only; against the dense form over all m latents
    (live ones' codes at zero), per member of a stack whose members have different dead sets and k_aux, the loss and
    every gradient agree in float64."""
    cfgs = [SAEConfig(d_in=6, d_sae=16, architecture="topk_auxk", k=2, seed=s,
                      options={"auxk_k": ka, "auxk_coef": 0.5, "auxk_dead_tokens": 6}) for s, ka in ((1, 3), (2, 2))]
    sae = SAE(cfgs, dtype=torch.float64)
    (run,) = sae.runs  # one run holds both members (same architecture)
    dead = torch.zeros(2, 16, dtype=torch.bool)
    dead[0, [1, 4, 9, 10, 15]] = True  # five dead latents in member 0, one in member 1 (fewer than its k_aux)
    dead[1, [7]] = True
    with torch.no_grad():
        run.tokens_since_fired.copy_(torch.where(dead, 9, 0))
    x = torch.randn(2, 64, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # enough tokens that every dead latent fires
    out, t = sae.loss(x, update=False)
    got = torch.autograd.grad(t.aux.sum(), [sae.W_enc, sae.b_enc, sae.W_dec], retain_graph=True)
    aux = []
    for j, ka in enumerate((3, 2)):
        masked = out.pre[j].masked_fill(~dead[j], float("-inf"))
        vals, idx = masked.topk(ka, dim=-1)
        codes = torch.zeros_like(out.pre[j]).scatter(-1, idx, torch.where(vals.isfinite(), torch.relu(vals), 0.0))
        e = (x[j] - out.x_hat[j]).detach()
        aux.append(0.5 * (e - codes @ sae.W_dec[j]).pow(2).mean())
    want = torch.autograd.grad(torch.stack(aux).sum(), [sae.W_enc, sae.b_enc, sae.W_dec])
    assert torch.allclose(t.aux, torch.stack(aux), rtol=1e-12, atol=0) and bool((t.aux > 0).all())
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert float(want[2][0, 1].abs().sum()) > 0 and float(want[2][0, 0].abs().sum()) == 0  # dead rows only


@pytest.mark.parametrize("bad, match", [({"auxk_coef": -1.0}, "auxk_coef"), ({"auxk_dead": 5}, "takes the options"),
                                        ({"auxk_dead_tokens": 0}, "auxk_dead_tokens")])
def test_architecture_options_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        SAEConfig(d_in=4, d_sae=8, architecture="topk_auxk", k=2, options=bad)
    with pytest.raises(ValueError, match="takes the options"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2, options={"auxk_coef": 0.1})


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_a_step(arch):
    sae = SAE(SAEConfig(d_in=5, d_sae=12, architecture=arch, **kwargs_for(arch)))
    _, t = sae.loss(torch.randn(7, 5))
    t.total.backward()
    assert sae.W_enc.grad is not None and torch.isfinite(sae.W_enc.grad).all()
