"""aen_lib.results.claims.aen_sae (chapter 5): the claims read the right numbers of hand-made tables."""

import pytest

from aen_lib.results.claims import CLAIMS


def test_solver_must_not_lose_to_the_encoder():
    claim = CLAIMS["solver_beats_encoder"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers["min_gap"] == pytest.approx(0.35) and "the elastic-net SAE" in v.sentence
    assert claim(df.assign(objective_gap=[-5e-5, 0.3])).holds  # within the solver's tolerance


def test_steepness_names_each_outcome():
    claim = CLAIMS["l1_target_outruns_its_encoder"]
    df = claim.example()
    assert claim(df).holds
    both = df.assign(target_lipschitz=[18.0, 2.0])
    v = claim(both)
    assert v.holds is False and "both targets are steeper" in v.sentence
    neither = df.assign(target_lipschitz=[1.0, 1.0])
    assert "neither target" in claim(neither).sentence
    assert claim(df.iloc[:1]).holds is None


def test_amortisation_gap_comparison():
    claim = CLAIMS["elastic_net_amortises_better"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers == {"l1": 0.62, "en": 0.52}
    assert claim(df.assign(rel_code_error=[0.5, 0.6])).holds is False


def test_warmup_needs_a_margin_and_complete_windows():
    claim = CLAIMS["warmup_keeps_latents_alive"]
    df = claim.example()
    v = claim(df, window_samples=3200)
    assert v.holds and "3,200 training samples" in v.sentence
    assert claim(df.assign(dead_pct_window=[10.0, 10.5])).holds is False
    assert claim(df.assign(dead_pct_window=[float("nan"), 10.0])).holds is None


def test_dictionary_recovery_counts_atoms():
    claim = CLAIMS["aen_sae_recovers_dictionary"]
    df = claim.example()
    v = claim(df)
    assert v.holds is False and v.numbers["recovered"] == 10 and "10 of the 128" in v.sentence
    assert claim(df.assign(recovered_atoms=[65, 0])).holds
    assert claim(df.assign(recovered_atoms=[64, 0])).holds is False  # exactly half is not most
