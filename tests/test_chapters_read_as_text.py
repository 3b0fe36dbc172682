"""Every chapter reads as text in the rendered book: its visible code (cells not tagged to hide their input) is
shorter than its prose, in characters, and at most 250 lines (issue: chapters that read as text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aen_lib.book.notebook import MAX_VISIBLE_CODE_LINES, reading_balance, reads_as_text

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
