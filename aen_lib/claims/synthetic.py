"""Claims about the synthetic Figure 2 (the spiked dictionary at the paper's size; chapter 6 and the reference sets).

Each claim is one statement of :func:`aen_lib.results.figure2_findings`, judged on a frame of trained SAEs (one row
per SAE with ``rho, method, variant, seed, l0, dead_pct, ev``; every method represented at each ρ by its variant whose
seed-mean L0 is closest to the target, the oracle k by default):

* from the paper's Figure 2 caption (ρ = 0): ``fig2_topk_starves_more``, ``fig2_aen_has_none``,
  ``fig2_equal_reconstruction``, ``fig2_adaptive_lasso_near_k``;
* the book's own questions at larger ρ, which no readable part of the paper answers: ``rho_starvation_grows`` and
  ``rho_grows_least_for_aen``.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from .core import DEAD_MARGIN, Verdict, register

_STATEMENTS = {
    "fig2_topk_starves_more": "ρ = 0: TopK has more dead latents than AEN",
    "fig2_aen_has_none": "ρ = 0: AEN has no dead latents",
    "fig2_equal_reconstruction": "ρ = 0: all methods reconstruct about equally well",
    "fig2_adaptive_lasso_near_k": "adaptive lasso concentrates near the true sparsity (no Pareto curve)",
    "rho_starvation_grows": "starvation grows with ρ for every method",
    "rho_grows_least_for_aen": "it grows fastest for TopK and vanilla/EN, slowest for AEN",
}


def _example(k: int = 16) -> pd.DataFrame:
    """One seed, one variant per method at L0 = k, ρ = 0 and 0.9, shaped as the paper describes Figure 2 (numbers
    made up): TopK starves at ρ = 0 and AEN does not; everything starves more at 0.9, AEN least."""
    dead = {0.0: {"relu_l1": 2.0, "elastic_net": 2.0, "topk": 10.0, "aen": 0.0},
            0.9: {"relu_l1": 30.0, "elastic_net": 30.0, "topk": 40.0, "aen": 5.0}}
    rows = []
    for rho, by_method in dead.items():
        for method, d in by_method.items():
            rows.append(dict(rho=rho, method=method, variant=f"{method}-a", seed=0, l0=float(k), dead_pct=d,
                             ev=0.9 if rho == 0 else 0.7))
        for i, l0 in enumerate((15.0, 17.0)):
            rows.append(dict(rho=rho, method="adaptive_lasso", variant=f"ada-{i}", seed=0, l0=l0, dead_pct=0.0,
                             ev=0.9))
    return pd.DataFrame(rows)


def _set(df: pd.DataFrame, rho: float, method: str, col: str, value: float) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["rho"] == rho) & (out["method"] == method), col] = value
    return out


def _judge(name: str) -> Callable[..., Verdict]:
    statement = _STATEMENTS[name]

    def judge(df: pd.DataFrame, *, k: int = 16, target_l0: float | None = None, dead_margin: float = DEAD_MARGIN,
              ev_spread: float = 0.1) -> Verdict:
        from ..results import figure2_findings

        found = figure2_findings(df, k=k, target_l0=float(k if target_l0 is None else target_l0),
                                 dead_margin=dead_margin, ev_spread=ev_spread).set_index("claim (paper)")
        if statement not in found.index:
            return Verdict(name, None, {}, f"“{statement}” cannot be judged: the frame lacks a method or a ρ it needs.")
        row = found.loc[statement]
        holds = bool(row["consistent"])
        return Verdict(name, holds, {"measured": row["measured here"]},
                       f"{statement}: {'consistent' if holds else 'not borne out'} ({row['measured here']}).")

    judge.__name__ = name
    judge.__doc__ = f"“{statement}”, judged by :func:`aen_lib.results.figure2_findings`."
    return judge


_BREAK: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    # each sets the one number the statement rests on to a value that contradicts it
    "fig2_topk_starves_more": lambda df: _set(df, 0.0, "topk", "dead_pct", 0.0),
    "fig2_aen_has_none": lambda df: _set(_set(df, 0.0, "aen", "dead_pct", 5.0), 0.9, "aen", "dead_pct", 10.0),
    "fig2_equal_reconstruction": lambda df: _set(df, 0.0, "topk", "ev", 0.5),
    "fig2_adaptive_lasso_near_k": lambda df: _set(df, 0.0, "adaptive_lasso", "l0", 3.0),
    "rho_starvation_grows": lambda df: _set(df, 0.9, "relu_l1", "dead_pct", float(
        df[(df["rho"] == 0.0) & (df["method"] == "relu_l1")]["dead_pct"].max())),
    "rho_grows_least_for_aen": lambda df: _set(df, 0.9, "aen", "dead_pct", 100.0),
}

for _name, _statement in _STATEMENTS.items():
    _source = "book" if _name.startswith("rho_") else "paper"
    register(_name, _statement, source=_source, counterexample=_BREAK[_name], example=_example,
             needs=("rho", "method", "variant", "seed", "l0", "dead_pct", "ev"))(_judge(_name))


def figure2_verdicts(df: pd.DataFrame, **kwargs: Any) -> dict[str, Verdict]:
    """Every claim of this module on ``df`` (keyword arguments go to each: ``k``, ``target_l0``, ``dead_margin``)."""
    from . import CLAIMS

    return {name: CLAIMS[name](df, **kwargs) for name in _STATEMENTS}
