"""JumpReLU SAE (Rajamanoharan et al. 2024): h = z·H(z − θ) with a learned threshold θ = exp(log_threshold) per latent,
loss MSE + λ0 (1/B) Σ_b Σ_i H(z_bi − θ_i); θ learns through straight-through pseudo-derivatives with a rectangle
kernel of bandwidth ε."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...palette import OKABE_ITO
from .base import Architecture, ArchitectureSpec, Option, StepContext, register_architecture


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


class JumpReLUFn(torch.autograd.Function):
    """z·H(z − θ); ∂/∂z = H(z − θ), ∂/∂θ = −(θ/ε) K((z − θ)/ε). z [B, W], θ [W] (W latents side by side)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        kernel = ((z - theta).abs() < ctx.eps / 2).to(grad.dtype)  # rectangle kernel K((z-θ)/ε)
        dz = grad * (z > theta).to(grad.dtype)
        dtheta = -(theta / ctx.eps) * kernel * grad
        return dz, dtheta.reshape(-1, theta.shape[-1]).sum(0), None


class StepFn(torch.autograd.Function):
    """H(z − θ); ∂/∂z = 0, ∂/∂θ = −(1/ε) K((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        kernel = ((z - theta).abs() < ctx.eps / 2).to(grad.dtype)
        dtheta = -(1.0 / ctx.eps) * kernel * grad
        return torch.zeros_like(z), dtheta.reshape(-1, theta.shape[-1]).sum(0), None


@register_architecture(ArchitectureSpec("jumprelu", "JumpReLU", OKABE_ITO["black"], "P", uses=("l0",)))
class JumpReLU(Architecture):
    """Learned ``log_threshold [Mg, m]`` (an extra parameter, trained by the same Adam); per-member λ0."""

    saelens_architecture = "jumprelu"
    ACTIVATION_COUNTS = (5, 8, 6)
    # top-level: they were SAEConfig fields, and every committed record's variant id hashes them (Option.top_level)
    OPTIONS = {
        "jumprelu_init_threshold": Option(0.001, _positive, "must be a finite number > 0",
                                          "initial threshold θ of every latent", top_level=True),
        "jumprelu_bandwidth": Option(0.001, _positive, "must be a finite number > 0",
                                     "bandwidth ε of the rectangle kernel in the straight-through estimator",
                                     top_level=True),
    }

    def __init__(self, cfgs: list[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start, device, dtype)
        init = torch.tensor([[math.log(self.option(c, "jumprelu_init_threshold"))] for c in cfgs], device=device)
        self.log_threshold = nn.Parameter(init.expand(len(cfgs), self.d_sae).clone())
        self.hyper("l0", [c.l0 for c in cfgs], device, torch.float32)
        # members laid side by side as one wide layer [B, r·m], one autograd call per distinct bandwidth ε
        eps = [float(self.option(c, "jumprelu_bandwidth")) for c in cfgs]
        self.eps_rows = {e: [i for i, ei in enumerate(eps) if ei == e] for e in sorted(set(eps))}

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"jumprelu λ0={cfg.l0:g}"

    @property
    def threshold(self) -> Tensor:
        """θ [Mg, m]."""
        return self.log_threshold.exp()

    def _apply_fn(self, fn: Any, pre: Tensor) -> Tensor:
        outs, order = [], []
        for eps, rows in self.eps_rows.items():
            z = pre[rows]  # [r, B, m]
            r, b, m = z.shape
            theta = self.log_threshold[rows].exp().to(pre.dtype).reshape(r * m)
            wide = fn.apply(z.permute(1, 0, 2).reshape(b, r * m), theta, eps)
            outs.append(wide.reshape(b, r, m).permute(1, 0, 2))
            order += rows
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if order != sorted(order):
            out = out[torch.as_tensor(sorted(range(len(order)), key=order.__getitem__), device=pre.device)]
        return out

    def activate(self, pre: Tensor, ctx: StepContext) -> Tensor:
        return self._apply_fn(JumpReLUFn, pre)

    def penalty(self, h: Tensor, pre: Tensor, x: Tensor, x_hat: Tensor, w_dec: Tensor, ctx: StepContext
                ) -> dict[str, Tensor]:
        l0 = self._apply_fn(StepFn, pre).sum(dim=-1).mean(dim=-1)  # [Mg]
        z = h.new_zeros(self.size)
        return {"l1": z, "l2": z, "aux": self.l0.to(l0.dtype) * l0}

    def saelens_tensors(self, j: int) -> dict[str, Tensor]:
        return {"threshold": self.threshold[j]}

    @torch.no_grad()
    def load_saelens_tensors(self, j: int, tensors: dict[str, Tensor]) -> None:
        self.log_threshold[j] = tensors["threshold"].log()
