"""What single chapters draw, kept out of their cells: runs over seeds (chapter 1), the adaptive weights of one code
(chapter 4), weights against use and the warm-up ablation (chapter 5), and the planner's table (chapter 10)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np


from .base import _frame_with, architecture_color

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


# ----------------------------------------------------------------------------------------------------------------
# Chapter figures and tables: what the chapters draw, moved here so that a chapter shows the call, not the drawing
# ----------------------------------------------------------------------------------------------------------------
def seed_range_table(table: Any, columns: Mapping[str, str], *, labels: Mapping[str, str],
                     by: str = "run") -> Any:
    """The table a chapter prints of runs over seeds: one row per run (``labels[run]``, in sorted run order), one
    column per ``columns[column] = header``, each cell the mean over seeds with ``[min, max]`` when they differ.

    ``table`` has one row per run and seed (a column ``by`` names the run). Chapter 1's summary of its SAEs.
    """
    import pandas as pd

    df = _frame_with(table, [by, *columns], "seed_range_table")
    if unlabelled := sorted(set(df[by]) - set(labels)):
        raise ValueError(f"seed_range_table: no label for the runs {unlabelled}")
    stats = df.groupby(by)[list(columns)].agg(["mean", "min", "max"])

    def spread(s: Any) -> str:
        m, lo, hi = s["mean"], s["min"], s["max"]
        return f"{m:.2f}" if lo == hi else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"

    return pd.DataFrame({header: [spread(stats.loc[r, c]) for r in stats.index] for c, header in columns.items()},
                        index=[labels[r] for r in stats.index])


def run_seed_strips_figure(table: Any, panels: Sequence[tuple[str, str, str]], *, labels: Mapping[str, str],
                           architectures: Mapping[str, str], by: str = "run") -> Figure:
    """One panel per ``(column, ylabel, title)`` of ``panels``: every seed of every run of ``table`` as a dot in the
    colour of the run's architecture (``architectures[run]``) and the mean over seeds as a black bar; the x axis names
    each run by ``labels[run]``. ``table`` has one row per run and seed. Chapter 1's seed spreads."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not panels:
        raise ValueError("run_seed_strips_figure needs at least one (column, ylabel, title) panel")
    df = _frame_with(table, [by, *(p[0] for p in panels)], "run_seed_strips_figure")
    for what, mapping in (("label", labels), ("architecture", architectures)):
        if missing := sorted(set(df[by]) - set(mapping)):
            raise ValueError(f"run_seed_strips_figure: no {what} for the runs {missing}")
    df = df.assign(label=df[by].map(labels))
    palette = {labels[r]: architecture_color(architectures[r]) for r in dict.fromkeys(df[by])}
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), squeeze=False)
    for ax, (column, ylabel, title) in zip(axes[0], panels):
        sns.stripplot(data=df, x="label", y=column, hue="label", palette=palette, size=7, jitter=0.15, legend=False,
                      ax=ax)
        sns.pointplot(data=df, x="label", y=column, color="black", errorbar=None, markers="_", linestyles="none",
                      ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def adaptive_weights_figure(weights: Sequence[float], code: Sequence[float], support: Sequence[int],
                            true_code: Sequence[float], bias: Sequence[float], closed_form: Sequence[float], *,
                            w_max: float, title: str, active: float = 1e-9) -> Figure:
    """Chapter 4's look at one known code: the adaptive weights ``weights [m]`` of the true atoms (``support [k]``)
    and of the others (log scale, ``w_max`` dotted); the adaptive elastic net's ``code [m]`` with the ``true_code
    [k]`` as crosses (an atom is active above ``active``); the ``bias [k]`` of the true codes from the solver, with
    the ``closed_form [k]`` oracle bias when the support was recovered (it only holds on the right support)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    w, h = np.asarray(weights, dtype=float), np.asarray(code, dtype=float)
    S = np.asarray(support, dtype=int)
    h_true, b, formula = (np.asarray(v, dtype=float) for v in (true_code, bias, closed_form))
    if w.ndim != 1 or w.shape != h.shape:
        raise ValueError(f"adaptive_weights_figure: weights {w.shape} and code {h.shape} must be 1-D of one length m")
    if S.ndim != 1 or not S.size or S.min() < 0 or S.max() >= w.size or len(set(S.tolist())) != S.size:
        raise ValueError(f"adaptive_weights_figure: support must hold distinct atom indices in [0, {w.size}), got {S}")
    if not h_true.shape == b.shape == formula.shape == S.shape:
        raise ValueError(f"adaptive_weights_figure: true_code {h_true.shape}, bias {b.shape} and closed_form "
                         f"{formula.shape} must each have one value per support atom ({S.size})")
    color, k = architecture_color("aen"), S.size
    on_S = np.zeros(w.size, dtype=bool)
    on_S[S] = True
    found = h > active
    right = bool(np.array_equal(found, on_S))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    frame = pd.DataFrame({"weight": w, "atom": np.where(on_S, "true atom", "other atom")})
    sns.stripplot(data=frame, x="atom", y="weight", order=["true atom", "other atom"], color=color, size=4,
                  jitter=0.25, log_scale=True, ax=axes[0])
    axes[0].axhline(w_max, color="grey", ls=":", lw=1)
    axes[0].set_xlabel("")
    axes[0].set_ylabel("adaptive weight $w_i$ (log scale)")
    axes[0].set_title("weights of the true atoms and of the others (dotted: $w_{max}$)", fontsize=10)
    axes[1].vlines(np.arange(w.size), 0, h, color=color, lw=1.5, label="AEN code")
    axes[1].plot(S, h_true, "kx", ms=7, label="true code")
    axes[1].set_xlabel("atom")
    axes[1].set_ylabel("code")
    axes[1].set_title(f"support {'recovered' if right else 'missed'}: {int(found.sum())} atoms active, "
                      f"{int((found & on_S).sum())} of {k} true", fontsize=10)
    axes[1].legend(fontsize=8)
    axes[2].bar(np.arange(k), b, color=color, alpha=0.6, label="solver")
    if right:
        axes[2].plot(np.arange(k), formula, "k_", ms=20, mew=2, label="closed form")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_xticks(np.arange(k), [str(i) for i in S.tolist()])
    axes[2].set_xlabel("true atom")
    axes[2].set_ylabel("bias $\\hat h_i - h_i$")
    axes[2].set_title("bias of the true codes", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def weights_vs_usage_figure(frequencies: Sequence[float], weights: Sequence[float], *, n_samples: int,
                            spearman: float, architecture: str = "aen") -> Figure:
    """Chapter 5: each latent's final raw adaptive weight against its firing frequency on ``n_samples`` evaluation
    samples, both on log axes; latents that never fired sit at the left edge (frequency ``0.5 / n_samples``). The
    title quotes the ``spearman`` rank correlation the chapter computed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    f, w = np.asarray(frequencies, dtype=float), np.asarray(weights, dtype=float)
    if f.ndim != 1 or f.shape != w.shape or not f.size:
        raise ValueError(f"weights_vs_usage_figure: frequencies {f.shape} and weights {w.shape} must be non-empty "
                         "1-D arrays with one value per latent")
    if np.any((f < 0) | (f > 1)) or not np.all(np.isfinite(f)) or np.any(w <= 0):
        raise ValueError("weights_vs_usage_figure: frequencies must lie in [0, 1] and weights be positive")
    if n_samples < 1:
        raise ValueError(f"weights_vs_usage_figure: n_samples must be at least 1, got {n_samples}")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.scatterplot(x=np.maximum(f, 0.5 / n_samples), y=w, color=architecture_color(architecture), s=18, ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"firing frequency on {n_samples} evaluation samples (log; never fired at the left edge)")
    ax.set_ylabel("final raw weight $w_i$ (log)")
    ax.set_title(f"Final weight against use (Spearman ρ = {spearman:.2f}); by its rule a weight falls with the "
                 "feature's activity", fontsize=9)
    return fig


def warmup_ablation_figure(runs: Mapping[str, Mapping[str, Any]], *, warmup_steps: int, share_title: str,
                           dead_ylabel: str, architecture: str = "aen") -> Figure:
    """Chapter 5's warmup ablation, one line style per run of ``runs`` (``{name: summary}``, at most four): the share
    of raw weights at ``w_max`` over training (``summary["frac_w_max_curve"]``, ``[(step, share)]``) and the dead
    share of each completed window (``summary["dead_curve"]``, ``[(step, %)]``), with the end of the hold
    (``warmup_steps``) marked."""
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    if not runs or len(runs) > len(styles):
        raise ValueError(f"warmup_ablation_figure draws 1 to {len(styles)} runs, got {len(runs)}")
    for name, r in runs.items():
        for key in ("frac_w_max_curve", "dead_curve"):
            if key not in r:
                raise ValueError(f"warmup_ablation_figure: run {name!r} has no {key!r} ([(step, value)] pairs)")
    color = architecture_color(architecture)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (name, r), ls in zip(runs.items(), styles):
        for ax, key, kw in ((axes[0], "frac_w_max_curve", {}), (axes[1], "dead_curve", {"marker": "o"})):
            points = np.asarray(r[key], dtype=float).reshape(-1, 2)
            ax.plot(points[:, 0], points[:, 1], ls, color=color, label=name, **kw)
    for ax in axes:
        ax.axvline(warmup_steps, color="grey", lw=0.8)
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("share of features whose raw weight is at $w_{max}$")
    axes[0].set_title(share_title, fontsize=10)
    axes[1].set_ylabel(dead_ylabel)
    axes[1].set_title("Dead latents with and without the warmup", fontsize=10)
    fig.tight_layout()
    return fig


PLAN_COLUMNS = ("autocast", "n_gpus", "per_gpu_batch", "memory_gib", "sae_memory_gib", "lm_memory_gib", "fits",
                "sae_tflop_per_step", "lm_tflop_per_step", "step_ms", "allreduce_ms", "hours")
"""The columns of :func:`plan_display_table`, in order."""


def plan_display_table(rows: Sequence[Mapping[str, Any]], *, decimals: int = 2) -> Any:
    """Chapter 10's planner table: the :data:`PLAN_COLUMNS` of :func:`aen_lib.training.planner.plan_table` rows,
    the precision named (``fp32``, ``bf16 autocast``) and numbers rounded to ``decimals``."""
    df = _frame_with(rows, PLAN_COLUMNS, "plan_display_table")[list(PLAN_COLUMNS)]
    if unknown := sorted(set(df["autocast"]) - {"none", "bf16"}):
        raise ValueError(f"plan_display_table: autocast must be 'none' or 'bf16', got {unknown}")
    df["autocast"] = df["autocast"].map({"none": "fp32", "bf16": "bf16 autocast"})
    return df.round(decimals)
