"""Harvesting the language-model sets' activations (book: the language-model chapters; README, the offline corpus):
the corpus split's documents packed as the paper packs the Pile, run through the registry's model to its middle
block, stored in a resumable cache; and the *harvest record* that identifies a cache's contents on any machine
(:func:`harvest_record`, :func:`compare_harvests`). The command line is :mod:`aen_lib.results.lmref`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from ..data.activation_cache import ActivationCache, CacheConfig, activation_cache_dir, write_activation_cache
from .records import write_result

LM_NAME = "smollm2-135m"
"""The registry's offline model (:func:`aen_lib.data.lm.lookup_model`)."""
LM_WINDOW = 128
"""Tokens per window: the paper's packing for both of its language models."""
HARVEST_LM_DTYPE = "bfloat16"
"""The dtype the LM runs in while harvesting (the cache key includes it; a float32 harvest lives elsewhere)."""
HARVEST_STORAGE = "float16"
"""Storage dtype of the cached activations (10-bit mantissa; the normalised values are far inside its range)."""
DEFAULT_CORPUS = Path("~/.cache/aen_lib/corpus")
DEFAULT_CACHE_ROOT = Path("~/.cache/aen_lib/lm_caches")
SHARD_MOMENT_TOLERANCE = 1e-5
"""Relative difference of a shard's sum or sum of squares above which two harvests of it read different tokens:
the same tokens on two CPUs differ by about 1e-7 (README, the offline corpus)."""
RECORD_NAME = "harvest_record.json"
PROBE_ROWS = 2


def corpus_documents(corpus: str | os.PathLike[str], split: str = "train") -> Iterator[str]:
    """A split's documents (``"train"`` or ``"heldout"``), one per line, in the manifest's order (the split's
    checksum verified first)."""
    from ..data.corpus import split_file

    path = split_file(Path(corpus).expanduser(), split)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line:
                yield line


def _corpus_id(corpus: str | os.PathLike[str], split: str = "train") -> str:
    from ..data.corpus import read_manifest

    m = read_manifest(Path(corpus).expanduser())
    return f"aen-corpus:{split}:{m['splits'][split]['sha256'][:16]}"


def harvest_config(lm: torch.nn.Module, tokenizer: Any, corpus: str | os.PathLike[str], *, layer: int,
                   model: str = LM_NAME, split: str = "train") -> CacheConfig:
    """The cache key of a harvest of one of ``corpus``'s splits: the LM (name, dtype, weight and tokenizer
    fingerprints), the block, the window, the normalisation, the storage dtype and the split's checksum."""
    return CacheConfig.for_lm(lm, tokenizer, model=model, layer=layer, window=LM_WINDOW, normalization="per_token_l2",
                              drop_first=1, dtype=HARVEST_STORAGE, dataset=_corpus_id(corpus, split))


def load_harvest_lm(model: str = LM_NAME, lm_dtype: str = HARVEST_LM_DTYPE) -> tuple[torch.nn.Module, Any, int]:
    """The registry's model in ``lm_dtype`` with its tokenizer and hook block."""
    from ..data.lm import load_lm, lookup_model

    entry = lookup_model(model)
    if entry is None:
        raise ValueError(f"{model!r} is not a registered model; the language-model sets use {LM_NAME!r}")
    lm, tok = load_lm(model, dtype=getattr(torch, lm_dtype), device="cpu")
    return lm, tok, entry.hook_layer


def harvest(corpus: str | os.PathLike[str] = DEFAULT_CORPUS, cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT,
            *, windows: int | None = None, model: str = LM_NAME, lm_dtype: str = HARVEST_LM_DTYPE,
            batch_size: int = 16, progress: bool = True, lm: Any = None, split: str = "train"
            ) -> tuple[ActivationCache, dict[str, Any]]:
    """Harvest (or continue harvesting) the first ``windows`` windows (None: all) of one of ``corpus``'s splits;
    returns the cache and its harvest record, also written as ``harvest_record.json`` in the cache folder.

    ``lm`` = ``(model, tokenizer, layer)`` replaces the registry's model (tests use a tiny one)."""
    from ..data.text import iter_windows

    lm_model, tok, layer = lm if lm is not None else load_harvest_lm(model, lm_dtype)
    cfg = harvest_config(lm_model, tok, corpus, layer=layer, model=model, split=split)
    folder = activation_cache_dir(cfg, Path(cache_root).expanduser())
    stream = iter_windows(corpus_documents(corpus, split), tok, LM_WINDOW, eos_token_id=tok.eos_token_id)
    cache = write_activation_cache(folder, lm_model, stream, cfg, max_windows=windows, batch_size=batch_size,
                                   progress=progress, tokenizer=tok)
    record = harvest_record(cache)
    write_result(folder / RECORD_NAME, "harvest", record, overwrite=True)
    return cache, record


def _corpus_manifest(corpus: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the corpus a set trained on (package versions, per-source and split checksums), kept in its
    provenance so that the corpus can be rebuilt from the same package versions on another machine
    (``python -m aen_lib.data.corpus packages --pin provenance.json``); None for a test's corpus without one."""
    from ..data.corpus import read_manifest

    try:
        return read_manifest(Path(corpus).expanduser())
    except (FileNotFoundError, ValueError):
        return None


def harvest_record(cache: ActivationCache | str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a harvest's contents on any machine: its key, windows and rows, a checksum of its contents
    (sha256 over every stored tensor's bytes, shard after shard, so a harvest resumed midway, whose shards break
    elsewhere, checks equal to one written in one go), each shard's sum and sum of squares (float64) and its first
    :data:`PROBE_ROWS` rows."""
    if not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    per_field: dict[str, Any] = {}  # one running hash per stored tensor: shard boundaries do not count
    moments = []
    for i in range(len(cache.shards)):
        shard = cache.load_shard(i)
        for name, t in shard.to_tensors().items():
            t = t.contiguous()
            per_field.setdefault(name, hashlib.sha256()).update(
                (t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t).numpy().tobytes())
        a = shard.acts.double()
        moments.append({"rows": int(a.shape[0]), "sum": float(a.sum()), "sum_sq": float(a.pow(2).sum()),
                        "first_window": int(cache.shards[i]["windows"][0])})
    h = hashlib.sha256()
    for name in sorted(per_field):
        h.update(f"{name}:{per_field[name].hexdigest()};".encode())
    probe = cache.load_shard(0).acts[:PROBE_ROWS].float().tolist() if cache.shards else []
    return {"config": cache.config.to_dict(), "complete": bool(cache.complete), "windows": int(cache.n_windows),
            "rows": int(cache.n_tokens), "shards": len(cache.shards), "checksum": h.hexdigest(),
            "shard_moments": moments, "probe_rows": probe}


def compare_harvests(recorded: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Whether a re-harvest reproduces a recorded one: ``same_key`` (cache configs equal but for nothing),
    ``match`` (equal checksums over the same windows), and otherwise ``probe_max_abs_diff`` (largest difference of
    the probe rows), ``moment_max_rel_diff`` (of the shards' sums of squares, which per-token normalisation keeps
    nearly fixed) and ``sum_max_rel_diff`` (of their plain sums, which move with the text), over the shards both hold,
    and ``first_differing_shard``: the first shard whose rows or moments differ by more than
    :data:`SHARD_MOMENT_TOLERANCE` (float rounding between CPUs stays far below it), None when none does. Where the
    recorded shard layout is known, ``identical_windows`` is the number of leading windows before that shard: a
    re-harvest that agrees up to there read the same tokens there."""
    out: dict[str, Any] = {"same_key": recorded["config"] == new["config"],
                           "key_differences": sorted(k for k in recorded["config"]
                                                     if recorded["config"][k] != new["config"].get(k)),
                           "windows": [recorded["windows"], new["windows"]]}
    out["match"] = bool(out["same_key"] and recorded["windows"] == new["windows"]
                        and recorded["checksum"] == new["checksum"])
    if not out["match"]:
        a, b = torch.tensor(recorded["probe_rows"]), torch.tensor(new["probe_rows"])
        out["probe_max_abs_diff"] = float((a - b).abs().max()) if a.shape == b.shape and a.numel() else None
        pairs = list(zip(recorded["shard_moments"], new["shard_moments"]))
        rel = [abs(x["sum_sq"] - y["sum_sq"]) / max(abs(x["sum_sq"]), 1e-30) for x, y in pairs
               if x["rows"] == y["rows"]]
        out["moment_max_rel_diff"] = max(rel) if rel else None
        sums = [abs(x["sum"] - y["sum"]) / max(abs(x["sum"]), 1e-30) for x, y in pairs if x["rows"] == y["rows"]]
        out["sum_max_rel_diff"] = max(sums) if sums else None
        out["shards_compared"] = len(rel)
        first = next((i for i, (x, y) in enumerate(pairs)
                      if x["rows"] != y["rows"] or any(abs(x[k] - y[k]) > SHARD_MOMENT_TOLERANCE * max(abs(x[k]), 1e-30)
                                                       for k in ("sum", "sum_sq"))), None)
        out["first_differing_shard"] = first
        first_windows = [m.get("first_window") for m in recorded["shard_moments"]]
        per_window = recorded["config"].get("window", 0) - recorded["config"].get("drop_first", 0)
        if None in first_windows and per_window > 0:  # a record from before shards named their first window
            starts = [sum(m["rows"] for m in recorded["shard_moments"][:i]) for i in range(len(first_windows))]
            first_windows = [r // per_window if r % per_window == 0 else None for r in starts]
        if first is not None and first_windows[first] is not None:
            out["identical_windows"] = int(first_windows[first])
    return out
