"""The book's colours, labels and markers per architecture, and the standard panels: Pareto panels against L0,
training curves, firing histograms, the SAE pipeline diagram, and :func:`save_figure`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...palette import OKABE_ITO


if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class _SpecView(Mapping[str, str]):
    """A read-only ``{architecture: value}`` view of one field of the architecture registry
    (:data:`aen_lib.sae.architectures.SPECS`), read live, so an architecture registered later appears in it."""

    def __init__(self, field: str) -> None:
        self.field = field

    @staticmethod
    def _specs() -> Mapping[str, Any]:
        from ...sae.architectures import SPECS  # imported on first use: importing plotting stays torch-free

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
    from ...results.records import aggregate_seeds, pareto_front  # on first use: importing plotting stays torch-free

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
