"""BatchTopK SAE (Bussmann et al. 2024): in training, per member the k·B largest ReLU'd pre-activations of the whole
batch are kept; at inference a threshold (an EMA of the smallest kept value) replaces the selection. It exports to
SAELens as a JumpReLU with that threshold on every latent."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ...palette import OKABE_ITO
from .base import ArchitectureSpec, Option, StepContext, register_architecture
from .topk import KSparse


def _decay(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


@register_architecture(ArchitectureSpec("batchtopk", "BatchTopK", OKABE_ITO["reddish_purple"], "v", uses=("k",)))
class BatchTopK(KSparse):
    """State: ``threshold [Mg]`` (float32) and ``threshold_initialised [Mg]``."""

    saelens_architecture = "jumprelu"
    supports_ddp = False  # the top-(k·B) selection spans the whole batch, which DDP splits across ranks
    ACTIVATION_COUNTS = (4, 5, 3)
    # top-level: it was an SAEConfig field, and every committed record's variant id hashes it (Option.top_level)
    OPTIONS = {
        "batchtopk_threshold_beta": Option(0.99, _decay, "must be a number in [0, 1)",
                                           "EMA decay of the inference threshold (mean smallest kept activation)",
                                           top_level=True),
    }

    threshold: Tensor
    threshold_initialised: Tensor

    def __init__(self, cfgs: list[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start, device, dtype)
        self.hyper("beta", [self.option(c, "batchtopk_threshold_beta") for c in cfgs], device, torch.float64)
        self.register_buffer("threshold", torch.zeros(len(cfgs), device=device, dtype=torch.float32))
        self.register_buffer("threshold_initialised", torch.zeros(len(cfgs), device=device, dtype=torch.bool))

    def activate(self, pre: Tensor, ctx: StepContext) -> Tensor:
        mg, b, m = pre.shape
        if not ctx.training:
            return pre * (pre > self.threshold.to(pre.dtype).reshape(-1, 1, 1))
        flat = torch.relu(pre).reshape(mg, b * m)
        n_keep = torch.clamp(self.k * b, max=b * m)  # [Mg]
        vals, idx = flat.topk(min(self.k_max * b, b * m), dim=-1)
        keep = torch.arange(vals.shape[1], device=pre.device) < n_keep.reshape(-1, 1)
        h = torch.zeros_like(flat).scatter(-1, idx, vals * keep.to(vals.dtype)).reshape(mg, b, m)
        if not ctx.update:
            return h
        with torch.no_grad():
            pos = keep & (vals > 0)
            smallest = torch.where(pos, vals, torch.full_like(vals, math.inf)).amin(dim=-1)
            smallest = torch.where(pos.any(dim=-1), smallest, torch.zeros_like(smallest)).to(self.threshold.dtype)
            ema = (self.beta * self.threshold + (1 - self.beta) * smallest).to(self.threshold.dtype)
            self.threshold.copy_(torch.where(self.threshold_initialised, ema, smallest))
            self.threshold_initialised.fill_(True)
        return h

    def saelens_tensors(self, j: int) -> dict[str, Tensor]:
        return {"threshold": self.threshold[j].expand(self.d_sae)}

    @torch.no_grad()
    def load_saelens_tensors(self, j: int, tensors: dict[str, Tensor]) -> None:
        self.threshold[j] = tensors["threshold"][0]
        self.threshold_initialised[j] = True
