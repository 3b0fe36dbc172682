"""Figures for the book: one colour per architecture everywhere, and the standard panels the paper uses.

Colours come from the Okabe-Ito palette (Okabe & Ito 2008), which stays distinguishable under the common forms of
colour-vision deficiency; each architecture also has its own marker so that greyscale prints still work.

Standard panels:

* :func:`plot_pareto_panel`: a metric against L0 (dead % or explained variance), as in the paper's Figures 2-3:
  a transparent scatter of every run, seed-means with ``[min, max]`` bars, and the Pareto frontier per architecture.
* :func:`dead_ev_vs_l0_figure`: the two panels side by side.
* :func:`plot_training_curves` and :func:`plot_firing_histogram`: a metric over training steps and the distribution
  of per-latent firing frequencies (dead latents counted in their own bar).
* :func:`save_figure`: writes a figure into a chapter's results folder (``ChapterContext.results``).

Statistics with seaborn (imported lazily too), in the same architecture colours:

* :func:`architecture_palette`: the ``palette=`` argument for seaborn, one colour per architecture;
* :func:`plot_seed_spread`: every seed as a dot and the seed mean with its ``[min, max]`` range, per architecture;
* :func:`plot_firing_ecdf`: the cumulative distribution of per-latent firing frequencies, one curve per architecture;
* :func:`plot_grid_heatmap`: a metric over a grid (e.g. architecture x ρ) as an annotated heatmap.

The outlier study (the input mean and dead latents):

* :func:`outlier_at_init_figure`: latents out of reach and TopK latents dead at step 0 per ρ, b_dec at 0 or at the mean;
* :func:`twin_dead_figure`: every SAE's dead % with b_dec at 0 joined to its twin's with b_dec at the mean.

What the chapters draw, moved here so that a chapter shows the call that answers its question and not the drawing
(each takes the data it draws and returns the Figure or table):

* :func:`run_seed_strips_figure` and :func:`seed_range_table` (chapter 1): runs over seeds, as dots and as a table;
* :func:`adaptive_weights_figure` (chapter 4): weights, code and bias of one known code;
* :func:`weights_vs_usage_figure` and :func:`warmup_ablation_figure` (chapter 5): the weights against use, and the
  warmup ablation;
* :func:`plan_display_table` (chapter 10): the planner's rows as the chapter prints them.

Matplotlib is imported lazily inside the functions that draw, so importing ``aen_lib`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..palette import OKABE_ITO, TOL_OLIVE  # noqa: F401  (re-exported: the book's colours)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "factorial_figure",
    "latent_profile_figure",
    "LM_LATENT_COLUMNS",
    "lm_latents_table",
    "OKABE_ITO",
    "ARCHITECTURE_COLORS",
    "ARCHITECTURE_LABELS",
    "ARCHITECTURE_MARKERS",
    "architecture_color",
    "architecture_label",
    "plot_pareto_panel",
    "dead_ev_vs_l0_figure",
    "plot_training_curves",
    "plot_firing_histogram",
    "save_figure",
    "sae_pipeline_diagram",
    "architecture_palette",
    "plot_seed_spread",
    "plot_firing_ecdf",
    "plot_grid_heatmap",
    "outlier_at_init_figure",
    "twin_dead_figure",
    "seed_range_table",
    "run_seed_strips_figure",
    "adaptive_weights_figure",
    "weights_vs_usage_figure",
    "warmup_ablation_figure",
    "PLAN_COLUMNS",
    "plan_display_table",
]

class _SpecView(Mapping[str, str]):
    """A read-only ``{architecture: value}`` view of one field of the architecture registry
    (:data:`aen_lib.sae.architectures.SPECS`), read live, so an architecture registered later appears in it."""

    def __init__(self, field: str) -> None:
        self.field = field

    @staticmethod
    def _specs() -> Mapping[str, Any]:
        from ..sae.architectures import SPECS  # imported on first use: importing plotting stays torch-free

        return SPECS

    def __getitem__(self, name: str) -> str:
        return getattr(self._specs()[name], self.field)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs()))

    def __len__(self) -> int:
        return len(self._specs())

    def __repr__(self) -> str:
        return f"{dict(self)!r}"


ARCHITECTURE_COLORS: Mapping[str, str] = _SpecView("color")
"""The book-wide colour of every registered architecture (declared in its architecture file)."""
ARCHITECTURE_LABELS: Mapping[str, str] = _SpecView("label")
ARCHITECTURE_MARKERS: Mapping[str, str] = _SpecView("marker")


def _check_arch(architecture: str) -> None:
    if architecture not in ARCHITECTURE_COLORS:
        raise ValueError(
            f"architecture={architecture!r} has no book colour; known architectures: {sorted(ARCHITECTURE_COLORS)}"
        )


def architecture_color(architecture: str) -> str:
    """The book-wide hex colour of an architecture (``ValueError`` for an unknown name)."""
    _check_arch(architecture)
    return ARCHITECTURE_COLORS[architecture]


def architecture_label(architecture: str) -> str:
    """The display name of an architecture used in legends."""
    _check_arch(architecture)
    return ARCHITECTURE_LABELS[architecture]


def plot_pareto_panel(
    ax: Axes,
    runs: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    maximize: bool,
    x: str = "l0",
    ylabel: str | None = None,
    xlabel: str = "L0 (active latents per token)",
    logx: bool = True,
) -> list[dict[str, Any]]:
    """Draw ``metric`` against ``x`` for every architecture in ``runs`` (one colour each).

    Every run is a faint dot; runs that share ``architecture`` and ``variant`` (and differ by ``seed``) are averaged
    into a marker with ``[min, max]`` error bars on both axes; the Pareto frontier of those means is a line.
    Returns the aggregated rows that were drawn.
    """
    if not runs:
        raise ValueError("plot_pareto_panel needs at least one run")
    from ..results.records import aggregate_seeds, pareto_front  # on first use: importing plotting stays torch-free

    rows = aggregate_seeds(runs, metrics=(x, metric))
    for arch in dict.fromkeys(r["architecture"] for r in runs):
        color, label, marker = architecture_color(arch), architecture_label(arch), ARCHITECTURE_MARKERS[arch]
        mine = [r for r in runs if r["architecture"] == arch]
        ax.scatter([r[x] for r in mine], [r[metric] for r in mine], color=color, alpha=0.25, s=12, linewidths=0)
        agg = [r for r in rows if r["architecture"] == arch]
        mx = np.array([r[x] for r in agg])
        my = np.array([r[metric] for r in agg])
        xerr = np.array([[r[x] - r[f"{x}_min"] for r in agg], [r[f"{x}_max"] - r[x] for r in agg]])
        yerr = np.array([[r[metric] - r[f"{metric}_min"] for r in agg], [r[f"{metric}_max"] - r[metric] for r in agg]])
        ax.errorbar(mx, my, xerr=xerr, yerr=yerr, fmt=marker, color=color, ms=6, capsize=2, lw=1, label=label)
        front = pareto_front(mx, my, maximize_y=maximize)
        if len(front) > 1:
            ax.plot(mx[front], my[front], color=color, lw=1.5, alpha=0.9)
    if logx:
        _log_axis_plain_ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or metric)
    ax.grid(True, alpha=0.3)
    return rows


def _log_axis_plain_ticks(axis: Any) -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k written as plain numbers (2, 5, 10, 20), no crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def dead_ev_vs_l0_figure(
    runs: Sequence[Mapping[str, Any]],
    *,
    dead: str = "dead_pct",
    ev: str = "explained_variance",
    x: str = "l0",
    title: str | None = None,
) -> Figure:
    """The paper's two-panel figure: dead latents (%) vs L0 (left) and explained variance vs L0 (right)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    plot_pareto_panel(left, runs, dead, maximize=False, x=x, ylabel="dead latents (%)")
    plot_pareto_panel(right, runs, ev, maximize=True, x=x, ylabel="explained variance")
    left.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Training curves and firing frequencies
# ----------------------------------------------------------------------------------------------------------------
def plot_training_curves(
    ax: Axes,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | Sequence[Sequence[float]]]],
    *,
    ylabel: str,
    xlabel: str = "training step",
) -> None:
    """One line per architecture: ``curves[architecture] = (steps [T], values)``.

    ``values`` is either ``[T]`` (one run) or ``[n_seeds, T]``: then the line is the mean over seeds and a shaded
    band spans the ``[min, max]`` over seeds.
    """
    if not curves:
        raise ValueError("plot_training_curves needs at least one curve")
    for arch, (steps, values) in curves.items():
        color = architecture_color(arch)
        v = np.asarray(values, dtype=float)
        v2 = v[None, :] if v.ndim == 1 else v
        if v2.ndim != 2 or v2.shape[1] != len(steps):
            raise ValueError(f"curve {arch!r}: {len(steps)} steps but values of shape {v.shape}")
        n = v2.shape[0]
        label = architecture_label(arch) + (f" (mean, [min, max] of {n} seeds)" if n > 1 else "")
        ax.plot(steps, v2.mean(axis=0), color=color, marker=ARCHITECTURE_MARKERS[arch], ms=3, lw=1.5, label=label)
        if n > 1:
            ax.fill_between(steps, v2.min(axis=0), v2.max(axis=0), color=color, alpha=0.2, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8)


def plot_firing_histogram(
    ax: Axes,
    frequencies: Mapping[str, Sequence[float]],
    *,
    bins: int = 30,
    floor: float | None = None,
) -> dict[str, int]:
    """Histogram of per-latent firing frequencies (fraction of inputs on which each latent is non-zero), log x-axis.

    Latents that never fired (frequency 0) cannot sit on a log axis: they are counted in a separate bar at the left
    edge, at ``floor`` (default: a decade below the smallest positive frequency). Returns the dead count per
    architecture.
    """
    if not frequencies:
        raise ValueError("plot_firing_histogram needs at least one architecture")
    arrays = {a: np.asarray(f, dtype=float) for a, f in frequencies.items()}
    for arch, f in arrays.items():
        if f.ndim != 1 or np.any((f < 0) | (f > 1)) or not np.all(np.isfinite(f)):
            raise ValueError(f"frequencies[{arch!r}] must be a 1-D array of values in [0, 1]")
    positive = np.concatenate([f[f > 0] for f in arrays.values()])
    lo = float(positive.min()) if positive.size else 1e-4
    floor = floor if floor is not None else lo / 10
    edges = np.logspace(math.log10(lo), 0.0, bins + 1)
    dead: dict[str, int] = {}
    for arch, f in arrays.items():
        color = architecture_color(arch)
        dead[arch] = int((f == 0).sum())
        ax.hist(f[f > 0], bins=edges, histtype="step", lw=1.8, color=color,
                label=f"{architecture_label(arch)} ({dead[arch]} never fired)")
        if dead[arch]:
            ax.bar(floor, dead[arch], width=floor * 0.6, color=color, alpha=0.6)
    ax.set_xscale("log")
    ax.axvline(lo / math.sqrt(10), color="grey", lw=0.8, ls=":")
    ax.set_xlabel("firing frequency (fraction of inputs, log scale; left bar = never fired)")
    ax.set_ylabel("number of latents")
    ax.legend(frameon=False, fontsize=8)
    return dead


def save_figure(
    fig: Figure, folder: str | Path, name: str, *, formats: Sequence[str] = ("png",), dpi: int = 150
) -> list[Path]:
    """Save ``fig`` as ``<folder>/<name>.<fmt>`` for each format and return the paths.

    ``folder`` is the chapter's results folder (:attr:`aen_lib.book.notebook.ChapterContext.results`); it is created.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        if fmt not in ("png", "pdf", "svg"):
            raise ValueError(f"figure format {fmt!r} is not one of 'png', 'pdf', 'svg'")
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def sae_pipeline_diagram() -> Figure:
    """The SAE evaluation pipeline of the paper's Figure 1, drawn with boxes and arrows.

    Top row (clean run): tokens, the frozen LM up to layer M, activations X_M, the rest of the LM, logits X_F.
    Bottom row (patched run): X_M goes through the SAE encoder to the sparse code h(X_M), the decoder gives X̂_M,
    which replaces X_M; the frozen LM resumes and gives X̂_F. Fidelity is the divergence between X_F and X̂_F.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 3.6)
    ax.axis("off")
    frozen, sae_c, data_c = "#DDDDDD", OKABE_ITO["vermillion"], OKABE_ITO["sky_blue"]

    def box(x: float, y: float, w: float, text: str, color: str, alpha: float = 1.0) -> tuple[float, float, float]:
        ax.add_patch(FancyBboxPatch((x, y - 0.32), w, 0.64, boxstyle="round,pad=0.05", fc=color, ec="black",
                                    lw=0.8, alpha=alpha))
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=9)
        return x, y, w

    def arrow(x0: float, y0: float, x1: float, y1: float, style: str = "-|>", ls: str = "-") -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=12, lw=1.2, ls=ls,
                                     color="black"))

    top, bottom = 2.9, 1.2
    box(0.1, top, 1.1, "tokens", "white")
    box(1.6, top, 1.9, "frozen LM\nlayers 1..M", frozen)
    box(3.9, top, 1.0, "$X_M$", data_c, 0.6)
    box(6.9, top, 1.9, "frozen LM\nlayers M+1..F", frozen)
    box(9.2, top, 1.6, "logits $X_F$", data_c, 0.6)
    arrow(1.2, top, 1.6, top)
    arrow(3.5, top, 3.9, top)
    arrow(4.9, top, 6.9, top)
    arrow(8.8, top, 9.2, top)

    box(1.6, bottom, 1.9, "SAE encoder\nReLU / TopK", sae_c, 0.35)
    box(3.9, bottom, 1.3, "sparse code\n$h(X_M)$", sae_c, 0.7)
    box(5.6, bottom, 1.9, "SAE decoder\n$\\hat X_M = D\\,h + b$", sae_c, 0.35)
    box(9.2, bottom, 1.6, "logits $\\hat X_F$", data_c, 0.6)
    arrow(4.4, top - 0.36, 2.55, bottom + 0.36)
    arrow(3.5, bottom, 3.9, bottom)
    arrow(5.2, bottom, 5.6, bottom)
    arrow(7.5, bottom + 0.2, 7.85, top - 0.36)
    ax.text(7.0, 2.05, "$\\hat X_M$ replaces $X_M$", fontsize=8, ha="right", style="italic")
    arrow(8.8, top - 0.36, 9.6, bottom + 0.36, ls="--")
    arrow(10.0, top - 0.36, 10.0, bottom + 0.36, style="<|-|>")
    ax.text(10.1, 2.05, "KL / CE", fontsize=9, ha="left", va="center")
    ax.text(0.1, 0.25, "Grey: frozen language model. Orange: the SAE, trained to reconstruct $X_M$ with a sparse code. "
            "Fidelity: divergence between $X_F$ and $\\hat X_F$.", fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Statistics with seaborn
# ----------------------------------------------------------------------------------------------------------------
def architecture_palette(architectures: Iterable[str]) -> dict[str, str]:
    """``{architecture: colour}`` for seaborn's ``palette=`` (the book-wide colours; ``ValueError`` if unknown)."""
    return {a: architecture_color(a) for a in dict.fromkeys(architectures)}


def _architecture_order(values: Iterable[str]) -> list[str]:
    present = set(values)
    return [a for a in ARCHITECTURE_COLORS if a in present]


def plot_seed_spread(
    ax: Axes,
    runs: Any,
    y: str,
    *,
    x: str = "architecture",
    hue: str = "architecture",
    ylabel: str | None = None,
    xlabel: str | None = None,
) -> Any:
    """Every run as a dot (one per seed) and the mean over seeds with a ``[min, max]`` bar, in architecture colours.

    ``runs`` is a DataFrame (or a list of dicts) with columns ``x``, ``hue`` (architecture names) and ``y``. With
    ``x == hue`` there is one column per architecture; with another ``x`` (e.g. ``rho``) the architectures are dodged
    side by side at each ``x``. Returns the DataFrame drawn.
    """
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(runs)
    for col in {x, hue, y}:
        if col not in df.columns:
            raise ValueError(f"plot_seed_spread: runs lack the column {col!r}; they have {sorted(df.columns)}")
    if df.empty:
        raise ValueError("plot_seed_spread needs at least one run")
    hue_order = _architecture_order(df[hue])
    palette = architecture_palette(hue_order)
    order = hue_order if x == hue else sorted(df[x].unique())
    dodge = x != hue
    sns.stripplot(data=df, x=x, y=y, hue=hue, order=order, hue_order=hue_order, palette=palette, dodge=dodge,
                  alpha=0.45, size=4, jitter=0.15, legend=False, ax=ax)
    sns.pointplot(data=df, x=x, y=y, hue=hue, order=order, hue_order=hue_order, palette=palette,
                  dodge=0.55 if dodge else False, errorbar=("pi", 100), estimator="mean", markers="D",
                  linestyles="none", capsize=0.1, err_kws={"linewidth": 1.2}, ax=ax)
    if x == hue:
        ax.set_xticks(range(len(order)), [architecture_label(a) for a in order], rotation=20, ha="right")
        leg = ax.get_legend()
        if leg is not None:
            leg.remove()
    else:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, [architecture_label(lab) if lab in ARCHITECTURE_COLORS else lab for lab in labels],
                  frameon=False, fontsize=8)
    ax.set_ylabel(ylabel or y)
    ax.set_xlabel(xlabel if xlabel is not None else ("" if x == hue else x))
    ax.grid(True, axis="y", alpha=0.3)
    return df


def plot_firing_ecdf(
    ax: Axes,
    frequencies: Mapping[str, Sequence[float]],
    *,
    mark: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """Cumulative share of latents against firing frequency (log x), one curve per architecture.

    Latents that never fired cannot sit on a log axis: each curve starts at the share of never-firing latents (stated
    in the legend). ``mark[architecture] = f`` draws a vertical line at one latent's frequency. Returns the number of
    never-firing latents per architecture.
    """
    import pandas as pd
    import seaborn as sns

    if not frequencies:
        raise ValueError("plot_firing_ecdf needs at least one architecture")
    arrays = {a: np.asarray(f, dtype=float) for a, f in frequencies.items()}
    frames, dead = [], {}
    for arch, f in arrays.items():
        architecture_color(arch)
        if f.ndim != 1 or f.size == 0 or np.any((f < 0) | (f > 1)) or not np.all(np.isfinite(f)):
            raise ValueError(f"frequencies[{arch!r}] must be a non-empty 1-D array of values in [0, 1]")
        dead[arch] = int((f == 0).sum())
        frames.append(pd.DataFrame({"frequency": f[f > 0], "architecture": arch}))
    df = pd.concat(frames, ignore_index=True)
    order = _architecture_order(arrays)
    for arch in order:
        f = arrays[arch]
        pos = np.sort(f[f > 0])
        if pos.size == 0:
            continue
        # ECDF over all latents (never-firing ones included), so the curve starts at their share
        cum = (dead[arch] + np.arange(1, pos.size + 1)) / f.size
        ax.step(pos, cum, where="post", color=architecture_color(arch), lw=1.8,
                label=f"{architecture_label(arch)} ({dead[arch]} of {f.size} never fired)")
    sns.rugplot(data=df, x="frequency", hue="architecture", palette=architecture_palette(order), height=0.03,
                alpha=0.3, legend=False, ax=ax)
    for arch, value in (mark or {}).items():
        ax.axvline(value, color=architecture_color(arch), ls="--", lw=1.2)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("firing frequency (fraction of tokens, log scale)")
    ax.set_ylabel("share of latents firing at most this often")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return dead


def plot_grid_heatmap(
    ax: Axes,
    frame: Any,
    *,
    index: str,
    columns: str,
    values: str,
    fmt: str = ".1f",
    cmap: str = "rocket_r",
    cbar_label: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Any:
    """``values`` over a grid (``index`` x ``columns``) as an annotated heatmap; returns the pivoted table.

    When ``index`` holds architecture names, rows follow the book's architecture order and carry their labels and
    colours. Each (index, column) pair must appear once: aggregate seeds before calling.
    """
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(frame)
    for col in (index, columns, values):
        if col not in df.columns:
            raise ValueError(f"plot_grid_heatmap: frame lacks the column {col!r}; it has {sorted(df.columns)}")
    if df.duplicated([index, columns]).any():
        raise ValueError(f"plot_grid_heatmap: several rows share one ({index}, {columns}) cell; aggregate them first")
    table = df.pivot(index=index, columns=columns, values=values)
    is_arch = all(str(a) in ARCHITECTURE_COLORS for a in table.index)
    if is_arch:
        table = table.loc[_architecture_order(table.index)]
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0.5, linecolor="white",
                cbar_kws={"label": cbar_label or values}, ax=ax)
    if is_arch:
        ax.set_yticks(np.arange(len(table.index)) + 0.5, [architecture_label(a) for a in table.index], rotation=0)
        for tick, arch in zip(ax.get_yticklabels(), table.index):
            tick.set_color(architecture_color(arch))
    ax.set_ylabel("")
    ax.set_xlabel(columns)
    return table


def outlier_at_init_figure(table: Any, *, k: int = 32) -> Figure:
    """Two panels over ρ from :func:`aen_lib.results.reference.outlier_at_init`: the % of latents out of reach at step 0 and
    the % of TopK-``k`` latents never among the k largest at step 0, each with b_dec at 0 (filled) and at the data
    mean (hatched); the outlier severity is written above each ρ."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(table)
    need = ["rho", "outlier_severity", "out_of_reach_pct", "topk_dead_pct", "out_of_reach_pct_at_mean",
            "topk_dead_pct_at_mean"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"outlier_at_init_figure: the table lacks {missing} (pass aen_lib.results.reference.outlier_at_init)")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    xs = np.arange(len(df))
    for ax, col, title in ((axes[0], "out_of_reach_pct", "out of reach (pre-activation ≤ 0 on every sample)"),
                           (axes[1], "topk_dead_pct", f"TopK k={k}: never among the k largest")):
        ax.bar(xs - 0.2, df[col], 0.4, color=OKABE_ITO["vermillion"], label="b_dec = 0 (paper)")
        ax.bar(xs + 0.2, df[f"{col}_at_mean"], 0.4, color="white", edgecolor=OKABE_ITO["blue"], hatch="//",
               label="b_dec = data mean")
        for x, (v, sev) in enumerate(zip(df[col], df["outlier_severity"])):
            ax.annotate(f"severity {sev:.1f}", (x, max(v, 0) + 2), ha="center", fontsize=8)
        ax.set_xticks(xs, [f"ρ = {r:g}" for r in df["rho"]])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 105)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("latents at step 0 (%)")
    axes[1].legend(frameon=False, fontsize=8, loc="upper left")
    fig.suptitle("Before any training, the input mean already silences latents; starting b_dec at the mean does not",
                 fontsize=10)
    fig.tight_layout()
    return fig


def twin_dead_figure(frame: Any, *, dead: str = "dead_pct_window", dead_label: str = "dead latents (%)") -> Figure:
    """Every SAE of :func:`aen_lib.results.reference.outlier_frame` as a line from its dead % with b_dec at 0 (circle) to
    its twin's with b_dec at the mean (diamond), at its L0, in its architecture's colour; L0 on a log axis."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(frame)
    need = ["study", "variant", "method", "l0", dead]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"twin_dead_figure: the frame lacks {missing} (pass aen_lib.results.reference.outlier_frame)")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    zero = df[df["study"] == "paper"].set_index("variant")
    mean = df[df["study"] == "biasmean"].set_index("variant")
    seen: set[str] = set()
    drawn = 0
    for v in zero.index.intersection(mean.index):
        a, b = zero.loc[v], mean.loc[v]
        if pd.isna(a[dead]) or pd.isna(b[dead]):
            continue  # e.g. a smoke run shorter than one dead window
        drawn += 1
        arch = str(a["method"])
        color = architecture_color(arch)
        ax.plot([a["l0"], b["l0"]], [a[dead], b[dead]], color=color, alpha=0.6, lw=1.2)
        ax.scatter([a["l0"]], [a[dead]], color=color, marker="o", s=30,
                   label=architecture_label(arch) if arch not in seen else None)
        ax.scatter([b["l0"]], [b[dead]], color=color, marker="D", s=30, edgecolor="black", linewidths=0.5)
        seen.add(arch)
    if drawn:
        ax.set_xscale("log")
        _log_axis_plain_ticks(ax.xaxis)
    else:
        ax.text(0.5, 0.5, f"no SAE pair has a value of {dead!r}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("L0 (active latents per sample)")
    ax.set_ylabel(dead_label)
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(frameon=False, fontsize=8, title="○ b_dec = 0   ◆ b_dec = mean", title_fontsize=8)
    ax.set_title("Starting b_dec at the data mean, each SAE against itself", fontsize=10)
    fig.tight_layout()
    return fig


def factorial_figure(frames: Mapping[float, Any], *, dead: str = "dead_pct_window",
                     dead_label: str = "dead latents (%)") -> Figure:
    """The 2 × 2 factorial (:func:`aen_lib.results.factorial.factorial_frame`, one frame per ρ): for each ρ an interaction
    plot, dead % of the fixed-weight and adaptive cells joined for ℓ1 alone and ℓ1 + ℓ2 (one faint line per seed, a
    bold line for the seed mean); last, the main effects of the ℓ2 term and of the adaptive weights and their
    interaction, every seed a dot and the mean a bar, per ρ. Effects use only seeds whose four cells are matched."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..results.factorial import factorial_effects

    if not frames:
        raise ValueError("factorial_figure: no factorial frame given (pass {rho: factorial_frame(folder, rho)})")
    rhos = sorted(frames)
    fig, axes = plt.subplots(1, len(rhos) + 1, figsize=(3.3 * (len(rhos) + 1), 3.6))
    shades = {False: "#1f77b4", True: "#d62728"}
    for ax, rho in zip(axes, rhos):
        df = pd.DataFrame(frames[rho])
        missing = [c for c in ("seed", "l2", "adaptive", dead) if c not in df.columns]
        if missing:
            raise ValueError(f"factorial_figure: the frame at ρ = {rho:g} lacks {missing} (pass factorial_frame)")
        for l2 in (False, True):
            sub = df[df["l2"] == l2]
            for _, seed_rows in sub.groupby("seed"):
                ys = [seed_rows[seed_rows["adaptive"] == a][dead].mean() for a in (False, True)]
                ax.plot([0, 1], ys, color=shades[l2], alpha=0.3, lw=1)
            ys = [sub[sub["adaptive"] == a][dead].mean() for a in (False, True)]
            ax.plot([0, 1], ys, color=shades[l2], lw=2.2, marker="o",
                    label="ℓ1 + ℓ2 (EN → AEN)" if l2 else "ℓ1 alone (ReLU-ℓ1 → AL)")
        ax.set_xticks([0, 1], ["fixed weights", "adaptive weights"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"ρ = {rho:g}, {df['seed'].nunique()} seeds", fontsize=10)
        ax.set_ylabel(dead_label)
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    ax = axes[-1]
    names = {"l2": "ℓ2 term", "adaptive": "adaptive w", "interaction": "interaction"}
    width = 0.8 / len(rhos)
    for i, rho in enumerate(rhos):
        eff = factorial_effects(pd.DataFrame(frames[rho]), metrics=[dead]).set_index("effect")
        for j, effect in enumerate(names):
            x = j + (i - (len(rhos) - 1) / 2) * width
            row = eff.loc[effect]
            ax.bar(x, row["mean"], width=width * 0.9, color=f"C{i + 2}", alpha=0.5,
                   label=f"ρ = {rho:g}" if j == 0 else None)
            ax.scatter([x] * len(row["per_seed"]), list(row["per_seed"].values()), color="black", s=10, zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), list(names.values()), fontsize=8)
    ax.set_ylabel(f"effect on {dead_label} (points)")
    ax.set_title("Main effects (dots: seeds)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# The committed language-model sets (chapter 8)
# ----------------------------------------------------------------------------------------------------------------


def lm_training_figure(curves: Any, *, paper_dead: float | None = None, paper_tokens: float | None = None,
                       colors: Mapping[str, str] | None = None) -> Figure:
    """Dead %, L0 and EV against training tokens for each SAE of ``curves`` (:func:`aen_lib.results.lm_tables.lm_dead_windows`
    with ``complete_only=False``): every log as a thin line (its dead % over the window so far), the complete windows
    as markers. ``paper_dead`` draws the paper's final dead % at ``paper_tokens`` as a reference mark (another model,
    another corpus: a position, not a target). ``colors`` (``{label: colour}``) tells apart SAEs of one architecture
    (which otherwise share its colour)."""
    import matplotlib.pyplot as plt

    need = {"label", "method", "tokens", "fill", "dead_pct", "l0", "ev"}
    if missing := need - set(curves.columns):
        raise ValueError(f"lm_training_figure needs the columns {sorted(missing)} (aen_lib.results.lm_tables.lm_dead_windows)")
    if curves.empty:
        raise ValueError("lm_training_figure got no logged rows")
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6))
    for label, g in curves.groupby("label", sort=False):
        g = g.sort_values("tokens")
        color = colors[label] if colors and label in colors else architecture_color(str(g["method"].iloc[0]))
        full = g[g["fill"] >= 1.0]
        axes[0].plot(g["tokens"] / 1e6, g["dead_pct"], color=color, lw=0.8, alpha=0.5)
        axes[0].plot(full["tokens"] / 1e6, full["dead_pct"], ls="none", marker="o", color=color, label=str(label))
        axes[1].plot(g["tokens"] / 1e6, g["l0"], color=color, lw=1.2, label=str(label))
        axes[2].plot(g["tokens"] / 1e6, g["ev"], color=color, lw=1.2, label=str(label))
    if paper_dead is not None:
        x = (paper_tokens or curves["tokens"].max()) / 1e6
        axes[0].axhline(paper_dead, color="grey", ls=":", lw=1)
        axes[0].annotate(f"paper, Pythia-70M, {x:,.1f}M tokens: {paper_dead:g}%", (0.02, paper_dead),
                         xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3),
                         fontsize=8, color="grey")
    axes[0].set_ylabel("dead latents (%)\nline: window so far; dots: complete windows")
    axes[1].set_ylabel("L0 (training batch)")
    axes[2].set_ylabel("explained variance (training batch)")
    for ax in axes:
        ax.set_xlabel("training tokens (millions)")
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def l1_bracket_figure(frame: Any, *, target: float = 32.0) -> Figure:
    """Held-out L0 against λ1 (both log scales) for each ℓ1 architecture of ``frame`` (:func:`aen_lib.results.lm_tables.lm_frame`),
    with the target L0 as a dashed line: the calibration from which the matched-L0 λ1 are read."""
    import matplotlib.pyplot as plt

    need = {"method", "l1", "heldout_l0", "steps"}
    if missing := need - set(frame.columns):
        raise ValueError(f"l1_bracket_figure needs the columns {sorted(missing)} (aen_lib.results.lm_tables.lm_frame)")
    d = frame[frame["l1"] > 0]
    if d.empty:
        raise ValueError("l1_bracket_figure got no ℓ1 SAE")
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for (method, steps), g in d.groupby(["method", "steps"]):
        g = g.sort_values("l1")
        ax.plot(g["l1"], g["heldout_l0"].clip(lower=0.1), marker=ARCHITECTURE_MARKERS[method],
                color=architecture_color(method), label=f"{architecture_label(method)}, {steps:,} steps")
    ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ1")
    ax.set_ylabel("held-out L0")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def density_histogram_figure(histograms: Mapping[str, Mapping[str, Any]], *,
                             methods: Mapping[str, str] | None = None) -> Figure:
    """Bars of :func:`aen_lib.evaluation.metrics.firing_density_histogram` outputs, one group per SAE (``{label: histogram}``):
    the latents that never fired, then one bar per decade of firing density. ``methods`` (``{label:
    architecture}``) colours each SAE by its architecture."""
    import matplotlib.pyplot as plt

    if not histograms:
        raise ValueError("density_histogram_figure needs at least one histogram")
    decades = None
    for label, h in histograms.items():
        for key in ("never", "decades", "latents", "m", "tokens"):
            if key not in h:
                raise ValueError(f"histogram {label!r} has no {key!r}: pass aen_lib.evaluation.metrics.firing_density_histogram output")
        if decades is not None and list(h["decades"]) != decades:
            raise ValueError("every histogram must use the same decades")
        decades = list(h["decades"])
    assert decades is not None
    names = ["never"] + [f"[1e{e}, 1e{e + 1})" for e in decades]
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    width = 0.8 / len(histograms)
    for i, (label, h) in enumerate(histograms.items()):
        values = [h["never"], *h["latents"]]
        share = [100.0 * v / h["m"] for v in values]
        color = architecture_color(methods[label]) if methods and label in methods else None
        ax.bar(np.arange(len(values)) + (i - (len(histograms) - 1) / 2) * width, share, width=width, color=color,
               label=f"{label} ({h['tokens']:,} tokens)")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("firing density (share of tokens a latent fires on)")
    ax.set_ylabel("latents (%)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def lm_sets_figure(frame: Any, *, full_steps: int, paper: Any = None) -> Figure:
    """Held-out dead % (left) and explained variance (right) against held-out L0 for every SAE of the committed
    language-model sets (``frame``: :func:`aen_lib.results.lm_tables.lm_frame`): filled markers for SAEs trained the full
    ``full_steps``, hollow for shorter calibration runs. ``paper`` (columns ``method, l0, dead_pct, ev``) adds the
    paper's Pythia-70M rows as grey-edged crosses in each method's colour: another model and 20 times the tokens, so
    a position to compare with, not a target."""
    import matplotlib.pyplot as plt

    need = {"method", "steps", "heldout_l0", "heldout_dead_pct", "heldout_ev"}
    if missing := need - set(frame.columns):
        raise ValueError(f"lm_sets_figure needs the columns {sorted(missing)} (aen_lib.results.lm_tables.lm_frame)")
    if frame.empty:
        raise ValueError("lm_sets_figure got no SAE")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, g in frame.groupby("method", sort=False):
        color, marker = architecture_color(str(method)), ARCHITECTURE_MARKERS[str(method)]
        for full, sub in ((True, g[g["steps"] >= full_steps]), (False, g[g["steps"] < full_steps])):
            if sub.empty:
                continue
            kw = dict(marker=marker, ls="none", ms=8, color=color, markerfacecolor=color if full else "none",
                      label=f"{architecture_label(str(method))}" + ("" if full else " (calibration run)"))
            axes[0].plot(sub["heldout_l0"].clip(lower=0.1), sub["heldout_dead_pct"], **kw)
            axes[1].plot(sub["heldout_l0"].clip(lower=0.1), sub["heldout_ev"], **kw)
    if paper is not None and len(paper):
        for _, r in paper.iterrows():
            color = architecture_color(str(r["method"]))
            axes[0].plot(r["l0"], r["dead_pct"], marker="X", ls="none", ms=8, color=color, markeredgecolor="grey")
            axes[1].plot(r["l0"], r["ev"], marker="X", ls="none", ms=8, color=color, markeredgecolor="grey")
        axes[0].plot([], [], marker="X", ls="none", color="grey", label="the paper, Pythia-70M (204.8M tokens)")
    for ax, ylabel in zip(axes, ("dead latents, silent on held-out tokens (%)", "explained variance (held-out)")):
        ax.set_xscale("log")
        ax.set_xlabel("held-out L0")
        ax.set_ylabel(ylabel)
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Chapter figures and tables: what the chapters draw, moved here so that a chapter shows the call, not the drawing
# ----------------------------------------------------------------------------------------------------------------
def _frame_with(frame: Any, columns: Iterable[str], who: str) -> Any:
    """``frame`` as a DataFrame, with a ``ValueError`` naming the columns it lacks."""
    import pandas as pd

    df = pd.DataFrame(frame)
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise ValueError(f"{who}: the table lacks the columns {missing}; it has {sorted(map(str, df.columns))}")
    if df.empty:
        raise ValueError(f"{who}: the table has no rows")
    return df


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


def latent_profile_figure(frequencies: Sequence[float], frequency: float, promotes: Sequence[tuple[str, float]],
                          suppresses: Sequence[tuple[str, float]], *, architecture: str, title: str,
                          tokens: str = "training tokens") -> Figure:
    """Chapter 9's look at one latent: left, where its firing ``frequency`` (a fraction of ``tokens``) sits in the
    cumulative distribution of the ``frequencies [d_sae]`` of all latents of its SAE (:func:`plot_firing_ecdf`);
    right, the logit change per unit along its decoder direction of the tokens it ``promotes`` (coloured) and
    ``suppresses`` (grey), each ``[(token, logit change)]`` as :func:`aen_lib.evaluation.features.top_logit_tokens`
    returns them, strongest first."""
    import matplotlib.pyplot as plt

    rates = np.asarray(frequencies, dtype=float)
    if rates.ndim != 1 or not rates.size or not 0.0 <= frequency <= 1.0:
        raise ValueError(f"latent_profile_figure: frequencies {rates.shape} must be a non-empty 1-D array and "
                         f"frequency ({frequency}) a fraction in [0, 1]")
    pairs = [*suppresses, *promotes]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError("latent_profile_figure: promotes and suppresses must be [(token, logit change)] pairs, "
                         "at least one in all")
    color = architecture_color(architecture)
    fig, (ax_f, ax_l) = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    plot_firing_ecdf(ax_f, {architecture: rates}, mark={architecture: frequency})
    ax_f.set_title(f"fires on {100 * frequency:.2f}% of {tokens}: more often than "
                   f"{100 * float((rates < frequency).mean()):.0f}% of the {len(rates)} latents", fontsize=9)
    names = [t for t, _ in suppresses][::-1] + [t for t, _ in promotes][::-1]
    values = [v for _, v in suppresses][::-1] + [v for _, v in promotes][::-1]
    ax_l.barh(range(len(names)), values, color=[color if v > 0 else "grey" for v in values])
    ax_l.set_yticks(range(len(names)), [repr(t) for t in names], fontsize=8)
    ax_l.axvline(0, color="black", lw=0.8)
    ax_l.set_xlabel("logit change per unit along the direction (before the final norm)")
    ax_l.set_title("tokens it promotes (coloured) and suppresses (grey)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


LM_LATENT_COLUMNS = {"name": "name", "heldout_l0": "held-out L0", "heldout_dead_pct": "silent on held-out (%)",
                     "dead_out_of_reach_pct": "out of reach (%)",
                     "dead_pct_window": "dead % (last complete training window)",
                     "dead_window_tokens": "that window (tokens)", "dense_latents": "dense (> 10% of tokens)"}
"""The columns of :func:`lm_latents_table`: ``{column of the frame: header}``, in order."""


def lm_latents_table(frame: Any, dense: Mapping[str, int], *, decimals: int = 2) -> Any:
    """Chapter 9's table of the committed language-model SAEs: per SAE (a row of
    :func:`aen_lib.results.lm_tables.lm_frame` with a ``name`` column added), its held-out L0, the shares silent on the
    held-out tokens and out of reach, the dead share of the last complete training window and that window's length,
    and ``dense[name]``, its number of latents firing on more than 10% of the held-out tokens (missing when the set
    has no features file). Headers as in :data:`LM_LATENT_COLUMNS`, numbers rounded to ``decimals``."""
    df = _frame_with(frame, [c for c in LM_LATENT_COLUMNS if c != "dense_latents"], "lm_latents_table")
    view = df[[c for c in LM_LATENT_COLUMNS if c != "dense_latents"]]
    view = view.assign(dense_latents=view["name"].map(dict(dense)))
    return view.rename(columns=LM_LATENT_COLUMNS).round(decimals).reset_index(drop=True)


