"""The Colab branch of every chapter's first cell, simulated: a fake ``google.colab`` module makes the cell take it.

The cell's pip commands are captured instead of run, checked (pip of the running interpreter, ``aen-lib`` from the
book's repository with extras that exist, never torch), and then replayed with ``pip install --dry-run`` against a copy
of this checkout instead of the repository URL, offline (``--no-index``): pip must accept the package and find every
dependency already satisfied by the running environment, so nothing (torch included) would be installed but aen-lib.
This is a simulation: it runs on this machine's Python and torch, not on a Colab runtime.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from aen_lib.book.notebook import REPO_URL

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(ROOT.glob("chapters/[0-9][0-9]_*.ipynb"))
REQ = re.compile(r"^aen-lib(\[(?P<extras>[a-z,]+)\])? @ git\+(?P<url>\S+)@(?P<ref>\S+)$")


def _colab_commands(chapter: Path) -> list[list[str]]:
    """Run cell 1 of ``chapter`` as Colab would and return the commands it asked subprocess.run for."""
    src = next(c for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "code").source
    calls: list[list[str]] = []

    def fake_run(cmd, *args, **kwargs):
        assert kwargs.get("check") is True, "a failed install must stop the chapter (check=True)"
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    fake_colab = types.ModuleType("google.colab")
    with mock.patch.dict(sys.modules, {"google.colab": fake_colab}), mock.patch.object(subprocess, "run", fake_run):
        exec(compile(src, f"{chapter.name}:cell1", "exec"), {"__name__": "__main__"})
    return calls


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.fixture(params=CHAPTERS, ids=[p.stem for p in CHAPTERS])
def chapter(request):
    return request.param


def test_colab_branch_installs_aen_lib_from_the_repository_and_never_torch(chapter):
    calls = _colab_commands(chapter)
    assert calls, "on Colab, cell 1 must install aen_lib"
    reqs = []
    for cmd in calls:
        assert cmd[:4] == [sys.executable, "-m", "pip", "install"], cmd
        assert not any("torch" in part for part in cmd), f"cell 1 must keep Colab's torch: {cmd}"
        reqs += [part for part in cmd[4:] if not part.startswith("-")]
    main = [r for r in reqs if r.startswith("aen-lib")]
    assert len(main) == 1, reqs
    m = REQ.match(main[0])
    assert m, main[0]
    assert m["url"] == REPO_URL and m["ref"] == "main"
    assert set(filter(None, (m["extras"] or "").split(","))) <= _extras()


def test_outside_colab_cell1_runs_nothing(chapter):
    src = next(c for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "code").source
    sys.modules.pop("google.colab", None)
    with mock.patch.object(subprocess, "run", side_effect=AssertionError("pip ran outside Colab")):
        exec(compile(src, "cell1", "exec"), {"__name__": "__main__"})


def _local_copy(tmp: Path) -> Path:
    """The files pip needs to build aen-lib, copied so that the build leaves nothing in the checkout."""
    dst = tmp / "aen-book"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "aen_lib", dst / "aen_lib", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.slow
def test_colab_install_commands_would_succeed_against_a_local_checkout(tmp_path):
    """Every distinct command of the chapters, with the repository URL replaced by a local copy, dry-run offline."""
    local = _local_copy(tmp_path)
    commands = {tuple(cmd) for ch in CHAPTERS for cmd in _colab_commands(ch)}
    assert commands
    for cmd in sorted(commands):
        args = [re.sub(rf"git\+{re.escape(REPO_URL)}@main", local.as_uri(), part) for part in cmd[4:]]
        args = [a for a in args if a != "-q"]
        dry = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
               "--disable-pip-version-check", *args]
        out = subprocess.run(dry, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, f"{' '.join(dry)}\n{out.stdout}\n{out.stderr}"
        would = re.search(r"^Would install (.*)$", out.stdout, re.MULTILINE)
        installed = would.group(1).split() if would else []
        assert all(p.startswith("aen-lib-") or p.startswith("aen_lib-") for p in installed), \
            f"the Colab cell would install more than aen-lib: {installed}"
        assert not any(p.startswith("torch-") for p in installed)
