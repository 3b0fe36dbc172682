"""The language-model reference sets: SmolLM2-135M activations harvested from the offline corpus into a cache, and
SAEs of 8 x d_model trained on it with the same machinery and provenance as the synthetic sets
(:mod:`aen_lib.reference`). Book: the language-model chapters and the README's reference results.

The pipeline, one command per stage (``python -m aen_lib.lmref <stage>``):

* ``harvest``: the corpus's training split (:func:`aen_lib.corpus.split_file`), packed as the paper packs the Pile
  (one EOS after each document, 128-token windows that cross documents, no BOS), through the registry's model to
  the output of its middle block (:data:`aen_lib.lm.REGISTRY`; block 15 of 30 for SmolLM2-135M), position 0 of
  each window dropped (the attention sink), every token rescaled to norm sqrt(d), stored in 16 bits. Resumable:
  a second call continues where the first stopped and refuses a cache whose key differs. It ends by writing the
  cache's *harvest record*: the cache key, its checksum (sha256 over the shards' own checksums, in order), per-shard
  moments and two probe rows. A re-harvest on another machine compares itself with a recorded one
  (:func:`compare_harvests`): whether the checksums match, and if not, the largest difference of the probe rows and
  of the shard moments.
* ``train``: one set of SAEs (a study of :data:`LM_STUDIES`) on the first windows of that cache, resumably, with
  the set's provenance (commit, command, invocations with wall and CPU seconds, threads, device, the harvest record).

The model here is SmolLM2-135M-Instruct from a Q4_1 GGUF file dequantised to floating point (the offline stand-in,
:mod:`aen_lib.lm`), run in bfloat16 on CPUs with native bf16 instructions (3.5x the float32 rate there, activations
within about 1% of float32; README, performance); the paper's Pythia-70M and Llama-3.1-8B cannot be loaded offline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .activation_cache import ActivationCache, CacheConfig, activation_cache_dir, write_activation_cache

__all__ = ["LM_NAME", "LM_WINDOW", "harvest_config", "harvest", "harvest_record", "compare_harvests",
           "corpus_documents", "DEFAULT_CACHE_ROOT", "DEFAULT_CORPUS", "main"]

LM_NAME = "smollm2-135m"
"""The registry's offline model (:func:`aen_lib.lm.lookup_model`)."""
LM_WINDOW = 128
"""Tokens per window: the paper's packing for both of its language models."""
HARVEST_LM_DTYPE = "bfloat16"
"""The dtype the LM runs in while harvesting (the cache key includes it; a float32 harvest lives elsewhere)."""
HARVEST_STORAGE = "float16"
"""Storage dtype of the cached activations (10-bit mantissa; the normalised values are far inside its range)."""
DEFAULT_CORPUS = Path("~/.cache/aen_lib/corpus")
DEFAULT_CACHE_ROOT = Path("~/.cache/aen_lib/lm_caches")
RECORD_NAME = "harvest_record.json"
PROBE_ROWS = 2


def corpus_documents(corpus: str | os.PathLike[str]) -> Iterator[str]:
    """The training split's documents, one per line, in the manifest's order (its checksum verified first)."""
    from .corpus import split_file

    path = split_file(Path(corpus).expanduser(), "train")
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line:
                yield line


def _corpus_id(corpus: str | os.PathLike[str]) -> str:
    from .corpus import read_manifest

    m = read_manifest(Path(corpus).expanduser())
    return f"aen-corpus:train:{m['splits']['train']['sha256'][:16]}"


def harvest_config(lm: torch.nn.Module, tokenizer: Any, corpus: str | os.PathLike[str], *, layer: int,
                   model: str = LM_NAME) -> CacheConfig:
    """The cache key of a harvest of ``corpus``'s training split: the LM (name, dtype, weight and tokenizer
    fingerprints), the block, the window, the normalisation, the storage dtype and the corpus split's checksum."""
    return CacheConfig.for_lm(lm, tokenizer, model=model, layer=layer, window=LM_WINDOW, normalization="per_token_l2",
                              drop_first=1, dtype=HARVEST_STORAGE, dataset=_corpus_id(corpus))


def load_harvest_lm(model: str = LM_NAME, lm_dtype: str = HARVEST_LM_DTYPE) -> tuple[torch.nn.Module, Any, int]:
    """The registry's model in ``lm_dtype`` with its tokenizer and hook block."""
    from .lm import load_lm, lookup_model

    entry = lookup_model(model)
    if entry is None:
        raise ValueError(f"{model!r} is not a registered model; the language-model sets use {LM_NAME!r}")
    lm, tok = load_lm(model, dtype=getattr(torch, lm_dtype), device="cpu")
    return lm, tok, entry.hook_layer


def harvest(corpus: str | os.PathLike[str] = DEFAULT_CORPUS, cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT,
            *, windows: int | None = None, model: str = LM_NAME, lm_dtype: str = HARVEST_LM_DTYPE,
            batch_size: int = 16, progress: bool = True, lm: Any = None) -> tuple[ActivationCache, dict[str, Any]]:
    """Harvest (or continue harvesting) the first ``windows`` windows (None: all) of ``corpus``'s training split;
    returns the cache and its harvest record, also written as ``harvest_record.json`` in the cache folder.

    ``lm`` = ``(model, tokenizer, layer)`` replaces the registry's model (tests use a tiny one)."""
    from .text import iter_windows

    lm_model, tok, layer = lm if lm is not None else load_harvest_lm(model, lm_dtype)
    cfg = harvest_config(lm_model, tok, corpus, layer=layer, model=model)
    folder = activation_cache_dir(cfg, Path(cache_root).expanduser())
    stream = iter_windows(corpus_documents(corpus), tok, LM_WINDOW, eos_token_id=tok.eos_token_id)
    cache = write_activation_cache(folder, lm_model, stream, cfg, max_windows=windows, batch_size=batch_size,
                                   progress=progress, tokenizer=tok)
    record = harvest_record(cache)
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return cache, record


def harvest_record(cache: ActivationCache | str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a harvest's contents on any machine: its key, windows and rows, the checksum over its shards'
    checksums, each shard's sum and sum of squares (float64) and its first :data:`PROBE_ROWS` rows."""
    if not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    h = hashlib.sha256()
    moments = []
    for i, s in enumerate(cache.shards):
        h.update(s["sha256"].encode())
        a = cache.load_shard(i).acts.double()
        moments.append({"rows": int(a.shape[0]), "sum": float(a.sum()), "sum_sq": float(a.pow(2).sum())})
    probe = cache.load_shard(0).acts[:PROBE_ROWS].float().tolist() if cache.shards else []
    return {"config": cache.config.to_dict(), "complete": bool(cache.complete), "windows": int(cache.n_windows),
            "rows": int(cache.n_tokens), "shards": len(cache.shards), "checksum": h.hexdigest(),
            "shard_moments": moments, "probe_rows": probe}


def compare_harvests(recorded: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Whether a re-harvest reproduces a recorded one: ``same_key`` (cache configs equal but for nothing),
    ``match`` (equal checksums over the same windows), and otherwise ``probe_max_abs_diff`` (largest difference of
    the probe rows) and ``moment_max_rel_diff`` (of the shards' sums of squares), over the shards both hold."""
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
        out["shards_compared"] = len(rel)
    return out


def _describe(record: dict[str, Any]) -> str:
    c = record["config"]
    return (f"{record['windows']:,} windows, {record['rows']:,} rows of {c['d_model']} ({c['model']} block "
            f"{c['layer']}, LM in {c['lm_dtype']}, stored {c['dtype']}), {record['shards']} shards, "
            f"{'complete' if record['complete'] else 'stopped at the window limit'}; checksum {record['checksum'][:16]}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aen_lib.lmref", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    h = sub.add_parser("harvest", help="harvest the corpus's training split into an activation cache (resumable)")
    h.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="a corpus built by python -m aen_lib.corpus build")
    h.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT), help="where the cache folder goes")
    h.add_argument("--windows", type=int, default=None, help="harvest the first N windows only (default: all)")
    h.add_argument("--lm-dtype", default=HARVEST_LM_DTYPE, choices=["bfloat16", "float32"])
    h.add_argument("--batch-size", type=int, default=16, help="windows per LM forward")
    h.add_argument("--compare", default=None, help="a recorded harvest_record.json to compare this harvest with")
    h.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from . import configure_openmp

    configure_openmp()
    if args.stage == "harvest":
        # read before harvesting: the harvest rewrites its own folder's record
        recorded = json.loads(Path(args.compare).read_text()) if args.compare else None
        try:
            cache, record = harvest(args.corpus, args.cache_root, windows=args.windows, lm_dtype=args.lm_dtype,
                                    batch_size=args.batch_size, progress=not args.no_progress)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.lmref: {e}", file=sys.stderr)
            return 2
        print(f"{cache.path}: {_describe(record)}")
        if recorded is not None:
            cmp = compare_harvests(recorded, record)
            print("matches the recorded harvest" if cmp["match"] else f"differs from the recorded harvest: {cmp}")
            return 0 if cmp["match"] else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
