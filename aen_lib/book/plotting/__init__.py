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
* :func:`twin_dead_figure`: every SAE's dead % with b_dec at 0 joined to its twin's with the mean taken away;
* :func:`centring_figure`: the two ways of taking the mean away (and the paper's start) over training, SAE by SAE.

What the chapters draw, moved here so that a chapter shows the call that answers its question and not the drawing
(each takes the data it draws and returns the Figure or table):

* :func:`run_seed_strips_figure` and :func:`seed_range_table` (chapter 1): runs over seeds, as dots and as a table;
* :func:`adaptive_weights_figure` (chapter 4): weights, code and bias of one known code;
* :func:`weights_vs_usage_figure` and :func:`warmup_ablation_figure` (chapter 5): the weights against use, and the
  warmup ablation;
* :func:`plan_display_table` (chapter 10): the planner's rows as the chapter prints them.

Matplotlib is imported lazily inside the functions that draw, so importing ``aen_lib`` stays light.

The functions live in four modules, re-exported here: :mod:`.base` (colours, the standard panels, saving),
:mod:`.studies` (statistics over runs, the synthetic studies), :mod:`.language_model` (the language-model chapters)
and :mod:`.chapters` (what single chapters draw).
"""

from __future__ import annotations

from ...palette import OKABE_ITO, TOL_OLIVE
from .base import (ARCHITECTURE_COLORS, ARCHITECTURE_LABELS, ARCHITECTURE_MARKERS, architecture_color, architecture_label, dead_ev_vs_l0_figure, plot_firing_histogram, plot_pareto_panel, plot_training_curves, sae_pipeline_diagram, save_figure)
from .chapters import (PLAN_COLUMNS, adaptive_weights_figure, plan_display_table, run_seed_strips_figure, seed_range_table, warmup_ablation_figure, weights_vs_usage_figure)
from .language_model import (LM_LATENT_COLUMNS, density_histogram_figure, l1_bracket_figure, latent_profile_figure, lm_latents_table, lm_sets_figure, lm_training_figure)
from .studies import (architecture_palette, centring_figure, factorial_figure, outlier_at_init_figure, plot_firing_ecdf, plot_grid_heatmap, plot_seed_spread, twin_dead_figure)

__all__ = ["OKABE_ITO", "TOL_OLIVE", "ARCHITECTURE_COLORS", "ARCHITECTURE_LABELS", "ARCHITECTURE_MARKERS", "architecture_color", "architecture_label", "dead_ev_vs_l0_figure", "plot_firing_histogram", "plot_pareto_panel", "plot_training_curves", "sae_pipeline_diagram", "save_figure", "architecture_palette", "centring_figure", "factorial_figure", "outlier_at_init_figure", "plot_firing_ecdf", "plot_grid_heatmap", "plot_seed_spread", "twin_dead_figure", "LM_LATENT_COLUMNS", "density_histogram_figure", "l1_bracket_figure", "latent_profile_figure", "lm_latents_table", "lm_sets_figure", "lm_training_figure", "PLAN_COLUMNS", "adaptive_weights_figure", "plan_display_table", "run_seed_strips_figure", "seed_range_table", "warmup_ablation_figure", "weights_vs_usage_figure"]
