"""The language-model chapters' figures and tables: the dead-% curves of the committed sets, the λ1 bracket, firing
density histograms, dead % and EV against L0 beside the paper's points, one latent's profile and the latents table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np


from .base import ARCHITECTURE_MARKERS, _frame_with, architecture_color, architecture_label
from .studies import plot_firing_ecdf

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


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
                     "dead_window_tokens": "that window (tokens)",
                     "dead_pct_paper_window": "dead % (last 4,096,000 tokens: the paper's window, scaled)",
                     "dense_latents": "dense (> 10% of tokens)"}
"""The columns of :func:`lm_latents_table`: ``{column of the frame: header}``, in order."""


def lm_latents_table(frame: Any, dense: Mapping[str, int], *, decimals: int = 2) -> Any:
    """Chapter 9's table of the committed language-model SAEs: per SAE (a row of
    :func:`aen_lib.results.lm_tables.lm_frame` with a ``name`` column added), its held-out L0, the shares silent on the
    held-out tokens and out of reach, the dead share of the last complete training window and that window's length,
    the dead share over the last 4,096,000 training tokens (:data:`aen_lib.results.lm_tables.PAPER_WINDOW_TOKENS`),
    and ``dense[name]``, its number of latents firing on more than 10% of the held-out tokens (missing when the set
    has no features file). Headers as in :data:`LM_LATENT_COLUMNS`, numbers rounded to ``decimals``."""
    df = _frame_with(frame, [c for c in LM_LATENT_COLUMNS if c != "dense_latents"], "lm_latents_table")
    view = df[[c for c in LM_LATENT_COLUMNS if c != "dense_latents"]]
    view = view.assign(dense_latents=view["name"].map(dict(dense)))
    return view.rename(columns=LM_LATENT_COLUMNS).round(decimals).reset_index(drop=True)
