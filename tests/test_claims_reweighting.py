"""aen_lib.results.claims.reweighting (chapter 4): the claims read the right numbers of hand-made tables."""

import pytest

from aen_lib.results.claims import CLAIMS


def _set(df, design, penalty, col, value):
    out = df.copy()
    out.loc[(out["design"] == design) & (out["penalty"] == penalty), col] = value
    return out


def test_headline_names_what_fails():
    claim = CLAIMS["aen_recovers_support_where_lasso_fails"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers["aen_fails"] == 1.0 and v.numbers["lasso_fails"] == 0.0
    v = claim(_set(df, "fails", "adaptive_elastic_net", "recovery", 0.25))
    assert v.holds is False and "adaptive elastic net recovers S in only 25%" in v.sentence
    v = claim(_set(df, "fails", "lasso", "recovery", 0.75))
    assert v.holds is False and "the design does not show the lasso's failure" in v.sentence
    v = claim(_set(df, "holds", "adaptive_elastic_net", "shrinkage", 0.5))
    assert v.holds is False and "not less than the lasso's 0.440" in v.sentence
    assert claim(df[df["penalty"] != "lasso"]).holds is None


def test_the_lasso_and_the_adaptive_lasso():
    df = CLAIMS["lasso_recovers_where_irc_holds"].example()
    assert CLAIMS["lasso_recovers_where_irc_holds"](_set(df, "holds", "lasso", "recovery", 0.4)).holds is False
    ada = CLAIMS["adaptive_lasso_recovers_and_shrinks_less"]
    assert ada(df).holds
    assert ada(_set(df, "fails", "adaptive_lasso", "recovery", 0.3)).holds is False


def test_irc_against_the_authors_only_at_their_sizes():
    claim = CLAIMS["irc_matches_authors"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers["max_diff"] == pytest.approx(0.01)
    assert claim(df.assign(n=64)).holds is None
    assert claim(df.assign(irc_mean=df["authors"] + 0.05)).holds is False


def test_irc_trend_needs_both_ends():
    claim = CLAIMS["irc_fails_from_rho_03"]
    df = claim.example()
    assert claim(df).holds
    assert claim(df[df["rho"] > 0]).holds is None
    low = df.copy()
    low.loc[low["rho"] == 0.3, "irc_mean"] = 0.99
    assert claim(low).holds is False


def test_weights_ranking_and_how_many_sit_at_the_cap():
    claim = CLAIMS["weights_rank_true_atoms_first"]
    df = claim.example()
    v = claim(df, w_max=1000.0)
    assert v.holds and v.numbers["true_max"] == 3.8 and v.numbers["other_min"] == 4.4
    assert v.numbers["others_at_w_max"] == 5 and v.numbers["ratio"] == pytest.approx(4.4 / 3.8)
    assert "4.40" in v.sentence and "5 of the 8 other atoms" in v.sentence
    assert claim(df, w_max=2000.0).numbers["others_at_w_max"] == 0


def test_weighted_condition():
    claim = CLAIMS["weights_repair_irc"]
    df = claim.example()
    assert claim(df).holds
    assert claim(df.assign(irc_one_sided=[0.9, 0.4])).holds is False  # nothing to repair
    assert claim(df.iloc[:1]).holds is None


def test_bias_needs_three_penalties_on_the_support():
    claim = CLAIMS["oracle_bias_matches_solver"]
    df = claim.example()
    assert claim(df).holds
    two = df.assign(right_support=[True, True, False, False])
    assert claim(two).holds is None
    off = df.copy()
    off.loc[2, "max_diff"] = 1e-3
    assert claim(off).holds is False
    off.loc[2, "right_support"] = False  # a penalty off the support is not compared
    assert claim(off).holds is True


def test_curvature_compares_the_ends_of_rho():
    claim = CLAIMS["lasso_curvature_grows_with_rho"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers == {"curvature_lo": 1.4, "curvature_hi": 14.9}
    assert claim(df[df["rho"] == 0.0]).holds is None


def test_the_ablation_isolates_the_weights():
    claim = CLAIMS["weights_not_l2_fix_support"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers == {"elastic_net": 0.0, "adaptive_elastic_net": 1.0}
    assert claim(_set(df, "fails", "adaptive_elastic_net", "recovery", 0.4)).holds is False
    assert claim(df[df["penalty"] != "elastic_net"]).holds is None
