"""Claims about the language-model reference sets (SmolLM2-135M, :mod:`aen_lib.results.lmref`): whether the training ran long
enough for its dead % to settle, how it moved, whether λ1 orders L0, whether the SAEs beat mean ablation when spliced
in, and what kind of death TopK's is.

Two frames feed them: :func:`aen_lib.results.lm_tables.lm_dead_windows` (one row per complete dead window of one SAE's training:
``label, step, dead_pct``) and :func:`aen_lib.results.lm_tables.lm_frame` (one row per SAE: ``method, label, l1, l2,
heldout_l0, heldout_dead_pct`` and, once a set is evaluated, ``dead_out_of_reach_pct, ce_clean, ce_patched,
ce_mean_ablated``).

* ``lm_dead_settled`` — the pilot's criterion (issue of the language-model sets): the dead % of every complete window
  ending in the last quarter of training, and of the window before, lie within one point;
* ``lm_dead_grows`` — the dead % over the last complete window exceeds that over the first by more than a margin
  (starvation that develops while training, not a state of the initialisation);
* ``lm_l0_falls_with_l1`` — within each ℓ1 architecture (and λ2), held-out L0 falls as λ1 rises;
* ``lm_splice_beats_mean_ablation`` — spliced into the model, every SAE's CE is below the mean-ablated CE;
* ``lm_topk_dead_outcompeted`` — most latents TopK leaves silent on held-out tokens are *not* out of reach (their
  pre-activation is positive on some token): they lose the top-k competition, which the outlier explanation (latents
  anti-aligned with the mean, never positive) does not cover;

and on chapter 8's own small run: ``lm_topk_more_dead_than_aen_matched`` (its matched table), ``raw_splice_moves_little``
(the reference code's raw splice against the correct one) and ``sink_splice_lowers_recovery`` (splicing the
attention-sink position too).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .core import DEAD_MARGIN, Verdict, register

SETTLE_TOLERANCE = 1.0
"""Points within which the late windows' dead % must lie for the curve to count as settled."""


def _windows_example() -> pd.DataFrame:
    """One TopK SAE, five complete 500-step windows of a 2,500-step run (numbers made up, shaped like a run still
    starving)."""
    return pd.DataFrame([{"label": "topk k=32", "step": s, "dead_pct": d}
                         for s, d in ((500, 1.0), (1000, 12.0), (1500, 30.0), (2000, 44.0), (2500, 52.0))])


def _one_curve(df: pd.DataFrame) -> pd.DataFrame | None:
    if df.empty or df["label"].nunique() != 1:
        return None
    return df.sort_values("step")


def _flatten_late(df: pd.DataFrame) -> pd.DataFrame:
    """The curve made flat from the window before the last quarter on (it then settles), or made to move there
    (when it had settled)."""
    out = df.sort_values("step").copy()
    steps = out["step"].max()
    late = out.index[out["step"] >= 0.75 * steps]
    pos = max(list(out.index).index(late[0]) - 1, 0) if len(late) else 0
    chosen = out.index[pos:]
    values = out.loc[chosen, "dead_pct"]
    if values.max() - values.min() > SETTLE_TOLERANCE:
        out.loc[chosen, "dead_pct"] = float(values.iloc[-1])
    else:
        out.loc[chosen, "dead_pct"] = [float(values.iloc[-1]) + 5.0 * i for i in range(len(chosen))]
    return out


@register("lm_dead_settled",
          "the dead % has stopped moving over the last quarter of training (within one point)",
          source="book", counterexample=_flatten_late, example=_windows_example, needs=("label", "step", "dead_pct"))
def lm_dead_settled(df: pd.DataFrame, *, tolerance: float = SETTLE_TOLERANCE) -> Verdict:
    """Holds when the complete windows ending in the last quarter of the run (the largest ``step`` is taken as its
    end) and the window before them span at most ``tolerance`` points; not testable with fewer than two such
    windows or more than one SAE."""
    name = "lm_dead_settled"
    c = _one_curve(df)
    if c is None:
        return Verdict(name, None, {}, "Needs the complete dead windows of exactly one SAE.")
    steps = int(c["step"].max())
    late = [i for i, s in enumerate(c["step"]) if s >= 0.75 * steps]
    chosen = c.iloc[max(late[0] - 1, 0):] if late else c.iloc[0:0]
    if len(chosen) < 2:
        return Verdict(name, None, {"windows": len(c)},
                       f"{c['label'].iloc[0]}: fewer than two complete dead windows reach the last quarter of its "
                       f"{steps:,} steps, so whether its dead % settled cannot be judged.")
    vals = chosen["dead_pct"].astype(float)
    rng = float(vals.max() - vals.min())
    holds = rng <= tolerance
    ends = ", ".join(f"{v:.1f}% (to step {int(s):,})" for s, v in zip(chosen["step"], vals))
    sentence = (f"{c['label'].iloc[0]}: over its last windows the dead % went {ends}, a range of {rng:.1f} points "
                f"({'within' if holds else 'more than'} {tolerance:g}).")
    return Verdict(name, holds, {"range": rng, "first": float(vals.iloc[0]), "last": float(vals.iloc[-1]),
                                 "windows": len(chosen), "steps": steps}, sentence)


def _reverse(df: pd.DataFrame) -> pd.DataFrame:
    out = df.sort_values("step").copy()
    out["dead_pct"] = out["dead_pct"].to_numpy()[::-1]
    return out


@register("lm_dead_grows",
          "the dead % over the last complete window is higher than over the first: latents starve while training",
          source="book", counterexample=_reverse, example=_windows_example, needs=("label", "step", "dead_pct"))
def lm_dead_grows(df: pd.DataFrame, *, margin: float = DEAD_MARGIN) -> Verdict:
    """Holds when the last complete window's dead % exceeds the first's by more than ``margin`` points."""
    name = "lm_dead_grows"
    c = _one_curve(df)
    if c is None or len(c) < 2:
        return Verdict(name, None, {}, "Needs at least two complete dead windows of exactly one SAE.")
    first, last = float(c["dead_pct"].iloc[0]), float(c["dead_pct"].iloc[-1])
    holds = last - first > margin
    sentence = (f"{c['label'].iloc[0]}: {first:.1f}% dead over the window ending at step {int(c['step'].iloc[0]):,}, "
                f"{last:.1f}% over the one ending at step {int(c['step'].iloc[-1]):,}.")
    return Verdict(name, holds, {"first": first, "last": last, "windows": len(c)}, sentence)


def _bracket_example() -> pd.DataFrame:
    rows = [("relu_l1", 0.0, 0.02, 0.3), ("relu_l1", 0.0, 0.005, 18.8), ("relu_l1", 0.0, 0.00125, 211.9),
            ("elastic_net", 0.001, 0.02, 0.3), ("elastic_net", 0.001, 0.005, 80.5),
            ("elastic_net", 0.001, 0.00125, 407.5)]
    return pd.DataFrame([{"method": m, "label": f"{m} λ1={l1}", "l1": l1, "l2": l2, "heldout_l0": l0}
                         for m, l2, l1, l0 in rows])


def _reverse_l0(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for _, g in out.groupby(["method", "l2"]):
        idx = g.sort_values("l1").index
        for col in ("heldout_l0", "l0"):
            if col in out:
                out.loc[idx, col] = out.loc[idx, col].to_numpy()[::-1]
    return out


@register("lm_l0_falls_with_l1",
          "within each ℓ1 architecture, L0 falls as λ1 rises",
          source="book", counterexample=_reverse_l0, example=_bracket_example,
          needs=("method", "l1", "l2"))
def lm_l0_falls_with_l1(df: pd.DataFrame, *, l0: str = "heldout_l0") -> Verdict:
    """Holds when, for every (architecture, λ2) trained at two or more λ1, the L0 column ``l0`` (held-out L0 by
    default) strictly decreases with λ1. With a ``steps`` column, SAEs trained for different lengths are compared
    only among themselves (a short calibration run and a full-length one are not one curve: L0 still falls while
    an ℓ1 SAE trains)."""
    name = "lm_l0_falls_with_l1"
    if l0 not in df.columns:
        raise ValueError(f"lm_l0_falls_with_l1 needs the column {l0!r}; the frame has {sorted(df.columns)}")
    keys = ["method", "l2"] + (["steps"] if "steps" in df.columns else [])
    groups = [(k, g.sort_values("l1")) for k, g in df[df["l1"] > 0].groupby(keys) if len(g) >= 2]
    if not groups:
        return Verdict(name, None, {}, "No ℓ1 architecture was trained at two λ1"
                       + (" for the same number of steps." if "steps" in df.columns else "."))
    bad = [k for k, g in groups if not (g[l0].diff().dropna() < 0).all()]
    parts = []
    for k, g in groups:
        seq = " → ".join(f"{v:.1f}" for v in g[l0])
        steps = f", {int(k[2]):,} steps" if len(k) > 2 else ""
        parts.append(f"{k[0]} (λ1 {g['l1'].min():g} to {g['l1'].max():g}{steps}): {seq}")
    sentence = ("Held-out L0" if l0 == "heldout_l0" else "L0") + " as λ1 rises: " + "; ".join(parts) + "."
    return Verdict(name, not bad, {"groups": len(groups), "not_falling": bad}, sentence)


def _splice_example() -> pd.DataFrame:
    return pd.DataFrame([{"label": "topk k=32", "ce_clean": 3.9, "ce_patched": 4.25, "ce_mean_ablated": 9.7},
                         {"label": "relu_l1 λ1=0.005", "ce_clean": 3.9, "ce_patched": 5.1, "ce_mean_ablated": 9.7}])


def _worse_than_ablation(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[0], "ce_patched"] = out.loc[out.index[0], "ce_mean_ablated"] + 1.0
    return out


@register("lm_splice_beats_mean_ablation",
          "spliced into the model, every SAE predicts better than replacing the activations by their mean",
          source="book", counterexample=_worse_than_ablation, example=_splice_example,
          needs=("label", "ce_clean", "ce_patched", "ce_mean_ablated"))
def lm_splice_beats_mean_ablation(df: pd.DataFrame) -> Verdict:
    """Holds when every row's patched CE is below its mean-ablated CE (CE recovered > 0)."""
    name = "lm_splice_beats_mean_ablation"
    d = df.dropna(subset=["ce_patched", "ce_mean_ablated"])
    if d.empty:
        return Verdict(name, None, {}, "No SAE of these sets has been spliced in yet (python -m aen_lib.results.lmref evaluate).")
    rec = 1 - (d["ce_patched"] - d["ce_clean"]) / (d["ce_mean_ablated"] - d["ce_clean"])
    holds = bool((d["ce_patched"] < d["ce_mean_ablated"]).all())
    worst = d.loc[rec.idxmin()]
    if len(d) == 1:
        sentence = f"CE recovered against mean ablation is {rec.iloc[0]:.2f} ({worst['label']})."
    else:
        sentence = (f"CE recovered against mean ablation lies between {rec.min():.2f} ({worst['label']}) and "
                    f"{rec.max():.2f} over {len(d)} SAEs.")
    return Verdict(name, holds, {"min": float(rec.min()), "max": float(rec.max()), "saes": len(d)}, sentence)


def _reach_example() -> pd.DataFrame:
    return pd.DataFrame([{"method": "topk", "label": "topk k=32", "heldout_dead_pct": 83.5,
                          "dead_out_of_reach_pct": 4.6}])


def _all_out_of_reach(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["dead_out_of_reach_pct"] = out["heldout_dead_pct"]
    return out


@register("lm_topk_dead_outcompeted",
          "most latents TopK leaves silent on held-out tokens are within reach (pre-activation positive on some "
          "token): they lose the top-k competition rather than sit out of the data's reach",
          source="book", counterexample=_all_out_of_reach, example=_reach_example,
          needs=("method", "label", "heldout_dead_pct", "dead_out_of_reach_pct"))
def lm_topk_dead_outcompeted(df: pd.DataFrame, *, share: float = 0.5) -> Verdict:
    """Holds when, for every TopK SAE (TopK + AuxK included) with silent latents, fewer than ``share`` of them are out
    of reach."""
    name = "lm_topk_dead_outcompeted"
    d = df[df["method"].isin(("topk", "topk_auxk")) & (df["heldout_dead_pct"] > 0)].dropna(
        subset=["dead_out_of_reach_pct"])
    if d.empty:
        return Verdict(name, None, {}, "No evaluated TopK SAE has silent latents here.")
    frac = d["dead_out_of_reach_pct"] / d["heldout_dead_pct"]
    holds = bool((frac < share).all())
    parts = [f"{r['label']}: {r['heldout_dead_pct']:.1f}% silent, {r['dead_out_of_reach_pct']:.1f}% out of reach"
             for _, r in d.iterrows()]
    return Verdict(name, holds, {"largest_share": float(frac.max()), "saes": len(d)},
                   "On held-out tokens, " + "; ".join(parts) + ".")


# --- chapter 8's own run: the matched table and the splices ----------------------------------------------------------

def _matched_example() -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "target": t, "dead_pct_min": lo, "dead_pct_max": hi}
                         for m, t, lo, hi in (("topk", 32, 60.0, 74.0), ("aen", 32, 15.0, 21.0),
                                              ("topk", 128, 40.0, 45.0), ("aen", 128, 5.0, 8.0))])


def _topk_revived(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out["method"] == "topk", ["dead_pct_min", "dead_pct_max"]] = 0.0
    return out


@register("lm_topk_more_dead_than_aen_matched",
          "at every matched L0 target, TopK has more dead latents than AEN on every seed",
          source="book", counterexample=_topk_revived, example=_matched_example,
          needs=("method", "target", "dead_pct_min", "dead_pct_max"))
def lm_topk_more_dead_than_aen_matched(df: pd.DataFrame) -> Verdict:
    """Holds when, at every target with a TopK and an AEN row, TopK's smallest dead % over seeds exceeds AEN's
    largest; not testable when no target has both."""
    name = "lm_topk_more_dead_than_aen_matched"
    pairs = []
    for tg, g in df.groupby("target"):
        tk, ae = g[g["method"] == "topk"], g[g["method"] == "aen"]
        if len(tk) and len(ae):
            pairs.append((tg, float(tk["dead_pct_min"].iloc[0]), float(ae["dead_pct_max"].iloc[0])))
    if not pairs:
        return Verdict(name, None, {}, "No L0 target has both a TopK and an AEN row.")
    holds = all(t > a for _, t, a in pairs)
    sentence = "; ".join(f"at L0 ≈ {tg:g}, TopK's dead % over seeds is at least {t:.1f} and AEN's at most {a:.1f}"
                         for tg, t, a in pairs) + "."
    return Verdict(name, holds, {"targets": [p[0] for p in pairs]}, sentence[0].upper() + sentence[1:])


def _raw_example() -> pd.DataFrame:
    return pd.DataFrame([{"arch": a, "patched_normalised": p, "patched_raw": r, "ce_clean": 3.9, "ce_mean_ablated": 9.7}
                         for a, p, r in (("AEN", 5.0, 5.02), ("TopK", 4.6, 4.61), ("JumpReLU", 5.2, 5.4))])


def _raw_far(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["patched_raw"] = out["patched_normalised"] + (out["ce_mean_ablated"] - out["ce_clean"])
    return out


@register("raw_splice_moves_little",
          "splicing with the reference code's raw activations (first position untouched) moves the patched CE by "
          "less than a tenth of the gap between clean and mean-ablated CE",
          source="book", counterexample=_raw_far, example=_raw_example,
          needs=("arch", "patched_normalised", "patched_raw", "ce_clean", "ce_mean_ablated"))
def raw_splice_moves_little(df: pd.DataFrame, *, share: float = 0.1) -> Verdict:
    """Holds when every architecture's |patched CE raw − patched CE normalised| is below ``share`` × (CE mean-ablated
    − CE clean)."""
    name = "raw_splice_moves_little"
    if df.empty:
        return Verdict(name, None, {}, "No SAE was spliced both ways.")
    delta = (df["patched_raw"] - df["patched_normalised"]).abs()
    gap = float((df["ce_mean_ablated"] - df["ce_clean"]).iloc[0])
    holds = bool((delta < share * gap).all())
    worst = df.loc[delta.idxmax(), "arch"]
    return Verdict(name, holds, {"max_delta": float(delta.max()), "gap": gap},
                   f"The raw splice moves the patched CE by at most {float(delta.max()):.3f} nats ({worst}), against a "
                   f"clean-to-mean-ablated gap of {gap:.3f}.")


def _sink_example() -> pd.DataFrame:
    return pd.DataFrame([{"arch": a, "recovered_intact": i, "recovered_sink": s}
                         for a, i, s in (("AEN", 0.62, 0.31), ("TopK", 0.75, 0.52))])


def _sink_harmless(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["recovered_sink"] = out["recovered_intact"] + 0.05
    return out


@register("sink_splice_lowers_recovery",
          "splicing the attention-sink position too, which training never saw, lowers every SAE's CE recovered",
          source="book", counterexample=_sink_harmless, example=_sink_example,
          needs=("arch", "recovered_intact", "recovered_sink"))
def sink_splice_lowers_recovery(df: pd.DataFrame) -> Verdict:
    """Holds when every row's CE recovered with every position spliced is below that with the first position
    untouched."""
    name = "sink_splice_lowers_recovery"
    if df.empty:
        return Verdict(name, None, {}, "No SAE was spliced at every position.")
    holds = bool((df["recovered_sink"] < df["recovered_intact"]).all())
    parts = [f"{r['arch']} {r['recovered_intact']:.2f} → {r['recovered_sink']:.2f}" for _, r in df.iterrows()]
    return Verdict(name, holds, {"saes": len(df)},
                   "CE recovered with the first position untouched → with it spliced too: " + "; ".join(parts) + ".")


def _definitions_example() -> pd.DataFrame:
    return pd.DataFrame([{"definition": d, "topk_pct": t, "aen_pct": a}
                         for d, t, a in (("last complete window, during training", 74.0, 21.0),
                                         ("last 100 steps, replayed", 70.0, 18.0),
                                         ("last 2,500 tokens, replayed", 80.0, 30.0))])


def _aen_as_dead(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[0], "aen_pct"] = out.loc[out.index[0], "topk_pct"] + 1.0
    return out


@register("topk_more_dead_than_aen_every_window",
          "under every training-window definition of a dead latent, TopK has a larger share of dead latents than AEN",
          source="book", counterexample=_aen_as_dead, example=_definitions_example,
          needs=("definition", "topk_pct", "aen_pct"))
def topk_more_dead_than_aen_every_window(df: pd.DataFrame) -> Verdict:
    """Holds when TopK's dead % exceeds AEN's in every row (one row per definition)."""
    name = "topk_more_dead_than_aen_every_window"
    if df.empty:
        return Verdict(name, None, {}, "No definition was measured.")
    holds = bool((df["topk_pct"] > df["aen_pct"]).all())
    parts = [f"{r['definition']}: TopK {r['topk_pct']:.1f}%, AEN {r['aen_pct']:.1f}%" for _, r in df.iterrows()]
    return Verdict(name, holds, {"definitions": len(df)}, "; ".join(parts) + ".")


def _mean_example() -> pd.DataFrame:
    return pd.DataFrame([{"label": "topk k=32", "b_dec_init": b, "inputs": "raw", "heldout_dead_pct": h,
                          "dead_pct_paper_window": w} for b, h, w in (("zero", 83.5, 41.0), ("mean", 2.0, 0.5))])


def _mean_useless(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    zero = out[(out["b_dec_init"] == "zero") & (out["inputs"] == "raw")].iloc[0]
    treated = (out["b_dec_init"] == "mean") | (out["inputs"] == "centred")
    for col in ("heldout_dead_pct", "dead_pct_paper_window"):
        out.loc[treated, col] = zero[col]
    return out


@register("lm_mean_removal_cuts_topk_death",
          "taking the activations' mean away (the pre-encoder bias started at the training mean, or centred inputs) "
          "cuts TopK's dead latents, on the held-out tokens and over the paper's window",
          source="book", counterexample=_mean_useless, example=_mean_example,
          needs=("label", "b_dec_init", "inputs", "heldout_dead_pct", "dead_pct_paper_window"))
def lm_mean_removal_cuts_topk_death(df: pd.DataFrame, *, margin: float = DEAD_MARGIN) -> Verdict:
    """``df``: the TopK SAEs of one k (:func:`aen_lib.results.lm_tables.lm_frame` rows). Holds when every treated SAE (b_dec at
    the mean, or centred inputs) has fewer dead latents than the untreated one (b_dec at 0, raw inputs) by more than
    ``margin`` points under both definitions; not testable without both."""
    name = "lm_mean_removal_cuts_topk_death"
    base = df[(df["b_dec_init"] == "zero") & (df["inputs"] == "raw")]
    treated = df[(df["b_dec_init"] == "mean") | (df["inputs"] == "centred")]
    if base.empty or treated.empty:
        return Verdict(name, None, {}, "Needs TopK trained both with b_dec at 0 and with the mean taken away.")
    b = base.iloc[0]
    parts, ok = [], True
    for _, t in treated.iterrows():
        how = "b_dec at the mean" if t["b_dec_init"] == "mean" else "centred inputs"
        for col, what in (("heldout_dead_pct", "silent on held-out tokens"),
                          ("dead_pct_paper_window", "dead over the last 4,096,000-token window")):
            if pd.isna(t[col]) or pd.isna(b[col]):  # not recorded under this definition: judged on the other
                continue
            ok = ok and (float(b[col]) - float(t[col]) > margin)
            parts.append(f"{what}: {float(b[col]):.1f}% with b_dec at 0, {float(t[col]):.1f}% with {how}")
    if not parts:
        return Verdict(name, None, {}, "The dead % of the compared SAEs is not recorded under either definition.")
    return Verdict(name, bool(ok), {"saes": len(treated)}, f"{b['label']}: " + "; ".join(parts) + ".")


# --- the matched-L0 table of the committed sets (aen_lib.results.lm_tables.lm_matched_table) ------------------------------

def _matched_sets_example() -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "treatment": "b_dec at 0", "label": lab, "heldout_l0": l0, "matched": True,
                          "dead_pct_paper_window": d}
                         for m, lab, l0, d in (("topk", "topk k=32", 32.0, 41.0), ("aen", "aen λ1=0.004", 30.5, 8.0))])


def _aen_starved(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    top = out.loc[out["method"] == "topk", "dead_pct_paper_window"].max()
    out.loc[out["method"] == "aen", "dead_pct_paper_window"] = float(top) + 10.0
    return out


@register("lm_topk_more_dead_than_aen_at_matched_l0",
          "at matched L0 near 32 (each within 15% of it on held-out tokens), TopK has more dead latents than AEN over "
          "the paper's dead window, scaled to the run, on every seed; both with the pre-encoder bias at 0 as in the "
          "paper", source="paper", counterexample=_aen_starved, example=_matched_sets_example,
          needs=("method", "treatment", "label", "heldout_l0", "matched", "dead_pct_paper_window"))
def lm_topk_more_dead_than_aen_at_matched_l0(df: pd.DataFrame, *, margin: float = DEAD_MARGIN,
                                             beta: str | None = None, treatment: str = "b_dec at 0") -> Verdict:
    """``df``: :func:`aen_lib.results.lm_tables.lm_matched_table`. TopK and AEN rows are paired by seed (a frame without a
    ``seed`` column is one seed); AEN's rows are those of the sets' adaptive rule (``beta``, default the β of
    :data:`aen_lib.results.lm_sets.LM_ADAPTIVE_BETA`), so a β study does not stand in for the matched row. Holds when
    TopK's dead % exceeds AEN's by more than ``margin`` points on every seed where both are matched; not testable
    when no seed has both rows with ``treatment`` (the paper's b_dec at 0 by default; ``"b_dec at the mean"`` or
    ``"centred rows"`` judge the same claim once the mean is taken away from both), or none has both matched (the
    sentence names the L0 reached)."""
    from ..lm_sets import LM_ADAPTIVE_BETA
    from ..lm_tables import treatment as _treatment

    known = {_treatment("zero", "raw"), _treatment("mean", "raw"), _treatment("zero", "centred")}
    if treatment not in known:
        raise ValueError(f"treatment must be one of {sorted(known)}, got {treatment!r}")
    name = "lm_topk_more_dead_than_aen_at_matched_l0"
    base = df[df["treatment"] == treatment]
    if "seed" not in base:
        base = base.assign(seed=0)
    want = f"{LM_ADAPTIVE_BETA:g}" if beta is None else beta
    aen = base[base["method"] == "aen"]
    if "beta" in aen:
        aen = aen[aen["beta"] == want]
    rows = {"topk": base[base["method"] == "topk"], "aen": aen}
    missing = [m for m, r in rows.items() if r.empty]
    if missing:
        return Verdict(name, None, {}, f"No full-length {' or '.join(missing)} SAE with {treatment} is committed yet.")
    seeds = sorted(set(rows["topk"]["seed"]) & set(rows["aen"]["seed"]))
    if not seeds:
        return Verdict(name, None, {}, "TopK and AEN have no seed in common yet.")
    pairs, off = [], []
    for seed in seeds:
        t = rows["topk"][rows["topk"]["seed"] == seed].iloc[0]
        a = rows["aen"][rows["aen"]["seed"] == seed].iloc[0]
        bad = [r for r in (t, a) if not bool(r["matched"])]
        (off.extend(bad) if bad else pairs.append((int(seed), t, a)))
    if not pairs:
        return Verdict(name, None, {"heldout_l0": {r["label"]: float(r["heldout_l0"]) for r in off}},
                       "Not yet matched: " + "; ".join(f"{r['label']} reached held-out L0 {float(r['heldout_l0']):.1f}"
                                                       for r in off) + ", more than 15% from 32.")
    gaps = {s: float(t["dead_pct_paper_window"]) - float(a["dead_pct_paper_window"]) for s, t, a in pairs}
    holds = all(g > margin for g in gaps.values())
    numbers: dict[str, Any] = {"topk": float(pairs[0][1]["dead_pct_paper_window"]),
                               "aen": float(pairs[0][2]["dead_pct_paper_window"])}
    if len(pairs) > 1:
        numbers = {"seeds": [s for s, _, _ in pairs],
                   "topk": [float(t["dead_pct_paper_window"]) for _, t, _ in pairs],
                   "aen": [float(a["dead_pct_paper_window"]) for _, _, a in pairs]}
    sentence = "; ".join(f"seed {s}: {t['label']} (held-out L0 {float(t['heldout_l0']):.1f}) has "
                         f"{float(t['dead_pct_paper_window']):.1f}% dead latents over the window, {a['label']} "
                         f"(L0 {float(a['heldout_l0']):.1f}) {float(a['dead_pct_paper_window']):.1f}%" for s, t, a in pairs)
    splits = sorted({str(r["train_split"]) for _, t, a in pairs for r in (t, a)
                     if "train_split" in r and isinstance(r["train_split"], str) and r["train_split"]})
    if len(splits) > 1:  # never pooled silently: the sentence says the rows read different builds of the corpus
        sentence += f" (the rows read different training splits: {', '.join(splits)})"
    if off:
        sentence += "; not matched, left out: " + ", ".join(f"{r['label']} (L0 {float(r['heldout_l0']):.1f})"
                                                           for r in off)
    return Verdict(name, bool(holds), numbers, sentence + ".")


def lm_outlier_explanation(removal: Verdict, aen_with_mean: Verdict) -> str:
    """The answer to "which explanation do the numbers support here?" on the language-model sets, from two verdicts:
    ``lm_mean_removal_cuts_topk_death`` (TopK with the mean taken away against the pilot) and
    ``lm_topk_more_dead_than_aen_at_matched_l0`` judged with ``treatment="b_dec at the mean"`` (TopK and AEN both
    started at the mean). Says what is not yet trained rather than guessing."""
    if removal.claim != "lm_mean_removal_cuts_topk_death" or \
            aen_with_mean.claim != "lm_topk_more_dead_than_aen_at_matched_l0":
        raise ValueError("lm_outlier_explanation takes the verdicts of lm_mean_removal_cuts_topk_death and "
                         f"lm_topk_more_dead_than_aen_at_matched_l0, got {removal.claim!r} and {aen_with_mean.claim!r}")
    if removal.holds is None:
        return ("Neither explanation can be judged yet: TopK has not been trained both with b_dec at 0 and with the "
                "mean taken away.")
    if aen_with_mean.holds is None:
        after = ("whether AEN's objective still starves less than TopK once both start at the mean cannot be judged "
                 "until AEN is trained that way at matched L0 too (the study aen_biasmean)")
    elif aen_with_mean.holds:
        after = "with both started at the mean, AEN still has fewer dead latents than TopK at matched L0"
    else:
        after = ("once both start at the mean, AEN no longer has fewer dead latents than TopK at matched L0: its "
                 "advantage with b_dec at 0 belongs to the mean, not to the objective")
    if removal.holds:
        lead = ("Both" if aen_with_mean.holds else "The outlier explanation, for TopK" if aen_with_mean.holds is None
                else "The outlier explanation")
        return f"{lead}: taking the activations' mean away cuts TopK's dead latents, and {after}."
    return ("The outlier explanation is at most part of the story here: taking the mean away does not cut TopK's dead "
            f"latents by more than the margin, and {after}.")


def _weights_example() -> pd.DataFrame:
    return pd.DataFrame([{"label": "aen λ1=0.004", "method": "aen", "w_frac_max": 0.95}])


def _weights_unsaturated(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(w_frac_max=0.0)


@register("lm_aen_weights_end_at_w_max",
          "in the language-model AEN runs most adaptive weights end at w_max (the paper: 90-99.9% on Pythia-70M and "
          "Llama-3.1-8B)", source="paper", counterexample=_weights_unsaturated, example=_weights_example,
          needs=("label", "method", "w_frac_max"))
def lm_aen_weights_end_at_w_max(df: pd.DataFrame, *, share: float = 0.9) -> Verdict:
    """``df``: :func:`aen_lib.results.lm_tables.lm_frame` rows. Holds when every AEN SAE ends with at least ``share`` of its
    weights at w_max; not testable without an AEN SAE that records its weights."""
    name = "lm_aen_weights_end_at_w_max"
    aen = df[(df["method"] == "aen") & df["w_frac_max"].notna()]
    if aen.empty:
        return Verdict(name, None, {}, "No AEN SAE with recorded adaptive weights.")
    fr = aen["w_frac_max"].astype(float)
    holds = bool((fr >= share).all())
    share = (f"the AEN SAE ends with {100 * fr.min():.1f}% of its weights at w_max" if len(aen) == 1 else
             f"over {len(aen)} AEN SAEs, {100 * fr.min():.1f}% to {100 * fr.max():.1f}% of the weights end at w_max")
    return Verdict(name, holds, {"min": float(fr.min()), "max": float(fr.max())},
                   f"{share[0].upper()}{share[1:]} (the paper: 90-99.9%).")
