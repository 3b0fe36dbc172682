"""Durable files: every file the project writes goes through :func:`atomic_write` (a temp file, then a rename), so
that an interrupted write never leaves half a file where a good one was; every JSON result goes through
:func:`write_result` and :func:`read_result`, one versioned format whose kinds (:data:`RESULT_KINDS`) and meaning
:mod:`aen_lib.results.records` describes. The format lives in this leaf so that every stage (training's distributed
runs, the results' reference sets, the book's chapters) writes it without importing a later stage."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

__all__ = ["CHECKOUT", "atomic_write", "RECORD_VERSION", "RESULT_KINDS", "UNVERSIONED_BEFORE", "write_result",
           "read_result", "check_result", "read_json"]

CHECKOUT = Path(__file__).resolve().parent.parent
"""The folder that holds the ``aen_lib`` package: the repository root of a source checkout (its ``reference/`` sets,
its git state for provenance)."""


def shown_path(path: str | Path) -> str:
    """``path`` as a message or a page shows it: relative to the checkout when inside it (``reference/...``), so that
    nothing the book renders names the folders of the machine that built it; otherwise as given."""
    p = Path(path)
    if p.is_absolute() and p.resolve().is_relative_to(CHECKOUT):
        return str(p.resolve().relative_to(CHECKOUT))
    return str(path)


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


RECORD_VERSION = 1
"""The version of every stored result's format. Files written before the version was one field name it ``schema``
(a trained SAE's record) or, for the kinds in :data:`UNVERSIONED_BEFORE`, not at all; :func:`read_result` reads them
as version 1."""

RESULT_KINDS: dict[str, tuple[str, ...]] = {
    "sae": ("method", "variant", "seed", "sae_config", "final"),
    "provenance": ("set", "command", "protocol", "members", "invocations"),
    "mechanism": ("set", "members"),
    "evaluation": ("set", "saes"),
    "features": ("set", "saes"),
    "harvest": ("config", "windows", "rows", "checksum"),
    # a reference set's invocation ledger: one file per invocation (aen_lib.results.reference.InvocationLedger)
    "invocation": ("started", "ended", "member_steps_at_start"),
    # aen-train --out: final.json (aen_lib.cli); a distributed run: <out_dir>/<sae>/result.json
    "train_final": ("l0", "dead_pct", "ev", "skipped_steps", "seconds"),
    "distributed_result": ("name", "sae_cfg", "final", "steps", "world_size"),
    # a chapter's results (aen_lib.book.notebook.save_json): each chapter stores what it computed, so no common keys
    "chapter_summary": (),
    "chapter_claims": (),
    "chapter_manifest": (),
    "chapter_result": (),
}
"""Each kind of stored result and the keys a file of that kind must hold."""

UNVERSIONED_BEFORE = frozenset({"harvest", "invocation", "train_final", "distributed_result", "chapter_summary",
                                "chapter_claims", "chapter_manifest", "chapter_result"})
"""The kinds whose files were written without any version field before :func:`write_result` wrote them: such a
file reads as version 1. (For them ``schema`` is an ordinary key, not an old name of the version.)"""


def _version(rec: dict[str, Any], kind: str) -> Any:
    if "record_version" in rec:
        return rec["record_version"]
    return 1 if kind in UNVERSIONED_BEFORE else rec.get("schema")


def _looks_like(rec: dict[str, Any], kind: str) -> list[str]:
    """The other kinds (with keys of their own) whose keys ``rec`` holds: what the file probably is."""
    return [k for k, need in RESULT_KINDS.items() if k != kind and need and all(n in rec for n in need)]


def check_result(rec: Any, kind: str, where: str) -> dict[str, Any]:
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}; known: {sorted(RESULT_KINDS)}")
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a stored {kind} result must be a JSON object, got {type(rec).__name__}")
    version = _version(rec, kind)
    if version != RECORD_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION
        fix = ("it was written by a newer aen_lib: update aen_lib (git pull, then pip install -e .) to read it"
               if newer else "read it with the aen_lib version that wrote it")
        raise ValueError(f"{where}: record_version {version!r} is not supported (this library reads "
                         f"{RECORD_VERSION}); {fix}")
    missing = [k for k in RESULT_KINDS[kind] if k not in rec]
    if missing:
        other = _looks_like(rec, kind)
        hint = (f"it holds the keys of a {' or '.join(other)} record: read it as that kind" if other else
                f"the file is incomplete or not a {kind} record: delete it and run what writes it again")
        raise ValueError(f"{where}: this {kind} record lacks {missing}; {hint}")
    return rec


def write_result(path: str | Path, kind: str, body: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write one stored result of ``kind`` atomically as JSON (``record_version`` first, NaN kept as ``NaN``).

    Refuses to replace an existing file unless ``overwrite``: what is saved is not lost by a second run.
    """
    path = Path(path)
    if not isinstance(body, Mapping):
        raise ValueError(f"{path}: a stored {kind} result must be a mapping (a JSON object), got "
                         f"{type(body).__name__}")
    dropped = ("record_version",) if kind in UNVERSIONED_BEFORE else ("record_version", "schema")
    rec = check_result({"record_version": RECORD_VERSION, **{k: v for k, v in body.items() if k not in dropped}},
                        kind, str(path))
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; delete it to write it again (nothing was overwritten)")
    text = json.dumps(rec, indent=1, allow_nan=True, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def read_json(path: str | Path, *, missing: str, corrupt: str) -> Any:
    """The parsed JSON of ``path``; ``FileNotFoundError(missing)`` when there is no file, and a ``ValueError`` naming
    the file and the parse error, followed by ``corrupt`` (what to do), when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {corrupt}") from e


def read_result(path: str | Path, kind: str) -> dict[str, Any]:
    """Read one stored result of ``kind``, checking its version and keys (errors name the file)."""
    rec = read_json(path, missing=f"{path} does not exist (expected a {kind} record)", corrupt="the file is corrupt")
    return check_result(rec, kind, str(path))
