"""Statistics over runs in the architecture colours (seaborn): seed spreads, firing ECDFs, grid heatmaps; and the
synthetic studies' figures: the outlier study at step 0 and its twins, and the 2 × 2 factorial."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...palette import OKABE_ITO

from .base import ARCHITECTURE_COLORS, _log_axis_plain_ticks, architecture_color, architecture_label

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    its twin's with the mean taken away (diamond: b_dec started at the mean, or centred inputs, whichever study the
    frame holds besides "paper"), at its L0, in its architecture's colour; L0 on a log axis. A frame with a ``rho``
    column (:func:`aen_lib.results.reference.outlier_frames`) gets one panel per ρ, on a shared dead-% axis."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(frame)
    need = ["study", "variant", "method", "l0", dead]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"twin_dead_figure: the frame lacks {missing} (pass aen_lib.results.reference.outlier_frame)")
    treated = sorted(set(df["study"]) - {"paper"})
    if len(treated) > 1:
        raise ValueError(f"twin_dead_figure: the frame mixes the studies {treated}; draw one treatment at a time")
    treatment = treated[0] if treated else "biasmean"
    shown = _TREATMENT_NAMES.get(treatment, treatment)
    panels = sorted(df["rho"].unique()) if "rho" in df.columns else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 if len(panels) == 1 else 4.8 * len(panels), 3.8),
                             squeeze=False, sharey=True)
    for ax, rho in zip(axes[0], panels):
        part = df if rho is None else df[df["rho"] == rho]
        zero = part[part["study"] == "paper"].set_index("variant")
        mean = part[part["study"] == treatment].set_index("variant")
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
            ax.text(0.5, 0.5, f"no SAE pair has a value of {dead!r}", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel("L0 (active latents per sample)")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(frameon=False, fontsize=8, title=f"○ b_dec = 0   ◆ {shown}", title_fontsize=8)
        if rho is not None:
            ax.set_title(f"ρ = {rho:g}", fontsize=10)
    axes[0, 0].set_ylabel(dead_label)
    fig.suptitle(f"With the mean taken away ({shown}), each SAE against itself", fontsize=10)
    fig.tight_layout()
    return fig


_TREATMENT_NAMES = {"biasmean": "b_dec = mean", "centred": "centred inputs"}
_STUDY_STYLES = {"paper": ("b_dec = 0, raw inputs (the paper)", ":", 2.2),
                 "biasmean": ("b_dec = mean", "-", 2.6), "centred": ("centred inputs", "--", 1.4)}


def centring_figure(histories: Any, *, metric: str = "dead_pct", metric_label: str = "dead latents (%)",
                    columns: int = 3) -> Figure:
    """The outlier study's three starts over training, one panel per SAE
    (:func:`aen_lib.results.reference.centring_histories`): ``metric`` against the step for b_dec at 0 on the raw
    inputs (dotted), b_dec started at the mean (thick solid) and mean-centred inputs (thin dashed), in the SAE's
    architecture colour. Where the two remedies train the same SAE the dashed line runs inside the solid one."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(histories)
    need = ["variant", "SAE", "method", "study", "step", metric]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"centring_figure: the frame lacks {missing} (pass aen_lib.results.reference.centring_histories)")
    if df.empty:
        raise ValueError("centring_figure: the frame has no rows")
    variants = list(dict.fromkeys(df["variant"]))
    rows = -(-len(variants) // columns)
    fig, axes = plt.subplots(rows, min(columns, len(variants)), figsize=(3.6 * min(columns, len(variants)), 2.8 * rows),
                             squeeze=False, sharex=True)
    for ax, variant in zip(axes.flat, variants):
        part = df[df["variant"] == variant]
        color = architecture_color(str(part["method"].iloc[0]))
        for study, (name, style, width) in _STUDY_STYLES.items():
            h = part[part["study"] == study].sort_values("step")
            if len(h):
                ax.plot(h["step"], h[metric], style, color=color if study != "paper" else "0.45", lw=width,
                        label=name)
        ax.set_title(str(part["SAE"].iloc[0]).replace(" γ=0.5 β=0.9999 p=0.05", ""), fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_label)
    axes.flat[0].legend(frameon=False, fontsize=7)
    fig.suptitle("Two ways of taking the mean away, over training: b_dec at the mean against centred inputs", fontsize=10)
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

    from ...results.factorial import factorial_effects

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
