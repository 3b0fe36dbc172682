"""Training on one GPU or many: PyTorch DistributedDataParallel launched by ``torchrun`` (DIGEST §2.5, §5.2).

The paper trained its Llama-3.1-8B SAEs (d 4096, m 131,072, batch 4,096 tokens) on two H200s. This module runs the
same single-process :class:`aen_lib.train.Trainer` loop on every rank of a process group, with PyTorch's own engine:

* **Replicated SAE, all-reduced gradients.** The SAE is wrapped in ``DistributedDataParallel``; each rank computes
  the loss of its own ``batch / world_size`` tokens and DDP averages the gradients. Every loss term of DIGEST §2.2 is
  a mean over tokens, so with equal shards the averaged gradient is the gradient of the loss on the global batch.
* **Identical running statistics.** The adaptive-weight EMA of mean |h| (DIGEST §2.3) and the dead-latent window
  (max |h| per latent, DIGEST §5.3) are batch statistics. Kept per rank they would silently diverge: each rank would
  weight its l1 penalty by the EMA of its own shard. Here the per-latent sums of |h| (and token counts) are
  all-reduced before the EMA step, and the per-latent max |h| is all-reduced with MAX, so every rank holds the state
  the one-process run would hold on the concatenated batch. DDP's own buffer broadcast is switched off: it would
  copy rank 0's EMA over the others and hide the problem instead of solving it.
* **One decision per step.** The NaN-step guard (DIGEST §2.5) votes across ranks, so all ranks apply or skip a
  step together; gradients are clipped to norm 1.0 after the all-reduce, hence identically.
* **Rank 0 writes.** Checkpoints (the SAE, Adam, the adaptive state, every rank's data position and RNG state) and
  ``metrics.jsonl`` are written by rank 0 only, atomically; every rank reads the checkpoint to resume.
* **GPU path.** SAE parameters stay float32; ``TrainConfig.autocast="bf16"`` runs the matmuls in bfloat16; the LM
  runs in bfloat16; batches produced on the CPU go to the GPU through pinned memory (``non_blocking`` copies).

The same command runs as one process (no ``torchrun``, no process group) or as N processes::

    python -m aen_lib.distributed --config run.yaml                       # one process (CPU or one GPU)
    torchrun --nproc_per_node 8 -m aen_lib.distributed --config run.yaml  # eight GPUs, same results

``train.batch_size`` in the run file is the *global* batch; each rank takes ``batch_size / world_size``.
BatchTopK is refused with more than one rank: its top-(k·B) selection spans the whole batch, which DDP splits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import metrics as M
from .adaptive import AdaptiveWeights, ema_update
from .config import ConfigBase, SAEConfig, _fail
from .io import atomic_write, save_sae
from .model import SAE, LossTerms, SAEOutput
from .train import DataSource, TrainConfig, TrainResult, Trainer, batch_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "DistContext",
    "init_distributed",
    "shutdown_distributed",
    "to_device",
    "ReducedAdaptiveWeights",
    "ReducedDeadLatentTracker",
    "replicate_statistics_",
    "global_batch_metrics",
    "StridedShard",
    "TensorStream",
    "shard_windows",
    "drop_blocks_after",
    "DistributedTrainer",
    "train_distributed",
    "RunConfig",
    "run",
    "main",
]


# --------------------------------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (collectives are needed)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (set by torchrun)") from None


def init_distributed(device: str | torch.device = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistContext:
    """Join the process group that ``torchrun`` describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*``.

    Without those variables (a plain ``python`` launch) this is a one-process context and no group is created.
    ``device="auto"`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU. The backend defaults to NCCL on
    CUDA and gloo on the CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE)")
    if str(device) == "auto":
        dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Leave the process group (if one was created)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def _all_reduce(t: Tensor, ctx: DistContext, op: Any) -> Tensor:
    if ctx.distributed:
        dist.all_reduce(t, op=op)
    return t


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Move a batch to ``device``; CPU -> CUDA copies go through pinned memory without blocking the host."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# --------------------------------------------------------------------------------------------------------------
# Statistics reduced across ranks
# --------------------------------------------------------------------------------------------------------------


class ReducedAdaptiveWeights(AdaptiveWeights):
    """:class:`~aen_lib.adaptive.AdaptiveWeights` whose EMA step uses mean |h| over the *global* batch (DIGEST §2.3).

    Each rank contributes Σ_b |h_bi| over its rows and its row count; after a SUM all-reduce every rank divides the
    same totals, so ``m_i(t) = β m_i(t-1) + (1-β) mean_{global b} |h_bi|`` is bit-for-bit the same on every rank and
    equal (to float rounding of the sum) to the one-process EMA on the concatenated batch.
    """

    def __init__(self, *args: Any, ctx: DistContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx = ctx

    @classmethod
    def from_plain(cls, w: AdaptiveWeights, ctx: DistContext) -> "ReducedAdaptiveWeights":
        """A reduced copy of ``w`` (same hyperparameters, same buffers)."""
        new = cls(w.m, gamma=w.gamma, beta=w.beta, top_pct=w.top_pct, w_min=w.w_min, w_max=w.w_max,
                  warmup_steps=w.warmup_steps, ramp_steps=w.ramp_steps, device=w.ema.device, ctx=ctx)
        new.load_state_dict(w.state_dict())
        return new

    @torch.no_grad()
    def update_from_sums(self, abs_sum: Tensor, count: int) -> Tensor:
        """Advance one step with this rank's Σ_b |h_bi| [m] over ``count`` samples; the sums and counts are
        all-reduced first, so the EMA is that of the global batch. Returns the (identical on all ranks) w̃ [m]."""
        if not self.ctx.distributed:
            return super().update_from_sums(abs_sum, count)
        stats = torch.cat([abs_sum.detach().to(torch.float32),
                           torch.tensor([count], dtype=torch.float32, device=abs_sum.device)])  # [m + 1]
        _all_reduce(stats, self.ctx, dist.ReduceOp.SUM)
        mean_abs = (stats[:-1] / stats[-1]).unsqueeze(0)  # [1, m] global mean |h|
        self.step += 1
        self.ema.copy_(ema_update(self.ema, mean_abs, self.beta))
        return self.weights()


class ReducedDeadLatentTracker(M.DeadLatentTracker):
    """Dead-latent window (DIGEST §5.3) over the global batch: max |h| all-reduced with MAX, tokens with SUM."""

    def __init__(self, *args: Any, ctx: DistContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx = ctx

    @torch.no_grad()
    def update(self, h: Tensor, tokens: int | None = None) -> None:
        if not self.ctx.distributed:
            return super().update(h, tokens)
        h2 = h.detach().reshape(-1, h.shape[-1])
        local_max = h2.abs().amax(dim=0, keepdim=True).to(torch.float32)  # [1, m]
        n = torch.tensor([h2.shape[0] if tokens is None else tokens], dtype=torch.float64, device=h2.device)
        _all_reduce(local_max, self.ctx, dist.ReduceOp.MAX)
        _all_reduce(n, self.ctx, dist.ReduceOp.SUM)
        super().update(local_max, tokens=int(n.item()))


def replicate_statistics_(sae: SAE, ctx: DistContext) -> SAE:
    """Make ``sae``'s adaptive-weight EMA a global-batch statistic (in place); a no-op for other objectives."""
    w = getattr(sae.objective, "weights", None)
    if isinstance(w, AdaptiveWeights) and not isinstance(w, ReducedAdaptiveWeights):
        sae.objective.weights = ReducedAdaptiveWeights.from_plain(w, ctx)
    return sae


@torch.no_grad()
def global_batch_metrics(x: Tensor, x_hat: Tensor, h: Tensor, ctx: DistContext) -> dict[str, float]:
    """:func:`aen_lib.train.batch_metrics` (L0, EV, MSE, shrinkage; DIGEST §4.3) of the concatenation of every rank's batch.

    Each metric is a ratio of sums over tokens, so ranks all-reduce per-dimension sums (float64) instead of tokens:
    EV = 1 − Σ_j Var(e_j) / Σ_j Var(x_j) with biased variances from Σe, Σe², Σx, Σx²; x [B, n], x_hat [B, n], h [B, m].
    """
    if not ctx.distributed:
        return batch_metrics(x, x_hat, h)
    x64, xh64 = x.detach().to(torch.float64), x_hat.detach().to(torch.float64)
    e = x64 - xh64
    n = x.shape[1]
    stats = torch.cat([
        e.sum(0), (e * e).sum(0), x64.sum(0), (x64 * x64).sum(0),  # 4 x [n]
        torch.stack([
            torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
            (h.detach().abs() > M.DEAD_THRESHOLD).sum().to(torch.float64),
            xh64.abs().sum(),
            x64.abs().sum(),
        ]),
    ])
    _all_reduce(stats, ctx, dist.ReduceOp.SUM)
    se, se2, sx, sx2 = stats[:n], stats[n:2 * n], stats[2 * n:3 * n], stats[3 * n:4 * n]
    count, active, l1_hat, l1_x = stats[4 * n:].tolist()
    var_e = (se2 / count - (se / count) ** 2).sum()
    var_x = (sx2 / count - (sx / count) ** 2).sum()
    return {
        "l0": active / count,
        "ev": float(1.0 - var_e / var_x),
        "mse_metric": float(se2.sum() / (count * n)),
        "shrinkage": l1_hat / l1_x,
    }


# --------------------------------------------------------------------------------------------------------------
# Data: each rank its own shard
# --------------------------------------------------------------------------------------------------------------


class StridedShard:
    """Rank ``rank`` of ``world_size`` takes every ``world_size``-th batch of a stream source, starting at its rank.

    For a source that yields rows in stream order, global batch g (``world_size * batch`` rows) is then exactly the
    concatenation of the ranks' g-th batches, so N ranks see the batches one process would see with an N-times
    larger batch. Every rank reads (but does not train on) the whole stream; use it for cached activations or
    synthetic data. For an LM, shard the *windows* instead (:func:`shard_windows`), so no rank runs the LM twice.
    """

    def __init__(self, source: DataSource, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.source, self.rank, self.world_size = source, rank, world_size

    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, ...]:
        mine = None
        for r in range(self.world_size):
            b = self.source.sample(batch_size)
            if r == self.rank:
                mine = b
        return mine  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


class TensorStream:
    """Rows of an in-memory tensor ``[N, d]`` in order, looping at the end (a stream source for ``sample``)."""

    def __init__(self, rows: Tensor) -> None:
        if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty [N, d] tensor, got {getattr(rows, 'shape', type(rows))}")
        self.rows = rows
        self.pos = 0

    def sample(self, batch_size: int) -> Tensor:
        n = self.rows.shape[0]
        idx = (torch.arange(batch_size) + self.pos) % n
        self.pos = (self.pos + batch_size) % n
        return self.rows[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


def drop_blocks_after(model: nn.Module, layer: int) -> nn.Module:
    """Free the blocks after ``layer`` and the unembedding, which early-exit harvesting never runs (in place).

    For Llama-3.1-8B hooked at block 16 this keeps about half of the 16 GB of bf16 weights
    (:func:`aen_lib.planner.lm_memory` with ``truncate=True``). The model can then only be used for harvesting.
    """
    from .lm import block_list

    blocks = block_list(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer={layer} out of range; the model has blocks 0..{len(blocks) - 1}")
    del blocks[layer + 1:]
    if hasattr(model, "lm_head"):
        model.lm_head = nn.Identity()
    return model


def shard_windows(windows: Callable[[], Iterable[Tensor]] | Tensor, rank: int,
                  world_size: int) -> Callable[[], Iterable[Tensor]] | Tensor:
    """Windows ``rank, rank + world_size, ...`` of a window stream: each rank harvests a disjoint shard of tokens."""
    if isinstance(windows, Tensor):
        return windows[rank::world_size]
    return lambda: islice(iter(windows()), rank, None, world_size)


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class _LossModule(nn.Module):
    """What DDP wraps: forward = the SAE's loss (so that DDP sees the graph that backward will traverse)."""

    def __init__(self, sae: SAE) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out, t = self.sae.loss(x)
        return out.x_hat, out.h, out.pre, t.total, t.mse, t.l1, t.l2, t.aux


class DistributedTrainer(Trainer):
    """:class:`aen_lib.train.Trainer` on every rank of a process group (DDP); with one process it *is* the Trainer.

    ``cfg.batch_size`` is the per-rank batch here (:func:`run` divides the global batch). With ``ctx`` omitted the
    trainer runs as a single process on the SAE's device.
    """

    def __init__(self, sae: SAE, data: DataSource, cfg: TrainConfig, ctx: DistContext | None = None) -> None:
        ctx = ctx or DistContext(device=sae.W_enc.device)
        if ctx.distributed and sae.cfg.architecture == "batchtopk":
            raise ValueError("architecture='batchtopk' cannot be trained with world_size > 1: its top-(k*B) selection "
                             "spans the whole batch, which DDP splits across ranks; use topk or one process")
        if ctx.distributed and not ctx.is_main and cfg.progress:
            cfg = cfg.replace(progress=False)
        super().__init__(sae, data, cfg)
        self.ctx = ctx
        replicate_statistics_(sae, ctx)
        self.dead = ReducedDeadLatentTracker(sae.cfg.d_sae, window=cfg.dead_window_steps, unit="steps",
                                             device=self.device, ctx=ctx)
        if cfg.dead_window_tokens:
            self.dead_tokens = ReducedDeadLatentTracker(sae.cfg.d_sae, window=cfg.dead_window_tokens, unit="tokens",
                                                        device=self.device, ctx=ctx)
        self.ddp: nn.Module | None = None
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # broadcast_buffers=False: the adaptive EMA is all-reduced (above), not overwritten by rank 0's.
            self.ddp = DDP(_LossModule(sae), device_ids=ids, broadcast_buffers=False)
        if not ctx.is_main:
            self.ckpt_dir = None  # only rank 0 writes metrics.jsonl and checkpoints

    # --- one step -----------------------------------------------------------------------------------------
    def _loss(self, x: Tensor) -> tuple[SAEOutput, LossTerms]:
        if self.ddp is None:
            return self.sae.loss(x)
        x_hat, h, pre, total, mse, l1, l2, aux = self.ddp(x)
        return SAEOutput(x_hat=x_hat, h=h, pre=pre), LossTerms(total=total, mse=mse, l1=l1, l2=l2, aux=aux)

    def _to_device(self, x: Tensor) -> Tensor:
        return to_device(x, self.device)  # pinned-memory, non-blocking copy to a GPU

    def _all_ok(self, ok: bool) -> bool:
        """All ranks apply a step or skip it together (NaN guard, DIGEST §2.5): a vote over ranks."""
        bad = torch.tensor([0.0 if ok else 1.0], device=self.device)
        return float(_all_reduce(bad, self.ctx, dist.ReduceOp.SUM)) == 0.0

    @property
    def _backward_even_if_skipped(self) -> bool:
        # Under DDP every rank must run backward (it holds the gradient all-reduce); a bad step is dropped after.
        return self.ctx.distributed

    def step_metrics(self, x: Tensor, out: Any, terms: Any) -> dict[str, float]:
        """Loss terms and batch metrics of the global batch (means over ranks; all shards have equal size)."""
        if not self.ctx.distributed:
            return super().step_metrics(x, out, terms)
        t = torch.stack([getattr(terms, k).detach().float() for k in ("total", "mse", "l1", "l2", "aux")])
        _all_reduce(t, self.ctx, dist.ReduceOp.SUM)
        t = (t / self.ctx.world_size).tolist()
        rec = dict(zip(("total", "mse", "l1", "l2", "aux"), t))
        rec.update(global_batch_metrics(x, out.x_hat, out.h, self.ctx))
        return rec

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The Trainer's state; with several ranks, ``data`` and ``rng`` hold every rank's entry (collective)."""
        state = super().state_dict()
        if self.ctx.distributed:
            per_rank: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(per_rank, {"data": state["data"], "rng": state["rng"]})
            state["data"] = [p["data"] for p in per_rank]
            state["rng"] = [p["rng"] for p in per_rank]
        state["world_size"] = self.ctx.world_size
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.ctx.world_size:
            raise ValueError(f"checkpoint was written by world_size={saved_world} ranks but this run has "
                             f"world_size={self.ctx.world_size}; resume with the same number of processes")
        if saved_world > 1:
            state = {**state, "data": state["data"][self.ctx.rank], "rng": state["rng"][self.ctx.rank]}
        super().load_state_dict(state)

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Gather the state on all ranks; rank 0 writes it atomically (temp file, then rename)."""
        state = self.state_dict()
        if path is None:
            base = Path(self.cfg.checkpoint_dir) if self.cfg.checkpoint_dir else None
            if base is None:
                raise ValueError("no path given and TrainConfig.checkpoint_dir is empty")
            path = base / "checkpoint.pt"
        path = Path(path)
        if self.ctx.is_main:
            atomic_write(path, lambda p: torch.save(state, p))
        _barrier(self.ctx)
        return path


def train_distributed(sae: SAE, data: DataSource, cfg: TrainConfig, ctx: DistContext | None = None, *,
                      resume_from: str | Path | None = None) -> TrainResult:
    """Train ``sae`` in place with :class:`DistributedTrainer` (``cfg.batch_size`` per rank); resume if asked."""
    trainer = DistributedTrainer(sae, data, cfg, ctx)
    if resume_from is not None:
        trainer.resume(resume_from)
    result = trainer.run()
    _barrier(trainer.ctx)
    return result


# --------------------------------------------------------------------------------------------------------------
# The command line: one run file, one process or torchrun
# --------------------------------------------------------------------------------------------------------------

DATA_KINDS = ("tensor", "cache", "lm", "spiked")


@dataclass
class RunConfig(ConfigBase):
    """A run file for ``python -m aen_lib.distributed`` (YAML or JSON): data, SAEs to train, and how (DIGEST §5.2)."""

    out_dir: str
    """Results folder: one sub-folder per SAE with checkpoint.pt, metrics.jsonl, result.json and sae/."""
    saes: list = field(default_factory=list)
    """SAEConfig dicts, each with an extra ``name`` (folder name); trained one after the other."""
    train: dict = field(default_factory=dict)
    """TrainConfig fields; ``batch_size`` is the global batch (split evenly across ranks)."""
    data: dict = field(default_factory=dict)
    """``kind``: tensor (``path`` to a .pt [N, d]) | cache (``path`` to an activation cache) |
    lm (``model``, ``layer``, ``dataset``, ``doc_start``, ``doc_stop``, ``window``, ``lm_batch_size``, ``lm_dtype``,
    ``drop_first``, ``truncate_lm``: free the blocks after the hook, default true) | spiked (SpikedDictionaryConfig fields)."""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK if available, else cpu) | cpu | cuda."""
    resume: bool = True
    """Continue from an SAE's checkpoint.pt if present; skip SAEs whose result.json exists."""
    metadata: dict = field(default_factory=dict)
    """Copied into each saved SAE's cfg.json (model name, hook, normalisation)."""

    def __post_init__(self) -> None:
        self._check_types()
        if not self.out_dir:
            _fail("out_dir", self.out_dir, "must be a folder path")
        if not self.saes:
            _fail("saes", self.saes, "must list at least one SAE config")
        names = []
        for i, s in enumerate(self.saes):
            if not isinstance(s, dict) or not s.get("name"):
                _fail(f"saes[{i}]", s, "must be a dict with a 'name' and SAEConfig fields")
            SAEConfig.from_dict({k: v for k, v in s.items() if k != "name"})
            names.append(s["name"])
        if len(set(names)) != len(names):
            _fail("saes", names, "names must be unique")
        kind = self.data.get("kind")
        if kind not in DATA_KINDS:
            _fail("data.kind", kind, f"must be one of {list(DATA_KINDS)}")
        if "checkpoint_dir" in self.train:
            _fail("train.checkpoint_dir", self.train["checkpoint_dir"], "is set by the run (out_dir/<name>); remove it")
        self.train_config()

    def train_config(self) -> TrainConfig:
        """The TrainConfig of the run (global batch; checkpoint_dir is filled in per SAE)."""
        return TrainConfig.from_dict({**self.train, "checkpoint_dir": self.out_dir})

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a YAML or JSON run file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"run file {p} does not exist")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        return cls.from_dict(data)


def _build_data(rc: RunConfig, ctx: DistContext, per_rank_batch: int) -> DataSource:
    d = dict(rc.data)
    kind = d.pop("kind")
    if kind == "tensor":
        rows = torch.load(d["path"], map_location="cpu", weights_only=True)
        return StridedShard(TensorStream(rows), ctx.rank, ctx.world_size)
    if kind == "spiked":
        from .data import SpikedDictionaryConfig, SpikedDictionaryData

        return StridedShard(SpikedDictionaryData(SpikedDictionaryConfig(**d)), ctx.rank, ctx.world_size)
    from .activations import ActivationSource

    if kind == "cache":
        src = ActivationSource.from_cache(d["path"], per_rank_batch, loop=True, drop_last=True,
                                          shuffle_buffer=int(d.get("shuffle_buffer", 0)), seed=int(d.get("seed", 0)))
        return StridedShard(src, ctx.rank, ctx.world_size)
    # kind == "lm": each rank harvests its own windows, with the LM in bf16 on its own GPU (DIGEST §2.5, §5.2)
    from .lm import document_separator_id, load_lm
    from .text import DocRange, iter_documents, iter_windows, load_text_dataset

    dtype = getattr(torch, d.get("lm_dtype", "bfloat16"))
    model, tok = load_lm(d["model"], dtype=dtype, device=ctx.device)
    if d.get("truncate_lm", True):
        drop_blocks_after(model, int(d["layer"]))
    dataset = load_text_dataset(d.get("dataset", "offline"), streaming=d.get("dataset", "offline") != "offline")
    docs = DocRange(int(d.get("doc_start", 0)), d.get("doc_stop"))
    eos = document_separator_id(tok, d["model"])
    window = int(d.get("window", 128))

    def windows() -> Iterable[Tensor]:
        return iter_windows(iter_documents(dataset, docs, loop=True), tok, window, eos_token_id=eos)

    src = ActivationSource.from_model(model, shard_windows(windows, ctx.rank, ctx.world_size), int(d["layer"]),
                                      per_rank_batch, lm_batch_size=int(d.get("lm_batch_size", 16)),
                                      drop_first=int(d.get("drop_first", 1)), loop=True, drop_last=True)
    return src


def run(rc: RunConfig, ctx: DistContext | None = None) -> dict[str, dict[str, Any]]:
    """Train every SAE of the run file on this rank; rank 0 writes results. Returns ``{name: result dict}``."""
    ctx = ctx or init_distributed(rc.device)
    tcfg = rc.train_config()
    if tcfg.batch_size % ctx.world_size:
        _fail("train.batch_size", tcfg.batch_size, f"must be divisible by the number of processes {ctx.world_size}")
    per_rank = tcfg.batch_size // ctx.world_size
    out_root = Path(rc.out_dir)
    results: dict[str, dict[str, Any]] = {}
    for spec in rc.saes:
        name = spec["name"]
        folder = out_root / name
        if rc.resume and (folder / "result.json").is_file():
            results[name] = json.loads((folder / "result.json").read_text())
            continue
        scfg = SAEConfig.from_dict({k: v for k, v in spec.items() if k != "name"})
        sae = SAE(scfg, device=ctx.device)
        cfg = tcfg.replace(batch_size=per_rank, checkpoint_dir=str(folder))
        data = _build_data(rc, ctx, per_rank)
        ckpt = folder / "checkpoint.pt"
        res = train_distributed(sae, data, cfg, ctx, resume_from=ckpt if rc.resume and ckpt.is_file() else None)
        summary = {"name": name, "sae_cfg": scfg.to_dict(), "final": res.final, "steps": res.steps,
                   "skipped_steps": res.skipped_steps, "seconds": res.seconds, "world_size": ctx.world_size,
                   "global_batch_size": tcfg.batch_size, "device": str(ctx.device), "autocast": tcfg.autocast}
        if ctx.is_main:
            save_sae(sae, folder / "sae", metadata=dict(rc.metadata), overwrite=True)
            atomic_write(folder / "result.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
        _barrier(ctx)
        results[name] = summary
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aen_lib.distributed --config RUN.yaml`` (optionally under ``torchrun --nproc_per_node N``)."""
    ap = argparse.ArgumentParser(prog="python -m aen_lib.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="run file (YAML or JSON), see RunConfig")
    ap.add_argument("--device", default=None, help="override the run file's device (auto | cpu | cuda)")
    args = ap.parse_args(argv)
    rc = RunConfig.load(args.config)
    if args.device:
        rc = rc.replace(device=args.device)
    ctx = init_distributed(rc.device)
    try:
        results = run(rc, ctx)
    finally:
        shutdown_distributed()
    if ctx.is_main:
        for name, r in results.items():
            f = r["final"]
            sys.stdout.write(f"{name}: L0 {f.get('l0', float('nan')):.1f}  EV {f.get('ev', float('nan')):.3f}  "
                             f"dead {f.get('dead_pct', float('nan')):.1f}%  ({r['world_size']} process(es))\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
