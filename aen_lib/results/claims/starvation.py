"""Claims of chapter 1 (feature starvation): TopK against ReLU + ℓ1 on the spiked dictionary, small SAEs, every seed.

The claims judge the chapter's table of runs, one row per trained SAE: ``run`` (``"topk"``, ``"relu_l1"`` at the
chapter's modest λ1, ``"relu_l1_matched"`` at the λ1 whose L0 matches TopK's k), ``seed``, ``l0`` and
``explained_variance`` on fresh samples, and dead latents counted two ways with the library's firing threshold
(:data:`aen_lib.evaluation.metrics.DEAD_THRESHOLD`, |h| > 1e-12):

* ``dead_pct_window`` — % of latents that did not fire on any training sample of the last complete dead window
  (:class:`aen_lib.evaluation.metrics.DeadLatentTracker`; the window's length in samples is the chapter's ``dead_window`` ×
  ``batch_size``);
* ``never_fired_pct`` — % of latents that did not fire on any of the chapter's fresh evaluation samples after training
  (:func:`aen_lib.evaluation.metrics.firing_rates` equal to 0).

* ``topk_starves_more_than_l1_at_matched_l0`` — the chapter's headline, dead counted over the last window;
* ``topk_silent_more_than_l1_on_fresh_samples`` — the same comparison, dead counted on the fresh samples;
* ``free_l1_is_denser`` — at the chapter's modest λ1 the ℓ1 SAE keeps its latents but is far less sparse;
* ``matched_l1_reconstructs_worse`` — at matched L0 the ℓ1 SAE pays with its reconstruction;
* ``topk_dead_latents_revive`` — latents dead for a whole window fire again later (judged on the window-to-window
  counts, one row per seed, window end and event);
* ``topk_silent_latents_are_outcompeted`` — most TopK latents silent on fresh samples still have a positive
  pre-activation on some of them (``eval_negative_pct``: % with pre-activation ≤ 0 on every fresh sample).
"""

from __future__ import annotations

import pandas as pd

from .core import DEAD_MARGIN, Verdict, register

WINDOW, FRESH = "dead_pct_window", "never_fired_pct"
DEFINITIONS = {WINDOW: "no firing in the last training window", FRESH: "no firing on the fresh samples"}


def _example() -> pd.DataFrame:
    """Two seeds of the three runs, shaped like the chapter's ci profile (numbers made up)."""
    rows = []
    for seed in (0, 1):
        rows += [dict(run="topk", seed=seed, l1=0.0, l0=8.0, dead_pct_window=16.0, never_fired_pct=37.5,
                      eval_negative_pct=5.0, explained_variance=0.58, ever_dead=47),
                 dict(run="relu_l1", seed=seed, l1=0.02, l0=45.7, dead_pct_window=0.0, never_fired_pct=0.0,
                      eval_negative_pct=0.0, explained_variance=0.63, ever_dead=0),
                 dict(run="relu_l1_matched", seed=seed, l1=0.044, l0=8.2, dead_pct_window=0.0, never_fired_pct=0.4,
                      eval_negative_pct=0.4, explained_variance=0.09, ever_dead=0)]
    return pd.DataFrame(rows)


def _by_seed(df: pd.DataFrame, run: str) -> pd.DataFrame:
    return df[df["run"] == run].set_index("seed").sort_index()


def _k_of(df: pd.DataFrame, k: int | None) -> int:
    return int(k) if k is not None else int(round(float(_by_seed(df, "topk")["l0"].max())))


def _equal_starvation(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    topk = _by_seed(out, "topk")
    mine = out["run"] == "relu_l1_matched"
    for col in (WINDOW, FRESH):
        out.loc[mine, col] = out.loc[mine, "seed"].map(topk[col])  # the ℓ1 SAE as starved as TopK
    return out


def _matched_comparison(name: str, col: str, df: pd.DataFrame, k: int | None, tol: float, margin: float,
                        samples: str) -> Verdict:
    """TopK against the matched ReLU + ℓ1 run of each seed, dead % counted by ``col``."""
    topk, l1 = _by_seed(df, "topk"), _by_seed(df, "relu_l1_matched")
    if topk.empty or sorted(topk.index) != sorted(l1.index):
        return Verdict(name, None, {}, "Need one TopK and one matched ReLU + ℓ1 run per seed.")
    k_ = _k_of(df, k)
    for seed in topk.index:
        for label, frame in (("TopK", topk), ("ReLU + ℓ1", l1)):
            l0 = float(frame.loc[seed, "l0"])
            if abs(l0 - k_) > tol * k_:
                return Verdict(name, None, {"seed": int(seed), "l0": l0, "k": k_},
                               f"seed {seed}: {label} L0 = {l0:.2f} is not within {tol:.0%} of k = {k_}; "
                               "sparsity would confound the comparison.")
    gap = topk[col] - l1[col]
    holds = bool((gap > margin).all())
    t, m_ = float(topk[col].mean()), float(l1[col].mean())
    numbers = {"topk": t, "l1": m_, "gap_min": float(gap.min()), "gap_max": float(gap.max()), "k": k_,
               "seeds": len(topk), "margin": margin}
    spread = "" if len(gap) == 1 else f", {gap.min():.1f} to {gap.max():.1f} points by seed"
    sentence = (f"Counting a latent dead when it had {DEFINITIONS[col]}{samples}, TopK (k = {k_}) had {t:.1f}% dead "
                f"latents and the matched ReLU + ℓ1 SAE {m_:.1f}% ({len(topk)} seed(s){spread}): ")
    sentence += (f"TopK starves more, by more than {margin:g} point(s) on every seed." if holds else
                 f"TopK does not starve more by more than {margin:g} point(s) on every seed.")
    return Verdict(name, holds, numbers, sentence)


@register("topk_starves_more_than_l1_at_matched_l0",
          "at matched L0 TopK ends training with more dead latents than ReLU + ℓ1 on every seed, a latent counting as "
          "dead when it did not fire over the last training window (aen_lib.evaluation.metrics.DeadLatentTracker)",
          source="book", counterexample=_equal_starvation, example=_example, needs=("run", "seed", "l0", WINDOW))
def topk_starves_more_than_l1_at_matched_l0(df: pd.DataFrame, *, k: int | None = None, tol: float = 0.25,
                                            margin: float = DEAD_MARGIN, window_samples: int | None = None) -> Verdict:
    """Pairs the ``topk`` and ``relu_l1_matched`` runs by seed. Not testable when a seed lacks one of them or when
    either L0 is further than ``tol``·k from k (sparsity would confound the comparison). Holds when, on every seed,
    TopK's ``dead_pct_window`` exceeds the ℓ1 SAE's by more than ``margin`` points. ``k`` defaults to TopK's L0;
    ``window_samples`` (the window's length in training samples) only goes into the sentence."""
    samples = f" ({window_samples:,} training samples)" if window_samples else ""
    return _matched_comparison("topk_starves_more_than_l1_at_matched_l0", WINDOW, df, k, tol, margin, samples)


@register("topk_silent_more_than_l1_on_fresh_samples",
          "at matched L0 TopK leaves more latents silent on fresh samples after training than ReLU + ℓ1, on every seed",
          source="book", counterexample=_equal_starvation, example=_example, needs=("run", "seed", "l0", FRESH))
def topk_silent_more_than_l1_on_fresh_samples(df: pd.DataFrame, *, k: int | None = None, tol: float = 0.25,
                                              margin: float = DEAD_MARGIN, eval_samples: int | None = None) -> Verdict:
    """As :func:`topk_starves_more_than_l1_at_matched_l0`, a latent counting as dead when it did not fire on any of
    the ``eval_samples`` fresh samples (``never_fired_pct``). Fewer samples than a training window: a latent that fires
    rarely counts as dead here and alive there."""
    samples = f" ({eval_samples:,} of them)" if eval_samples else ""
    return _matched_comparison("topk_silent_more_than_l1_on_fresh_samples", FRESH, df, k, tol, margin, samples)


def _free_l1_sparse(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out["run"] == "relu_l1", "l0"] = _k_of(df, None)  # as sparse as TopK
    return out


@register("free_l1_is_denser",
          "at the chapter's modest λ1 the ReLU + ℓ1 SAE keeps its latents alive but is far less sparse than TopK",
          source="book", counterexample=_free_l1_sparse, example=_example, needs=("run", "seed", "l0", WINDOW))
def free_l1_is_denser(df: pd.DataFrame, *, k: int | None = None, tol: float = 0.25,
                      margin: float = DEAD_MARGIN) -> Verdict:
    """Holds when every ``relu_l1`` run has at most ``margin`` % dead latents over the last window and an L0 above
    (1 + ``tol``)·k."""
    name = "free_l1_is_denser"
    free = _by_seed(df, "relu_l1")
    if free.empty:
        return Verdict(name, None, {}, "No ReLU + ℓ1 run at the chapter's modest λ1.")
    k_ = _k_of(df, k)
    dead_max, l0_min, l0_mean = float(free[WINDOW].max()), float(free["l0"].min()), float(free["l0"].mean())
    holds = bool(dead_max <= margin and l0_min > (1 + tol) * k_)
    sentence = (f"At λ1 = {float(free['l1'].iloc[0]):g} the ReLU + ℓ1 SAE had at most {dead_max:.1f}% dead latents "
                f"(last training window) at L0 {l0_mean:.1f}, against k = {k_} for TopK: " +
                ("alive but far less sparse, so it is no fair comparison." if holds else
                 "it is not both alive and far less sparse."))
    return Verdict(name, holds, {"dead_max": dead_max, "l0_mean": l0_mean, "l0_min": l0_min, "k": k_}, sentence)


def _l1_reconstructs_as_well(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    topk = _by_seed(out, "topk")["explained_variance"]
    mine = out["run"] == "relu_l1_matched"
    out.loc[mine, "explained_variance"] = out.loc[mine, "seed"].map(topk)
    return out


@register("matched_l1_reconstructs_worse",
          "at matched L0 the ReLU + ℓ1 SAE explains less variance than TopK on every seed",
          source="book", counterexample=_l1_reconstructs_as_well, example=_example,
          needs=("run", "seed", "explained_variance"))
def matched_l1_reconstructs_worse(df: pd.DataFrame, *, ev_margin: float = 0.05) -> Verdict:
    """Holds when on every seed TopK's explained variance exceeds the matched ℓ1 SAE's by more than ``ev_margin``."""
    name = "matched_l1_reconstructs_worse"
    topk, l1 = _by_seed(df, "topk"), _by_seed(df, "relu_l1_matched")
    if topk.empty or sorted(topk.index) != sorted(l1.index):
        return Verdict(name, None, {}, "Need one TopK and one matched ReLU + ℓ1 run per seed.")
    gap = topk["explained_variance"] - l1["explained_variance"]
    holds = bool((gap > ev_margin).all())
    ev_t, ev_l = float(topk["explained_variance"].mean()), float(l1["explained_variance"].mean())
    sentence = (f"At matched L0 the ReLU + ℓ1 SAE explained {ev_l:.3f} of the variance against TopK's {ev_t:.3f}: " +
                ("it pays for its sparsity with its reconstruction." if holds else
                 f"not less than TopK by more than {ev_margin:g} on every seed."))
    return Verdict(name, holds, {"ev_topk": ev_t, "ev_l1": ev_l, "gap_min": float(gap.min())}, sentence)


# --- revival: one row per seed, window end and event ("died" / "revived"), with the number of latents ----------------

def _churn_example() -> pd.DataFrame:
    return pd.DataFrame([dict(seed=s, step=t, event=e, latents=n) for s in (0, 1) for t in (500, 750, 1000)
                         for e, n in (("died", 15), ("revived", 4 if t > 500 else 0))])


def _no_revival(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(latents=df["latents"].where(df["event"] != "revived", 0))


@register("topk_dead_latents_revive",
          "in TopK, latents that were dead for a whole window fire again in a later window, on every seed",
          source="book", counterexample=_no_revival, example=_churn_example,
          needs=("seed", "step", "event", "latents"))
def topk_dead_latents_revive(df: pd.DataFrame) -> Verdict:
    """Holds when every seed has at least one latent dead in one window and firing in the next; not testable with
    fewer than two windows."""
    name = "topk_dead_latents_revive"
    if df.empty:
        return Verdict(name, None, {}, "Only one dead window: nothing to compare between windows.")
    per_seed = df[df["event"] == "revived"].groupby("seed")["latents"].sum()
    died = df[df["event"] == "died"].groupby("seed")["latents"].sum()
    holds = bool(len(per_seed) > 0 and (per_seed > 0).all())
    sentence = (f"Over {df['step'].nunique()} window changes and {df['seed'].nunique()} seed(s), "
                f"{int(per_seed.sum())} times a TopK latent dead for a whole window fired in the next one, and "
                f"{int(died.sum())} times a firing latent died" +
                ("." if holds else "; on some seed no dead latent came back."))
    return Verdict(name, holds, {"revived": int(per_seed.sum()), "died": int(died.sum()),
                                 "revived_min_seed": int(per_seed.min()) if len(per_seed) else 0}, sentence)


def _out_of_reach(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    topk = out["run"] == "topk"
    out.loc[topk, "eval_negative_pct"] = out.loc[topk, FRESH]  # every silent latent out of reach
    return out


@register("topk_silent_latents_are_outcompeted",
          "most TopK latents that never fire on the fresh samples still have a positive pre-activation on some of "
          "them (they lose to the k larger ones) rather than a pre-activation ≤ 0 on all (out of reach)",
          source="book", counterexample=_out_of_reach, example=_example,
          needs=("run", "seed", FRESH, "eval_negative_pct"))
def topk_silent_latents_are_outcompeted(df: pd.DataFrame) -> Verdict:
    """Holds when, pooled over seeds, fewer than half of TopK's silent latents are out of reach; not testable when
    no TopK latent is silent."""
    name = "topk_silent_latents_are_outcompeted"
    topk = _by_seed(df, "topk")
    silent, reach = float(topk[FRESH].sum()), float(topk["eval_negative_pct"].sum())
    if topk.empty or silent <= 0:
        return Verdict(name, None, {}, "No TopK latent is silent on the fresh samples.")
    share = reach / silent
    holds = bool(share < 0.5)
    n = len(topk)
    sentence = (f"Of TopK's latents, {silent / n:.1f}% never fired on the fresh samples; {reach / n:.1f}% had a "
                f"pre-activation ≤ 0 on every one of them (out of reach), the other {(silent - reach) / n:.1f}% were "
                f"positive on some sample but never among the k largest (outcompeted)" +
                (": most silent latents are outcompeted, not out of reach." if holds else
                 ": most silent latents are out of reach."))
    return Verdict(name, holds, {"silent_pct": silent / n, "out_of_reach_pct": reach / n,
                                 "outcompeted_pct": (silent - reach) / n, "out_of_reach_share": share}, sentence)
