"""Adaptive l1 weights of the AEN-SAE (the authors' rule; the book's page on the paper gives its source).

At every training step t (counted from 1, incremented before use):

1. EMA of the mean absolute activation per feature, updated first, with no gradient and no bias correction,
   initialised to 1:  ``m_i(t) = β m_i(t-1) + (1-β) mean_b |h_bi(t)|``.
2. Scale-invariant reference: ``r(t)`` = mean of the top ⌊p·m⌋ EMA values (at least one).
3. Raw weight: ``w_i = clip((r / max(m_i, 1e-5))^γ, w_min, w_max)``.
4. Hold-then-ramp warmup: ``f(t) = 0`` for t < T_w, else ``min(1, (t - T_w) / R)``;
   the weight used in the loss is ``w̃_i = 1 + f(t) (w_i - 1)``, a constant for autograd.

The formulas are pure functions over the last dimension, evaluated for a run of members at once (leading member
dimension, hyperparameters as broadcastable tensors) by :class:`aen_lib.sae.architectures.l1.L1Family`, which keeps the
state (EMA, step).
"""

from __future__ import annotations

import torch
from torch import Tensor

EMA_FLOOR = 1e-5
"""The EMA is floored at this value before dividing (book: paper facts, model and loss step 3)."""


def ema_step(ema: Tensor, mean_abs: Tensor, beta: float | Tensor) -> Tensor:
    """One EMA step of mean |h| per feature (step 1): β·ema + (1 − β)·mean_b |h_b|, computed in float64 and
    returned in the EMA's dtype. ema, mean_abs: [..., m]; beta: a float or [..., 1]."""
    beta = torch.as_tensor(beta, dtype=torch.float64, device=ema.device)
    return (beta * ema.to(torch.float64) + (1.0 - beta) * mean_abs.to(torch.float64)).to(ema.dtype)


def reference_count(m: int, top_pct: float) -> int:
    """⌊p·m⌋, at least 1: how many of the largest EMA values form the reference (book: paper facts, model and loss step 2)."""
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
    """w = clip((r / max(ema, 1e-5))^γ, w_min, w_max) (book: paper facts, model and loss step 3). ema [..., m], ref [...] -> [..., m]."""
    ratio = ref.unsqueeze(-1) / ema.clamp_min(EMA_FLOOR)
    w = ratio.pow(gamma)
    w_min_t = torch.as_tensor(w_min, dtype=w.dtype, device=w.device)
    w_max_t = torch.as_tensor(w_max, dtype=w.dtype, device=w.device)
    return torch.minimum(torch.maximum(w, w_min_t), w_max_t)


def warmup_factor(step: int | Tensor, warmup_steps: int | Tensor, ramp_steps: int | Tensor) -> Tensor:
    """Hold-then-ramp factor f(t) (book: paper facts, model and loss step 4): 0 while t < T_w, then min(1, (t - T_w)/R).

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
