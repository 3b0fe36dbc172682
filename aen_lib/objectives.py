"""Sparsity objectives: the only thing that differs between SAE architectures.

Each objective is a small ``nn.Module`` with two jobs:

* ``activate(pre) -> h``: turn encoder pre-activations into codes (ReLU, TopK, BatchTopK or JumpReLU);
* ``penalty(h, pre, update=...) -> dict``: the sparsity terms of the loss (DIGEST §2.2), each already
  multiplied by its coefficient: ``l1`` (λ1 Σ_i w̃_i h_i, batch mean), ``l2`` (λ2 Σ_i h_i², batch mean) and
  ``aux`` (any other penalty; JumpReLU's L0 term lives here).

Adding an architecture means writing one class here and decorating it with :func:`register_objective`; the
model, trainer, sweep engine and I/O pick it up by name.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from .adaptive import AdaptiveWeights
from .config import SAEConfig

OBJECTIVES: dict[str, type["SparsityObjective"]] = {}


def register_objective(name: str) -> Callable[[type["SparsityObjective"]], type["SparsityObjective"]]:
    """Class decorator adding an objective to the registry under ``name``."""

    def deco(cls: type[SparsityObjective]) -> type[SparsityObjective]:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return deco


def make_objective(cfg: SAEConfig, device: torch.device | str | None = None) -> "SparsityObjective":
    """Build the objective named by ``cfg.architecture``."""
    try:
        cls = OBJECTIVES[cfg.architecture]
    except KeyError:
        raise ValueError(f"architecture={cfg.architecture!r} is unknown; known: {sorted(OBJECTIVES)}") from None
    return cls(cfg, device=device)


class SparsityObjective(nn.Module):
    """Base class. Subclasses override :meth:`activate` and, if they penalise anything, :meth:`penalty`."""

    name: ClassVar[str] = "base"

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.cfg = cfg

    def activate(self, pre: Tensor) -> Tensor:
        """Codes h [..., m] from pre-activations [..., m]."""
        return torch.relu(pre)

    def penalty(self, h: Tensor, pre: Tensor, *, update: bool = True) -> dict[str, Tensor]:
        """Sparsity terms (already weighted by their coefficients); ``update`` advances any running state."""
        zero = h.new_zeros(())
        return {"l1": zero, "l2": zero, "aux": zero}


# ----------------------------------------------------------------------------------------------------------
# The l1 family: ReLU codes with a (possibly adaptive) l1 penalty and an optional l2 term (DIGEST §2.2).
# ----------------------------------------------------------------------------------------------------------


def l2_penalty(h: Tensor, l2: float | Tensor) -> Tensor:
    """λ2 · (1/B) Σ_b Σ_i h_bi² (DIGEST §2.2, no ½ factor). h [..., B, m].

    Computed as a squared Frobenius norm: one reduction forward and one elementwise pass backward, with no h²
    temporary of the batch's size (this term is on the hot path of every EN/AEN step).
    """
    return l2 * torch.linalg.vector_norm(h, dim=(-2, -1)).square() / h.shape[-2]


class _L1Family(SparsityObjective):
    adaptive: ClassVar[bool] = False
    uses_l2: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, device)
        self.weights: AdaptiveWeights | None = None
        if self.adaptive:
            self.weights = AdaptiveWeights(
                cfg.d_sae,
                gamma=cfg.gamma,
                beta=cfg.ema_beta,
                top_pct=cfg.ref_top_pct,
                w_min=cfg.w_min,
                w_max=cfg.w_max,
                warmup_steps=cfg.warmup_steps,
                ramp_steps=cfg.ramp_steps,
                device=device,
            )

    def penalty(self, h: Tensor, pre: Tensor, *, update: bool = True) -> dict[str, Tensor]:
        h2 = h.reshape(-1, h.shape[-1])
        b = h2.shape[0]
        # h = ReLU(pre) >= 0, so Σ_b |h_bi| = Σ_b h_bi: one reduction over the batch serves both the EMA and the
        # penalty, and no |h| or w·h temporary of the batch's size is made (the value of λ1 (1/B) Σ_b Σ_i w_i |h_bi|, DIGEST §2.2).
        col = h2.sum(dim=0)  # [m]
        if self.weights is not None:
            w = self.weights.update_from_sums(col.detach(), b) if update else self.weights.weights()
            l1 = self.cfg.l1 * (col * w.to(col.dtype)).sum() / b
        else:
            l1 = self.cfg.l1 * col.sum() / b
        l2 = l2_penalty(h2, self.cfg.l2) if self.uses_l2 else h.new_zeros(())
        return {"l1": l1, "l2": l2, "aux": h.new_zeros(())}


@register_objective("relu_l1")
class ReLUL1(_L1Family):
    """Vanilla SAE: ReLU codes, MSE + λ1 Σ h (Bricken et al. 2023; DIGEST §2.2 'Vanilla L1')."""


@register_objective("elastic_net")
class ElasticNet(_L1Family):
    """Elastic net SAE: MSE + λ1 Σ h + λ2 Σ h² (Zou & Hastie 2005)."""

    uses_l2 = True


@register_objective("adaptive_lasso")
class AdaptiveLasso(_L1Family):
    """Adaptive lasso SAE: MSE + λ1 Σ w̃_i h_i with the adaptive weights of DIGEST §2.3 (Zou 2006)."""

    adaptive = True


@register_objective("aen")
class AdaptiveElasticNet(_L1Family):
    """AEN-SAE: MSE + λ1 Σ w̃_i h_i + λ2 Σ h² (Zou & Zhang 2009; the paper's method, DIGEST §2.2–§2.3)."""

    adaptive = True
    uses_l2 = True


# ----------------------------------------------------------------------------------------------------------
# Hard-sparsity baselines: TopK, BatchTopK, JumpReLU.
# ----------------------------------------------------------------------------------------------------------


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest pre-activations of each token, ReLU them, zero the rest (DIGEST §2.1 TopK).

    Gradients flow to the kept entries only. pre [..., m] -> h [..., m].
    """
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


def batch_topk_activation(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """BatchTopK (Bussmann et al. 2024): keep the k·B largest ReLU'd pre-activations of the whole batch.

    pre [B, m] -> (h [B, m], smallest kept positive value (scalar; 0 if none is positive)).
    """
    b, m = pre.shape
    flat = torch.relu(pre).reshape(-1)
    n_keep = min(k * b, flat.numel())
    vals, idx = flat.topk(n_keep)
    h = torch.zeros_like(flat).scatter(0, idx, vals).reshape(b, m)
    pos = vals[vals > 0]
    smallest = pos.min() if pos.numel() else vals.new_zeros(())
    return h, smallest.detach()


@register_objective("topk")
class TopK(SparsityObjective):
    """TopK SAE (Gao et al. 2024) as in the paper: pure MSE, no AuxK, no dead-latent revival (DIGEST §8.6)."""

    def activate(self, pre: Tensor) -> Tensor:
        return topk_activation(pre, self.cfg.k)


@register_objective("batchtopk")
class BatchTopK(SparsityObjective):
    """BatchTopK SAE (Bussmann et al. 2024): top k·B over the batch in training, a learned threshold at inference.

    The inference threshold is an EMA of the smallest activation kept in each training batch.
    """

    threshold: Tensor

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, device)
        self.register_buffer("threshold", torch.zeros((), device=device, dtype=torch.float32))
        self.register_buffer("threshold_initialised", torch.zeros((), device=device, dtype=torch.bool))

    def activate(self, pre: Tensor) -> Tensor:
        if not self.training:
            return pre * (pre > self.threshold.to(pre.dtype))
        shape = pre.shape
        h, smallest = batch_topk_activation(pre.reshape(-1, shape[-1]), self.cfg.k)
        with torch.no_grad():
            beta = self.cfg.batchtopk_threshold_beta
            s = smallest.to(self.threshold.dtype)
            new = torch.where(self.threshold_initialised, beta * self.threshold + (1 - beta) * s, s)
            self.threshold.copy_(new)
            self.threshold_initialised.fill_(True)
        return h.reshape(shape)


class _JumpReLUFn(torch.autograd.Function):
    """z·H(z-θ) with the straight-through pseudo-derivative of Rajamanoharan et al. (2024) for θ."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        kernel = ((z - theta).abs() < eps / 2).to(grad.dtype)  # rectangle kernel K((z-θ)/ε)
        dz = grad * (z > theta).to(grad.dtype)
        dtheta = -(theta / eps) * kernel * grad
        return dz, dtheta.reshape(-1, theta.shape[-1]).sum(0), None


class _StepFn(torch.autograd.Function):
    """Heaviside H(z-θ) with the straight-through pseudo-derivative -(1/ε)K((z-θ)/ε) for θ, 0 for z."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        kernel = ((z - theta).abs() < eps / 2).to(grad.dtype)
        dtheta = -(1.0 / eps) * kernel * grad
        return torch.zeros_like(z), dtheta.reshape(-1, theta.shape[-1]).sum(0), None


@register_objective("jumprelu")
class JumpReLU(SparsityObjective):
    """JumpReLU SAE (Rajamanoharan et al. 2024): h = z·H(z-θ), loss MSE + λ0 Σ_i H(z_i-θ_i) (batch mean).

    θ = exp(log_threshold) is learned through the straight-through estimator with bandwidth ε.
    """

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__(cfg, device)
        init = torch.full((cfg.d_sae,), math.log(cfg.jumprelu_init_threshold), device=device)
        self.log_threshold = nn.Parameter(init)

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activate(self, pre: Tensor) -> Tensor:
        theta = self.threshold.to(pre.dtype)
        return _JumpReLUFn.apply(pre, theta, self.cfg.jumprelu_bandwidth)

    def penalty(self, h: Tensor, pre: Tensor, *, update: bool = True) -> dict[str, Tensor]:
        theta = self.threshold.to(pre.dtype)
        l0 = _StepFn.apply(pre, theta, self.cfg.jumprelu_bandwidth).sum(dim=-1).mean()
        zero = h.new_zeros(())
        return {"l1": zero, "l2": zero, "aux": self.cfg.l0 * l0}
