"""TopK, BatchTopK and JumpReLU forward passes and gradients; the objective registry."""

import pytest
import torch

from aen_lib import OBJECTIVES, SAE, SAEConfig
from aen_lib.objectives import batch_topk_activation, topk_activation


def test_registry_lists_every_architecture():
    assert set(OBJECTIVES) == {"relu_l1", "elastic_net", "adaptive_lasso", "aen", "topk", "batchtopk", "jumprelu"}


def test_topk_forward_and_gradient():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5, -4.0], [-3.0, -2.0, -1.0, -0.5, 1.0]], requires_grad=True)
    h = topk_activation(pre, 2)
    expected = torch.tensor([[3.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert torch.equal(h, expected)  # top-2 of row 2 is (1.0, -0.5): ReLU zeroes -0.5
    h.sum().backward()
    # gradient 1 on kept positive entries, 0 elsewhere (ReLU kills the kept negative one)
    assert torch.equal(pre.grad, expected.gt(0).float())


def test_topk_sae_has_exactly_k_active_and_pure_mse():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=5))
    x = torch.randn(10, 8) * 3
    out, t = sae.loss(x)
    assert ((out.h > 0).sum(-1) <= 5).all()
    assert torch.allclose(t.total, t.mse)


def test_batchtopk_keeps_k_times_batch_and_learns_threshold():
    pre = torch.tensor([[5.0, 1.0, -1.0], [4.0, 3.0, 0.5]])
    h, smallest = batch_topk_activation(pre, 2)  # keep 4 largest of the whole batch
    assert torch.equal(h, torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 0.0]]))
    assert float(smallest) == 1.0
    sae = SAE(SAEConfig(d_in=4, d_sae=6, architecture="batchtopk", k=2, batchtopk_threshold_beta=0.5))
    sae.train()
    x = torch.randn(8, 4)
    out = sae(x)
    assert int((out.h > 0).sum()) <= 16
    th1 = float(sae.objective.threshold)
    pos = out.h.detach()[out.h > 0]
    assert th1 == pytest.approx(float(pos.min()))  # first batch initialises the threshold
    out2 = sae(x)
    assert float(sae.objective.threshold) == pytest.approx(0.5 * th1 + 0.5 * float(out2.h.detach()[out2.h > 0].min()))
    sae.eval()  # inference: a plain threshold on the pre-activation
    pre_eval = sae.pre_activation(x)
    th = sae.objective.threshold
    assert torch.equal(sae.encode(x), pre_eval * (pre_eval > th))


def test_jumprelu_forward_and_straight_through_gradients():
    eps = 0.2
    sae = SAE(SAEConfig(d_in=2, d_sae=3, architecture="jumprelu", l0=0.5, jumprelu_init_threshold=1.0,
                        jumprelu_bandwidth=eps))
    obj = sae.objective
    pre = torch.tensor([[0.95, 1.5, 0.2], [1.05, 0.5, 3.0]], requires_grad=True)
    h = obj.activate(pre)
    assert torch.allclose(h, torch.tensor([[0.0, 1.5, 0.0], [1.05, 0.0, 3.0]]))
    h.sum().backward()
    assert torch.equal(pre.grad, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    # dθ of Σ z·H(z-θ): -(θ/ε) Σ_b K((z-θ)/ε); only |z-θ| < ε/2 contributes (0.95 and 1.05 for latent 0)
    theta_grad = obj.log_threshold.grad / obj.threshold  # chain rule through θ = exp(log θ)
    assert torch.allclose(theta_grad, torch.tensor([-(1.0 / eps) * 2, 0.0, 0.0]))
    obj.log_threshold.grad = None
    pen = obj.penalty(h.detach(), pre.detach())["aux"]
    assert float(pen) == pytest.approx(0.5 * 3 / 2)  # λ0 · mean_b #active
    pen.backward()
    theta_grad = obj.log_threshold.grad / obj.threshold
    assert torch.allclose(theta_grad, torch.tensor([0.5 * (-(1.0 / eps) * 2 / 2), 0.0, 0.0]))


@pytest.mark.parametrize("arch", sorted(OBJECTIVES))
def test_every_architecture_trains_a_step(arch):
    kw = {"topk": dict(k=3), "batchtopk": dict(k=3), "jumprelu": dict(l0=1e-3)}.get(arch, dict(l1=1e-3))
    if arch in ("elastic_net", "aen"):
        kw["l2"] = 1e-4
    sae = SAE(SAEConfig(d_in=5, d_sae=12, architecture=arch, **kw))
    _, t = sae.loss(torch.randn(7, 5))
    t.total.backward()
    assert sae.W_enc.grad is not None and torch.isfinite(sae.W_enc.grad).all()
