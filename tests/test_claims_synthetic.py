"""aen_lib.results.claims.synthetic and aen_lib.results.claims.paper_size on hand-made frames: the numbers each claim reads, when it is
not testable, and the helpers that name dead-% definitions and count the paper's statements.

(Every registered claim's counter-example is tried in tests/test_claims.py; the committed records in
tests/test_chapter6_checks.py.)
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aen_lib.results.claims import CLAIMS, Verdict
from aen_lib.results.claims.paper_size import against_topk_note
from aen_lib.results.claims.synthetic import (dead_definitions, definition_note, figure2_verdicts, paper_tally,
                                      verdicts_frame)


# --- naming and counting -----------------------------------------------------------------------------------------------

def test_dead_definitions_of_the_default_run():
    # 1000 steps, a log every 20, a 200-step window, 64 samples: the last ten logs (steps 820–1000) see 20–200 steps
    names = dead_definitions(steps=1000, log_every=20, dead_window_steps=200, batch_size=64)
    assert names == {"dead_pct": "the mean of the last 10 logs, windows of 1,280–12,800 samples",
                     "dead_pct_window": "the last complete window, 12,800 samples"}
    assert dead_definitions(steps=1000, log_every=20, dead_window_steps=200, batch_size=64, short=True) == {
        "dead_pct": "the mean of the last 10 logs", "dead_pct_window": "the last complete window"}
    short_run = dead_definitions(steps=30, log_every=3, dead_window_steps=60, batch_size=32)
    assert "none: the run is shorter than one window" in short_run["dead_pct_window"]


def test_the_paper_tally_counts_only_the_papers_judged_statements():
    v = figure2_verdicts(CLAIMS["fig2_topk_starves_more"].example(), k=16)
    assert paper_tally(v) == {"hold": 4, "judged": 4, "statements": 4}
    v["fig2_aen_has_none"] = Verdict("fig2_aen_has_none", None, {}, "not testable")
    v["rho_grows_least_for_aen"] = Verdict("rho_grows_least_for_aen", False, {}, "")  # the book's: not counted
    assert paper_tally(v) == {"hold": 3, "judged": 3, "statements": 4}


def test_verdicts_frame_says_who_makes_each_statement():
    v = figure2_verdicts(CLAIMS["fig2_topk_starves_more"].example(), k=16)
    table = verdicts_frame([({"dead %": "x"}, v["fig2_topk_starves_more"]), v["rho_starvation_grows"]])
    assert table["made by"].tolist() == ["the paper", "the book's question"]
    assert table["dead %"].tolist()[0] == "x" and math.isnan(table["dead %"].tolist()[1])
    assert table["verdict"].tolist() == ["holds", "holds"]


def test_definition_note():
    a, b = Verdict("fig2_aen_has_none", False, {}, ""), Verdict("fig2_aen_has_none", True, {}, "")
    names = {"dead_pct": "the last logs", "dead_pct_window": "the window"}
    assert definition_note({"dead_pct": a, "dead_pct_window": b}, names) == (
        "With dead % as the last logs: does not hold; with dead % as the window: holds — the verdict depends on "
        "the definition.")
    assert definition_note({"dead_pct": b, "dead_pct_window": b}, names).endswith("the same under every definition.")
    with pytest.raises(ValueError, match="one claim"):
        definition_note({"dead_pct": a, "x": Verdict("other", True, {}, "")}, names)


def test_against_topk_note_follows_the_two_verdicts():
    aen, van = "aen_fewer_dead_than_topk_nearby_l0", "vanilla_fewer_dead_than_topk_nearby_l0"

    def v(name, holds):
        return Verdict(name, holds, {}, "")

    assert "evidence against TopK" in against_topk_note(v(aen, True), v(van, True))
    assert "single out AEN's objective" in against_topk_note(v(aen, True), v(van, False))
    assert "not tested" in against_topk_note(v(aen, True), v(van, None))
    assert against_topk_note(v(aen, False), v(van, True)).endswith("while vanilla ℓ1 does.")
    with pytest.raises(ValueError, match="takes the verdicts"):
        against_topk_note(v(van, True), v(aen, True))


# --- the Figure-2 claims' options ---------------------------------------------------------------------------------------

def test_the_dead_column_is_chosen_and_checked():
    df = CLAIMS["fig2_aen_has_none"].example()
    df.loc[(df["rho"] == 0.0) & (df["method"] == "aen"), "dead_pct_window"] = 3.0  # dead over the last window only
    assert CLAIMS["fig2_aen_has_none"](df).holds is True
    assert CLAIMS["fig2_aen_has_none"](df, dead="dead_pct_window").holds is False
    with pytest.raises(ValueError, match="not a column"):
        CLAIMS["fig2_aen_has_none"](df, dead="dead_pct_tokens")


def test_the_ev_rule_can_be_switched_off_and_names_each_weak_sae():
    df = CLAIMS["fig2_topk_starves_more"].example()
    weak = df.assign(ev=df["ev"].where(df["method"] != "aen", 0.1))
    v = CLAIMS["fig2_topk_starves_more"](weak)
    assert v.holds is None and "AEN (ours) SAE matched at L0 ≈ 16 (aen a, L0 16.0) explains 0.10" in v.sentence
    assert CLAIMS["fig2_topk_starves_more"](weak, min_ev=None).holds is True
    assert CLAIMS["fig2_topk_starves_more"](weak, min_ev=0.05).holds is True


def test_equal_reconstruction_says_ev_rises_only_when_it_does():
    df = CLAIMS["fig2_equal_reconstruction"].example()
    extra = df[(df["rho"] == 0.0) & (df["method"] == "topk")].assign(variant="topk-b", label="topk b", l0=32.0, ev=0.95)
    rising = pd.concat([df, extra], ignore_index=True)
    v = CLAIMS["fig2_equal_reconstruction"](rising)
    assert v.numbers["ev_rises_with_l0"] == ["topk"] and "EV rises with L0" in v.sentence
    falling = pd.concat([df, extra.assign(ev=0.5)], ignore_index=True)
    assert "EV rises" not in CLAIMS["fig2_equal_reconstruction"](falling).sentence
    assert "auxk_ev" not in v.numbers  # no TopK + AuxK in the frame: nothing said about it


# --- the checks that stop the chapter -------------------------------------------------------------------------------------

def test_grid_complete_names_each_problem():
    claim = CLAIMS["grid_complete"]
    df = claim.example()
    assert claim(df, expected=len(df)).holds is True
    assert "12 SAEs where the grid has 13" in claim(df, expected=13).sentence
    twice = pd.concat([df, df.iloc[:1]], ignore_index=True)
    assert "hold a variant twice" in claim(twice).sentence
    skipped = df.assign(skipped_steps=[1] + [0] * (len(df) - 1))
    assert claim(skipped).holds is False and "1 SAE(s) skipped a step" in claim(skipped).sentence


def test_hard_sparsity_lists_the_short_saes_and_needs_a_topk():
    claim = CLAIMS["topk_l0_at_most_k"]
    v = claim(claim.example())
    assert v.holds and v.numbers["short"] == 2 and "ρ 0 topk k=32 L0 31.5" in v.sentence
    assert claim(claim.example().assign(method="relu_l1")).holds is None


def test_the_dictionary_claim_needs_two_rhos():
    claim = CLAIMS["spike_hardens_dictionary"]
    assert claim(claim.example().iloc[:1]).holds is None
    assert claim(claim.example()).holds is True


# --- beyond Figure 2 ------------------------------------------------------------------------------------------------------

def test_nearby_pairs_respect_the_ratio_and_skip_runs_without_a_window():
    claim = CLAIMS["aen_fewer_dead_than_topk_nearby_l0"]
    df = claim.example()
    v = claim(df)
    assert v.holds and v.numbers["pairs"] == ["aen λ1=0.001 (L0 34.0) 44.0% against topk k=32 (L0 30.0) 96.0%"]
    assert len(claim(df, max_ratio=2.0).numbers["pairs"]) == 2  # AEN at L0 4 now pairs with TopK k=8 at L0 7
    assert claim(df, margin=60.0).holds is False
    no_window = df.assign(dead_pct_window=float("nan"))
    assert claim(no_window).holds is None and claim(no_window, dead="dead_pct").holds is True


def test_shrinkage_pairs_only_twins_at_the_same_l1_and_l2():
    claim = CLAIMS["adaptive_weights_cut_shrinkage"]
    df = claim.example()
    assert len(claim(df).numbers["pairs"]) == 2
    other_l2 = df.assign(config_l2=df["config_l2"].where(df["method"] != "aen", 0.01))
    assert len(claim(other_l2).numbers["pairs"]) == 1  # the AEN has no elastic-net twin any more
    assert claim(df[df["method"].isin(["aen", "relu_l1"])]).holds is None


def test_auxk_and_reach_are_not_testable_without_their_inputs():
    auxk = CLAIMS["auxk_cuts_topk_death"]
    assert auxk(auxk.example()[lambda d: d["method"] == "topk"]).holds is None
    assert auxk(auxk.example()).numbers["cut_min"] == pytest.approx(2.5)
    reach = CLAIMS["topk_dead_out_of_reach"]
    assert reach(reach.example().assign(method="relu_l1")).holds is None
