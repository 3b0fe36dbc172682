"""The language-model reference sets: SmolLM2-135M activations harvested from the offline corpus into a cache, and
SAEs of 8 x d_model trained on it with the same machinery and provenance as the synthetic sets
(:mod:`aen_lib.results.reference`). Book: the language-model chapters and the README's reference results.

The pipeline, one command per stage (``python -m aen_lib.results.lmref <stage>``):

* ``harvest``: the corpus's training split (:func:`aen_lib.data.corpus.split_file`), packed as the paper packs the Pile
  (one EOS after each document, 128-token windows that cross documents, no BOS), through the registry's model to
  the output of its middle block (:data:`aen_lib.data.lm.REGISTRY`; block 15 of 30 for SmolLM2-135M), position 0 of
  each window dropped (the attention sink), every token rescaled to norm sqrt(d), stored in 16 bits. Resumable:
  a second call continues where the first stopped and refuses a cache whose key differs. It ends by writing the
  cache's *harvest record*: the cache key, its checksum (sha256 over the shards' own checksums, in order), per-shard
  moments and two probe rows. A re-harvest on another machine compares itself with a recorded one
  (:func:`compare_harvests`): whether the checksums match, and if not, the largest difference of the probe rows and
  of the shard moments.
* ``train``: one set of SAEs (a study of :data:`LM_STUDIES`) on the first windows of that cache, resumably, with
  the set's provenance (commit, command, invocations with wall and CPU seconds, threads, device, the harvest record).
  Each record holds held-out L0/EV/dead %, the dead-latent window in tokens, and every latent's firing count over
  the window training ended in with its density histogram (the adaptive weights' mean and shares at w_max / w_min
  are in the history).
* ``evaluate``: after training, the set's SAEs on the held-out split (:func:`evaluate_lm_set`): firing counts,
  dead % silent and out of reach, and the spliced evaluation (CE clean, patched, mean- and zero-ablated, KL), into
  the set's ``evaluation.json``.
* ``features``: after training, a random sample of each SAE's alive latents with their strongest held-out contexts
  and the tokens their atoms promote and suppress (:func:`latent_samples`), into the set's ``features.json``.

The model here is SmolLM2-135M-Instruct from a Q4_1 GGUF file dequantised to floating point (the offline stand-in,
:mod:`aen_lib.data.lm`), run in bfloat16 on CPUs with native bf16 instructions (3.5x the float32 rate there, activations
within about 1% of float32; README, performance); the paper's Pythia-70M and Llama-3.1-8B cannot be loaded offline.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

if __name__ == "__main__":  # python -m aen_lib.results.lmref: before torch loads, or it has no effect
    from aen_lib import configure_openmp

    configure_openmp()

import torch
from torch import Tensor

from ..store import CHECKOUT
from .records import read_result, write_result
from ..data.activation_cache import ActivationCache, CacheConfig, activation_cache_dir, write_activation_cache

__all__ = ["LM_NAME", "LM_WINDOW", "LM_SAE", "LM_TRAIN", "LM_TRAIN_WINDOWS", "LM_STUDIES", "harvest_config", "harvest",
           "harvest_record", "compare_harvests", "corpus_documents", "heldout_metrics", "dead_curve_settled",
           "run_lm_set", "lm_set_name", "training_mean", "final_window_record",
           "evaluate_lm_set", "trained_saes", "heldout_windows", "EVAL_WINDOWS", "lm_frame", "lm_matched_table", "treatment", "lm_dead_windows", "latent_samples", "DEFAULT_CACHE_ROOT",
           "DEFAULT_CORPUS", "main"]

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
        moments.append({"rows": int(a.shape[0]), "sum": float(a.sum()), "sum_sq": float(a.pow(2).sum())})
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


# --------------------------------------------------------------------------------------------------------------
# Training a language-model set
# --------------------------------------------------------------------------------------------------------------

LM_SAE = dict(d_in=576, d_sae=4608, warmup_steps=400, ramp_steps=200)
"""SmolLM2-135M's residual width and the paper's 8x dictionary; the paper's Pythia warm-up of 4,000 steps (+2,000
ramp) out of 25,000 scaled to the same fractions of :data:`LM_TRAIN`'s 2,500 steps."""
LM_TRAIN = dict(steps=2_500, batch_size=4_096, lr=1e-3, grad_clip=1.0, dead_window_steps=500, log_every=50,
                final_avg_logs=5, dead_window_tokens=4_096_000)
"""2,500 Adam steps of 4,096 tokens = 10.24M tokens per SAE (1/20 of the paper's 204.8M for Pythia-70M); the
paper's lr 1e-3 and clip 1.0; the dead-latent window 500 steps (2.05M tokens), which divides the run into five
complete windows, so the final dead % covers the last 2.05M tokens and the last quarter of training spans three
windows. (The paper's 10,000-step window over 25,000 steps leaves its last window half-filled, and the authors log
that half window; the pilot set ran with a 1,000-step window, as its provenance records.) A second window of
4,096,000 tokens (1,000 steps) is the paper's convention scaled (its 10,000-step window is 40% of its 25,000 steps)
and the pilot's window, so the later sets' ``dead_pct_tokens_window`` compares with the pilot's ``dead_pct_window``;
a 10M-token window, the convention of sparsify and OpenAI's code, would need the whole run."""
LM_TRAIN_WINDOWS = 73_728
"""Training windows the sets read: the first 73,728 of the corpus's training split (9.36M rows after position 0
of every window is dropped), so 2,500 steps are 1.09 passes; a cache holding more windows gives the same stream."""
LM_CHECKPOINT_EVERY = 200


@dataclass(frozen=True)
class LMStudy:
    """One language-model set: its grid over :data:`LM_SAE` (``{architecture: {field: [values]}}``) and purpose."""

    grid: dict[str, dict[str, list[Any]]]
    purpose: str
    steps: int | None = None
    """Training steps when not :data:`LM_TRAIN`'s (a calibration set's short runs)."""
    b_dec_init: str = "zero"
    """``"zero"`` (the paper) or ``"mean"``: every SAE's pre-encoder bias starts at the mean of the training rows
    (:func:`training_mean`), the remedy SAELens and others apply and the outlier explanation's first test."""
    inputs: str = "raw"
    """``"raw"`` (the paper) or ``"centred"``: the training mean is subtracted from every training and held-out row
    (and added back after the SAE in spliced evaluation), the outlier explanation's second test."""

    def __post_init__(self) -> None:
        if self.b_dec_init not in ("zero", "mean"):
            raise ValueError(f"b_dec_init must be 'zero' or 'mean', got {self.b_dec_init!r}")
        if self.inputs not in ("raw", "centred"):
            raise ValueError(f"inputs must be 'raw' or 'centred', got {self.inputs!r}")

    @property
    def needs_mean(self) -> bool:
        return self.b_dec_init == "mean" or self.inputs == "centred"


_ADAPTIVE = {"gamma": [0.5], "ema_beta": [0.999], "ref_top_pct": [0.05]}
"""The paper's adaptive rule with β scaled to the run: its Pythia runs use β 0.9999, an EMA time constant of 10,000
steps, 40% of 25,000; over 2,500 steps that β would move the EMA only about a fifth of the way from its start at 1,
leaving AEN nearly an elastic net. β 0.999 keeps the time constant at 40% of the run; the paper's literal 0.9999 is
trained beside it (issue 21's β study)."""

LM_ADAPTIVE_BETA: float = _ADAPTIVE["ema_beta"][0]
"""The EMA's β of the sets' adaptive rule (:data:`_ADAPTIVE`); the matched-L0 claim compares AEN at this β."""

LM_STUDIES: dict[str, LMStudy] = {
    "pilot": LMStudy({"topk": {"k": [32]}},
                     "TopK k=32 alone, to choose the scale: its dead % must have stopped moving (within 1 point over "
                     "the last quarter of training) for the set's numbers to describe a trained SAE"),
    "topk": LMStudy({"topk": {"k": [16, 128]}}, "TopK at k 16 and 128 (k 32 is the pilot's SAE)"),
    "topk_auxk": LMStudy({"topk_auxk": {"k": [32, 128]}}, "TopK with the AuxK loss at k 32 and 128"),
    "l1_bracket_fixed": LMStudy({"relu_l1": {"l1": [0.02, 0.005, 0.00125]},
                                 "elastic_net": {"l1": [0.02, 0.005, 0.00125], "l2": [0.001]}},
                                "calibration of the fixed-weight ℓ1 SAEs: three λ1 a factor 4 apart, 600 steps each "
                                "(2.5M tokens), to find by interpolation the λ1 that puts each near L0 32", steps=600),
    "l1_bracket_adaptive": LMStudy({"adaptive_lasso": {"l1": [0.02, 0.005, 0.00125], **_ADAPTIVE},
                                    "aen": {"l1": [0.02, 0.005, 0.00125], "l2": [0.001], **_ADAPTIVE}},
                                   "calibration of the adaptive SAEs: the same λ1, 1,200 steps each, so that 600 steps "
                                   "run with the weights on after the 400-step warm-up and 200-step ramp", steps=1_200),
    "l1_matched": LMStudy({"relu_l1": {"l1": [0.003, 0.004]},
                           "elastic_net": {"l1": [0.005, 0.0063], "l2": [0.001]}},
                          "the fixed-weight ℓ1 SAEs near L0 32 at full length: two λ1 each around the bracket's "
                          "log-log interpolation (ReLU-ℓ1 0.0037; the elastic net 0.0063 and, since its L0 was "
                          "still falling at 600 steps, the lower 0.005); the one closest to 32 is the matched-L0 "
                          "row, as in the paper's table"),
    "aen_matched": LMStudy({"aen": {"l1": [0.0045], "l2": [0.001], **_ADAPTIVE}},
                           "AEN near L0 32 at full length: the adaptive bracket's λ1 0.005 had L0 35 at 1,200 steps "
                           "and was still falling, so a slightly lower λ1 is trained for 2,500"),
    "adaptive_lasso_matched": LMStudy({"adaptive_lasso": {"l1": [0.0027], **_ADAPTIVE}},
                                      "the adaptive lasso near L0 32 at full length: λ1 from the adaptive bracket's "
                                      "log-log interpolation between 0.00125 (L0 151) and 0.005 (L0 13) at 1,200 "
                                      "steps, about 0.0029, moved a little lower as L0 still fell"),
    "aen_matched_2": LMStudy({"aen": {"l1": [0.0041], "l2": [0.001], **_ADAPTIVE}},
                             "the second calibration step of AEN at full length: aen_matched (λ1 0.0045) ended at "
                             "held-out L0 26.9, 16% below 32; λ1 moved by the log-log slope of the adaptive bracket "
                             "(L0 ∝ λ1^-1.7 between 0.00125 and 0.005): 0.0045 x (26.9/32)^(1/1.7) = 0.0041"),
    "adaptive_lasso_matched_2": LMStudy({"adaptive_lasso": {"l1": [0.0022], **_ADAPTIVE}},
                                        "the second calibration step of the adaptive lasso at full length: "
                                        "adaptive_lasso_matched (λ1 0.0027) ended at held-out L0 23.3, 27% below "
                                        "32; by the same slope 0.0027 x (23.3/32)^(1/1.7) = 0.0022"),
    "aen_l0_range": LMStudy({"aen": {"l1": [0.0061, 0.0018], "l2": [0.001], **_ADAPTIVE}},
                            "AEN near L0 16 and 128 (the paper's Pythia rows at L0 16 and 128): from aen_matched's "
                            "held-out L0 26.9 at λ1 0.0045 and the adaptive bracket's slope (L0 ∝ λ1^-1.7), "
                            "λ1 0.0045 x (26.9/16)^(1/1.7) = 0.0061 and 0.0045 x (26.9/128)^(1/1.7) = 0.0018"),
    "aen_beta_paper": LMStudy({"aen": {"l1": [0.0045], "l2": [0.001], "gamma": [0.5], "ema_beta": [0.9999],
                                       "ref_top_pct": [0.05]}},
                              "AEN at the paper's literal β 0.9999 beside aen_matched's β 0.999, at the same λ1 "
                              "0.0045, so that β is the only difference (over 2,500 steps β 0.9999 moves the EMA "
                              "about a fifth of the way from its start at 1)"),
    "topk_biasmean": LMStudy({"topk": {"k": [32]}}, "the outlier explanation: TopK k=32 with the pre-encoder bias "
                             "started at the training rows' mean", b_dec_init="mean"),
    "topk_centred": LMStudy({"topk": {"k": [32]}}, "the outlier explanation: TopK k=32 on mean-centred rows",
                            inputs="centred"),
}
"""The language-model sets, each sized to finish within a few hours on one CPU core (about 1.2 s per SAE step at
576 x 4,608, batch 4,096). The matched-L0 grid of the ℓ1 family, AEN near L0 16 and 128, AEN at β 0.999, a second
seed and the mean-centred variants follow from the bracket's λ1."""


def training_mean(cache: ActivationCache, windows: int, *, progress: bool = False) -> Tensor:
    """``[d]`` float64 mean of the rows of the first ``windows`` windows of ``cache`` (the rows a set trains on)."""
    total, n = None, 0
    for shard in cache.iter_shards():
        keep = shard.window_index < windows
        if not bool(keep.any()):
            break
        a = shard.acts[keep].double()
        total = a.sum(0) if total is None else total + a.sum(0)
        n += int(a.shape[0])
    if total is None or n == 0:
        raise ValueError(f"the cache at {cache.path} holds no rows in its first {windows} windows")
    return total / n


def _set_mean(work: Path, cache: ActivationCache, windows: int) -> Tensor:
    """The training mean of a set, computed once and kept in its work folder (``mean.pt``, keyed by the cache's
    checksum-bearing config and the window count, so another cache's mean is never reused)."""
    path = work / "mean.pt"
    key = {"config": cache.config.to_dict(), "windows": windows}
    if path.exists():
        saved = torch.load(path, weights_only=False)
        if saved.get("key") == key:
            return saved["mean"]
        raise ValueError(f"{path} holds the mean of another cache or window count; move it away to recompute")
    from ..store import atomic_write

    mean = training_mean(cache, windows)
    atomic_write(path, lambda p: torch.save({"key": key, "mean": mean}, p))
    return mean


def lm_set_name(study: str, seed: int, steps: int | None = None) -> str:
    return f"lm_smollm2_{study}_seed{seed}" + (f"_steps{steps}" if steps else "")


def heldout_metrics(sae: Any, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """L0, explained variance (the paper's residual-centred formula over all rows,
    :class:`aen_lib.evaluation.metrics.StreamingExplainedVariance` with ``centre_residual=True``) and dead latents of a trained
    SAE on held-out rows ``x [N, d]``: ``dead`` is the share of latents with no activation above 1e-12 on any held-out
    row (the training metric's threshold)."""
    from ..evaluation.metrics import DEAD_THRESHOLD, StreamingExplainedVariance

    sae = sae.eval()
    fired = None
    l0_sum, n = 0.0, 0
    ev = StreamingExplainedVariance()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].float()
            out = sae(xb)
            h, x_hat = out.h.reshape(xb.shape[0], -1), out.x_hat.reshape(xb.shape)
            active = h.abs() > DEAD_THRESHOLD
            fired = active.any(0) if fired is None else fired | active.any(0)
            l0_sum += float(active.sum())
            ev.update(xb, x_hat)
            n += xb.shape[0]
    return {"heldout_rows": n, "heldout_l0": l0_sum / n, "heldout_ev": float(ev.compute(centre_residual=True)),
            "heldout_dead_pct": 100.0 * float((~fired).float().mean())}


def dead_curve_settled(history: Sequence[dict[str, Any]], steps: int, *, tolerance: float = 1.0) -> dict[str, Any]:
    """Whether a run's dead % has stopped moving, from its logged history: the dead % of every *complete* window
    (the logs where ``dead_window_fill`` is 1) that ends in the last quarter of training, with the complete window
    before the first of them, must lie within ``tolerance`` points. Returns ``settled``, ``range``, ``windows``
    ({end step: dead %} of those windows) and ``first``/``last``. Raises ``ValueError`` when fewer than two complete
    windows can be compared."""
    full = [(int(h["step"]), float(h["dead_pct"])) for h in history
            if h.get("dead_window_fill") is not None and float(h["dead_window_fill"]) >= 1.0 and h.get("dead_pct") is not None]
    late = [k for k, (s, _) in enumerate(full) if s >= 0.75 * steps]
    if not late or late[0] == 0 and len(late) < 2:
        raise ValueError(f"fewer than two complete dead windows to compare in the last quarter of {steps} steps; "
                         "use a window that divides the run into several")
    chosen = full[max(late[0] - 1, 0):]
    vals = [d for _, d in chosen]
    rng = max(vals) - min(vals)
    return {"settled": bool(rng <= tolerance), "range": rng, "windows": {s: d for s, d in chosen},
            "first": vals[0], "last": vals[-1], "points": len(vals), "tolerance": tolerance}


def final_window_record(window: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a record keeps of the dead-latent window training ended in: its steps and tokens, every latent's firing
    count over it and their :func:`aen_lib.evaluation.metrics.firing_density_histogram`; None where the counts are unknown."""
    from ..evaluation.metrics import firing_density_histogram

    if window is None or window.get("firing_counts") is None or not window.get("tokens"):
        return None
    counts = window["firing_counts"]
    return {"steps": int(window["steps"]), "tokens": int(window["tokens"]),
            "firing_counts": [int(round(float(c))) for c in counts.tolist()],
            "density_histogram": firing_density_histogram(counts, int(window["tokens"]))}


def run_lm_set(study: str, seed: int, *, cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT,
               corpus: str | os.PathLike[str] = DEFAULT_CORPUS, out_root: str | os.PathLike[str] = "reference",
               work_root: str | os.PathLike[str] | None = None, steps: int | None = None, progress: bool = True,
               command: str = "", train_windows: int = LM_TRAIN_WINDOWS, lm: Any = None,
               sae_base: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None) -> Path | None:
    """Train (or continue) one language-model set on the harvested training cache and, once complete, write its
    records and provenance under ``out_root/<set>/``; returns that folder, or None when it exists already (nothing
    is overwritten). The training and held-out caches must have been harvested (``python -m aen_lib.results.lmref harvest``
    with ``--split train`` and ``--split heldout``); a cache too short is refused with the command that extends it.
    ``lm`` = ``(model, tokenizer, layer)``, ``sae_base`` (replacing :data:`LM_SAE`) and ``train_overrides`` (on
    :data:`LM_TRAIN`) let tests run the whole pipeline on a tiny model."""
    from .reference import DEFAULT_WORK, InvocationLedger, outlier_severity
    from .records import member_record, variant_id
    from ..training.runlock import RunLock
    from ..data.sources import cache_source
    from ..training.sweep import expand_grid, train_sweep
    from ..training.train import TrainConfig

    if study not in LM_STUDIES:
        raise ValueError(f"unknown language-model study {study!r}; known: {sorted(LM_STUDIES)}")
    spec = LM_STUDIES[study]
    name = lm_set_name(study, seed, steps) + ("" if train_windows == LM_TRAIN_WINDOWS else f"_windows{train_windows}")
    out = Path(out_root) / name
    if (out / "provenance.json").exists():
        return None
    lm_model, tok, layer = lm if lm is not None else load_harvest_lm()
    caches = {}
    for split in ("train", "heldout"):
        folder = activation_cache_dir(harvest_config(lm_model, tok, corpus, layer=layer, split=split),
                                      Path(cache_root).expanduser())
        need = train_windows if split == "train" else 1
        cmd = f"python -m aen_lib.results.lmref harvest --split {split} --cache-root {cache_root}"
        if not (folder / ActivationCache.MANIFEST).is_file():
            raise FileNotFoundError(f"no {split} activation cache at {folder}; harvest it first: {cmd}")
        cache = ActivationCache(folder)
        if cache.n_windows < need:
            raise ValueError(f"the {split} cache at {folder} holds {cache.n_windows:,} windows, the set needs "
                             f"{need:,}; continue the harvest: {cmd}")
        caches[split] = cache
    del lm_model
    steps_run = steps or spec.steps
    tcfg = TrainConfig(**{**LM_TRAIN, **(train_overrides or {}), **({"steps": steps_run} if steps_run else {})},
                       progress=progress, seed=seed)
    base = dict(sae_base if sae_base is not None else LM_SAE)
    configs = expand_grid(base, spec.grid, seeds=[seed])
    source: Any = cache_source(caches["train"], tcfg.batch_size, max_windows=train_windows, loop=True)
    n_rows = int(source.n_rows)
    work = Path(work_root) if work_root else DEFAULT_WORK
    work = work / name
    work.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cpu")
    mean = _set_mean(work, caches["train"], train_windows) if spec.needs_mean else None
    if spec.inputs == "centred":
        from ..data.sources import CentredSource

        source = CentredSource(source, mean.float())
    b_dec = mean.float() if spec.b_dec_init == "mean" else None
    with RunLock(work):
        ledger = InvocationLedger(work / "invocations", sweep_dir=work / "sweep", device=dev)
        with ledger:
            result = train_sweep(configs, source, tcfg, device=dev, checkpoint_dir=work / "sweep",
                                 checkpoint_every=LM_CHECKPOINT_EVERY, b_dec_init=b_dec)
        calls = ledger.settle(total=len(configs) * tcfg.steps)
    heldout = caches["heldout"].load().acts.float()
    if spec.inputs == "centred":
        heldout = heldout - mean.float()
    train_records = {split: harvest_record(c) for split, c in caches.items()}
    wall = sum(c["seconds"] for c in calls)
    total = sum(c["member_steps"] for c in calls)
    provenance = {
        "set": name, "command": command, "study": study, "kind": "language_model",
        "protocol": {"sae": base, "grid": spec.grid, "train": tcfg.to_dict(), "train_windows": train_windows,
                     "train_rows": n_rows, "passes": tcfg.steps * tcfg.batch_size / n_rows,
                     "fraction_of_paper_tokens": tcfg.steps * tcfg.batch_size / 204.8e6,
                     "dead_window_tokens": tcfg.dead_window_steps * tcfg.batch_size,
                     "b_dec_init": spec.b_dec_init, "inputs": spec.inputs,
                     "training_mean_norm": None if mean is None else float(mean.norm())},
        "harvest": {split: {k: v for k, v in r.items() if k not in ("shard_moments", "probe_rows")}
                    for split, r in train_records.items()},
        "inputs": {"outlier_severity_heldout": outlier_severity(heldout)},
        "corpus": _corpus_manifest(corpus),
        "members": len(configs), "workers": 1, "invocations": calls, "wall_seconds": round(wall, 1),
        "member_steps": total, "member_steps_per_s": round(total / wall, 3) if wall else None,
    }
    files = {}
    for m in result.members:
        try:
            settled: dict[str, Any] | None = dead_curve_settled(m.history, tcfg.steps)
        except ValueError:  # a short run logs too few points to judge
            settled = None
        extra = {"set": name, "skipped_steps": m.skipped_steps, **heldout_metrics(m.sae, heldout),
                 "dead_settled": settled, "dead_window_tokens": tcfg.dead_window_steps * tcfg.batch_size,
                 "final_window": final_window_record(m.final_window)}
        files[f"{variant_id(m.cfg)}.json"] = member_record(m.cfg, m.final, m.history,
                                                           train_config=tcfg.replace(progress=False),
                                                           data=provenance["harvest"]["train"]["config"], extra=extra)
    out.mkdir(parents=True, exist_ok=False)
    for fname, rec in files.items():
        write_result(out / fname, "sae", rec)
    for split, r in train_records.items():  # the full records, for a later re-harvest to compare with
        write_result(out / f"harvest_{split}.json", "harvest", r)
    write_result(out / "provenance.json", "provenance", provenance)
    return out


EVAL_WINDOWS = 512
"""Held-out windows of the spliced evaluation (65,536 tokens): on one CPU core the LM's full forward passes (clean,
mean- and zero-ablated, one per SAE) take about a minute per 10,000 tokens each."""
EVALUATION_NAME = "evaluation.json"


class _CentredSAE(torch.nn.Module):
    """An SAE trained on mean-centred rows, seen from outside: ``x -> SAE(x - mean) + mean`` (and its codes)."""

    def __init__(self, sae: Any, mean: Tensor) -> None:
        super().__init__()
        self.sae = sae
        self.register_buffer("mean", mean.float())

    @property
    def W_enc(self) -> Tensor:
        return self.sae.W_enc

    def encode(self, x: Tensor) -> Tensor:
        return self.sae.encode(x - self.mean.to(x.dtype))

    def pre_activation(self, x: Tensor) -> Tensor:
        return self.sae.pre_activation(x - self.mean.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        out = self.sae(x - self.mean.to(x.dtype))
        return out.x_hat + self.mean.to(x.dtype)


def trained_saes(work: str | os.PathLike[str]) -> dict[str, Any]:
    """The trained SAEs of a finished set, by record name (``<variant id>.json``), from its work folder's finished
    chunks (``sweep/chunk_*/done.pt``). Raises ``FileNotFoundError`` when the folder holds no finished chunk (the
    checkpoints live outside the repository: a set trained on another machine must be trained again here)."""
    from ..sae.config import SAEConfig
    from ..sae.model import SAE
    from .records import variant_id
    from ..training.train import load_checkpoint

    done = sorted(Path(work).glob("sweep/chunk_*/done.pt"))
    if not done:
        raise FileNotFoundError(f"no finished chunk under {work}/sweep: the trained SAEs are not on this machine")
    out = {}
    for path in done:
        state = load_checkpoint(path)
        cfgs = [SAEConfig.from_dict(c) for c in state["sae_cfgs"]]
        stack = SAE(cfgs)
        stack.load_state_dict(state["sae"])
        for j, cfg in enumerate(cfgs):
            out[f"{variant_id(cfg)}.json"] = stack.member(j).eval()
    return out


def heldout_windows(corpus: str | os.PathLike[str], tokenizer: Any, cache: ActivationCache,
                    max_windows: int) -> Tensor:
    """``[n, 128]`` token ids of the first ``max_windows`` held-out windows, packed as the harvest packed them, and
    checked against the held-out cache's stored tokens (positions 1..127), so the spliced evaluation scores the
    very tokens the held-out metrics use."""
    from ..data.text import iter_windows

    wins = []
    for w in iter_windows(corpus_documents(corpus, "heldout"), tokenizer, LM_WINDOW, eos_token_id=tokenizer.eos_token_id):
        wins.append(w)
        if len(wins) >= max_windows:
            break
    ids = torch.stack(wins)
    stored = cache.load_shard(0)
    for i in range(min(ids.shape[0], int(stored.window_index.max()) + 1)):
        rows = stored.window_index == i
        if not torch.equal(stored.token_ids[rows], ids[i, stored.position[rows]]):
            raise ValueError(f"held-out window {i} packs differently from the held-out cache at {cache.path}: the "
                             "corpus or the tokenizer changed since the harvest; harvest the held-out split again")
    return ids


def evaluate_lm_set(folder: str | os.PathLike[str], *, work_root: str | os.PathLike[str] | None = None,
                    corpus: str | os.PathLike[str] = DEFAULT_CORPUS,
                    cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT, max_windows: int = EVAL_WINDOWS,
                    batch_size: int = 8, progress: bool = True, command: str = "", lm: Any = None) -> Path | None:
    """Evaluate a finished language-model set's SAEs after training and write ``evaluation.json`` beside its records
    (returns its path, or None when it exists: nothing is overwritten). Per SAE, on the held-out split:

    * every latent's firing count over the held-out rows, their density histogram, and the dead % by the
      definitions a training window cannot give: silent on every held-out row, and out of reach (pre-activation
      ``<= 0`` on every held-out row);
    * the spliced evaluation (:func:`aen_lib.evaluation.splice.spliced_evaluation_many`) on the first ``max_windows``
      held-out windows: clean, patched, mean- and zero-ablated CE, CE recovered against both, KL.

    The trained SAEs come from the set's work folder (:func:`trained_saes`); the file records the commit, command,
    seconds, threads and the LM's dtype. ``lm`` = ``(model, tokenizer, layer)`` replaces the registry's model (tests)."""
    import time

    from ..evaluation.splice import spliced_evaluation_many
    from ..evaluation.features import firing_statistics
    from ..evaluation.metrics import DEAD_THRESHOLD, firing_density_histogram, latent_reach
    from .reference import DEFAULT_WORK, _git_state

    folder = Path(folder)
    prov = read_result(folder / "provenance.json", "provenance")
    if prov.get("kind") != "language_model":
        raise ValueError(f"{folder} is not a language-model set (its provenance says kind={prov.get('kind')!r})")
    target = folder / EVALUATION_NAME
    if target.exists():
        return None
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"max_windows must be an int >= 1, got {max_windows!r}")
    t0 = time.perf_counter()
    spec = LM_STUDIES.get(prov["study"])
    inputs = prov["protocol"].get("inputs", "raw")
    work = (Path(work_root) if work_root else DEFAULT_WORK) / prov["set"]
    saes = trained_saes(work)
    missing = sorted(p.name for p in folder.glob("*-*.json") if not p.name.startswith("harvest_") and p.name not in saes)
    if missing:
        raise ValueError(f"the work folder {work} has no trained SAE for {missing}: it holds another set")
    saes = {k: v for k, v in saes.items() if (folder / k).exists()}
    lm_model, tok, layer = lm if lm is not None else load_harvest_lm()
    hcfg = harvest_config(lm_model, tok, corpus, layer=layer, split="heldout")
    hold_dir = activation_cache_dir(hcfg, Path(cache_root).expanduser())
    if hcfg.to_dict() != prov["harvest"]["heldout"]["config"]:
        raise ValueError(f"the held-out cache this machine would use ({hold_dir}) has another key than the set's "
                         "harvest record: the model, tokenizer or corpus differ")
    cache = ActivationCache(hold_dir)
    x = cache.load().acts.float()
    if inputs == "centred":
        mean = _set_mean(work, ActivationCache(activation_cache_dir(
            harvest_config(lm_model, tok, corpus, layer=layer, split="train"), Path(cache_root).expanduser())),
            prov["protocol"]["train_windows"])
        saes = {k: _CentredSAE(v, mean) for k, v in saes.items()}
    per: dict[str, Any] = {}
    for name, sae in saes.items():
        stats = firing_statistics(sae, x)
        reach = latent_reach(sae, x, thresh=DEAD_THRESHOLD)
        per[name] = {"heldout_tokens": stats.n_tokens, "firing_counts": [int(c) for c in stats.counts.tolist()],
                     "density_histogram": firing_density_histogram(stats.counts, stats.n_tokens),
                     "dead_silent_heldout_pct": reach["eval_dead_pct"],
                     "dead_out_of_reach_heldout_pct": reach["eval_negative_pct"]}
    ids = heldout_windows(corpus, tok, cache, max_windows)
    spliced = spliced_evaluation_many(lm_model, saes, ids, layer, batch_size=batch_size, progress=progress)
    for name, r in spliced.items():
        per[name]["spliced"] = r.to_dict()
    commit, dirty = _git_state(CHECKOUT)
    calls = {"commit": commit, "uncommitted": dirty, "command": command, "seconds": round(time.perf_counter() - t0, 1),
             "threads": torch.get_num_threads(),
             "lm_dtype": str(next(lm_model.parameters()).dtype).removeprefix("torch."), "windows": int(ids.shape[0]),
             "tokens_scored": int(ids.shape[0] * (LM_WINDOW - 2)), "study_known": spec is not None}
    write_result(target, "evaluation", {"set": prov["set"], "provenance": calls, "saes": per})
    return target


FEATURES_NAME = "features.json"
SAMPLED_LATENTS = 12
"""Alive latents sampled per SAE for the set's features file."""
DENSE_SHARE = 0.1
"""A latent firing on more than this share of held-out tokens counts as dense (SAEBench's ``freq_over_10_percent``)."""


def latent_samples(folder: str | os.PathLike[str], *, work_root: str | os.PathLike[str] | None = None,
                   corpus: str | os.PathLike[str] = DEFAULT_CORPUS,
                   cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT, n: int = SAMPLED_LATENTS,
                   contexts: int = 6, logit_tokens: int = 8, seed: int = 0, lm: Any = None,
                   command: str = "") -> Path | None:
    """What a finished set's latents respond to, as small text beside its records (``features.json``; returns its
    path, or None when it exists: nothing is overwritten). Per SAE: ``n`` latents drawn at random (``seed``) among
    those that fire on the held-out tokens, each with its held-out firing count, its ``contexts`` strongest held-out
    contexts (text, the firing token in ``[[...]]``) and the ``logit_tokens`` tokens its decoder atom promotes and
    suppresses most through the unembedding (:func:`aen_lib.evaluation.features.logit_effect`); and the counts of dense latents
    (firing on more than :data:`DENSE_SHARE` of held-out tokens) and of silent ones."""
    from ..evaluation.features import (feature_contexts, firing_statistics, logit_effect, render_contexts_text,
                           top_activations, top_logit_tokens, unembedding_directions)
    from .reference import DEFAULT_WORK, _git_state

    folder = Path(folder)
    prov = read_result(folder / "provenance.json", "provenance")
    if prov.get("kind") != "language_model":
        raise ValueError(f"{folder} is not a language-model set (its provenance says kind={prov.get('kind')!r})")
    target = folder / FEATURES_NAME
    if target.exists():
        return None
    for name, value, low in (("n", n, 1), ("contexts", contexts, 1), ("logit_tokens", logit_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    work = (Path(work_root) if work_root else DEFAULT_WORK) / prov["set"]
    saes = {k: v for k, v in trained_saes(work).items() if (folder / k).exists()}
    lm_model, tok, layer = lm if lm is not None else load_harvest_lm()
    hcfg = harvest_config(lm_model, tok, corpus, layer=layer, split="heldout")
    if hcfg.to_dict() != prov["harvest"]["heldout"]["config"]:
        raise ValueError("the held-out cache this machine would use has another key than the set's harvest record: "
                         "the model, tokenizer or corpus differ")
    data = ActivationCache(activation_cache_dir(hcfg, Path(cache_root).expanduser())).load()
    if prov["protocol"].get("inputs", "raw") == "centred":
        mean = _set_mean(work, ActivationCache(activation_cache_dir(
            harvest_config(lm_model, tok, corpus, layer=layer, split="train"), Path(cache_root).expanduser())),
            prov["protocol"]["train_windows"])
        saes = {k: _CentredSAE(v, mean) for k, v in saes.items()}
    x = data.acts.float()
    unembed = unembedding_directions(lm_model)
    gen = torch.Generator().manual_seed(seed)
    per: dict[str, Any] = {}
    for name, sae in saes.items():
        stats = firing_statistics(sae, x)
        alive = torch.nonzero(stats.counts > 0).flatten()
        pick = alive[torch.randperm(alive.numel(), generator=gen)[:n]].sort().values
        inner = sae.sae if isinstance(sae, _CentredSAE) else sae
        effects = logit_effect(inner.W_dec[pick].detach(), unembed)
        logits = top_logit_tokens(effects, tok, k=logit_tokens)
        vals, rows = top_activations(sae, x, pick, k=contexts)
        latents = []
        for j, f in enumerate(pick.tolist()):
            ctx = feature_contexts(sae, data, f, rows[j], tok, values=vals[j])
            latents.append({"latent": f, "heldout_count": int(stats.counts[f]),
                            "max_activation": float(stats.max[f]),
                            "contexts": render_contexts_text(ctx).splitlines(),
                            "promotes": [[t, round(v, 4)] for t, v in logits[j]["up"]],
                            "suppresses": [[t, round(v, 4)] for t, v in logits[j]["down"]]})
        per[name] = {"alive": int(alive.numel()), "silent": int((stats.counts == 0).sum()),
                     "dense": int((stats.counts > DENSE_SHARE * stats.n_tokens).sum()),
                     "heldout_tokens": stats.n_tokens, "sampled": latents}
    commit, dirty = _git_state(CHECKOUT)
    body = {"set": prov["set"],
            "provenance": {"commit": commit, "uncommitted": dirty, "command": command, "seed": seed,
                           "dense_share": DENSE_SHARE},
            "saes": per}
    write_result(target, "features", body)
    return target


def _member_records(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for rec_path in sorted(folder.glob("*-*.json")):
        if not rec_path.name.startswith("harvest_"):
            yield rec_path.name, read_result(rec_path, "sae")


PAPER_WINDOW_TOKENS = 4_096_000
"""The paper's dead window scaled to the sets' length (:data:`LM_TRAIN`)."""


def _paper_window_dead(final: dict[str, Any], train: dict[str, Any]) -> float | None:
    """Dead % over the last complete :data:`PAPER_WINDOW_TOKENS`-token window: the second window of a set that
    tracked one, or the step window of a set whose step window has that length (the pilot); None otherwise."""
    if train.get("dead_window_tokens") == PAPER_WINDOW_TOKENS:
        return final.get("dead_pct_tokens_window")
    if train["dead_window_steps"] * train["batch_size"] == PAPER_WINDOW_TOKENS:
        return final.get("dead_pct_window")
    return None


def lm_frame(folders: Sequence[str | os.PathLike[str]]) -> Any:
    """One row per SAE of the committed language-model sets ``folders``: ``set, study, seed, method, label, variant,
    l1, l2, k, steps, tokens`` (per SAE), the held-out ``heldout_l0 / heldout_ev / heldout_dead_pct``, the training
    ``l0, ev, shrinkage`` (mean of the last logs), ``dead_pct_window`` (the last complete window) with
    ``dead_window_tokens``, ``dead_pct_paper_window`` (over the last complete 4,096,000-token window, the paper's
    convention scaled: :func:`_paper_window_dead`), whether the dead curve ``settled`` over the last quarter (and its ``dead_range``), and
    where the set has an ``evaluation.json``: ``dead_out_of_reach_pct`` and the spliced ``ce_clean, ce_patched,
    ce_mean_ablated, ce_zero_ablated, ce_recovered_mean, ce_recovered_zero, kl``."""
    import pandas as pd

    rows = []
    for folder in folders:
        folder = Path(folder)
        prov = read_result(folder / "provenance.json", "provenance")
        train = prov["protocol"]["train"]
        ev_path = folder / EVALUATION_NAME
        evaluation = read_result(ev_path, "evaluation")["saes"] if ev_path.exists() else {}
        for name, rec in _member_records(folder):
            ex, fin, cfg = rec["extra"], rec["final"], rec["sae_config"]
            try:
                settled: dict[str, Any] | None = dead_curve_settled(rec.get("history", []), train["steps"])
            except ValueError:
                settled = None
            row = {"set": prov["set"], "study": prov["study"], "seed": rec["seed"], "method": rec["method"],
                   "train_split": training_split_label(prov),
                   "label": rec["label"], "variant": rec["variant"], "l1": cfg["l1"], "l2": cfg["l2"], "k": cfg["k"],
                   "ema_beta": cfg["ema_beta"], "steps": train["steps"], "tokens": train["steps"] * train["batch_size"],
                   "b_dec_init": prov["protocol"].get("b_dec_init", "zero"),
                   "inputs": prov["protocol"].get("inputs", "raw"),
                   "heldout_l0": ex["heldout_l0"], "heldout_ev": ex["heldout_ev"],
                   "heldout_dead_pct": ex["heldout_dead_pct"], "l0": fin["l0"], "ev": fin["ev"],
                   "shrinkage": fin["shrinkage"], "dead_pct_window": fin.get("dead_pct_window"),
                   "dead_window_tokens": train["dead_window_steps"] * train["batch_size"],
                   "dead_pct_paper_window": _paper_window_dead(fin, train),
                   "settled": None if settled is None else settled["settled"],
                   "dead_range": None if settled is None else settled["range"],
                   "w_mean": fin.get("adaptive_w_mean"), "w_frac_max": fin.get("adaptive_frac_w_max"),
                   "w_frac_min": fin.get("adaptive_frac_w_min")}
            e = evaluation.get(name)
            if e is not None:
                sp = e["spliced"]
                row.update({"dead_out_of_reach_pct": e["dead_out_of_reach_heldout_pct"], "ce_clean": sp["ce_clean"],
                            "ce_patched": sp["ce_patched"], "ce_mean_ablated": sp["ce_ablated"],
                            "ce_zero_ablated": sp["ce_zero_ablated"],
                            "ce_recovered_mean": sp["ce_recovered_mean_ablation"],
                            "ce_recovered_zero": sp["ce_recovered_zero_ablation"], "kl": sp["kl"],
                            "spliced_tokens": sp["n_tokens"]})
            rows.append(row)
    return pd.DataFrame(rows)


def training_split_label(provenance: dict[str, Any]) -> str:
    """The training split a language-model set read, as the first 8 hex digits of its checksum (the cache key's
    ``dataset``, e.g. ``"a2882c5f"``). Debian point releases change the corpus: sets on different builds are
    labelled apart, never silently pooled (README, offline corpus)."""
    dataset = str(provenance["harvest"]["train"]["config"]["dataset"])
    return dataset.rsplit(":", 1)[-1][:8]


def treatment(b_dec_init: str, inputs: str) -> str:
    """How a set treated the activations' mean, in words: ``"b_dec at 0"`` (the paper), ``"b_dec at the mean"`` or
    ``"centred rows"``."""
    if inputs == "centred":
        return "centred rows"
    return "b_dec at the mean" if b_dec_init == "mean" else "b_dec at 0"


MATCH_TOLERANCE = 0.15
"""How far (as a share of the target) a held-out L0 may lie from the target for its SAE to count as matched."""


def lm_matched_table(frame: Any, *, target: float = 32.0, full_steps: int | None = None,
                     tolerance: float = MATCH_TOLERANCE) -> Any:
    """The matched-L0 table of the committed language-model sets: for each architecture, treatment of the mean
    (:func:`treatment`), adaptive rule (``beta``: the EMA's β, empty for fixed-weight SAEs) and seed, the full-length
    SAE whose held-out L0 is closest to ``target`` on a log scale, as the paper picks its rows. ``frame``:
    :func:`lm_frame`. ``full_steps``: the full run's length (shorter calibration runs are left out; default: the
    longest run in ``frame``). Columns: ``method, treatment, beta, seed, label, set, train_split`` (the training
    split's checksum prefix: :func:`training_split_label`), ``heldout_l0, matched`` (within ``tolerance`` of the
    target), ``off_pct`` (signed distance from the target, %), the dead shares ``dead_pct_paper_window,
    heldout_dead_pct``, ``heldout_ev``, ``shrinkage``, the adaptive weights' ``w_mean, w_frac_max`` and, where
    evaluated, ``ce_recovered_mean, kl``."""
    import numpy as np
    import pandas as pd

    if frame.empty:
        return frame.assign(treatment=[], beta=[], matched=[], off_pct=[])
    steps = int(full_steps if full_steps is not None else frame["steps"].max())
    full = frame[frame["steps"] == steps].copy()
    full["treatment"] = [treatment(b, i) for b, i in zip(full["b_dec_init"], full["inputs"])]
    full["off_pct"] = 100.0 * (full["heldout_l0"] / target - 1.0)
    full["matched"] = full["off_pct"].abs() <= 100.0 * tolerance
    full["_dist"] = np.abs(np.log(full["heldout_l0"].clip(lower=1e-9) / target))
    adaptive = full["method"].isin(["adaptive_lasso", "aen"])
    beta = full["ema_beta"] if "ema_beta" in full else pd.Series([None] * len(full), index=full.index)
    full["beta"] = [f"{float(b):g}" if a and b is not None and b == b else "" for a, b in zip(adaptive, beta)]
    if "seed" not in full:
        full["seed"] = 0
    if "train_split" not in full:
        full["train_split"] = ""
    rows = full.sort_values("_dist").groupby(["method", "treatment", "beta", "seed"], sort=False).head(1)
    order = {"topk": 0, "topk_auxk": 1, "relu_l1": 2, "elastic_net": 3, "adaptive_lasso": 4, "aen": 5}
    rows = rows.assign(_o=rows["method"].map(order).fillna(9)).sort_values(["_o", "treatment", "beta", "seed"])
    cols = ["method", "treatment", "beta", "seed", "label", "set", "train_split", "heldout_l0", "matched", "off_pct",
            "dead_pct_paper_window", "heldout_dead_pct", "heldout_ev", "shrinkage", "w_mean", "w_frac_max"]
    cols += [c for c in ("ce_recovered_mean", "kl") if c in rows]
    return pd.DataFrame(rows[cols]).reset_index(drop=True)


def lm_dead_windows(folders: Sequence[str | os.PathLike[str]], *, complete_only: bool = True) -> Any:
    """The dead-% curve of every SAE of ``folders``, one row per complete dead window logged in training: ``set,
    label, variant, step, tokens`` (at the window's end), ``window_tokens``, ``fill`` and ``dead_pct`` over that
    window, with the training ``l0`` and ``ev`` of that log. ``complete_only=False`` keeps every log, each with the
    dead % over its window so far (``fill`` < 1: partly filled, the paper's figure convention)."""
    import pandas as pd

    rows = []
    for folder in folders:
        folder = Path(folder)
        prov = read_result(folder / "provenance.json", "provenance")
        train = prov["protocol"]["train"]
        for _, rec in _member_records(folder):
            for h in rec.get("history", []):
                fill = h.get("dead_window_fill")
                if fill is not None and (float(fill) >= 1.0 or not complete_only):
                    rows.append({"set": prov["set"], "label": rec["label"], "variant": rec["variant"],
                                 "method": rec["method"], "step": int(h["step"]),
                                 "tokens": int(h["step"]) * train["batch_size"],
                                 "window_tokens": train["dead_window_steps"] * train["batch_size"],
                                 "fill": float(fill), "dead_pct": float(h["dead_pct"]), "l0": float(h["l0"]),
                                 "ev": float(h["ev"])})
    return pd.DataFrame(rows, columns=["set", "label", "variant", "method", "step", "tokens", "window_tokens", "fill",
                                       "dead_pct", "l0", "ev"])


def lm_table(folders: Sequence[str | os.PathLike[str]]) -> str:
    """A markdown table of committed language-model sets, one row per SAE: set, SAE, steps, tokens, the training
    split's checksum prefix (:func:`training_split_label`), held-out L0, EV
    and dead %, and once the set is evaluated (``evaluation.json``) the share out of reach and the CE recovered
    against mean ablation, the last window's dead % in training, and whether it settled over the last quarter (its
    range)."""
    rows = ["| set | SAE | steps | tokens | training split | held-out L0 | held-out EV | held-out dead % | out of reach % "
            "| CE recovered (mean abl.) | dead % (last window) | dead % moved over the last quarter | invocations "
            "| wall h | hardware |",
            "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for folder in folders:
        folder = Path(folder)
        prov = read_result(folder / "provenance.json", "provenance")
        calls = prov.get("invocations", [])
        hw = sorted({f"{c.get('cpu', '?')} ({c.get('device', '?')})" for c in calls})
        train = prov["protocol"]["train"]
        split = training_split_label(prov)
        ev_path = folder / EVALUATION_NAME
        evaluation = read_result(ev_path, "evaluation")["saes"] if ev_path.exists() else {}
        for rec_path in sorted(folder.glob("*-*.json")):
            if rec_path.name.startswith("harvest_"):
                continue
            rec = read_result(rec_path, "sae")
            ex, fin = rec["extra"], rec["final"]
            e = evaluation.get(rec_path.name)
            reach = "—" if e is None else f"{e['dead_out_of_reach_heldout_pct']:.1f}"
            ce_rec = "—" if e is None else f"{e['spliced']['ce_recovered_mean_ablation']:.3f}"
            try:  # judged from the logged history, so a record of any version reads alike
                settled: dict[str, Any] | None = dead_curve_settled(rec.get("history", []), train["steps"])
            except ValueError:
                settled = ex.get("dead_settled")
            moved = (f"{settled['range']:.2f} points ({'settled' if settled['settled'] else 'not settled'})"
                     if settled else "not judged (short run)")
            dead_w = fin.get("dead_pct_window")
            rows.append(f"| `{prov['set']}` | {rec['label']} | {train['steps']:,} | "
                        f"{train['steps'] * train['batch_size']:,} | `{split}` | {ex['heldout_l0']:.1f} | {ex['heldout_ev']:.3f} | "
                        f"{ex['heldout_dead_pct']:.1f} | {reach} | {ce_rec} | "
                        f"{'—' if dead_w is None or dead_w != dead_w else f'{dead_w:.1f}'} | {moved} | {len(calls)} | "
                        f"{prov['wall_seconds'] / 3600:.1f} | {', '.join(hw)} |")
    return "\n".join(rows)


def _describe(record: dict[str, Any]) -> str:
    c = record["config"]
    return (f"{record['windows']:,} windows, {record['rows']:,} rows of {c['d_model']} ({c['model']} block "
            f"{c['layer']}, LM in {c['lm_dtype']}, stored {c['dtype']}), {record['shards']} shards, "
            f"{'complete' if record['complete'] else 'stopped at the window limit'}; checksum {record['checksum'][:16]}")


_MACHINE_FLAGS = ("--corpus", "--cache-root", "--work")


def recorded_command(argv: Sequence[str]) -> str:
    """A command as a record keeps it: folders are this machine's, so ``--corpus``, ``--cache-root`` and ``--work``
    (either spelling) are left out, and an absolute path inside the checkout (a set folder given to ``evaluate`` or
    ``features``) is written relative to it."""
    import shlex

    from ..store import CHECKOUT

    words, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _MACHINE_FLAGS:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in _MACHINE_FLAGS)):
            p = Path(a)
            words.append(str(p.relative_to(CHECKOUT)) if p.is_absolute() and p.is_relative_to(CHECKOUT) else a)
    return "python -m aen_lib.results.lmref " + " ".join(shlex.quote(a) for a in words)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aen_lib.results.lmref", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    h = sub.add_parser("harvest", help="harvest the corpus's training split into an activation cache (resumable)")
    h.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="a corpus built by python -m aen_lib.data.corpus build")
    h.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT), help="where the cache folder goes")
    h.add_argument("--windows", type=int, default=None, help="harvest the first N windows only (default: all)")
    h.add_argument("--split", default="train", choices=["train", "heldout"])
    h.add_argument("--lm-dtype", default=HARVEST_LM_DTYPE, choices=["bfloat16", "float32"])
    h.add_argument("--batch-size", type=int, default=16, help="windows per LM forward")
    h.add_argument("--compare", default=None, help="a recorded harvest_record.json to compare this harvest with")
    h.add_argument("--no-progress", action="store_true")
    t = sub.add_parser("train", help="train (or continue) one language-model set on the harvested cache")
    t.add_argument("--study", default="pilot", choices=sorted(LM_STUDIES))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=None, help="fewer steps (a smoke run; the set's name says so)")
    t.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    t.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    t.add_argument("--out", default="reference", help="where the finished set's records go")
    t.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    t.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evaluate", help="after training: held-out firing counts, dead %% by definition and the "
                        "spliced evaluation of a finished set's SAEs, into evaluation.json beside its records")
    ev.add_argument("folder", help="a committed set, e.g. reference/lm_smollm2_pilot_seed0")
    ev.add_argument("--max-windows", type=int, default=EVAL_WINDOWS, help="held-out windows the LM is run on")
    ev.add_argument("--batch-size", type=int, default=8, help="windows per LM forward")
    ev.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ev.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    ev.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    ev.add_argument("--no-progress", action="store_true")
    fe = sub.add_parser("features", help="after training: a random sample of each SAE's alive latents with their "
                        "strongest held-out contexts and logit tokens, into features.json beside its records")
    fe.add_argument("folder", help="a committed set, e.g. reference/lm_smollm2_pilot_seed0")
    fe.add_argument("--latents", type=int, default=SAMPLED_LATENTS, help="alive latents sampled per SAE")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    fe.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    fe.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    tb = sub.add_parser("table", help="the committed language-model sets as a markdown table (one row per SAE)")
    tb.add_argument("root", nargs="?", default="reference")
    st = sub.add_parser("status", help="how far a language-model set has come: steps, speed, hours left, last metrics")
    st.add_argument("--study", default="pilot", choices=sorted(LM_STUDIES))
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--steps", type=int, default=None)
    st.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    args = ap.parse_args(argv)
    if args.stage == "table":
        from .reference import committed_sets

        sets = committed_sets(args.root, study=None, kind="language_model")
        if not sets:
            print(f"no committed language-model set under {args.root}")
            return 1
        print(lm_table(sets))
        return 0
    if args.stage == "status":
        from .reference import DEFAULT_WORK, latest_metrics, set_status

        work = (Path(args.work) if args.work else DEFAULT_WORK) / lm_set_name(args.study, args.seed, args.steps)
        try:
            state = set_status(work)
        except ValueError as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        left = f", {state['hours_left']:.2f} h left" if state["hours_left"] is not None else ""
        print(f"{state['set']}: step {state['steps']:,} of {state['of_steps']:,} saved, "
              f"{'running' if state['running'] else 'not running'}, {state['invocations']} invocation(s){left}; "
              f"continue with: {state['continue']}")
        print(latest_metrics(work).to_string(index=False))
        return 0
    from .. import configure_openmp

    configure_openmp()
    if args.stage == "harvest":
        # read before harvesting: the harvest rewrites its own folder's record
        recorded = read_result(args.compare, "harvest") if args.compare else None
        try:
            cache, record = harvest(args.corpus, args.cache_root, windows=args.windows, lm_dtype=args.lm_dtype,
                                    batch_size=args.batch_size, progress=not args.no_progress, split=args.split)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"{cache.path}: {_describe(record)}")
        if recorded is not None:
            cmp = compare_harvests(recorded, record)
            print("matches the recorded harvest" if cmp["match"] else f"differs from the recorded harvest: {cmp}")
            return 0 if cmp["match"] else 1
    if args.stage == "evaluate":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            path = evaluate_lm_set(args.folder, work_root=args.work, corpus=args.corpus, cache_root=args.cache_root,
                                   max_windows=args.max_windows, batch_size=args.batch_size,
                                   progress=not args.no_progress, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"evaluation written to {path}" if path else f"{args.folder}/{EVALUATION_NAME} exists; nothing was "
              "overwritten")
        return 0
    if args.stage == "features":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            path = latent_samples(args.folder, work_root=args.work, corpus=args.corpus, cache_root=args.cache_root,
                                  n=args.latents, seed=args.seed, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"features written to {path}" if path else f"{args.folder}/{FEATURES_NAME} exists; nothing was "
              "overwritten")
        return 0
    if args.stage == "train":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            out = run_lm_set(args.study, args.seed, cache_root=args.cache_root, corpus=args.corpus, out_root=args.out,
                             work_root=args.work, steps=args.steps, progress=not args.no_progress, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"records written to {out}" if out else f"{lm_set_name(args.study, args.seed, args.steps)} exists "
              f"under {args.out}; nothing was overwritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
