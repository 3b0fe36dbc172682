"""The 2 × 2 factorial read from the committed reference sets: {ℓ1 alone, ℓ1 + ℓ2} × {fixed, adaptive weights}
(book: chapter "What stops starvation").

The four cells are vanilla ReLU-ℓ1, the elastic net, the adaptive lasso and AEN, each trained at a λ1 that puts its
final L0 near one target (:data:`aen_lib.results.reference.FACTORIAL_TARGET_L0`), so that a difference in dead latents is not
a difference in sparsity. Per seed, with y the metric of a cell,

* main effect of the ℓ2 term      = ½ (y_EN + y_AEN) − ½ (y_ℓ1 + y_AL),
* main effect of adaptive weights = ½ (y_AL + y_AEN) − ½ (y_ℓ1 + y_EN),
* interaction                     = ½ [(y_AEN − y_AL) − (y_EN − y_ℓ1)]  (how much ℓ2 helps more with adaptive weights),

the usual contrasts of a 2² design (Box, Hunter & Hunter). :func:`factorial_effects` gives them per seed and their
range over seeds; a seed counts only when all four cells are within the L0 tolerance.

Where the seed-0 cells are members of the paper set (at ρ = 0 the factorial's λ1 are on the paper grid), they are read
from it; a ``factorial`` set of the same seed, when committed, must agree with it (the same configs train the same
SAEs), and is preferred because its SAEs may carry mechanism measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..store import shown_path
from .sets import committed_sets
from .spiked_frames import set_frames
from .spiked_mechanism import MECHANISM_FILE
from .spiked_sets import FACTORIAL_TARGET_L0, FACTORIAL_TOLERANCE, SPIKED_PAPER_SAE, STUDIES
from .records import read_result, variant_id
from ..training.sweep import expand_grid

__all__ = ["CELLS", "EFFECTS", "factorial_frame", "set_machine", "replicate_spread", "factorial_effects", "mechanism_frame", "dead_per_l0", "factorial_summary",
           "FACTORIAL_METRICS"]

CELLS = {"relu_l1": (False, False), "elastic_net": (True, False), "adaptive_lasso": (False, True),
         "aen": (True, True)}
"""Each method's place in the design: (has the ℓ2 term, has adaptive weights)."""
EFFECTS = ("l2", "adaptive", "interaction")
FACTORIAL_METRICS = ("l0", "dead_pct_window", "eval_dead_pct", "ev", "shrinkage", "support_f1", "atoms_recovered")
"""What the factorial reports on: dead % over the last full window and on fresh samples, EV, shrinkage, support and
dictionary recovery (L0 is the matching condition, shown for the reader to check)."""
MECHANISM_COLUMNS = ("lipschitz_p99", "lipschitz_max", "gap_rel_mean", "exact_dead_pct", "encoder_dead_exact_used_pct")


def mechanism_frame(folder: str | Path) -> pd.DataFrame:
    """A set's ``mechanism.json`` as one row per SAE (``variant`` and the scalar measures); empty without one."""
    path = Path(folder) / MECHANISM_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["variant"])
    members = read_result(path, "mechanism")["members"]
    rows = [{"variant": v, **{k: x for k, x in m.items() if not isinstance(x, (dict, list))}} for v, m in members.items()]
    for row, m in zip(rows, members.values()):
        wf = m.get("weights_vs_firing")
        row["spearman_w_freq"] = wf["spearman_w_freq"] if wf else None
    return pd.DataFrame(rows)


def _plain(folder: Path) -> bool:
    """Whether a set trains on raw inputs with b_dec at 0 (the factorial's treatment; the outlier studies do not)."""
    spec = STUDIES[read_result(folder / "provenance.json", "provenance").get("study", "paper")]
    return spec.inputs == "raw" and spec.b_dec_init == "zero"


def factorial_frame(root: str | Path, rho: float, seeds: Sequence[int] = (0, 1, 2), device: str = "cpu",
                    replicate: str = "factorial") -> pd.DataFrame:
    """One row per (seed, cell) of the factorial at ``rho``: the cell's method, ``l2`` and ``adaptive`` flags, its λ1
    and λ2 (``lambda2``),
    :data:`FACTORIAL_METRICS`, the mechanism measures where its set has them, the set it comes from, and
    ``matched`` (its L0 within the tolerance of the target). Seeds with no committed cell are left out.

    A cell trained in two sets is read from one: the factorial set (``replicate="factorial"``) or the other
    (``replicate="other"``, to see whether a verdict survives reading the other machine's copy). Trained with the same commit, torch and CPU
    model the two must agree in L0 and dead % to 1e-9, or this raises: they should be the same SAE. Trained on
    different machines they may differ (float rounding differs between CPU kernels and grows over 50,000 steps); then
    ``replicate_sets`` names both and ``replicate_l0_diff`` / ``replicate_dead_diff`` give their absolute difference,
    a measured floor under which no difference between cells means anything (:func:`replicate_spread`)."""
    from .spiked_sets import FACTORIAL_L1, _factorial_grid

    if replicate not in ("factorial", "other"):
        raise ValueError(f"replicate={replicate!r}: read a cell trained twice from the 'factorial' set or the 'other' one")
    factorial_first = replicate == "factorial"

    if float(rho) not in FACTORIAL_L1:
        raise ValueError(f"the factorial has no calibrated λ1 at ρ = {rho:g} (it has {sorted(FACTORIAL_L1)}); train "
                         f"the factorial_bracket study at that ρ and add its λ1 to FACTORIAL_L1")
    grid = _factorial_grid(FACTORIAL_L1[float(rho)])
    root = Path(root)
    folders = [f for f in committed_sets(root, device=device, study=None)
               if _plain(f) and read_result(f / "provenance.json", "provenance")["protocol"]["data"]["rho"] == rho]
    if not folders:
        raise ValueError(f"no committed set at ρ = {rho:g} under {shown_path(root)}")
    runs = pd.concat([set_frames([f])[0] for f in folders], ignore_index=True)  # one set at a time: studies repeat
    mech = pd.concat([mechanism_frame(f).assign(set=read_result(f / "provenance.json", "provenance")["set"])
                      for f in folders], ignore_index=True)
    if len(mech):
        runs = runs.merge(mech, on=["set", "variant"], how="left")
    rows = []
    for seed in seeds:
        for cfg in expand_grid(dict(SPIKED_PAPER_SAE), grid, seeds=[seed]):
            hit = runs[(runs["variant"] == variant_id(cfg)) & (runs["seed"] == seed) & (runs["data_seed"] == seed)]
            if hit.empty:
                continue
            twice: dict[str, Any] = {}
            if len(hit) > 1:
                spread = hit[["l0", "dead_pct_window"]].max() - hit[["l0", "dead_pct_window"]].min()
                if (spread > 1e-9).any():
                    machines = {s: set_machine(root / s) for s in hit["set"]}
                    if len(set(machines.values())) < len(machines):
                        raise ValueError(f"{variant_id(cfg)} (seed {seed}) differs between sets {list(hit['set'])}: "
                                         f"{spread.to_dict()}, though they were trained with the same commit, "
                                         f"torch and CPU model ({next(iter(machines.values()))}); they should train "
                                         f"the same SAE")
                    twice = {"replicate_sets": sorted(hit["set"]), "replicate_l0_diff": float(spread["l0"]),
                             "replicate_dead_diff": float(spread["dead_pct_window"])}
                hit = hit.sort_values("study", key=lambda s: (s != "factorial") == factorial_first)
            r = hit.iloc[0]
            l2, adaptive = CELLS[cfg.architecture]
            row: dict[str, Any] = {"seed": seed, "method": cfg.architecture, "l2": l2, "adaptive": adaptive,
                                   "l1": cfg.l1, "lambda2": cfg.l2, "set": r["set"],
                                   **{m: r[m] for m in FACTORIAL_METRICS}}
            for c in MECHANISM_COLUMNS:
                row[c] = r[c] if c in r.index else None
            row["matched"] = abs(r["l0"] - FACTORIAL_TARGET_L0) <= FACTORIAL_TOLERANCE * FACTORIAL_TARGET_L0
            row.update({"replicate_sets": None, "replicate_l0_diff": None, "replicate_dead_diff": None, **twice})
            rows.append(row)
    if not rows:
        raise ValueError(f"no factorial cell at ρ = {rho:g} for seeds {list(seeds)} under {shown_path(root)}; train them with "
                         f"python -m aen_lib.results.reference spiked --study factorial --rho {rho:g} --seed <s>")
    return pd.DataFrame(rows)


def set_machine(folder: str | Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What could change a set's floating-point results besides its configs: the commits, torch versions and CPU (or
    device) models of all its invocations, each as a sorted tuple."""
    calls = read_result(Path(folder) / "provenance.json", "provenance").get("invocations", [])
    return (tuple(sorted({c.get("commit", "") for c in calls})), tuple(sorted({c.get("torch", "") for c in calls})),
            tuple(sorted({f"{c.get('cpu', '')} ({c.get('device', '')})" for c in calls})))


def replicate_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells of :func:`factorial_frame` trained twice on different machines: seed, method, the two sets and their
    absolute differences in L0 and last-window dead %. Empty when no cell was trained twice."""
    cols = ["seed", "method", "replicate_sets", "replicate_l0_diff", "replicate_dead_diff"]
    if "replicate_sets" not in frame.columns:
        return pd.DataFrame(columns=cols)
    return frame.loc[frame["replicate_sets"].notna(), cols].reset_index(drop=True)


def _contrasts(cell: dict[str, float]) -> dict[str, float]:
    l1, en, al, aen = (cell[m] for m in CELLS)
    return {"l2": 0.5 * (en + aen) - 0.5 * (l1 + al), "adaptive": 0.5 * (al + aen) - 0.5 * (l1 + en),
            "interaction": 0.5 * ((aen - al) - (en - l1))}


def factorial_effects(frame: pd.DataFrame, metrics: Sequence[str] = FACTORIAL_METRICS[1:]) -> pd.DataFrame:
    """The main effects of the ℓ2 term and of adaptive weights and their interaction, per seed and metric, from
    :func:`factorial_frame`. Only seeds with all four cells present and matched in L0 count. Columns: ``metric``,
    ``effect`` ("l2", "adaptive", "interaction"), ``seeds`` (how many), ``mean``, ``min``, ``max`` and ``per_seed``
    (a dict seed -> value). Raises ``ValueError`` when no seed is complete and matched."""
    need = {"seed", "method", "matched", *metrics}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"the factorial frame lacks {sorted(missing)}; build it with factorial_frame")
    good = [s for s, g in frame.groupby("seed") if set(g["method"]) == set(CELLS) and bool(g["matched"].all())]
    if not good:
        raise ValueError("no seed has all four cells matched in L0 "
                         f"(within {FACTORIAL_TOLERANCE:.0%} of {FACTORIAL_TARGET_L0}); see the 'matched' column")
    rows = []
    for metric in metrics:
        per = {s: _contrasts(frame[frame["seed"] == s].set_index("method")[metric].astype(float).to_dict())
               for s in good}
        for eff in EFFECTS:
            vals = {s: per[s][eff] for s in good}
            v = pd.Series(vals, dtype=float)
            rows.append({"metric": metric, "effect": eff, "seeds": len(v), "mean": float(v.mean()),
                         "min": float(v.min()), "max": float(v.max()), "per_seed": vals})
    return pd.DataFrame(rows)


def dead_per_l0(bracket: str | Path, metric: str = "dead_pct_window",
                target: float = FACTORIAL_TARGET_L0) -> pd.DataFrame:
    """How fast each method's dead % changes with L0 near the factorial's target, from a ``factorial_bracket`` set
    (three λ1 per method): the slope of ``metric`` against L0 between the two members nearest ``target`` in L0. The
    factorial's cells are matched only within a tolerance; multiplying a cell group's L0 offset by these slopes says
    how much of a main effect the offset alone could explain. Columns: ``method``, ``l0_a``, ``l0_b``, ``slope``
    (points per unit of L0)."""
    runs = set_frames([Path(bracket)])[0]
    if metric not in runs.columns:
        raise ValueError(f"the set {bracket} has no {metric!r}; choose one of its record columns")
    rows = []
    for method, g in runs.groupby("method"):
        if len(g) < 2:
            raise ValueError(f"{method} has {len(g)} member(s) in {bracket}; a slope needs two λ1")
        near = g.assign(dist=(g["l0"] - target).abs()).nsmallest(2, "dist").sort_values("l0")
        (la, ya), (lb, yb) = near[["l0", metric]].to_numpy(dtype=float)
        if abs(lb - la) < 1e-9:
            raise ValueError(f"{method}'s two members nearest L0 {target} have the same L0; no slope")
        rows.append({"method": method, "l0_a": la, "l0_b": lb, "slope": (yb - ya) / (lb - la)})
    return pd.DataFrame(rows)


def factorial_summary(frame: pd.DataFrame, columns: Sequence[str] = ("l1", "l0", "dead_pct_window", "eval_dead_pct",
                                                                     "ev", "shrinkage", "support_f1")) -> pd.DataFrame:
    """One row per cell of :func:`factorial_frame`: the seeds it has and, for each of ``columns``, the mean over
    seeds and the range as ``"<min>–<max>"`` text (what a table with seed ranges shows). Missing measures stay
    missing (a set without ``mechanism.json``); a column the frame lacks raises."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"factorial_summary: the frame lacks {missing}; build it with factorial_frame")
    rows = []
    for method in CELLS:
        g = frame[frame["method"] == method]
        if g.empty:
            continue
        row: dict[str, Any] = {"method": method, "seeds": int(g["seed"].nunique())}
        for c in columns:
            v = pd.to_numeric(g[c], errors="coerce").dropna()
            row[c] = float(v.mean()) if len(v) else None
            row[f"{c} range"] = f"{v.min():.3g}–{v.max():.3g}" if len(v) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows)
