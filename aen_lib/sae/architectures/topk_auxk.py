"""TopK SAE with the AuxK auxiliary loss (Gao et al. 2024), the standard form of the TopK baseline.

A latent is *dead* once it has not fired for ``auxk_dead_tokens`` training tokens. Each step the ``auxk_k`` largest
pre-activations among the dead latents (ReLU'd) reconstruct the main reconstruction's residual e = x − x̂ (a
constant target), and the loss adds α · mean_{b,j} (e − ê)² with ê = codes_aux · W_dec, the same per-dimension mean
as the main MSE; α = 1/32 by default, Gao et al.'s coefficient. (Their reference code also divides the auxiliary
MSE by the residual's variance, and SAELens uses α = 1 without that division; this one does neither, so α is
relative to the main loss.) The auxiliary codes never enter x̂; they only give dead latents a gradient. The paper's TopK baseline has no AuxK (:mod:`.topk`); this one answers "what if it had".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...evaluation.dead import DEAD_THRESHOLD
from ...palette import TOL_OLIVE
from .base import ArchitectureSpec, Option, StepContext, register_architecture
from .topk import TopK


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@register_architecture(ArchitectureSpec("topk_auxk", "TopK + AuxK", TOL_OLIVE, ">", uses=("k",)))
class TopKAuxK(TopK):
    """State: ``tokens_since_fired [Mg, m]`` (global-batch tokens since each latent last fired)."""

    ACTIVATION_COUNTS = (5, 6, 4)
    OPTIONS = {
        "auxk_k": Option(0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                         "must be an integer >= 0 (0: d_in // 2)",
                         "k_aux, dead latents used per token by the auxiliary loss; 0 means d_in // 2"),
        "auxk_coef": Option(1 / 32, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                            "must be a number >= 0", "α, coefficient of the auxiliary loss (Gao et al.: 1/32)"),
        "auxk_dead_tokens": Option(256_000, _positive_int, "must be a positive integer",
                                   "a latent that has not fired for this many tokens is dead "
                                   "(default: 1,000 steps of 256 tokens; Gao et al. used 10M tokens at LLM scale)"),
    }

    tokens_since_fired: Tensor

    def __init__(self, cfgs: list[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start, device, dtype)
        k_aux = [self.option(c, "auxk_k") or max(1, c.d_in // 2) for c in cfgs]
        self.hyper("k_aux", [min(k, c.d_sae) for k, c in zip(k_aux, cfgs)], device, torch.long)
        self.k_aux_max = int(self.k_aux.max())
        self.hyper("coef", [float(self.option(c, "auxk_coef")) for c in cfgs], device, torch.float32)
        self.hyper("dead_tokens", [self.option(c, "auxk_dead_tokens") for c in cfgs], device, torch.long)
        self.register_buffer("tokens_since_fired", torch.zeros(len(cfgs), self.d_sae, device=device, dtype=torch.long))

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"topk_auxk k={cfg.k}"

    def dead_mask(self) -> Tensor:
        """[Mg, m] bool: latents that count as dead for the auxiliary loss."""
        return self.tokens_since_fired >= self.dead_tokens.unsqueeze(-1)

    def penalty(self, h: Tensor, pre: Tensor, x: Tensor, x_hat: Tensor, w_dec: Tensor, ctx: StepContext
                ) -> dict[str, Tensor]:
        z = h.new_zeros(self.size)
        aux = z
        dead = self.dead_mask()
        if ctx.training and bool(dead.any()):
            # Only dead latents can enter ê, so the decode runs over them alone: their columns of `pre` and rows of
            # W_dec, gathered per member (padded to the member with most dead; the padding is masked like a live
            # latent). ê is the same sum as over all m latents with the live ones' codes at zero, at a fraction of
            # the cost whenever few latents are dead.
            n_dead = int(dead.sum(-1).max())
            cols = dead.to(torch.uint8).topk(n_dead, dim=-1, sorted=False).indices  # [Mg, D]: dead first, padding after
            is_dead = dead.gather(-1, cols)
            pre_d = pre.gather(-1, cols.unsqueeze(-2).expand(-1, pre.shape[-2], -1))  # [Mg, B, D]
            masked = pre_d.masked_fill(~is_dead.unsqueeze(-2), float("-inf"))
            k = min(self.k_aux_max, n_dead)
            vals, idx = masked.topk(k, dim=-1)  # [Mg, B, k]
            keep = (torch.arange(k, device=pre.device) < self.k_aux.reshape(-1, 1, 1)) & vals.isfinite()
            codes = torch.zeros_like(pre_d).scatter(-1, idx, torch.where(keep, torch.relu(vals), torch.zeros_like(vals)))
            w_d = w_dec.gather(-2, cols.unsqueeze(-1).expand(-1, -1, w_dec.shape[-1]))  # [Mg, D, n]
            e = (x - x_hat).detach()  # [Mg, B, n]: the residual is a constant target
            e_hat = torch.bmm(codes, w_d)
            aux = self.coef.to(pre.dtype) * (e - e_hat).pow(2).mean(dim=(-2, -1))
        if ctx.update:
            with torch.no_grad():
                fired = ctx.reducer.max((h > DEAD_THRESHOLD).any(dim=-2))  # [Mg, m], over the global batch
                tokens = int(ctx.reducer.sum(torch.tensor([h.shape[-2]], device=h.device)).item())
                self.tokens_since_fired.add_(tokens).masked_fill_(fired, 0)
        return {"l1": z, "l2": z, "aux": aux}

    @torch.no_grad()
    def summary(self, j: int) -> dict[str, float]:
        return {"auxk_dead_pct": 100.0 * float(self.dead_mask()[j].float().mean())}
