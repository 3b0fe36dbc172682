"""Claims of the 2 × 2 factorial: what the ℓ2 term and the adaptive weights each do to dead latents at matched L0
(:mod:`aen_lib.results.factorial`; the cells are ReLU-ℓ1, elastic net, adaptive lasso and AEN, one frame row per seed and
cell as :func:`aen_lib.results.factorial.factorial_frame` builds it).

* ``factorial_l2_lowers_death`` — adding the ℓ2 term lowers dead % (its main effect is below −margin) on every seed
  whose four cells are matched in L0;
* ``factorial_adaptive_lowers_death`` — the adaptive weights lower dead % (their main effect is below −margin) on
  every such seed;
* ``factorial_adaptive_smaller_than_l2`` — the adaptive weights' main effect on dead % is smaller in size than the ℓ2
  term's on every such seed (AEN behaves mostly like the elastic net).

The book judges each claim at every ρ with a committed factorial, so a claim that holds at one ρ and fails at another
is shown as such, not chosen.

A seed counts only when all four cells are present and within the L0 tolerance; with none, the claims are not
testable. Each verdict gives the effects per seed, so a reader sees the range and not one number.
"""

from __future__ import annotations

import pandas as pd

from .core import DEAD_COLUMN, Verdict, register

FACTORIAL_MARGIN = 0.25
"""Points of dead % that the ℓ2 term's main effect must exceed on every seed. Smaller than the single-run margin of
:data:`aen_lib.results.claims.core.DEAD_MARGIN` because a main effect of a 2² design averages two differences, and because the
claim asks for the same sign on every seed, which single runs cannot give."""


def _factorial_example() -> pd.DataFrame:
    """Two seeds of the four cells (numbers made up, shaped like ρ = 0: ℓ2 helps, adaptive weights hardly)."""
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.3)):
        for method, l2, adaptive, dead, l0 in (("relu_l1", False, False, 1.8, 21.0), ("elastic_net", True, False, 1.0, 24.0),
                                                ("adaptive_lasso", False, True, 1.6, 21.0), ("aen", True, True, 0.9, 24.0)):
            rows.append({"seed": seed, "method": method, "l2": l2, "adaptive": adaptive, "l0": l0, "matched": True,
                         DEAD_COLUMN: dead + shift, "eval_dead_pct": 4 * dead + shift})
    return pd.DataFrame(rows)


def _effects(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    from ..factorial import factorial_effects

    try:
        return factorial_effects(df, metrics=[metric])
    except ValueError:
        return None


def _per_seed(eff: pd.DataFrame, effect: str) -> dict[int, float]:
    return dict(eff[eff["effect"] == effect].iloc[0]["per_seed"])


def _fmt(per: dict[int, float]) -> str:
    return ", ".join(f"{v:+.2f} (seed {s})" for s, v in sorted(per.items()))


def _lowers_death(name: str, df: pd.DataFrame, effect: str, subject: str, pronoun: str, metric: str,
                  margin: float) -> Verdict:
    """Shared judge of the "<ingredient> lowers death" claims: holds when ``effect``'s main effect on ``metric`` is
    below ``-margin`` on every complete, matched seed. Matched within the tolerance is not equal, so the verdict also
    gives the same effect on L0 itself (how far that ingredient's cells sit from the others)."""
    eff = _effects(df, metric)
    if eff is None:
        return Verdict(name, None, {}, "No seed has all four factorial cells matched in L0.")
    per = _per_seed(eff, effect)
    holds = bool(max(per.values()) < -margin)
    numbers = {"metric": metric, "per_seed": per, "max": max(per.values()), "min": min(per.values()),
               "seeds": len(per)}
    sentence = f"Main effect of {subject} on {metric}: {_fmt(per)} points"
    l0 = _effects(df, "l0") if "l0" in df.columns else None
    if l0 is not None:
        numbers["l0_effect"] = _per_seed(l0, effect)
        sentence += f" ({pronoun} effect on L0 itself: {_fmt(numbers['l0_effect'])})"
    return Verdict(name, holds, numbers, sentence + ".")


def _flip_l2(df: pd.DataFrame) -> pd.DataFrame:
    """The ℓ2 cells made two points more starved than their twins without ℓ2: its effect turns positive."""
    out = df.copy()
    for seed in out["seed"].unique():
        s = out["seed"] == seed
        for with_l2, without in (("elastic_net", "relu_l1"), ("aen", "adaptive_lasso")):
            base = out.loc[s & (out["method"] == without), DEAD_COLUMN].iloc[0]
            out.loc[s & (out["method"] == with_l2), DEAD_COLUMN] = base + 2.0
    return out


@register("factorial_l2_lowers_death",
          "at matched L0, adding the ℓ2 term lowers dead % on every seed (its main effect in the 2 × 2 factorial)",
          source="book", counterexample=_flip_l2, example=_factorial_example,
          needs=("seed", "method", "matched", DEAD_COLUMN))
def factorial_l2_lowers_death(df: pd.DataFrame, *, metric: str = DEAD_COLUMN,
                              margin: float = FACTORIAL_MARGIN) -> Verdict:
    """Holds when the ℓ2 main effect on ``metric`` is below ``-margin`` points on every complete, matched seed."""
    return _lowers_death("factorial_l2_lowers_death", df, "l2", "the ℓ2 term", "its", metric, margin)


def _flip_adaptive(df: pd.DataFrame) -> pd.DataFrame:
    """The adaptive cells made five points less starved than their twins with fixed weights: the adaptive effect
    outgrows the ℓ2 term's."""
    out = df.copy()
    for seed in out["seed"].unique():
        s = out["seed"] == seed
        for adaptive, fixed in (("adaptive_lasso", "relu_l1"), ("aen", "elastic_net")):
            base = out.loc[s & (out["method"] == fixed), DEAD_COLUMN].iloc[0]
            out.loc[s & (out["method"] == adaptive), DEAD_COLUMN] = base - 5.0
    return out


@register("factorial_adaptive_smaller_than_l2",
          "at matched L0, the adaptive weights change dead % less than the ℓ2 term does, on every seed",
          source="book", counterexample=_flip_adaptive, example=_factorial_example,
          needs=("seed", "method", "matched", DEAD_COLUMN))
def factorial_adaptive_smaller_than_l2(df: pd.DataFrame, *, metric: str = DEAD_COLUMN) -> Verdict:
    """Holds when |adaptive main effect| < |ℓ2 main effect| on ``metric`` on every complete, matched seed."""
    name = "factorial_adaptive_smaller_than_l2"
    eff = _effects(df, metric)
    if eff is None:
        return Verdict(name, None, {}, "No seed has all four factorial cells matched in L0.")
    l2, ad = _per_seed(eff, "l2"), _per_seed(eff, "adaptive")
    holds = all(abs(ad[s]) < abs(l2[s]) for s in l2)
    return Verdict(name, holds, {"metric": metric, "l2": l2, "adaptive": ad, "seeds": len(l2)},
                   f"Main effects on {metric}, adaptive weights: {_fmt(ad)}; ℓ2 term: {_fmt(l2)} points.")


@register("factorial_adaptive_lowers_death",
          "at matched L0, the adaptive weights lower dead % on every seed (their main effect in the 2 × 2 factorial)",
          source="book", counterexample=_flip_adaptive, example=_factorial_example,
          needs=("seed", "method", "matched", DEAD_COLUMN))
def factorial_adaptive_lowers_death(df: pd.DataFrame, *, metric: str = DEAD_COLUMN,
                                    margin: float = FACTORIAL_MARGIN) -> Verdict:
    """Holds when the adaptive weights' main effect on ``metric`` is below ``-margin`` points on every complete,
    matched seed. The verdict also reports the adaptive cells' own L0 offset, the confound to read beside it."""
    return _lowers_death("factorial_adaptive_lowers_death", df, "adaptive", "the adaptive weights", "their", metric,
                         margin)
