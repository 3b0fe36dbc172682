"""The committed language-model sets as tables (book: the language-model chapters; README, reference results): one
row per SAE (:func:`lm_frame`), the matched-L0 table (:func:`lm_matched_table`), the dead-% curves
(:func:`lm_dead_windows`) and the README's markdown table (:func:`lm_table`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from .lm_evaluate import EVALUATION_NAME
from .lm_sets import dead_curve_settled
from .records import read_result

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


def sae_names(frame: Any) -> list[str]:
    """Each SAE's label (rows of :func:`lm_frame`), followed by how its set treated the activations' mean where that
    differs from the paper (``"topk k=32 · b_dec at the mean"``): the sets repeat a config, so a label alone does not
    tell two SAEs apart."""
    return [lab if t == "b_dec at 0" else f"{lab} · {t}"
            for lab, t in zip(frame["label"], (treatment(b, i) for b, i in zip(frame["b_dec_init"], frame["inputs"])))]


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
