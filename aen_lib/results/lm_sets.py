"""Training the language-model reference sets (book: the language-model chapters; README, reference results): the
protocol (:data:`LM_SAE`, :data:`LM_TRAIN`), the studies (:data:`LM_STUDIES`), and :func:`run_lm_set`, which trains a
set resumably on the harvested cache and writes its records and provenance. The command line is
:mod:`aen_lib.results.lmref`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..data.activation_cache import ActivationCache, activation_cache_dir
from .lm_harvest import (DEFAULT_CACHE_ROOT, DEFAULT_CORPUS, _corpus_manifest, harvest_config, harvest_record,
                         load_harvest_lm)
from .records import write_result

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
    "aen_biasmean": LMStudy({"aen": {"l1": [0.0041], "l2": [0.001], **_ADAPTIVE}},
                            "the outlier explanation: AEN at the matched λ1 0.0041 (aen_matched_2, held-out L0 33.2) "
                            "with the pre-encoder bias started at the training rows' mean", b_dec_init="mean"),
    "aen_centred": LMStudy({"aen": {"l1": [0.0041], "l2": [0.001], **_ADAPTIVE}},
                           "the outlier explanation: AEN at the matched λ1 0.0041 on mean-centred rows",
                           inputs="centred"),
}
"""The language-model sets, each sized to finish within a few hours on one CPU core (about 1.2 s per SAE step at
576 x 4,608, batch 4,096). The matched-L0 grid of the ℓ1 family, AEN near L0 16 and 128, AEN at β 0.999, a second
seed and the mean-centred variants follow from the bracket's λ1."""


LM_SEEDS: dict[str, tuple[int, ...]] = {"pilot": (0, 1), "aen_matched_2": (0, 1)}
"""The seeds each study of :data:`LM_STUDIES` is to be trained at, seed 0 where a study is not listed: the second seed
of issue 21's grid is TopK k=32 (the pilot) and AEN at the matched λ1 (``aen_matched_2``). ``train --seed 1`` trains it;
the seed sets the SAE's initialisation and the order of the training rows."""


def lm_planned_sets() -> list[tuple[str, int]]:
    """Every ``(study, seed)`` the language-model grid plans (:data:`LM_STUDIES` × :data:`LM_SEEDS`), in their order."""
    return [(study, seed) for study in LM_STUDIES for seed in LM_SEEDS.get(study, (0,))]


def lm_untrained(provenances: Sequence[dict[str, Any]]) -> list[str]:
    """The set names (:func:`lm_set_name`) of the planned sets (:func:`lm_planned_sets`) that none of ``provenances``
    (committed sets' ``provenance.json``) holds; a provenance is matched by its study and its training seed."""
    trained = set()
    for prov in provenances:
        try:
            trained.add((prov["study"], int(prov["protocol"]["train"]["seed"])))
        except (KeyError, TypeError) as err:
            raise ValueError(f"provenance of {prov.get('set', '?')!r} lacks study or protocol.train.seed ({err}); "
                             "pass the provenance.json of a language-model set") from None
    return [lm_set_name(study, seed) for study, seed in lm_planned_sets() if (study, seed) not in trained]


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
    from ..evaluation.metrics import outlier_severity
    from .ledger import DEFAULT_WORK, InvocationLedger
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
