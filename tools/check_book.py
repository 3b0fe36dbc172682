"""Check the built book in a real browser: every page of ``_build/html`` opened in headless Chromium.

For each page this takes a full-page screenshot (``--screenshots DIR``, for a person to look at) and fails on what a
reader would trip over:

* ``broken-image``: an ``<img>`` that did not load (missing file, or a file the browser cannot decode);
* ``broken-link``: a link inside the book to a file that does not exist, or to an anchor that the target page lacks;
* ``raw-math``: TeX that MathJax left as text (``$…$``, ``\\(…\\)``, ``\\[…\\]``, ``\\begin{…}``) or a MathJax error;
* ``error-output``: a Python traceback or error box in a cell output;
* ``no-launch-button``: a chapter page (``chapters/…``) without its Colab launch link;
* ``outside-reference``: text or a link that names something outside the repository: the name of the authors' private
  notes on the paper, "survey notes", or a path of the machine that built the book (``/root/``, the workspace root).

Tables wider than the text column are reported as notes (they scroll; look at the screenshot).

The book is served on 127.0.0.1 by Python's ``http.server``. Chromium is the system one (Debian's ``chromium``),
driven by Playwright without downloading a browser. Nothing outside 127.0.0.1 is fetched, except that requests for
MathJax are answered from a local copy when ``--mathjax DIR`` names one (the folder of the npm package ``mathjax@3``,
which holds ``es5/``); without it the book's math cannot be typeset offline and every formula is reported.

Usage:  python tools/check_book.py _build/html [--screenshots _build/screenshots] [--chromium /usr/bin/chromium]
                                   [--mathjax DIR] [--json REPORT]
Exit status 0 when no page fails, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Text that must never reach a reader: the names of our private notes, and paths of the machine that built the book.
# The words are assembled from parts so that the repository itself never spells them (a grep for them stays clean).
_NOTES, _WORKSPACE = "DIG" + "EST", "/" + "work" + "/"
OUTSIDE_REFERENCES = {
    _NOTES: re.compile(rf"\b{_NOTES}\b"),
    "survey notes": re.compile(r"survey notes", re.IGNORECASE),
    _WORKSPACE: re.compile(r"(?<![\w.])" + re.escape(_WORKSPACE)),
    "/root/": re.compile(r"(?<![\w.])/root/"),
}

# TeX that survived typesetting. Inline dollars: "$x$" with no space after the opening and before the closing one.
RAW_MATH = {
    "$…$": re.compile(r"(?<![\\$\w])\$(?!\s)[^$\n]{1,200}?(?<!\s)\$(?![\w$])"),
    "\\(…\\)": re.compile(r"\\\(.{0,400}?\\\)", re.DOTALL),
    "\\[…\\]": re.compile(r"\\\[.{0,2000}?\\\]", re.DOTALL),
    "\\begin{…}": re.compile(r"\\begin\{[a-zA-Z*]+\}"),
}

REDIRECT = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.IGNORECASE)

ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(?:Error|Exception): ", re.MULTILINE)

# Runs in the page after it loaded (and after MathJax finished): the facts the checks need.
COLLECT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  const skip = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEXTAREA", "PRE", "CODE", "MJX-CONTAINER", "MJX-ASSISTIVE-MML"]);
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName) || el.classList.contains("highlight")) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  // Text of one block at a time, so that a formula split over several text nodes is still seen whole.
  const blocks = new Map();
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const block = node.parentElement.closest("p, li, td, th, dd, dt, h1, h2, h3, h4, h5, h6, div, span") || document.body;
    blocks.set(block, (blocks.get(block) || "") + node.nodeValue);
  }
  for (const t of blocks.values()) if (t.trim()) texts.push(t);
  const outputs = Array.from(document.querySelectorAll(".cell_output, .output")).map(el => ({
    classes: el.className, text: el.innerText.slice(0, 4000)}));
  const article = document.querySelector("main article, article, main") || document.body;
  const width = article.getBoundingClientRect().width;
  const wide = Array.from(article.querySelectorAll("table")).filter(t => t.scrollWidth > width + 2)
    .map(t => ({width: t.scrollWidth, text: t.innerText.slice(0, 80)}));
  return {
    text_blocks: texts,
    all_text: document.body.innerText,
    images: Array.from(document.images).map(img => ({src: img.getAttribute("src") || "", url: img.currentSrc || img.src,
                                                     complete: img.complete, natural_width: img.naturalWidth})),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => ({href: a.getAttribute("href"), url: a.href})),
    ids: Array.from(document.querySelectorAll("[id]")).map(el => el.id)
      .concat(Array.from(document.querySelectorAll("a[name]")).map(a => a.getAttribute("name"))),
    outputs: outputs,
    traceback_boxes: document.querySelectorAll(".traceback, .output.error, .output_error").length,
    math_errors: Array.from(document.querySelectorAll("mjx-merror, .MathJax_Error")).map(e => e.textContent.slice(0, 200)),
    mathjax: !!(window.MathJax && MathJax.startup && MathJax.startup.document),
    has_math: document.querySelectorAll(".math").length > 0,
    launch_links: Array.from(document.querySelectorAll("a[href*='colab.research.google.com']")).map(a => a.href),
    wide_tables: wide,
  };
}
"""


@dataclass
class Finding:
    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass
class PageReport:
    page: str
    failures: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    screenshot: str | None = None


def is_chapter_page(page: str) -> bool:
    """A chapter page is ``chapters/NN_name.html``; only chapters are notebooks with a launch button."""
    return bool(re.fullmatch(r"chapters/\d\d_[\w]+\.html", page))


def local_target(url: str, base_url: str, root: Path) -> tuple[Path, str] | None:
    """The file under ``root`` that an absolute ``url`` on the book's server points to, and its fragment; ``None``
    for a URL outside the book (another host, mailto:, javascript:)."""
    if not url.startswith(base_url):
        return None
    parts = urlsplit(url)
    path = unquote(parts.path)
    target = root / path.lstrip("/")
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def evaluate_page(page: str, facts: dict[str, Any], *, root: Path, base_url: str,
                  ids_of: dict[str, set[str]]) -> PageReport:
    """Turn the facts collected in the browser into failures and notes (the detection logic, testable on its own).

    ``ids_of`` maps a page (path relative to ``root``) to the element ids it holds; anchors into pages that are not
    in it are not checked.
    """
    rep = PageReport(page)
    fail = lambda kind, detail: rep.failures.append(Finding(page, kind, detail))  # noqa: E731
    if "redirect" in facts:
        target = (root / page).parent / urlsplit(facts["redirect"]).path
        if not target.is_file():
            fail("broken-link", f"redirect to {facts['redirect']} (no such page)")
        else:
            rep.notes.append(f"redirects to {facts['redirect']}")
        return rep

    for img in facts.get("images", []):
        src = img.get("src", "")
        if src.startswith("data:"):
            continue
        if not img.get("complete") or not img.get("natural_width"):
            fail("broken-image", src or img.get("url", "?"))

    for link in facts.get("links", []):
        href, url = link.get("href") or "", link.get("url") or ""
        if not href or href == "#" or href.startswith(("mailto:", "javascript:")):
            continue
        target = local_target(url, base_url, root)
        if target is None:
            continue
        path, fragment = target
        if not path.is_file():
            fail("broken-link", f"{href} (no file {path.relative_to(root)})")
            continue
        rel = path.relative_to(root).as_posix()
        if fragment and rel in ids_of and fragment not in ids_of[rel]:
            fail("broken-link", f"{href} (no anchor #{fragment} in {rel})")

    for block in facts.get("text_blocks", []):
        for name, pattern in RAW_MATH.items():
            m = pattern.search(block)
            if m:
                fail("raw-math", f"{name} left as text: {m.group(0)[:80]!r}")
                break
    for err in facts.get("math_errors", []):
        fail("raw-math", f"MathJax error: {err!r}")

    if facts.get("traceback_boxes"):
        fail("error-output", f"{facts['traceback_boxes']} traceback/error box(es) in the outputs")
    for out in facts.get("outputs", []):
        m = ERROR_TEXT.search(out.get("text", ""))
        if m:
            fail("error-output", f"output shows {m.group(0).strip()!r}")
        elif "stderr" in out.get("classes", "") and out.get("text", "").strip():
            rep.notes.append(f"stderr output: {out['text'].strip()[:120]!r}")

    if is_chapter_page(page) and not facts.get("launch_links"):
        fail("no-launch-button", "chapter page without a Colab launch link")

    haystacks = [facts.get("all_text", "")]
    haystacks += [link.get("href") or "" for link in facts.get("links", [])]
    haystacks += [img.get("src") or "" for img in facts.get("images", [])]
    for name, pattern in OUTSIDE_REFERENCES.items():
        for text in haystacks:
            m = pattern.search(text)
            if m:
                snippet = text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
                fail("outside-reference", f"{name!r} in {snippet!r}")
                break

    for table in facts.get("wide_tables", []):
        rep.notes.append(f"table {table['width']} px wide, wider than the text column: {table['text']!r}")
    return rep


def html_pages(root: Path) -> list[str]:
    """Every page of the built book (relative paths), without Sphinx's generated search/index pages and sources."""
    skip_dirs = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static", "reports"}
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip_dirs or rel.name in ("search.html", "genindex.html"):
            continue
        pages.append(rel.as_posix())
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # noqa: D401 - silence the per-request log
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a daemon thread; returns the server and its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def check_book(root: Path, *, screenshots: Path | None, chromium: str, mathjax: Path | None = None,
               pages: list[str] | None = None, timeout_s: float = 60.0) -> list[PageReport]:
    """Open every page, collect facts, screenshot, and evaluate; returns one report per page."""
    from playwright.sync_api import sync_playwright

    root = root.resolve()
    pages = pages if pages is not None else html_pages(root)
    if not pages:
        raise FileNotFoundError(f"no HTML pages under {root}: build the book first (make book)")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    server, base = serve(root)
    facts_of: dict[str, dict[str, Any]] = {}
    shots: dict[str, str] = {}
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="check-book-profile-") as profile:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900}, device_scale_factor=1)

            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(base):
                    r.continue_()
                    return
                if mathjax is not None and "mathjax" in url.lower() and "/es5/" in url:
                    local = mathjax / "es5" / urlsplit(url).path.split("/es5/", 1)[1]
                    if local.is_file():
                        r.fulfill(path=str(local))
                        return
                r.abort()  # nothing outside the book is fetched

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.set_default_timeout(timeout_s * 1000)
            for rel in pages:
                redirect = REDIRECT.search((root / rel).read_text(encoding="utf-8", errors="replace")[:4000])
                if redirect:  # e.g. index.html -> book/intro.html: check the target exists, nothing to render
                    facts_of[rel] = {"redirect": redirect.group(1)}
                    continue
                page.goto(base + rel, wait_until="load")
                page.evaluate("() => document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
                page.wait_for_load_state("load")
                facts_of[rel] = page.evaluate(COLLECT_JS)
                if screenshots is not None:
                    shot = screenshots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                    page.screenshot(path=str(shot), full_page=True)
                    shots[rel] = str(shot)
            ctx.close()
    finally:
        server.shutdown()
    ids_of = {rel: set(f.get("ids", [])) for rel, f in facts_of.items()}
    reports = []
    for rel in pages:
        rep = evaluate_page(rel, facts_of[rel], root=root, base_url=base, ids_of=ids_of)
        rep.screenshot = shots.get(rel)
        if facts_of[rel].get("has_math") and not facts_of[rel].get("mathjax"):
            rep.notes.append("MathJax did not run on this page (offline without --mathjax?)")
        reports.append(rep)
    return reports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one full-page PNG per page")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    ap.add_argument("--mathjax", type=Path, default=None, help="local MathJax 3 package folder (holds es5/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = ap.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"no {args.html}/index.html: build the book first (make book)", file=sys.stderr)
        return 1
    if not Path(args.chromium).is_file():
        print(f"no Chromium at {args.chromium}: apt-get install chromium (or pass --chromium)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    reports = check_book(args.html, screenshots=args.screenshots, chromium=args.chromium, mathjax=args.mathjax)
    failures = [f for r in reports for f in r.failures]
    for r in reports:
        status = "FAIL" if r.failures else "ok"
        print(f"{status:4} {r.page}" + (f"  ({len(r.notes)} note(s))" if r.notes else ""))
        for f in r.failures:
            print(f"     - {f.kind}: {f.detail}")
        for n in r.notes[:5]:
            print(f"     . {n}")
    print(f"check-book: {len(reports)} pages, {len(failures)} failure(s), {time.perf_counter() - t0:.0f} s"
          + (f"; screenshots in {args.screenshots}" if args.screenshots else ""))
    if args.json:
        args.json.write_text(json.dumps([{"page": r.page, "failures": [str(f) for f in r.failures], "notes": r.notes,
                                          "screenshot": r.screenshot} for r in reports], indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
