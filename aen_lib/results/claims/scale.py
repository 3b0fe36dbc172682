"""Claims of chapter 10 (the Llama-scale machinery, run small): the memory planner against measured peaks, two
torchrun processes against one, and the health of the run it trains.

* ``planner_within_tolerance`` — the planner's predicted peak of one training step lies within 20% of the measured
  peak on every traced shape;
* ``ddp_matches_single`` — one process and two ``torchrun`` processes end with the same SAE (weights and the adaptive
  EMA within 1e-4), and the EMA moved, so the comparison is not vacuous;
* ``runs_complete`` — every SAE of the run trained all its steps with no skipped step and a finite loss.
"""

from __future__ import annotations

import math

import pandas as pd

from .core import Verdict, register

PLANNER_TOLERANCE = 0.20
DDP_TOLERANCE = 1e-4
EMA_MOVED = 1e-3


def _planner_example() -> pd.DataFrame:
    return pd.DataFrame([{"architecture": a, "B": 256, "n": n, "m": m, "ratio": r}
                         for a, n, m, r in (("aen", 64, 4096, 1.04), ("topk", 64, 4096, 0.97), ("aen", 128, 1024, 1.1))])


def _planner_off(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[0], "ratio"] = 2.0
    return out


@register("planner_within_tolerance",
          "the memory planner's peak of one training step is within 20% of the measured peak on every shape traced",
          source="book", counterexample=_planner_off, example=_planner_example, needs=("ratio",))
def planner_within_tolerance(df: pd.DataFrame, *, tolerance: float = PLANNER_TOLERANCE) -> Verdict:
    """Holds when every row's ``ratio`` (predicted / measured peak) lies within ``tolerance`` of 1."""
    name = "planner_within_tolerance"
    if df.empty:
        return Verdict(name, None, {}, "No shape was traced.")
    worst = float((df["ratio"] - 1).abs().max())
    return Verdict(name, worst < tolerance, {"worst": worst, "shapes": len(df)},
                   f"The planner is within {100 * worst:.1f}% of the measured peak on {len(df)} shapes.")


def _ddp_example() -> pd.DataFrame:
    return pd.DataFrame([{"world_sizes": "1,2", "max_abs_diff_W_enc": 2e-7, "max_abs_diff_W_dec": 1e-7,
                          "max_rel_diff_ema": 3e-7, "ema_moved": 0.05}])


def _ddp_apart(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["max_abs_diff_W_enc"] = 1e-2
    return out


@register("ddp_matches_single",
          "one process and two torchrun processes train the same SAE, adaptive state included",
          source="book", counterexample=_ddp_apart, example=_ddp_example,
          needs=("world_sizes", "max_abs_diff_W_enc", "max_abs_diff_W_dec", "max_rel_diff_ema", "ema_moved"))
def ddp_matches_single(df: pd.DataFrame, *, tolerance: float = DDP_TOLERANCE, moved: float = EMA_MOVED) -> Verdict:
    """Holds when the weights differ by less than ``tolerance`` and the EMA by less than ``tolerance`` (relative);
    not testable when the comparison is not of 1 and 2 processes or when the EMA moved by less than ``moved`` (then
    equal EMAs would prove nothing)."""
    name = "ddp_matches_single"
    if df.empty or str(df["world_sizes"].iloc[0]) != "1,2":
        return Verdict(name, None, {}, "One and two processes were not both run.")
    r = df.iloc[0]
    if not r["ema_moved"] > moved:
        return Verdict(name, None, {"ema_moved": float(r["ema_moved"])},
                       f"The adaptive EMA moved by only {r['ema_moved']:.1e}: equal EMAs would show nothing.")
    w = max(float(r["max_abs_diff_W_enc"]), float(r["max_abs_diff_W_dec"]))
    e = float(r["max_rel_diff_ema"])
    return Verdict(name, w < tolerance and e < tolerance, {"max_weight_diff": w, "max_ema_rel_diff": e},
                   f"One and two processes end with weights at most {w:.1e} apart and adaptive EMAs at most {e:.1e} "
                   f"apart (relative; the EMA moved by {r['ema_moved']:.2g}).")


def _runs_example() -> pd.DataFrame:
    return pd.DataFrame([{"name": n, "steps": 400, "want_steps": 400, "skipped_steps": 0, "mse": m}
                         for n, m in (("aen_0", 0.21), ("topk_k32", 0.18))])


def _one_skipped(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[0], "skipped_steps"] = 3
    return out


@register("runs_complete",
          "every SAE of the run trained all its steps, skipped none and ended with a finite loss",
          source="book", counterexample=_one_skipped, example=_runs_example,
          needs=("name", "steps", "want_steps", "skipped_steps", "mse"))
def runs_complete(df: pd.DataFrame) -> Verdict:
    """Holds when every row has ``steps == want_steps``, no skipped step and a finite ``mse``."""
    name = "runs_complete"
    if df.empty:
        return Verdict(name, None, {}, "No SAE was trained.")
    bad = [r["name"] for _, r in df.iterrows()
           if r["steps"] != r["want_steps"] or r["skipped_steps"] != 0 or not math.isfinite(float(r["mse"]))]
    sentence = (f"All {len(df)} SAEs trained every step with a finite loss and no skipped step." if not bad else
                f"Incomplete or skipped: {', '.join(bad)}.")
    return Verdict(name, not bad, {"saes": len(df), "bad": bad}, sentence)
