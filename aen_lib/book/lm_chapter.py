"""The language-model chapters' data in one call: load the LM, pack the corpus as the paper packs the Pile, harvest
(or find in the cache) the held-out and training activations at the hook block, and build the training stream.

Chapters 8 and 9 read their activations through :func:`lm_chapter_data`, so that the two agree on every key of the
cache (chapter 9 reuses chapter 8's caches when it finds them) and neither writes the pipeline out again. Chapter 9
gets its two SAEs through :func:`lm_chapter_saes`: chapter 8's, found by the manifest chapter 8 writes beside them,
or two trained on the spot. The pieces are the library's own (:mod:`aen_lib.data.lm`, :mod:`aen_lib.data.text`,
:mod:`aen_lib.data.activation_cache`, :mod:`aen_lib.data.sources`, :mod:`aen_lib.training.sweep`); this module only
wires them the way the chapters use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .notebook import ChapterContext

__all__ = ["LMChapterData", "LMChapterSAEs", "SAE_ARCHS", "lm_chapter_data", "lm_chapter_saes"]


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


# ----------------------------------------------------------------------------------------------------------------
# Chapter 9: chapter 8's SAEs, or two of its own
# ----------------------------------------------------------------------------------------------------------------
SAE_ARCHS = ("aen", "topk")
"""The two SAEs chapter 9 looks at, in this order."""
PREVIOUS_CHAPTER = "08_pythia_reproduction"
"""The chapter whose ``saes/manifest.json`` :func:`lm_chapter_saes` reads."""
MANIFEST = "saes/manifest.json"
REUSE_CHOICES = ("auto", "require", "never")
_MANIFEST_KEYS = ("model", "layer", "saes")  # read to decide whether the SAEs fit
_REUSE_KEYS = ("val_docs", "train_start_doc", "eval_cache", "eval_windows", "train")  # read when they are reused
_SAE_KEYS = ("folder", "label", "history")


@dataclass
class LMChapterSAEs:
    """Two SAEs, the LM they read and the activations they are looked at on (see :func:`lm_chapter_saes`)."""

    model: str
    layer: int
    d_model: int
    lm: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    reused: bool
    """True: chapter 8's SAEs (``manifest`` says which); False: two trained by :func:`lm_chapter_saes`."""
    source: str
    """Where the SAEs come from, in one line."""
    replay: str
    """What the training stream replayed for the firing frequencies is, in words."""
    saes: dict[str, Any] = field(repr=False)
    """``{"aen": SAE, "topk": SAE}`` on the caller's device, in eval mode."""
    histories: dict[str, list[dict[str, Any]]] = field(repr=False)
    """The training logs of the two SAEs (chapter 8's as its manifest recorded them)."""
    eval_cache: Any = field(repr=False)
    eval_windows: int
    eval_acts: Any = field(repr=False)
    """:class:`aen_lib.data.harvest.Activations` of the first ``eval_windows`` held-out windows."""
    train_cache: Any = field(repr=False)
    train: dict[str, Any]
    """The training stream to replay: ``steps``, ``batch_size``, ``shuffle_buffer``, ``source_seed``."""
    train_windows: int
    train_acts: Any = field(repr=False)
    """The activations of the first ``train_windows`` windows of ``train_cache`` (those the SAEs trained on)."""
    note: str | None = None
    """Why chapter 8's SAEs were not used, when reuse was allowed but they were not found or did not fit."""
    manifest: Path | None = None
    """Chapter 8's ``saes/manifest.json`` when its SAEs are reused."""

    def summary(self) -> str:
        """Where the SAEs come from and how many activations they are looked at on (printed by chapter 9)."""
        lines = [f"NOTE: {self.note}"] if self.note else []
        lines.append(self.source)
        lines.append(f"model {self.model} block {self.layer}; training activations {len(self.train_acts):,}, "
                     f"held-out {len(self.eval_acts):,}")
        return "\n".join(lines)


def _read_manifest(path: Path) -> dict[str, Any]:
    """Chapter 8's SAE manifest, with the keys that decide whether its SAEs fit (errors say what to do)."""
    from .notebook import load_json

    manifest = load_json(path)
    missing = [k for k in _MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise ValueError(f"chapter 8's SAE manifest {path} lacks {missing}: it is not one chapter 8 wrote. Run "
                         f"{PREVIOUS_CHAPTER} again with this results_root, or set reuse_chapter7='never' to train the "
                         "two SAEs here")
    return manifest


def _check_reusable(manifest: dict[str, Any], path: Path, cache_root: str | Path | None) -> None:
    """Every file a manifest that fits names is there, before the LM is loaded (errors name the file and the fix)."""
    from ..data.activation_cache import ActivationCache, CacheConfig, activation_cache_dir

    rerun = (f"run {PREVIOUS_CHAPTER} again with this results_root and cache_root, or set reuse_chapter7='never' "
             "to train the two SAEs here")
    missing = [k for k in _REUSE_KEYS if k not in manifest]
    missing += [f"saes.{a}.{k}" for a in SAE_ARCHS for k in _SAE_KEYS if k not in manifest["saes"][a]]
    if manifest.get("train_cache") and "train_windows" not in manifest:
        missing.append("train_windows")
    if missing:
        raise ValueError(f"chapter 8's SAE manifest {path} lacks {missing}: {rerun}")
    for a in SAE_ARCHS:
        folder = path.parent / manifest["saes"][a]["folder"]
        if not folder.is_dir():
            raise FileNotFoundError(f"chapter 8's SAE manifest {path} names the {a} SAE folder "
                                    f"{manifest['saes'][a]['folder']!r}, but {folder} does not exist: {rerun}")
    for key in ("eval_cache", "train_cache"):
        if manifest.get(key):
            folder = activation_cache_dir(CacheConfig.from_dict(manifest[key]), cache_root)
            if not (folder / ActivationCache.MANIFEST).is_file():
                raise FileNotFoundError(
                    f"chapter 8's SAE manifest {path} names the activation cache {folder} ({key}), which is not "
                    f"there: give this chapter the cache_root chapter 8 ran with, or {rerun}")


def lm_chapter_saes(ctx: ChapterContext, *, reuse: str = "auto", model: str, layer: int = -1, dataset: str = "offline",
                    device: Any = "cpu", cache_root: str | Path | None = None, val_docs: int, train_start_doc: int,
                    train_windows: int, eval_windows: int, d_sae: int, steps: int, batch_size: int,
                    shuffle_buffer: int, aen_l1: float, aen_l2: float, aen_beta: float, topk_k: int,
                    step_window_fraction: float) -> LMChapterSAEs:
    """Chapter 9's AEN and TopK SAEs at block ``layer`` of ``model``, with their held-out and training activations.

    ``ctx`` is the chapter's :class:`aen_lib.book.notebook.ChapterContext`. With ``reuse`` ``"auto"`` or
    ``"require"`` it looks for chapter 8's ``saes/manifest.json`` (:meth:`ChapterContext.previous`): when its model
    and layer match and it saved both SAEs, those are loaded and the activation caches it recorded are read from
    ``cache_root`` (nothing is harvested, except a training sample of ``train_windows`` windows from its training
    documents when chapter 8 streamed). Otherwise (``"never"``, or ``"auto"`` with no fitting manifest, said in
    ``note``) it harvests ``eval_windows`` held-out windows of documents ``[0, val_docs)`` and ``train_windows`` from
    ``train_start_doc`` into the cache, trains the two SAEs on one stream (``d_sae`` latents, ``steps`` steps of
    ``batch_size``; the paper's AEN objective with ``aen_l1``, ``aen_l2``, ``aen_beta`` and TopK with ``topk_k``;
    dead latents tracked over ``step_window_fraction`` of the steps) and saves them to ``<ctx.results>/saes/``.

    Errors: ``"require"`` without chapter 8's manifest raises
    :class:`aen_lib.book.notebook.MissingResultsError`, with one that does not fit ``ValueError``; a fitting manifest
    that lacks a key or names an SAE folder or activation cache that is not there raises naming it and the fix.
    """
    import torch

    from ..data.activation_cache import ActivationCache, CacheConfig, activation_cache_dir
    from ..data.lm import d_model, load_lm, lookup_model
    from ..data.sources import cache_source
    from ..data.text import DocRange
    from ..sae.config import SAEConfig
    from ..sae.io import load_sae, save_sae
    from ..training.sweep import train_sweep
    from ..training.train import TrainConfig

    if reuse not in REUSE_CHOICES:
        raise ValueError(f"parameter 'reuse_chapter7' = {reuse!r}; allowed: {list(REUSE_CHOICES)}")
    entry = lookup_model(model)
    hook = layer if layer >= 0 else (entry.hook_layer if entry is not None else None)
    if hook is None:
        raise ValueError(f"model {model!r} is not in the registry: give the hook block with the parameter 'layer'")

    # Chapter 8's results: in this run's results folder, or (make reproduce) in the folder of chapter 8's own run.
    ch8_dir = (ctx.previous(PREVIOUS_CHAPTER, must_contain=MANIFEST, required=reuse == "require")
               if reuse != "never" else None)
    path = ch8_dir / MANIFEST if ch8_dir is not None else None
    manifest = _read_manifest(path) if path is not None else None
    mismatch = []
    if manifest is not None:
        mismatch = [f"{key}: chapter 8 has {manifest[key]!r}, this chapter {want!r}"
                    for key, want in (("model", model), ("layer", hook)) if manifest[key] != want]
        mismatch += [f"chapter 8 saved no {a} SAE" for a in SAE_ARCHS if a not in manifest["saes"]]
    if mismatch and reuse == "require":
        raise ValueError(f"reuse_chapter7='require', but chapter 8's SAEs at {path.parent} do not fit: "
                         + "; ".join(mismatch))
    reused = manifest is not None and not mismatch
    note = None
    if not reused and reuse != "never":
        note = ("chapter 8's SAEs were not used (" + ("; ".join(mismatch) if mismatch else "chapter 8 has not run "
                "with these results folders") + "): this chapter harvests and trains its own two SAEs at the "
                "fallback sizes.")
    if reused:
        _check_reusable(manifest, path, cache_root)

    data = None
    if not reused or not manifest.get("train_cache"):
        # the LM, with the corpus packed as chapter 8 packs it, to harvest (or find) a training sample and, when
        # chapter 8 is not reused, this chapter's own held-out cache
        data = lm_chapter_data(model, layer=hook, dataset=dataset, device=device, cache_root=cache_root,
                               val_docs=manifest["val_docs"] if reused else val_docs, train_start_doc=train_start_doc,
                               eval_windows=eval_windows, train_windows=train_windows, batch_size=batch_size,
                               shuffle_buffer=shuffle_buffer, train=False)
        lm, tokenizer = data.lm, data.tokenizer
    else:
        lm, tokenizer = load_lm(model, dtype=torch.float32, device=device, cache_dir=cache_root)

    if reused:
        # chapter 8's held-out cache, found by the key it recorded
        eval_cache = ActivationCache(activation_cache_dir(CacheConfig(**manifest["eval_cache"]), cache_root))
        eval_n = manifest["eval_windows"]
        if manifest.get("train_cache"):
            # chapter 8 trained on a cache: replay exactly its stream of batches
            train_cache = ActivationCache(activation_cache_dir(CacheConfig(**manifest["train_cache"]), cache_root))
            train, train_n = manifest["train"], manifest["train_windows"]
            replay = "chapter 8's training stream, batch for batch"
        else:
            # chapter 8 streamed (the paper profile): a sample of its training documents, in order, stands in
            train_cache = data.harvest(DocRange(manifest["train_start_doc"]), train_windows)
            train = {"steps": train_cache.n_tokens // batch_size, "batch_size": batch_size, "shuffle_buffer": 0,
                     "source_seed": 0}
            train_n = train_windows
            replay = f"{train_cache.n_tokens:,} activations of chapter 8's training documents, in order"
        saes = {a: load_sae(path.parent / manifest["saes"][a]["folder"], device=device)[0] for a in SAE_ARCHS}
        histories = {a: manifest["saes"][a]["history"] for a in SAE_ARCHS}
        source = "chapter 8's SAEs: " + ", ".join(manifest["saes"][a]["label"] for a in SAE_ARCHS)
    else:
        eval_cache = data.eval_cache
        train_cache = data.harvest(DocRange(train_start_doc), train_windows)
        eval_n = eval_windows
        train = {"steps": steps, "batch_size": batch_size, "shuffle_buffer": shuffle_buffer, "source_seed": 0}
        train_n = train_windows
        replay = "the training stream of this chapter's SAEs, batch for batch"
        base = dict(d_in=d_model(lm), d_sae=d_sae, warmup_steps=steps // 6, ramp_steps=steps // 12)
        cfgs = [SAEConfig(architecture="aen", l1=aen_l1, l2=aen_l2, ema_beta=aen_beta, **base),
                SAEConfig(architecture="topk", k=topk_k, **base)]
        src = cache_source(train_cache, batch_size, max_windows=train_windows, loop=True, shuffle_buffer=shuffle_buffer,
                           seed=0, device=device, dtype=torch.float32)
        result = train_sweep(cfgs, src, TrainConfig(steps=steps, batch_size=batch_size, grad_clip=1.0,
                                                    log_every=max(1, steps // 20),
                                                    dead_window_steps=max(1, round(step_window_fraction * steps)),
                                                    progress=False), device=device)
        saes = {a: m.sae.to(device).eval() for a, m in zip(SAE_ARCHS, result.members)}
        histories = {a: m.history for a, m in zip(SAE_ARCHS, result.members)}
        for a in SAE_ARCHS:
            save_sae(saes[a].cpu(), ctx.results / "saes" / a, overwrite=True,
                     metadata={"model_name": model, "hook_layer": hook},
                     normalization="per_token_l2" if train_cache.config.normalization != "none" else "none")
            saes[a].to(device)
        source = "two SAEs trained in this chapter: " + ", ".join(s.cfg.label for s in saes.values())

    train_acts = _first_windows(train_cache, train_n)  # only the windows the SAEs trained on
    return LMChapterSAEs(model=model, layer=hook, d_model=d_model(lm), lm=lm, tokenizer=tokenizer, reused=reused,
                         source=source, replay=replay, saes=saes, histories=histories, eval_cache=eval_cache,
                         eval_windows=eval_n, eval_acts=_first_windows(eval_cache, eval_n), train_cache=train_cache,
                         train=train, train_windows=train_n, train_acts=train_acts, note=note,
                         manifest=path if reused else None)
