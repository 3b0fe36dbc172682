"""Helpers the book's chapters use, and the conventions every chapter follows.

Chapter conventions (``chapters/NN_name.ipynb``; checked by ``tests/test_notebooks.py``):

1. **Cell 1 is the Colab setup.** On Google Colab it pip-installs ``aen_lib`` from the public repository
   (``REPO_URL``); it never installs or upgrades torch (Colab's CUDA build satisfies ``torch>=2.2``). Everywhere
   else it does nothing. It is plain Python (no ``%pip`` magic), because ``aen_lib`` itself is not importable yet.
2. **Cell 2 is tagged ``parameters``.** One line per parameter, with a type hint and a comment:
   ``steps: int = 600  # optimiser steps per SAE``. The defaults run quickly on a 2-core CPU; this is what
   ``make book`` and the Colab launch button execute. ``papermill --help-notebook`` prints the hints and comments.
   Profiles that override them live in ``params/<profile>/NN_name.yaml`` (``ci``: tiny, for ``make test``;
   ``paper``: the paper's settings, GPU-sized).
3. **Cell 3 validates the parameters** with :func:`validate_parameters`, so a value of the wrong type or outside the
   allowed set stops the chapter right after the parameters (papermill inserts its ``injected-parameters`` cell
   between cells 2 and 3) with a message naming the parameter. It is the chapter's setup: it also calls
   :func:`aen_lib.configure_openmp`, which only works before torch is imported, so no cell before it imports torch
   (``aen_lib.book.notebook`` itself does not).
4. Kernelspec ``python3``. Outputs are stripped in git (``python -m aen_lib.book.notebook strip chapters/*.ipynb``),
   except for render-only chapters whose metadata holds ``{"mystnb": {"execution_mode": "off"}}``.
5. Results (JSON and figures) go under ``chapter_context(CHAPTER, results_root).results``, i.e.
   ``<results_root>/<chapter>/``; the parameter ``results_root`` is empty by default (the repository's ``results/``),
   and ``make test`` and ``make reproduce`` pass another so that their runs do not overwrite the book's results.
6. The chapter ends with an assertion cell that checks its claim numerically, then a "what we saw" paragraph
   whose numbers are printed or glued by the code above it.

Command line (used by the Makefile)::

    python -m aen_lib.book.notebook strip FILE.ipynb ...          # remove outputs in place
    python -m aen_lib.book.notebook check-stripped FILE.ipynb ... # exit 1 if a non-render-only notebook has outputs
    python -m aen_lib.book.notebook summarize RUN_DIR [RESULTS_DIR] # table of papermill runs (make reproduce)
    python -m aen_lib.book.notebook book-times [BUILD_DIR]        # per-chapter execution times of the last book build
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import types
import typing

if typing.TYPE_CHECKING:  # only for annotations: importing torch here would slow the CLI down
    import torch
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..store import CHECKOUT, atomic_write, check_result, read_json, write_result
from .. import configure_openmp

__all__ = [
    "prose_text",
    "reading_balance",
    "reads_as_text",
    "REPO_URL",
    "in_colab",
    "resolve_device",
    "glue",
    "repo_root",
    "results_dir",
    "ChapterContext",
    "chapter_context",
    "MissingResultsError",
    "save_json",
    "load_json",
    "validate_parameters",
    "is_render_only",
    "has_outputs",
    "strip_outputs",
    "summarize_runs",
    "format_summary",
    "book_execution_times",
    "format_book_times",
]

REPO_URL = "https://github.com/aen-book/aen-book"
"""Canonical public repository; the Colab setup cell installs ``aen_lib`` from here."""

_CHAPTER_RE = re.compile(r"^\d\d_[a-z0-9_]+$")


# ----------------------------------------------------------------------------------------------------------------
# Where am I, where do results go
# ----------------------------------------------------------------------------------------------------------------
def in_colab() -> bool:
    """True when running inside a Google Colab runtime (the ``google.colab`` module is loaded there)."""
    return "google.colab" in sys.modules


def resolve_device(name: str) -> "torch.device":
    """The torch device for a chapter's ``device`` parameter: ``"auto"`` picks CUDA when available, else CPU.

    Raises ``ValueError`` for another name, or for ``"cuda"`` on a machine without a CUDA GPU.
    """
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return torch.device(name)


def glue(name: str, value: Any) -> Any:
    """Make ``value`` available to the chapter's prose as ``{glue:text}`name:.1f` `` (MyST-NB), and return it.

    Numbers are stored as plain Python numbers so that format specs work. Without ``myst_nb`` (e.g. on Colab) this
    only returns the value; chapters also print the numbers they glue, so the reader sees them either way.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue name must be an identifier, got {name!r}")
    if hasattr(value, "item"):
        value = value.item()
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        return value
    _myst_glue(name, value, display=False)
    return value


def _looks_like_repo(path: Path) -> bool:
    return (path / "_toc.yml").is_file() and (path / "aen_lib").is_dir()


def repo_root(start: str | Path | None = None) -> Path | None:
    """The aen-book checkout that holds ``_toc.yml`` and ``aen_lib/``, or ``None`` (e.g. on Colab).

    Looks first beside the imported ``aen_lib`` package (an editable install), then upwards from ``start``
    (default: the current directory), so chapters executed from ``chapters/`` or ``_build/ci_runs/`` agree.
    """
    package_parent = CHECKOUT
    if _looks_like_repo(package_parent):
        return package_parent
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if _looks_like_repo(candidate):
            return candidate
    return None


def results_dir(chapter: str, root: str | Path | None = None) -> Path:
    """Create and return ``<root>/<chapter>``, the folder where ``chapter`` writes its JSON results and figures.

    ``root`` defaults to ``<repository>/results``, or ``./results`` when no checkout is found (Colab). The chapter
    name must look like ``NN_name``.
    """
    if not isinstance(chapter, str) or not _CHAPTER_RE.match(chapter):
        raise ValueError(f"chapter must look like 'NN_name' (two digits, underscore, lower-case words), got {chapter!r}")
    if root is None:
        repo = repo_root()
        root = (repo if repo is not None else Path.cwd()) / "results"
    out = Path(root) / chapter
    out.mkdir(parents=True, exist_ok=True)
    return out


class MissingResultsError(FileNotFoundError):
    """A chapter was asked to reuse an earlier chapter's results and they are not where that chapter writes them."""


@dataclasses.dataclass(frozen=True)
class ChapterContext:
    """Where a chapter writes its results and finds those of earlier chapters; build it with :func:`chapter_context`."""

    chapter: str
    """This chapter, ``NN_name``."""
    results_root: Path
    """Folder with one results folder per chapter (the repository's ``results/`` for ``make book``)."""
    runs_root: Path | None = None
    """``make reproduce``: folder with one results root per run ``NN_name[__variant]``; None elsewhere."""

    @property
    def results(self) -> Path:
        """This chapter's results folder ``<results_root>/<chapter>`` (created)."""
        return results_dir(self.chapter, self.results_root)

    def previous(self, chapter: str, *, must_contain: str | None = None, required: bool = False) -> Path | None:
        """The results folder of an earlier ``chapter`` of the same run of the book, or ``None`` if it has none.

        The first existing folder (holding ``must_contain`` when given) of: ``<runs_root>/<chapter>/<chapter>``
        (``make reproduce``: run ``<run>`` has the results root ``<runs_root>/<run>``), ``<results_root>/<chapter>``
        (all chapters share one results root). With ``required=True`` none raises :class:`MissingResultsError`
        listing the places searched: a chapter asked to reuse results must not silently recompute them.
        """
        if not isinstance(chapter, str) or not _CHAPTER_RE.match(chapter):
            raise ValueError(f"chapter must look like 'NN_name' (two digits, underscore, lower-case words), "
                             f"got {chapter!r}")
        candidates = [self.runs_root / chapter / chapter] if self.runs_root is not None else []
        candidates.append(self.results_root / chapter)
        for folder in candidates:
            if folder.is_dir() and (must_contain is None or (folder / must_contain).exists()):
                return folder
        if required:
            what = f"{must_contain} under " if must_contain else ""
            searched = "\n  ".join(str(c) for c in candidates)
            raise MissingResultsError(
                f"this chapter was asked to reuse the results of {chapter}, but found no {what}its results folder; "
                f"searched:\n  {searched}\nRun {chapter} first with the same results_root (make reproduce runs the "
                f"chapters in order), or ask this chapter to train its own (see its parameters)."
            )
        return None


def chapter_context(chapter: str, results_root: str | Path = "", runs_root: str | Path = "") -> ChapterContext:
    """The :class:`ChapterContext` of a chapter from its ``results_root`` / ``runs_root`` parameters; an empty
    ``results_root`` means ``<repository>/results`` (``./results`` without a checkout), an empty ``runs_root`` none."""
    out = results_dir(chapter, results_root or None)
    return ChapterContext(chapter, out.parent, Path(runs_root) if runs_root else None)


def _to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths, dataclasses and sets into JSON-friendly values."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_to_jsonable(v) for v in items]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return _to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return _to_jsonable(obj.item())
    raise TypeError(f"save_json cannot store a value of type {type(obj).__name__}: {obj!r}")


CHAPTER_RESULT_KINDS = {"summary.json": "chapter_summary", "claims.json": "chapter_claims",
                        "manifest.json": "chapter_manifest"}
"""The result kind (:data:`aen_lib.results.records.RESULT_KINDS`) of a chapter's JSON file, by file name; any other
name is a ``"chapter_result"``."""


def _chapter_kind(path: Path) -> str:
    return CHAPTER_RESULT_KINDS.get(path.name, "chapter_result")


def _sorted_keys(value: Any) -> Any:
    """``value`` with every object's keys in sorted order (so a chapter's files diff cleanly between runs)."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def save_json(obj: Any, path: str | Path, kind: str | None = None) -> Path:
    """Write ``obj`` as a stored result (:func:`aen_lib.store.write_result`, atomically, with
    ``record_version``) and return the path; numpy/torch values, dataclasses and paths are converted, keys sorted.

    ``kind`` defaults to the file's name (:data:`CHAPTER_RESULT_KINDS`: ``summary.json``, ``claims.json``,
    ``manifest.json``; else ``"chapter_result"``). A chapter rewrites its results on every run, so an existing file is
    replaced. A value that is not a JSON object (a table as a list of rows, or ``None``) has no place for the version:
    without an explicit ``kind`` it is written as it is. Non-finite floats are written as ``NaN``/``Infinity``
    (Python's json default), which :func:`load_json` reads back.
    """
    path = Path(path)
    value = _sorted_keys(_to_jsonable(obj))
    if isinstance(value, dict) or kind is not None:
        return write_result(path, kind or _chapter_kind(path), value, overwrite=True)
    text = json.dumps(value, indent=2) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def load_json(path: str | Path, kind: str | None = None) -> Any:
    """Read a JSON file written by :func:`save_json`: a JSON object through
    the store's :func:`aen_lib.store.check_result` (its version and keys checked; returned as stored, with its
    ``record_version``; a file written before results had a version reads as version 1), anything else as it is.
    ``kind`` as in :func:`save_json`."""
    path = Path(path)
    value = read_json(path, missing=f"no JSON results file at {path}",
                      corrupt="the file is corrupt: run the chapter that writes it again")
    if not isinstance(value, dict) and kind is None:
        return value
    return check_result(value, kind or _chapter_kind(path), str(path))


# ----------------------------------------------------------------------------------------------------------------
# Parameter validation (cell 3 of every chapter)
# ----------------------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Does ``value`` match the annotation ``tp``? ``int`` rejects bool; ``float`` accepts int."""
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set, frozenset, Sequence, Collection):
        container = {list: list, tuple: (list, tuple), set: (list, set), frozenset: (list, set, frozenset)}.get(
            origin, (list, tuple)
        )
        if not isinstance(value, container):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    raise TypeError(f"validate_parameters does not understand the annotation {tp!r}")


def _annotations_of(namespace: Mapping[str, Any]) -> dict[str, Any]:
    if "__annotations__" in namespace:
        hints = dict(namespace["__annotations__"])
    elif callable(namespace.get("__annotate__")):  # Python >= 3.14 evaluates module annotations lazily
        hints = dict(namespace["__annotate__"](1))
    else:
        return {}
    # String hints (from `from __future__ import annotations`) are evaluated like typing.get_type_hints does.
    scope = {**vars(typing), **dict(namespace)}
    for name, tp in hints.items():
        if isinstance(tp, str):
            try:
                hints[name] = eval(tp, scope)  # noqa: S307 - the chapter's own annotation text
            except Exception as e:
                raise TypeError(f"parameter {name!r}: cannot evaluate its type hint {tp!r} ({e})") from e
    return hints


def validate_parameters(
    namespace: Mapping[str, Any],
    annotations: Mapping[str, Any] | None = None,
    *,
    choices: Mapping[str, Collection[Any]] | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Any]:
    """Check a chapter's parameters and return them as a dict (to store with the results).

    ``namespace`` is the chapter's ``globals()`` after the parameters cell and papermill's injected cell ran;
    ``annotations`` defaults to the type hints the parameters cell left in ``namespace["__annotations__"]``.
    Every annotated name must exist and match its hint (``int`` rejects ``True``; ``float`` accepts ``3``;
    ``list[float]`` checks each item; ``str | None`` and ``Literal[...]`` work). ``choices[name]`` lists allowed
    values, ``bounds[name] = (low, high)`` an inclusive range (either end may be ``None``).

    Cell 3 is the chapter's first call into ``aen_lib``, before any cell imports torch, so this also calls
    :func:`aen_lib.configure_openmp` (sleeping OpenMP waits; a wait setting already in the environment is kept).

    Raises:
        TypeError: a value has the wrong type (the message names the parameter, the value and the expected type).
        ValueError: a value is not among its choices or outside its bounds, or a choice/bound names no parameter.
    """
    configure_openmp()
    hints = dict(annotations) if annotations is not None else _annotations_of(namespace)
    if not hints:
        raise ValueError("validate_parameters found no annotated parameters: give each parameter a type hint")
    choices = dict(choices or {})
    bounds = dict(bounds or {})
    for name in (*choices, *bounds):
        if name not in hints:
            raise ValueError(f"validate_parameters: {name!r} has a choice/bound but is not an annotated parameter")
    values: dict[str, Any] = {}
    for name, tp in hints.items():
        if name not in namespace:
            raise ValueError(f"parameter {name!r} is annotated but has no value")
        value = namespace[name]
        if not _matches(value, tp):
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value):
                hint = " (YAML reads '1e-3' as text: write 1.0e-3)"
            raise TypeError(
                f"parameter {name!r} must be of type {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}"
            )
        if name in choices and value not in choices[name]:
            allowed = ", ".join(repr(c) for c in choices[name])
            raise ValueError(f"parameter {name!r} = {value!r} is not allowed; choose one of: {allowed}")
        if name in bounds:
            low, high = bounds[name]
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, float) and math.isnan(item):
                    raise ValueError(f"parameter {name!r} is NaN")
                if (low is not None and item < low) or (high is not None and item > high):
                    rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                    raise ValueError(f"parameter {name!r} = {value!r} is outside the allowed range {rng}")
        values[name] = value
    return values


# ----------------------------------------------------------------------------------------------------------------
# Notebook files: outputs, stripping
# ----------------------------------------------------------------------------------------------------------------
def is_render_only(nb: Mapping[str, Any]) -> bool:
    """A render-only chapter is shown from committed outputs: metadata ``{"mystnb": {"execution_mode": "off"}}``."""
    return nb.get("metadata", {}).get("mystnb", {}).get("execution_mode") == "off"


def has_outputs(nb: Mapping[str, Any]) -> bool:
    """True if any code cell of the notebook dict carries outputs or an execution count."""
    return any(
        cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
        for cell in nb.get("cells", [])
    )


def strip_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """Remove outputs, execution counts and per-cell execution metadata in place; return the notebook."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            cell.get("metadata", {}).pop(key, None)
    for key in ("papermill", "widgets"):
        nb.get("metadata", {}).pop(key, None)
    return nb


def _read_nb(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def _write_nb(nb: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# make reproduce: summary of papermill runs
# ----------------------------------------------------------------------------------------------------------------
HIDDEN_INPUT_TAGS = ("hide-input", "remove-input", "hide-cell", "remove-cell")
"""Cell tags under which the rendered book does not show a cell's code (Jupyter Book 1)."""
MAX_VISIBLE_CODE_LINES = 250
"""A chapter shows at most this many lines of code (and fewer characters of code than of prose)."""


# What counts as prose: the words a reader of the rendered page reads, not the markup that produces them.
_FENCE_RE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
_PROSE_DIRECTIVE_RE = re.compile(r"\{(?!code|code-block|code-cell|literalinclude|glue)[\w:-]+\}")
_DIRECTIVE_OPTION_RE = re.compile(r"^:[\w-]+:.*$\n?", re.M)
_ROLE_RE = re.compile(r"\{(?P<role>[\w:.-]+)\}`(?P<body>[^`]*)`")
_EXPLICIT_TITLE_RE = re.compile(r"^(?P<title>.*?)\s*<[^<>]*>$", re.S)
_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LINK_DEFINITION_RE = re.compile(r"^ {0,3}\[[^\]]+\]:[^\n]*\n?", re.M)
_AUTOLINK_RE = re.compile(r"<(?:https?|mailto|ftp):[^>\s]*>")
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>")
_HEADING_MARK_RE = re.compile(r"^ {0,3}#{1,6}[ \t]+", re.M)
_TABLE_RULE_RE = re.compile(  # |---|:--:| under a table header, or a --- rule; not a list bullet "- "
    r"^(?=[^\n]*(?:\||---))[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$\n?", re.M)


def _role_text(match: re.Match[str]) -> str:
    """What a MyST role shows that the author wrote: the maths of ``{math}``, the explicit title of a cross-reference
    (``{ref}`the title <label>```); nothing for glued values, citation keys and bare labels (generated text)."""
    role, body = match.group("role"), match.group("body")
    if role == "math":
        return body
    if role.startswith("glue"):
        return ""
    explicit = _EXPLICIT_TITLE_RE.match(body)
    return explicit.group("title") if explicit else ""


def _fence_text(match: re.Match[str]) -> str:
    """A fenced block is prose only when it is a MyST directive for text or maths (``{note}``, ``{math}``...; its
    ``:option:`` lines dropped); code blocks, ``{code-cell}`` and glue directives are not prose."""
    if _PROSE_DIRECTIVE_RE.match(match.group("info").strip()):
        return _DIRECTIVE_OPTION_RE.sub("", match.group("body"))
    return ""


def prose_text(markdown: str) -> str:
    """The prose of a markdown cell as the rendered book's reader reads it, without its markup.

    Removed: fenced code blocks (code inside markdown is not prose; MyST directives for text or maths such as
    ``{note}`` or ``{math}`` keep their body), MyST roles (``{glue:text}`name` ``, ``{cite}`key` ``, ``{ref}`label` ``
    become nothing, a cross-reference with an explicit title keeps its title, ``{math}`` keeps its maths), link and
    image targets (``[text](url)`` keeps ``text``), link definitions, autolinks, HTML tags and comments, heading marks
    and table rules. Inline ``$...$`` and display ``$$...$$`` maths and inline code stay: they are read.
    """
    text = _FENCE_RE.sub(_fence_text, markdown)
    text = _ROLE_RE.sub(_role_text, text)
    text = _IMAGE_RE.sub("", text)
    text = _LINK_RE.sub(r"\1", text)
    text = _LINK_DEFINITION_RE.sub("", text)
    text = _AUTOLINK_RE.sub("", text)
    text = _HTML_COMMENT_RE.sub("", text)
    text = _HTML_TAG_RE.sub("", text)
    text = _HEADING_MARK_RE.sub("", text)
    return _TABLE_RULE_RE.sub("", text)


def reading_balance(nb: Mapping[str, Any]) -> dict[str, int]:
    """How much of a chapter a reader of the rendered book reads as prose and as code: characters of markdown prose
    without its markup (:func:`prose_text`), and characters and lines of the code cells not tagged to hide their
    input (:data:`HIDDEN_INPUT_TAGS`). ``markdown_chars`` is the raw markdown, markup included, for comparison."""
    out = {"prose_chars": 0, "markdown_chars": 0, "code_chars": 0, "code_lines": 0, "hidden_code_cells": 0}
    for cell in nb.get("cells", []):
        text = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown":
            out["prose_chars"] += len(prose_text(text))
            out["markdown_chars"] += len(text)
        elif cell.get("cell_type") == "code":
            if set(cell.get("metadata", {}).get("tags", [])) & set(HIDDEN_INPUT_TAGS):
                out["hidden_code_cells"] += 1
            else:
                out["code_chars"] += len(text)
                out["code_lines"] += len(text.splitlines())
    return out


def reads_as_text(nb: Mapping[str, Any]) -> list[str]:
    """What keeps a chapter from reading as text: its visible code longer than its prose, or over
    :data:`MAX_VISIBLE_CODE_LINES` lines (empty when it reads as text)."""
    b = reading_balance(nb)
    problems = []
    if b["code_chars"] >= b["prose_chars"]:
        problems.append(f"visible code {b['code_chars']:,} characters against {b['prose_chars']:,} of prose: move "
                        "drawing and table code into aen_lib.book, or tag cells that only draw 'hide-input'")
    if b["code_lines"] > MAX_VISIBLE_CODE_LINES:
        problems.append(f"{b['code_lines']} lines of visible code (at most {MAX_VISIBLE_CODE_LINES})")
    return problems


def summarize_runs(run_dir: str | Path, results_root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per papermill output notebook in ``run_dir``: run name, chapter, status, duration, parameters and the
    JSON files it wrote under ``results_root/<run>/<chapter>/`` (default ``run_dir/results``), as ``make reproduce``
    lays them out."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    results_root = Path(results_root) if results_root is not None else run_dir / "results"
    rows = []
    for path in sorted(run_dir.glob("*.ipynb")):
        meta = _read_nb(path).get("metadata", {}).get("papermill", {})
        run = path.stem
        chapter = run.split("__")[0]
        exception = meta.get("exception")
        failed = bool(exception) or meta.get("duration") is None
        jsons = sorted(str(p) for p in (results_root / run / chapter).glob("*.json"))
        rows.append(
            {
                "run": run,
                "chapter": chapter,
                "status": "failed" if failed else "ok",
                "duration_s": meta.get("duration"),
                "parameters": meta.get("parameters", {}),
                "results": jsons,
                "notebook": str(path),
            }
        )
    return rows


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`summarize_runs` rows."""
    lines = ["| run | status | duration (s) | parameters | results JSON |", "|---|---|---|---|---|"]
    for r in rows:
        dur = "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}"
        params = ", ".join(f"{k}={v}" for k, v in sorted(r["parameters"].items())) or "(defaults)"
        res = "<br>".join(r["results"]) or "-"
        lines.append(f"| {r['run']} | {r['status']} | {dur} | {params} | {res} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# make book: per-chapter execution times
# ----------------------------------------------------------------------------------------------------------------
def book_execution_times(build_dir: str | Path = "_build") -> list[dict[str, Any]]:
    """One row per executed page of the last Jupyter Book build: ``page``, ``seconds``, ``method``, ``succeeded``,
    ``error``.

    MyST-NB stores each notebook's execution result (``exec_data``) in the Sphinx environment that the build pickles
    (``<build_dir>/.doctrees/environment.pickle``); this reads it back. Pages that were not executed are left out.
    """
    import pickle

    build_dir = Path(build_dir)
    pickles = sorted(build_dir.glob("**/.doctrees/environment.pickle")) or sorted(build_dir.glob("**/environment.pickle"))
    if not pickles:
        raise FileNotFoundError(f"no Sphinx environment.pickle under {build_dir}: build the book first (make book)")
    with open(pickles[0], "rb") as fh:
        env = pickle.load(fh)  # noqa: S301 - our own build output
    rows = []
    for page, meta in sorted(getattr(env, "nb_metadata", {}).items()):
        data = (meta or {}).get("exec_data")
        if not data:
            continue
        rows.append({"page": page, "seconds": data.get("runtime"), "method": data.get("method"),
                     "succeeded": bool(data.get("succeeded")), "error": data.get("error")})
    return rows


def format_book_times(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`book_execution_times` rows with a total line."""
    if not rows:
        return "no executed pages recorded in the build\n"
    width = max(len("total"), *(len(r["page"]) for r in rows))
    lines = [f"{'page':<{width}}  {'seconds':>8}  status", f"{'-' * width}  {'-' * 8}  ------"]
    total = 0.0
    for r in rows:
        secs = r["seconds"]
        total += secs or 0.0
        status = "ok" if r["succeeded"] else f"FAILED ({r['error']})"
        lines.append(f"{r['page']:<{width}}  {'-' if secs is None else f'{secs:8.1f}':>8}  {status}")
    lines.append(f"{'total':<{width}}  {total:8.1f}")
    return "\n".join(lines) + "\n"


def _main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aen_lib.book.notebook", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_strip = sub.add_parser("strip", help="remove outputs in place (render-only chapters are left alone)")
    p_strip.add_argument("paths", nargs="+", type=Path)
    p_check = sub.add_parser("check-stripped", help="exit 1 if a non-render-only notebook carries outputs")
    p_check.add_argument("paths", nargs="+", type=Path)
    p_sum = sub.add_parser("summarize", help="tabulate papermill runs; writes summary.json and summary.md")
    p_sum.add_argument("run_dir", type=Path)
    p_sum.add_argument("results_root", type=Path, nargs="?")
    p_times = sub.add_parser("book-times", help="per-chapter execution times of the last jupyter-book build")
    p_times.add_argument("build_dir", type=Path, nargs="?", default=Path("_build"))
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.cmd == "book-times":
        print("Chapter execution times of this build (MyST-NB):")
        print(format_book_times(book_execution_times(args.build_dir)), end="")
        return 0

    if args.cmd == "strip":
        for path in args.paths:
            nb = _read_nb(path)
            if not is_render_only(nb) and has_outputs(nb):
                _write_nb(strip_outputs(nb), path)
                print(f"stripped {path}")
        return 0
    if args.cmd == "check-stripped":
        dirty = [p for p in args.paths if not is_render_only(nb := _read_nb(p)) and has_outputs(nb)]
        for p in dirty:
            print(f"{p} carries outputs: run `make strip`", file=sys.stderr)
        return 1 if dirty else 0
    rows = summarize_runs(args.run_dir, args.results_root)
    save_json(rows, args.run_dir / "summary.json")
    table = format_summary(rows)
    (args.run_dir / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(_main())
