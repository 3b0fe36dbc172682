"""tools/check_book.py: each failure kind is detected on a small synthetic page, and a clean page passes.

The detection logic (``evaluate_page``) is tested on facts written by hand; the whole pipeline (serve, open in
headless Chromium, collect, screenshot) on a synthetic site, when Chromium and Playwright are installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_book", ROOT / "tools" / "check_book.py")
check_book = importlib.util.module_from_spec(_spec)
sys.modules["check_book"] = check_book
_spec.loader.exec_module(check_book)

BASE = "http://127.0.0.1:8000/"


def _site(tmp_path: Path) -> Path:
    (tmp_path / "chapters").mkdir(exist_ok=True)
    (tmp_path / "index.html").write_text("<h1 id='top'>x</h1>")
    (tmp_path / "chapters" / "01_a.html").write_text("<h1 id='sec'>a</h1>")
    (tmp_path / "fig.png").write_bytes(b"")
    return tmp_path


def _clean_facts() -> dict:
    return {
        "text_blocks": ["A formula was typeset.", "It costs 5 dollars, or $ 3."],
        "all_text": "A formula was typeset.",
        "images": [{"src": "fig.png", "url": BASE + "fig.png", "complete": True, "natural_width": 640}],
        "links": [{"href": "chapters/01_a.html#sec", "url": BASE + "chapters/01_a.html#sec"},
                  {"href": "https://arxiv.org/abs/2605.05341", "url": "https://arxiv.org/abs/2605.05341"},
                  {"href": "#", "url": BASE + "chapters/01_a.html#"}],
        "ids": ["sec"],
        "outputs": [{"classes": "cell_output", "text": "ρ = 0: 12 SAEs in 3.1 s"}],
        "traceback_boxes": 0,
        "math_errors": [],
        "mathjax": True,
        "launch_links": ["https://colab.research.google.com/github/aen-book/aen-book/blob/main/chapters/01_a.ipynb"],
        "wide_tables": [],
    }


def _kinds(tmp_path: Path, facts: dict, page: str = "chapters/01_a.html") -> list[str]:
    root = _site(tmp_path)
    ids_of = {"chapters/01_a.html": {"sec"}, "index.html": {"top"}}
    rep = check_book.evaluate_page(page, facts, root=root, base_url=BASE, ids_of=ids_of)
    return sorted({f.kind for f in rep.failures})


def test_a_clean_page_passes(tmp_path):
    assert _kinds(tmp_path, _clean_facts()) == []


def test_broken_image(tmp_path):
    facts = _clean_facts()
    facts["images"].append({"src": "missing.png", "url": BASE + "missing.png", "complete": True, "natural_width": 0})
    assert _kinds(tmp_path, facts) == ["broken-image"]


@pytest.mark.parametrize("href", ["missing.html", "chapters/01_a.html#nowhere", "_images/none.png"])
def test_broken_link_inside_the_book(tmp_path, href):
    facts = _clean_facts()
    facts["links"].append({"href": href, "url": BASE + href})
    assert _kinds(tmp_path, facts) == ["broken-link"]


@pytest.mark.parametrize("text", ["the loss $\\lambda_1 \\sum h$ is", "where \\(x\\) is", "\\begin{aligned} a \\end{aligned}",
                                  "display \\[ x = 1 \\]"])
def test_raw_tex_left_by_mathjax(tmp_path, text):
    facts = _clean_facts()
    facts["text_blocks"].append(text)
    assert _kinds(tmp_path, facts) == ["raw-math"]


def test_mathjax_error(tmp_path):
    facts = _clean_facts()
    facts["math_errors"] = ["Undefined control sequence \\foo"]
    assert _kinds(tmp_path, facts) == ["raw-math"]


@pytest.mark.parametrize("out", [
    {"classes": "cell_output", "text": "Traceback (most recent call last):\n  File ..."},
    {"classes": "output stderr", "text": "ValueError: parameter 'steps' must be of type int"},
])
def test_error_output(tmp_path, out):
    facts = _clean_facts()
    facts["outputs"].append(out)
    assert _kinds(tmp_path, facts) == ["error-output"]


def test_traceback_box(tmp_path):
    facts = _clean_facts()
    facts["traceback_boxes"] = 1
    assert _kinds(tmp_path, facts) == ["error-output"]


def test_missing_launch_button_on_a_chapter_only(tmp_path):
    facts = _clean_facts()
    facts["launch_links"] = []
    assert _kinds(tmp_path, facts) == ["no-launch-button"]
    assert _kinds(tmp_path, facts, page="index.html") == []  # not a chapter: no launch button needed


NOTES, WORKSPACE = check_book._NOTES, check_book._WORKSPACE  # spelled in parts there, never here


@pytest.mark.parametrize("where,text", [("all_text", f"as {NOTES} §4.1 reports"), ("all_text", "see the survey notes"),
                                        ("all_text", f"cache at {WORKSPACE}main/results/x.json"),
                                        ("all_text", "cache at /" + "root/.cache/aen_lib/abc"),
                                        ("link", f"file://{WORKSPACE}shared/paper/notes.md")])
def test_reference_outside_the_repository(tmp_path, where, text):
    facts = _clean_facts()
    if where == "link":
        facts["links"].append({"href": text, "url": text})
    else:
        facts["all_text"] += "\n" + text
    assert _kinds(tmp_path, facts) == ["outside-reference"]


def test_chapter_pages_are_recognised():
    assert check_book.is_chapter_page("chapters/06_spiked_dictionary.html")
    assert not check_book.is_chapter_page("book/intro.html")
    assert not check_book.is_chapter_page("chapters/index.html")


# ------------------------------------------------------------------------------------------------------------------
# The whole pipeline in headless Chromium
# ------------------------------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).is_file() or importlib.util.find_spec("playwright") is None,
    reason="needs Debian's chromium and the playwright package (pip install -e '.[browser]')")

GOOD = """<html><head><meta charset="utf-8"><title>ok</title></head><body><main><article>
<h1 id="sec">A chapter</h1><p>Plain prose, costs $ 3 and 5 $.</p>
<img src="../fig.png" alt="a figure"><a href="../index.html#top">back</a>
<a href="https://colab.research.google.com/github/aen-book/aen-book/blob/main/chapters/01_a.ipynb">Colab</a>
</article></main></body></html>"""

BAD = """<html><head><meta charset="utf-8"><title>bad</title></head><body><main><article>
<h1>Bad chapter</h1><p>Raw math $x^2$ here.</p><img src="../missing.png" alt="">
<a href="../nowhere.html">dead link</a>
<div class="cell_output"><pre>Traceback (most recent call last):
ValueError: boom</pre></div><p>as the NOTES says</p>
</article></main></body></html>"""


@needs_browser
@pytest.mark.slow
def test_whole_pipeline_in_chromium(tmp_path):
    import base64

    site = tmp_path / "html"
    (site / "chapters").mkdir(parents=True)
    (site / "index.html").write_text('<html><body><h1 id="top">Book</h1><a href="chapters/01_a.html">a</a></body></html>')
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    (site / "fig.png").write_bytes(png)
    (site / "chapters" / "01_a.html").write_text(GOOD)
    (site / "chapters" / "02_b.html").write_text(BAD.replace("NOTES", NOTES))
    shots = tmp_path / "shots"
    reports = {r.page: r for r in check_book.check_book(site, screenshots=shots, chromium=CHROMIUM)}
    assert reports["index.html"].failures == []
    assert reports["chapters/01_a.html"].failures == [], [str(f) for f in reports["chapters/01_a.html"].failures]
    kinds = sorted({f.kind for f in reports["chapters/02_b.html"].failures})
    assert kinds == ["broken-image", "broken-link", "error-output", "no-launch-button", "outside-reference", "raw-math"]
    assert sorted(p.name for p in shots.glob("*.png")) == ["chapters__01_a.png", "chapters__02_b.png", "index.png"]
    assert all(p.stat().st_size > 1000 for p in shots.glob("*.png"))
    assert check_book.main([str(site), "--chromium", CHROMIUM]) == 1
