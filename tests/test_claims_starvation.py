"""aen_lib.results.claims.starvation (chapter 1): the claims read the right numbers of a hand-made table of runs."""

import pandas as pd
import pytest

from aen_lib.results.claims import CLAIMS
from aen_lib.results.claims.starvation import FRESH, WINDOW


def _table():
    return CLAIMS["topk_starves_more_than_l1_at_matched_l0"].example()


def test_headline_uses_the_window_count_and_every_seed():
    df = _table()
    v = CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df, k=8, tol=0.25, window_samples=64_000)
    assert v.holds and v.numbers["topk"] == pytest.approx(16.0) and v.numbers["l1"] == pytest.approx(0.0)
    assert "64,000 training samples" in v.sentence and "no firing in the last training window" in v.sentence
    # one seed whose gap is within the margin is enough to fail it
    df.loc[(df["run"] == "relu_l1_matched") & (df["seed"] == 1), WINDOW] = 15.5
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df, k=8).holds is False
    # the fresh count does not enter the headline
    df2 = _table().assign(**{FRESH: 50.0})
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df2, k=8).holds is True


def test_the_fresh_count_is_its_own_claim():
    df = _table()
    claim = CLAIMS["topk_silent_more_than_l1_on_fresh_samples"]
    v = claim(df, k=8, eval_samples=8192)
    assert v.holds and v.numbers["gap_min"] == pytest.approx(37.1) and "8,192 of them" in v.sentence
    df.loc[df["run"] == "relu_l1_matched", FRESH] = 36.9  # the ℓ1 SAE's rare latents count as dead here
    assert claim(df, k=8).holds is False
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df, k=8).holds is True


def test_unmatched_sparsity_is_not_evidence():
    df = _table()
    df.loc[df["run"] == "relu_l1_matched", "l0"] = 12.0  # 50% above k = 8
    v = CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df, k=8, tol=0.25)
    assert v.holds is None and "not within 25% of k = 8" in v.sentence and "confound" in v.sentence
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](df, k=8, tol=0.6).holds is True
    # a seed without its matched ℓ1 run
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](_table().iloc[:-1], k=8).holds is None


def test_k_defaults_to_topk_l0():
    assert CLAIMS["topk_starves_more_than_l1_at_matched_l0"](_table()).numbers["k"] == 8


def test_free_l1_needs_both_alive_and_dense():
    claim = CLAIMS["free_l1_is_denser"]
    df = _table()
    assert claim(df, k=8).holds
    df.loc[df["run"] == "relu_l1", WINDOW] = 5.0
    assert claim(df, k=8).holds is False


def test_reconstruction_gap_per_seed():
    claim = CLAIMS["matched_l1_reconstructs_worse"]
    df = _table()
    v = claim(df)
    assert v.holds and v.numbers["gap_min"] == pytest.approx(0.49)
    df.loc[(df["run"] == "relu_l1_matched") & (df["seed"] == 0), "explained_variance"] = 0.56
    assert claim(df).holds is False


def test_revival_needs_every_seed_and_two_windows():
    claim = CLAIMS["topk_dead_latents_revive"]
    churn = claim.example()
    assert claim(churn).numbers["revived"] == 16
    one_seed_dead = churn.copy()
    one_seed_dead.loc[(one_seed_dead["seed"] == 1) & (one_seed_dead["event"] == "revived"), "latents"] = 0
    assert claim(one_seed_dead).holds is False
    assert claim(churn.iloc[0:0]).holds is None


def test_outcompeted_or_out_of_reach():
    claim = CLAIMS["topk_silent_latents_are_outcompeted"]
    df = _table()
    v = claim(df)
    assert v.holds and v.numbers["out_of_reach_pct"] == pytest.approx(5.0)
    assert v.numbers["outcompeted_pct"] == pytest.approx(32.5)
    df.loc[df["run"] == "topk", "eval_negative_pct"] = 20.0  # more than half of 37.5
    assert claim(df).holds is False
    assert claim(df.assign(**{FRESH: 0.0})).holds is None


def test_a_table_without_the_fresh_count_is_refused():
    with pytest.raises(ValueError, match="needs the columns"):
        CLAIMS["topk_silent_more_than_l1_on_fresh_samples"](pd.DataFrame(_table()).drop(columns=[FRESH]))
