"""Claims of the outlier study: what the input mean does to dead latents (Simon, Adams & Zou 2026), measured on the
reference sets "paper" (b_dec at 0) and one way of taking the mean away at one ρ and seed: "biasmean" (b_dec started
at the mean) or "centred" (mean-centred inputs).

* ``init_out_of_reach`` — at initialisation, with b_dec at 0, the input mean leaves latents whose pre-activation is
  ≤ 0 on every sample; with b_dec at the mean none are;
* ``mean_removal_cuts_death`` — taking the input mean away (b_dec started at the mean, which for a tied pre-encoder
  bias is the same as centring the inputs) lowers every method's dead % by more than a margin;
* ``aen_starves_less_at_matched_l0`` — among SAEs trained alike, AEN has fewer dead latents than TopK and than
  vanilla ℓ1 at comparable L0 (within a factor 1.5), by more than a margin.
"""

from __future__ import annotations

import pandas as pd

from .core import DEAD_COLUMN, DEAD_MARGIN, Verdict, register


# --- the outlier study (reference sets "paper" and "biasmean" or "centred" at one ρ and seed) ----------------------------------------

def _outlier_example() -> pd.DataFrame:
    """Two methods, each trained with b_dec at 0 and at the mean (numbers made up, shaped like ρ = 0.9)."""
    rows = []
    for study, init, dead in (("paper", 37.0, (96.0, 44.0, 45.0)), ("biasmean", 0.0, (20.0, 5.0, 30.0))):
        for (method, label, l0), d in zip((("topk", "TopK k=32", 30.0), ("aen", "AEN λ1=0.001", 34.0),
                                           ("relu_l1", "ReLU+ℓ1 λ1=0.001", 45.0)), dead):
            rows.append({"study": study, "method": method, "variant": f"{method}-x", "label": label, "l0": l0,
                         DEAD_COLUMN: d, "init_negative_pct": init})
    return pd.DataFrame(rows)


def _treated(df: pd.DataFrame) -> pd.Series:
    """Which rows took the mean away: every study but "paper", which must be one study (a frame mixing "biasmean"
    and "centred" would pair each SAE with two twins)."""
    studies = sorted(set(df["study"]) - {"paper"})
    if len(studies) > 1:
        raise ValueError(f"the frame mixes the studies {studies}; judge one way of taking the mean away at a time "
                         "(outlier_frame's treatment)")
    return df["study"] != "paper"


def _twins(df: pd.DataFrame) -> pd.DataFrame:
    """Pairs of one config trained with b_dec at 0 (study "paper") and with the mean taken away (study "biasmean" or
    "centred"): one row per variant with ``<col>_zero`` and ``<col>_mean``."""
    treated = _treated(df)
    zero = df[~treated].set_index("variant")
    mean = df[treated].set_index("variant")
    both = zero.index.intersection(mean.index)
    return zero.loc[both].add_suffix("_zero").join(mean.loc[both].add_suffix("_mean")).reset_index()


def _flip_init(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    mean = _treated(out)
    out.loc[mean, "init_negative_pct"] = out.loc[~mean, "init_negative_pct"].max()  # the mean no longer helps
    return out


@register("init_out_of_reach",
          "at initialisation the input mean leaves latents out of reach (pre-activation ≤ 0 on every sample) when "
          "b_dec starts at 0, and none when it starts at the mean",
          source="book", counterexample=_flip_init, example=_outlier_example, needs=("study", "variant", "label", "init_negative_pct"))
def init_out_of_reach(df: pd.DataFrame, *, min_pct: float = 1.0) -> Verdict:
    """Holds when every twin pair has more than ``min_pct`` % of its latents out of reach at step 0 with b_dec at 0
    and at most ``min_pct`` % with b_dec at the mean."""
    t = _twins(df)
    name = "init_out_of_reach"
    if t.empty:
        return Verdict(name, None, {}, "No SAE was trained both with b_dec at 0 and at the mean.")
    zero, mean = t["init_negative_pct_zero"], t["init_negative_pct_mean"]
    holds = bool((zero > min_pct).all() and (mean <= min_pct).all())
    sentence = (f"At step 0, {zero.min():.1f}–{zero.max():.1f}% of the latents are out of reach with b_dec at 0 "
                f"and {mean.min():.1f}–{mean.max():.1f}% with b_dec at the mean ({len(t)} SAEs).")
    return Verdict(name, holds, {"zero_min": float(zero.min()), "zero_max": float(zero.max()),
                                 "mean_max": float(mean.max()), "pairs": len(t)}, sentence)


_AFTER = {"biasmean": "at the mean", "centred": "on centred inputs"}
"""How a removal sentence names each way of taking the mean away."""


def _flip_removal(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    mean = _treated(out)
    zero = out[~mean].set_index("variant")[DEAD_COLUMN]
    out.loc[mean, DEAD_COLUMN] = out.loc[mean, "variant"].map(zero).fillna(out.loc[mean, DEAD_COLUMN])
    return out


@register("mean_removal_cuts_death",
          "taking the input mean away (b_dec started at the mean, the same as centring the inputs) lowers every "
          "method's dead %",
          source="book", counterexample=_flip_removal, example=_outlier_example, needs=("study", "variant", "label", DEAD_COLUMN))
def mean_removal_cuts_death(df: pd.DataFrame, *, margin: float = DEAD_MARGIN) -> Verdict:
    """Holds when every twin pair's dead % (:data:`DEAD_VARIANT`) is lower with b_dec at the mean by more than
    ``margin`` points. A pair whose dead % with b_dec at 0 is already at most ``margin`` cannot fall by more than the
    margin, so it is left out of the judgement and named in the sentence; with no pair left the claim is not testable."""
    t = _twins(df)
    name = "mean_removal_cuts_death"
    if t.empty:
        return Verdict(name, None, {}, "No SAE was trained both with b_dec at 0 and at the mean.")
    drop = t[f"{DEAD_COLUMN}_zero"] - t[f"{DEAD_COLUMN}_mean"]
    if drop.isna().any():
        return Verdict(name, None, {}, "Some SAE lacks a complete dead window (a run shorter than one window).")
    per = {str(r["label_zero"]): (float(r[f"{DEAD_COLUMN}_zero"]), float(r[f"{DEAD_COLUMN}_mean"]))
           for _, r in t.iterrows()}
    room = t[f"{DEAD_COLUMN}_zero"] > margin
    floor = [str(lab) for lab in t.loc[~room, "label_zero"]]
    treated = sorted(set(df.loc[_treated(df), "study"]))
    after = _AFTER.get(treated[0], "with the mean taken away") if treated else "with the mean taken away"
    sentence = f"Dead % with b_dec at 0 → {after}: " + "; ".join(f"{k} {a:.1f} → {b:.1f}" for k, (a, b) in per.items())
    numbers: dict = {"per_sae": per, "left_out": floor}
    if not room.any():
        return Verdict(name, None, numbers, sentence + f"; every SAE has at most {margin:g}% dead with b_dec at 0, so "
                                                       "there is no death for the mean to cut.")
    judged = drop[room]
    holds = bool((judged > margin).all())
    numbers.update(drop_min=float(judged.min()), drop_max=float(judged.max()))
    sentence += f" (drops of {judged.min():.1f}–{judged.max():.1f} points"
    if floor:
        sentence += (f"; not judged, already at most {margin:g}% dead with b_dec at 0: {', '.join(floor)}")
    return Verdict(name, holds, numbers, sentence + ").")


def _flip_aen(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out["method"] == "aen", DEAD_COLUMN] = 100.0  # AEN as starved as anything can be
    return out


@register("aen_starves_less_at_matched_l0",
          "AEN has fewer dead latents than TopK and than vanilla ℓ1 at comparable L0",
          source="paper", counterexample=_flip_aen,
          example=lambda: _outlier_example().query("study == 'biasmean'"), needs=("method", "label", "l0", DEAD_COLUMN))
def aen_starves_less_at_matched_l0(df: pd.DataFrame, *, margin: float = DEAD_MARGIN, max_ratio: float = 1.5,
                                   others: tuple[str, ...] = ("topk", "relu_l1")) -> Verdict:
    """Pairs every AEN SAE with the SAE of each method in ``others`` nearest in L0 (within a factor ``max_ratio``,
    :func:`aen_lib.results.records.nearest_in_l0`; pass SAEs trained alike: one study, one ρ, one seed). Holds when AEN's dead
    % is lower than the other's by more than ``margin`` in every pair; not testable when no pair exists."""
    from ..records import nearest_in_l0

    name = "aen_starves_less_at_matched_l0"
    frame = df.dropna(subset=[DEAD_COLUMN]).assign(_all=0)  # an SAE without a complete dead window says nothing
    pairs, gaps = [], {}
    for other in others:
        p = nearest_in_l0(frame, "aen", other, by=["_all"], max_ratio=max_ratio)
        for _, r in p.iterrows():
            gaps.setdefault(other, []).append(float(r[f"{DEAD_COLUMN}_{other}"] - r[f"{DEAD_COLUMN}_aen"]))
            pairs.append(f"{r['label_aen']} (L0 {r['l0_aen']:.1f}) {r[f'{DEAD_COLUMN}_aen']:.1f}% against "
                         f"{r[f'label_{other}']} (L0 {r[f'l0_{other}']:.1f}) {r[f'{DEAD_COLUMN}_{other}']:.1f}%")
    if not pairs:
        return Verdict(name, None, {}, f"No AEN SAE has a {' or '.join(others)} SAE within a factor {max_ratio:g} "
                                       "of its L0.")
    every = [g for gs in gaps.values() for g in gs]
    beats = {o: bool(min(gs) > margin) for o, gs in gaps.items()}
    return Verdict(name, all(beats.values()), {"pairs": pairs, "gap_min": min(every), "gap_max": max(every),
                                               "beats": beats},
                   "Dead % at comparable L0: " + "; ".join(pairs) + ".")


_OTHER_NAMES = {"topk": "TopK", "relu_l1": "vanilla ℓ1"}


_STARTED = {"biasmean": ("started at the mean", "starts at the mean"), "centred": ("trained on centred inputs",
                                                                                "is trained on centred inputs")}
"""How the explanation names each way of taking the mean away (after "every SAE", in two tenses)."""


def outlier_explanation(removal: Verdict, aen_with_mean: Verdict, treatment: str = "biasmean") -> str:
    """The answer to "which explanation do the numbers support?" from two verdicts: ``mean_removal_cuts_death`` (on
    the twin pairs) and ``aen_starves_less_at_matched_l0`` on the SAEs that all had the mean taken away, the way
    ``treatment`` names (``"biasmean"``: b_dec started at the mean; ``"centred"``: centred inputs)."""
    if removal.claim != "mean_removal_cuts_death" or aen_with_mean.claim != "aen_starves_less_at_matched_l0":
        raise ValueError("outlier_explanation takes the verdicts of mean_removal_cuts_death and "
                         f"aen_starves_less_at_matched_l0, got {removal.claim!r} and {aen_with_mean.claim!r}")
    if treatment not in _STARTED:
        raise ValueError(f"treatment={treatment!r}: choose one of {sorted(_STARTED)}")
    were, are = _STARTED[treatment]
    if removal.holds is None:
        return f"Neither explanation can be judged: no SAE was trained both with b_dec at 0 and {_AFTER[treatment]}."
    if aen_with_mean.holds is None:
        after = (f"with every SAE {were}, no AEN SAE has a TopK or vanilla neighbour close enough in L0 to "
                 "say whether AEN's objective adds anything")
    elif aen_with_mean.holds:
        after = f"with every SAE {were}, AEN still starves less than TopK and vanilla ℓ1 at comparable L0"
    else:
        beats = aen_with_mean.numbers.get("beats", {})
        kept = [_OTHER_NAMES.get(o, o) for o, ok in beats.items() if ok]
        lost = [_OTHER_NAMES.get(o, o) for o, ok in beats.items() if not ok] or ["TopK and vanilla ℓ1"]
        after = (f"once every SAE {are}, AEN no longer has fewer dead latents than {' and '.join(lost)} "
                 "at comparable L0" + (f" (it still has fewer than {' and '.join(kept)})" if kept else "") +
                 ": whatever advantage it has there with b_dec at 0 comes from the mean, not from its objective")
    cut = ("the dead latents of every SAE that had more than the margin to lose"
           if removal.numbers.get("left_out") else "every SAE's dead latents")
    if removal.holds:
        if aen_with_mean.holds is False:
            return f"The outlier explanation: taking the input mean away lowers {cut}, and {after}."
        return f"{'Both' if aen_with_mean.holds else 'The input mean'}: taking the input mean away lowers {cut}, and {after}."
    return ("The outlier explanation is at most part of the story: taking the input mean away does not lower every "
            f"SAE's dead latents by more than the margin, and {after}.")


def _equivalence_example() -> pd.DataFrame:
    return pd.DataFrame([{"SAE": m, "max_diff_ev": d, "max_diff_raw_ev": r}
                         for m, d, r in (("topk k=32", 2e-6, 0.05), ("aen λ1=0.001", 1e-6, 0.03))])


def _centring_differs(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[0], "max_diff_ev"] = 0.05
    return out


@register("centring_equals_biasmean",
          "with a tied pre-encoder bias, starting b_dec at the data mean and centring the inputs train the same SAE",
          source="book", counterexample=_centring_differs, example=_equivalence_example,
          needs=("SAE", "max_diff_ev", "max_diff_raw_ev"))
def centring_equals_biasmean(df: pd.DataFrame, *, tol: float = 1e-3, dead_tol: float = DEAD_MARGIN) -> Verdict:
    """Holds when every method's two runs differ in EV by less than ``tol`` at every log and, where the frame has
    ``max_diff_dead_pct``, in dead % by at most ``dead_tol`` points (the book's margin for "no difference" in dead %);
    not testable when the raw run (b_dec at 0, raw inputs) is as close to them, since then nothing depended on the
    mean at all. Takes :func:`aen_lib.results.reference.bias_centring_equivalence` (a short live run) or
    :func:`aen_lib.results.reference.centring_at_size` (the committed paper-size sets)."""
    name = "centring_equals_biasmean"
    if df.empty:
        return Verdict(name, None, {}, "No pair of runs was trained.")
    if not (df["max_diff_raw_ev"] > tol).any():
        return Verdict(name, None, {}, "The raw run is as close as the pair: the mean changed nothing to compare.")
    worst = float(df["max_diff_ev"].max())
    holds = worst < tol
    numbers = {"max_diff_ev": worst}
    sentence = (f"b_dec at the mean and centred inputs differ in EV by at most {worst:.1e}")
    if "max_diff_dead_pct" in df.columns:
        dead = float(df["max_diff_dead_pct"].max())
        holds = holds and dead <= dead_tol
        numbers["max_diff_dead_pct"] = dead
        sentence += f" and in dead % by at most {dead:.2f} points"
    return Verdict(name, holds, numbers,
                   sentence + f" over {len(df)} SAE(s) at every log, where the paper's start differs in EV by "
                   f"{float(df['max_diff_raw_ev'].min()):.3f} or more.")
