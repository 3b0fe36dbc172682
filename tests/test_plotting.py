"""Tests for aen_lib.book.plotting: palette, Pareto frontier, seed aggregation, panels and figure saving."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aen_lib.book import plotting  # noqa: E402
from aen_lib.results import records  # noqa: E402
from aen_lib.sae.architectures import ARCHITECTURES  # noqa: E402


def test_every_architecture_has_a_distinct_colour_blind_safe_colour():
    # every registered architecture has its colour (an architecture added without one fails here)
    assert set(ARCHITECTURES) <= set(plotting.ARCHITECTURE_COLORS), set(ARCHITECTURES) - set(plotting.ARCHITECTURE_COLORS)
    assert set(plotting.ARCHITECTURE_COLORS) == set(plotting.ARCHITECTURE_LABELS) == set(plotting.ARCHITECTURE_MARKERS)
    colours = list(plotting.ARCHITECTURE_COLORS.values())
    assert len(set(colours)) == len(colours)
    assert set(colours) <= set(plotting.OKABE_ITO.values()) | {plotting.TOL_OLIVE}
    assert plotting.OKABE_ITO["yellow"] not in colours
    assert len(set(plotting.ARCHITECTURE_MARKERS.values())) == len(plotting.ARCHITECTURE_MARKERS)
    assert len(set(plotting.ARCHITECTURE_LABELS.values())) == len(plotting.ARCHITECTURE_LABELS)


def test_topk_auxk_is_told_apart_from_topk():
    assert plotting.architecture_color("topk_auxk") != plotting.architecture_color("topk")
    assert plotting.ARCHITECTURE_MARKERS["topk_auxk"] != plotting.ARCHITECTURE_MARKERS["topk"]
    assert "AuxK" in plotting.architecture_label("topk_auxk")


def test_unknown_architecture_is_named_in_the_error():
    with pytest.raises(ValueError, match="'sparsemax'"):
        plotting.architecture_color("sparsemax")


def _brute_force_front(x, y, maximize):
    s = np.asarray(y) if maximize else -np.asarray(y)
    keep = []
    for i in range(len(x)):
        dominated = any(
            x[j] <= x[i] and s[j] >= s[i] and (x[j] < x[i] or s[j] > s[i]) for j in range(len(x)) if j != i
        )
        if not dominated:
            keep.append(i)
    # ties (identical points) keep one representative: the brute force keeps both, so dedupe by value
    seen, out = set(), []
    for i in sorted(keep, key=lambda i: (x[i], -s[i])):
        if (x[i], s[i]) not in seen:
            seen.add((x[i], s[i]))
            out.append(i)
    return out


@pytest.mark.parametrize("maximize", [True, False])
def test_pareto_front_matches_brute_force(maximize):
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(1, 30, size=25).astype(float)
        y = rng.integers(0, 10, size=25).astype(float)
        front = records.pareto_front(x, y, maximize_y=maximize)
        expected = _brute_force_front(x, y, maximize)
        assert [(x[i], y[i]) for i in front] == [(x[i], y[i]) for i in expected]


def test_pareto_front_hand_example():
    # L0, dead%: (8, 40) (16, 10) (16, 20) (32, 12) (64, 0) -> (32, 12) is dominated by (16, 10)
    x = [8, 16, 16, 32, 64]
    y = [40, 10, 20, 12, 0]
    assert records.pareto_front(x, y, maximize_y=False).tolist() == [0, 1, 4]
    # EV: higher is better
    assert records.pareto_front([8, 16, 32], [0.5, 0.4, 0.9], maximize_y=True).tolist() == [0, 2]
    assert records.pareto_front([1.0, np.nan], [1.0, 2.0], maximize_y=True).tolist() == [0]


def test_aggregate_seeds_mean_min_max():
    runs = [
        {"architecture": "aen", "variant": "a", "seed": s, "l0": l0, "dead_pct": d}
        for s, l0, d in [(0, 10, 1.0), (1, 14, 3.0), (2, 12, 8.0)]
    ] + [{"architecture": "topk", "variant": "k16", "seed": 0, "l0": 16, "dead_pct": 30.0}]
    rows = records.aggregate_seeds(runs, metrics=("l0", "dead_pct"))
    aen = next(r for r in rows if r["architecture"] == "aen")
    assert aen["n"] == 3
    assert aen["l0"] == pytest.approx(12.0) and aen["l0_min"] == 10 and aen["l0_max"] == 14
    assert aen["dead_pct"] == pytest.approx(4.0) and aen["dead_pct_min"] == 1.0 and aen["dead_pct_max"] == 8.0
    with pytest.raises(ValueError, match="dead_pct"):
        records.aggregate_seeds([{"architecture": "aen", "l0": 1}], metrics=("l0", "dead_pct"))


def test_pareto_panel_draws_min_max_bars_in_the_architecture_colour():
    runs = [
        {"architecture": "aen", "variant": "a", "seed": s, "l0": 10.0 + s, "dead_pct": d}
        for s, d in zip(range(3), [1.0, 3.0, 8.0])
    ]
    fig, ax = plt.subplots()
    plotting.plot_pareto_panel(ax, runs, "dead_pct", maximize=False, logx=False)
    bars = ax.containers[0]
    _, _, (xbar, ybar) = bars
    ysegs = ybar.get_segments()
    assert len(ysegs) == 1
    (x0, y0), (x1, y1) = ysegs[0]
    assert x0 == pytest.approx(11.0) and sorted([y0, y1]) == pytest.approx([1.0, 8.0])
    (xa, _), (xb, _) = xbar.get_segments()[0]
    assert sorted([xa, xb]) == pytest.approx([10.0, 12.0])
    assert mcolors.to_hex(bars.lines[0].get_color()).upper() == plotting.ARCHITECTURE_COLORS["aen"].upper()
    plt.close(fig)


def test_dead_ev_figure_has_two_labelled_panels():
    runs = [
        {"architecture": a, "variant": str(v), "seed": 0, "l0": 8.0 * (v + 1), "dead_pct": 10.0 / (v + 1),
         "explained_variance": 0.5 + 0.1 * v}
        for a, v in itertools.product(["aen", "topk"], range(3))
    ]
    fig = plotting.dead_ev_vs_l0_figure(runs, title="t")
    left, right = fig.axes
    assert left.get_ylabel() == "dead latents (%)" and right.get_ylabel() == "explained variance"
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["AEN (ours)", "TopK"]
    # the frontier line of each architecture connects all three non-dominated means
    lines = [ln for ln in right.get_lines() if len(ln.get_xdata()) == 3 and ln.get_linestyle() == "-"]
    assert len(lines) == 2
    plt.close(fig)


def test_firing_histogram_counts_dead_latents():
    freqs = {"relu_l1": [0.0, 0.0, 0.01, 0.2, 0.5], "topk": [0.0, 0.1, 0.1, 0.3, 0.9]}
    fig, ax = plt.subplots()
    dead = plotting.plot_firing_histogram(ax, freqs, bins=5)
    assert dead == {"relu_l1": 2, "topk": 1}
    heights = sorted(p.get_height() for p in ax.patches if p.__class__.__name__ == "Rectangle")
    assert 2 in heights and 1 in heights
    with pytest.raises(ValueError, match="relu_l1"):
        plotting.plot_firing_histogram(ax, {"relu_l1": [1.5]})
    plt.close(fig)


def test_training_curves_reject_length_mismatch():
    fig, ax = plt.subplots()
    plotting.plot_training_curves(ax, {"topk": ([0, 1], [0.0, 0.5])}, ylabel="dead (%)")
    assert ax.get_lines()[0].get_ydata().tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="'aen'"):
        plotting.plot_training_curves(ax, {"aen": ([0, 1, 2], [0.0])}, ylabel="x")
    plt.close(fig)


def test_save_figure_writes_into_the_chapter_results_folder(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = tmp_path / "01_feature_starvation"
    paths = plotting.save_figure(fig, out, "dead_over_training", formats=("png", "svg"))
    assert paths == [out / "dead_over_training.png", out / "dead_over_training.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'jpg'"):
        plotting.save_figure(fig, out, "x", formats=("jpg",))
    with pytest.raises(ValueError, match="plain file stem"):
        plotting.save_figure(fig, out, "../x")
    plt.close(fig)


def test_training_curves_with_seeds_draw_mean_and_min_max_band():
    fig, ax = plt.subplots()
    vals = [[0.0, 10.0, 20.0], [0.0, 14.0, 10.0]]
    plotting.plot_training_curves(ax, {"topk": ([250, 500, 750], vals)}, ylabel="dead (%)")
    assert ax.get_lines()[0].get_ydata().tolist() == [0.0, 12.0, 15.0]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == 20.0 and band[:, 1].min() == 0.0
    assert "3 seeds" not in ax.get_legend().get_texts()[0].get_text()
    assert "2 seeds" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_sae_pipeline_diagram_names_the_figure1_stages():
    fig = plotting.sae_pipeline_diagram()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for word in ["frozen LM", "$X_M$", "sparse code", "SAE encoder", "SAE decoder", "logits $X_F$", "KL / CE",
                 "replaces"]:
        assert word in texts
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------------
# seaborn helpers
# ------------------------------------------------------------------------------------------------------------------
def _rgb(c):
    return tuple(np.round(mcolors.to_rgb(c), 3))


def test_architecture_palette_is_the_book_palette():
    pal = plotting.architecture_palette(["topk", "aen", "topk"])
    assert pal == {"topk": plotting.architecture_color("topk"), "aen": plotting.architecture_color("aen")}
    with pytest.raises(ValueError, match="'nope'"):
        plotting.architecture_palette(["nope"])


def test_seed_spread_draws_each_seed_and_the_min_max_of_the_mean():
    runs = [{"architecture": a, "seed": s, "dead_pct": v}
            for a, vals in {"aen": [1.0, 2.0, 6.0], "topk": [10.0, 12.0, 14.0]}.items() for s, v in enumerate(vals)]
    fig, ax = plt.subplots()
    plotting.plot_seed_spread(ax, runs, "dead_pct", ylabel="dead %")
    # one dot per seed, in the architecture's colour
    dots = [c for c in ax.collections if len(c.get_offsets()) == 3]
    ys = sorted(sorted(np.asarray(c.get_offsets())[:, 1].tolist()) for c in dots)
    assert [1.0, 2.0, 6.0] in ys and [10.0, 12.0, 14.0] in ys
    colours = {_rgb(c.get_facecolor()[0]) for c in dots}
    assert _rgb(plotting.architecture_color("aen")) in colours and _rgb(plotting.architecture_color("topk")) in colours
    # the [min, max] bar of AEN spans 1..6 around its mean 3
    spans = [(np.nanmin(y), np.nanmax(y)) for y in (np.asarray(line.get_ydata(), float) for line in ax.lines)
             if np.isfinite(y).sum() > 2]
    assert (1.0, 6.0) in spans and (10.0, 14.0) in spans
    assert [t.get_text() for t in ax.get_xticklabels()] == ["AEN (ours)", "TopK"]
    assert ax.get_ylabel() == "dead %"
    plt.close(fig)
    with pytest.raises(ValueError, match="'ev'"):
        plotting.plot_seed_spread(plt.subplots()[1], runs, "ev")


def test_firing_ecdf_starts_at_the_dead_share_and_ends_at_one():
    f = {"aen": np.array([0.0, 0.001, 0.01, 0.1]), "topk": np.array([0.0, 0.0, 0.0, 0.5])}
    fig, ax = plt.subplots()
    dead = plotting.plot_firing_ecdf(ax, f, mark={"aen": 0.01})
    assert dead == {"aen": 1, "topk": 3}
    curves = {name: line for line in ax.lines for name in ("AEN (ours)", "TopK")
              if line.get_label().startswith(name + " (")}
    aen_y = curves["AEN (ours)"].get_ydata()
    assert aen_y[0] == pytest.approx(0.5) and aen_y[-1] == pytest.approx(1.0)
    assert curves["TopK"].get_ydata()[0] == pytest.approx(1.0)
    assert "1 of 4 never fired" in curves["AEN (ours)"].get_label()
    assert any(list(line.get_xdata()) == [0.01, 0.01] for line in ax.lines)  # the marked latent
    assert ax.get_xscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        plotting.plot_firing_ecdf(plt.subplots()[1], {"aen": [1.5]})


def test_grid_heatmap_orders_architectures_and_annotates_values():
    rows = [{"method": m, "rho": r, "dead": v} for (m, r), v in
            {("topk", 0.0): 12.0, ("topk", 0.9): 40.0, ("aen", 0.0): 0.5, ("aen", 0.9): 20.0}.items()]
    fig, ax = plt.subplots()
    table = plotting.plot_grid_heatmap(ax, rows, index="method", columns="rho", values="dead", cbar_label="dead %")
    assert list(table.index) == ["aen", "topk"]  # the book's order, not alphabetical by accident
    assert table.loc["topk", 0.9] == 40.0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AEN (ours)", "TopK"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0.5", "20.0", "12.0", "40.0"])
    plt.close(fig)
    with pytest.raises(ValueError, match="aggregate"):
        plotting.plot_grid_heatmap(plt.subplots()[1], rows + rows[:1], index="method", columns="rho", values="dead")


def test_pareto_panel_log_axis_has_plain_uncrowded_ticks():
    runs = [{"architecture": "topk", "variant": f"k{k}", "seed": 0, "l0": float(k), "dead_pct": 10.0 / k}
            for k in (2, 8, 64)] + [{"architecture": "aen", "variant": "a", "seed": 0, "l0": 1.1, "dead_pct": 0.0}]
    fig, ax = plt.subplots()
    plotting.plot_pareto_panel(ax, runs, "dead_pct", maximize=False)
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t, pos in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= pos <= hi]
    assert labels == ["1", "2", "5", "10", "20", "50"], labels  # 1-2-5 steps as plain numbers, no 10^k or "2.0"
    assert not [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    plt.close(fig)


def test_the_outlier_figures_draw_what_they_are_given():
    import pandas as pd
    from aen_lib.book.plotting import outlier_at_init_figure, twin_dead_figure

    t = pd.DataFrame({"rho": [0.0, 0.9], "outlier_severity": [0.1, 8.9], "mean_norm": [1, 30],
                      "out_of_reach_pct": [0.0, 37.0], "topk_dead_pct": [0.0, 94.0],
                      "out_of_reach_pct_at_mean": [0.0, 0.0], "topk_dead_pct_at_mean": [0.0, 0.0]})
    fig = outlier_at_init_figure(t)
    heights = sorted(round(p.get_height(), 1) for p in fig.axes[0].patches)
    assert heights == [0.0, 0.0, 0.0, 37.0]
    with pytest.raises(ValueError, match="lacks"):
        outlier_at_init_figure(t.drop(columns="topk_dead_pct"))
    f = pd.DataFrame({"study": ["paper", "biasmean"], "variant": ["topk-a", "topk-a"], "method": ["topk", "topk"],
                      "l0": [30.0, 32.0], "dead_pct_window": [96.0, 10.0]})
    fig = twin_dead_figure(f)
    ys = sorted(float(v) for line in fig.axes[0].lines for v in line.get_ydata())
    assert ys == [10.0, 96.0]
    # with a rho column: one panel per ρ, each drawing only its own pairs
    two = pd.concat([f.assign(rho=0.9), f.assign(rho=0.5, dead_pct_window=[50.0, 20.0])], ignore_index=True)
    fig = twin_dead_figure(two)
    assert [ax.get_title() for ax in fig.axes] == ["ρ = 0.5", "ρ = 0.9"]
    assert [sorted(float(v) for line in ax.lines for v in line.get_ydata()) for ax in fig.axes] == [[20.0, 50.0],
                                                                                                  [10.0, 96.0]]
    # centred inputs instead of b_dec at the mean: same drawing, named in the legend; two treatments at once refused
    cen = f.assign(study=["paper", "centred"])
    fig = twin_dead_figure(cen)
    assert "centred inputs" in fig.axes[0].get_legend().get_title().get_text()
    with pytest.raises(ValueError, match="mixes the studies"):
        twin_dead_figure(pd.concat([f, cen[cen["study"] == "centred"]]))


def test_centring_figure_draws_each_start_of_each_sae_in_its_own_panel():
    import pandas as pd

    from aen_lib.book.plotting import centring_figure

    rows = []
    for variant, method in (("topk-a", "topk"), ("aen-b", "aen")):
        for study, dead in (("paper", 90.0), ("biasmean", 10.0), ("centred", 11.0)):
            rows += [{"variant": variant, "SAE": variant, "method": method, "study": study, "step": st,
                      "dead_pct": dead + st} for st in (100, 200)]
    fig = centring_figure(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["topk-a", "aen-b"]
    assert [sorted(float(line.get_ydata()[0]) for line in ax.lines) for ax in fig.axes] == [[110.0, 111.0, 190.0]] * 2
    with pytest.raises(ValueError, match="lacks"):
        centring_figure(pd.DataFrame(rows).drop(columns="study"))


# ------------------------------------------------------------------------------------------------------------------
# Chapter figures and tables (moved out of the chapters)
# ------------------------------------------------------------------------------------------------------------------
def _seed_table():
    import pandas as pd

    return pd.DataFrame([{"run": run, "seed": s, "dead": d, "ev": e}
                         for run, vals in {"relu_l1": [(1.0, 0.9), (3.0, 0.8)], "topk": [(20.0, 0.7), (20.0, 0.75)],
                                           "relu_l1_matched": [(2.0, 0.6), (4.0, 0.5)]}.items()
                         for s, (d, e) in enumerate(vals)])


LABELS = {"relu_l1": "ReLU + l1", "topk": "TopK", "relu_l1_matched": "ReLU + l1 (matched)"}


def test_seed_range_table_writes_mean_and_range_per_run():
    shown = plotting.seed_range_table(_seed_table(), {"dead": "dead %", "ev": "EV"}, labels=LABELS)
    assert list(shown.columns) == ["dead %", "EV"]
    assert list(shown.index) == ["ReLU + l1", "ReLU + l1 (matched)", "TopK"]  # sorted by run name
    assert shown.loc["ReLU + l1", "dead %"] == "2.00 [1.00, 3.00]"
    assert shown.loc["TopK", "dead %"] == "20.00"  # no range when every seed agrees
    assert shown.loc["TopK", "EV"] == "0.72 [0.70, 0.75]"
    with pytest.raises(ValueError, match="'l0'"):
        plotting.seed_range_table(_seed_table(), {"l0": "L0"}, labels=LABELS)
    with pytest.raises(ValueError, match="no label.*topk"):
        plotting.seed_range_table(_seed_table(), {"dead": "dead %"}, labels={"relu_l1": "a", "relu_l1_matched": "b"})


def test_run_seed_strips_figure_draws_every_seed_in_its_architecture_colour():
    arch = {"relu_l1": "relu_l1", "topk": "topk", "relu_l1_matched": "relu_l1"}
    fig = plotting.run_seed_strips_figure(_seed_table(), [("dead", "dead (%)", "Dead per seed"),
                                                          ("ev", "EV", "Reconstruction per seed")],
                                          labels=LABELS, architectures=arch)
    assert len(fig.axes) == 2
    left, right = fig.axes
    assert (left.get_ylabel(), left.get_title(), right.get_ylabel(), right.get_title()) == (
        "dead (%)", "Dead per seed", "EV", "Reconstruction per seed")
    assert [t.get_text() for t in left.get_xticklabels()] == ["ReLU + l1", "TopK", "ReLU + l1 (matched)"]
    dots = [c for c in left.collections if len(c.get_offsets()) == 2]
    assert len(dots) == 3  # one strip of two seeds per run
    colours = [_rgb(c.get_facecolor()[0]) for c in dots]
    assert colours == [_rgb(plotting.architecture_color(a)) for a in ("relu_l1", "topk", "relu_l1")]
    assert sorted(np.asarray(dots[1].get_offsets())[:, 1].tolist()) == [20.0, 20.0]
    plt.close(fig)
    with pytest.raises(ValueError, match="no architecture.*relu_l1_matched"):
        plotting.run_seed_strips_figure(_seed_table(), [("dead", "d", "t")], labels=LABELS,
                                        architectures={"relu_l1": "relu_l1", "topk": "topk"})
    with pytest.raises(ValueError, match="at least one"):
        plotting.run_seed_strips_figure(_seed_table(), [], labels=LABELS, architectures=arch)


def _known_code(right=True):
    weights = np.array([1.0, 2.0, 1000.0, 900.0, 1.5])
    code = np.array([1.2, 2.7, 0.0, 0.0, 0.0]) if right else np.array([1.2, 0.0, 0.3, 0.0, 0.0])
    return dict(weights=weights, code=code, support=[0, 1], true_code=[1.0, 3.0], bias=[0.2, -0.3],
                closed_form=[0.21, -0.29])


def test_adaptive_weights_figure_shows_weights_code_and_bias():
    fig = plotting.adaptive_weights_figure(**_known_code(), w_max=1000.0, title="γ = 1")
    weights_ax, code_ax, bias_ax = fig.axes
    assert fig._suptitle.get_text() == "γ = 1"
    assert weights_ax.get_yscale() == "log" and weights_ax.get_ylabel() == "adaptive weight $w_i$ (log scale)"
    assert [t.get_text() for t in weights_ax.get_xticklabels()] == ["true atom", "other atom"]
    assert code_ax.get_title() == "support recovered: 2 atoms active, 2 of 2 true"
    assert sorted(round(p.get_height(), 2) for p in bias_ax.patches) == [-0.3, 0.2]
    assert sorted(t.get_text() for t in bias_ax.get_legend().get_texts()) == ["closed form", "solver"]
    assert [t.get_text() for t in bias_ax.get_xticklabels()] == ["0", "1"]
    plt.close(fig)
    # a missed support: the closed form (valid on the right support only) is not drawn
    fig = plotting.adaptive_weights_figure(**_known_code(right=False), w_max=1000.0, title="t")
    assert fig.axes[1].get_title() == "support missed: 2 atoms active, 1 of 2 true"
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["solver"]
    plt.close(fig)
    with pytest.raises(ValueError, match="one value per support atom"):
        plotting.adaptive_weights_figure(**(_known_code() | {"bias": [0.2]}), w_max=1000.0, title="t")
    with pytest.raises(ValueError, match="distinct atom indices"):
        plotting.adaptive_weights_figure(**(_known_code() | {"support": [0, 7]}), w_max=1000.0, title="t")


def test_weights_vs_usage_figure_puts_silent_latents_at_the_left_edge():
    fig = plotting.weights_vs_usage_figure([0.0, 0.01, 0.5], [10.0, 2.0, 0.5], n_samples=100, spearman=-0.97)
    (ax,) = fig.axes
    xy = np.asarray(ax.collections[0].get_offsets())
    assert xy[:, 0].tolist() == [0.005, 0.01, 0.5] and xy[:, 1].tolist() == [10.0, 2.0, 0.5]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "Spearman ρ = -0.97" in ax.get_title() and "100 evaluation samples" in ax.get_xlabel()
    assert _rgb(ax.collections[0].get_facecolor()[0]) == _rgb(plotting.architecture_color("aen"))
    plt.close(fig)
    with pytest.raises(ValueError, match="one value per latent"):
        plotting.weights_vs_usage_figure([0.1, 0.2], [1.0], n_samples=10, spearman=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plotting.weights_vs_usage_figure([1.5], [1.0], n_samples=10, spearman=0.0)


def test_warmup_ablation_figure_draws_one_line_style_per_run():
    runs = {"with warmup": {"frac_w_max_curve": [(0, 0.0), (50, 0.1), (100, 0.2)], "dead_curve": [(50, 5.0), (100, 2.0)]},
            "no warmup": {"frac_w_max_curve": [(0, 0.3), (50, 0.4), (100, 0.5)], "dead_curve": [(50, 9.0), (100, 8.0)]}}
    fig = plotting.warmup_ablation_figure(runs, warmup_steps=40, share_title="shares", dead_ylabel="dead (%)")
    share_ax, dead_ax = fig.axes
    curves = [ln for ln in share_ax.get_lines() if ln.get_label() in runs]
    assert [(ln.get_label(), ln.get_linestyle()) for ln in curves] == [("with warmup", "-"), ("no warmup", "--")]
    assert curves[1].get_ydata().tolist() == [0.3, 0.4, 0.5]
    dead = [ln for ln in dead_ax.get_lines() if ln.get_label() in runs]
    assert dead[0].get_xdata().tolist() == [50, 100] and dead[0].get_marker() == "o"
    assert any(list(ln.get_xdata()) == [40, 40] for ln in share_ax.get_lines())  # end of the hold
    assert (share_ax.get_title(), dead_ax.get_ylabel()) == ("shares", "dead (%)")
    plt.close(fig)
    with pytest.raises(ValueError, match="'dead_curve'"):
        plotting.warmup_ablation_figure({"x": {"frac_w_max_curve": []}}, warmup_steps=1, share_title="",
                                        dead_ylabel="")


def test_plan_display_table_names_the_precision_and_rounds():
    row = {c: 1.23456 for c in plotting.PLAN_COLUMNS} | {"autocast": "none", "n_gpus": 2, "fits": True, "extra": 1}
    table = plotting.plan_display_table([row, row | {"autocast": "bf16"}])
    assert list(table.columns) == list(plotting.PLAN_COLUMNS)
    assert table["autocast"].tolist() == ["fp32", "bf16 autocast"]
    assert table["hours"].tolist() == [1.23, 1.23]
    with pytest.raises(ValueError, match="'hours'"):
        plotting.plan_display_table([{k: v for k, v in row.items() if k != "hours"}])
    with pytest.raises(ValueError, match="'fp16'"):
        plotting.plan_display_table([row | {"autocast": "fp16"}])


def test_latent_profile_figure_places_the_latent_and_orders_its_tokens():
    rates = [0.0, 0.001, 0.01, 0.1, 0.2]
    fig = plotting.latent_profile_figure(rates, 0.1, [("the", 0.5), ("a", 0.25)], [("of", -0.4)], architecture="aen",
                                         title="AEN latent 3")
    ecdf_ax, logit_ax = fig.axes
    assert fig._suptitle.get_text() == "AEN latent 3"
    # 0.1 fires more often than three of the five latents (0, 0.001, 0.01)
    assert ecdf_ax.get_title() == "fires on 10.00% of training tokens: more often than 60% of the 5 latents"
    assert any(list(ln.get_xdata()) == [0.1, 0.1] for ln in ecdf_ax.get_lines())  # the latent's frequency marked
    # bottom to top: the suppressed tokens (weakest first), then the promoted ones (weakest first)
    assert [t.get_text() for t in logit_ax.get_yticklabels()] == ["'of'", "'a'", "'the'"]
    bars = logit_ax.patches
    assert [round(b.get_width(), 2) for b in bars] == [-0.4, 0.25, 0.5]
    assert _rgb(bars[0].get_facecolor()) == _rgb("grey")
    assert _rgb(bars[2].get_facecolor()) == _rgb(plotting.architecture_color("aen"))
    plt.close(fig)
    with pytest.raises(ValueError, match="fraction in"):
        plotting.latent_profile_figure(rates, 1.5, [("the", 0.5)], [], architecture="aen", title="t")
    with pytest.raises(ValueError, match="pairs"):
        plotting.latent_profile_figure(rates, 0.1, [("the",)], [], architecture="aen", title="t")
    with pytest.raises(ValueError, match="'sparsemax'"):
        plotting.latent_profile_figure(rates, 0.1, [("the", 0.5)], [], architecture="sparsemax", title="t")


def test_lm_latents_table_names_its_columns_and_adds_the_dense_counts():
    import pandas as pd

    frame = pd.DataFrame({"name": ["TopK", "AEN"], "heldout_l0": [32.004, 30.5], "heldout_dead_pct": [12.346, 0.0],
                          "dead_out_of_reach_pct": [1.0, 0.0], "dead_pct_window": [20.0, 1.5],
                          "dead_window_tokens": [1_000_000, 1_000_000], "dead_pct_paper_window": [25.0, None],
                          "method": ["topk", "aen"]},
                         index=pd.MultiIndex.from_tuples([("set", "topk"), ("set", "aen")]))
    table = plotting.lm_latents_table(frame, {"TopK": 7})
    assert list(table.columns) == list(plotting.LM_LATENT_COLUMNS.values())
    assert table.index.tolist() == [0, 1] and table["name"].tolist() == ["TopK", "AEN"]
    assert table["held-out L0"].tolist() == [32.0, 30.5] and table["silent on held-out (%)"].tolist() == [12.35, 0.0]
    assert table["dense (> 10% of tokens)"].iloc[0] == 7 and pd.isna(table["dense (> 10% of tokens)"].iloc[1])
    paper = "dead % (last 4,096,000 tokens: the paper's window, scaled)"
    assert table[paper].iloc[0] == 25.0 and pd.isna(table[paper].iloc[1])  # a set trained before that window: missing
    from aen_lib.results.lm_tables import PAPER_WINDOW_TOKENS

    assert paper in plotting.LM_LATENT_COLUMNS.values() and f"{PAPER_WINDOW_TOKENS:,}" in paper  # the header follows it
    with pytest.raises(ValueError, match="'dead_out_of_reach_pct'"):
        plotting.lm_latents_table(frame.drop(columns="dead_out_of_reach_pct"), {})
    with pytest.raises(ValueError, match="no rows"):
        plotting.lm_latents_table(frame.iloc[:0], {})
