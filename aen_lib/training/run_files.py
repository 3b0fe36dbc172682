"""A training run's folder: the files the loop's progress goes to, kept out of the loop itself.

:class:`~aen_lib.training.train.Trainer` knows nothing about files: it hands its state and its log lines to a
:class:`RunFiles` (built by the runner, or from ``TrainConfig.checkpoint_dir`` by :func:`~aen_lib.training.train.train`
and the sweep), which writes ``checkpoint.pt`` (replaced atomically, so a kill leaves the last complete one) and
appends ``metrics.jsonl`` (one JSON line per logged member record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..store import atomic_write

__all__ = ["RunFiles", "write_checkpoint"]


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training state to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    atomic_write(path, lambda p: torch.save(state, p))
    return path


class RunFiles:
    """The files of one run in ``folder``: ``checkpoint.pt`` and ``metrics.jsonl``. What the trainer uses of it (a
    runner may inject any object with the same members): ``checkpoint`` (where the checkpoint goes), ``holds_run()``,
    ``start(resumed_lines)``, ``append_metrics(lines)`` and ``save_checkpoint(state)``."""

    CHECKPOINT = "checkpoint.pt"
    METRICS = "metrics.jsonl"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def checkpoint(self) -> Path:
        return self.folder / self.CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.folder / self.METRICS

    def holds_run(self) -> bool:
        """Whether the folder already holds a run (a checkpoint or logged metrics)."""
        return self.checkpoint.exists() or self.metrics.exists()

    def start(self, resumed_lines: Sequence[str] | None = None) -> None:
        """Make the folder; on a resume, replace ``metrics.jsonl`` by exactly the lines up to the checkpoint's step
        (a run killed after its last checkpoint had logged more)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if resumed_lines is not None:
            text = "".join(resumed_lines)
            atomic_write(self.metrics, lambda p: p.write_text(text))

    def append_metrics(self, lines: Sequence[str]) -> None:
        with self.metrics.open("a") as f:
            f.writelines(lines)

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        return write_checkpoint(self.checkpoint, state)

    def __repr__(self) -> str:
        return f"RunFiles({str(self.folder)!r})"
