"""Every chapter reads as text in the rendered book: its visible code (cells not tagged to hide their input) is
shorter than its prose, in characters, and at most 250 lines; and no visible cell only draws (issue: chapters that
read as text)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from aen_lib.book.notebook import HIDDEN_INPUT_TAGS, MAX_VISIBLE_CODE_LINES, prose_text, reading_balance, reads_as_text

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "chapters").glob("*.ipynb"))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 10


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_reads_as_text(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert reads_as_text(nb) == [], f"{path.name}: {reading_balance(nb)}"


def _nb(markdown: str, *code: tuple[str, list[str]]) -> dict:
    return {"cells": [{"cell_type": "markdown", "source": markdown, "metadata": {}}]
            + [{"cell_type": "code", "source": src, "metadata": {"tags": tags}} for src, tags in code]}


def test_the_count_fails_on_code_heavy_or_long_chapters():
    prose = "x" * 100
    assert reads_as_text(_nb(prose, ("y = 1\n" * 5, []))) == []
    assert "visible code" in reads_as_text(_nb(prose, ("y = 1\n" * 30, [])))[0]  # 180 characters of code
    # hidden input does not count, other tags do
    assert reads_as_text(_nb(prose, ("y = 1\n" * 30, ["hide-input"]))) == []
    assert reads_as_text(_nb(prose, ("y = 1\n" * 30, ["parameters"]))) != []
    long = "\n" * (MAX_VISIBLE_CODE_LINES + 1)
    problems = reads_as_text(_nb("x" * 10_000, (long.replace("\n", "a\n"), [])))
    assert problems == [f"{MAX_VISIBLE_CODE_LINES + 1} lines of visible code (at most {MAX_VISIBLE_CODE_LINES})"]
    assert reading_balance(_nb(prose, ("a\nb", ["remove-cell"])))["hidden_code_cells"] == 1


# ------------------------------------------------------------------------------------------------------------------
# Prose is what the reader reads, not the markup
# ------------------------------------------------------------------------------------------------------------------
def test_prose_drops_roles_link_targets_html_and_fenced_code():
    md = ("## Dead latents\n\n"
          "TopK had {glue:text}`topk_dead_pct_window_mean:.1f`% dead ({ref}`paper-facts-results`; "
          "{cite:t}`gao2024scaling`), see {ref}`the facts <paper-facts-synthetic>` and "
          "[the paper](https://arxiv.org/abs/2601.00001) <b>now</b><!-- a note to authors -->.\n"
          "```python\nx = train(sae)\n```\n"
          "The code is $h = \\mathrm{ReLU}(W^\\top x)$, read by `metrics.l0`.\n")
    assert prose_text(md) == ("Dead latents\n\nTopK had % dead (; ), see the facts and the paper now.\n\n"
                              "The code is $h = \\mathrm{ReLU}(W^\\top x)$, read by `metrics.l0`.\n")
    # a MyST directive for text or maths is prose (its options are not); a code directive is not
    assert prose_text("```{note}\n:class: dropdown\nRead this.\n```\n") == "Read this.\n\n"
    assert prose_text("```{code-cell} python\nx = 1\n```\n") == "\n"
    assert prose_text("{math}`a+b` and [x](#y) with ![plot](fig.png)") == "a+b and x with "
    assert prose_text("| a | b |\n|---|:--:|\n| 1 | 2 |\n") == "| a | b |\n| 1 | 2 |\n"


def test_markup_does_not_count_as_prose():
    """A chapter padded with glue roles and link targets no longer passes on markup alone."""
    markdown = "Dead: {glue:text}`a_very_long_glued_name_for_the_dead_share:.1f`%, [see](https://example.org/x/y/z).\n"
    b = reading_balance(_nb(markdown * 4, ("y = 1\n" * 20, [])))
    assert b["markdown_chars"] == 4 * len(markdown) and b["prose_chars"] == 4 * len("Dead: %, see.\n")
    assert b["code_chars"] == 120 and b["markdown_chars"] > b["code_chars"] > b["prose_chars"]
    assert "visible code 120 characters against 56 of prose" in reads_as_text(_nb(markdown * 4, ("y = 1\n" * 20, [])))[0]


# ------------------------------------------------------------------------------------------------------------------
# Visible cells that only draw belong in aen_lib.book.plotting or under hide-input
# ------------------------------------------------------------------------------------------------------------------
DRAWING_OBJECTS = ("plt", "fig", "ax", "axes", "sns")
"""Names a drawing call starts from in the chapters (matplotlib's pyplot, figures and axes, seaborn)."""


def _call_name(node: ast.expr) -> str:
    """``plt.subplots`` for ``plt.subplots(...)``, ``axes.set_title`` for ``axes[0].set_title(...)``."""
    parts = []
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
        node = node.func if isinstance(node, ast.Call) else node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _draws(stmt: ast.stmt) -> bool:
    """A statement draws when it calls (or assigns the result of calling) a method of :data:`DRAWING_OBJECTS` or a
    book helper that draws (``save_figure``, ``*_figure``, ``*_diagram``, ``plot_*``); a ``for``, ``with`` or ``if``
    draws when everything in it does."""
    if isinstance(stmt, (ast.For, ast.With, ast.If)):
        return all(_draws(s) or isinstance(s, ast.Pass) for s in [*stmt.body, *getattr(stmt, "orelse", [])])
    if not isinstance(stmt, (ast.Expr, ast.Assign, ast.AnnAssign)) or not isinstance(stmt.value, ast.Call):
        return False
    name = _call_name(stmt.value.func)
    first, last = name.split(".")[0], name.split(".")[-1]
    return first in DRAWING_OBJECTS or last == "save_figure" or last.endswith(("_figure", "_diagram")) \
        or last.startswith("plot_")


def draws_only(source: str) -> bool:
    """The heuristic: a code cell only draws when, imports aside, every top-level statement draws (:func:`_draws`).
    A cell that computes anything else (a table, a glued number, a print) is not flagged; magics are ignored, and a
    cell that does not parse is not flagged."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        body = [s for s in ast.parse(code).body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    except SyntaxError:
        return False
    return bool(body) and all(_draws(s) for s in body)


def visible_drawing_cells(nb: dict) -> list[int]:
    """Indices of the code cells that only draw and show their input."""
    return [i for i, cell in enumerate(nb.get("cells", [])) if cell.get("cell_type") == "code"
            and not set(cell.get("metadata", {}).get("tags", [])) & set(HIDDEN_INPUT_TAGS)
            and draws_only("".join(cell.get("source", "")))]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_visible_cell_only_draws(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    flagged = visible_drawing_cells(nb)
    assert flagged == [], (f"{path.name}: cells {flagged} only draw; move the drawing into aen_lib.book.plotting "
                           "and tag the cell 'hide-input'")


def test_the_drawing_check_catches_a_cell_that_only_draws():
    drawing = ("import matplotlib.pyplot as plt\n"
               "fig, axes = plt.subplots(1, 2)\n"
               "for ax in axes:\n    ax.set_xlabel('training step')\n"
               "axes[0].set_title('dead latents')\n"
               "fig = dead_ev_vs_l0_figure(runs)\n"
               "save_figure(fig, OUT, 'dead')\n"
               "%matplotlib inline\n"
               "plt.show()\n")
    counterexample = _nb("Prose.", ("x = 1", []), (drawing, []), (drawing, ["hide-input"]), (drawing, ["parameters"]))
    assert visible_drawing_cells(counterexample) == [2, 4]
    # a cell that also computes something the reader should see is not a drawing cell; an import changes nothing
    for computes in ("table = summarise(runs)\n", "print(table)\n", "glue('dead', 3.0)\n", "x = [ax.plot(v) for v in y]\n"):
        assert not draws_only(computes + drawing), computes
    assert draws_only("import numpy as np\n" + drawing)
    assert not draws_only("")
    assert not draws_only("import matplotlib.pyplot as plt\n")
    assert not draws_only("def f(:\n")
