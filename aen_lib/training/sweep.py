"""Train a whole grid of SAEs at once, resumably: stacked members, one data stream (the paper's sweeps).

The paper's results are sweeps: every architecture at many hyperparameters and seeds, all trained on the same data.
Trained one after another, each SAE of the synthetic shape (n = 256, m = 1024, batch 256) is a few small matmuls per
step that leave a GPU mostly idle. Here the members are stacked along a leading member dimension
(:class:`aen_lib.sae.model.SAE` with several configs) and trained in lockstep on the same batch by the one training loop
(:class:`aen_lib.training.train.Trainer`): member i's parameters appear only in loss_i, so the gradient of the summed loss is
every member's own gradient, and the optimiser keeps the members independent. A member trained in a sweep matches
the same config trained alone on a data source with the same seed (``tests/test_sweep.py``, every architecture).

Memory: members are split into chunks that fit a memory budget (the planner's model,
:func:`aen_lib.training.planner.sae_memory`); each chunk replays the data stream from the same starting state, so chunking
changes nothing but the speed.

Resuming: with ``checkpoint_dir`` every chunk writes its whole state atomically every ``checkpoint_every`` steps and
a ``done.pt`` record when it finishes. Calling :func:`train_sweep` again with the same arguments (after a crash or
kill -9) skips finished chunks, continues the interrupted one from its last checkpoint and ends bit-identical (on
CPU) to an uninterrupted sweep. A folder that holds a different sweep is refused.

Typical use::

    configs = expand_grid(dict(d_in=256, d_sae=1024, warmup_steps=10_000), AUTHORS_SPIKED_GRID, seeds=[0])
    result = train_sweep(configs, SpikedDictionaryData(SpikedDictionaryConfig(rho=0.0, seed=0)),
                         TrainConfig(steps=50_000, batch_size=256), device="cuda", checkpoint_dir="runs/rho0")
    result.members[3].final["dead_pct"], result.members[3].sae   # metrics and a plain SAE (aen_lib.sae.io.save_sae)
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..sae.architectures import ARCHITECTURES
from ..sae.config import SAEConfig
from ..store import atomic_write
from ..sae.model import SAE
from .planner import sae_memory
from ..sae.reduce import LOCAL, Reducer
from ..data.sources import DataSource
from .train import CHECKPOINT_VERSION, TrainConfig, Trainer, final_metrics, load_checkpoint

__all__ = [
    "AUTHORS_SPIKED_GRID",
    "expand_grid",
    "MemberResult",
    "SweepResult",
    "member_bytes",
    "largest_tensor_bytes",
    "CPU_MAX_TENSOR_BYTES",
    "plan_chunks",
    "train_sweep",
]

AUTHORS_SPIKED_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.01, 0.005, 0.001, 0.0005]},
    "elastic_net": {"l1": [0.01, 0.005, 0.001], "l2": [0.001, 0.0005, 0.0001]},
    "adaptive_lasso": {"l1": [0.01, 0.005, 0.001], "gamma": [0.5, 1.0], "ema_beta": [0.999, 0.9999],
                       "ref_top_pct": [0.05, 0.01]},
    "aen": {"l1": [0.01, 0.005, 0.001], "l2": [0.001, 0.0005, 0.0001], "gamma": [0.5, 1.0],
            "ema_beta": [0.999, 0.9999], "ref_top_pct": [0.05, 0.01]},
    "topk": {"k": [8, 16, 32, 64, 128]},
}
"""The authors' v1 synthetic sweep (4 vanilla, 9 EN, 24 AdaLasso, 72 AEN, 5 TopK = 114 members per ρ).
BatchTopK, JumpReLU and TopK+AuxK are not in the paper; chapters add them with their own grids."""


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
    architecture to ``{field: [values]}``, e.g. ``{"topk": {"k": [8, 16]}}``; an architecture's own options
    (``{"topk_auxk": {"k": [8], "auxk_coef": [1/32]}}``) go to ``SAEConfig.options``. ``seeds`` sets
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
    fields = set(SAEConfig.__dataclass_fields__) - {"options"}
    for key in base:
        if key not in fields or key in ("architecture", "seed"):
            raise ValueError(f"base field {key!r} is not allowed; use SAEConfig fields except architecture and seed")
    out: list[SAEConfig] = []
    for arch, axes in grid.items():
        if arch not in ARCHITECTURES:
            raise ValueError(f"grid architecture {arch!r} is unknown; known: {sorted(ARCHITECTURES)}")
        arch_options = set(ARCHITECTURES[arch].OPTIONS)
        if not isinstance(axes, Mapping):
            raise ValueError(f"grid[{arch!r}] must be a mapping field -> [values], got {axes!r}")
        names = list(axes)
        for name in names:
            if (name not in fields and name not in arch_options) or name in ("architecture", "seed", "d_in", "d_sae"):
                raise ValueError(
                    f"grid[{arch!r}] field {name!r} is not allowed; sweepable fields: "
                    f"{sorted(fields - {'architecture', 'seed', 'd_in', 'd_sae'})} and {arch}'s options "
                    f"{sorted(arch_options)}"
                )
            vals = axes[name]
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
                raise ValueError(f"grid[{arch!r}][{name!r}] must be a non-empty list of values, got {vals!r}")
            if len(set(map(repr, vals))) != len(vals):
                raise ValueError(f"grid[{arch!r}][{name!r}] = {list(vals)} contains duplicates")
        for combo in itertools.product(*(axes[n] for n in names)):
            for seed in seeds:
                values = dict(zip(names, combo))
                options = {k: v for k, v in values.items() if k in arch_options}
                kw = {**base, **{k: v for k, v in values.items() if k not in arch_options},
                      "architecture": arch, "seed": seed, "options": options}
                try:
                    out.append(SAEConfig(**kw))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"grid[{arch!r}] with {dict(zip(names, combo))}: {e}") from e
    return out


# ----------------------------------------------------------------------------------------------------------------
# Chunks, memory, the front end
# ----------------------------------------------------------------------------------------------------------------
def member_bytes(cfg: SAEConfig, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak memory (bytes) of one member in training: the planner's model (:func:`aen_lib.training.planner.sae_memory`)."""
    mem = sae_memory(cfg.d_in, cfg.d_sae, batch_size, architecture=cfg.architecture)
    scale = torch.empty((), dtype=dtype).element_size() / 4
    return int(mem["total"] * scale)


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
) -> list[list[int]]:
    """Split members into chunks of one shape within the memory budget (lists of indices into ``cfgs``).

    Chunks of a shape are balanced in size; inside a shape, members keep the order of ``cfgs`` sorted by
    architecture name so that each chunk holds as few architecture runs as possible. ``max_tensor_bytes`` also caps
    the size of any stacked tensor (see :data:`CPU_MAX_TENSOR_BYTES`)."""
    if memory_budget_bytes <= 0:
        raise ValueError(f"memory_budget_bytes={memory_budget_bytes!r} must be > 0")
    if max_members is not None and (isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1):
        raise ValueError(f"max_members={max_members!r} must be a positive integer or None")
    order = {name: i for i, name in enumerate(ARCHITECTURES)}
    chunks: list[list[int]] = []
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(cfgs):
        by_shape.setdefault((c.d_in, c.d_sae), []).append(i)
    for idx in by_shape.values():
        idx.sort(key=lambda i: (order[cfgs[i].architecture], i))
        per = max(member_bytes(cfgs[i], batch_size, dtype) for i in idx)
        cap = max(1, memory_budget_bytes // per)
        if max_members is not None:
            cap = min(cap, max_members)
        if max_tensor_bytes is not None:
            largest = max(largest_tensor_bytes(cfgs[i], batch_size, dtype) for i in idx)
            cap = min(cap, max(1, max_tensor_bytes // largest))
        n_chunks = math.ceil(len(idx) / cap)
        bounds = [round(i * len(idx) / n_chunks) for i in range(n_chunks + 1)]  # sizes differ by at most 1
        chunks += [idx[bounds[i] : bounds[i + 1]] for i in range(n_chunks)]
    return chunks


@dataclass
class MemberResult:
    """One trained member: its config, metric history, final metrics, skipped steps and the trained SAE."""

    cfg: SAEConfig
    history: list[dict[str, float]]
    final: dict[str, float]
    skipped_steps: int
    sae: SAE
    final_window: dict[str, Any] | None = None
    """The dead-latent window training ended in (:meth:`aen_lib.training.train.Trainer.final_window`: steps, tokens,
    per-latent ``firing_counts``); None for a chunk finished before it was recorded."""


@dataclass
class SweepResult:
    """What :func:`train_sweep` returns: one :class:`MemberResult` per config, in the order given.

    ``seconds`` and ``member_steps`` count the work done in this call (chunks loaded from a finished checkpoint
    count neither), so ``member_steps_per_s`` is the speed of this call."""

    members: list[MemberResult]
    seconds: float
    member_steps: int
    chunks: list[list[int]] = field(default_factory=list)
    resumed_chunks: list[int] = field(default_factory=list)

    @property
    def member_steps_per_s(self) -> float:
        return self.member_steps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def configs(self) -> list[SAEConfig]:
        return [m.cfg for m in self.members]

    @property
    def saes(self) -> list[SAE]:
        return [m.sae for m in self.members]




MANIFEST = "sweep.json"
DEFAULT_CHECKPOINT_EVERY = 1_000


def _manifest(configs: Sequence[SAEConfig], cfg: TrainConfig, chunks: list[list[int]], dtype: torch.dtype,
              data: DataSource) -> dict[str, Any]:
    train = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "checkpoint_every", "checkpoint_dir")}
    data_cfg = getattr(data, "config", None) or getattr(data, "cfg", None)  # e.g. SpikedDictionaryData.config
    return {"configs": [c.to_dict() for c in configs], "train": train, "chunks": chunks,
            "dtype": str(dtype).removeprefix("torch."),
            "data": data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else type(data).__name__}


def _check_manifest(folder: Path, want: dict[str, Any]) -> None:
    want = json.loads(json.dumps(want))  # compare as stored (tuples become lists)
    path = folder / MANIFEST
    if not path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"checkpoint_dir {folder} is not empty and holds no {MANIFEST}; it is not a sweep "
                             "folder: choose an empty or new folder")
        atomic_write(path, lambda p: p.write_text(json.dumps(want, indent=1) + "\n"))
        return
    try:
        have = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e}); delete the folder to start the sweep again") from e
    for key in dict.fromkeys([*want, *have]):  # a key on one side only is a difference too (e.g. b_dec_init)
        if have.get(key) != want.get(key):
            diff = key
            if key == "train" and key in have and key in want:
                diff = f"train.{next(k for k in want[key] if have[key].get(k) != want[key][k])}"
            raise ValueError(f"checkpoint_dir {folder} holds a different sweep ({diff} differs); resume with the same "
                             "configs, TrainConfig, data and dtype, or choose another checkpoint_dir")


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
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    reducer: Reducer = LOCAL,
    b_dec_init: torch.Tensor | None = None,
) -> SweepResult:
    """Train every config on the same data stream and return histories, finals and SAEs (see the module docstring).

    All members see the batches that ``data`` yields from its current state, as each would if trained alone with
    :func:`aen_lib.training.train.train`; chunks replay the stream from that state (the source must implement ``state_dict`` /
    ``load_state_dict``). ``memory_budget_bytes`` defaults to 80% of free GPU memory on CUDA and 4 GiB on CPU; on
    CPU no stacked tensor may reach 32 MiB either (:data:`CPU_MAX_TENSOR_BYTES`). ``cfg.progress`` shows one tqdm
    bar counting member-steps. With ``checkpoint_dir`` the sweep resumes (module docstring), writing a checkpoint every
    ``checkpoint_every`` steps. Trained SAEs are moved to ``export_device`` (``None``: keep them
    on ``device``). ``reducer`` trains every chunk under DDP (:mod:`aen_lib.sae.reduce`). ``b_dec_init [d_in]`` starts
    every member's pre-encoder bias there instead of at 0 (:meth:`aen_lib.sae.model.SAE.set_b_dec_`; recorded in the
    manifest, so a resume with another start is refused).
    """
    cfg = cfg or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.checkpoint_dir or cfg.checkpoint_every:
        raise ValueError(f"TrainConfig.checkpoint_dir={cfg.checkpoint_dir!r} / checkpoint_every={cfg.checkpoint_every}: "
                         "pass train_sweep(..., checkpoint_dir=..., checkpoint_every=...) instead (one sub-folder per "
                         "chunk is made there)")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} must be a positive integer (steps)")
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
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if root is not None:
        if reducer.is_main:
            want = _manifest(configs, cfg, chunks, dtype, data)
            if b_dec_init is not None:  # only then: the manifests of sweeps started at 0 stay as they were
                want["b_dec_init"] = [round(float(v), 7) for v in b_dec_init.flatten()]
            _check_manifest(root, want)
        reducer.barrier()
    start_state = copy.deepcopy(data.state_dict())
    bar = None
    if cfg.progress and reducer.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs) * cfg.steps, desc="sweep", unit="member-step", unit_scale=True,
                   dynamic_ncols=True, leave=False)
    results: list[MemberResult | None] = [None] * len(configs)
    resumed: list[int] = []
    work = 0
    t0 = time.perf_counter()
    for c_i, idx in enumerate(chunks):
        folder = root / f"chunk_{c_i:03d}" if root is not None else None
        if bar is not None:
            bar.set_description(f"sweep chunk {c_i + 1}/{len(chunks)} ({len(idx)} members)")
        stack = SAE([configs[i] for i in idx], device=dev, dtype=dtype)
        if b_dec_init is not None:
            stack.set_b_dec_(b_dec_init)  # a checkpoint or finished chunk loaded below overrides it
        done = folder / "done.pt" if folder is not None else None
        if done is not None and done.exists():
            state = load_checkpoint(done, map_location=dev)
            stack.load_state_dict(state["sae"])
            histories, skipped = state["histories"], [int(s) for s in state["skipped"]]
            windows = state.get("final_windows") or [None] * len(idx)
            resumed.append(c_i)
            if bar is not None:
                bar.update(len(idx) * cfg.steps)
        else:
            data.load_state_dict(copy.deepcopy(start_state))
            chunk_cfg = cfg.replace(checkpoint_dir=str(folder), checkpoint_every=checkpoint_every) if folder else cfg
            trainer = Trainer(stack, data, chunk_cfg, reducer=reducer, bar=bar)
            ckpt = folder / "checkpoint.pt" if folder is not None else None
            if ckpt is not None and ckpt.exists():
                trainer.resume(ckpt)
                resumed.append(c_i)
                if bar is not None:
                    bar.update(len(idx) * trainer.step)
            work += len(idx) * (cfg.steps - trainer.step)
            res = trainer.run()
            histories, skipped = res.histories, res.skipped
            windows = res.extra.get("final_window") or [None] * len(idx)
            if done is not None:
                final_state = {"version": CHECKPOINT_VERSION, "sae_cfgs": [configs[i].to_dict() for i in idx], "sae": stack.state_dict(),
                               "histories": histories, "skipped": skipped, "seconds": res.seconds,
                               "final_windows": windows}
                if reducer.is_main:
                    atomic_write(done, lambda p: torch.save(final_state, p))
                    (folder / "checkpoint.pt").unlink(missing_ok=True)  # type: ignore[operator]
                reducer.barrier()
        for j, i in enumerate(idx):
            results[i] = MemberResult(cfg=configs[i], history=histories[j],
                                      final=final_metrics(histories[j], cfg.final_avg_logs), skipped_steps=skipped[j],
                                      sae=stack.member(j, device=export_device), final_window=windows[j])
        del stack
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if bar is not None:
        bar.close()
    assert all(r is not None for r in results)
    return SweepResult(members=results, seconds=time.perf_counter() - t0, member_steps=work,  # type: ignore[arg-type]
                       chunks=chunks, resumed_chunks=resumed)
