"""Adaptive l1 weights of the AEN-SAE (DIGEST §2.3).

At every training step t (counted from 1, incremented before use):

1. EMA of the mean absolute activation per feature, updated first, with no gradient and no bias correction,
   initialised to 1:  ``m_i(t) = β m_i(t-1) + (1-β) mean_b |h_bi(t)|``.
2. Scale-invariant reference: ``r(t)`` = mean of the top ⌊p·m⌋ EMA values (at least one).
3. Raw weight: ``w_i = clip((r / max(m_i, 1e-5))^γ, w_min, w_max)``.
4. Hold-then-ramp warmup: ``f(t) = 0`` for t < T_w, else ``min(1, (t - T_w) / R)``;
   the weight used in the loss is ``w̃_i = 1 + f(t) (w_i - 1)``, a constant for autograd.

The formulas are pure functions over the last dimension so that a sweep can evaluate them for a stack of
models at once (leading member dimension, hyperparameters as broadcastable tensors).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EMA_FLOOR = 1e-5
"""The EMA is floored at this value before dividing (DIGEST §2.3 step 3)."""


def ema_update(ema: Tensor, h: Tensor, beta: float | Tensor) -> Tensor:
    """One EMA step of mean |h| per feature (DIGEST §2.3 step 1).

    ema: [..., m]; h: [..., B, m] (the batch dimension is the second to last); returns the new EMA [..., m].
    """
    mean_abs = h.detach().abs().mean(dim=-2)
    return beta * ema + (1.0 - beta) * mean_abs.to(ema.dtype)


def reference_count(m: int, top_pct: float) -> int:
    """⌊p·m⌋, at least 1: how many of the largest EMA values form the reference (DIGEST §2.3 step 2)."""
    return max(1, int(top_pct * m))


def reference_scale(ema: Tensor, top_pct: float) -> Tensor:
    """r = mean of the top ⌊p·m⌋ EMA values over the last dimension. ema: [..., m] -> [...]."""
    n_top = reference_count(ema.shape[-1], top_pct)
    return ema.topk(n_top, dim=-1).values.mean(dim=-1)


def raw_adaptive_weights(
    ema: Tensor,
    ref: Tensor,
    gamma: float | Tensor,
    w_min: float | Tensor,
    w_max: float | Tensor,
) -> Tensor:
    """w = clip((r / max(ema, 1e-5))^γ, w_min, w_max) (DIGEST §2.3 step 3). ema [..., m], ref [...] -> [..., m]."""
    ratio = ref.unsqueeze(-1) / ema.clamp_min(EMA_FLOOR)
    w = ratio.pow(gamma)
    w_min_t = torch.as_tensor(w_min, dtype=w.dtype, device=w.device)
    w_max_t = torch.as_tensor(w_max, dtype=w.dtype, device=w.device)
    return torch.minimum(torch.maximum(w, w_min_t), w_max_t)


def warmup_factor(step: int | Tensor, warmup_steps: int | Tensor, ramp_steps: int | Tensor) -> Tensor:
    """Hold-then-ramp factor f(t) (DIGEST §2.3 step 4): 0 while t < T_w, then min(1, (t - T_w)/R).

    With R = 0 the weights switch on fully at t = T_w.
    """
    t = torch.as_tensor(step).to(torch.float64)
    tw = torch.as_tensor(warmup_steps, dtype=torch.float64, device=t.device)
    r = torch.as_tensor(ramp_steps, dtype=torch.float64, device=t.device)
    ramp = torch.where(r > 0, (t - tw) / r.clamp_min(1.0), torch.ones_like(t))
    return torch.where(t < tw, torch.zeros_like(t), ramp.clamp(max=1.0))


def effective_weights(raw: Tensor, factor: Tensor) -> Tensor:
    """w̃ = 1 + f (w - 1): all ones during the hold, the raw weights after the ramp. raw [..., m], factor [...]."""
    f = factor.to(raw.dtype).unsqueeze(-1) if factor.dim() > 0 else factor.to(raw.dtype)
    return 1.0 + f * (raw - 1.0)


class AdaptiveWeights(nn.Module):
    """State and rule of the adaptive l1 weights for one SAE with m latents (DIGEST §2.3).

    Buffers (saved in every checkpoint): ``ema`` [m] initialised to 1 and ``step`` (number of updates so far).
    """

    ema: Tensor
    step: Tensor

    def __init__(
        self,
        m: int,
        *,
        gamma: float,
        beta: float,
        top_pct: float,
        w_min: float,
        w_max: float,
        warmup_steps: int,
        ramp_steps: int,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.m = m
        self.gamma, self.beta, self.top_pct = gamma, beta, top_pct
        self.w_min, self.w_max = w_min, w_max
        self.warmup_steps, self.ramp_steps = warmup_steps, ramp_steps
        # The EMA is kept in float32 whatever the model dtype, so bf16 training does not quantise the statistics.
        self.register_buffer("ema", torch.ones(m, device=device, dtype=torch.float32))
        self.register_buffer("step", torch.zeros((), device=device, dtype=torch.long))

    def raw_weights(self) -> Tensor:
        """Clamped weights w [m] from the current EMA, before the warmup factor."""
        ref = reference_scale(self.ema, self.top_pct)
        return raw_adaptive_weights(self.ema, ref, self.gamma, self.w_min, self.w_max)

    def factor(self) -> Tensor:
        """Warmup factor f(t) at the current step."""
        return warmup_factor(self.step, self.warmup_steps, self.ramp_steps)

    def weights(self) -> Tensor:
        """The weights w̃ [m] used in the loss at the current step (no update)."""
        return effective_weights(self.raw_weights(), self.factor().to(self.ema.device))

    @torch.no_grad()
    def update(self, h: Tensor) -> Tensor:
        """Advance one training step with codes h [..., m]: t += 1, update the EMA, return w̃ [m] (detached)."""
        h2 = h.detach().reshape(-1, h.shape[-1])
        return self.update_from_sums(torch.linalg.vector_norm(h2, 1, dim=0), h2.shape[0])

    @torch.no_grad()
    def update_from_sums(self, abs_sum: Tensor, count: int) -> Tensor:
        """The same step from Σ_b |h_bi| [m] over ``count`` samples (lets the loss share one reduction over the batch;
        the distributed trainer overrides this to reduce the sums over ranks)."""
        self.step += 1
        mean_abs = abs_sum.detach().to(self.ema.dtype) / count
        self.ema.mul_(self.beta).add_((1.0 - self.beta) * mean_abs)
        return self.weights()

    def summary(self) -> dict[str, float]:
        """Diagnostics for logging: reference, warmup factor, mean weight, share of weights pinned at w_max/w_min."""
        w = self.raw_weights()
        return {
            "adaptive_ref": float(reference_scale(self.ema, self.top_pct)),
            "adaptive_factor": float(self.factor()),
            "adaptive_w_mean": float(self.weights().mean()),
            "adaptive_frac_w_max": float((w >= self.w_max * (1 - 1e-6)).float().mean()),
            "adaptive_frac_w_min": float((w <= self.w_min * (1 + 1e-6)).float().mean()),
        }
