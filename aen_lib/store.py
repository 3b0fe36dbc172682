"""Durable files: every file the project writes goes through :func:`atomic_write` (a temp file, then a rename), so
that an interrupted write never leaves half a file where a good one was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["CHECKOUT", "atomic_write"]

CHECKOUT = Path(__file__).resolve().parent.parent
"""The folder that holds the ``aen_lib`` package: the repository root of a source checkout (its ``reference/`` sets,
its git state for provenance)."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file via ``write(tmp_path)`` then rename over ``path``: a failed write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
