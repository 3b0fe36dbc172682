"""The l1 family: ReLU codes, MSE + λ1 (1/B) Σ_b Σ_i w̃_i h_bi + λ2 (1/B) Σ_b Σ_i h_bi² (paper §2).

Four registered names share this one class; a member's name decides its terms:

* ``relu_l1``: w̃ ≡ 1, λ2 = 0 (Bricken et al. 2023);
* ``elastic_net``: w̃ ≡ 1, λ2 > 0 (Zou & Hastie 2005);
* ``adaptive_lasso``: adaptive w̃, λ2 = 0 (Zou 2006);
* ``aen``: adaptive w̃ and λ2 (Zou & Zhang 2009) — the paper's AEN-SAE.

The adaptive weights follow the authors' rule (:mod:`aen_lib.sae.adaptive`): the EMA of mean |h| per latent is updated
first with the current batch, then w = clip((r / max(EMA, 1e-5))^γ, w_min, w_max) with r the mean of the top ⌊p·m⌋
EMA values, held at 1 before T_w and ramped in over R steps; the weights are constants for autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..adaptive import effective_weights, ema_step, raw_adaptive_weights, reference_scale, warmup_factor
from ...errors import fail
from ...palette import OKABE_ITO
from .base import Architecture, ArchitectureSpec, Option, StepContext, register_architecture

ADAPTIVE = ("adaptive_lasso", "aen")
WITH_L2 = ("elastic_net", "aen")


def l2_penalty(h: Tensor, l2: Tensor) -> Tensor:
    """λ2 · (1/B) Σ_b Σ_i h_bi² per member (no ½ factor). h [Mg, B, m], l2 [Mg] -> [Mg].

    A squared Frobenius norm: one reduction forward and one elementwise pass backward, no h² temporary.
    """
    return l2 * torch.linalg.vector_norm(h, dim=(-2, -1)).square() / h.shape[-2]


_ADAPTIVE_FIELDS = ("l1", "gamma", "ema_beta", "ref_top_pct", "w_min", "w_max", "warmup_steps", "ramp_steps")


@register_architecture(
    ArchitectureSpec("relu_l1", "ReLU + ℓ1", OKABE_ITO["orange"], "o", in_paper=True, uses=("l1",)),
    ArchitectureSpec("elastic_net", "Elastic net", OKABE_ITO["sky_blue"], "s", in_paper=True, uses=("l1", "l2"),
                     cli_defaults={"l2": 1e-4}),
    ArchitectureSpec("adaptive_lasso", "Adaptive lasso", OKABE_ITO["bluish_green"], "D", in_paper=True,
                     uses=_ADAPTIVE_FIELDS),
    ArchitectureSpec("aen", "AEN (ours)", OKABE_ITO["vermillion"], "*", in_paper=True,
                     uses=(*_ADAPTIVE_FIELDS, "l2"), cli_defaults={"l2": 1e-4}),
)
class L1Family(Architecture):
    """ReLU codes with the (adaptive) l1 and optional l2 penalty; state: ``ema [Mg, m]`` (float32) and ``step [Mg]``."""

    ACTIVATION_COUNTS = (4, 5, 3)
    OPTIONS = {
        "ema_init": Option("one", lambda v: v in ("one", "first_batch"), "must be 'one' or 'first_batch'",
                           "where the EMA of mean |h| starts: 'one' (the authors' rule: every latent at 1, so with "
                           "β = 0.9999 the weights move slowly) or 'first_batch' (the first batch's mean |h|); "
                           "adaptive_lasso and aen only"),
    }
    ema: Tensor
    step: Tensor

    def __init__(self, cfgs: list[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start, device, dtype)
        f32, f64 = torch.float32, torch.float64
        self.hyper("l1", [c.l1 for c in cfgs], device, dtype)
        self.hyper("l2", [c.l2 for c in cfgs], device, dtype)
        self.hyper("adaptive", [c.architecture in ADAPTIVE for c in cfgs], device, torch.bool)
        self.hyper("gamma", [c.gamma for c in cfgs], device, f32)
        self.hyper("beta", [c.ema_beta for c in cfgs], device, f64)
        self.hyper("w_min", [c.w_min for c in cfgs], device, f32)
        self.hyper("w_max", [c.w_max for c in cfgs], device, f32)
        self.hyper("warmup", [c.warmup_steps for c in cfgs], device, f64)
        self.hyper("ramp", [c.ramp_steps for c in cfgs], device, f64)
        self.any_adaptive = any(c.architecture in ADAPTIVE for c in cfgs)
        self.hyper("ema_from_batch", [self.option(c, "ema_init") == "first_batch" for c in cfgs], device, torch.bool)
        self.any_ema_from_batch = any(self.option(c, "ema_init") == "first_batch" for c in cfgs)
        self.any_l2 = any(c.architecture in WITH_L2 for c in cfgs)
        # members that share a reference fraction p (r = mean of the top ⌊p·m⌋ EMA values)
        self.p_rows = {p: [i for i, c in enumerate(cfgs) if c.ref_top_pct == p] for p in sorted({c.ref_top_pct for c in cfgs})}
        self.register_buffer("ema", torch.ones(len(cfgs), self.d_sae, device=device, dtype=f32))
        self.register_buffer("step", torch.zeros(len(cfgs), device=device, dtype=torch.long))

    @classmethod
    def validate(cls, cfg: Any) -> None:
        super().validate(cfg)
        if cfg.l2 != 0 and cfg.architecture not in WITH_L2:
            fail("l2", cfg.l2, f"must be 0 for {cfg.architecture}; use elastic_net or aen for an l2 term")
        if "ema_init" in cfg.options and cfg.architecture not in ADAPTIVE:
            fail("options['ema_init']", cfg.options["ema_init"], f"applies to adaptive_lasso and aen only, not "
                 f"{cfg.architecture} (it has no adaptive weights)")

    @classmethod
    def label(cls, cfg: Any) -> str:
        s = f"{cfg.architecture} λ1={cfg.l1:g}"
        if cfg.architecture in WITH_L2:
            s += f" λ2={cfg.l2:g}"
        if cfg.architecture in ADAPTIVE:
            s += f" γ={cfg.gamma:g} β={cfg.ema_beta:g} p={cfg.ref_top_pct:g}"
            if cls.option(cfg, "ema_init") != "one":
                s += f" EMA from {cls.option(cfg, 'ema_init').replace('_', ' ')}"
        return s

    saelens_architecture = "standard"  # at inference an AEN-SAE is a plain ReLU SAE

    def raw_weights(self) -> Tensor:
        """Clamped weights w [Mg, m] from the current EMA, before the warmup factor."""
        ref = torch.empty(self.size, device=self.ema.device, dtype=self.ema.dtype)
        for p, rows in self.p_rows.items():
            ref[rows] = reference_scale(self.ema[rows], p)
        return raw_adaptive_weights(self.ema, ref, self.gamma.unsqueeze(-1), self.w_min.unsqueeze(-1),
                                    self.w_max.unsqueeze(-1))

    def factor(self) -> Tensor:
        """Warmup factor f(t) [Mg] at each member's current step."""
        return warmup_factor(self.step, self.warmup, self.ramp)

    def weights(self) -> Tensor:
        """w̃ [Mg, m] used in the loss at the current step: adaptive members' weights, ones for the others."""
        w = effective_weights(self.raw_weights(), self.factor())
        return torch.where(self.adaptive.unsqueeze(-1), w, torch.ones_like(w))

    def penalty(self, h: Tensor, pre: Tensor, x: Tensor, x_hat: Tensor, w_dec: Tensor, ctx: StepContext
                ) -> dict[str, Tensor]:
        b = h.shape[-2]
        # h = ReLU(pre) >= 0, so Σ_b |h_bi| = Σ_b h_bi: one reduction over the batch serves the EMA and the penalty,
        # and no |h| or w·h temporary of the batch's size is made.
        col = h.sum(dim=-2)  # [Mg, m]
        if self.any_adaptive:
            if ctx.update:
                with torch.no_grad():
                    stats = torch.cat([col.detach().to(torch.float32).reshape(-1),
                                       torch.tensor([float(b)], device=col.device)])
                    stats = ctx.reducer.sum(stats)  # global-batch sums under DDP
                    mean_abs = (stats[:-1] / stats[-1]).reshape(col.shape)
                    new = ema_step(self.ema, mean_abs, self.beta.unsqueeze(-1))
                    if self.any_ema_from_batch:  # members started from the first batch take it whole at step 1
                        first = (self.ema_from_batch & (self.step == 0)).unsqueeze(-1)
                        new = torch.where(first, mean_abs.to(new.dtype), new)
                    # only adaptive members keep an EMA (the others' state stays at its initial value)
                    self.ema.copy_(torch.where(self.adaptive.unsqueeze(-1), new, self.ema))
                    self.step += self.adaptive.to(self.step.dtype)
            w = self.weights().to(col.dtype)
            l1 = self.l1 * (col * w).sum(dim=-1) / b
        else:
            l1 = self.l1 * col.sum(dim=-1) / b
        l2 = l2_penalty(h, self.l2) if self.any_l2 else h.new_zeros(self.size)
        return {"l1": l1, "l2": l2, "aux": h.new_zeros(self.size)}

    @torch.no_grad()
    def summary(self, j: int) -> dict[str, float]:
        if not bool(self.adaptive[j]):
            return {}
        raw = self.raw_weights()[j]
        w_max, w_min = float(self.w_max[j]), float(self.w_min[j])
        p = self.cfgs[j].ref_top_pct
        return {
            "adaptive_ref": float(reference_scale(self.ema[j], p)),
            "adaptive_factor": float(self.factor()[j]),
            "adaptive_w_mean": float(self.weights()[j].mean()),
            "adaptive_frac_w_max": float((raw >= w_max * (1 - 1e-6)).float().mean()),
            "adaptive_frac_w_min": float((raw <= w_min * (1 + 1e-6)).float().mean()),
        }
