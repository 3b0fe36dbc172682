"""The 2 × 2 factorial read from the reference sets (aen_lib.results.factorial) and its claims."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from aen_lib.results.claims import CLAIMS
from aen_lib.results.factorial import CELLS, factorial_effects, factorial_frame, replicate_spread

REPO = Path(__file__).resolve().parents[1]
PAPER0 = REPO / "reference" / "spiked_paper_rho0_seed0"


def _cells(values: dict[str, float], seed: int = 0, matched: bool = True) -> list[dict]:
    return [{"seed": seed, "method": m, "matched": matched, "y": v} for m, v in values.items()]


def test_the_contrasts_are_those_of_a_two_by_two_design():
    """y = a + b·ℓ2 + c·adaptive + d·ℓ2·adaptive has ℓ2 effect b + d/2, adaptive effect c + d/2, interaction d/2."""
    a, b, c, d = 3.0, -1.5, 0.4, 0.6
    y = {m: a + b * l2 + c * ad + d * l2 * ad for m, (l2, ad) in CELLS.items()}
    eff = factorial_effects(pd.DataFrame(_cells(y)), metrics=["y"]).set_index("effect")["mean"]
    assert eff["l2"] == pytest.approx(b + d / 2)
    assert eff["adaptive"] == pytest.approx(c + d / 2)
    assert eff["interaction"] == pytest.approx(d / 2)


def test_only_complete_matched_seeds_count():
    y = {m: float(i) for i, m in enumerate(CELLS)}
    frame = pd.DataFrame(_cells(y, 0) + _cells(y, 1, matched=False) + _cells(y, 2)[:3])
    eff = factorial_effects(frame, metrics=["y"])
    assert set(eff["seeds"]) == {1} and all(set(p) == {0} for p in eff["per_seed"])
    with pytest.raises(ValueError, match="no seed has all four cells matched"):
        factorial_effects(frame[frame["seed"] != 0], metrics=["y"])
    with pytest.raises(ValueError, match="lacks"):
        factorial_effects(frame.drop(columns="matched"), metrics=["y"])


@pytest.mark.skipif(not PAPER0.is_dir(), reason="no paper set committed")
def test_the_committed_factorial_at_rho_0_has_every_cell_matched():
    frame = factorial_frame(REPO / "reference", 0.0)
    seeds = sorted(frame["seed"].unique())
    assert seeds[0] == 0 and len(frame) == 4 * len(seeds)
    assert frame["matched"].all(), frame[["seed", "method", "l0"]]
    assert set(frame[frame["seed"] == 0]["set"]) <= {"spiked_paper_rho0_seed0", "spiked_factorial_rho0_seed0"}
    # every committed factorial set of ρ = 0 contributes its cells, and sets that carry mechanism measures give them
    for s in seeds[1:]:
        assert set(frame[frame["seed"] == s]["set"]) == {f"spiked_factorial_rho0_seed{s}"}
        assert frame[frame["seed"] == s]["lipschitz_p99"].notna().all()


@pytest.mark.skipif(not PAPER0.is_dir(), reason="no paper set committed")
def test_two_sets_that_disagree_on_a_cell_are_refused(tmp_path):
    """A broken input: the paper set copied under a second name with one factorial cell's dead % changed."""
    for name in ("spiked_paper_rho0_seed0", "spiked_copy_rho0_seed0"):
        shutil.copytree(PAPER0, tmp_path / name)
    copy = tmp_path / "spiked_copy_rho0_seed0"
    prov = json.loads((copy / "provenance.json").read_text())
    prov["set"] = copy.name
    (copy / "provenance.json").write_text(json.dumps(prov))
    assert len(factorial_frame(tmp_path, 0.0, seeds=(0,))) == 4  # identical copies agree
    rec = next(p for p in sorted(copy.glob("relu_l1-*.json"))
               if json.loads(p.read_text())["sae_config"]["l1"] == 0.005)
    r = json.loads(rec.read_text())
    r["final"]["dead_pct_window"] += 1.0
    rec.write_text(json.dumps(r))
    with pytest.raises(ValueError, match="differs between sets.*same commit"):
        factorial_frame(tmp_path, 0.0, seeds=(0,))


@pytest.mark.skipif(not PAPER0.is_dir(), reason="no paper set committed")
def test_a_cell_trained_on_two_machines_is_read_once_with_its_spread(tmp_path):
    """The same doctored copy, but its invocations name another CPU: the cell is kept once (the first set) and the
    difference is reported as the replicate spread; the other cells, identical, carry none."""
    for name in ("spiked_paper_rho0_seed0", "spiked_copy_rho0_seed0"):
        shutil.copytree(PAPER0, tmp_path / name)
    copy = tmp_path / "spiked_copy_rho0_seed0"
    prov = json.loads((copy / "provenance.json").read_text())
    prov["set"] = copy.name
    for call in prov["invocations"]:
        call["cpu"] = "Another CPU"
    (copy / "provenance.json").write_text(json.dumps(prov))
    rec = next(p for p in sorted(copy.glob("relu_l1-*.json"))
               if json.loads(p.read_text())["sae_config"]["l1"] == 0.005)
    r = json.loads(rec.read_text())
    r["final"]["dead_pct_window"] += 0.25
    rec.write_text(json.dumps(r))
    frame = factorial_frame(tmp_path, 0.0, seeds=(0,))
    assert len(frame) == 4
    spread = replicate_spread(frame)
    assert list(spread["method"]) == ["relu_l1"]
    assert spread["replicate_dead_diff"].iloc[0] == pytest.approx(0.25)
    assert spread["replicate_l0_diff"].iloc[0] == pytest.approx(0.0)
    assert sorted(spread["replicate_sets"].iloc[0]) == ["spiked_copy_rho0_seed0", "spiked_paper_rho0_seed0"]


def test_a_rho_without_calibration_or_cells_is_named(tmp_path):
    with pytest.raises(ValueError, match="no calibrated λ1 at ρ = 0.5.*factorial_bracket"):
        factorial_frame(REPO / "reference", 0.5)
    bracket = REPO / "reference" / "spiked_factorial_bracket_rho0.9_seed0"
    if bracket.is_dir():  # the bracket's λ1 are not the factorial's: no cell, and the train command is named
        shutil.copytree(bracket, tmp_path / bracket.name)
        with pytest.raises(ValueError, match="--study factorial --rho 0.9"):
            factorial_frame(tmp_path, 0.9)


@pytest.mark.skipif(not PAPER0.is_dir(), reason="no paper set committed")
def test_the_factorial_claims_judge_the_committed_cells_and_flip_on_a_broken_frame():
    claim = CLAIMS["factorial_l2_lowers_death"]
    for replicate in ("factorial", "other"):  # either machine's copy of the cells trained twice
        frame = factorial_frame(REPO / "reference", 0.0, replicate=replicate)
        verdict = claim(frame)
        # what chapter 7 states at ρ = 0 on every seed; the deliberately broken frame must turn it over
        assert verdict.holds is True, verdict.sentence
        assert claim(claim.counterexample(frame)).holds is False
        assert "effect on L0 itself" in verdict.sentence
    smaller = CLAIMS["factorial_adaptive_smaller_than_l2"]
    assert smaller(smaller.example()).holds is True and smaller(smaller.counterexample(smaller.example())).holds is False


def test_replicate_chooses_which_copy_of_a_cell_trained_twice_is_read(tmp_path):
    """The paper set and the factorial set at ρ = 0, seed 0, trained on two CPU models: each choice reads its own copy
    of the four cells, with the values that copy's records hold."""
    fact0 = REPO / "reference" / "spiked_factorial_rho0_seed0"
    if not (PAPER0.is_dir() and fact0.is_dir()):
        pytest.skip("the paper and factorial sets at ρ = 0, seed 0 are not both committed")
    for folder in (PAPER0, fact0):
        shutil.copytree(folder, tmp_path / folder.name)
    ours = factorial_frame(tmp_path, 0.0, seeds=(0,)).set_index("method")
    other = factorial_frame(tmp_path, 0.0, seeds=(0,), replicate="other").set_index("method")
    assert set(ours["set"]) == {fact0.name} and set(other["set"]) == {PAPER0.name}
    for frame, folder in ((ours, fact0), (other, PAPER0)):
        recs = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in folder.glob("*-*.json")
                if json.loads(p.read_text())["sae_config"]["l1"] == 0.005 and json.loads(p.read_text())["method"] in frame.index}
        for method, rec in recs.items():
            assert frame.loc[method, "dead_pct_window"] == pytest.approx(rec["final"]["dead_pct_window"])
    with pytest.raises(ValueError, match="replicate='mine'"):
        factorial_frame(tmp_path, 0.0, seeds=(0,), replicate="mine")


FACT09 = REPO / "reference" / "spiked_factorial_rho0.9_seed0"


@pytest.mark.skipif(not FACT09.is_dir(), reason="no factorial set at rho 0.9 committed")
def test_at_rho_09_the_adaptive_weights_not_the_l2_term_lower_death():
    """What chapter 7 states at ρ = 0.9: the adaptive weights lower dead % on every seed, the ℓ2 term does not (it
    raises it); each verdict turns over on its deliberately broken frame."""
    frame = factorial_frame(REPO / "reference", 0.9)
    assert frame["matched"].all(), frame[["seed", "method", "l0"]]
    adaptive = CLAIMS["factorial_adaptive_lowers_death"]
    for metric in ("dead_pct_window", "eval_dead_pct"):
        v = adaptive(frame, metric=metric)
        assert v.holds is True, v.sentence
        assert "effect on L0 itself" in v.sentence
        assert CLAIMS["factorial_l2_lowers_death"](frame, metric=metric).holds is False
        assert CLAIMS["factorial_adaptive_smaller_than_l2"](frame, metric=metric).holds is False
    broken = frame.copy()
    for seed in broken["seed"].unique():  # adaptive cells given their fixed twins' dead %: no effect left
        s = broken["seed"] == seed
        for ad, fixed in (("adaptive_lasso", "relu_l1"), ("aen", "elastic_net")):
            broken.loc[s & (broken["method"] == ad), "dead_pct_window"] = float(
                broken.loc[s & (broken["method"] == fixed), "dead_pct_window"].iloc[0])
    assert adaptive(broken).holds is False


def test_factorial_summary_gives_means_and_seed_ranges():
    from aen_lib.results.factorial import factorial_summary

    frame = pd.DataFrame(_cells({"relu_l1": 1.0, "elastic_net": 2.0, "adaptive_lasso": 3.0, "aen": 4.0}, seed=0)
                         + _cells({"relu_l1": 3.0, "elastic_net": 2.0, "adaptive_lasso": 5.0, "aen": 4.0}, seed=1))
    out = factorial_summary(frame, ["y"]).set_index("method")
    assert out.loc["relu_l1", "y"] == 2.0 and out.loc["relu_l1", "y range"] == "1–3"
    assert out.loc["adaptive_lasso", "y"] == 4.0 and out.loc["elastic_net", "y range"] == "2–2"
    assert list(out["seeds"]) == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="lacks \\['z'\\]"):
        factorial_summary(frame, ["z"])


BRACKET09 = REPO / "reference" / "spiked_factorial_bracket_rho0.9_seed0"


@pytest.mark.skipif(not BRACKET09.is_dir(), reason="no bracket set committed")
def test_dead_per_l0_uses_the_two_members_nearest_the_target():
    from aen_lib.results.factorial import dead_per_l0
    from aen_lib.results.reference import set_frames

    runs = set_frames([BRACKET09])[0]
    slopes = dead_per_l0(BRACKET09).set_index("method")
    for method, g in runs.groupby("method"):
        g = g.assign(d=(g["l0"] - 22.5).abs()).sort_values("d")
        far = g.iloc[2]  # the member farthest from the target is not used
        assert far["l0"] not in (slopes.loc[method, "l0_a"], slopes.loc[method, "l0_b"])
    # near the target every method's dead % falls as L0 rises (chapter 7 uses this to bound the L0 confound)
    assert (slopes["slope"] < 0).all(), slopes
    with pytest.raises(ValueError, match="no 'nonsense'"):
        dead_per_l0(BRACKET09, metric="nonsense")


def test_the_factorial_figure_draws_one_panel_per_rho_and_the_effects():
    from aen_lib.book.plotting import factorial_figure

    rows = []
    for rho_shift in (0.0, 10.0):
        rows.append(pd.DataFrame([{**r, "l2": CELLS[r["method"]][0], "adaptive": CELLS[r["method"]][1],
                                   "dead_pct_window": r["y"] + rho_shift}
                                  for s in (0, 1) for r in _cells({"relu_l1": 1.0, "elastic_net": 2.0,
                                                                   "adaptive_lasso": 3.0, "aen": 4.0}, seed=s)]))
    fig = factorial_figure({0.0: rows[0], 0.9: rows[1]})
    assert len(fig.axes) == 3
    bars = [p.get_height() for p in fig.axes[2].patches]
    assert sorted(round(b, 6) for b in bars) == sorted([1.0, 2.0, 0.0] * 2)  # ℓ2, adaptive, interaction per ρ
    with pytest.raises(ValueError, match="no factorial frame"):
        factorial_figure({})
