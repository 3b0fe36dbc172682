"""Claims about the synthetic Figure 2 (the spiked dictionary; chapter 6, its live grid and the reference sets).

The Figure-2 claims are statements of :func:`aen_lib.results.records.figure2_findings`, judged on a frame of trained SAEs
(one row per SAE with ``rho, method, variant, seed, l0, dead_pct, ev``; every method represented at each ρ by its
variant whose seed-mean L0 is closest to the target, the oracle k by default):

* from the paper's Figure 2 caption (ρ = 0): ``fig2_topk_starves_more``, ``fig2_aen_has_none``,
  ``fig2_equal_reconstruction``, ``fig2_adaptive_lasso_near_k``;
* the book's own questions at larger ρ, which no readable part of the paper answers: ``rho_starvation_grows`` and
  ``rho_grows_least_for_aen``.

Each takes ``dead=`` (the dead-% column: ``"dead_pct"``, the mean of the last ten logs, or ``"dead_pct_window"``,
the last complete window; :func:`dead_definitions` names each with its window in samples). The two ρ = 0 statements
about dead latents compare only SAEs that reconstruct: an SAE matched at L0 ≈ k that explains less than ``min_ev``
of the variance (0.5 by default), or whose L0 is more than a factor ``l0_factor`` from the target, makes them not
testable (an SAE that barely reconstructs the data has not learned its features, so how many of its latents are
dead says little about starvation).

The checks chapter 6 stops on (the data and the bookkeeping, not the results):

* ``grid_complete`` — every (ρ, seed) trained the same grid, each SAE once, with no skipped (non-finite) step;
* ``topk_l0_at_most_k`` — TopK's hard sparsity: no TopK or TopK + AuxK SAE has more than k active latents;
* ``spike_hardens_dictionary`` — coherence and the condition number of active Gram matrices rise with ρ, their
  smallest eigenvalue falls (the dictionary statistics; that the irrepresentable condition fails from ρ = 0.3 on is
  ``irc_fails_from_rho_03`` of :mod:`aen_lib.results.claims.reweighting`, judged on the same rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable

import pandas as pd

from ...sae.architectures import architecture_spec
from .core import DEAD_MARGIN, Verdict, register

_STATEMENTS = {
    "fig2_topk_starves_more": "ρ = 0: TopK has more dead latents than AEN",
    "fig2_aen_has_none": "ρ = 0: AEN has no dead latents",
    "fig2_equal_reconstruction": "ρ = 0: all methods reconstruct about equally well",
    "fig2_adaptive_lasso_near_k": "adaptive lasso concentrates near the true sparsity (no Pareto curve)",
    "rho_starvation_grows": "starvation grows with ρ for every method",
    "rho_grows_least_for_aen": "it grows fastest for TopK and vanilla/EN, slowest for AEN",
}

L0_FACTOR = 2.0
"""How far (as a factor) a matched SAE's L0 may lie from the target for the ρ = 0 statements about dead latents."""

MIN_EV = 0.5
"""Explained variance an SAE must reach for its dead latents to be compared (the ρ = 0 statements about dead
latents): half the variance of the data. Below it the SAE does not reconstruct the data, and its dead latents say
little about starvation."""

_DEAD_AT_ZERO = {"fig2_topk_starves_more": ("topk", "aen"), "fig2_aen_has_none": ("aen",)}


def dead_definitions(*, steps: int, log_every: int, dead_window_steps: int, batch_size: int,
                     final_avg_logs: int = 10, short: bool = False) -> dict[str, str]:
    """A name for each dead-% column, with its window in samples (:func:`aen_lib.training.train.final_metrics`).

    ``dead_pct`` is the mean over the last ``final_avg_logs`` logs of the dead % in each log's window so far (the
    window restarts every ``dead_window_steps`` steps, so some of those windows are partial); ``dead_pct_window`` is
    the dead % over the last complete window. The trainer logs every ``log_every`` steps and at the last step. With
    ``short``, the names without the windows (for a sentence that has already named them)."""
    if short:
        return {"dead_pct": f"the mean of the last {final_avg_logs} logs", "dead_pct_window": "the last complete window"}
    logs = sorted(set(range(log_every, steps + 1, log_every)) | {steps})[-final_avg_logs:]
    seen = [((s - 1) % dead_window_steps) + 1 for s in logs]  # steps in the window at each log
    lo, hi = min(seen) * batch_size, max(seen) * batch_size
    span = f"{lo:,} samples" if lo == hi else f"{lo:,}–{hi:,} samples"
    full = (f"the last complete window, {dead_window_steps * batch_size:,} samples" if steps >= dead_window_steps
            else "the last complete window (none: the run is shorter than one window)")
    return {"dead_pct": f"the mean of the last {len(logs)} logs, windows of {span}", "dead_pct_window": full}


def _example(k: int = 16) -> pd.DataFrame:
    """One seed, one variant per method at L0 = k, ρ = 0 and 0.9, shaped as the paper describes Figure 2 (numbers
    made up): TopK starves at ρ = 0 and AEN does not; everything starves more at 0.9, AEN least."""
    dead = {0.0: {"relu_l1": 2.0, "elastic_net": 2.0, "topk": 10.0, "aen": 0.0},
            0.9: {"relu_l1": 30.0, "elastic_net": 30.0, "topk": 40.0, "aen": 5.0}}
    rows = []
    for rho, by_method in dead.items():
        for method, d in by_method.items():
            rows.append(dict(rho=rho, method=method, variant=f"{method}-a", label=f"{method} a", seed=0, l0=float(k),
                             dead_pct=d, dead_pct_window=d, ev=0.9 if rho == 0 else 0.7))
        for i, l0 in enumerate((15.0, 17.0)):
            rows.append(dict(rho=rho, method="adaptive_lasso", variant=f"ada-{i}", label=f"adaptive_lasso {i}", seed=0,
                             l0=l0, dead_pct=0.0, dead_pct_window=0.0, ev=0.9))
    return pd.DataFrame(rows)


def _set(df: pd.DataFrame, rho: float, method: str, col: str, value: float) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out["rho"] == rho) & (out["method"] == method), col] = value
    return out


def _matched_at_zero(df: pd.DataFrame, target: float, cols: list[str]) -> pd.DataFrame:
    from ..records import closest_to_target

    return closest_to_target(df[df["rho"] == 0.0], target, metrics=cols, by=["method"]).set_index("method")


def _reconstruction_context(df: pd.DataFrame, target: float) -> tuple[dict[str, Any], str]:
    """What ``fig2_equal_reconstruction`` compares: the matched L0 span of the paper's methods, whether EV rises with
    L0 along each method's sweep, and where TopK + AuxK (not in the paper) stands."""
    from ..records import FIGURE2_CORE

    m = _matched_at_zero(df, target, ["ev"])
    core = [a for a in FIGURE2_CORE if a in m.index]
    lo, hi = float(m.loc[core, "l0"].min()), float(m.loc[core, "l0"].max())
    means = df[df["rho"] == 0.0].groupby(["method", "variant"])[["l0", "ev"]].mean().reset_index()
    swept = [a for a in core if (means["method"] == a).sum() >= 2]
    rising = [a for a in swept if means[means["method"] == a].sort_values("l0")["ev"].is_monotonic_increasing]
    numbers: dict[str, Any] = {"l0_min": lo, "l0_max": hi, "ev_rises_with_l0": rising}
    text = f" The matched SAEs' L0 spans {lo:.1f}–{hi:.1f}"
    if swept and rising == swept:
        text += (", and EV rises with L0 along the sweep of every method with more than one variant here, so the "
                 "spread also reflects the sparsity")
    if "topk_auxk" in m.index:
        numbers.update(auxk_ev=float(m.loc["topk_auxk", "ev"]), auxk_l0=float(m.loc["topk_auxk", "l0"]))
        text += (f"; TopK + AuxK, not among the paper's methods, explains {numbers['auxk_ev']:.2f} at L0 "
                 f"{numbers['auxk_l0']:.1f}")
    return numbers, text + "."


def _judge(name: str) -> Callable[..., Verdict]:
    statement = _STATEMENTS[name]

    def judge(df: pd.DataFrame, *, k: int = 16, target_l0: float | None = None, dead: str = "dead_pct",
              dead_name: str | None = None, dead_margin: float = DEAD_MARGIN, ev_spread: float = 0.1,
              min_ev: float | None = MIN_EV, l0_factor: float = L0_FACTOR) -> Verdict:
        from ..records import figure2_findings

        if dead not in df.columns:
            raise ValueError(f"claim {name!r}: dead={dead!r} is not a column of the frame")
        target = float(k if target_l0 is None else target_l0)
        which = f" ({dead_name or dead})" if name not in ("fig2_equal_reconstruction",
                                                          "fig2_adaptive_lasso_near_k") else ""
        frame = df if dead == "dead_pct" else df.assign(dead_pct=df[dead])
        if name in _DEAD_AT_ZERO:
            m = _matched_at_zero(frame, target, ["dead_pct", "ev"])
            rows = [(architecture_spec(a).label, m.loc[a]) for a in _DEAD_AT_ZERO[name] if a in m.index]
            far = [f"the {a} SAE nearest L0 ≈ {target:g} ({r['label']}) has L0 {r['l0']:.1f}" for a, r in rows
                   if not target / l0_factor <= r["l0"] <= target * l0_factor]
            if far:
                return Verdict(name, None, {"unmatched": far},
                               f"“{statement}”{which} cannot be judged: " + "; ".join(far)
                               + f", more than a factor {l0_factor:g} from it.")
            weak = [f"the {a} SAE matched at L0 ≈ {target:g} ({r['label']}, L0 {r['l0']:.1f}) explains {r['ev']:.2f}"
                    for a, r in rows if min_ev is not None and r["ev"] < min_ev]
            if weak:
                return Verdict(name, None, {"weak": weak, "min_ev": min_ev},
                               f"“{statement}”{which} cannot be judged: " + "; ".join(weak) + " of the variance, "
                               f"below the {min_ev:g} this book requires of an SAE whose dead latents it compares.")
        found = figure2_findings(frame, k=k, target_l0=target, dead_margin=dead_margin,
                                 ev_spread=ev_spread).set_index("statement")
        if statement not in found.index:
            if name == "fig2_adaptive_lasso_near_k":
                n = int(df[(df["rho"] == 0.0) & (df["method"] == "adaptive_lasso")]["variant"].nunique())
                return Verdict(name, None, {"variants": n},
                               f"“{statement}” cannot be judged here: the grid has {n} adaptive-lasso variant"
                               f"{'' if n == 1 else 's'} at ρ = 0, and how L0 moves along a sweep needs at least two.")
            return Verdict(name, None, {}, f"“{statement}” cannot be judged: the frame lacks a method or a ρ it needs.")
        row = found.loc[statement]
        holds = bool(row["consistent"])
        numbers: dict[str, Any] = {"measured": row["measured here"], "dead": dead}
        extra = ""
        if name == "fig2_equal_reconstruction":
            more, extra = _reconstruction_context(df, target)
            numbers.update(more)
        if name in _DEAD_AT_ZERO:
            m = _matched_at_zero(frame, target, ["dead_pct", "ev"])
            numbers.update({f"{a}_{c}": float(m.loc[a, c]) for a in _DEAD_AT_ZERO[name] for c in ("dead_pct", "l0", "ev")})
        return Verdict(name, holds, numbers,
                       f"{statement}{which}: {'consistent' if holds else 'not borne out'} ({row['measured here']})."
                       + extra)

    judge.__name__ = name
    judge.__doc__ = f"“{statement}”, judged by :func:`aen_lib.results.records.figure2_findings`."
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
             needs=("rho", "method", "variant", "label", "seed", "l0", "dead_pct", "ev"))(_judge(_name))


def figure2_verdicts(df: pd.DataFrame, **kwargs: Any) -> dict[str, Verdict]:
    """Every Figure-2 claim on ``df`` (keyword arguments go to each: ``k``, ``target_l0``, ``dead``, ``dead_name``,
    ``dead_margin``, ``min_ev``, ``l0_factor``)."""
    from . import CLAIMS

    return {name: CLAIMS[name](df, **kwargs) for name in _STATEMENTS}


def verdicts_frame(items: Iterable[Verdict | tuple[Mapping[str, Any], Verdict]]) -> pd.DataFrame:
    """A table of verdicts for the book, one row each: any columns given with it (``(columns, verdict)`` pairs, e.g.
    ``{"ρ": 0.9, "dead %": "the last complete window, 2,560,000 samples"}``), the statement, who makes it (the paper,
    or the book's own question), the verdict and the sentence with its numbers."""
    from . import CLAIMS

    who = {"paper": "the paper", "book": "the book's question"}
    rows = []
    for item in items:
        cols, v = item if isinstance(item, tuple) else ({}, item)
        claim = CLAIMS[v.claim]
        rows.append({**cols, "statement": claim.statement, "made by": who[claim.source], "verdict": v.status,
                     "measured": v.sentence})
    return pd.DataFrame(rows)


def paper_tally(verdicts: Mapping[str, Verdict]) -> dict[str, int]:
    """How many of the paper's statements among ``verdicts`` hold, how many could be judged (not "not testable") and
    how many there are; the book's own questions are not counted."""
    from . import CLAIMS

    paper = [v for v in verdicts.values() if CLAIMS[v.claim].source == "paper"]
    judged = [v for v in paper if v.holds is not None]
    return {"hold": sum(bool(v.holds) for v in judged), "judged": len(judged), "statements": len(paper)}


def definition_note(by_definition: Mapping[str, Verdict], names: Mapping[str, str]) -> str:
    """One sentence on whether a claim's verdict depends on the dead-% definition, from its verdict under each
    (``{column: verdict}``, ``names`` as :func:`dead_definitions` gives them)."""
    if len({v.claim for v in by_definition.values()}) != 1:
        raise ValueError("definition_note takes the verdicts of one claim under several definitions")
    parts = "; ".join(f"with dead % as {names.get(d, d)}: {v.status}" for d, v in by_definition.items())
    same = len({v.holds for v in by_definition.values()}) == 1
    return (parts[0].upper() + parts[1:] + (" — the same under every definition." if same else
                                            " — the verdict depends on the definition."))


# --- the checks the chapter stops on: bookkeeping and the data --------------------------------------------------------

def _grid_example() -> pd.DataFrame:
    return pd.DataFrame([dict(rho=rho, seed=seed, variant=v, method=v.split("-")[0], label=v, skipped_steps=0)
                         for rho in (0.0, 0.9) for seed in (0, 1) for v in ("topk-a", "aen-b", "relu_l1-c")])


@register("grid_complete", "every (ρ, seed) trained the same grid, each SAE once, with no skipped (non-finite) step",
          source="book", counterexample=lambda df: df.iloc[1:].reset_index(drop=True), example=_grid_example,
          needs=("rho", "seed", "variant", "skipped_steps"))
def grid_complete(df: pd.DataFrame, *, expected: int | None = None) -> Verdict:
    """Holds when every (ρ, seed) holds the same set of variants, each once, no SAE skipped a step, and (with
    ``expected``) the frame has that many SAEs."""
    name = "grid_complete"
    groups = {key: g["variant"] for key, g in df.groupby(["rho", "seed"])}
    sets = {key: frozenset(v) for key, v in groups.items()}
    repeated = [key for key, v in groups.items() if v.duplicated().any()]
    differ = [key for key, s in sets.items() if s != max(sets.values(), key=len)]
    skipped = df.loc[df["skipped_steps"] > 0, "label" if "label" in df else "variant"].tolist()
    problems = []
    if repeated:
        problems.append(f"(ρ, seed) {repeated} hold a variant twice")
    if differ:
        problems.append(f"(ρ, seed) {differ} lack variants the others trained")
    if skipped:
        problems.append(f"{len(skipped)} SAE(s) skipped a step: {skipped[:5]}")
    if expected is not None and len(df) != expected:
        problems.append(f"{len(df)} SAEs where the grid has {expected}")
    sentence = (f"{len(df)} SAEs: {len(sets)} (ρ, seed) pairs × {len(max(sets.values(), key=len))} variants, "
                "none skipped a step." if not problems else "The grid is incomplete: " + "; ".join(problems) + ".")
    return Verdict(name, not problems, {"saes": len(df), "pairs": len(sets), "skipped": len(skipped)}, sentence)


_KSPARSE = ("topk", "topk_auxk")


def _ksparse_example() -> pd.DataFrame:
    return pd.DataFrame([dict(method=m, label=f"{m} k={k}", rho=0.0, k=k, l0=float(k) - (0.5 if k == 32 else 0.0))
                         for m in _KSPARSE for k in (8, 16, 32)])


def _break_ksparse(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    first = out.index[out["method"].isin(_KSPARSE)][0]
    out.loc[first, "l0"] = out.loc[first, "k"] + 1.0
    return out


@register("topk_l0_at_most_k", "no TopK or TopK + AuxK SAE has more than k active latents per sample", source="book",
          counterexample=_break_ksparse, example=_ksparse_example, needs=("method", "label", "k", "l0"))
def topk_l0_at_most_k(df: pd.DataFrame, *, tol: float = 1e-6, short: float = 0.05) -> Verdict:
    """TopK's hard sparsity (data integrity): holds when every k-sparse SAE's L0 is at most k (+ ``tol``). The ReLU
    after the top-k leaves fewer when some of the k largest pre-activations are ≤ 0; the sentence names the SAEs that
    keep more than ``short`` fewer than k on average."""
    name = "topk_l0_at_most_k"
    hard = df[df["method"].isin(_KSPARSE)]
    if hard.empty:
        return Verdict(name, None, {}, "The frame has no TopK SAE.")
    where = (lambda r: f"ρ {r.rho:g} {r.label}") if "rho" in hard else (lambda r: str(r.label))
    over = hard[hard["l0"] > hard["k"] + tol]
    few = hard[hard["l0"] < hard["k"] - short]
    if len(over):
        sentence = ("Hard sparsity broken: " + ", ".join(f"{where(r)} has L0 {r.l0:.2f} > k" for r in over.itertuples())
                    + ".")
    else:
        sentence = (f"All {len(hard)} k-sparse SAEs have L0 ≤ k; {len(few)} keep fewer than k on average"
                    + (": " + ", ".join(f"{where(r)} L0 {r.l0:.1f}" for r in few.itertuples()) if len(few) else "")
                    + ".")
    return Verdict(name, over.empty, {"saes": len(hard), "over": len(over), "short": len(few)}, sentence)


def _stats_example() -> pd.DataFrame:
    """The reference code's statistics at the paper's size (book: paper facts, synthetic protocol)."""
    return pd.DataFrame({"rho": [0.0, 0.3, 0.5, 0.7, 0.9], "mean_abs_offdiag": [0.05, 0.30, 0.50, 0.70, 0.90],
                         "lambda_min_mean": [0.625, 0.440, 0.314, 0.189, 0.063],
                         "cond_mean": [2.3, 12.6, 27.2, 61.2, 230.0]})


def _swap_first_two(df: pd.DataFrame, col: str) -> pd.DataFrame:
    out = df.sort_values("rho").reset_index(drop=True)
    out.loc[[0, 1], col] = out.loc[[1, 0], col].to_numpy()
    return out


@register("spike_hardens_dictionary",
          "the spike makes sparse recovery harder as ρ grows: mean |cos| between atoms and the condition number of "
          "active Gram matrices rise, their smallest eigenvalue falls",
          source="book", counterexample=lambda df: _swap_first_two(df, "lambda_min_mean"), example=_stats_example,
          needs=("rho", "mean_abs_offdiag", "lambda_min_mean", "cond_mean"))
def spike_hardens_dictionary(df: pd.DataFrame) -> Verdict:
    """On :func:`aen_lib.data.synthetic.dictionary_statistics` rows of one size, one per ρ: holds when the three statistics
    move monotonically (strictly) in the stated direction."""
    s = df.sort_values("rho")
    if len(s) < 2:
        return Verdict("spike_hardens_dictionary", None, {}, "One ρ: nothing to compare.")
    up = lambda c: bool(s[c].diff().dropna().gt(0).all())  # noqa: E731
    down = lambda c: bool(s[c].diff().dropna().lt(0).all())  # noqa: E731
    holds = up("mean_abs_offdiag") and down("lambda_min_mean") and up("cond_mean")
    fmt = lambda c, d: " → ".join(f"{v:.{d}f}" for v in s[c])  # noqa: E731
    return Verdict("spike_hardens_dictionary", holds, {"rhos": s["rho"].tolist()},
                   f"Over ρ = {', '.join(f'{r:g}' for r in s['rho'])}: mean |cos| {fmt('mean_abs_offdiag', 2)}, "
                   f"E λ_min(G_AA) {fmt('lambda_min_mean', 3)}, E cond(G_AA) {fmt('cond_mean', 1)}.")
