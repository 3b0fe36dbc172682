"""Results store: one JSON record per trained SAE, a DataFrame view, matched-L0 selection and Pareto frontiers.

A *record* is a plain dict, written as one JSON file under a chapter's results folder
(:attr:`aen_lib.book.notebook.ChapterContext.results`)::

    {"record_version": 1, "method": "aen", "label": "aen λ1=0.005 ...", "variant": "aen-3f9c0e1a2b", "seed": 0,
     "sae_config": {...SAEConfig...}, "train_config": {...TrainConfig...}, "data": {"rho": 0.3, ...},
     "final": {"l0": 15.9, "dead_pct": 1.4, "ev": 0.61, ...}, "history": [{"step": 500, ...}, ...],
     "extra": {...anything else, e.g. recovery metrics...}}

``variant`` identifies the hyperparameters *without* the seed, so the seeds of one variant can be averaged.

The paper's comparisons (book: paper facts, language-model protocols) pick, per method, the variant whose **seed-averaged** L0 is closest to a
target and report each metric as mean [min, max] over seeds: :func:`closest_to_target`. Its figures draw Pareto
frontiers of a metric against L0 (book: paper facts, synthetic protocol): :func:`pareto_frontier`, with the better direction of each metric
in :data:`METRIC_DIRECTIONS`.

Every result file the project stores (this record; a reference set's ``provenance.json``, ``mechanism.json``,
``evaluation.json``, ``features.json``, ``harvest_<split>.json`` and its invocation ledger; a chapter's
``summary.json``, ``claims.json``, ``saes/manifest.json`` and other JSON results, through
:func:`aen_lib.book.notebook.save_json`; ``aen-train``'s ``final.json``; a distributed run's ``result.json``) is written
by :func:`write_result` and read by :func:`read_result`: one format, versioned by one field (``record_version``,
:data:`RECORD_VERSION`), each kind with the keys it must hold (:data:`RESULT_KINDS`). A reader gets a one-line error
that names the file, what is wrong and what to do, never a ``KeyError`` three calls later.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..sae.architectures import architecture_names, architecture_spec
from ..sae.config import SAEConfig
from ..store import RECORD_VERSION, RESULT_KINDS, UNVERSIONED_BEFORE, check_result, read_result, write_result

__all__ = [
    "RECORD_VERSION",
    "RESULT_KINDS",
    "UNVERSIONED_BEFORE",
    "write_result",
    "read_result",
    "METRIC_DIRECTIONS",
    "variant_id",
    "member_record",
    "save_record",
    "load_records",
    "records_frame",
    "save_sweep",
    "closest_to_target",
    "pareto_frontier",
    "pareto_front",
    "aggregate_seeds",
    "figure2_findings",
    "auxk_comparison",
]

METRIC_DIRECTIONS: dict[str, str] = {
    "l0": "min",
    "dead_pct": "min",
    "dead_pct_tokens": "min",
    "mse": "min",
    "mse_metric": "min",
    "total": "min",
    "ev": "max",
    "shrinkage": "max",
    "precision": "max",
    "recall": "max",
    "f1": "max",
    "jaccard": "max",
    "dict_cos": "max",
    "dictionary_error": "min",
    "normalised_entropy": "max",
}
"""Which way is better for each metric: ``"min"`` (fewer dead latents, lower L0, lower error) or ``"max"``
(explained variance, recovery scores). :func:`pareto_frontier` uses it unless told otherwise."""

_RESERVED = ("method", "label", "variant", "seed")


def _label(architecture: str) -> str:
    return architecture_spec(architecture).label


# ----------------------------------------------------------------------------------------------------------------
# Pareto fronts and seed aggregation (paper Figures 2-3), drawn by aen_lib.book.plotting
# ----------------------------------------------------------------------------------------------------------------
def pareto_front(x: Sequence[float], y: Sequence[float], *, maximize_y: bool) -> np.ndarray:
    """Indices of the non-dominated points, sorted by increasing ``x``.

    Smaller ``x`` (L0) is better; larger ``y`` is better when ``maximize_y`` (explained variance), smaller otherwise
    (dead %). A point is dominated when another is at least as good on both axes and strictly better on one.
    NaN points are ignored.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {xs.shape} and {ys.shape}")
    score = ys if maximize_y else -ys  # larger score is better
    finite = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    order = finite[np.lexsort((-score[finite], xs[finite]))]  # by x, then best score first
    keep: list[int] = []
    best = -math.inf
    for i in order:
        if score[i] > best:
            keep.append(int(i))
            best = score[i]
    return np.asarray(keep, dtype=int)


def aggregate_seeds(
    runs: Iterable[Mapping[str, Any]], metrics: Sequence[str], group_by: Sequence[str] = ("architecture", "variant")
) -> list[dict[str, Any]]:
    """Group runs that differ only by seed and report mean, min and max of each metric.

    Each run is a mapping with the ``group_by`` keys (missing keys count as ``None``) and the ``metrics``. Returns one
    dict per group with the group keys, ``n`` (number of runs) and ``<metric>``, ``<metric>_min``, ``<metric>_max``.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        for m in metrics:
            if m not in run:
                raise ValueError(f"run {dict(run)!r} lacks the metric {m!r}")
        groups[tuple(run.get(k) for k in group_by)].append(run)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(group_by, key))
        row["n"] = len(members)
        for m in metrics:
            vals = np.asarray([float(r[m]) for r in members])
            row[m], row[f"{m}_min"], row[f"{m}_max"] = float(vals.mean()), float(vals.min()), float(vals.max())
        out.append(row)
    return out


def variant_id(cfg: SAEConfig) -> str:
    """A short stable id of a configuration without its seed: ``<architecture>-<10 hex digits>``."""
    d = cfg.to_dict()
    d.pop("seed")
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.architecture}-{digest}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _jsonable(obj.to_dict())
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays, torch tensors
        return obj.tolist() if not hasattr(obj, "detach") else obj.detach().cpu().tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a value of type {type(obj).__name__} in a results record: {obj!r}")


def member_record(
    cfg: SAEConfig,
    final: Mapping[str, float],
    history: Sequence[Mapping[str, float]] = (),
    *,
    train_config: Any = None,
    data: Mapping[str, Any] | Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one trained SAE (config, seed, data config, final metrics, metric history, extras).

    ``train_config`` and ``data`` may be config objects with ``to_dict()`` (TrainConfig, SpikedDictionaryConfig) or
    dicts. ``extra`` holds anything else worth keeping (recovery metrics, wall time).
    """
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
    if not isinstance(final, Mapping):
        raise TypeError(f"final must be a mapping of metric -> value, got {type(final).__name__}")
    return {
        "record_version": RECORD_VERSION,
        "method": cfg.architecture,
        "label": cfg.label,
        "variant": variant_id(cfg),
        "seed": cfg.seed,
        "sae_config": cfg.to_dict(),
        "train_config": _jsonable(train_config) if train_config is not None else None,
        "data": _jsonable(data) if data is not None else None,
        "final": _jsonable(dict(final)),
        "history": _jsonable(list(history)),
        "extra": _jsonable(dict(extra or {})),
    }


def save_record(rec: Mapping[str, Any], folder: str | Path, name: str | None = None) -> Path:
    """Write ``rec`` atomically as ``folder/<name>.json`` (default name ``<variant>_seed<seed>``); a chapter's rerun
    replaces its own record."""
    rec = check_result(dict(rec), "sae", "save_record")
    name = name or f"{rec['variant']}_seed{rec['seed']}"
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"record name must be a plain file stem, got {name!r}")
    return write_result(Path(folder) / f"{name}.json", "sae", rec, overwrite=True)


def load_records(folder: str | Path, pattern: str = "**/*.json") -> list[dict[str, Any]]:
    """Every record under ``folder`` (recursively, sorted by path); each gets ``"path"`` (relative to folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    out = []
    for path in sorted(folder.glob(pattern)):
        rec = read_result(path, "sae")
        rec["path"] = str(path.relative_to(folder))
        out.append(rec)
    return out


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: ``method, label, variant, seed``, every SAEConfig field, every data field (prefixed
    ``data_``), every final metric, and every scalar extra. Histories stay in the records."""
    rows = []
    for rec in records:
        rec = check_result(dict(rec), "sae", "records_frame")
        row: dict[str, Any] = {k: rec[k] for k in ("method", "label", "variant", "seed")}
        # a config field that a final metric also names (l0: JumpReLU's λ0 against the measured L0; l1, l2: the
        # penalties against their loss terms) is kept as config_<name>, and the metric keeps the plain name
        row.update({(f"config_{k}" if k in rec["final"] else k): v for k, v in rec["sae_config"].items()
                    if k not in ("architecture", "seed")})
        for k, v in (rec.get("data") or {}).items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[f"data_{k}"] = v
        for k, v in rec["final"].items():
            if k in _RESERVED:
                raise ValueError(f"final metric name {k!r} clashes with a record column")
            row[k] = v
        for k, v in (rec.get("extra") or {}).items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        if "path" in rec:
            row["path"] = rec["path"]
        rows.append(row)
    if not rows:
        raise ValueError("records_frame got no records")
    return pd.DataFrame(rows)


def save_sweep(
    result: Any,
    folder: str | Path,
    *,
    train_config: Any = None,
    data: Mapping[str, Any] | Any = None,
    extras: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """One record per member of an :class:`aen_lib.training.sweep.SweepResult` into ``folder``; ``extras[i]`` goes with
    member i."""
    members = result.members
    if extras is not None and len(extras) != len(members):
        raise ValueError(f"extras has {len(extras)} entries but the sweep has {len(members)} members")
    paths = []
    for i, m in enumerate(members):
        rec = member_record(m.cfg, m.final, m.history, train_config=train_config, data=data,
                            extra={**({"skipped_steps": m.skipped_steps}), **(extras[i] if extras else {})})
        paths.append(save_record(rec, folder))
    return paths


def _require(df: pd.DataFrame, cols: Iterable[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(df.columns)}")


def closest_to_target(
    df: pd.DataFrame,
    target: float,
    metrics: Sequence[str] = ("dead_pct", "ev"),
    *,
    x: str = "l0",
    by: Sequence[str] = ("method",),
    variant: str = "variant",
    seed: str = "seed",
) -> pd.DataFrame:
    """Per group (``by``, e.g. method, or ρ and method), the variant whose seed-averaged ``x`` is closest to
    ``target`` (book: paper facts, open questions), with ``x`` and each metric as mean, min and max over its seeds.

    Returns one row per group: the ``by`` columns, ``variant``, ``label`` (if present), ``n_seeds``,
    ``<col>``, ``<col>_min``, ``<col>_max`` for ``x`` and every metric, and ``distance`` = |mean x − target|.
    Ties in distance go to the variant listed first.
    """
    by = list(by)
    _require(df, [*by, variant, seed, x, *metrics])
    if not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise ValueError(f"target={target!r} must be a finite number")
    cols = [x, *[m for m in metrics if m != x]]
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        stats = g.groupby(variant, sort=False)[cols].agg(["mean", "min", "max"])
        n = g.groupby(variant, sort=False)[seed].nunique()
        dist = (stats[(x, "mean")] - target).abs()
        if dist.isna().all():
            continue
        best = dist.idxmin()
        row: dict[str, Any] = dict(zip(by, key))
        row[variant] = best
        if "label" in g.columns:
            row["label"] = g.loc[g[variant] == best, "label"].iloc[0]
        row["n_seeds"] = int(n[best])
        for c in cols:
            row[c], row[f"{c}_min"], row[f"{c}_max"] = (float(stats.loc[best, (c, s)]) for s in ("mean", "min", "max"))
        row["distance"] = float(dist[best])
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_frontier(
    df: pd.DataFrame,
    y: str,
    *,
    x: str = "l0",
    y_direction: str | None = None,
    x_direction: str = "min",
) -> pd.DataFrame:
    """The non-dominated rows of ``df`` for (``x``, ``y``), sorted by ``x`` (paper Figures 2–3).

    A row is dominated when another is at least as good on both axes and strictly better on one. The better direction
    of ``y`` comes from :data:`METRIC_DIRECTIONS` unless ``y_direction`` (``"min"`` or ``"max"``) is given; smaller
    ``x`` (L0: sparser) is better unless ``x_direction="max"``. NaN rows are ignored. Call it per method (and per
    seed-averaged variant table) to get one frontier per method.
    """
    _require(df, [x, y])
    direction = y_direction or METRIC_DIRECTIONS.get(y)
    if direction not in ("min", "max"):
        raise ValueError(
            f"y_direction for {y!r} must be 'min' or 'max' (no default in METRIC_DIRECTIONS), got {y_direction!r}"
        )
    if x_direction not in ("min", "max"):
        raise ValueError(f"x_direction must be 'min' or 'max', got {x_direction!r}")
    xs = df[x].to_numpy(dtype=float)
    xs = xs if x_direction == "min" else -xs
    idx = pareto_front(xs, df[y].to_numpy(dtype=float), maximize_y=direction == "max")
    out = df.iloc[idx]
    return out if x_direction == "min" else out.iloc[::-1]


FIGURE2_L0_ONLY = ("adaptive_lasso",)
"""The paper's methods that its Figure-2 statements judge on their L0 alone (adaptive lasso has no Pareto curve)."""


class _Figure2Core(Sequence[str]):
    """The paper's architectures (``in_paper`` in their specs) but :data:`FIGURE2_L0_ONLY`, read from the registry
    each time it is used (so an architecture registered later with ``in_paper=True`` joins them): the baselines in
    legend order, then AEN, the paper's own method, which every comparison is against."""

    def _names(self) -> tuple[str, ...]:
        names = [a for a in architecture_names(in_paper=True) if a not in FIGURE2_L0_ONLY]
        return tuple(sorted(names, key=lambda a: a == "aen"))  # stable: the baselines keep the legend order

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


FIGURE2_CORE: Sequence[str] = _Figure2Core()
"""The methods whose dead % the paper's Figure-2 statements compare: today ReLU + ℓ1, elastic net, TopK and AEN."""


def figure2_findings(df: pd.DataFrame, *, k: int, target_l0: float, ev_spread: float = 0.1,
                     dead_margin: float = 1.0) -> pd.DataFrame:
    """The statements about Figure 2 (book: paper facts, synthetic protocol), each measured on ``df``: 1-4 are the
    paper's; 5 and 6 are the book's own questions, since the paper's text for them is unreadable.

    ``df``: one row per trained SAE with ``rho, method, variant, seed, l0, dead_pct, ev`` (e.g. :func:`records_frame`
    with ``data_rho`` renamed ``rho``). Each method is represented at each ρ by its variant whose seed-mean L0 is
    closest to ``target_l0`` (:func:`closest_to_target`). Statements that need a method or a ρ the frame lacks are
    left out. Returns ``statement``, ``measured here`` and ``consistent`` (bool), one row per statement:

    1. at ρ = 0 TopK starves more than AEN: TopK's dead % exceeds AEN's by more than ``dead_margin`` points;
    2. at ρ = 0 AEN has no dead latents: its dead % is below ``dead_margin`` (the paper says both at once; apart,
       a frame can bear out the comparison and not the absence);
    3. at ρ = 0 all methods reconstruct about equally well: their EVs span at most ``ev_spread``;
    4. adaptive lasso concentrates near the true sparsity: every variant's seed-mean L0 lies in [k/2, 2k] (judged
       only with at least two variants: a single λ1 says nothing about how L0 moves along a sweep);
    5. (largest ρ > 0) starvation grows with ρ for every method of :data:`FIGURE2_CORE` present: each one's dead %
       rises by more than ``dead_margin`` points;
    6. (same) it grows least for AEN: AEN's rise is smaller than every other method's by more than ``dead_margin``
       points, the margin of statement 1 (the paper's own AEN dead % on Pythia-70M spans 0.7–2.1 over three seeds,
       so a smaller gap between single runs is no evidence).
    """
    _require(df, ["rho", "method", "variant", "seed", "l0", "dead_pct", "ev"])
    matched = closest_to_target(df, target_l0, metrics=["dead_pct", "ev"], by=["rho", "method"]).set_index(
        ["rho", "method"])

    def at(rho: float, method: str, col: str = "dead_pct") -> float:
        return float(matched.loc[(rho, method), col])

    rows = []
    core = [a for a in FIGURE2_CORE if (0.0, a) in matched.index]
    if {"topk", "aen"} <= set(core):
        topk, aen = at(0.0, "topk"), at(0.0, "aen")
        measured = f"dead % at L0 ≈ {target_l0:g}: TopK {topk:.1f}, AEN {aen:.1f}"
        rows.append({"statement": "ρ = 0: TopK has more dead latents than AEN", "measured here": measured,
                     "consistent": bool(topk > aen + dead_margin)})
        rows.append({"statement": "ρ = 0: AEN has no dead latents", "measured here": measured,
                     "consistent": bool(aen < dead_margin)})
    if len(core) >= 2:
        ev0 = {a: at(0.0, a, "ev") for a in core}
        rows.append({"statement": "ρ = 0: all methods reconstruct about equally well",
                     "measured here": f"EV at L0 ≈ {target_l0:g}: " + ", ".join(f"{_label(a)} {v:.2f}" for a, v in ev0.items()),
                     "consistent": bool(max(ev0.values()) - min(ev0.values()) <= ev_spread)})
    zero = df[df["rho"] == 0.0]
    if zero[zero["method"] == "adaptive_lasso"]["variant"].nunique() >= 2:  # concentration needs a sweep
        ada = zero[zero["method"] == "adaptive_lasso"].groupby("variant")["l0"].mean()
        rows.append({"statement": "adaptive lasso concentrates near the true sparsity (no Pareto curve)",
                     "measured here": f"seed-mean L0 of its variants {ada.min():.1f}–{ada.max():.1f}, k = {k}",
                     "consistent": bool(ada.min() >= k / 2 and ada.max() <= 2 * k)})
    rho_hi = float(df["rho"].max())
    grown = [a for a in core if (rho_hi, a) in matched.index]
    if rho_hi > 0 and grown:
        rise = {a: at(rho_hi, a) - at(0.0, a) for a in grown}
        rows.append({"statement": "starvation grows with ρ for every method",
                     "measured here": f"dead % at ρ = 0 → {rho_hi:g} (matched L0 at {rho_hi:g}): " + ", ".join(
                         f"{_label(a)} {at(0.0, a):.1f} → {at(rho_hi, a):.1f} ({at(rho_hi, a, 'l0'):.1f})"
                         for a in grown),
                     "consistent": bool(all(v > dead_margin for v in rise.values()))})
        if "aen" in rise and len(rise) >= 2:
            rows.append({"statement": "it grows fastest for TopK and vanilla/EN, slowest for AEN",
                         "measured here": "rise in dead % points: " + ", ".join(
                             f"{_label(a)} {v:+.1f}" for a, v in rise.items()),
                         "consistent": bool(all(rise["aen"] < v - dead_margin for a, v in rise.items() if a != "aen"))})
    return pd.DataFrame(rows, columns=["statement", "measured here", "consistent"])


def nearest_in_l0(df: pd.DataFrame, method: str, other: str, *, by: Sequence[str] = ("rho",),
                  max_ratio: float = 1.5) -> pd.DataFrame:
    """Every SAE of ``method`` paired with the SAE of ``other`` whose L0 is nearest, within each ``by`` group (e.g. one
    ρ), kept when the two L0 are within a factor ``max_ratio`` of each other. Matching at one target L0 picks one
    variant per method; this finds the other places where a grid has the two methods at comparable sparsity.

    Returns one row per pair: the ``by`` columns, then every other column of each side with the suffix ``_<method>``
    or ``_<other>`` (e.g. ``l0_aen``, ``dead_pct_topk``)."""
    by = list(by)
    _require(df, [*by, "method", "l0"])
    if not max_ratio >= 1:
        raise ValueError(f"max_ratio={max_ratio!r} must be at least 1 (a factor between the two L0)")
    rows = []
    for key, g in df.groupby(by, sort=True):
        a_rows, b_rows = g[g["method"] == method], g[g["method"] == other]
        if b_rows.empty:
            continue
        for _, a in a_rows.iterrows():
            b = b_rows.loc[(b_rows["l0"] - a["l0"]).abs().idxmin()]
            if a["l0"] > 0 and 1 / max_ratio <= b["l0"] / a["l0"] <= max_ratio:
                rest = [c for c in g.columns if c not in by]
                rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                             **a[rest].add_suffix(f"_{method}").to_dict(), **b[rest].add_suffix(f"_{other}").to_dict()})
    return pd.DataFrame(rows)


def auxk_comparison(df: pd.DataFrame, metrics: Sequence[str] = ("dead_pct", "ev")) -> pd.DataFrame:
    """TopK against TopK+AuxK at the same ρ and k (seed means): one row per (ρ, k) that both methods trained, with
    ``<metric>_topk``, ``<metric>_auxk`` and ``<metric>_change`` (AuxK minus TopK) for each metric."""
    _require(df, ["rho", "method", "k", *metrics])
    pair = df[df["method"].isin(["topk", "topk_auxk"])]
    means = pair.groupby(["rho", "k", "method"])[list(metrics)].mean().unstack("method")
    rows = []
    for (rho, kk), r in means.iterrows():
        if r[[(m, "topk") for m in metrics] + [(m, "topk_auxk") for m in metrics]].isna().any():
            continue
        row: dict[str, Any] = {"rho": rho, "k": int(kk)}
        for m in metrics:
            row[f"{m}_topk"], row[f"{m}_auxk"] = float(r[(m, "topk")]), float(r[(m, "topk_auxk")])
            row[f"{m}_change"] = row[f"{m}_auxk"] - row[f"{m}_topk"]
        rows.append(row)
    return pd.DataFrame(rows)


def l1_for_l0(df: pd.DataFrame, method: str, target_l0: float, *, slope_from: str | None = None) -> float:
    """A guess of the λ1 at which ``method`` trains to ``target_l0``, from the runs of ``df`` (one ρ, one protocol):
    log L0 interpolated linearly in log λ1 between the two runs whose L0 bracket the target (between the two nearest
    when none do). With a single run of ``method``, the log-log slope of ``slope_from``'s runs is borrowed. A guess
    for calibration runs, not a result: L0 is not linear in log λ1, so the guess must be trained and checked.
    Columns: ``method``, ``config_l1`` (as :func:`records_frame` names λ1) and ``l0``."""
    import math

    _require(df, ["method", "config_l1", "l0"])
    if not target_l0 > 0:
        raise ValueError(f"target_l0={target_l0!r} must be > 0")
    runs = df[(df["method"] == method) & (df["l0"] > 0)].groupby("config_l1")["l0"].mean().sort_index()
    if runs.empty:
        raise ValueError(f"no {method} run with L0 > 0 in the frame; methods: {sorted(df['method'].unique())}")
    logs = [(math.log(l1), math.log(l0)) for l1, l0 in runs.items()]
    t = math.log(target_l0)
    if len(logs) == 1:
        if slope_from is None:
            raise ValueError(f"{method} has a single run (λ1 {runs.index[0]:g}); pass slope_from= a method with two")
        ref = df[(df["method"] == slope_from) & (df["l0"] > 0)].groupby("config_l1")["l0"].mean().sort_index()
        if len(ref) < 2:
            raise ValueError(f"slope_from={slope_from!r} needs at least two runs with L0 > 0")
        a, b = (math.log(ref.index[0]), math.log(ref.iloc[0])), (math.log(ref.index[-1]), math.log(ref.iloc[-1]))
        slope = (b[1] - a[1]) / (b[0] - a[0])
        x0, y0 = logs[0]
        return float(math.exp(x0 + (t - y0) / slope))
    bracket = [(p, q) for p, q in zip(logs, logs[1:]) if min(p[1], q[1]) <= t <= max(p[1], q[1])]
    if bracket:
        (x1, y1), (x2, y2) = bracket[0]
    else:
        (x1, y1), (x2, y2) = sorted(logs, key=lambda xy: abs(xy[1] - t))[:2]
    if y1 == y2:
        return float(math.exp((x1 + x2) / 2))
    return float(math.exp(x1 + (t - y1) * (x2 - x1) / (y2 - y1)))
