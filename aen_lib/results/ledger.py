"""What every reference set records about how it was trained (book: README, reference results): the work folder's
default, the git state and machine facts, and the invocation ledger that notes each call's commit, device, wall and
CPU seconds and saved member-steps, for the synthetic sets (:mod:`.spiked_sets`) and the language-model sets
(:mod:`.lm_sets`) alike."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..store import CHECKOUT
from .records import read_result, write_result


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
