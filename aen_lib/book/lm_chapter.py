"""The language-model chapters' data in one call: load the LM, pack the corpus as the paper packs the Pile, harvest
(or find in the cache) the held-out and training activations at the hook block, and build the training stream.

Chapters 8 and 9 read their activations through :func:`lm_chapter_data`, so that the two agree on every key of the
cache (chapter 9 reuses chapter 8's caches when it finds them) and neither writes the pipeline out again. The pieces
are the library's own (:mod:`aen_lib.data.lm`, :mod:`aen_lib.data.text`, :mod:`aen_lib.data.activation_cache`,
:mod:`aen_lib.data.sources`); this module only wires them the way the chapters use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

__all__ = ["LMChapterData", "lm_chapter_data"]


@dataclass
class LMChapterData:
    """What a language-model chapter trains and evaluates on (see :func:`lm_chapter_data`)."""

    model: str
    layer: int
    lm: Any
    tokenizer: Any
    d_model: int
    n_layers: int
    dataset_id: str
    window: int
    cache_root: str | None
    texts: Any = field(repr=False)
    eos: int | None = None
    eval_cache: Any = None
    eval_windows: int = 0
    eval_acts: Any = None
    """:class:`aen_lib.data.harvest.Activations` of the first ``eval_windows`` held-out windows."""
    splice_ids: Any = None
    """``[splice_windows, window]`` token ids of the held-out documents, for spliced evaluation."""
    train_cache: Any = None
    train_windows: int = 0
    source: Any = None
    """The training stream (a cache source, or an :class:`~aen_lib.data.sources.ActivationSource` over the LM)."""
    train_tokens: int | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.model} block {self.layer} of {self.n_layers} (d = {self.d_model})"

    def windows_of(self, docs: Any, loop: bool = False) -> Iterator[Any]:
        """The packed windows of a document range, the same sequence on every call (the paper's packing)."""
        from ..data.text import iter_documents, iter_windows

        return iter_windows(iter_documents(self.texts, docs, loop=loop), self.tokenizer, self.window,
                            eos_token_id=self.eos)

    def cache_config(self, docs: Any) -> Any:
        """The activation cache's key for a document range: the LM's dtype, a fingerprint of its weights and
        tokenizer, the hook, the window and the dataset."""
        from ..data.activation_cache import CacheConfig

        return CacheConfig.for_lm(self.lm, self.tokenizer, model=self.model, layer=self.layer, d_model=self.d_model,
                                  window=self.window, dataset=self.dataset_id, doc_start=docs.start,
                                  doc_stop=docs.stop)

    def harvest(self, docs: Any, windows: int, *, lm_batch_size: int = 8) -> Any:
        """The activation cache of a document range, harvested once (found again by its key afterwards)."""
        from ..data.activation_cache import activation_cache_dir, write_activation_cache

        cfg = self.cache_config(docs)
        return write_activation_cache(activation_cache_dir(cfg, self.cache_root), self.lm, self.windows_of(docs), cfg,
                                      max_windows=windows, batch_size=lm_batch_size, progress=False)

    def summary(self) -> str:
        """What was harvested, in a few lines (printed by the chapters)."""
        lines = [f"held-out: {len(self.eval_acts):,} activations from {self.eval_windows} windows; splice set "
                 f"{tuple(self.splice_ids.shape)}"]
        if self.train_cache is not None:
            # the cache folder's name only: its parent is the reader's own cache directory
            lines.append(f"training stream: {self.train_tokens:,} activations of {self.train_windows} windows, from "
                         f"the activation cache activations/{self.train_cache.path.name}")
        else:
            lines.append("training stream: harvested from the LM while training (no cache)")
        lines.append(f"harvest (or cache lookup): {self.seconds:.0f} s")
        lines.append(f"raw token norms at block {self.layer}: median {self.eval_acts.norms.median():.1f}, max "
                     f"{self.eval_acts.norms.max():.1f}; after normalisation every token has norm sqrt(d) = "
                     f"{self.d_model ** 0.5:.1f}")
        return "\n".join(lines)


def _first_windows(cache: Any, windows: int) -> Any:
    """The activations of a cache's first ``windows`` windows (a cache may hold more, from an earlier run)."""
    from ..data.harvest import Activations

    acts = cache.load()
    if windows >= cache.n_windows:
        return acts
    keep = acts.window_index < windows
    return Activations(**{k: v[keep] for k, v in acts.to_tensors().items()}, normalized=acts.normalized)


def lm_chapter_data(model: str, *, layer: int = -1, dataset: str = "offline", lm_dtype: str = "float32",
                    device: Any = "cpu", cache_root: str | Path | None = None, window: int = 128,
                    val_docs: int, train_start_doc: int, eval_windows: int, train_windows: int,
                    splice_windows: int = 0, batch_size: int = 4096, lm_batch_size: int = 8,
                    shuffle_buffer: int = 0, activation_store: str = "cache", train: bool = True) -> LMChapterData:
    """Load ``model``, harvest the held-out documents ``[0, val_docs)`` and the training documents from
    ``train_start_doc`` at block ``layer`` (``-1``: the registry's hook block), and build the training stream.

    ``activation_store`` ``"cache"`` trains on the first ``train_windows`` windows of a harvested cache (looped,
    shuffled through ``shuffle_buffer`` rows with seed 0); ``"stream"`` harvests from the LM while training (the
    paper profile's way). ``train=False`` harvests the held-out part only. Errors name the parameter to change.
    """
    import torch

    from ..data.lm import d_model, document_separator_id, load_lm, lookup_model, num_layers
    from ..data.sources import ActivationSource, cache_source
    from ..data.text import DocRange, available_offline_sources, load_text_dataset

    if activation_store not in ("cache", "stream"):
        raise ValueError(f"activation_store must be 'cache' or 'stream', got {activation_store!r}")
    entry = lookup_model(model)
    hook = layer if layer >= 0 else (entry.hook_layer if entry is not None else None)
    if hook is None:
        raise ValueError(f"model {model!r} is not in the registry: give the hook block with the parameter 'layer'")
    lm, tokenizer = load_lm(model, dtype=getattr(torch, lm_dtype), device=device, cache_dir=cache_root)
    n_layers = num_layers(lm)
    if not 0 <= hook < n_layers:
        raise ValueError(f"parameter 'layer' = {hook} is outside the model's blocks 0..{n_layers - 1}")
    if dataset == "offline":
        texts = load_text_dataset("offline", cache_dir=cache_root)
        dataset_id = "offline:" + "+".join(available_offline_sources()) + ":shuffle0"
    else:
        texts = load_text_dataset(dataset, split="train", streaming=True)
        dataset_id = dataset
    data = LMChapterData(model=model, layer=hook, lm=lm, tokenizer=tokenizer, d_model=d_model(lm), n_layers=n_layers,
                         dataset_id=dataset_id, window=window, cache_root=None if cache_root is None else str(cache_root),
                         texts=texts, eos=document_separator_id(tokenizer, model))
    t = time.perf_counter()
    val, train_docs = DocRange(0, val_docs), DocRange(train_start_doc)
    data.eval_cache = data.harvest(val, eval_windows, lm_batch_size=lm_batch_size)
    data.eval_windows = eval_windows
    data.eval_acts = _first_windows(data.eval_cache, eval_windows)
    if splice_windows:
        data.splice_ids = torch.stack(list(islice(data.windows_of(val), splice_windows)))
    if train:
        data.train_windows = train_windows
        if activation_store == "cache":
            data.train_cache = data.harvest(train_docs, train_windows, lm_batch_size=lm_batch_size)
            # only the first train_windows windows, so the batches do not depend on what else the cache holds
            data.source = cache_source(data.train_cache, batch_size, max_windows=train_windows, loop=True,
                                       shuffle_buffer=shuffle_buffer, seed=0, device=device, dtype=torch.float32)
            data.train_tokens = int(data.source.n_rows)
        else:
            data.source = ActivationSource.from_model(lm, lambda: data.windows_of(train_docs), hook, batch_size,
                                                      lm_batch_size=lm_batch_size, loop=True,
                                                      shuffle_buffer=shuffle_buffer, seed=0, dtype=torch.float32)
    data.seconds = time.perf_counter() - t
    return data
