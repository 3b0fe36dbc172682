"""Train a whole grid of SAEs at once: stacked parameters, one data stream (DIGEST §4.2, §5.1 "Sweeps").

The paper's results are sweeps: every architecture at many hyperparameters and seeds, all trained on the same data.
Trained one after another, each SAE of the synthetic shape (n = 256, m = 1024, batch 256) is a few small matmuls per
step that leave a GPU mostly idle. Here M members are trained in lockstep on the same batch by stacking their
parameters along a leading *member* dimension::

    W_enc [M, n, m]   b_enc [M, m]   W_dec [M, m, n]   b_dec [M, n]
    pre   = (x - b_dec) @ W_enc + b_enc       # one batched matmul: [M, B, m]
    h     = activation of each member's architecture (groups of consecutive members)
    x_hat = h @ W_dec + b_dec                 # [M, B, n]
    loss  = Σ_members (mse_i + l1_i + l2_i + aux_i)     # each term exactly as in SAE.loss (DIGEST §2.2)

Because member i's parameters appear only in loss_i, the gradient of the sum is every member's own gradient, and
the optimiser (:class:`StackedAdam`, elementwise like Adam) keeps the members independent. Per-member
hyperparameters are tensors: λ1, λ2, γ, β, p, w_min, w_max, T_w, R (l1 family), k (TopK, BatchTopK; top-k_max is
taken once and masked by rank), λ0 and θ₀ (JumpReLU). The adaptive-weight rule of DIGEST §2.3 is evaluated for all
adaptive members at once with the batched formulas of :mod:`aen_lib.adaptive`.

A member trained in a sweep matches, to float tolerance, the same :class:`~aen_lib.config.SAEConfig` trained alone
with :func:`aen_lib.train.train` on a data source with the same seed (``tests/test_sweep.py`` checks every
architecture): same initialisation (each member is first built as an ``SAE``), same batches, same loss, same Adam,
same decoder projection, same NaN-step guard, same metric history.

Memory: members are split into chunks that fit a memory budget (:func:`member_bytes`); each chunk replays the data
stream from the same starting state, so chunking changes nothing but the speed. An architecture the engine does not
know how to stack (one registered later) is trained alone with :class:`aen_lib.train.Trainer` on the replayed
stream, so every registered architecture is sweepable.

Typical use::

    configs = expand_grid(dict(d_in=256, d_sae=1024, warmup_steps=10_000), PAPER_SPIKED_GRID, seeds=[0])
    result = train_sweep(configs, SpikedDictionaryData(SpikedDictionaryConfig(rho=0.0, seed=0)),
                         TrainConfig(steps=50_000, batch_size=256), device="cuda")
    result.members[3].final["dead_pct"], result.members[3].sae   # metrics and a plain SAE (aen_lib.io.save_sae)
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import metrics as M
from .adaptive import AdaptiveWeights, ema_update, effective_weights, raw_adaptive_weights, reference_scale, warmup_factor
from .config import SAEConfig
from .model import SAE, LossTerms, SAEOutput
from .objectives import OBJECTIVES, _JumpReLUFn, _StepFn, l2_penalty
from .train import DataSource, TrainConfig, Trainer, _autocast, _split, batch_metrics, check_batch, final_metrics

__all__ = [
    "STACKABLE",
    "PAPER_SPIKED_GRID",
    "expand_grid",
    "StackedSAE",
    "StackedAdam",
    "StackedTrainer",
    "MemberResult",
    "SweepResult",
    "member_bytes",
    "largest_tensor_bytes",
    "CPU_MAX_TENSOR_BYTES",
    "plan_chunks",
    "train_sweep",
]

# Architecture -> activation group. Members are stacked in this order, so each group (and, inside the l1 group,
# the adaptive members) is a contiguous slice of the member dimension.
STACKABLE: dict[str, str] = {
    "relu_l1": "l1",
    "elastic_net": "l1",
    "adaptive_lasso": "l1",
    "aen": "l1",
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
}
_ORDER = {a: i for i, a in enumerate(STACKABLE)}

PAPER_SPIKED_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.01, 0.005, 0.001, 0.0005]},
    "elastic_net": {"l1": [0.01, 0.005, 0.001], "l2": [0.001, 0.0005, 0.0001]},
    "adaptive_lasso": {"l1": [0.01, 0.005, 0.001], "gamma": [0.5, 1.0], "ema_beta": [0.999, 0.9999],
                       "ref_top_pct": [0.05, 0.01]},
    "aen": {"l1": [0.01, 0.005, 0.001], "l2": [0.001, 0.0005, 0.0001], "gamma": [0.5, 1.0],
            "ema_beta": [0.999, 0.9999], "ref_top_pct": [0.05, 0.01]},
    "topk": {"k": [8, 16, 32, 64, 128]},
}
"""The v1 synthetic sweep of DIGEST §4.2 (4 vanilla, 9 EN, 24 AdaLasso, 72 AEN, 5 TopK = 114 members per ρ).
BatchTopK and JumpReLU are not in the paper; chapters add them with their own grids."""


# ----------------------------------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------------------------------
def expand_grid(
    base: Mapping[str, Any],
    grid: Mapping[str, Mapping[str, Sequence[Any]]],
    seeds: Sequence[int] = (0,),
) -> list[SAEConfig]:
    """All :class:`SAEConfig` of a grid: for each architecture, the Cartesian product of its value lists, per seed.

    ``base`` holds the fields shared by every member (``d_in``, ``d_sae``, ``warmup_steps`` …); ``grid`` maps an
    architecture to ``{field: [values]}``, e.g. DIGEST §4.2's ``{"topk": {"k": [8, 16]}}``. ``seeds`` sets
    ``SAEConfig.seed`` (the initialisation). Raises ``ValueError`` naming the architecture, field and value for an
    unknown architecture or field, an empty or non-list value list, a duplicate, or a value SAEConfig rejects.
    """
    if not isinstance(base, Mapping):
        raise TypeError(f"base must be a mapping of SAEConfig fields, got {type(base).__name__}")
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty mapping architecture -> {{field: [values]}}, got {grid!r}")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds: {s!r} is not allowed; seeds must be integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} contain duplicates")
    fields = set(SAEConfig.__dataclass_fields__)
    for key in base:
        if key not in fields or key in ("architecture", "seed"):
            raise ValueError(f"base field {key!r} is not allowed; use SAEConfig fields except architecture and seed")
    out: list[SAEConfig] = []
    for arch, axes in grid.items():
        if arch not in OBJECTIVES:
            raise ValueError(f"grid architecture {arch!r} is unknown; known: {sorted(OBJECTIVES)}")
        if not isinstance(axes, Mapping):
            raise ValueError(f"grid[{arch!r}] must be a mapping field -> [values], got {axes!r}")
        names = list(axes)
        for name in names:
            if name not in fields or name in ("architecture", "seed", "d_in", "d_sae"):
                raise ValueError(
                    f"grid[{arch!r}] field {name!r} is not allowed; sweepable fields: "
                    f"{sorted(fields - {'architecture', 'seed', 'd_in', 'd_sae'})}"
                )
            vals = axes[name]
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
                raise ValueError(f"grid[{arch!r}][{name!r}] must be a non-empty list of values, got {vals!r}")
            if len(set(map(repr, vals))) != len(vals):
                raise ValueError(f"grid[{arch!r}][{name!r}] = {list(vals)} contains duplicates")
        for combo in itertools.product(*(axes[n] for n in names)):
            for seed in seeds:
                kw = {**base, **dict(zip(names, combo)), "architecture": arch, "seed": seed}
                try:
                    out.append(SAEConfig(**kw))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"grid[{arch!r}] with {dict(zip(names, combo))}: {e}") from e
    return out


# ----------------------------------------------------------------------------------------------------------------
# Activation groups: each owns the hyperparameters and running state of a contiguous slice of members
# ----------------------------------------------------------------------------------------------------------------
class _Group(nn.Module):
    """Members [start, stop) of a stack that share an activation; subclasses mirror one objective each."""

    def __init__(self, cfgs: list[SAEConfig], start: int) -> None:
        super().__init__()
        self.cfgs, self.start, self.stop = cfgs, start, start + len(cfgs)

    @property
    def size(self) -> int:
        return len(self.cfgs)

    def activate(self, pre: Tensor) -> Tensor:  # pre, h: [Mg, B, m]
        return torch.relu(pre)

    def penalty(self, h: Tensor, pre: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(l1, l2, aux), each [Mg] and already multiplied by its coefficient."""
        z = h.new_zeros(self.size)
        return z, z, z

    state_names: tuple[str, ...] = ()
    """Running-state buffers whose leading dimension is the members [state_offset, stop) of the group."""
    state_offset: int = 0

    def snapshot(self) -> list[Tensor]:
        return [getattr(self, n).clone() for n in self.state_names]

    def restore(self, snap: list[Tensor], keep: Tensor) -> None:
        """Roll back the running state of members where ``keep`` [Mg] is False (a skipped step)."""
        with torch.no_grad():
            for name, old in zip(self.state_names, snap):
                b = getattr(self, name)
                k = keep[self.state_offset :].to(b.device).reshape(-1, *([1] * (b.dim() - 1)))
                b.copy_(torch.where(k, b, old))

    def load_member_into(self, j: int, sae: SAE) -> None:
        """Copy member j's (local index) objective state into a freshly built SAE."""

    def summary(self, j: int) -> dict[str, float]:
        return {}


class _L1Group(_Group):
    """ReLU codes with λ1 Σ w̃ h + λ2 Σ h² (relu_l1, elastic_net, adaptive_lasso, aen; DIGEST §2.2–§2.3).

    Adaptive members sit at the end of the group: their EMA ``ema [Ma, m]`` (float32, as in AdaptiveWeights) and
    step counters ``step [Ma]`` are stacked; γ, β, w_min, w_max, T_w, R are per-member tensors; the reference
    r = mean of the top ⌊p·m⌋ EMA values is computed per distinct p.
    """

    def __init__(self, cfgs: list[SAEConfig], start: int, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(cfgs, start)
        m = cfgs[0].d_sae
        self.register_buffer("l1", torch.tensor([c.l1 for c in cfgs], device=device, dtype=dtype))
        self.register_buffer("l2", torch.tensor([c.l2 for c in cfgs], device=device, dtype=dtype))
        self.uses_l2 = any(c.l2 > 0 for c in cfgs)
        ad = [c for c in cfgs if c.is_adaptive]
        self.n_adaptive = len(ad)
        self.a0 = len(cfgs) - len(ad)  # first adaptive member (local index)
        self.state_names, self.state_offset = ("ema", "step"), self.a0
        if any(c.is_adaptive for c in cfgs[: self.a0]):
            raise ValueError("adaptive members must come last in the l1 group")
        f32 = torch.float32
        self.register_buffer("ema", torch.ones(len(ad), m, device=device, dtype=f32))
        self.register_buffer("step", torch.zeros(len(ad), device=device, dtype=torch.long))
        self.register_buffer("gamma", torch.tensor([[c.gamma] for c in ad], device=device, dtype=f32).reshape(-1, 1))
        self.register_buffer("beta", torch.tensor([[c.ema_beta] for c in ad], device=device, dtype=torch.float64).reshape(-1, 1))
        self.register_buffer("w_min", torch.tensor([[c.w_min] for c in ad], device=device, dtype=f32).reshape(-1, 1))
        self.register_buffer("w_max", torch.tensor([[c.w_max] for c in ad], device=device, dtype=f32).reshape(-1, 1))
        self.register_buffer("warmup", torch.tensor([c.warmup_steps for c in ad], device=device, dtype=torch.float64))
        self.register_buffer("ramp", torch.tensor([c.ramp_steps for c in ad], device=device, dtype=torch.float64))
        # rows of the adaptive block that share a reference fraction p
        self.p_rows = {p: torch.tensor([i for i, c in enumerate(ad) if c.ref_top_pct == p], device=device)
                       for p in sorted({c.ref_top_pct for c in ad})}
        self._shadow = [
            AdaptiveWeights(m, gamma=c.gamma, beta=c.ema_beta, top_pct=c.ref_top_pct, w_min=c.w_min, w_max=c.w_max,
                            warmup_steps=c.warmup_steps, ramp_steps=c.ramp_steps)
            for c in ad
        ]

    def adaptive_weights(self) -> Tensor:
        """w̃ [Ma, m] at the current step (DIGEST §2.3 steps 2–4), no update."""
        ref = torch.empty(self.n_adaptive, device=self.ema.device, dtype=self.ema.dtype)
        for p, rows in self.p_rows.items():
            ref[rows] = reference_scale(self.ema[rows], p)
        raw = raw_adaptive_weights(self.ema, ref, self.gamma, self.w_min, self.w_max)
        return effective_weights(raw, warmup_factor(self.step, self.warmup, self.ramp))

    def penalty(self, h: Tensor, pre: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor]:
        w = None
        if self.n_adaptive:
            if update:
                with torch.no_grad():
                    self.step += 1
                    self.ema.copy_(ema_update(self.ema, h[self.a0:], self.beta).to(self.ema.dtype))
            w_a = self.adaptive_weights().to(h.dtype)
            w = torch.cat([torch.ones(self.a0, h.shape[-1], device=h.device, dtype=h.dtype), w_a]) if self.a0 else w_a
        # λ1 (1/B) Σ_b Σ_i w_i h_bi, as the l1 family computes it in objectives.py (h = ReLU(pre) >= 0). Same value and
        # same gradient (the ReLU zeroes it where h = 0), one elementwise pass and its backward fewer.
        l1 = self.l1 * (h if w is None else h * w.unsqueeze(-2)).sum(dim=-1).mean(dim=-1)
        l2 = l2_penalty(h, self.l2) if self.uses_l2 else h.new_zeros(self.size)
        return l1, l2, h.new_zeros(self.size)

    def _load_shadow(self, j: int, aw: AdaptiveWeights) -> None:
        i = j - self.a0
        with torch.no_grad():
            aw.ema.copy_(self.ema[i])
            aw.step.copy_(self.step[i])

    def load_member_into(self, j: int, sae: SAE) -> None:
        if j >= self.a0:
            self._load_shadow(j, sae.objective.weights)

    def summary(self, j: int) -> dict[str, float]:
        if j < self.a0:
            return {}
        aw = self._shadow[j - self.a0]
        self._load_shadow(j, aw)
        return aw.summary()


class _TopKGroup(_Group):
    """TopK (DIGEST §2.1): top-k_max of every token once, then keep ranks < k_i for member i; pure MSE."""

    def __init__(self, cfgs: list[SAEConfig], start: int, device: torch.device) -> None:
        super().__init__(cfgs, start)
        self.register_buffer("k", torch.tensor([c.k for c in cfgs], device=device))
        self.k_max = max(c.k for c in cfgs)

    def activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.k_max, dim=-1)  # [Mg, B, k_max], sorted descending
        keep = torch.arange(self.k_max, device=pre.device) < self.k.reshape(-1, 1, 1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals) * keep.to(vals.dtype))


class _BatchTopKGroup(_Group):
    """BatchTopK (Bussmann et al. 2024): per member, the k_i·B largest ReLU'd pre-activations of the batch;
    an EMA of the smallest kept value is the inference threshold (as :class:`aen_lib.objectives.BatchTopK`)."""

    def __init__(self, cfgs: list[SAEConfig], start: int, device: torch.device) -> None:
        super().__init__(cfgs, start)
        self.register_buffer("k", torch.tensor([c.k for c in cfgs], device=device))
        self.register_buffer("beta", torch.tensor([c.batchtopk_threshold_beta for c in cfgs], device=device,
                                                  dtype=torch.float64))
        self.register_buffer("threshold", torch.zeros(len(cfgs), device=device, dtype=torch.float32))
        self.register_buffer("threshold_initialised", torch.zeros(len(cfgs), device=device, dtype=torch.bool))
        self.state_names = ("threshold", "threshold_initialised")
        self.k_max = max(c.k for c in cfgs)

    def activate(self, pre: Tensor) -> Tensor:
        mg, b, m = pre.shape
        if not self.training:
            return pre * (pre > self.threshold.to(pre.dtype).reshape(-1, 1, 1))
        flat = torch.relu(pre).reshape(mg, b * m)
        n_keep = torch.clamp(self.k * b, max=b * m)  # [Mg]
        vals, idx = flat.topk(min(self.k_max * b, b * m), dim=-1)
        keep = torch.arange(vals.shape[1], device=pre.device) < n_keep.reshape(-1, 1)
        h = torch.zeros_like(flat).scatter(-1, idx, vals * keep.to(vals.dtype)).reshape(mg, b, m)
        with torch.no_grad():
            pos = keep & (vals > 0)
            smallest = torch.where(pos, vals, torch.full_like(vals, math.inf)).amin(dim=-1)
            smallest = torch.where(pos.any(dim=-1), smallest, torch.zeros_like(smallest)).to(self.threshold.dtype)
            ema = (self.beta * self.threshold + (1 - self.beta) * smallest).to(self.threshold.dtype)
            self.threshold.copy_(torch.where(self.threshold_initialised, ema, smallest))
            self.threshold_initialised.fill_(True)
        return h

    def load_member_into(self, j: int, sae: SAE) -> None:
        with torch.no_grad():
            sae.objective.threshold.copy_(self.threshold[j])
            sae.objective.threshold_initialised.copy_(self.threshold_initialised[j])


class _JumpReLUGroup(_Group):
    """JumpReLU (Rajamanoharan et al. 2024): h = z·H(z − θ), aux = λ0 Σ H(z − θ), θ = exp(log_threshold [Mg, m]).

    Members are laid side by side as one wide layer [B, Mg·m] so the straight-through autograd functions of
    :mod:`aen_lib.objectives` apply unchanged (one call per distinct bandwidth ε).
    """

    def __init__(self, cfgs: list[SAEConfig], start: int, device: torch.device) -> None:
        super().__init__(cfgs, start)
        m = cfgs[0].d_sae
        init = torch.stack([torch.full((m,), math.log(c.jumprelu_init_threshold), device=device) for c in cfgs])
        self.log_threshold = nn.Parameter(init)  # default dtype, like the objective's parameter
        self.register_buffer("l0", torch.tensor([c.l0 for c in cfgs], device=device))
        self.eps_rows = {e: [i for i, c in enumerate(cfgs) if c.jumprelu_bandwidth == e]
                         for e in sorted({c.jumprelu_bandwidth for c in cfgs})}

    def _apply(self, fn: Any, pre: Tensor) -> Tensor:
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
            out = out[torch.as_tensor(np.argsort(order), device=pre.device)]
        return out

    def activate(self, pre: Tensor) -> Tensor:
        return self._apply(_JumpReLUFn, pre)

    def penalty(self, h: Tensor, pre: Tensor, update: bool) -> tuple[Tensor, Tensor, Tensor]:
        l0 = self._apply(_StepFn, pre).sum(dim=-1).mean(dim=-1)  # [Mg]
        z = h.new_zeros(self.size)
        return z, z, self.l0.to(l0.dtype) * l0

    def load_member_into(self, j: int, sae: SAE) -> None:
        with torch.no_grad():
            sae.objective.log_threshold.copy_(self.log_threshold[j])


# ----------------------------------------------------------------------------------------------------------------
# The stack
# ----------------------------------------------------------------------------------------------------------------
class StackedSAE(nn.Module):
    """M SAEs of one shape, stacked along a leading member dimension (DIGEST §2.1 for each member).

    Build it with :meth:`from_saes` (or :meth:`from_configs`, which initialises each member exactly as
    ``SAE(cfg)`` does). Members are reordered by architecture; ``self.cfgs[j]`` is the config of stack row j and
    ``self.index[j]`` its position in the list it was built from. Shapes: x [B, n] (shared by all members) or
    [M, B, n]; pre, h [M, B, m]; x_hat [M, B, n].
    """

    def __init__(self, saes: Sequence[SAE]) -> None:
        super().__init__()
        if not saes:
            raise ValueError("a StackedSAE needs at least one member")
        for s in saes:
            if not isinstance(s, SAE):
                raise TypeError(f"members must be aen_lib SAE modules, got {type(s).__name__}")
            if s.cfg.architecture not in STACKABLE:
                raise ValueError(
                    f"architecture={s.cfg.architecture!r} cannot be stacked; stackable: {sorted(STACKABLE)} "
                    "(train_sweep trains other architectures alone)"
                )
        n, m = saes[0].cfg.d_in, saes[0].cfg.d_sae
        for s in saes:
            if (s.cfg.d_in, s.cfg.d_sae) != (n, m):
                raise ValueError(
                    f"all members of a stack need one shape; got (d_in, d_sae) = {(s.cfg.d_in, s.cfg.d_sae)} "
                    f"and {(n, m)} (train_sweep splits shapes into separate stacks)"
                )
        order = sorted(range(len(saes)), key=lambda i: (_ORDER[saes[i].cfg.architecture], i))
        self.index = order
        self.cfgs = [saes[i].cfg for i in order]
        ref = saes[0].W_enc
        device, dtype = ref.device, ref.dtype
        self.d_in, self.d_sae = n, m
        with torch.no_grad():
            self.W_enc = nn.Parameter(torch.stack([saes[i].W_enc.detach() for i in order]).to(device, dtype))
            self.b_enc = nn.Parameter(torch.stack([saes[i].b_enc.detach() for i in order]).to(device, dtype))
            self.W_dec = nn.Parameter(torch.stack([saes[i].W_dec.detach() for i in order]).to(device, dtype))
            self.b_dec = nn.Parameter(torch.stack([saes[i].b_dec.detach() for i in order]).to(device, dtype))
        groups: list[_Group] = []
        start = 0
        for kind, members in itertools.groupby(self.cfgs, key=lambda c: STACKABLE[c.architecture]):
            cfgs = list(members)
            if kind == "l1":
                g: _Group = _L1Group(cfgs, start, device, dtype)
            elif kind == "topk":
                g = _TopKGroup(cfgs, start, device)
            elif kind == "batchtopk":
                g = _BatchTopKGroup(cfgs, start, device)
            else:
                g = _JumpReLUGroup(cfgs, start, device)
            groups.append(g)
            start += len(cfgs)
        self.groups = nn.ModuleList(groups)
        # start from each SAE's own objective state (EMA, thresholds), so a stack of trained SAEs resumes exactly
        with torch.no_grad():
            for g in self.groups:
                for j in range(g.size):
                    obj = saes[order[g.start + j]].objective
                    if isinstance(g, _L1Group) and j >= g.a0:
                        g.ema[j - g.a0].copy_(obj.weights.ema)
                        g.step[j - g.a0].copy_(obj.weights.step)
                    elif isinstance(g, _BatchTopKGroup):
                        g.threshold[j].copy_(obj.threshold)
                        g.threshold_initialised[j].copy_(obj.threshold_initialised)
                    elif isinstance(g, _JumpReLUGroup):
                        g.log_threshold[j].copy_(obj.log_threshold)

    @classmethod
    def from_configs(
        cls, cfgs: Sequence[SAEConfig], *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "StackedSAE":
        """Initialise every member exactly as ``SAE(cfg, device=device, dtype=dtype)`` (seeded by ``cfg.seed``)."""
        return cls([SAE(c, device=device, dtype=dtype) for c in cfgs])

    @classmethod
    def from_saes(cls, saes: Sequence[SAE]) -> "StackedSAE":
        """Stack existing SAEs (e.g. trained ones, to evaluate them all at once)."""
        return cls(saes)

    @property
    def n_members(self) -> int:
        return len(self.cfgs)

    # --- the map ------------------------------------------------------------------------------------------------
    def pre_activation(self, x: Tensor) -> Tensor:
        """(x - b_dec) W_enc + b_enc for every member. x [B, n] or [M, B, n] -> [M, B, m]."""
        if x.shape[-1] != self.d_in or x.dim() not in (2, 3):
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [B, d_in={self.d_in}] or [M, B, d_in]")
        b_dec = self.b_dec.unsqueeze(1)  # [M, 1, n]
        xc = (x if x.dim() == 3 else x.unsqueeze(0)) - b_dec.detach()  # [M, B, n], no gradient path
        # b_dec's gradient through the encoder, -Σ_b (∂L/∂pre_b) W_encᵀ, flows through this zero-valued term instead
        # of through xc, so autograd skips the [M, B, n] input gradient (one of the six big matmuls of a step); the
        # forward value is exactly (x - b_dec) W_enc + b_enc, as in SAE.pre_activation.
        # (W_enc is detached there: its gradient from a zero-valued term is zero anyway, and would cost an [M, n, m] pass)
        bias = self.b_enc.unsqueeze(1) - torch.bmm(b_dec - b_dec.detach(), self.W_enc.detach())  # [M, 1, m]
        return torch.baddbmm(bias, xc, self.W_enc)

    def activate(self, pre: Tensor) -> Tensor:
        hs = [g.activate(pre[g.start : g.stop]) for g in self.groups]
        return torch.cat(hs) if len(hs) > 1 else hs[0]

    def encode(self, x: Tensor) -> Tensor:
        """Codes h [M, B, m]."""
        return self.activate(self.pre_activation(x))

    def decode(self, h: Tensor) -> Tensor:
        """h W_dec + b_dec. h [M, B, m] -> [M, B, n]."""
        return torch.baddbmm(self.b_dec.unsqueeze(1), h, self.W_dec)

    def forward(self, x: Tensor) -> SAEOutput:
        pre = self.pre_activation(x)
        h = self.activate(pre)
        return SAEOutput(x_hat=self.decode(h), h=h, pre=pre)

    def loss(self, x: Tensor, *, update: bool = True) -> tuple[SAEOutput, LossTerms]:
        """Every member's loss of DIGEST §2.2 (as ``SAE.loss``); each LossTerms field is a [M] tensor."""
        out = self(x)
        xs = x if x.dim() == 3 else x.unsqueeze(0)
        mse = (xs - out.x_hat).pow(2).mean(dim=(1, 2))  # [M]
        parts = [g.penalty(out.h[g.start : g.stop], out.pre[g.start : g.stop], update) for g in self.groups]
        l1, l2, aux = (torch.cat([p[i] for p in parts]) for i in range(3))
        total = mse + l1 + l2 + aux
        return out, LossTerms(total=total, mse=mse, l1=l1, l2=l2, aux=aux)

    @torch.no_grad()
    def project_decoder_(self, members: Tensor | None = None) -> None:
        """Unit-norm atoms for every member (DIGEST §2.1); with ``members`` [M] bool, only those rows."""
        norms = self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if members is None:
            self.W_dec.div_(norms)
        else:
            self.W_dec.copy_(torch.where(members.reshape(-1, 1, 1), self.W_dec / norms, self.W_dec))

    # --- members ------------------------------------------------------------------------------------------------
    def group_of(self, j: int) -> tuple[_Group, int]:
        for g in self.groups:
            if g.start <= j < g.stop:
                return g, j - g.start
        raise IndexError(f"member {j} out of range [0, {self.n_members})")

    def member_params(self) -> list[tuple[Tensor, slice]]:
        """Every parameter with the slice of members its leading dimension covers (for :class:`StackedAdam`)."""
        out = [(p, slice(0, self.n_members)) for p in (self.W_enc, self.b_enc, self.W_dec, self.b_dec)]
        for g in self.groups:
            for p in g.parameters(recurse=False):
                out.append((p, slice(g.start, g.stop)))
        return out

    @torch.no_grad()
    def export(self, j: int, *, device: torch.device | str | None = None) -> SAE:
        """Stack row j as a plain :class:`~aen_lib.model.SAE` (weights and objective state copied)."""
        cfg = self.cfgs[j]
        device = device if device is not None else self.W_enc.device
        sae = SAE(cfg, device=device, dtype=self.W_enc.dtype)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(self, name)[j])
        g, jj = self.group_of(j)
        g.load_member_into(jj, sae)
        sae.train(self.training)
        return sae


# ----------------------------------------------------------------------------------------------------------------
# Adam, stacked
# ----------------------------------------------------------------------------------------------------------------
class StackedAdam:
    """Adam (Kingma & Ba; PyTorch's algorithm, no weight decay, no amsgrad) for stacked members (DIGEST §2.5).

    Elementwise the same operations as ``torch.optim.Adam``'s single-tensor path, with a step counter and a
    learning rate per member, so that member i follows exactly the trajectory of its own Adam. ``step(apply=mask)``
    updates only the members where ``mask`` [M] is True (the others keep parameters, moments and step count, as a
    skipped step does in :class:`aen_lib.train.Trainer`).

    ``params`` is a list of ``(tensor, member_slice)``: the tensor's leading dimension covers members
    ``member_slice`` of the stack (see :meth:`StackedSAE.member_params`).
    """

    def __init__(
        self,
        params: Sequence[tuple[Tensor, slice]],
        n_members: int,
        *,
        lr: float | Sequence[float] | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.n_members = n_members
        for p, sl in self.params:
            if p.shape[0] != len(range(*sl.indices(n_members))):
                raise ValueError(f"parameter of shape {tuple(p.shape)} does not match member slice {sl}")
        device = self.params[0][0].device
        lr_t = torch.as_tensor(lr, dtype=torch.float64, device=device)
        self.lr = lr_t.expand(n_members).clone() if lr_t.dim() == 0 else lr_t.clone()
        if self.lr.shape != (n_members,) or not bool((self.lr > 0).all()):
            raise ValueError(f"lr must be a positive number or a tensor of {n_members} positive values, got {lr!r}")
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = torch.zeros(n_members, dtype=torch.float64, device=device)
        self.exp_avg = [torch.zeros_like(p) for p, _ in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p, _ in self.params]
        # one scratch tensor per parameter: the common step then allocates nothing (fresh allocations of large
        # tensors are slow on CPU, see CPU_MAX_TENSOR_BYTES)
        self._work = [torch.empty_like(p) for p, _ in self.params]

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, apply: Tensor | None = None) -> None:
        if apply is None:
            self.steps += 1
        else:
            self.steps += apply.to(self.steps.dtype)
        bc1 = 1 - self.beta1**self.steps  # [M] float64, as Python floats in torch's Adam
        bc2_sqrt = (1 - self.beta2**self.steps).sqrt()
        step_size = self.lr / bc1
        for (p, sl), m1, m2, buf in zip(self.params, self.exp_avg, self.exp_avg_sq, self._work):
            g = p.grad
            if g is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            if apply is None:
                # torch.optim.Adam's single-tensor step op for op, in place:
                # denom = sqrt(v) / sqrt(bc2) + eps;  p += (-lr / bc1) * (m / denom)
                m1.lerp_(g, 1 - self.beta1)
                m2.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                torch.sqrt(m2, out=buf)
                buf.div_(bc2_sqrt[sl].to(p.dtype).reshape(shape)).add_(self.eps)
                torch.div(m1, buf, out=buf)
                p.add_(buf.mul_((-step_size[sl]).to(p.dtype).reshape(shape)))
            else:
                keep = apply[sl].reshape(shape)
                n1 = m1.lerp(g, 1 - self.beta1)
                n2 = (m2 * self.beta2).addcmul_(g, g, value=1 - self.beta2)
                denom = (n2.sqrt() / bc2_sqrt[sl].to(p.dtype).reshape(shape)).add_(self.eps)
                newp = p + (n1 / denom) * (-step_size[sl]).to(p.dtype).reshape(shape)
                m1.copy_(torch.where(keep, n1, m1))
                m2.copy_(torch.where(keep, n2, m2))
                p.copy_(torch.where(keep, newp, p))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps.clone(), "lr": self.lr.clone(), "exp_avg": [t.clone() for t in self.exp_avg],
                "exp_avg_sq": [t.clone() for t in self.exp_avg_sq], "betas": (self.beta1, self.beta2), "eps": self.eps}


# ----------------------------------------------------------------------------------------------------------------
# Training one stack
# ----------------------------------------------------------------------------------------------------------------
class StackedTrainer:
    """The training loop of :class:`aen_lib.train.Trainer`, for a :class:`StackedSAE` (DIGEST §2.5, §4.3).

    Per step: one batch for all members, every member's loss, one backward, per-member NaN guard (and gradient
    clipping if ``cfg.grad_clip``), :class:`StackedAdam`, decoder projection, dead-latent windows; at log steps the
    same record per member as ``Trainer`` writes.
    """

    def __init__(self, stack: StackedSAE, data: DataSource, cfg: TrainConfig, *, bar: Any = None) -> None:
        self.stack, self.data, self.cfg, self.bar = stack, data, cfg, bar
        self.device = stack.W_enc.device
        n = stack.n_members
        self.opt = StackedAdam(stack.member_params(), n, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                               eps=cfg.adam_eps)
        self.step = 0
        self.skipped = torch.zeros(n, dtype=torch.long)
        self.histories: list[list[dict[str, float]]] = [[] for _ in range(n)]
        # One DeadLatentTracker over all members side by side: the window rule is shared, the mask is per latent.
        self.dead = M.DeadLatentTracker(n * stack.d_sae, window=cfg.dead_window_steps, unit="steps", device=self.device)
        self.dead_tokens = (
            M.DeadLatentTracker(n * stack.d_sae, window=cfg.dead_window_tokens, unit="tokens", device=self.device)
            if cfg.dead_window_tokens
            else None
        )
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

    def _member_ok(self, total: Tensor) -> Tensor:
        """[M] bool: finite loss and finite gradients (clipped first if cfg.grad_clip), per member."""
        n = self.stack.n_members
        ok = torch.isfinite(total.detach())
        clip = self.cfg.grad_clip > 0
        acc = torch.zeros(n, device=self.device, dtype=torch.float64)
        for p, sl in self.stack.member_params():
            if p.grad is not None:
                g = p.grad.detach().flatten(1)
                # clipping: per-member squared norms (torch.nn.utils.clip_grad_norm_ per SAE); otherwise a plain
                # sum, which is non-finite as soon as one entry is NaN/Inf
                acc[sl] += g.norm(dim=1).double().pow(2) if clip else g.sum(dim=1).double()
        ok &= torch.isfinite(acc)
        if clip:
            coef = (self.cfg.grad_clip / (acc.sqrt() + 1e-6)).clamp(max=1.0)
            with torch.no_grad():
                for p, sl in self.stack.member_params():
                    if p.grad is not None:
                        p.grad.mul_(coef[sl].to(p.grad.dtype).reshape((-1,) + (1,) * (p.dim() - 1)))
        return ok

    def train_step(self) -> tuple[Tensor, SAEOutput, LossTerms, Tensor]:
        """One step for every member. Returns (x, out, terms, applied [M] bool)."""
        x, _ = _split(self.data.sample(self.cfg.batch_size))
        x = x.to(self.device)
        check_batch(x, self.stack.d_in)
        snaps = [g.snapshot() for g in self.stack.groups]
        with _autocast(self.cfg, self.device):
            out, terms = self.stack.loss(x.to(self.stack.W_enc.dtype))
        self.opt.zero_grad()
        finite = torch.isfinite(terms.total.detach())
        torch.where(finite, terms.total, torch.zeros_like(terms.total)).sum().backward()
        ok = self._member_ok(terms.total)
        if bool(ok.all()):
            self.opt.step()
            self.stack.project_decoder_()
        else:
            self.opt.step(apply=ok)
            self.stack.project_decoder_(ok)
            for g, snap in zip(self.stack.groups, snaps):
                g.restore(snap, ok[g.start : g.stop])
            self.skipped += (~ok).cpu().long()
        self.opt.zero_grad()
        self.step += 1
        return x, out, terms, ok

    def _log(self, x: Tensor, out: SAEOutput, terms: LossTerms) -> None:
        n = self.stack.n_members
        loss = torch.stack([terms.total, terms.mse, terms.l1, terms.l2, terms.aux]).detach().float().cpu()
        dead = 100.0 * self.dead.dead_mask().reshape(n, -1).float().mean(dim=1).cpu()
        dead_tok = (100.0 * self.dead_tokens.dead_mask().reshape(n, -1).float().mean(dim=1).cpu()
                    if self.dead_tokens is not None else None)
        x_hat, h = out.x_hat.detach(), out.h.detach()
        for j in range(n):
            rec: dict[str, float] = {"step": self.step}
            rec.update({k: float(loss[i, j]) for i, k in enumerate(("total", "mse", "l1", "l2", "aux"))})
            rec.update(batch_metrics(x, x_hat[j], h[j]))
            rec["dead_pct"] = float(dead[j])
            rec["dead_window_fill"] = self.dead.steps_in_window / self.dead.window
            if dead_tok is not None:
                rec["dead_pct_tokens"] = float(dead_tok[j])
            rec["skipped_steps"] = int(self.skipped[j])
            g, jj = self.stack.group_of(j)
            rec.update(g.summary(jj))
            self.histories[j].append(rec)

    def run(self) -> list[list[dict[str, float]]]:
        """Train for ``cfg.steps`` steps; returns one history (list of log records) per stack row."""
        cfg = self.cfg
        self.stack.train()
        n, b = self.stack.n_members, cfg.batch_size
        while self.step < cfg.steps:
            x, out, terms, _ = self.train_step()
            with torch.no_grad():
                batch_max = out.h.detach().abs().amax(dim=1).reshape(1, -1)  # [1, M·m]: max over the batch
            self.dead.update(batch_max, tokens=b)
            if self.dead_tokens is not None:
                self.dead_tokens.update(batch_max, tokens=b)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(x, out, terms)
                if self.bar is not None:
                    l0 = [r[-1]["l0"] for r in self.histories]
                    dead = [r[-1]["dead_pct"] for r in self.histories]
                    self.bar.set_postfix(L0=f"{min(l0):.1f}-{max(l0):.1f}", dead=f"{max(dead):.1f}%max")
            if self.bar is not None:
                self.bar.update(n)
        return self.histories


# ----------------------------------------------------------------------------------------------------------------
# Chunks, memory, the front end
# ----------------------------------------------------------------------------------------------------------------
def member_bytes(cfg: SAEConfig, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Rough peak memory (bytes) of one stacked member in training.

    Parameters with their gradient, two Adam moments and Adam's scratch (5 copies of 2nm + n + m values), the per-step
    activations: about 10 tensors of [B, m] (pre, codes, their gradients, top-k buffers, masks) and 6 of [B, n].
    """
    n, m = cfg.d_in, cfg.d_sae
    item = torch.empty((), dtype=dtype).element_size()
    params = 5 * (2 * n * m + n + m + (m if cfg.architecture == "jumprelu" else 0))
    acts = 10 * batch_size * m + 6 * batch_size * n
    if cfg.architecture in ("topk", "batchtopk"):
        acts += 2 * batch_size * cfg.k * 2  # top-k values and int64 indices
    return int((params + acts) * item)


CPU_MAX_TENSOR_BYTES = 31 * 2**20
"""On CPU, stacks are sized so that no per-step tensor reaches 32 MiB: glibc's malloc serves larger blocks with a
fresh mmap every time, and touching those new pages costs about 1 ms per MiB (some 20x an elementwise pass), which
would dominate the step. CUDA's caching allocator has no such cliff."""


def largest_tensor_bytes(cfg: SAEConfig, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the largest per-member tensor of a training step: max(B·m, n·m, B·n) values."""
    item = torch.empty((), dtype=dtype).element_size()
    return max(batch_size * cfg.d_sae, cfg.d_in * cfg.d_sae, batch_size * cfg.d_in) * item


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.8 * free)
    return 4 * 2**30


def plan_chunks(
    cfgs: Sequence[SAEConfig],
    batch_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    memory_budget_bytes: int,
    max_members: int | None = None,
    max_tensor_bytes: int | None = None,
) -> list[tuple[str, list[int]]]:
    """Split members into chunks: ``("stack", indices)`` of one shape within the memory budget, or ``("alone", [i])``
    for an architecture that cannot be stacked. Chunks of a shape are balanced in size; order follows
    :data:`STACKABLE` so that each chunk holds as few activation groups as possible. ``max_tensor_bytes`` also caps
    the size of any stacked tensor (see :data:`CPU_MAX_TENSOR_BYTES`)."""
    if memory_budget_bytes <= 0:
        raise ValueError(f"memory_budget_bytes={memory_budget_bytes!r} must be > 0")
    if max_members is not None and (isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1):
        raise ValueError(f"max_members={max_members!r} must be a positive integer or None")
    chunks: list[tuple[str, list[int]]] = []
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(cfgs):
        if c.architecture in STACKABLE:
            by_shape.setdefault((c.d_in, c.d_sae), []).append(i)
        else:
            chunks.append(("alone", [i]))
    for idx in by_shape.values():
        idx.sort(key=lambda i: (_ORDER[cfgs[i].architecture], i))
        per = max(member_bytes(cfgs[i], batch_size, dtype) for i in idx)
        cap = max(1, memory_budget_bytes // per)
        if max_members is not None:
            cap = min(cap, max_members)
        if max_tensor_bytes is not None:
            largest = max(largest_tensor_bytes(cfgs[i], batch_size, dtype) for i in idx)
            cap = min(cap, max(1, max_tensor_bytes // largest))
        n_chunks = math.ceil(len(idx) / cap)
        bounds = [round(i * len(idx) / n_chunks) for i in range(n_chunks + 1)]  # sizes differ by at most 1
        chunks = [("stack", idx[bounds[i] : bounds[i + 1]]) for i in range(n_chunks)] + chunks
    return chunks


@dataclass
class MemberResult:
    """One trained member: its config, metric history (``Trainer`` records), final metrics and the trained SAE."""

    cfg: SAEConfig
    history: list[dict[str, float]]
    final: dict[str, float]
    skipped_steps: int
    sae: SAE


@dataclass
class SweepResult:
    """What :func:`train_sweep` returns: one :class:`MemberResult` per config, in the order given."""

    members: list[MemberResult]
    seconds: float
    member_steps: int
    chunks: list[tuple[str, list[int]]] = field(default_factory=list)

    @property
    def member_steps_per_s(self) -> float:
        return self.member_steps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def configs(self) -> list[SAEConfig]:
        return [m.cfg for m in self.members]

    @property
    def saes(self) -> list[SAE]:
        return [m.sae for m in self.members]


def train_sweep(
    configs: Sequence[SAEConfig],
    data: DataSource,
    cfg: TrainConfig | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    memory_budget_bytes: int | None = None,
    max_members_per_chunk: int | None = None,
    export_device: torch.device | str | None = "cpu",
) -> SweepResult:
    """Train every config on the same data stream (DIGEST §4.2 sweeps) and return histories, finals and SAEs.

    All members see the batches that ``data`` yields from its current state, as each would if trained alone with
    :func:`aen_lib.train.train`; chunks replay the stream from that state (the source must implement
    ``state_dict`` / ``load_state_dict``). ``memory_budget_bytes`` defaults to 80% of free GPU memory on CUDA and
    4 GiB on CPU; on CPU no stacked tensor may reach 32 MiB either (:data:`CPU_MAX_TENSOR_BYTES`). ``cfg.progress`` shows one tqdm bar counting member-steps (its rate is member-steps/s).
    Checkpointing (``cfg.checkpoint_every``) is not supported for sweeps. Trained SAEs are moved to
    ``export_device`` (``None``: keep them on ``device``).
    """
    cfg = cfg or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.checkpoint_every:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every} is not supported by train_sweep; set it to 0")
    configs = list(configs)
    if not configs:
        raise ValueError("train_sweep needs at least one SAEConfig")
    for i, c in enumerate(configs):
        if not isinstance(c, SAEConfig):
            raise TypeError(f"configs[{i}] must be an SAEConfig, got {type(c).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.float32
    budget = memory_budget_bytes if memory_budget_bytes is not None else _default_budget(dev)
    chunks = plan_chunks(configs, cfg.batch_size, dtype=dtype, memory_budget_bytes=budget,
                         max_members=max_members_per_chunk,
                         max_tensor_bytes=CPU_MAX_TENSOR_BYTES if dev.type == "cpu" else None)
    start_state = copy.deepcopy(data.state_dict())
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs) * cfg.steps, desc="sweep", unit="member-step", unit_scale=True,
                   dynamic_ncols=True, leave=False)
    results: list[MemberResult | None] = [None] * len(configs)
    t0 = time.perf_counter()
    for c_i, (kind, idx) in enumerate(chunks):
        if c_i > 0:
            data.load_state_dict(copy.deepcopy(start_state))
        if bar is not None:
            bar.set_description(f"sweep chunk {c_i + 1}/{len(chunks)} ({len(idx)} members)")
        if kind == "alone":
            i = idx[0]
            sae = SAE(configs[i], device=dev, dtype=dtype)
            tr = Trainer(sae, data, cfg.replace(progress=False))
            res = tr.run()
            if bar is not None:
                bar.update(cfg.steps)
            results[i] = MemberResult(configs[i], res.history, res.final, res.skipped_steps,
                                      sae.to(export_device) if export_device is not None else sae)
            continue
        stack = StackedSAE.from_configs([configs[i] for i in idx], device=dev, dtype=dtype)
        trainer = StackedTrainer(stack, data, cfg, bar=bar)
        histories = trainer.run()
        for j in range(stack.n_members):
            i = idx[stack.index[j]]
            results[i] = MemberResult(
                cfg=configs[i],
                history=histories[j],
                final=final_metrics(histories[j], cfg.final_avg_logs),
                skipped_steps=int(trainer.skipped[j]),
                sae=stack.export(j, device=export_device),
            )
        del stack, trainer
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    assert all(r is not None for r in results)
    return SweepResult(members=results, seconds=seconds, member_steps=len(configs) * cfg.steps,  # type: ignore[arg-type]
                       chunks=chunks)
