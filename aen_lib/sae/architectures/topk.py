"""TopK SAE (Gao et al. 2024) as in the paper: keep each token's k largest pre-activations, ReLU them, zero the rest;
the loss is pure MSE — no auxiliary loss, no dead-latent revival (the paper's baseline; see :mod:`.topk_auxk`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ...errors import fail
from ...palette import OKABE_ITO
from .base import Architecture, ArchitectureSpec, StepContext, register_architecture


def topk_codes(pre: Tensor, k: Tensor, k_max: int, groups: Sequence[tuple[int, int, int]] | None = None) -> Tensor:
    """Per member, the k_i largest entries of each token, ReLU'd. pre [Mg, B, m], k [Mg] -> h [Mg, B, m].

    Without ``groups`` the top-k_max of every token is taken once and masked by rank, so members with different k
    share one topk call. With ``groups`` (``(start, stop, k)`` runs of members with one k, :func:`k_groups`) each run
    takes only its own k, unsorted: a stack of k 8 ... 128 then costs the sum of its topk calls instead of k_max's
    for every member (about 0.6x on a CPU at the paper's synthetic size). The codes are the same either way.
    Gradients flow to the kept entries only.
    """
    if groups is not None:
        hs = []
        for a, b, kk in groups:
            part = pre[a:b]
            vals, idx = part.topk(kk, dim=-1, sorted=False)
            hs.append(torch.zeros_like(part).scatter(-1, idx, torch.relu(vals)))
        return torch.cat(hs) if len(hs) > 1 else hs[0]
    vals, idx = pre.topk(k_max, dim=-1)  # [Mg, B, k_max], sorted descending
    keep = torch.arange(k_max, device=pre.device) < k.reshape(-1, 1, 1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals) * keep.to(vals.dtype))


def k_groups(ks: Sequence[int]) -> list[tuple[int, int, int]]:
    """Consecutive members sharing one k as ``(start, stop, k)``: [8, 8, 32] -> [(0, 2, 8), (2, 3, 32)]."""
    out: list[tuple[int, int, int]] = []
    for i, kk in enumerate(ks):
        if out and out[-1][2] == kk:
            out[-1] = (out[-1][0], i + 1, kk)
        else:
            out.append((i, i + 1, int(kk)))
    return out


class KSparse(Architecture):
    """Architectures with a per-member number of active latents ``k [Mg]`` (TopK, TopK+AuxK, BatchTopK)."""

    def __init__(self, cfgs: list[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start, device, dtype)
        self.hyper("k", [c.k for c in cfgs], device, torch.long)
        self.k_max = max(c.k for c in cfgs)
        self.k_groups = k_groups([c.k for c in cfgs])

    @classmethod
    def validate(cls, cfg: Any) -> None:
        super().validate(cfg)
        if not 1 <= cfg.k <= cfg.d_sae:
            fail("k", cfg.k, f"must satisfy 1 <= k <= d_sae={cfg.d_sae} for {cfg.architecture}")

    @classmethod
    def label(cls, cfg: Any) -> str:
        return f"{cfg.architecture} k={cfg.k}"


@register_architecture(ArchitectureSpec("topk", "TopK", OKABE_ITO["blue"], "^", in_paper=True, uses=("k",)))
class TopK(KSparse):
    """No running state."""

    saelens_architecture = "topk"

    def activate(self, pre: Tensor, ctx: StepContext) -> Tensor:
        return topk_codes(pre, self.k, self.k_max, self.k_groups)

    @classmethod
    def saelens_fields(cls, cfg: Any) -> dict[str, Any]:
        return {"k": cfg.k, "rescale_acts_by_decoder_norm": False}  # our decoder rows are unit-norm
