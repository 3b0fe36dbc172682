"""Claims beyond Figure 2 on the spiked-dictionary grids (chapter 6's paper-size section and its live run): who starves
less than whom where the grid has two methods at nearby L0, what AuxK does for TopK, whether TopK's dead latents are
out of reach, and whether the adaptive weights remove shrinkage.

A frame holds one row per trained SAE of one seed (the reference sets: :func:`aen_lib.results.reference.set_frames`), with
``rho, method, label, l0`` and the dead-% columns; judge one ρ at a time (the sentences name the ρ of every pair).

* nearby L0 (each SAE of one method paired with the SAE of the other nearest in L0, kept when the two L0 are within a
  factor 1.5: :func:`aen_lib.results.records.nearest_in_l0`; "fewer" means by more than :data:`~aen_lib.results.claims.core.DEAD_MARGIN`
  points in every pair): ``aen_fewer_dead_than_topk_nearby_l0``, ``vanilla_fewer_dead_than_topk_nearby_l0`` (the
  same test for the simplest ℓ1 SAE: if it beats TopK too, "AEN beats TopK" is evidence against TopK, not for AEN),
  ``aen_fewer_dead_than_vanilla_nearby_l0``, ``aen_fewer_dead_than_auxk_nearby_l0``;
* ``auxk_cuts_topk_death`` — TopK + AuxK has fewer dead latents than TopK at every k both trained;
* ``topk_dead_out_of_reach`` — the latents TopK and TopK + AuxK leave dead on fresh samples are out of reach
  (pre-activation ≤ 0 on every sample), where AuxK's gradient cannot act;
* ``adaptive_weights_cut_shrinkage`` — the adaptive SAE (AEN, adaptive lasso) shrinks its reconstructions less than
  its twin without adaptive weights (elastic net, vanilla ℓ1) at the same λ1 and λ2.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from .core import DEAD_COLUMN, DEAD_MARGIN, Verdict, register

NEARBY_RATIO = 1.5
"""Largest factor between the L0 of two SAEs compared "at nearby L0"."""

_NAMES = {"aen": "AEN", "topk": "TopK", "relu_l1": "vanilla ℓ1", "topk_auxk": "TopK + AuxK",
          "elastic_net": "elastic net", "adaptive_lasso": "adaptive lasso"}


def _nearby_example() -> pd.DataFrame:
    """ρ = 0.9, one seed, shaped like the paper-size set (numbers made up): every ℓ1-family SAE near a TopK one."""
    rows = [("aen", "aen λ1=0.001", 34.0, 44.0), ("aen", "aen λ1=0.005", 4.0, 87.0),
            ("relu_l1", "relu_l1 λ1=0.001", 56.0, 44.0), ("relu_l1", "relu_l1 λ1=0.01", 30.0, 60.0),
            ("topk", "topk k=32", 30.0, 96.0), ("topk", "topk k=64", 60.0, 94.0), ("topk", "topk k=8", 7.0, 99.0),
            ("topk_auxk", "topk_auxk k=32", 30.0, 96.0), ("topk_auxk", "topk_auxk k=8", 8.0, 99.0)]
    return pd.DataFrame([dict(rho=0.9, seed=0, method=m, label=lab, variant=lab, l0=l0, dead_pct=d, dead_pct_window=d)
                         for m, lab, l0, d in rows])


def _starve(method: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def broken(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for col in ("dead_pct", "dead_pct_window"):
            if col in out:
                out.loc[out["method"] == method, col] = 100.0  # as starved as an SAE can be
        return out

    return broken


def _nearby(name: str, method: str, other: str) -> Callable[..., Verdict]:
    def judge(df: pd.DataFrame, *, dead: str = DEAD_COLUMN, dead_name: str | None = None,
              margin: float = DEAD_MARGIN, max_ratio: float = NEARBY_RATIO) -> Verdict:
        from ..records import nearest_in_l0

        if dead not in df.columns:
            raise ValueError(f"claim {name!r}: dead={dead!r} is not a column of the frame")
        frame = df.dropna(subset=[dead])  # an SAE without a complete dead window says nothing
        p = nearest_in_l0(frame, method, other, by=["rho"], max_ratio=max_ratio)
        a, b = _NAMES[method], _NAMES[other]
        if p.empty:
            return Verdict(name, None, {"pairs": []},
                           f"No {a} SAE has a {b} SAE within a factor {max_ratio:g} of its L0 here, so the two are "
                           "not compared.")
        gaps = (p[f"{dead}_{other}"] - p[f"{dead}_{method}"]).astype(float)
        where = (lambda r: f"ρ {r['rho']:g}: ") if p["rho"].nunique() > 1 else (lambda r: "")
        pairs = [f"{where(r)}{r[f'label_{method}']} (L0 {r[f'l0_{method}']:.1f}) {r[f'{dead}_{method}']:.1f}% "
                 f"against {r[f'label_{other}']} (L0 {r[f'l0_{other}']:.1f}) {r[f'{dead}_{other}']:.1f}%"
                 for _, r in p.iterrows()]
        holds = bool((gaps > margin).all())
        return Verdict(name, holds, {"pairs": pairs, "gap_min": float(gaps.min()), "gap_max": float(gaps.max()),
                                     "dead": dead},
                       f"{a} against {b} at nearby L0 (within a factor {max_ratio:g}), dead % ({dead_name or dead}): "
                       + "; ".join(pairs) + f" — {a} has fewer by more than {margin:g} point"
                       + f"{'' if margin == 1 else 's'} in {int((gaps > margin).sum())} of {len(gaps)} pair"
                       + f"{'' if len(gaps) == 1 else 's'}.")

    judge.__name__ = name
    return judge


for _name, _method, _other, _source in (
        ("aen_fewer_dead_than_topk_nearby_l0", "aen", "topk", "paper"),
        ("vanilla_fewer_dead_than_topk_nearby_l0", "relu_l1", "topk", "book"),
        ("aen_fewer_dead_than_vanilla_nearby_l0", "aen", "relu_l1", "paper"),
        ("aen_fewer_dead_than_auxk_nearby_l0", "aen", "topk_auxk", "book")):
    register(_name, f"{_NAMES[_method]} has fewer dead latents than {_NAMES[_other]} where the grid has the two at "
                    f"nearby L0 (within a factor {NEARBY_RATIO:g})",
             source=_source, counterexample=_starve(_method), example=_nearby_example,
             needs=("rho", "method", "label", "l0"))(_nearby(_name, _method, _other))


def against_topk_note(aen: Verdict, vanilla: Verdict) -> str:
    """What AEN's comparison with TopK at nearby L0 says about AEN, given the same comparison for vanilla ℓ1 (the
    verdicts of ``aen_fewer_dead_than_topk_nearby_l0`` and ``vanilla_fewer_dead_than_topk_nearby_l0`` on one frame)."""
    if (aen.claim, vanilla.claim) != ("aen_fewer_dead_than_topk_nearby_l0", "vanilla_fewer_dead_than_topk_nearby_l0"):
        raise ValueError("against_topk_note takes the verdicts of aen_fewer_dead_than_topk_nearby_l0 and "
                         f"vanilla_fewer_dead_than_topk_nearby_l0, got {aen.claim!r} and {vanilla.claim!r}")
    if not aen.holds:
        return ("AEN does not have fewer dead latents than TopK in every pair at nearby L0 here, so there is no "
                "advantage to attribute" + (", while vanilla ℓ1 does." if vanilla.holds else "."))
    if vanilla.holds:
        return ("Vanilla ℓ1 has fewer dead latents than TopK at nearby L0 as well, so AEN's advantage over TopK is "
                "evidence against TopK, not for the adaptive elastic net.")
    if vanilla.holds is None:
        return ("No vanilla ℓ1 SAE lies near a TopK one in L0 here, so whether the advantage belongs to AEN or to any "
                "ℓ1 SAE is not tested.")
    return "Vanilla ℓ1 does not beat TopK at nearby L0 where AEN does, so these pairs single out AEN's objective."


# --- TopK with and without AuxK ---------------------------------------------------------------------------------------

def _auxk_example() -> pd.DataFrame:
    """ρ = 0, TopK and TopK + AuxK at three k, with the fresh-sample measurement (numbers made up)."""
    rows = []
    for k, (d_topk, d_auxk, neg_topk) in {8: (16.0, 0.0, 0.0), 16: (6.6, 0.1, 0.0), 32: (4.0, 1.5, 0.0)}.items():
        for method, d in (("topk", d_topk), ("topk_auxk", d_auxk)):
            rows.append(dict(rho=0.0, seed=0, method=method, label=f"{method} k={k}", k=k, l0=float(k),
                             dead_pct=d, dead_pct_window=d, eval_dead_pct=d, eval_negative_pct=0.0))
    return pd.DataFrame(rows)


@register("auxk_cuts_topk_death", "TopK + AuxK has fewer dead latents than TopK at every k both trained",
          source="book", counterexample=_starve("topk_auxk"), example=_auxk_example, needs=("rho", "method", "k"))
def auxk_cuts_topk_death(df: pd.DataFrame, *, dead: str = DEAD_COLUMN, dead_name: str | None = None,
                         margin: float = DEAD_MARGIN) -> Verdict:
    """Seed means of TopK and TopK + AuxK at the same ρ and k (:func:`aen_lib.results.records.auxk_comparison`): holds when
    AuxK's dead % is below TopK's by more than ``margin`` at every (ρ, k)."""
    from ..records import auxk_comparison

    name = "auxk_cuts_topk_death"
    if not {"topk", "topk_auxk"} <= set(df["method"]):  # auxk_comparison needs both methods in the frame
        return Verdict(name, None, {}, "No k was trained both with and without AuxK.")
    c = auxk_comparison(df, metrics=(dead,))
    if c.empty:
        return Verdict(name, None, {}, "No k was trained both with and without AuxK.")
    cut = -c[f"{dead}_change"]
    holds = bool((cut > margin).all())
    per = "; ".join(f"ρ {r.rho:g}, k {r.k}: {getattr(r, f'{dead}_topk'):.1f} → {getattr(r, f'{dead}_auxk'):.1f}"
                    for r in c.itertuples())
    return Verdict(name, holds, {"cut_min": float(cut.min()), "cut_max": float(cut.max()), "pairs": len(c),
                                 "cut_by_more_than_margin": int((cut > margin).sum())},
                   f"Dead % ({dead_name or dead}) TopK → TopK + AuxK: {per}; AuxK has fewer by more than {margin:g} "
                   f"point{'' if margin == 1 else 's'} at {int((cut > margin).sum())} of {len(c)}.")


def _reach_example() -> pd.DataFrame:
    """ρ = 0.9: every dead latent of TopK and TopK + AuxK out of reach (numbers made up)."""
    return pd.DataFrame([dict(rho=0.9, method=m, label=f"{m} k={k}", k=k, eval_dead_pct=d, eval_negative_pct=d)
                         for m in ("topk", "topk_auxk") for k, d in ((8, 99.0), (16, 98.0), (32, 97.0))])


@register("topk_dead_out_of_reach",
          "the latents TopK and TopK + AuxK leave dead on fresh samples are out of reach (pre-activation ≤ 0 on every "
          "sample), where no gradient through the ReLU, AuxK's included, can act",
          source="book", counterexample=lambda df: df.assign(eval_negative_pct=0.0), example=_reach_example,
          needs=("method", "label", "eval_dead_pct", "eval_negative_pct"))
def topk_dead_out_of_reach(df: pd.DataFrame, *, margin: float = DEAD_MARGIN) -> Verdict:
    """Holds when no k-sparse SAE has more than ``margin`` % of its latents *outcompeted* (dead on the fresh samples
    but positive on some of them: never among the k largest), i.e. its dead latents are out of reach."""
    name = "topk_dead_out_of_reach"
    hard = df[df["method"].isin(["topk", "topk_auxk"])].dropna(subset=["eval_dead_pct", "eval_negative_pct"])
    hard = hard.sort_values([c for c in ("rho", "method", "k") if c in hard], kind="stable")
    if hard.empty:
        return Verdict(name, None, {}, "No TopK SAE was measured on fresh samples.")
    out = hard["eval_dead_pct"] - hard["eval_negative_pct"]
    holds = bool((out <= margin).all())
    where = (lambda r: f"ρ {r.rho:g} {r.label}") if "rho" in hard else (lambda r: str(r.label))
    per = "; ".join(f"{where(r)} {r.eval_dead_pct:.1f} / {r.eval_negative_pct:.1f} / {o:.1f}"
                    for r, o in zip(hard.itertuples(), out))
    return Verdict(name, holds, {"outcompeted_max": float(out.max()), "dead_max": float(hard["eval_dead_pct"].max())},
                   f"On fresh samples, % of latents dead / out of reach / outcompeted: {per}.")


# --- shrinkage ---------------------------------------------------------------------------------------------------------

_TWIN = {"aen": "elastic_net", "adaptive_lasso": "relu_l1"}


def _shrink_example() -> pd.DataFrame:
    rows = [("aen", 0.005, 0.001, 24.0, 0.70), ("elastic_net", 0.005, 0.001, 24.3, 0.54),
            ("adaptive_lasso", 0.005, 0.0, 20.4, 0.80), ("relu_l1", 0.005, 0.0, 20.5, 0.64)]
    return pd.DataFrame([dict(rho=0.0, seed=0, method=m, label=f"{m} λ1={l1:g}", config_l1=l1, config_l2=l2, l0=l0,
                              shrinkage=s) for m, l1, l2, l0, s in rows])


def _no_gain(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for a, twin in _TWIN.items():
        t = out.loc[out["method"] == twin, "shrinkage"]
        if len(t):
            out.loc[out["method"] == a, "shrinkage"] = float(t.iloc[0])  # adaptive weights change nothing
    return out


@register("adaptive_weights_cut_shrinkage",
          "adaptive ℓ1 weights remove shrinkage bias: at the same λ1 and λ2, the SAE with adaptive weights (AEN, "
          "adaptive lasso) has a shrinkage ratio mean‖x̂‖₁ / mean‖x‖₁ closer to 1 than its twin without them "
          "(elastic net, vanilla ℓ1)",
          source="paper", counterexample=_no_gain, example=_shrink_example,
          needs=("rho", "seed", "method", "label", "config_l1", "config_l2", "l0", "shrinkage"))
def adaptive_weights_cut_shrinkage(df: pd.DataFrame, *, margin: float = 0.01) -> Verdict:
    """Pairs every AEN with the elastic net and every adaptive lasso with the vanilla ℓ1 SAE of the same ρ, seed, λ1
    and λ2 (the twins differ only in the adaptive weights). Holds when in every pair the adaptive SAE's |1 − ratio|
    is smaller by more than ``margin``. The sentence also gives AEN against vanilla ℓ1 at the same λ1 (which differ in
    λ2 as well), for the reader who compares those."""
    name = "adaptive_weights_cut_shrinkage"
    key = ["rho", "seed", "config_l1", "config_l2"]
    pairs, gains = [], []
    for a, twin in _TWIN.items():
        p = df[df["method"] == a].merge(df[df["method"] == twin], on=key, suffixes=("", "_twin"))
        for _, r in p.iterrows():
            gains.append(abs(1 - r["shrinkage_twin"]) - abs(1 - r["shrinkage"]))
            pairs.append(f"{r['label']} (L0 {r['l0']:.1f}) {r['shrinkage']:.3f} against {r['label_twin']} "
                         f"(L0 {r['l0_twin']:.1f}) {r['shrinkage_twin']:.3f}")
    if not pairs:
        return Verdict(name, None, {"pairs": []}, "No adaptive SAE has a twin without adaptive weights at the same λ1 "
                                                  "and λ2 here.")
    holds = bool(min(gains) > margin)
    cross = df[df["method"] == "aen"].merge(df[df["method"] == "relu_l1"], on=["rho", "seed", "config_l1"],
                                            suffixes=("", "_vanilla"))
    also = "; ".join(f"{r['label']} (L0 {r['l0']:.1f}) {r['shrinkage']:.3f} against {r['label_vanilla']} "
                     f"(L0 {r['l0_vanilla']:.1f}) {r['shrinkage_vanilla']:.3f}" for _, r in cross.iterrows())
    return Verdict(name, holds, {"pairs": pairs, "gain_min": float(min(gains)), "gain_max": float(max(gains))},
                   "Shrinkage ratio (1 = none) with and without adaptive weights at the same λ1, λ2: " + "; ".join(pairs)
                   + f" — closer to 1 by more than {margin:g} in {sum(g > margin for g in gains)} of {len(gains)}."
                   + (f" AEN against vanilla ℓ1 at the same λ1 (λ2 differs too): {also}." if also else ""))
