"""Claims of chapters 2 and 3 (the geometry of the lasso; the elastic net makes the map stable): each a statement about
the exact coding maps the chapters solve, judged on the tables they compute. Several compare a solver measurement with a
closed form or with scikit-learn: those fail when the code or the theory is wrong, which is what they are for.

Chapter 2 (small planar and spiked dictionaries):

* ``regions_match_solver`` — one row: ``region_agreement`` (share of grid points where the enumerated active set is
  FISTA's support);
* ``pair_region_rule`` — one row per pair of planar atoms: ``predicted`` (every other atom has a + b ≤ 1 in the pair's
  basis), ``observed`` (the grid shows the pair's region);
* ``path_matches_sklearn``, ``end_support_follows_irc`` — one row: ``path_max_diff`` (ours against
  ``lasso_path(positive=True)``), ``path_in_lars`` (every atom our path enters is one LARS enters), ``end_is_support``
  (the support at the smallest λ1 is the true one) and ``irc_one_sided`` of that support;
* ``two_atom_lipschitz_matches_closed_form``, ``lasso_blows_up_elastic_net_capped`` — one row per angle and λ2:
  ``theta_deg, l2, measured, theory, bound, both_active``;
* ``identical_atoms_split_lasso_only`` — one row: ``lasso_split_gap, lasso_obj_gap, en_split_gap``.

Chapter 3 (spiked dictionaries of growing coherence):

* ``en_lipschitz_within_bound``, ``en_bound_is_approached``, ``worst_direction_matches_jacobian``,
  ``small_l2_can_be_steeper_than_lasso`` — one row per ρ and λ2 (λ2 = 0 is the lasso): ``rho, l2, random, worst,
  bound, crude, worst_vs_jac``;
* ``lasso_sensitivity_grows_with_rho`` — one row per ρ: ``rho, median`` (the lasso's median ‖J_A‖ over many inputs)
  and ``lambda_min_mean`` (mean smallest eigenvalue of a random active Gram block);
* ``grouping_bound_holds``, ``elastic_net_splits_groups_evenly`` — one row per within-group cosine and penalty:
  ``c, penalty, gap_mean, share_mean, bound_holds, group_size``.
"""

from __future__ import annotations

import math

import pandas as pd

from .core import Verdict, register


def _one(df: pd.DataFrame) -> pd.Series | None:
    """The single row of a one-row frame, or None."""
    return df.iloc[0] if len(df) == 1 else None


# ==================================================================================================================
# chapter 2
# ==================================================================================================================

def _region_example() -> pd.DataFrame:
    return pd.DataFrame([{"region_agreement": 1.0, "grid_points": 201 * 201}])


@register("regions_match_solver",
          "colouring the plane by the enumerated active set whose KKT conditions hold reproduces the FISTA solver's "
          "support (up to grid points on boundaries)",
          source="book", counterexample=lambda df: df.assign(region_agreement=0.9), example=_region_example,
          needs=("region_agreement",))
def regions_match_solver(df: pd.DataFrame, *, min_agreement: float = 0.999) -> Verdict:
    name = "regions_match_solver"
    row = _one(df)
    if row is None:
        return Verdict(name, None, {}, "Need one row of region agreement.")
    a = float(row["region_agreement"])
    holds = bool(a >= min_agreement)
    return Verdict(name, holds, {"agreement": a},
                   f"The enumerated regions agree with FISTA's support on {100 * a:.3f}% of the grid"
                   + ("." if holds else f", below {100 * min_agreement:g}%."))


def _pairs_example() -> pd.DataFrame:
    return pd.DataFrame([dict(pair="{1,2}", predicted=True, observed=True),
                         dict(pair="{1,3}", predicted=False, observed=False),
                         dict(pair="{2,3}", predicted=True, observed=True)])


@register("pair_region_rule",
          "a pair of planar atoms owns a region exactly when every other atom is a·d_i + b·d_j with a + b ≤ 1",
          source="book", counterexample=lambda df: df.assign(observed=~df["observed"].astype(bool)),
          example=_pairs_example, needs=("pair", "predicted", "observed"))
def pair_region_rule(df: pd.DataFrame) -> Verdict:
    name = "pair_region_rule"
    if df.empty:
        return Verdict(name, None, {}, "No pair of independent atoms.")
    bad = df[df["predicted"].astype(bool) != df["observed"].astype(bool)]
    holds = bad.empty
    missing = df.loc[~df["observed"].astype(bool), "pair"].tolist()
    return Verdict(name, holds, {"pairs": len(df), "without_region": missing, "disagree": bad["pair"].tolist()},
                   f"{len(df)} pairs: the a + b ≤ 1 rule predicts which own a region "
                   + ("for every one of them." if holds else f"wrongly for {', '.join(bad['pair'])}."))


def _path_example() -> pd.DataFrame:
    return pd.DataFrame([dict(path_max_diff=2e-11, path_in_lars=True, end_is_support=False, irc_one_sided=1.002)])


@register("path_matches_sklearn",
          "our batched FISTA solution path equals scikit-learn's lasso_path(positive=True) and enters only atoms that "
          "the exact LARS path enters",
          source="book", counterexample=lambda df: df.assign(path_max_diff=1e-3), example=_path_example,
          needs=("path_max_diff", "path_in_lars"))
def path_matches_sklearn(df: pd.DataFrame, *, tol: float = 1e-6) -> Verdict:
    name = "path_matches_sklearn"
    row = _one(df)
    if row is None:
        return Verdict(name, None, {}, "Need one row of path measurements.")
    diff, in_lars = float(row["path_max_diff"]), bool(row["path_in_lars"])
    holds = bool(diff < tol and in_lars)
    return Verdict(name, holds, {"max_diff": diff, "in_lars": in_lars},
                   f"Our path differs from scikit-learn's by at most {diff:.1e}"
                   + (" and enters only atoms LARS enters." if in_lars else ", and enters an atom LARS never enters."))


@register("end_support_follows_irc",
          "at the smallest λ1 the lasso path keeps exactly the true support if and only if the support's one-sided "
          "irrepresentable value is at most 1",
          source="book", counterexample=lambda df: df.assign(end_is_support=~df["end_is_support"].astype(bool)),
          example=_path_example, needs=("end_is_support", "irc_one_sided"))
def end_support_follows_irc(df: pd.DataFrame) -> Verdict:
    name = "end_support_follows_irc"
    row = _one(df)
    if row is None:
        return Verdict(name, None, {}, "Need one row of path measurements.")
    end, irc = bool(row["end_is_support"]), float(row["irc_one_sided"])
    holds = end == (irc <= 1)
    return Verdict(name, holds, {"end_is_support": end, "irc_one_sided": irc},
                   f"The support's one-sided irrepresentable value is {irc:.4f} and the path "
                   + ("ends on exactly the true support" if end else "ends with an atom outside the true support")
                   + (", as the condition predicts." if holds else ", against the condition."))


def _angles_example() -> pd.DataFrame:
    rows = []
    for th, lasso, en in ((1.0, 81.0, 1.2), (10.0, 8.1, 1.5), (90.0, 1.0, 0.9)):
        rows.append(dict(theta_deg=th, l2=0.0, measured=lasso, theory=lasso * 1.001, bound=math.inf, both_active=True))
        rows.append(dict(theta_deg=th, l2=0.1, measured=en, theory=en * 1.001, bound=1.5811, both_active=True))
    return pd.DataFrame(rows)


def _measured_off(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(measured=df["theory"] * 0.9)


@register("two_atom_lipschitz_matches_closed_form",
          "for two atoms at angle θ, with an input on their bisector (both active), the measured local Lipschitz "
          "constant equals the closed form ‖J_A‖ within 2% and never exceeds it",
          source="book", counterexample=_measured_off, example=_angles_example,
          needs=("theta_deg", "l2", "measured", "theory", "both_active"))
def two_atom_lipschitz_matches_closed_form(df: pd.DataFrame, *, rel_tol: float = 0.02) -> Verdict:
    name = "two_atom_lipschitz_matches_closed_form"
    if df.empty:
        return Verdict(name, None, {}, "No angle measured.")
    if not df["both_active"].astype(bool).all():
        return Verdict(name, None, {}, "The bisector input does not activate both atoms at every angle, so the "
                                       "two-atom closed form does not apply.")
    rel = ((df["measured"] - df["theory"]).abs() / df["theory"]).max()
    above = bool((df["measured"] > df["theory"] * (1 + 1e-6)).any())
    holds = bool(rel < rel_tol and not above)
    return Verdict(name, holds, {"rel_err": float(rel), "above": above},
                   f"Measured and closed-form Lipschitz constants differ by at most {100 * rel:.2f}%"
                   + ("." if holds else f" (allowed {100 * rel_tol:g}%, never above the closed form)."))


def _lasso_flat(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out["l2"] == 0, "measured"] = 1.0
    return out


@register("lasso_blows_up_elastic_net_capped",
          "as two atoms become collinear the lasso map's Lipschitz constant grows at every step and ends far above "
          "the elastic-net bound 1/(2√λ2), which the elastic net never exceeds",
          source="book", counterexample=_lasso_flat, example=_angles_example,
          needs=("theta_deg", "l2", "measured", "bound"))
def lasso_blows_up_elastic_net_capped(df: pd.DataFrame, *, factor: float = 10.0) -> Verdict:
    name = "lasso_blows_up_elastic_net_capped"
    lasso = df[df["l2"] == 0].sort_values("theta_deg")
    en = df[df["l2"] > 0]
    if len(lasso) < 2 or en.empty:
        return Verdict(name, None, {}, "Need the lasso at two angles and the elastic net.")
    grows = bool((lasso["measured"].diff().dropna() < 0).all())  # larger at every smaller angle
    bound = float(en["bound"].iloc[0])
    en_ok = bool((en["measured"] <= en["bound"] * (1 + 1e-6)).all())
    small = float(lasso["measured"].iloc[0])
    far = bool(small > factor * bound)
    holds = grows and en_ok and far
    return Verdict(name, holds, {"lasso_small_angle": small, "lasso_90": float(lasso["measured"].iloc[-1]),
                                 "en_max": float(en["measured"].max()), "en_bound": bound},
                   f"The lasso's constant went from {lasso['measured'].iloc[-1]:.2f} at {lasso['theta_deg'].iloc[-1]:g}° "
                   f"to {small:.1f} at {lasso['theta_deg'].iloc[0]:g}°"
                   + ("" if grows else " (not at every step)")
                   + f"; the elastic net's largest was {en['measured'].max():.3f} against its bound {bound:.3f}"
                   + ("." if holds else (": above the bound." if not en_ok else
                                        f": the lasso does not end {factor:g} times above the bound.")))


def _identical_example() -> pd.DataFrame:
    return pd.DataFrame([dict(lasso_split_gap=1.41, lasso_obj_gap=0.0, en_split_gap=1e-9)])


@register("identical_atoms_split_lasso_only",
          "with two identical atoms the lasso returns different minimisers of equal objective from two starts, the "
          "elastic net one",
          source="book", counterexample=lambda df: df.assign(lasso_split_gap=0.0), example=_identical_example,
          needs=("lasso_split_gap", "lasso_obj_gap", "en_split_gap"))
def identical_atoms_split_lasso_only(df: pd.DataFrame) -> Verdict:
    name = "identical_atoms_split_lasso_only"
    row = _one(df)
    if row is None:
        return Verdict(name, None, {}, "Need one row of the identical-atom experiment.")
    lg, og, eg = float(row["lasso_split_gap"]), float(row["lasso_obj_gap"]), float(row["en_split_gap"])
    holds = bool(lg > 0.1 and og < 1e-9 and eg < 1e-6)
    return Verdict(name, holds, {"lasso_split_gap": lg, "lasso_obj_gap": og, "en_split_gap": eg},
                   f"From two starts the lasso's codes were {lg:.2f} apart with objectives {og:.1e} apart; the elastic "
                   f"net's {eg:.1e} apart" + ("." if holds else ": not two lasso minimisers and one elastic-net one."))


# ==================================================================================================================
# chapter 3
# ==================================================================================================================

def _lipschitz_example() -> pd.DataFrame:
    rows = []
    for rho, lasso in ((0.0, 1.8), (0.9, 4.8)):
        rows.append(dict(rho=rho, l2=0.0, random=lasso / 2, worst=lasso, bound=math.inf, crude=math.inf,
                         worst_vs_jac=1e-6))
        rows.append(dict(rho=rho, l2=0.01, random=1.0, worst=1.7 if rho == 0 else 4.96, bound=5.0, crude=220.0,
                         worst_vs_jac=1e-6))
        rows.append(dict(rho=rho, l2=0.3, random=0.7, worst=0.91, bound=0.913, crude=7.4, worst_vs_jac=1e-6))
    return pd.DataFrame(rows)


def _above_bound(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    j = out.index[out["l2"] > 0][0]
    out.loc[j, "worst"] = 2 * out.loc[j, "bound"]
    return out


_LIP_NEEDS = ("rho", "l2", "random", "worst", "bound", "crude", "worst_vs_jac")


@register("en_lipschitz_within_bound",
          "no measured elastic-net Lipschitz ratio, along random or worst-case directions, exceeds 1/(2√λ2), nor the "
          "cruder ‖D‖₂/λ2, at any coherence",
          source="book", counterexample=_above_bound, example=_lipschitz_example, needs=_LIP_NEEDS)
def en_lipschitz_within_bound(df: pd.DataFrame) -> Verdict:
    name = "en_lipschitz_within_bound"
    en = df[df["l2"] > 0]
    if en.empty:
        return Verdict(name, None, {}, "No elastic-net measurement.")
    top = max(float((en["random"] / en["bound"]).max()), float((en["worst"] / en["bound"]).max()))
    crude_ok = bool((en["worst"] <= en["crude"]).all())
    holds = bool(top <= 1 + 1e-6 and crude_ok)
    return Verdict(name, holds, {"measurements": len(en), "max_ratio_to_bound": top},
                   f"Over {len(en)} combinations of ρ and λ2 the largest measured ratio was {top:.3f} of 1/(2√λ2)"
                   + ("." if holds else (": above the bound." if top > 1 + 1e-6 else ", but above ‖D‖₂/λ2.")))


def _never_close(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    en = out["l2"] > 0
    out.loc[en, "worst"] = 0.1 * out.loc[en, "bound"]
    return out


@register("en_bound_is_approached",
          "along the worst direction the elastic-net measurements reach more than half of 1/(2√λ2) somewhere, so the "
          "bound is not loose on these dictionaries",
          source="book", counterexample=_never_close, example=_lipschitz_example, needs=_LIP_NEEDS)
def en_bound_is_approached(df: pd.DataFrame, *, share: float = 0.5) -> Verdict:
    name = "en_bound_is_approached"
    en = df[df["l2"] > 0]
    if en.empty:
        return Verdict(name, None, {}, "No elastic-net measurement.")
    t = float((en["worst"] / en["bound"]).max())
    holds = bool(t > share)
    return Verdict(name, holds, {"tightness": t},
                   f"Along the worst direction the measurement reached {t:.2f} of the bound"
                   + ("." if holds else f", never more than {share:g}: is the λ2 grid too far off?"))


@register("worst_direction_matches_jacobian",
          "the solver's stretch along the worst direction of each input's region equals the closed-form ‖J_A‖ of "
          "that region",
          source="book", counterexample=lambda df: df.assign(worst_vs_jac=0.1), example=_lipschitz_example,
          needs=_LIP_NEEDS)
def worst_direction_matches_jacobian(df: pd.DataFrame, *, tol: float = 1e-3) -> Verdict:
    name = "worst_direction_matches_jacobian"
    if df.empty:
        return Verdict(name, None, {}, "No measurement.")
    err = float(df["worst_vs_jac"].max())
    holds = bool(err < tol)
    return Verdict(name, holds, {"max_rel_err": err},
                   f"Worst-direction measurements and ‖J_A‖ differ by at most {err:.1e} (relative)"
                   + ("." if holds else f", more than {tol:g}."))


def _en_always_flatter(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    en = out["l2"] > 0
    out.loc[en, "worst"] = 0.0
    return out


@register("small_l2_can_be_steeper_than_lasso",
          "a small λ2 does not make the map less sensitive at a given input: some elastic-net measurement is above "
          "the lasso's on the same inputs",
          source="book", counterexample=_en_always_flatter, example=_lipschitz_example, needs=_LIP_NEEDS)
def small_l2_can_be_steeper_than_lasso(df: pd.DataFrame) -> Verdict:
    name = "small_l2_can_be_steeper_than_lasso"
    lasso = df[df["l2"] == 0].set_index("rho")["worst"]
    en = df[df["l2"] > 0]
    en = en[en["rho"].isin(lasso.index)]
    if en.empty:
        return Verdict(name, None, {}, "Need the lasso and the elastic net on the same inputs.")
    above = en[en["worst"] > en["rho"].map(lasso)]
    holds = not above.empty
    l2s = sorted(above["l2"].unique().tolist())
    return Verdict(name, holds, {"above": len(above), "measurements": len(en), "l2_above": l2s},
                   f"In {len(above)} of the {len(en)} elastic-net measurements the worst-case ratio was above the "
                   "lasso's on the same inputs" + (f" (λ2 = {', '.join(f'{v:g}' for v in l2s)})." if holds else "."))


def _sensitivity_example() -> pd.DataFrame:
    return pd.DataFrame([dict(rho=r, median=m, lambda_min_mean=l) for r, m, l in
                         ((0.0, 1.27, 0.62), (0.5, 2.0, 0.3), (0.9, 4.43, 0.07))])


@register("lasso_sensitivity_grows_with_rho",
          "the median of the lasso map's local Lipschitz constant rises, and the mean smallest eigenvalue of a random "
          "active Gram block falls, at every step of coherence",
          source="book", counterexample=lambda df: df.assign(median=df["median"].iloc[::-1].to_numpy()),
          example=_sensitivity_example, needs=("rho", "median", "lambda_min_mean"))
def lasso_sensitivity_grows_with_rho(df: pd.DataFrame) -> Verdict:
    name = "lasso_sensitivity_grows_with_rho"
    d = df.sort_values("rho")
    if len(d) < 2:
        return Verdict(name, None, {}, "Need at least two coherence levels.")
    up = bool((d["median"].diff().dropna() > 0).all())
    down = bool((d["lambda_min_mean"].diff().dropna() < 0).all())
    holds = up and down
    return Verdict(name, holds, {"median_lo": float(d["median"].iloc[0]), "median_hi": float(d["median"].iloc[-1]),
                                 "lmin_lo": float(d["lambda_min_mean"].iloc[0]),
                                 "lmin_hi": float(d["lambda_min_mean"].iloc[-1]), "levels": len(d)},
                   f"Over {len(d)} coherence levels the lasso's median local Lipschitz constant went from "
                   f"{d['median'].iloc[0]:.2f} to {d['median'].iloc[-1]:.2f}"
                   + ("" if up else " (not rising at every step)")
                   + f" and the mean smallest Gram eigenvalue from {d['lambda_min_mean'].iloc[0]:.3f} to "
                   f"{d['lambda_min_mean'].iloc[-1]:.3f}" + ("" if down else " (not falling at every step)") + ".")


def _group_example() -> pd.DataFrame:
    rows = []
    for c, lg, ls, eg, es in ((0.9, 0.3, 0.29, 0.055, 0.26), (0.999, 1.53, 0.54, 0.006, 0.251)):
        rows.append(dict(c=c, penalty="lasso", gap_mean=lg, share_mean=ls, bound_holds=None, group_size=4))
        rows.append(dict(c=c, penalty="elastic_net", gap_mean=eg, share_mean=es, bound_holds=True, group_size=4))
    return pd.DataFrame(rows)


@register("grouping_bound_holds",
          "within a group of correlated atoms, the elastic net's code differences never exceed the grouping bound "
          "‖d_i − d_j‖‖r‖/λ2 (Zou & Hastie's Theorem 1 in our scaling)",
          source="book", counterexample=lambda df: df.assign(bound_holds=df["bound_holds"].where(
              df["penalty"] != "elastic_net", False)), example=_group_example,
          needs=("c", "penalty", "bound_holds"))
def grouping_bound_holds(df: pd.DataFrame) -> Verdict:
    name = "grouping_bound_holds"
    en = df[df["penalty"] == "elastic_net"]
    if en.empty:
        return Verdict(name, None, {}, "No elastic-net group measurement.")
    bad = en[~en["bound_holds"].astype(bool)]
    holds = bad.empty
    return Verdict(name, holds, {"cosines": len(en), "violated": bad["c"].tolist()},
                   f"At {len(en)} within-group cosines the grouping bound "
                   + ("held on every input." if holds else f"was violated at c = {', '.join(map(str, bad['c']))}."))


def _en_picks_one(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    en = out["penalty"] == "elastic_net"
    out.loc[en, "share_mean"] = 1.0
    out.loc[en, "gap_mean"] = out.loc[out["penalty"] == "lasso", "gap_mean"].to_numpy()
    return out


@register("elastic_net_splits_groups_evenly",
          "on a group of near-identical atoms the elastic net splits the weight evenly, while the lasso's codes within "
          "the group differ far more (at the largest within-group cosine)",
          source="book", counterexample=_en_picks_one, example=_group_example,
          needs=("c", "penalty", "gap_mean", "share_mean", "group_size"))
def elastic_net_splits_groups_evenly(df: pd.DataFrame, *, share_tol: float = 0.05, factor: float = 5.0) -> Verdict:
    name = "elastic_net_splits_groups_evenly"
    top = df[df["c"] == df["c"].max()].set_index("penalty")
    if not {"lasso", "elastic_net"} <= set(top.index):
        return Verdict(name, None, {}, "Need the lasso and the elastic net at the largest within-group cosine.")
    g = int(top["group_size"].iloc[0])
    en, la = top.loc["elastic_net"], top.loc["lasso"]
    even = abs(float(en["share_mean"]) - 1 / g) < share_tol
    apart = float(la["gap_mean"]) > factor * float(en["gap_mean"])
    holds = bool(even and apart)
    return Verdict(name, holds, {"en_share": float(en["share_mean"]), "en_gap": float(en["gap_mean"]),
                                 "lasso_share": float(la["share_mean"]), "lasso_gap": float(la["gap_mean"]),
                                 "group_size": g},
                   f"At within-group spike strength {df['c'].max():g}, the elastic net put {en['share_mean']:.3f} of the "
                   f"group's weight on its largest atom (even split: {1 / g:.3f}) with codes at most "
                   f"{en['gap_mean']:.3f} apart; the lasso {la['share_mean']:.2f} with codes {la['gap_mean']:.2f} apart"
                   + ("." if holds else ": not an even elastic-net split against a far more uneven lasso."))


# --- chapter 3 against trained SAEs: does the elastic net's slope cap bind an encoder? --------------------------------

def _trained_example() -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "seed": s, "l2": l2, "lipschitz_max": lip, "cap": cap}
                         for s in (1, 2) for m, l2, lip, cap in (("relu_l1", 0.0, 1.65, math.nan),
                                                                  ("elastic_net", 0.001, 1.31, 0.99))])


def _cap_flip(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    en = out["method"] == "elastic_net"
    binds = bool((out.loc[en, "lipschitz_max"] <= out.loc[en, "cap"]).all())
    out.loc[en, "lipschitz_max"] = out.loc[en, "cap"] * (2.0 if binds else 0.5)
    return out


@register("en_cap_binds_trained_encoder",
          "the elastic net's slope cap binds its trained encoder: the encoder is no steeper than the exact coding map "
          "it is trained towards can be",
          source="book", counterexample=_cap_flip, example=_trained_example,
          needs=("method", "seed", "l2", "lipschitz_max", "cap"))
def en_cap_binds_trained_encoder(df: pd.DataFrame) -> Verdict:
    """Holds when every elastic-net SAE's largest encoder Jacobian norm over fresh samples is at most the cap
    1/(2√λ2) of its objective (in the theory's units)."""
    name = "en_cap_binds_trained_encoder"
    en = df[df["method"] == "elastic_net"]
    if en.empty:
        return Verdict(name, None, {}, "No trained elastic-net SAE with a measured encoder is committed here.")
    holds = bool((en["lipschitz_max"] <= en["cap"]).all())
    return Verdict(name, holds, {"lipschitz_max": float(en["lipschitz_max"].max()), "cap": float(en["cap"].min())},
                   f"The trained elastic-net encoders (λ2 = {en['l2'].iloc[0]:g}, seeds "
                   f"{', '.join(str(int(s)) for s in sorted(en['seed']))}) reach a Jacobian norm of "
                   f"{en['lipschitz_max'].min():.2f}–{en['lipschitz_max'].max():.2f} on fresh samples, against a cap "
                   f"of {en['cap'].min():.2f} on the exact coding map.")


def _swap_lip(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for _, g in out.groupby("seed"):
        r, e = g.index[g["method"] == "relu_l1"], g.index[g["method"] == "elastic_net"]
        if len(r) and len(e):
            out.loc[r, "lipschitz_max"], out.loc[e, "lipschitz_max"] = (out.loc[e, "lipschitz_max"].to_numpy(),
                                                                        out.loc[r, "lipschitz_max"].to_numpy())
    return out


@register("en_encoder_flatter_than_lasso",
          "trained at the same λ1, the elastic net's encoder is flatter than the lasso's (ReLU + ℓ1) on every seed",
          source="book", counterexample=_swap_lip, example=_trained_example, needs=("method", "seed", "lipschitz_max"))
def en_encoder_flatter_than_lasso(df: pd.DataFrame) -> Verdict:
    """Holds when, on every seed with both, the elastic net's largest encoder Jacobian norm is below ReLU + ℓ1's."""
    name = "en_encoder_flatter_than_lasso"
    pairs = []
    for s, g in df.groupby("seed"):
        r, e = g[g["method"] == "relu_l1"], g[g["method"] == "elastic_net"]
        if len(r) and len(e):
            pairs.append((int(s), float(e["lipschitz_max"].iloc[0]), float(r["lipschitz_max"].iloc[0])))
    if not pairs:
        return Verdict(name, None, {}, "No seed has both a trained elastic-net and a ReLU + ℓ1 encoder measured.")
    holds = all(e < r for _, e, r in pairs)
    return Verdict(name, holds, {"seeds": [p[0] for p in pairs]},
                   "Largest encoder Jacobian norm, elastic net against ReLU + ℓ1: "
                   + "; ".join(f"seed {s}: {e:.2f} against {r:.2f}" for s, e, r in pairs) + ".")
