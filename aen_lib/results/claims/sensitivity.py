"""Claims of the adaptive rule's sensitivity sets (chapter 7): what its settings (γ, β, the EMA's start) do to
starvation at one λ1.

* ``pinned_weights_starve`` — the variants whose weights end mostly at w_max (more than half of the latents there)
  have more dead latents than every variant whose weights stay off it (under a tenth there), by more than a margin:
  a fast, steep rule starves an SAE that the paper's setting keeps alive.
"""

from __future__ import annotations

import pandas as pd

from .core import DEAD_COLUMN, DEAD_MARGIN, Verdict, register

PINNED = 0.5
"""Share of latents at w_max above which a variant's weights count as pinned."""
FREE = 0.1
"""Share at w_max below which they count as free."""


def _sensitivity_example() -> pd.DataFrame:
    rows = [("γ=1 β=0.999", 0.995, 72.0, 3.3), ("γ=1 β=0.999 first batch", 0.995, 71.0, 3.3),
            ("γ=0.5 β=0.9999", 0.0, 1.0, 24.1), ("γ=0.5 β=0.999", 0.1, 1.1, 23.6), ("γ=1 β=0.9999", 0.0, 1.1, 23.6)]
    return pd.DataFrame([{"label": lab, "adaptive_frac_w_max": f, DEAD_COLUMN: d, "l0": l0} for lab, f, d, l0 in rows])


def _pinned_alive(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    pinned = out["adaptive_frac_w_max"] > PINNED
    out.loc[pinned, DEAD_COLUMN] = out.loc[~pinned, DEAD_COLUMN].min()
    return out


@register("pinned_weights_starve",
          "the adaptive rule's settings decide starvation: variants whose weights end mostly at w_max have more dead "
          "latents than every variant whose weights stay off it",
          source="book", counterexample=_pinned_alive, example=_sensitivity_example,
          needs=("label", "adaptive_frac_w_max", DEAD_COLUMN, "l0"))
def pinned_weights_starve(df: pd.DataFrame, *, margin: float = DEAD_MARGIN) -> Verdict:
    """Holds when the smallest dead % of the pinned variants (share at w_max > :data:`PINNED`) exceeds the largest of
    the free ones (share < :data:`FREE`) by more than ``margin`` points; not testable without both kinds."""
    name = "pinned_weights_starve"
    pinned = df[df["adaptive_frac_w_max"] > PINNED]
    free = df[df["adaptive_frac_w_max"] < FREE]
    if pinned.empty or free.empty:
        return Verdict(name, None, {"pinned": len(pinned), "free": len(free)},
                       f"Needs variants with weights pinned at w_max and variants free of it; here {len(pinned)} "
                       f"pinned and {len(free)} free.")
    lo, hi = float(pinned[DEAD_COLUMN].min()), float(free[DEAD_COLUMN].max())
    holds = lo - hi > margin
    sentence = (f"{len(pinned)} variant(s) with more than {PINNED:.0%} of the weights at w_max have "
                f"{lo:.1f}–{float(pinned[DEAD_COLUMN].max()):.1f}% dead latents at L0 "
                f"{float(pinned['l0'].min()):.1f}–{float(pinned['l0'].max()):.1f}; the {len(free)} with under "
                f"{FREE:.0%} there have {float(free[DEAD_COLUMN].min()):.1f}–{hi:.1f}% at L0 "
                f"{float(free['l0'].min()):.1f}–{float(free['l0'].max()):.1f}.")
    return Verdict(name, holds, {"pinned_min": lo, "free_max": hi}, sentence)
