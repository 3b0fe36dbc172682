"""Turning documentation markup into one-line prose documents (book: README, the offline corpus): HTML pages,
reStructuredText, AsciiDoc, POD and Markdown, with code blocks, tables and navigation removed and whitespace
collapsed. Used by the corpus's sources (:mod:`aen_lib.data.corpus_sources`)."""

from __future__ import annotations

import gzip
import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator



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
