"""aen_lib.results.claims.geometry (chapters 2 and 3): the claims read the right numbers of hand-made tables."""

import math

import pytest

from aen_lib.results.claims import CLAIMS


def test_regions_and_pairs():
    regions = CLAIMS["regions_match_solver"]
    assert regions(regions.example().assign(region_agreement=0.9995)).holds
    pairs = CLAIMS["pair_region_rule"]
    df = pairs.example()
    v = pairs(df)
    assert v.holds and v.numbers["without_region"] == ["{1,3}"]
    df.loc[1, "observed"] = True  # the grid shows a region the rule forbids
    v = pairs(df)
    assert v.holds is False and v.numbers["disagree"] == ["{1,3}"]


def test_path_and_end_support():
    path, end = CLAIMS["path_matches_sklearn"], CLAIMS["end_support_follows_irc"]
    df = path.example()
    assert path(df).holds and path(df.assign(path_in_lars=False)).holds is False
    assert end(df).holds  # IRC 1.002 > 1 and the path ends off the support
    assert end(df.assign(irc_one_sided=0.9)).holds is False
    assert end(df.assign(irc_one_sided=0.9, end_is_support=True)).holds


def test_two_atom_closed_form_and_blow_up():
    closed, blow = CLAIMS["two_atom_lipschitz_matches_closed_form"], CLAIMS["lasso_blows_up_elastic_net_capped"]
    df = closed.example()
    assert closed(df).numbers["rel_err"] == pytest.approx(0.001 / 1.001)
    above = df.assign(measured=df["theory"] * 1.001)
    assert closed(above).holds is False  # within 2 % but above the closed form
    assert closed(df.assign(both_active=False)).holds is None
    v = blow(df)
    assert v.holds and v.numbers["lasso_small_angle"] == 81.0
    en_above = df.copy()
    en_above.loc[en_above["l2"] > 0, "measured"] = 2.0
    assert blow(en_above).holds is False
    not_monotone = df.copy()
    not_monotone.loc[(not_monotone["l2"] == 0) & (not_monotone["theta_deg"] == 10.0), "measured"] = 90.0
    assert blow(not_monotone).holds is False


def test_identical_atoms():
    claim = CLAIMS["identical_atoms_split_lasso_only"]
    df = claim.example()
    assert claim(df).holds
    assert claim(df.assign(lasso_obj_gap=1e-3)).holds is False  # two lasso codes, but not two minimisers
    assert claim(df.assign(en_split_gap=0.1)).holds is False


def test_lipschitz_table_claims():
    df = CLAIMS["en_lipschitz_within_bound"].example()
    v = CLAIMS["en_lipschitz_within_bound"](df)
    assert v.holds and v.numbers["measurements"] == 4 and v.numbers["max_ratio_to_bound"] == pytest.approx(0.91 / 0.913)
    crude = df.copy()
    crude.loc[crude["l2"] == 0.3, "crude"] = 0.5
    assert CLAIMS["en_lipschitz_within_bound"](crude).holds is False
    assert CLAIMS["en_bound_is_approached"](df).numbers["tightness"] == pytest.approx(0.91 / 0.913)
    assert CLAIMS["worst_direction_matches_jacobian"](df).holds
    v = CLAIMS["small_l2_can_be_steeper_than_lasso"](df)
    assert v.holds and v.numbers["above"] == 1 and v.numbers["l2_above"] == [0.01]


def test_sensitivity_at_every_step():
    claim = CLAIMS["lasso_sensitivity_grows_with_rho"]
    df = claim.example()
    assert claim(df).holds
    bump = df.copy()
    bump.loc[1, "lambda_min_mean"] = 0.7  # rises between two levels
    assert claim(bump).holds is False
    assert claim(df.iloc[:1]).holds is None


def test_grouping_claims():
    bound, split = CLAIMS["grouping_bound_holds"], CLAIMS["elastic_net_splits_groups_evenly"]
    df = bound.example()
    assert bound(df).holds
    v = split(df)
    assert v.holds and v.numbers["en_share"] == 0.251 and v.numbers["group_size"] == 4
    close = df.copy()
    close.loc[(close["penalty"] == "lasso") & (close["c"] == 0.999), "gap_mean"] = 0.02  # not 5× the EN gap
    assert split(close).holds is False
    assert split(df[df["penalty"] == "lasso"]).holds is None
    assert math.isclose(1 / v.numbers["group_size"], 0.25)
