"""Reference results: paper-size runs, resumable over days, stored as small JSON records with provenance.

A *set* is one sweep (one grid, one data configuration, one seed) at the paper's size. Its records live in the
repository under ``reference/<set>/``: ``provenance.json`` (the exact command; for every invocation, killed ones included, its git commit,
torch version, device and CPU/GPU model, dates, wall and CPU time and saved member-steps) and one ``<variant>.json`` per trained SAE
(config, data config, final metrics, the logged history; no weights). The training state lives in a work folder
outside the repository (default ``~/.cache/aen_lib/reference_runs/<set>``); the command can be killed at any moment
and run again: it continues from the last checkpoint (:func:`aen_lib.training.sweep.train_sweep`), and the records are only
written once every member has finished. A ``notes.md`` in the work folder (anything a person noted about the run)
is copied next to the records.

    python -m aen_lib.results.reference spiked --rho 0.0            # the paper's synthetic protocol at ρ = 0 (issue grid)
    python -m aen_lib.results.reference spiked --rho 0.9 --device cuda
    python -m aen_lib.results.reference status                      # progress and hours left of every set in the work folder
    python -m aen_lib.results.reference status --members            # ... and the last logged metrics of every SAE
    python -m aen_lib.results.reference check                       # every committed set complete and well-formed
    python -m aen_lib.results.reference table                       # the committed sets' provenance (the README's table)
    python -m aen_lib.results.reference studies                     # every study beside the paper grid (the README's table)
    python -m aen_lib.results.reference spiked --study biasmean --rho 0.9   # a study's set (spiked_<study>_rho<ρ>_seed<s>)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__":  # python -m aen_lib.results.reference: before torch loads, or it has no effect
    from aen_lib import configure_openmp

    configure_openmp()

import pandas as pd
import torch

from ..data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from ..store import CHECKOUT, atomic_write
from ..theory.mechanism import MECHANISM_SAMPLES, mechanism_measures
from ..evaluation.dead import DEAD_THRESHOLD
from ..evaluation.metrics import latent_reach, recovery_metrics
from ..sae.config import SAEConfig
from ..sae.model import SAE
from ..training.runlock import RunLock
from ..data.sources import CentredSource
from .records import member_record, read_result, variant_id, write_result
from ..training.sweep import expand_grid, train_sweep
from ..training.train import TrainConfig


def _defaults(cls: type, *names: str) -> dict[str, Any]:
    """The field defaults of the config dataclass ``cls``: the one home of the paper's values."""
    return {name: cls.__dataclass_fields__[name].default for name in names}


PAPER_ADAPTIVE_RULE = _defaults(SAEConfig, "gamma", "ema_beta", "ref_top_pct")
"""The paper's adaptive-weight rule (γ, β, p): :class:`aen_lib.sae.config.SAEConfig`'s defaults."""
_ADAPTIVE = {name: [value] for name, value in PAPER_ADAPTIVE_RULE.items()}

REFERENCE_SPIKED_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.01, 0.005, 0.001]},
    "elastic_net": {"l1": [0.005], "l2": [0.001]},
    "adaptive_lasso": {"l1": [0.005], **_ADAPTIVE},
    "aen": {"l1": [0.01, 0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [8, 16, 32, 64, 128]},
    "topk_auxk": {"k": [8, 16, 32]},
}
"""The minimum grid of the paper-size synthetic reference sets (16 SAEs per ρ; the authors' full v1 grid is
:data:`aen_lib.training.sweep.AUTHORS_SPIKED_GRID`)."""

SEEDS_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.005]},
    "elastic_net": {"l1": [0.005], "l2": [0.001]},
    "aen": {"l1": [0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [8, 16, 32]},
    "topk_auxk": {"k": [32]},
}
"""The subset of :data:`REFERENCE_SPIKED_GRID` trained again at further seeds (8 SAEs), so that every verdict on the
paper's statements can give a seed range."""

OUTLIER_GRID: dict[str, dict[str, list[Any]]] = {
    "relu_l1": {"l1": [0.005, 0.001]},
    "aen": {"l1": [0.005, 0.001], "l2": [0.001], **_ADAPTIVE},
    "topk": {"k": [16, 32]},
}
"""The SAEs trained again with the input mean taken out of the picture (6 SAEs; Simon, Adams & Zou 2026 tie feature
death to the activation mean): once with the pre-encoder bias started at the data mean, once on mean-centred inputs.
Their configs are those of the same SAEs in :data:`REFERENCE_SPIKED_GRID`, so each pairs with its plain twin."""


SENSITIVITY_AXES: dict[str, list[Any]] = {"gamma": [0.5, 1.0], "ema_beta": [0.999, 0.9999],
                                          "ema_init": ["one", "first_batch"]}
"""The adaptive rule's settings varied one grid at a time: γ, β and where the EMA starts (the authors' 1, or the first
batch's mean |h|), 8 combinations; the paper's setting is γ 0.5, β 0.9999, EMA from 1."""
SENSITIVITY_AEN_GRID = {"aen": {"l1": [0.005], "l2": [0.001], "ref_top_pct": [PAPER_ADAPTIVE_RULE["ref_top_pct"]],
                                **SENSITIVITY_AXES}}
SENSITIVITY_ADALASSO_GRID = {"adaptive_lasso": {"l1": [0.005], "ref_top_pct": [PAPER_ADAPTIVE_RULE["ref_top_pct"]],
                                                **SENSITIVITY_AXES}}


FACTORIAL_TARGET_L0 = 22.5
"""The matched L0 of the 2 × 2 factorial (near the paper-size AEN's 24.0 at ρ = 0); every SAE within 10% of it."""
FACTORIAL_TOLERANCE = 0.10


def _factorial_grid(l1: dict[str, list[float]]) -> dict[str, dict[str, list[Any]]]:
    """{ℓ1 alone, ℓ1 + ℓ2} × {fixed, adaptive weights} at the given λ1 lists (λ2 0.001, the paper's adaptive rule)."""
    return {"relu_l1": {"l1": l1["relu_l1"]}, "elastic_net": {"l1": l1["elastic_net"], "l2": [0.001]},
            "adaptive_lasso": {"l1": l1["adaptive_lasso"], **_ADAPTIVE},
            "aen": {"l1": l1["aen"], "l2": [0.001], **_ADAPTIVE}}


FACTORIAL_BRACKET_L1: dict[float, dict[str, list[float]]] = {
    0.9: {"relu_l1": [0.0011, 0.0016, 0.0022], "elastic_net": [0.0026, 0.0038, 0.0053],
          "adaptive_lasso": [0.00047, 0.00067, 0.00093], "aen": [0.00096, 0.0014, 0.0019]},
}
"""Calibration runs of the factorial at ρ = 0.9: for each method its λ1 guess for L0 = :data:`FACTORIAL_TARGET_L0`
(:func:`aen_lib.results.records.l1_for_l0` on the committed paper set of that ρ, two significant digits; a test keeps the two
equal) and the guess × 0.7 and × 1.4. At ρ = 0 the paper set already has all four methods within 10% of the target
at λ1 0.005, so no bracket is needed there."""

FACTORIAL_L1: dict[float, dict[str, list[float]]] = {
    0.0: {"relu_l1": [0.005], "elastic_net": [0.005], "adaptive_lasso": [0.005], "aen": [0.005]},
    0.9: {"relu_l1": [0.0018], "elastic_net": [0.0023], "adaptive_lasso": [0.0009], "aen": [0.0013]},
}
"""λ1 of each method at which the factorial is trained, per ρ: at ρ = 0 the paper set's L0 are 20.5, 24.3, 20.4 and
24.0 at λ1 0.005 (within 10% of 22.5; a test checks it against the records). At ρ = 0.9 each is
:func:`aen_lib.results.records.l1_for_l0` on the committed bracket set (``spiked_factorial_bracket_rho0.9_seed0``), two
significant digits (a test keeps the two equal): a guess that the factorial set itself must confirm, since L0 is not
linear in log λ1 (elastic net's 0.0023 lies just outside its bracket, whose smallest λ1 0.0026 gave L0 20.6)."""


@dataclass(frozen=True)
class Study:
    """What one kind of reference set trains: a grid, and how the inputs meet the SAE.

    ``b_dec_init``: ``"zero"`` (the paper and the authors' code) or ``"mean"`` (the pre-encoder bias starts at the
    exact population mean of the inputs, as SAELens and others start it at a data statistic). ``inputs``: ``"raw"``
    or ``"centred"`` (the exact population mean subtracted from every sample, training and evaluation alike)."""

    grid: dict[str, dict[str, list[Any]]] | None
    b_dec_init: str = "zero"
    inputs: str = "raw"
    doc: str = ""
    by_rho: dict[float, dict[str, dict[str, list[Any]]]] | None = None
    """A grid per ρ instead of one grid (calibrated λ1 differ with ρ)."""

    def grid_at(self, rho: float) -> dict[str, dict[str, list[Any]]]:
        """The grid trained at ``rho``; ``ValueError`` naming the ρ values it has when there is none."""
        if self.by_rho is None:
            assert self.grid is not None
            return self.grid
        if float(rho) not in self.by_rho:
            raise ValueError(f"this study has no grid at ρ = {rho:g} (it has ρ in {sorted(self.by_rho)}); at another ρ "
                             "calibrate λ1 first (the factorial_bracket study) and add its grid")
        return self.by_rho[float(rho)]


STUDIES: dict[str, Study] = {
    "paper": Study(REFERENCE_SPIKED_GRID, doc="the paper's statements"),
    "seeds": Study(SEEDS_GRID, doc="seed ranges: 8 SAEs of the paper grid at another seed"),
    "biasmean": Study(OUTLIER_GRID, b_dec_init="mean", doc="the outlier explanation: pre-encoder bias at the data mean"),
    "centred": Study(OUTLIER_GRID, inputs="centred", doc="the outlier explanation: mean-centred inputs"),
    "factorial_bracket": Study(None, by_rho={r: _factorial_grid(v) for r, v in FACTORIAL_BRACKET_L1.items()},
                               doc="calibration of the 2 × 2 factorial: 3 λ1 per method around the guess"),
    "factorial": Study(None, by_rho={r: _factorial_grid(v) for r, v in FACTORIAL_L1.items()},
                       doc="the 2 × 2 factorial {ℓ1, ℓ1+ℓ2} × {fixed, adaptive} at matched L0"),
    "sensitivity_aen": Study(SENSITIVITY_AEN_GRID, doc="the adaptive rule's γ, β and EMA start, AEN"),
    "sensitivity_adaptive_lasso": Study(SENSITIVITY_ADALASSO_GRID,
                                        doc="the adaptive rule's γ, β and EMA start, adaptive lasso"),
}
"""Every kind of spiked reference set, by the name that starts its folder (``spiked_<study>_rho<ρ>_seed<s>``)."""

SPIKED_PAPER_SAE = dict(d_in=256, d_sae=1024, **_defaults(SAEConfig, "warmup_steps", "ramp_steps"))
"""The paper-size SAE (n = 256, m = 1024) with the paper's warm-up T_w and ramp R (:class:`SAEConfig`'s defaults)."""
SPIKED_PAPER_TRAIN = _defaults(TrainConfig, "steps", "batch_size", "lr", "dead_window_steps", "log_every")
"""The paper's synthetic protocol (steps, batch, Adam's learning rate, dead window, log interval):
:class:`aen_lib.training.train.TrainConfig`'s defaults."""

LEGACY_RECOVERY_THRESHOLD = 1e-6
"""The firing threshold of the recovery measures (held-out L0, support, dead and out of reach on fresh samples) in
records without a ``firing_threshold`` field; later records use :data:`aen_lib.evaluation.dead.DEAD_THRESHOLD` (re-measured on the
sets at hand, the dead and out-of-reach shares are identical and L0 moves by at most 4e-4)."""
EVAL_SAMPLES = 8192
"""Fresh samples for dictionary and support recovery (:func:`aen_lib.evaluation.metrics.recovery_metrics`)."""
EVAL_SEED_OFFSET = 1_000_000
"""The recovery samples come from the set's dictionary with the sample stream reseeded to this + seed."""
DEFAULT_WORK = Path.home() / ".cache" / "aen_lib" / "reference_runs"


def _git_state(repo: Path) -> tuple[str, list[str]]:
    """The commit checked out in ``repo`` (``+uncommitted`` appended when tracked files differ from it) and the
    paths of those files, so a record says whether the library itself or only, say, the README was edited."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", []
    if out.returncode != 0:
        return "unknown", []
    dirty = sorted(line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip())
    return out.stdout.strip() + ("+uncommitted" if dirty else ""), dirty


def _short_commit(commit: str) -> str:
    """``abc1234`` for a clean commit, ``abc1234+`` when the tree had uncommitted changes."""
    return commit[:7] + ("+" if commit.endswith("+uncommitted") else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(device: torch.device) -> dict[str, Any]:
    """torch version, device, CPU (or GPU) model and thread count, for provenance."""
    facts = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
             "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def checkpointed_member_steps(sweep_dir: Path) -> int:
    """Member-steps a resumable sweep folder holds: finished chunks count fully, a running chunk up to its last
    checkpoint (work after it is lost when the process dies, and is redone)."""
    manifest = sweep_dir / "sweep.json"
    if not manifest.is_file():
        return 0
    plan = json.loads(manifest.read_text())
    steps = int(plan["train"]["steps"])
    held = 0
    for c_i, idx in enumerate(plan["chunks"]):
        folder = sweep_dir / f"chunk_{c_i:03d}"
        if (folder / "done.pt").is_file():
            held += len(idx) * steps
        elif (folder / "checkpoint.pt").is_file():
            state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False, mmap=True)
            held += len(idx) * int(state["step"])
    return held


class InvocationLedger:
    """One JSON file per invocation of a set, rewritten every ``every_s`` seconds while it trains.

    A set takes hours and is killed and continued many times, so each invocation must leave its record even when it
    is killed: ``started``, ``ended`` (the last heartbeat when killed, within ``every_s``), wall ``seconds``,
    ``cpu_seconds`` (this process's CPU time, not inflated by pauses or by a busy machine), the commit, the machine,
    and the member-steps held when it started. :meth:`settle` turns those into each invocation's saved
    ``member_steps`` (the progress up to the next invocation's start)."""

    def __init__(self, folder: Path, *, sweep_dir: Path, device: torch.device, every_s: float = 60.0) -> None:
        self.folder, self.sweep_dir, self.every_s = Path(folder), Path(sweep_dir), every_s
        self.folder.mkdir(parents=True, exist_ok=True)
        started = dt.datetime.now(dt.timezone.utc)
        self.path = self.folder / f"{started:%Y%m%dT%H%M%S%f}.json"
        repo = CHECKOUT
        commit, dirty = _git_state(repo)
        self.record: dict[str, Any] = {
            "started": started.isoformat(timespec="seconds"), "ended": None, "completed": False,
            "commit": commit, **({"uncommitted_files": dirty} if dirty else {}), **machine_facts(device),
            "seconds": 0.0, "cpu_seconds": 0.0, "member_steps_at_start": checkpointed_member_steps(self.sweep_dir)}
        library = [f for f in dirty if f.startswith("aen_lib/")]
        if library:
            warnings.warn(f"training a reference set with uncommitted changes to {', '.join(library)}: the records "
                          "will name a commit that does not hold the code that produced them; commit first, or note "
                          "the change in the set's notes.md", stacklevel=2)
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="reference-ledger", daemon=True)

    def _write(self, **update: Any) -> None:
        self.record.update(update, ended=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           seconds=round(time.perf_counter() - self._t0, 1),
                           cpu_seconds=round(time.process_time() - self._c0, 1))
        rec = dict(self.record)  # a copy in one step: the heartbeat thread and the caller both update the record
        write_result(self.path, "invocation", rec, overwrite=True)  # each heartbeat rewrites the same file

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self._write()

    def __enter__(self) -> "InvocationLedger":
        self._write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._write(completed=exc_type is None, **({"error": f"{exc_type.__name__}: {exc}"} if exc_type else {}))

    def settle(self, total: int) -> list[dict[str, Any]]:
        """Every invocation of the set, in start order, with its ``member_steps`` (its saved progress)."""
        return settled_invocations(self.folder, total)


def read_invocations(folder: Path) -> list[dict[str, Any]]:
    """The invocation records in ``folder`` (stored ``invocation`` results), in start order, without the files'
    ``record_version`` (a set's provenance lists them as invocations, not as files)."""
    calls = [read_result(p, "invocation") for p in sorted(Path(folder).glob("*.json"))]  # names: start time, µs
    return [{k: v for k, v in c.items() if k != "record_version"} for c in calls]


def settled_invocations(folder: Path, total: int) -> list[dict[str, Any]]:
    """The invocation records in ``folder``, in start order, each with its saved ``member_steps``."""
    calls = read_invocations(folder)
    for call, saved in zip(calls, saved_member_steps(calls, total)):
        call["member_steps"] = saved
    return calls


def saved_member_steps(calls: Sequence[dict[str, Any]], held: int) -> list[int]:
    """Each invocation's saved progress: from its start to the next one's start (the last one: to ``held``)."""
    starts = [c["member_steps_at_start"] for c in calls] + [held]
    return [b - a for a, b in zip(starts, starts[1:])]


def set_name(rho: float, seed: int, device: str = "cpu", study: str = "paper") -> str:
    """``spiked_<study>_rho<ρ>_seed<s>``, with ``_<device type>`` for sets trained off the CPU (their numbers differ in
    the last bits, so a CPU set and a GPU set of the same ρ are kept apart)."""
    _study(study)
    kind = torch.device(device).type
    return f"spiked_{study}_rho{rho:g}_seed{seed}" + ("" if kind == "cpu" else f"_{kind}")


def _study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"study={name!r} is not a reference study; choose one of {sorted(STUDIES)}")
    return STUDIES[name]


def outlier_severity(x: torch.Tensor) -> float:
    """||mean|| / ||std|| of samples ``x [B, n]`` (per-coordinate mean and standard deviation; Simon, Adams & Zou 2026):
    how far the data's centre lies from the origin relative to its spread. 0 for centred data."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be [B, n] samples with B >= 2, got shape {tuple(x.shape)}")
    x = x.double()
    return float(x.mean(0).norm() / x.std(0).norm())


def eval_samples(data_cfg: SpikedDictionaryConfig, samples: int = EVAL_SAMPLES,
                 device: torch.device | str | None = None) -> tuple[SpikedDictionaryData, torch.Tensor, torch.Tensor]:
    """A set's fresh evaluation samples: the same dictionary as training, the sample stream reseeded to
    :data:`EVAL_SEED_OFFSET` + seed (no training batch is reused). Returns the data object, ``x [B, n]``, ``h [B, m]``."""
    data = SpikedDictionaryData(data_cfg, device=device)
    data.generator.manual_seed(EVAL_SEED_OFFSET + data_cfg.seed)
    x, h = data.sample(samples)
    return data, x, h


def step0_sae(cfg: Any, spec: Study, mean: torch.Tensor, device: torch.device | str | None = None) -> SAE:
    """The SAE of ``cfg`` at step 0 as its study starts it (its seed fixes the initialisation; b_dec at the mean
    for a ``biasmean`` study)."""
    sae = SAE(cfg, device=device)
    if spec.b_dec_init == "mean":
        sae.set_b_dec_(mean)
    return sae


def part_folder(work: Path, part: int, workers: int) -> Path:
    """Where part ``part`` of ``workers`` keeps its sweep and its invocations (``<work>/part<i>of<W>``)."""
    return work / f"part{part}of{workers}"


def _check_layout(work: Path, workers: int) -> None:
    """A set keeps the layout it was started with: one process (``sweep/``) or W parts (``part<i>of<W>/``)."""
    single = (work / "sweep" / "sweep.json").is_file()
    parts = sorted({p.name.split("of")[1] for p in work.glob("part*of*") if (p / "sweep" / "sweep.json").is_file()})
    if workers == 1 and parts:
        raise ValueError(f"{work} was started with --workers {parts[0]}; continue it with the same --workers")
    if workers > 1 and single:
        raise ValueError(f"{work} was started in one process; continue it without --workers (or with --workers 1)")
    if workers > 1 and parts and parts != [str(workers)]:
        raise ValueError(f"{work} was started with --workers {parts[0]}; continue it with the same --workers")


def _run_parts(work: Path, argv: Sequence[str], workers: int) -> None:
    """Start ``workers`` one-thread processes, part i training every ``workers``-th SAE from the i-th, and wait for
    all; each logs to its part folder. Raises ``RuntimeError`` naming a part that failed, with its log's tail."""
    repo = str(CHECKOUT)  # the parts import this very checkout's aen_lib
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    procs = []
    try:
        for i in range(workers):
            folder = part_folder(work, i, workers)
            folder.mkdir(parents=True, exist_ok=True)
            log = (folder / "log.txt").open("a")
            procs.append((i, folder, subprocess.Popen(
                [sys.executable, "-m", "aen_lib.results.reference", *argv, "--part", f"{i}/{workers}"],
                stdout=log, stderr=subprocess.STDOUT, env=env)))
        for i, folder, proc in procs:
            if proc.wait() != 0:
                tail = "".join((folder / "log.txt").read_text().splitlines(keepends=True)[-5:])
                raise RuntimeError(f"part {i} of {workers} failed (exit {proc.returncode}); its log "
                                   f"{folder / 'log.txt'} ends:\n{tail}")
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.terminate()


def run_spiked(rho: float, seed: int, *, out_root: Path, work_root: Path, device: str = "cpu", steps: int | None = None,
               command: str = "", progress: bool = True, study: str = "paper", workers: int = 1,
               part: tuple[int, int] | None = None, argv: Sequence[str] = ()) -> Path | None:
    """Train (or continue) the set and, once complete, write its records under ``out_root/<set>/``.

    ``workers > 1`` splits the SAEs over that many one-thread processes (part i trains every W-th SAE from the i-th
    on its own copy of the data stream, so each SAE sees the batches it would see in one process), which uses W cores
    where one process's threads scale poorly on these small matrices; ``argv`` is the command line the parts are
    started with (``part`` is set in them). A set keeps the layout it was started with. Returns the set folder when
    the records were written, None when the set is already there (nothing is overwritten: delete the folder to
    regenerate it) or when this call was one part."""
    spec = _study(study)
    name = set_name(rho, seed, device, study) + (f"_steps{steps}" if steps else "")
    out = out_root / name
    if (out / "provenance.json").exists():
        return None
    dev = torch.device(device)
    sae_base = dict(SPIKED_PAPER_SAE)
    grid = spec.grid_at(rho)
    configs = expand_grid(sae_base, grid, seeds=[seed])
    tcfg = TrainConfig(**{**SPIKED_PAPER_TRAIN, **({"steps": steps} if steps else {})}, progress=progress, seed=seed)
    data_cfg = SpikedDictionaryConfig(n=256, m=1024, k=16, rho=rho, seed=seed)
    train_data = SpikedDictionaryData(data_cfg, device=dev)
    mean = train_data.population_mean()  # exact E[x] of this dictionary (no sampling noise)
    source = CentredSource(train_data, mean) if spec.inputs == "centred" else train_data
    work = work_root / name
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer (processes, one thread each)")
    b_dec = mean if spec.b_dec_init == "mean" else None
    if part is not None:  # one part of a split set: train its SAEs, leave the records to the parent
        i, w = part
        folder = part_folder(work, i, w)
        mine = configs[i::w]
        with RunLock(folder):
            ledger = InvocationLedger(folder / "invocations", sweep_dir=folder / "sweep", device=dev)
            with ledger:
                ledger.record["part"] = f"{i}/{w}"
                train_sweep(mine, source, tcfg, device=dev, checkpoint_dir=folder / "sweep", b_dec_init=b_dec)
        return None
    _check_layout(work, workers)
    with RunLock(work):  # one process per set: a second one fails at once, naming the first
        if workers == 1:
            ledger = InvocationLedger(work / "invocations", sweep_dir=work / "sweep", device=dev)
            with ledger:
                result = train_sweep(configs, source, tcfg, device=dev, checkpoint_dir=work / "sweep",
                                     b_dec_init=b_dec)
            calls = ledger.settle(total=len(configs) * tcfg.steps)
            members = result.members
            wall_s = sum(c["seconds"] for c in calls)
        else:
            _run_parts(work, argv, workers)
            members, calls, part_seconds = [None] * len(configs), [], []
            for i in range(workers):
                folder = part_folder(work, i, workers)
                idx = list(range(len(configs)))[i::workers]
                # every chunk is finished: this loads the trained SAEs (done.pt) without training
                res = train_sweep([configs[j] for j in idx], SpikedDictionaryData(data_cfg, device=dev), tcfg,
                                  device=dev, checkpoint_dir=folder / "sweep", b_dec_init=b_dec)
                for j, m in zip(idx, res.members):
                    members[j] = m
                part_calls = settled_invocations(folder / "invocations", len(idx) * tcfg.steps)
                calls += [{**c, "part": f"{i}/{workers}"} for c in part_calls]
                part_seconds.append(sum(c["seconds"] for c in part_calls))
            wall_s = max(part_seconds)  # the parts ran side by side
    total_s = wall_s
    total_steps = sum(c["member_steps"] for c in calls)
    cpu = [c for c in calls if c.get("cpu_seconds")]
    provenance = {
        "set": name,
        "command": command,
        "study": study,
        "protocol": {"sae": sae_base, "grid": grid, "train": tcfg.to_dict(), "data": data_cfg.to_dict(),
                     "b_dec_init": spec.b_dec_init, "inputs": spec.inputs},
        "members": len(configs),
        "workers": workers,
        "invocations": calls,
        "wall_seconds": round(total_s, 1),
        "member_steps": total_steps,
        "member_steps_per_s": round(total_steps / total_s, 2) if total_s > 0 else None,
        # CPU time is not inflated by pauses or by other jobs' waiting: the fairer speed on a shared machine
        "member_steps_per_cpu_s": (round(sum(c["member_steps"] for c in cpu) / sum(c["cpu_seconds"] for c in cpu), 2)
                                   if cpu else None),
    }
    eval_data, x_eval, h_eval = eval_samples(data_cfg, device=dev)  # recovery on fresh samples
    # the outlier measures (Simon, Adams & Zou 2026) of the inputs as the SAEs saw them
    inputs = {"outlier_severity_raw": outlier_severity(x_eval), "input_mean_norm": float(mean.norm())}
    if spec.inputs == "centred":
        x_eval = x_eval - mean
    inputs["outlier_severity"] = outlier_severity(x_eval)
    provenance["inputs"] = inputs
    tmp_files = {}
    for m in members:
        recovery = recovery_metrics(m.sae.to(dev).eval(), eval_data.dictionary, x_eval, h_eval)
        recovery.update(latent_reach(m.sae, x_eval))  # dead on fresh samples, and out of every sample's reach
        init = step0_sae(m.cfg, spec, mean, device=dev)  # which latents the data could reach at the start
        recovery.update({f"init_{k.removeprefix('eval_')}": v for k, v in latent_reach(init, x_eval).items()})
        rec = member_record(m.cfg, m.final, m.history, train_config=tcfg.replace(progress=False), data=data_cfg,
                            extra={"set": name, "skipped_steps": m.skipped_steps, **recovery,
                                   "eval_samples": EVAL_SAMPLES, "eval_seed": EVAL_SEED_OFFSET + seed,
                                   "firing_threshold": DEAD_THRESHOLD})
        tmp_files[f"{variant_id(m.cfg)}.json"] = rec
    out.mkdir(parents=True, exist_ok=False)
    for fname, rec in tmp_files.items():
        write_result(out / fname, "sae", rec)
    notes = work / "notes.md"  # what a person noted about the run (e.g. an invocation reconstructed by hand)
    if notes.is_file():
        atomic_write(out / "notes.md", lambda p: p.write_text(notes.read_text()))
    write_result(out / "provenance.json", "provenance", provenance)
    return out


MECHANISM_FILE = "mechanism.json"
"""Per set, the mechanism measures of every trained SAE (:mod:`aen_lib.theory.mechanism`), keyed like the record files."""


def _set_protocol(prov: dict[str, Any]) -> tuple[list[Any], TrainConfig, SpikedDictionaryConfig]:
    """The configs, training config and data config of a committed set, rebuilt from its own provenance (not from
    today's constants, which may have changed since it was trained)."""
    proto = prov["protocol"]
    data_cfg = SpikedDictionaryConfig.from_dict(proto["data"])
    tcfg = TrainConfig.from_dict({**proto["train"], "progress": False})
    configs = expand_grid(dict(proto["sae"]), proto["grid"], seeds=[data_cfg.seed])
    return configs, tcfg, data_cfg


def trained_members(folder: str | Path, work_root: str | Path = DEFAULT_WORK, device: str = "cpu") -> list[Any]:
    """The trained SAEs of a committed set, loaded from its finished checkpoints (``done.pt``) in ``work_root``, in
    the order of its configs (each has ``.cfg`` and ``.sae``).

    Checkpoints live outside the repository and stay on the machine that trained the set: where they are missing or
    unfinished this raises ``FileNotFoundError`` naming the command that trains the set again (it never trains)."""
    folder = Path(folder)
    prov = read_result(folder / "provenance.json", "provenance")
    configs, tcfg, data_cfg = _set_protocol(prov)
    study, workers = prov.get("study", "paper"), int(prov.get("workers", 1))
    work = Path(work_root) / prov["set"]
    layout = [(work / "sweep", list(range(len(configs))))] if workers == 1 else \
        [(part_folder(work, i, workers) / "sweep", list(range(len(configs)))[i::workers]) for i in range(workers)]
    for sweep_dir, idx in layout:
        if checkpointed_member_steps(sweep_dir) != len(idx) * tcfg.steps:
            raise FileNotFoundError(
                f"the trained SAEs of {prov['set']} are not (all) in {sweep_dir}: checkpoints stay on the machine that "
                f"trained the set. Train it again with `{prov['command'].replace(' --no-progress', '')}` "
                f"(--work {work_root}); the records it writes must equal the committed ones")
    spec = _study(study)
    dev = torch.device(device)
    mean = SpikedDictionaryData(data_cfg, device=dev).population_mean()
    b_dec = mean if spec.b_dec_init == "mean" else None
    members: list[Any] = [None] * len(configs)
    for sweep_dir, idx in layout:  # every chunk is finished: this loads the SAEs without training
        res = train_sweep([configs[j] for j in idx], SpikedDictionaryData(data_cfg, device=dev), tcfg, device=dev,
                          checkpoint_dir=sweep_dir, b_dec_init=b_dec)
        for j, m in zip(idx, res.members):
            members[j] = m
    want = sorted(p.stem for p in folder.glob("*-*.json"))
    have = sorted(variant_id(m.cfg) for m in members)
    if want != have:
        raise ValueError(f"{folder}: the checkpoints in {work} hold SAEs {have}, the records are {want}")
    return members


def mechanism_set(folder: str | Path, *, work_root: str | Path = DEFAULT_WORK, device: str = "cpu",
                  samples: int = MECHANISM_SAMPLES, members: Sequence[Any] | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Write ``<set>/mechanism.json``: :func:`aen_lib.theory.mechanism.mechanism_measures` of every SAE of a committed set
    on ``samples`` fresh samples of its evaluation stream (centred for a centred study), with the commit that
    computed them. ``members`` are the trained SAEs when the caller has them (otherwise :func:`trained_members`).
    An existing file is kept and returned (delete it to recompute)."""
    folder = Path(folder)
    path = folder / MECHANISM_FILE
    if path.is_file():
        return read_result(path, "mechanism")
    prov = read_result(folder / "provenance.json", "provenance")
    _, _, data_cfg = _set_protocol(prov)
    started = time.time()
    members = list(members) if members is not None else trained_members(folder, work_root, device)
    dev = torch.device(device)
    _, x, _ = eval_samples(data_cfg, samples=samples, device=dev)
    spec = _study(prov.get("study", "paper"))
    if spec.inputs == "centred":
        x = x - SpikedDictionaryData(data_cfg, device=dev).population_mean()
    commit, dirty = _git_state(CHECKOUT)
    out: dict[str, Any] = {"set": prov["set"], "commit": commit,
                           "uncommitted": dirty, "samples": samples, "eval_seed": EVAL_SEED_OFFSET + data_cfg.seed,
                           "inputs": spec.inputs, "torch_threads": torch.get_num_threads(), "members": {}}
    for i, m in enumerate(members):
        out["members"][variant_id(m.cfg)] = mechanism_measures(m.sae.to(dev).eval(), x)
        if progress:
            print(f"  {prov['set']}: {i + 1}/{len(members)} {variant_id(m.cfg)}", flush=True)
    out["seconds"] = round(time.time() - started, 1)
    return read_result(write_result(path, "mechanism", out), "mechanism")


PROVENANCE_KEYS = ("record_version", "set", "command", "protocol", "members", "invocations", "wall_seconds",
                   "member_steps", "member_steps_per_s")
INVOCATION_KEYS = ("started", "ended", "commit", "torch", "device", "cpu", "seconds", "member_steps")


def check_set(folder: str | Path) -> dict[str, Any]:
    """Check that a committed reference set is complete and well-formed; return its provenance.

    Raises ``ValueError`` naming the first problem: missing provenance fields, a record count that is not the
    provenance's member count, a record that is not a results record, a member whose history does not reach the
    protocol's last step, or member-steps that do not add up."""
    from .records import load_records

    folder = Path(folder)
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        raise ValueError(f"{folder}: no provenance.json; a set is committed only when complete")
    try:
        prov = read_result(prov_path, "provenance")
    except json.JSONDecodeError as e:
        raise ValueError(f"{prov_path} is not valid JSON ({e})") from e
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ValueError(f"{prov_path} lacks {missing}")
    if not prov["invocations"]:
        raise ValueError(f"{prov_path}: no invocation recorded")
    for i, call in enumerate(prov["invocations"]):
        lacking = [k for k in INVOCATION_KEYS if k not in call]
        if lacking:
            raise ValueError(f"{prov_path}: invocation {i} lacks {lacking}")
    records = load_records(folder, pattern="*-*.json")  # <method>-<hash>.json; provenance.json is not a record
    if len(records) != prov["members"]:
        raise ValueError(f"{folder}: {len(records)} records but provenance.json says {prov['members']} members")
    steps = prov["protocol"]["train"]["steps"]
    for r in records:
        hist = r.get("history") or []
        if not hist or hist[-1].get("step") != steps:
            raise ValueError(f"{folder}: record {r['variant']} has a history that does not reach step {steps}")
        for key in ("l0", "ev", "dead_pct", "dead_pct_window"):
            if key not in r["final"]:
                raise ValueError(f"{folder}: record {r['variant']} lacks final[{key!r}]")
    mech = folder / MECHANISM_FILE
    if mech.is_file():
        want = sorted(r["variant"] for r in records)
        got = sorted(read_result(mech, "mechanism")["members"])
        if got != want:
            raise ValueError(f"{mech}: measures for {got}, but the set's records are {want}; delete it and run "
                             f"`python -m aen_lib.results.reference mechanism {folder}` again")
    names = sorted(p.name for p in folder.glob("*-*.json"))
    for extra, stage, need in (("evaluation.json", "evaluate", ("firing_counts", "spliced", "dead_out_of_reach_heldout_pct")),
                               ("features.json", "features", ("sampled", "alive", "silent"))):  # aen_lib.results.lmref, after training
        path = folder / extra
        if not path.is_file():
            continue
        saes = read_result(path, "evaluation" if stage == "evaluate" else "features")["saes"]
        if sorted(saes) != names:
            raise ValueError(f"{path}: entries for {sorted(saes)}, but the set's records are {names}; move it away "
                             f"and run `python -m aen_lib.results.lmref {stage} {folder}` again")
        for name, entry in saes.items():
            lacking = [k for k in need if k not in entry]
            if lacking:
                raise ValueError(f"{path}: the entry of {name} lacks {lacking}")
            d_sae = read_result(folder / name, "sae")["sae_config"]["d_sae"]
            if "firing_counts" in entry and len(entry["firing_counts"]) != d_sae:
                raise ValueError(f"{path}: {name} has {len(entry['firing_counts'])} firing counts for {d_sae} latents")
    if sum(c["member_steps"] for c in prov["invocations"]) != prov["member_steps"]:
        raise ValueError(f"{prov_path}: member_steps does not add up over the invocations")
    if prov["member_steps"] != prov["members"] * steps:
        raise ValueError(f"{prov_path}: member_steps {prov['member_steps']} is not members × steps "
                         f"({prov['members']} × {steps})")
    return prov


def set_study(folder: str | Path) -> str:
    """The study of a committed set (sets written before studies existed are the paper's)."""
    return read_result(Path(folder) / "provenance.json", "provenance").get("study", "paper")


def committed_sets(root: str | Path, device: str | None = None, study: str | None = "paper",
                   kind: str = "spiked") -> list[Path]:
    """The set folders under ``root`` (each holds a provenance.json) of one study (default: the paper's grid;
    ``None``: every study); with ``device`` ("cpu", "cuda"), only the sets whose last invocation trained on that
    device type. ``kind`` is ``"spiked"`` (the synthetic sets, the default), ``"language_model"`` (the
    :mod:`aen_lib.results.lmref` sets, whose studies are :data:`aen_lib.results.lm_sets.LM_STUDIES`) or ``"any"``."""
    if kind not in ("spiked", "language_model", "any"):
        raise ValueError(f"kind={kind!r}; allowed: 'spiked', 'language_model', 'any'")
    root = Path(root)
    if study is not None and kind == "spiked":
        _study(study)
    sets = sorted(p.parent for p in root.glob("*/provenance.json")) if root.is_dir() else []
    if kind != "any":
        sets = [f for f in sets
                if read_result(f / "provenance.json", "provenance").get("kind", "spiked") == kind]
    if study is not None:
        sets = [f for f in sets if set_study(f) == study]
    if device is None:
        return sets
    want = torch.device(device).type
    return [f for f in sets
            if torch.device(read_result(f / "provenance.json", "provenance")["invocations"][-1]["device"]).type == want]


def _parts(work: Path) -> list[Path]:
    return sorted(p.parent.parent for p in work.glob("part*of*/sweep/sweep.json"))


def set_status(work: str | Path, *, now: dt.datetime | None = None, every_s: float = 60.0) -> dict[str, Any]:
    """:func:`_set_status` of a set, summed over its parts when it was split over processes (``--workers``)."""
    work = Path(work)
    parts = _parts(work)
    if not parts:
        return _set_status(work, now=now, every_s=every_s)
    each = [_set_status(p, now=now, every_s=every_s) for p in parts]
    rates = [s["member_steps_per_s"] for s in each]
    out = {"set": work.name, "member_steps": sum(s["member_steps"] for s in each),
           "total": sum(s["total"] for s in each), "members": sum(s["members"] for s in each),
           "steps": min(s["steps"] for s in each), "of_steps": each[0]["of_steps"],
           "invocations": max(s["invocations"] for s in each), "running": any(s["running"] for s in each),
           "threads": 1, "wall_hours": max(s["wall_hours"] for s in each),
           "member_steps_per_s": sum(rates) if all(r for r in rates) else None,
           "hours_left": max(s["hours_left"] for s in each) if all(s["hours_left"] is not None for s in each) else None,
           "parts": len(parts)}
    plan = json.loads((parts[0] / "sweep" / "sweep.json").read_text())
    out["continue"] = continue_command(work, plan) + f" --workers {len(parts)}"
    return out


def _set_status(work: str | Path, *, now: dt.datetime | None = None, every_s: float = 60.0) -> dict[str, Any]:
    """Where a set in its work folder stands: member-steps saved of the total, invocations, whether one is running
    (its heartbeat is younger than two beats), its saved member-steps per wall second, and the hours left at that
    speed (None when no invocation has saved progress yet)."""
    work = Path(work)
    manifest = work / "sweep" / "sweep.json"
    if not manifest.is_file():
        raise ValueError(f"{work} holds no started set (no sweep/sweep.json); start one with "
                         "python -m aen_lib.results.reference spiked --rho R")
    plan = json.loads(manifest.read_text())
    total = sum(len(c) for c in plan["chunks"]) * int(plan["train"]["steps"])
    held = checkpointed_member_steps(work / "sweep")
    calls = read_invocations(work / "invocations")
    now = now or dt.datetime.now(dt.timezone.utc)
    last = calls[-1] if calls else None
    running = bool(last and not last.get("completed") and last.get("ended")
                   and (now - dt.datetime.fromisoformat(last["ended"])).total_seconds() < 2 * every_s)
    # saved member-steps per wall second of the latest invocation that saved any (the running one, else the last
    # one before it; an invocation's saved progress runs to the next one's start)
    rate = None
    for call, gained in reversed(list(zip(calls, saved_member_steps(calls, held)))):
        seconds = call.get("seconds")
        if gained > 0 and seconds:
            rate = gained / seconds
            break
    return {"set": work.name, "member_steps": held, "total": total, "members": total // int(plan["train"]["steps"]),
            "steps": held // max(1, total // int(plan["train"]["steps"])), "of_steps": int(plan["train"]["steps"]),
            "invocations": len(calls), "running": running,
            "threads": last.get("torch_threads") if last else None,
            "wall_hours": sum(c.get("seconds") or 0 for c in calls) / 3600,
            "member_steps_per_s": rate, "hours_left": (total - held) / rate / 3600 if rate else None,
            "continue": continue_command(work, plan)}


def latest_metrics(work: str | Path) -> pd.DataFrame:
    """The last logged metrics of every SAE of a set in its work folder, finished or not: one row per SAE with its
    label, the step of its last log line, L0, EV, dead % and how full the current dead window was (the dead % of a
    window that is not full covers fewer steps than the paper's 10,000). Interim numbers, to watch a long run; the
    records written at the end are what the book reads."""
    from ..sae.config import SAEConfig

    work = Path(work)
    if _parts(work):  # a set split over processes: every part's SAEs
        return pd.concat([latest_metrics(p) for p in _parts(work)], ignore_index=True)
    manifest = work / "sweep" / "sweep.json"
    if not manifest.is_file():
        raise ValueError(f"{work} holds no started set (no sweep/sweep.json)")
    plan = json.loads(manifest.read_text())
    if not isinstance(plan.get("configs"), list):
        raise ValueError(f"{manifest} lists no configs; it was written by an older version (see the set's notes.md)")
    rows = []
    for c_i, idx in enumerate(plan["chunks"]):
        last: dict[int, dict[str, Any]] = {}
        log = work / "sweep" / f"chunk_{c_i:03d}" / "metrics.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            if line.strip():
                rec = json.loads(line)
                last[int(rec.get("member", 0))] = rec
        for j, i in enumerate(idx):
            rec = last.get(j, {})
            rows.append({"SAE": SAEConfig.from_dict(plan["configs"][i]).label, "step": rec.get("step"),
                         "L0": rec.get("l0"), "EV": rec.get("ev"), "dead %": rec.get("dead_pct"),
                         "dead window full": rec.get("dead_window_fill")})
    return pd.DataFrame(rows)


def provenance_table(folders: Sequence[str | Path]) -> str:
    """A Markdown table of the committed sets' provenance (set, ρ, hardware, invocations, dates, wall and CPU hours,
    member-steps/s), as the README shows it: the README's numbers about the reference runs are this function's."""
    _, prov = set_frames(folders)
    lines = ["| set | ρ | seed | SAEs | hardware | invocations | started (UTC) | ended (UTC) | wall h | CPU h (logged) "
             "| member-steps/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in prov.to_dict("records"):
        cpu_h = r["CPU hours (logged)"]
        lines.append(f"| `{r['set']}` | {r['rho']:g} | {r['seed']} | {r['SAEs']} | {r['hardware']} ({r['device']}) "
                     f"| {r['invocations']} | {r['started'].replace('T', ' ')} | {r['ended'].replace('T', ' ')} "
                     f"| {r['wall hours']:.1f} | {'-' if pd.isna(cpu_h) else f'{cpu_h:.1f}'} "
                     f"| {r['member-steps/s']:.1f} |")
    return "\n".join(lines)


def continue_command(work: Path, plan: dict[str, Any]) -> str:
    """The command that continues the set in ``work`` (from its manifest: ρ, seed, device, a smoke run's steps; a
    language-model set, ``lm_...``, is continued by :mod:`aen_lib.results.lmref`)."""
    if work.name.startswith("lm_"):
        import re

        m = re.fullmatch(r"lm_smollm2_(.+?)_seed(\d+)(?:_steps(\d+))?(?:_windows(\d+))?", work.name)
        if m is None:
            return f"(unknown language-model set {work.name}; see python -m aen_lib.results.lmref train --help)"
        words = ["python -m aen_lib.results.lmref train", f"--study {m.group(1)}", f"--seed {m.group(2)}"]
        if m.group(3):
            words.append(f"--steps {m.group(3)}")
        if work.parent != DEFAULT_WORK:
            words.append(f"--work {work.parent}")
        return " ".join(words)
    data = plan["data"] if isinstance(plan.get("data"), dict) else {}
    if isinstance(data.get("source"), dict):  # a wrapped source (e.g. centred inputs) names the spiked config inside
        data = data["source"]
    study = work.name.removeprefix("spiked_").split("_rho")[0]
    study = study if study in STUDIES else "paper"
    words = ["python -m aen_lib.results.reference spiked", f"--rho {data.get('rho', '?')}", f"--seed {data.get('seed', '?')}"]
    if study != "paper":
        words.append(f"--study {study}")
    rest = work.name.removeprefix(set_name(float(data.get("rho", 0.0)), int(data.get("seed", 0)), study=study))
    device = rest.split("_")[1] if rest.startswith("_") and not rest.startswith("_steps") else ""
    if device:
        words.append(f"--device {device}")  # off-CPU sets carry the device type in their name
    if "_steps" in work.name:
        words.append(f"--steps {plan['train']['steps']}")
    if work.parent != DEFAULT_WORK:
        words.append(f"--work {work.parent}")
    return " ".join(words)


REPOSITORY_SETS = CHECKOUT / "reference"
"""Where the repository keeps its committed sets (a clone's ``reference/`` folder)."""


def set_frames(folders: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed sets as two tables: every trained SAE (:func:`aen_lib.results.records.records_frame` with ``rho``,
    one row per record, its set's name in ``set``) and every set's provenance (one row per set: ρ, seed, SAEs,
    device, CPU/GPU model, invocations, commits, first start and last end, wall and CPU hours, member-steps/s).
    Each set is checked first (:func:`check_set`)."""
    from .records import load_records, records_frame

    runs, provs = [], []
    for folder in folders:
        prov = check_set(folder)
        frame = records_frame(load_records(folder, pattern="*-*.json")).rename(columns={"data_rho": "rho"})
        if "firing_threshold" not in frame:  # records written before one threshold: held-out L0/support/reach at 1e-6
            frame["firing_threshold"] = LEGACY_RECOVERY_THRESHOLD
        runs.append(frame.assign(set=prov["set"], study=prov.get("study", "paper")))
        calls = prov["invocations"]
        cpu_s = [c["cpu_seconds"] for c in calls if c.get("cpu_seconds")]
        provs.append({
            "set": prov["set"], "study": prov.get("study", "paper"), "rho": prov["protocol"]["data"]["rho"], "seed": prov["protocol"]["data"]["seed"],
            "SAEs": prov["members"], "device": calls[-1]["device"], "hardware": calls[-1].get("gpu") or calls[-1]["cpu"],
            "invocations": len(calls), "commits": ", ".join(dict.fromkeys(_short_commit(c["commit"]) for c in calls)),
            "started": calls[0]["started"][:16], "ended": calls[-1]["ended"][:16],
            "wall hours": prov["wall_seconds"] / 3600, "CPU hours (logged)": sum(cpu_s) / 3600 if cpu_s else None,
            "member-steps/s": prov["member_steps_per_s"], "member-steps per CPU s": prov.get("member_steps_per_cpu_s"),
        })
    if not runs:
        raise ValueError("set_frames got no set folders; see committed_sets")
    twice = pd.DataFrame(provs).groupby(["study", "rho", "seed"])["set"].agg(list)
    twice = twice[twice.map(len) > 1]
    if len(twice):
        raise ValueError(f"several sets share a (study, ρ, seed): {twice.to_dict()}; pass one of each (e.g. only the CPU sets) "
                         "so that their SAEs are not averaged as if they were seeds")
    return pd.concat(runs, ignore_index=True), pd.DataFrame(provs)


def initial_reach(folder: str | Path) -> pd.DataFrame:
    """For every SAE of a committed set, which latents the data could reach at step 0: the SAE rebuilt from its
    config (its seed fixes the initialisation), b_dec set as the study sets it, on the set's
    :data:`EVAL_SAMPLES` fresh evaluation samples (centred for a centred study). One row per variant with
    ``init_dead_pct`` and ``init_negative_pct`` (:func:`aen_lib.evaluation.metrics.latent_reach`). Sets written before the
    records carried these fields get them here; for later sets the two agree with the records."""
    from ..sae.config import SAEConfig
    from .records import load_records

    prov = check_set(folder)
    spec = _study(prov.get("study", "paper"))
    data_cfg = SpikedDictionaryConfig.from_dict(prov["protocol"]["data"])
    data, x_eval, _ = eval_samples(data_cfg)
    mean = data.population_mean()
    if spec.inputs == "centred":
        x_eval = x_eval - mean
    rows = []
    for rec in load_records(folder, pattern="*-*.json"):
        reach = latent_reach(step0_sae(SAEConfig.from_dict(rec["sae_config"]), spec, mean), x_eval)
        rows.append({"variant": rec["variant"], "init_dead_pct": reach["eval_dead_pct"],
                     "init_negative_pct": reach["eval_negative_pct"]})
    return pd.DataFrame(rows)


def outlier_frame(root: str | Path, rho: float, seed: int = 0, device: str = "cpu",
                  steps: int | None = None) -> pd.DataFrame:
    """The SAEs of the outlier study at one (ρ, seed): the paper set's SAEs (b_dec at 0) and the ``biasmean`` set's
    (b_dec at the mean) side by side, one row per SAE (:func:`set_frames` columns, ``study``, and
    :func:`initial_reach`'s ``init_dead_pct`` / ``init_negative_pct``). Only the paper set's SAEs whose config the
    biasmean set also trained are kept, so that every row has its twin. Raises ``ValueError`` naming the set that is
    not committed. ``steps`` reads smoke sets (``..._steps<N>``)."""
    root = Path(root)
    folders = []
    for study in ("paper", "biasmean"):
        folder = root / (set_name(rho, seed, device, study) + (f"_steps{steps}" if steps else ""))
        if not (folder / "provenance.json").is_file():
            raise ValueError(f"the outlier study at ρ = {rho:g}, seed {seed} needs the set {folder.name} under {root}; "
                             f"train it with python -m aen_lib.results.reference spiked --study {study} --rho {rho:g} "
                             f"--seed {seed}")
        folders.append(folder)
    runs, _ = set_frames(folders)
    reach = pd.concat([initial_reach(f).assign(set=f.name) for f in folders], ignore_index=True)
    runs = runs.drop(columns=[c for c in ("init_dead_pct", "init_negative_pct") if c in runs.columns])
    runs = runs.merge(reach, on=["set", "variant"], how="left")
    twins = set(runs.loc[runs["study"] == "biasmean", "variant"])
    return runs[runs["variant"].isin(twins)].reset_index(drop=True)


def outlier_at_init(rhos: Sequence[float], *, seed: int = 0, k: int = 32, samples: int = EVAL_SAMPLES,
                    n: int = 256, m: int = 1024, data_k: int = 16) -> pd.DataFrame:
    """The outlier measures at step 0, before any training, for each ρ of the spiked-dictionary protocol (paper size
    by default): the outlier severity ||mean|| / ||std|| of the inputs, and for one SAE initialised as every SAE of
    seed ``seed`` is (uniform encoder, b_dec 0) the % of latents out of reach (pre-activation ≤ 0 on every one of
    ``samples`` fresh samples) and, for TopK with ``k``, the % never among the k largest (dead at step 0); then the same
    with b_dec started at the data mean. One row per ρ."""
    from ..sae.config import SAEConfig

    rows = []
    for rho in rhos:
        data, x, _ = eval_samples(SpikedDictionaryConfig(n=n, m=m, k=data_k, rho=float(rho), seed=seed), samples)
        mean = data.population_mean()
        sae = SAE(SAEConfig(n, m, architecture="topk", k=k, seed=seed))
        zero = latent_reach(sae, x)
        sae.set_b_dec_(mean)
        at_mean = latent_reach(sae, x)
        rows.append({"rho": float(rho), "outlier_severity": outlier_severity(x), "mean_norm": float(mean.norm()),
                     "out_of_reach_pct": zero["eval_negative_pct"], "topk_dead_pct": zero["eval_dead_pct"],
                     "out_of_reach_pct_at_mean": at_mean["eval_negative_pct"],
                     "topk_dead_pct_at_mean": at_mean["eval_dead_pct"]})
    return pd.DataFrame(rows)


def bias_centring_equivalence(*, rho: float = 0.9, steps: int = 300, n: int = 64, m: int = 256, k: int = 4,
                              seed: int = 0) -> pd.DataFrame:
    """Train the same small SAEs (TopK, ReLU+ℓ1, AEN) three ways on one spiked stream: b_dec started at the data mean,
    b_dec at 0 on mean-centred inputs, and b_dec at 0 on the raw inputs (the paper). Returns one row per SAE with the
    largest difference over the logged history between the first two (``max_diff_<metric>``) and between the first
    and the third (``max_diff_raw_<metric>``), for L0, EV, MSE and dead %. With a tied pre-encoder bias the first
    two follow one path (their b_dec differ by the mean throughout), so their differences are rounding; the third
    shows the change is not a no-op."""
    from ..sae.config import SAEConfig

    cfgs = [SAEConfig(n, m, architecture="topk", k=k, seed=seed),
            SAEConfig(n, m, architecture="relu_l1", l1=0.01, seed=seed),
            SAEConfig(n, m, architecture="aen", l1=0.01, l2=0.001, warmup_steps=steps // 5, ramp_steps=steps // 25,
                      seed=seed)]
    tcfg = TrainConfig(steps=steps, batch_size=64, log_every=max(1, steps // 10), dead_window_steps=max(1, steps // 5),
                       progress=False, seed=seed)
    dcfg = SpikedDictionaryConfig(n=n, m=m, k=k, rho=rho, seed=seed)
    mean = SpikedDictionaryData(dcfg).population_mean()
    runs = {"mean": train_sweep(cfgs, SpikedDictionaryData(dcfg), tcfg, b_dec_init=mean),
            "centred": train_sweep(cfgs, CentredSource(SpikedDictionaryData(dcfg), mean), tcfg),
            "raw": train_sweep(cfgs, SpikedDictionaryData(dcfg), tcfg)}
    rows = []
    for j, c in enumerate(cfgs):
        hist = {name: pd.DataFrame(r.members[j].history) for name, r in runs.items()}
        row: dict[str, Any] = {"SAE": c.label}
        for metric in ("l0", "ev", "mse", "dead_pct"):
            row[f"max_diff_{metric}"] = float((hist["mean"][metric] - hist["centred"][metric]).abs().max())
            row[f"max_diff_raw_{metric}"] = float((hist["mean"][metric] - hist["raw"][metric]).abs().max())
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_frame(root: str | Path, rho: float, device: str = "cpu") -> pd.DataFrame:
    """One row per trained SAE of :data:`SEEDS_GRID` at one ρ and every committed seed (seed 0 from the paper set,
    restricted to the seeds grid's variants so that every seed is judged on the same SAEs; further seeds from the
    ``seeds`` sets), in :func:`set_frames`'s columns. Raises ``ValueError`` when no seeds set is committed at this ρ."""
    root = Path(root)
    folders = [f for f in committed_sets(root, device=device, study="paper") + committed_sets(root, device=device,
                                                                                               study="seeds")
               if read_result(f / "provenance.json", "provenance")["protocol"]["data"]["rho"] == rho]
    if not any(set_study(f) == "seeds" for f in folders):
        raise ValueError(f"no seeds set is committed at ρ = {rho:g} under {root}; train one with "
                         f"python -m aen_lib.results.reference spiked --study seeds --rho {rho:g} --seed 1")
    runs, _ = set_frames(folders)
    keep = set(runs.loc[runs["study"] == "seeds", "variant"])
    return runs[runs["variant"].isin(keep)].reset_index(drop=True)


def seed_ranges(root: str | Path, rho: float, device: str = "cpu",
                metrics: Sequence[str] = ("l0", "dead_pct_window", "eval_dead_pct", "ev")) -> pd.DataFrame:
    """The SAEs of :data:`SEEDS_GRID` at one ρ over every committed seed (:func:`seeds_frame`). One row per SAE
    (variant) with ``seeds`` (how many), and each metric's ``<m>_min``, ``<m>_max`` and ``<m>_mean`` over seeds.
    Raises ``ValueError`` when no seeds set is committed at this ρ."""
    runs = seeds_frame(root, rho, device)
    agg = runs.groupby(["variant", "method", "label"])[list(metrics)].agg(["min", "max", "mean"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["seeds"] = runs.groupby(["variant", "method", "label"])["seed"].nunique()
    return agg.reset_index()


def studies_table() -> str:
    """A Markdown table of every study (name, SAEs per set, ρ it is defined at, what it asks), as the README shows it."""
    lines = ["| study | SAEs per set | ρ | b_dec start | inputs | what it is for |", "|---|---|---|---|---|---|"]
    for name, st in STUDIES.items():
        grids = st.by_rho or {None: st.grid}
        sizes = sorted({len(expand_grid(dict(SPIKED_PAPER_SAE), g)) for g in grids.values() if g is not None})
        rhos = "any" if st.by_rho is None else ", ".join(f"{r:g}" for r in sorted(st.by_rho))
        lines.append(f"| `{name}` | {', '.join(map(str, sizes))} | {rhos} | {st.b_dec_init} | {st.inputs} | {st.doc} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aen_lib.results.reference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    sp = sub.add_parser("spiked", help="the paper's synthetic protocol at its size (n 256, m 1024, k 16, 50k steps)")
    sp.add_argument("--rho", type=float, required=True)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--study", default="paper", choices=sorted(STUDIES),
                    help="which grid and input treatment: " + "; ".join(f"{k}: {v.doc}" for k, v in STUDIES.items()))
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--workers", type=int, default=1,
                    help="split the SAEs over this many one-thread processes (a set keeps the number it started with)")
    sp.add_argument("--part", default=None, help=argparse.SUPPRESS)  # set by --workers in the processes it starts
    sp.add_argument("--steps", type=int, default=None, help="override the 50,000 steps (a smoke run; named apart)")
    sp.add_argument("--out", default="reference", help="where the records go (default: reference/)")
    sp.add_argument("--work", default=str(DEFAULT_WORK), help="checkpoints (outside the repository)")
    sp.add_argument("--no-progress", action="store_true")
    cp = sub.add_parser("check", help="check that every committed set under a folder is complete and well-formed")
    cp.add_argument("root", nargs="?", default="reference")
    st = sub.add_parser("status", help="how far each set in the work folder has come, and the time left")
    st.add_argument("--work", default=str(DEFAULT_WORK))
    st.add_argument("--members", action="store_true", help="also the last logged L0, EV and dead %% of every SAE")
    tp = sub.add_parser("table", help="the committed sets' provenance as the Markdown table the README shows")
    tp.add_argument("root", nargs="?", default="reference")
    mp = sub.add_parser("mechanism", help="write each set's mechanism.json (encoder Lipschitz constant, amortisation "
                        "gap, weights against firing) from its trained SAEs in the work folder")
    mp.add_argument("sets", nargs="+", help="set folders, e.g. reference/spiked_factorial_rho0_seed1")
    mp.add_argument("--work", default=str(DEFAULT_WORK))
    mp.add_argument("--samples", type=int, default=MECHANISM_SAMPLES)
    sub.add_parser("studies", help="every study (grid, treatment, purpose) as the Markdown table the README shows")
    args = ap.parse_args(argv)
    if args.kind == "studies":
        print(studies_table())
        return 0
    if args.kind == "status":
        folders = sorted({p.parent.parent for p in Path(args.work).glob("*/sweep/sweep.json")}
                         | {p.parent.parent.parent for p in Path(args.work).glob("*/part*of*/sweep/sweep.json")})
        for folder in folders:
            s = set_status(folder)
            speed = (f"{s['member_steps_per_s']:.1f} member-steps/s, about {s['hours_left']:.1f} h left at that speed"
                     if s["member_steps_per_s"] else "no speed yet")
            threads = s["threads"]
            state = f"running ({threads} thread{'' if threads == 1 else 's'})" if s["running"] else "not running"
            print(f"{s['set']}: step {s['steps']:,} of {s['of_steps']:,} ({100 * s['member_steps'] / s['total']:.0f}%), "
                  f"{s['members']} SAEs; {state}; {speed}; {s['invocations']} invocations, {s['wall_hours']:.1f} h so far")
            if not s["running"] and s["member_steps"] < s["total"]:
                print(f"  continue it with: {s['continue']}")
            if args.members:
                print(latest_metrics(folder).to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
        print(f"{len(folders)} set(s) under {args.work}")
        return 0
    if args.kind == "mechanism":
        for folder in args.sets:
            had = (Path(folder) / MECHANISM_FILE).is_file()
            res = mechanism_set(folder, work_root=args.work, samples=args.samples, progress=True)
            print(f"{folder}: {'kept the existing' if had else 'wrote'} {MECHANISM_FILE} "
                  f"({len(res['members'])} SAEs, {res['seconds']} s)")
        return 0
    if args.kind == "table":
        sets = committed_sets(args.root, study=None)
        if not sets:
            print(f"no committed set under {args.root}")
            return 1
        print(provenance_table(sets))
        return 0
    if args.kind == "check":
        sets = committed_sets(args.root, study=None, kind="any")
        for folder in sets:
            prov = check_set(folder)
            print(f"{folder.name}: {prov['members']} SAEs, {prov['wall_seconds'] / 3600:.1f} h, "
                  f"{prov['member_steps_per_s']} member-steps/s — ok")
        print(f"{len(sets)} set(s) checked under {args.root}")
        return 0
    words = list(argv if argv is not None else sys.argv[1:])
    for i, a in enumerate(words):  # the work folder is machine-specific: not part of the recorded command
        if a == "--work" and i + 1 < len(words):
            words[i + 1] = ""
    command = "python -m aen_lib.results.reference " + " ".join(shlex.quote(a) for a in words if a and a != "--work"
                                                        and not a.startswith("--work="))
    part = None
    if args.part is not None:
        i, w = (int(v) for v in args.part.split("/"))
        part = (i, w)
    argv_parts = list(argv if argv is not None else sys.argv[1:])
    out = run_spiked(args.rho, args.seed, out_root=Path(args.out), work_root=Path(args.work), device=args.device,
                     steps=args.steps, command=command, progress=not args.no_progress and args.workers == 1,
                     study=args.study, workers=args.workers, part=part, argv=argv_parts)
    if part is not None:
        print(f"part {part[0]} of {part[1]} trained")
        return 0
    print(f"records written to {out}" if out else "the set already exists; delete its folder to regenerate it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
