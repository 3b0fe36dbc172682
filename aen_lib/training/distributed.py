"""Training on one GPU or many: processes launched by ``torchrun``, each running the one training loop
(:mod:`aen_lib.training.train`) with a :class:`~aen_lib.sae.reduce.ProcessGroupReducer` (the paper trained its Llama-3.1-8B SAEs,
d 4096, m 131,072, batch 4,096 tokens, on two H200s).

* **Replicated SAE, averaged gradients.** Each rank computes the loss of its own ``batch / world_size`` tokens; after
  backward the reducer all-reduces every gradient in place (no bucket copies, so no extra memory). Every loss term is
  a mean over tokens, so with equal shards the averaged gradient is the gradient of the loss on the global batch.
* **Identical running statistics.** The adaptive-weight EMA of mean |h|, the dead-latent window (max |h| per latent)
  and TopK+AuxK's firing counters are batch statistics. Kept per rank they would silently diverge; the reducer
  all-reduces the per-latent sums (and token counts) and maxima, so every rank holds the state one process would hold
  on the concatenated batch.
* **One decision per step.** The non-finite-step guard votes across ranks, so all ranks apply or skip a member's step
  together; gradients are clipped after the all-reduce, hence identically.
* **Rank 0 writes.** Checkpoints (the SAE, Adam, the architecture state, every rank's data position and RNG state) and
  ``metrics.jsonl`` are written by rank 0 only, atomically; every rank reads the checkpoint to resume.
* **GPU path.** SAE parameters stay float32; ``TrainConfig.autocast="bf16"`` runs the matmuls in bfloat16; the LM
  runs in bfloat16; batches produced on the CPU go to the GPU through pinned memory (``non_blocking`` copies).

The same command runs as one process (no ``torchrun``, no process group) or as N processes::

    python -m aen_lib.training.distributed --config run.yaml                       # one process (CPU or one GPU)
    torchrun --nproc_per_node 8 -m aen_lib.training.distributed --config run.yaml  # eight GPUs, same results

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
from pathlib import Path
from typing import Any, Iterable, Sequence

if __name__ == "__main__":  # python -m aen_lib.training.distributed (and torchrun's workers): before torch loads
    from aen_lib import configure_openmp

    configure_openmp()

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..sae.config import ConfigBase, SAEConfig
from ..errors import fail
from ..sae.io import save_sae
from ..store import read_result, write_result
from ..sae.model import SAE
from ..sae.reduce import LOCAL, ProcessGroupReducer, Reducer
from ..data.sources import ActivationSource, DataSource, StridedShard, TensorStream, shard_windows
from .train import TrainConfig, TrainResult, train

logger = logging.getLogger(__name__)

__all__ = [
    "DistContext",
    "init_distributed",
    "shutdown_distributed",
    "StridedShard",
    "TensorStream",
    "shard_windows",
    "drop_blocks_after",
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

    @property
    def reducer(self) -> Reducer:
        """What the training loop reduces with: all-reduce over the process group, or nothing in one process."""
        return ProcessGroupReducer() if self.distributed else LOCAL


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


# --------------------------------------------------------------------------------------------------------------
# Data: each rank its own shard
# --------------------------------------------------------------------------------------------------------------


def drop_blocks_after(model: nn.Module, layer: int) -> nn.Module:
    """Free the blocks after ``layer`` and the unembedding, which early-exit harvesting never runs (in place).

    For Llama-3.1-8B hooked at block 16 this keeps about half of the 16 GB of bf16 weights
    (:func:`aen_lib.training.planner.lm_memory` with ``truncate=True``). The model can then only be used for harvesting.
    """
    from ..data.lm import block_list

    blocks = block_list(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer={layer} out of range; the model has blocks 0..{len(blocks) - 1}")
    del blocks[layer + 1:]
    if hasattr(model, "lm_head"):
        model.lm_head = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


def train_distributed(sae: SAE, data: DataSource, cfg: TrainConfig, ctx: DistContext | None = None, *,
                      resume_from: str | Path | None = None) -> TrainResult:
    """Train ``sae`` (one SAE or a stack) in place on this rank: the one training loop with the context's reducer
    (``cfg.batch_size`` is the per-rank batch); resume if asked. Only rank 0 shows progress and writes files."""
    ctx = ctx or DistContext(device=sae.W_enc.device)
    if not ctx.is_main and cfg.progress:
        cfg = cfg.replace(progress=False)
    result = train(sae, data, cfg, resume_from=resume_from, reducer=ctx.reducer)
    ctx.reducer.barrier()
    return result


# --------------------------------------------------------------------------------------------------------------
# The command line: one run file, one process or torchrun
# --------------------------------------------------------------------------------------------------------------

DATA_KINDS = ("tensor", "cache", "lm", "spiked")


@dataclass
class RunConfig(ConfigBase):
    """A run file for ``python -m aen_lib.training.distributed`` (YAML or JSON): data, SAEs to train, and how (the paper's Llama protocol)."""

    out_dir: str
    """Results folder: one sub-folder per SAE with checkpoint.pt, metrics.jsonl, result.json and sae/."""
    saes: list = field(default_factory=list)
    """SAEConfig dicts, each with an extra ``name`` (folder name); trained one after the other."""
    train: dict = field(default_factory=dict)
    """TrainConfig fields; ``batch_size`` is the global batch (split evenly across ranks)."""
    data: dict = field(default_factory=dict)
    """``kind``: tensor (``path`` to a .pt [N, d]) | cache (``path`` to an activation cache) |
    lm (``model``, ``layer``, ``dataset``, ``doc_start``, ``doc_stop``, ``window``, ``lm_batch_size``, ``lm_dtype``,
    ``drop_first``, ``truncate_lm``: free the blocks after the hook, default true; ``cache_dir``: where converted models
    and text corpora live, default ``~/.cache/aen_lib``) | spiked (SpikedDictionaryConfig fields)."""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK if available, else cpu) | cpu | cuda."""
    resume: bool = True
    """Continue from an SAE's checkpoint.pt if present; skip SAEs whose result.json exists."""
    metadata: dict = field(default_factory=dict)
    """Copied into each saved SAE's cfg.json (model name, hook, normalisation)."""

    def __post_init__(self) -> None:
        self._check_types()
        if not self.out_dir:
            fail("out_dir", self.out_dir, "must be a folder path")
        if not self.saes:
            fail("saes", self.saes, "must list at least one SAE config")
        names = []
        for i, s in enumerate(self.saes):
            if not isinstance(s, dict) or not s.get("name"):
                fail(f"saes[{i}]", s, "must be a dict with a 'name' and SAEConfig fields")
            SAEConfig.from_dict({k: v for k, v in s.items() if k != "name"})
            names.append(s["name"])
        if len(set(names)) != len(names):
            fail("saes", names, "names must be unique")
        kind = self.data.get("kind")
        if kind not in DATA_KINDS:
            fail("data.kind", kind, f"must be one of {list(DATA_KINDS)}")
        if "checkpoint_dir" in self.train:
            fail("train.checkpoint_dir", self.train["checkpoint_dir"], "is set by the run (out_dir/<name>); remove it")
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

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"run file {p} is not valid YAML ({e})") from e
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"run file {p} is not valid JSON ({e}); the file is truncated or corrupt") from e
        if not isinstance(data, dict):
            raise ValueError(f"run file {p} holds a {type(data).__name__}, not a mapping of RunConfig fields")
        return cls.from_dict(data)


def _build_data(rc: RunConfig, ctx: DistContext, per_rank_batch: int) -> DataSource:
    d = dict(rc.data)
    kind = d.pop("kind")
    if kind == "tensor":
        rows = torch.load(d["path"], map_location="cpu", weights_only=True)
        return StridedShard(TensorStream(rows), ctx.rank, ctx.world_size)
    if kind == "spiked":
        from ..data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData

        return StridedShard(SpikedDictionaryData(SpikedDictionaryConfig(**d)), ctx.rank, ctx.world_size)
    if kind == "cache":
        src = ActivationSource.from_cache(d["path"], per_rank_batch, loop=True, drop_last=True,
                                          shuffle_buffer=int(d.get("shuffle_buffer", 0)), seed=int(d.get("seed", 0)))
        return StridedShard(src, ctx.rank, ctx.world_size)
    # kind == "lm": each rank harvests its own windows, with the LM in bf16 on its own GPU
    from ..data.lm import document_separator_id, load_lm
    from ..data.text import DocRange, iter_documents, iter_windows, load_text_dataset

    dtype = getattr(torch, d.get("lm_dtype", "bfloat16"))
    model, tok = load_lm(d["model"], dtype=dtype, device=ctx.device, cache_dir=d.get("cache_dir"))
    if d.get("truncate_lm", True):
        drop_blocks_after(model, int(d["layer"]))
    dataset = load_text_dataset(d.get("dataset", "offline"), streaming=d.get("dataset", "offline") != "offline",
                                cache_dir=d.get("cache_dir"))
    docs = DocRange(int(d.get("doc_start", 0)), d.get("doc_stop"))
    eos = document_separator_id(tok, d["model"])
    window = int(d.get("window", 128))

    def windows() -> Iterable[Tensor]:
        return iter_windows(iter_documents(dataset, docs, loop=True), tok, window, eos_token_id=eos)

    src = ActivationSource.from_model(model, shard_windows(windows, ctx.rank, ctx.world_size), int(d["layer"]),
                                      per_rank_batch, lm_batch_size=int(d.get("lm_batch_size", 16)),
                                      drop_first=int(d.get("drop_first", 1)), loop=True, drop_last=True)
    return src


def _normalization(rc: RunConfig) -> str:
    """How the run's inputs are normalised (written into each saved SAE so that SAELens splices it correctly)."""
    if rc.metadata.get("normalization"):
        return str(rc.metadata["normalization"])
    kind = rc.data.get("kind")
    if kind == "lm":
        return "per_token_l2"  # ActivationSource.from_model's default
    if kind == "cache":
        from ..data.activation_cache import ActivationCache

        return ActivationCache(rc.data["path"]).config.normalization
    return "none"


def _lock_run_folder(out_root: Path, ctx: DistContext) -> Any:
    """Rank 0 holds the run folder's lock for the whole run; every rank fails together if another launch holds it."""
    from .runlock import RunLock, RunLockedError

    lock, error = None, ""
    if ctx.is_main:
        try:
            lock = RunLock(out_root).acquire()
        except RunLockedError as e:
            error = str(e)
    if ctx.distributed:
        flag = [error]
        dist.broadcast_object_list(flag, src=0)
        error = flag[0]
    if error:
        raise RuntimeError(error)
    return lock


def _read_result(path: Path) -> dict[str, Any]:
    """A finished SAE's ``result.json`` (a stored ``distributed_result``), as :func:`_run_locked` returned it when it
    trained that SAE (without the file's ``record_version``)."""
    try:
        rec = read_result(path, "distributed_result")
    except ValueError as e:
        raise ValueError(f"{e} (or delete {path} to retrain that SAE)") from e
    return {k: v for k, v in rec.items() if k != "record_version"}


def run(rc: RunConfig, ctx: DistContext | None = None) -> dict[str, dict[str, Any]]:
    """Train every SAE of the run file on this rank; rank 0 writes results. Returns ``{name: result dict}``.

    Rank 0 holds a lock on ``out_dir`` for the run's lifetime (:class:`aen_lib.training.runlock.RunLock`): a second launch on
    the same folder fails with a message naming the process that holds it."""
    ctx = ctx or init_distributed(rc.device)
    tcfg = rc.train_config()
    if tcfg.batch_size % ctx.world_size:
        fail("train.batch_size", tcfg.batch_size, f"must be divisible by the number of processes {ctx.world_size}")
    per_rank = tcfg.batch_size // ctx.world_size
    out_root = Path(rc.out_dir)
    lock = _lock_run_folder(out_root, ctx)
    try:
        return _run_locked(rc, ctx, tcfg, per_rank, out_root)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(rc: RunConfig, ctx: DistContext, tcfg: TrainConfig, per_rank: int, out_root: Path
                ) -> dict[str, dict[str, Any]]:
    normalization = _normalization(rc)
    results: dict[str, dict[str, Any]] = {}
    for spec in rc.saes:
        name = spec["name"]
        folder = out_root / name
        if rc.resume and (folder / "result.json").is_file():
            results[name] = _read_result(folder / "result.json")
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
            save_sae(sae, folder / "sae", metadata=dict(rc.metadata), normalization=normalization, overwrite=True)
            # replaced when the SAE is trained again (a run without resume retrains every SAE)
            write_result(folder / "result.json", "distributed_result", summary, overwrite=True)
        ctx.reducer.barrier()
        results[name] = summary
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aen_lib.training.distributed --config RUN.yaml`` (optionally under ``torchrun --nproc_per_node N``)."""
    ap = argparse.ArgumentParser(prog="python -m aen_lib.training.distributed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="run file (YAML or JSON), see RunConfig")
    ap.add_argument("--device", default=None, help="override the run file's device (auto | cpu | cuda)")
    args = ap.parse_args(argv)
    from .runlock import exit_with_launcher

    exit_with_launcher()  # a torchrun worker exits when its launcher dies, instead of writing on as an orphan
    try:
        rc = RunConfig.load(args.config)
        if args.device:
            rc = rc.replace(device=args.device)
    except (FileNotFoundError, ValueError) as e:  # a missing, unreadable or invalid run file: one line, not a traceback
        print(f"python -m aen_lib.training.distributed: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
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
