"""aen_lib.results.claims: every registered claim can fail (its counter-example flips it), and the claims read the right
numbers on hand-made frames."""

import pandas as pd
import pytest

from aen_lib.results.claims import CLAIMS, DEAD_COLUMN


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_every_claim_flips_on_its_counterexample(name):
    claim = CLAIMS[name]
    example = claim.example()
    verdict = claim(example)
    assert verdict.holds is not None, f"{name}: its example is not testable ({verdict.sentence})"
    broken = claim(claim.counterexample(example))
    assert broken.holds is not None and broken.holds != verdict.holds, (
        f"{name} gave {verdict.holds} on its example and {broken.holds} on its counter-example: it cannot fail")
    assert verdict.sentence and verdict.claim == name


def test_a_claim_names_missing_columns():
    with pytest.raises(ValueError, match="needs the columns"):
        CLAIMS["mean_removal_cuts_death"](pd.DataFrame({"study": ["paper"]}))


def test_mean_removal_reads_each_twin_pair():
    df = CLAIMS["mean_removal_cuts_death"].example()
    v = CLAIMS["mean_removal_cuts_death"](df)
    assert v.holds and v.numbers["drop_min"] == pytest.approx(15.0) and v.numbers["drop_max"] == pytest.approx(76.0)
    # one pair whose drop is within the margin is enough to fail it
    df.loc[(df["study"] == "biasmean") & (df["method"] == "relu_l1"), DEAD_COLUMN] = 44.5
    assert CLAIMS["mean_removal_cuts_death"](df).holds is False



def test_mean_removal_leaves_out_pairs_with_no_death_to_cut():
    """A pair already at most the margin dead with b_dec at 0 cannot fall by more than the margin: it is named, not
    judged, and a failing pair elsewhere still fails the claim."""
    claim = CLAIMS["mean_removal_cuts_death"]
    df = claim.example()
    aen = df["method"] == "aen"
    df.loc[aen & (df["study"] == "paper"), DEAD_COLUMN] = 0.9
    df.loc[aen & (df["study"] == "biasmean"), DEAD_COLUMN] = 0.0
    v = claim(df)
    assert v.holds is True and v.numbers["left_out"] == ["AEN λ1=0.001"] and "not judged" in v.sentence
    assert v.numbers["drop_min"] == pytest.approx(15.0)  # the two judged pairs only
    df.loc[(df["study"] == "biasmean") & (df["method"] == "relu_l1"), DEAD_COLUMN] = 44.5
    assert claim(df).holds is False
    calm = df.assign(**{DEAD_COLUMN: 0.5})
    v = claim(calm)
    assert v.holds is None and "no death for the mean to cut" in v.sentence


def test_aen_against_its_neighbours_in_l0():
    claim = CLAIMS["aen_starves_less_at_matched_l0"]
    df = claim.example()
    v = claim(df)
    assert v.holds and len(v.numbers["pairs"]) == 2 and v.numbers["gap_min"] == pytest.approx(15.0)
    assert v.numbers["beats"] == {"topk": True, "relu_l1": True}
    far = df.assign(l0=df["l0"].where(df["method"] != "aen", 500.0))  # no neighbour within a factor 1.5
    assert claim(far).holds is None
    assert claim(df, others=("topk",)).numbers["gap_min"] == pytest.approx(15.0)


def test_the_outlier_explanation_follows_the_two_verdicts():
    from aen_lib.results.claims import Verdict
    from aen_lib.results.claims.outlier import outlier_explanation

    def v(name, holds):
        return Verdict(name, holds, {}, "")

    r, a = "mean_removal_cuts_death", "aen_starves_less_at_matched_l0"
    assert outlier_explanation(v(r, True), v(a, False)).startswith("The outlier explanation:")
    assert outlier_explanation(v(r, True), v(a, True)).startswith("Both:")
    partial = outlier_explanation(v(r, False), v(a, True))
    assert "at most part of the story" in partial and "AEN still starves less" in partial
    assert "no longer has fewer dead latents than TopK and vanilla ℓ1" in outlier_explanation(v(r, False), v(a, False))
    # with the per-method outcome, the sentence says which comparison AEN lost and which it kept
    mixed = Verdict(a, False, {"beats": {"topk": True, "relu_l1": False}}, "")
    text = outlier_explanation(v(r, True), mixed)
    assert "no longer has fewer dead latents than vanilla ℓ1" in text and "still has fewer than TopK" in text
    assert "close enough in L0" in outlier_explanation(v(r, True), v(a, None))
    assert "Neither" in outlier_explanation(v(r, None), v(a, None))
    with pytest.raises(ValueError, match="takes the verdicts"):
        outlier_explanation(v(a, True), v(r, True))
    # the same answer for centred inputs names that remedy, not b_dec's start
    centred = outlier_explanation(v(r, True), v(a, True), treatment="centred")
    assert "every SAE trained on centred inputs" in centred and "started at the mean" not in centred
    assert "on centred inputs" in outlier_explanation(v(r, None), v(a, None), treatment="centred")
    with pytest.raises(ValueError, match="treatment='median'"):
        outlier_explanation(v(r, True), v(a, True), treatment="median")


def test_runs_without_a_complete_dead_window_are_not_evidence():
    df = CLAIMS["mean_removal_cuts_death"].example()
    df.loc[0, DEAD_COLUMN] = float("nan")
    assert CLAIMS["mean_removal_cuts_death"](df).holds is None
    only = df[df["study"] == "biasmean"].assign(**{DEAD_COLUMN: float("nan")})
    assert CLAIMS["aen_starves_less_at_matched_l0"](only).holds is None
