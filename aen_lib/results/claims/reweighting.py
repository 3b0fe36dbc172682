"""Claims of chapter 4 (adaptive reweighting): the irrepresentable condition of the spiked dictionaries, support
recovery and shrinkage of the four penalties on two small designs, the adaptive weights of one known code, the
closed-form bias and the Hoffman diagnostics. Every solve here is the *exact* coding map of a known dictionary with a
per-input pilot, not an SAE: what carries over to an SAE is chapter 5's question.

Frames (one per section of the chapter):

* IRC table, one row per ρ: ``rho, irc_mean, authors`` (the authors' value or NaN) and the sizes ``n, m, k, supports``:
  ``irc_matches_authors``, ``irc_fails_from_rho_03``;
* recovery, one row per design (``"holds"``, ``"fails"``) and penalty (:data:`aen_lib.theory.geometry.PENALTIES`) at the
  penalty's best λ1: ``design, penalty, recovery, shrinkage``: ``aen_recovers_support_where_lasso_fails`` (the
  headline), ``lasso_recovers_where_irc_holds``, ``adaptive_lasso_recovers_and_shrinks_less``,
  ``weights_not_l2_fix_support``;
* weights of the known code on the failing design, one row per atom: ``weight, on_support``:
  ``weights_rank_true_atoms_first``; and its irrepresentable value without and with them, one row per
  ``weighting`` (``"none"``, ``"adaptive"``): ``irc_one_sided``: ``weights_repair_irc``;
* closed-form bias, one row per penalty: ``penalty, right_support, max_diff``: ``oracle_bias_matches_solver``;
* Hoffman diagnostics, one row per ρ and penalty: ``rho, penalty, curvature``: ``lasso_curvature_grows_with_rho``.

Not claims, because no result can contradict them (they are said as definitions in the chapter and tested in
``tests/test_geometry.py``): the block bounds sandwich the Hoffman constant; λ2 caps the curvature term at 1/λ2; weights
clamped at w ≥ 1 can only shrink the interaction term.
"""

from __future__ import annotations

import math

import pandas as pd

from .core import Verdict, register

AEN, LASSO, ADA = "adaptive_elastic_net", "lasso", "adaptive_lasso"


def _pct(share: float) -> str:
    """A share of trials as a percentage, with one decimal unless it is a whole number."""
    v = 100 * share
    return f"{v:.0f}%" if abs(v - round(v)) < 1e-9 else f"{v:.1f}%"
AUTHORS_SIZES = (256, 1024, 16, 100)
"""n, m, support size and number of supports of the authors' IRC statistics (book: paper facts, synthetic protocol)."""


# --- the IRC table -------------------------------------------------------------------------------------------------

def _irc_example() -> pd.DataFrame:
    n, m, k, sets = AUTHORS_SIZES
    return pd.DataFrame([dict(rho=r, irc_mean=v + 0.01, authors=v, n=n, m=m, k=k, supports=sets)
                         for r, v in ((0.0, 0.868), (0.3, 1.092), (0.9, 1.003))])


def _irc_off(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(irc_mean=df["irc_mean"] + 0.1)


@register("irc_matches_authors",
          "our mean irrepresentable values of random 16-atom supports match the authors' reference statistics within "
          "0.03 at every ρ they report",
          source="paper", counterexample=_irc_off, example=_irc_example,
          needs=("rho", "irc_mean", "authors", "n", "m", "k", "supports"))
def irc_matches_authors(df: pd.DataFrame, *, tol: float = 0.03) -> Verdict:
    """Not testable unless the table was computed at the authors' sizes (:data:`AUTHORS_SIZES`) and has a ρ with an
    authors' value."""
    name = "irc_matches_authors"
    sizes = {tuple(int(v) for v in r) for r in df[["n", "m", "k", "supports"]].itertuples(index=False)}
    rows = df.dropna(subset=["authors"])
    if sizes != {AUTHORS_SIZES} or rows.empty:
        return Verdict(name, None, {}, "The IRC table was computed at other sizes than the authors' statistics "
                                       f"(n, m, k, supports = {AUTHORS_SIZES}), so it cannot be compared with them.")
    diff = (rows["irc_mean"] - rows["authors"]).abs()
    holds = bool((diff < tol).all())
    per = "; ".join(f"ρ = {r.rho:g}: {r.irc_mean:.3f} against {r.authors:.3f}" for r in rows.itertuples())
    return Verdict(name, holds, {"max_diff": float(diff.max()), "rhos": rows["rho"].tolist()},
                   f"Mean IRC, ours against the authors' ({per}): "
                   + (f"within {tol:g} at every ρ." if holds else f"off by up to {diff.max():.3f}."))


def _irc_holds_everywhere(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(irc_mean=0.9)


@register("irc_fails_from_rho_03",
          "the irrepresentable condition holds on average for uncorrelated atoms (ρ = 0) and fails on average from "
          "ρ = 0.3 on",
          source="paper", counterexample=_irc_holds_everywhere, example=_irc_example, needs=("rho", "irc_mean"))
def irc_fails_from_rho_03(df: pd.DataFrame) -> Verdict:
    """Holds when the mean IRC is below 1 at ρ = 0 and above 1 at every ρ ≥ 0.3; not testable without both."""
    name = "irc_fails_from_rho_03"
    by = df.set_index("rho")["irc_mean"]
    high = by[by.index >= 0.3]
    if 0.0 not in by.index or high.empty:
        return Verdict(name, None, {}, "The IRC table needs ρ = 0 and some ρ ≥ 0.3.")
    holds = bool(by[0.0] < 1 and (high > 1).all())
    per = ", ".join(f"{v:.3f} at ρ = {r:g}" for r, v in high.items())
    return Verdict(name, holds, {"irc_rho0": float(by[0.0]), "irc_high_min": float(high.min())},
                   f"The mean IRC is {by[0.0]:.3f} at ρ = 0 and {per}: " +
                   ("it holds on average only without the spike." if holds else
                    "it is not below 1 at ρ = 0 and above 1 at every ρ ≥ 0.3."))


# --- support recovery and shrinkage -------------------------------------------------------------------------------

def _recovery_example() -> pd.DataFrame:
    best = {"holds": {LASSO: (0.9, 0.44), "elastic_net": (0.9, 0.46), ADA: (1.0, 0.09), AEN: (1.0, 0.11)},
            "fails": {LASSO: (0.0, 0.06), "elastic_net": (0.0, 0.17), ADA: (1.0, 0.02), AEN: (1.0, 0.04)}}
    return pd.DataFrame([dict(design=d, penalty=p, recovery=r, shrinkage=s)
                         for d, by in best.items() for p, (r, s) in by.items()])


def _get(df: pd.DataFrame, design: str, penalty: str, col: str) -> float:
    row = df[(df["design"] == design) & (df["penalty"] == penalty)]
    if len(row) != 1:
        raise KeyError(f"no single row for design {design!r}, penalty {penalty!r}")
    return float(row[col].iloc[0])


def _aen_as_elastic_net(df: pd.DataFrame) -> pd.DataFrame:
    """What w_max = 1 does: every adaptive weight is 1, so the adaptive elastic net is the elastic net."""
    out = df.copy()
    for design in ("holds", "fails"):
        for col in ("recovery", "shrinkage"):
            out.loc[(out["design"] == design) & (out["penalty"] == AEN), col] = _get(df, design, "elastic_net", col)
    return out


def _designs_present(df: pd.DataFrame, penalties: tuple[str, ...]) -> bool:
    have = set(zip(df["design"], df["penalty"]))
    return all((d, p) in have for d in ("holds", "fails") for p in penalties)


@register("aen_recovers_support_where_lasso_fails",
          "on a fixed dictionary with a per-input pilot, the adaptive elastic net selects exactly the true support in "
          "most trials where the irrepresentable condition holds and where it fails, the lasso does not where it "
          "fails, and where it holds the adaptive elastic net shrinks the true codes less than the lasso",
          source="book", counterexample=_aen_as_elastic_net, example=_recovery_example,
          needs=("design", "penalty", "recovery", "shrinkage"))
def aen_recovers_support_where_lasso_fails(df: pd.DataFrame, *, majority: float = 0.5) -> Verdict:
    """Each penalty at its best λ1 (``recovery``: share of trials with supp ĥ = S). Holds when the AEN's recovery is
    at least ``majority`` in both designs, the lasso's is below it where the IRC fails (and below the AEN's), and
    the AEN's shrinkage is below the lasso's where the IRC holds."""
    name = "aen_recovers_support_where_lasso_fails"
    if not _designs_present(df, (AEN, LASSO)):
        return Verdict(name, None, {}, "Need the lasso and the adaptive elastic net on both designs.")
    rec = {d: _get(df, d, AEN, "recovery") for d in ("holds", "fails")}
    lasso_fail = _get(df, "fails", LASSO, "recovery")
    shr_aen, shr_lasso = _get(df, "holds", AEN, "shrinkage"), _get(df, "holds", LASSO, "shrinkage")
    numbers = {"aen_holds": rec["holds"], "aen_fails": rec["fails"], "lasso_fails": lasso_fail,
               "shrinkage_aen_holds": shr_aen, "shrinkage_lasso_holds": shr_lasso}
    problems = [f"IRC {d}: the adaptive elastic net recovers S in only {_pct(r)} of the trials"
                for d, r in rec.items() if r < majority]
    if lasso_fail >= majority:
        problems.append(f"IRC fails, yet the lasso recovers S in {_pct(lasso_fail)} of the trials: the design does not "
                        "show the lasso's failure")
    if not rec["fails"] > lasso_fail:
        problems.append("where the IRC fails the adaptive elastic net does not recover S more often than the lasso")
    if not shr_aen < shr_lasso:
        problems.append(f"IRC holds: the adaptive elastic net shrinks the true codes by {shr_aen:.3f}, not less than "
                        f"the lasso's {shr_lasso:.3f}")
    if problems:
        return Verdict(name, False, numbers, "; ".join(problems) + ".")
    return Verdict(name, True, numbers,
                   f"The adaptive elastic net selected exactly S in {_pct(rec['holds'])} of the trials where the "
                   f"condition holds and {_pct(rec['fails'])} where it fails, against {_pct(lasso_fail)} for the lasso "
                   f"there; where it holds it shrank the true codes by {shr_aen:.3f} against the lasso's "
                   f"{shr_lasso:.3f}.")


def _lasso_fails_everywhere(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(recovery=df["recovery"].where(df["penalty"] != LASSO, 0.0))


@register("lasso_recovers_where_irc_holds",
          "where the irrepresentable condition holds, the lasso selects exactly the true support in most trials at "
          "its best λ1",
          source="book", counterexample=_lasso_fails_everywhere, example=_recovery_example,
          needs=("design", "penalty", "recovery", "shrinkage"))
def lasso_recovers_where_irc_holds(df: pd.DataFrame, *, majority: float = 0.5) -> Verdict:
    name = "lasso_recovers_where_irc_holds"
    if not _designs_present(df, (LASSO,)):
        return Verdict(name, None, {}, "Need the lasso on both designs.")
    rec, shr = _get(df, "holds", LASSO, "recovery"), _get(df, "holds", LASSO, "shrinkage")
    holds = bool(rec >= majority)
    return Verdict(name, holds, {"recovery": rec, "shrinkage": shr},
                   f"Where the condition holds the lasso selected exactly S in {_pct(rec)} of the trials at its best λ1, "
                   f"where it shrank the true codes by {shr:.3f}" + ("." if holds else ": not in most trials."))


def _adaptive_lasso_shrinks_as_much(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["design"] == "holds") & (out["penalty"] == ADA), "shrinkage"] = _get(df, "holds", LASSO, "shrinkage")
    return out


@register("adaptive_lasso_recovers_and_shrinks_less",
          "the adaptive lasso selects exactly the true support in most trials of both designs, and where the "
          "condition holds it shrinks the true codes less than the lasso",
          source="book", counterexample=_adaptive_lasso_shrinks_as_much, example=_recovery_example,
          needs=("design", "penalty", "recovery", "shrinkage"))
def adaptive_lasso_recovers_and_shrinks_less(df: pd.DataFrame, *, majority: float = 0.5) -> Verdict:
    name = "adaptive_lasso_recovers_and_shrinks_less"
    if not _designs_present(df, (ADA, LASSO)):
        return Verdict(name, None, {}, "Need the lasso and the adaptive lasso on both designs.")
    rec = {d: _get(df, d, ADA, "recovery") for d in ("holds", "fails")}
    shr, shr_lasso = _get(df, "holds", ADA, "shrinkage"), _get(df, "holds", LASSO, "shrinkage")
    holds = bool(min(rec.values()) >= majority and shr < shr_lasso)
    return Verdict(name, holds, {"recovery_holds": rec["holds"], "recovery_fails": rec["fails"], "shrinkage": shr,
                                 "shrinkage_lasso": shr_lasso},
                   f"The adaptive lasso selected exactly S in {_pct(rec['holds'])} and {_pct(rec['fails'])} of the trials "
                   f"and, where the condition holds, shrank the true codes by {shr:.3f} against the lasso's "
                   f"{shr_lasso:.3f}" + ("." if holds else ": not both."))


def _elastic_net_fixes_it(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["design"] == "fails") & (out["penalty"] == "elastic_net"), "recovery"] = _get(df, "fails", AEN,
                                                                                                 "recovery")
    return out


@register("weights_not_l2_fix_support",
          "where the irrepresentable condition fails, the elastic net alone does not select the true support in most "
          "trials while the adaptive elastic net does: the weights, not λ2, fix the support",
          source="book", counterexample=_elastic_net_fixes_it, example=_recovery_example,
          needs=("design", "penalty", "recovery"))
def weights_not_l2_fix_support(df: pd.DataFrame, *, majority: float = 0.5) -> Verdict:
    """The ablation of the two ingredients on the failing design: the elastic net has λ2 without the weights, the
    adaptive elastic net both."""
    name = "weights_not_l2_fix_support"
    if not _designs_present(df, ("elastic_net", AEN)):
        return Verdict(name, None, {}, "Need the elastic net and the adaptive elastic net on both designs.")
    en, aen = _get(df, "fails", "elastic_net", "recovery"), _get(df, "fails", AEN, "recovery")
    holds = bool(en < majority <= aen)
    return Verdict(name, holds, {"elastic_net": en, "adaptive_elastic_net": aen},
                   f"Where the condition fails the elastic net selected exactly S in {_pct(en)} of the trials and the "
                   f"adaptive elastic net in {_pct(aen)}: " +
                   ("the weights, not λ2, fix the support." if holds else
                    "this does not single out the weights as what fixes the support."))


# --- the weights of one known code ----------------------------------------------------------------------------------

def _weights_example() -> pd.DataFrame:
    w = [1.0, 1.6, 2.9, 3.8] + [4.4, 9.0, 50.0] + [1000.0] * 5
    return pd.DataFrame({"weight": w, "on_support": [True] * 4 + [False] * 8})


def _one_light_intruder(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    j = out.index[~out["on_support"]][0]
    out.loc[j, "weight"] = float(out.loc[out["on_support"], "weight"].min())  # an other atom as light as a true one
    return out


@register("weights_rank_true_atoms_first",
          "on the known code of the failing design, every true atom gets a smaller adaptive weight than every other "
          "atom",
          source="book", counterexample=_one_light_intruder, example=_weights_example, needs=("weight", "on_support"))
def weights_rank_true_atoms_first(df: pd.DataFrame, *, w_max: float | None = None) -> Verdict:
    """Holds when the largest true-atom weight is below the smallest other-atom weight. The numbers also say how
    many other atoms sit at the cap ``w_max`` (default: the largest weight), i.e. how many the pilot left at zero."""
    name = "weights_rank_true_atoms_first"
    on, off = df.loc[df["on_support"], "weight"], df.loc[~df["on_support"], "weight"]
    if on.empty or off.empty:
        return Verdict(name, None, {}, "Need weights of true atoms and of other atoms.")
    cap = float(df["weight"].max() if w_max is None else w_max)
    at_cap = int((off >= cap * (1 - 1e-9)).sum())
    true_max, other_min = float(on.max()), float(off.min())
    holds = bool(true_max < other_min)
    numbers = {"true_min": float(on.min()), "true_max": true_max, "other_min": other_min,
               "other_median": float(off.median()), "others": len(off), "others_at_w_max": at_cap,
               "ratio": other_min / true_max, "w_max": cap}
    sentence = (f"The true atoms' weights ran from {on.min():.2f} to {true_max:.2f}, the other atoms' from "
                f"{other_min:.2f} (median {off.median():.1f}); {at_cap} of the {len(off)} other atoms sat at "
                f"w_max = {cap:g}, where the pilot left them at or near zero. ")
    sentence += (f"Every other atom weighed more than every true atom, by a factor of at least {other_min / true_max:.2f}."
                 if holds else "Some other atom weighed no more than a true atom.")
    return Verdict(name, holds, numbers, sentence)


def _irc_example_weighted() -> pd.DataFrame:
    return pd.DataFrame({"weighting": ["none", "adaptive"], "irc_one_sided": [1.07, 0.4]})


def _weights_do_not_help(df: pd.DataFrame) -> pd.DataFrame:
    none = float(df.loc[df["weighting"] == "none", "irc_one_sided"].iloc[0])
    return df.assign(irc_one_sided=none)


@register("weights_repair_irc",
          "on the failing design, the one-sided irrepresentable value exceeds 1 without weights and is below 1 with "
          "the adaptive weights of the known code",
          source="book", counterexample=_weights_do_not_help, example=_irc_example_weighted,
          needs=("weighting", "irc_one_sided"))
def weights_repair_irc(df: pd.DataFrame) -> Verdict:
    """The weighted condition max_j (G_{SᶜS} G_SS⁻¹ w_S)_j / w_j (:func:`aen_lib.theory.geometry.nonneg_irrepresentable`)."""
    name = "weights_repair_irc"
    by = df.set_index("weighting")["irc_one_sided"]
    if not {"none", "adaptive"} <= set(by.index):
        return Verdict(name, None, {}, "Need the irrepresentable value without and with the weights.")
    plain, weighted = float(by["none"]), float(by["adaptive"])
    holds = bool(plain > 1 and weighted < 1)
    return Verdict(name, holds, {"plain": plain, "weighted": weighted},
                   f"The one-sided irrepresentable value of the failing design's support is {plain:.3f} without weights "
                   f"and {weighted:.3f} with the adaptive weights: "
                   + ("the weights turn a failing condition into one that holds." if holds else
                      "the weights do not turn a failing condition into one that holds."))


# --- the closed-form bias -----------------------------------------------------------------------------------------

def _bias_example() -> pd.DataFrame:
    return pd.DataFrame([dict(penalty=p, right_support=True, max_diff=1e-9) for p in (LASSO, "elastic_net", ADA, AEN)])


def _formula_off(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(max_diff=0.1)


@register("oracle_bias_matches_solver",
          "where a penalty selects the true support of a noiseless code, the solver's bias of the true codes equals "
          "the closed form -(G_SS + λ2 I)⁻¹(λ1 w_S + λ2 h_S), for at least three of the four penalties",
          source="book", counterexample=_formula_off, example=_bias_example,
          needs=("penalty", "right_support", "max_diff"))
def oracle_bias_matches_solver(df: pd.DataFrame, *, tol: float = 1e-6, min_penalties: int = 3) -> Verdict:
    name = "oracle_bias_matches_solver"
    on = df[df["right_support"].astype(bool)]
    if len(on) < min_penalties:
        return Verdict(name, None, {"on_support": len(on)},
                       f"Only {len(on)} penalties selected the true support of the known code; the check needs "
                       f"{min_penalties}.")
    worst = float(on["max_diff"].max())
    holds = bool(worst < tol and math.isfinite(worst))
    return Verdict(name, holds, {"on_support": len(on), "max_diff": worst},
                   f"{len(on)} penalties selected the true support; their bias differs from the closed form by at most "
                   f"{worst:.1e}" + ("." if holds else f", more than {tol:g}."))


# --- the Hoffman diagnostics --------------------------------------------------------------------------------------

def _hoffman_example() -> pd.DataFrame:
    return pd.DataFrame([dict(rho=r, penalty=p, curvature=c) for r, c in ((0.0, 1.4), (0.9, 14.9))
                         for p in (LASSO, "elastic_net", ADA, AEN)])


def _flat_curvature(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(curvature=float(df["curvature"].min()))


@register("lasso_curvature_grows_with_rho",
          "the lasso's curvature term 1/λ_min(G_AA) of a random support is larger at the largest ρ than at the smallest",
          source="book", counterexample=_flat_curvature, example=_hoffman_example, needs=("rho", "penalty", "curvature"))
def lasso_curvature_grows_with_rho(df: pd.DataFrame) -> Verdict:
    name = "lasso_curvature_grows_with_rho"
    lasso = df[df["penalty"] == LASSO].set_index("rho")["curvature"].sort_index()
    if len(lasso) < 2:
        return Verdict(name, None, {}, "Need the lasso's curvature term at two ρ.")
    lo, hi = float(lasso.iloc[0]), float(lasso.iloc[-1])
    holds = bool(hi > lo)
    return Verdict(name, holds, {"curvature_lo": lo, "curvature_hi": hi},
                   f"The lasso's curvature term was {lo:.2f} at ρ = {lasso.index[0]:g} and {hi:.2f} at ρ = "
                   f"{lasso.index[-1]:g}" + ("." if holds else ": it did not grow."))
