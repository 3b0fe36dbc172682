"""The library's layout: subpackages along the pipeline, each importing only the ones below it (README, Library
layout), subpackage ``__init__`` files that import nothing, and a docstring opening every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aen_lib

ROOT = Path(aen_lib.__file__).parent
ORDER = ["data", "evaluation", "sae", "theory", "training", "results", "book"]
"""Bottom to top: a package may import any package before it in this list (theory and training are side by side:
neither imports the other)."""
SIDE_BY_SIDE = {frozenset({"theory", "training"})}
LEAVES = {"errors", "palette", "store"}
ENTRY_POINTS = {"cli", "reference", "lmref"}
"""Top-level commands: ``aen-train``, and the two reference-set commands under the names committed provenance records."""


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> tuple[str, list[str]]:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), parts
    return ".".join(parts), parts[:-1]


def imports_of(path: Path) -> set[str]:
    """Every ``aen_lib`` module or name ``path`` imports, as absolute dotted names (relative imports resolved)."""
    _, package = _dotted(path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "aen_lib":
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "aen_lib")
    return out


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports between subpackages that go up (or sideways between theory and training) the :data:`ORDER`."""
    bad = []
    for src, targets in edges.items():
        a = src.split(".")[1] if src.count(".") else "aen_lib"
        for t in targets:
            b = t.split(".")[1] if t.count(".") else "aen_lib"
            if a not in ORDER or b not in ORDER or a == b:
                continue
            if ORDER.index(b) > ORDER.index(a) or frozenset({a, b}) in SIDE_BY_SIDE:
                bad.append(f"{src} imports {t} ({a}/ may not import {b}/)")
    return bad


def test_every_module_belongs_to_a_stage_or_is_a_leaf():
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ORDER)
    assert top == LEAVES | ENTRY_POINTS, "a new top-level module belongs in one of the stages' subpackages"


def test_imports_go_down_the_pipeline():
    edges = {_dotted(p)[0]: imports_of(p) for p in _modules()}
    assert layer_violations(edges) == []


def test_layer_check_catches_an_upward_import():
    # the check itself, on a made-up graph: data importing results, and training importing theory
    assert len(layer_violations({"aen_lib.data.corpus": {"aen_lib.results.records"},
                                 "aen_lib.training.train": {"aen_lib.theory.geometry"},
                                 "aen_lib.results.reference": {"aen_lib.data.corpus"}})) == 2


def test_leaves_import_no_stage():
    for name in LEAVES:
        stages = {t.split(".")[1] for t in imports_of(ROOT / f"{name}.py") if t.count(".")}
        assert not stages & set(ORDER), f"{name}.py imports {stages}"


@pytest.mark.parametrize("package", ORDER)
def test_subpackage_init_imports_nothing(package):
    tree = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"aen_lib/{package}/__init__.py must say what the package owns"
    assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], (
        f"aen_lib/{package}/__init__.py imports: importing a subpackage must not load torch")


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in _modules() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []
