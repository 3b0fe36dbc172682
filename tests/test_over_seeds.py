"""Claims judged seed by seed (aen_lib.results.claims.over_seeds) on the seeds sets of the paper grid (chapter 6)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aen_lib.results.claims import CLAIMS, over_seeds
from aen_lib.results.reference import seeds_frame

REPO = Path(__file__).resolve().parents[1]
REF = REPO / "reference"
HAS_SEEDS_09 = (REF / "spiked_seeds_rho0.9_seed1").is_dir()


def _seeds(example: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    return pd.concat([example.drop(columns="seed", errors="ignore").assign(seed=s) for s in range(n)], ignore_index=True)


def test_a_claim_holds_over_seeds_only_when_it_holds_on_every_seed():
    claim = CLAIMS["aen_fewer_dead_than_topk_nearby_l0"]
    frame = _seeds(claim.example())
    v = over_seeds(claim.name, frame)
    assert v.holds and v.numbers["per_seed"] == {0: True, 1: True, 2: True} and v.numbers["holding"] == 3
    broken = pd.concat([frame[frame["seed"] != 1], claim.counterexample(frame[frame["seed"] == 1])])
    w = over_seeds(claim.name, broken)
    assert w.holds is False and w.numbers["per_seed"] == {0: True, 1: False, 2: True}
    assert "fails on seed 1 (holds on 2 of 3 tested)" in w.sentence
    untestable = frame[frame["method"] != "topk"]
    assert over_seeds(claim.name, untestable).holds is None


def test_over_seeds_names_what_it_lacks():
    claim = CLAIMS["aen_fewer_dead_than_topk_nearby_l0"]
    with pytest.raises(ValueError, match="needs a 'seed' column"):
        over_seeds(claim.name, claim.example().drop(columns="seed", errors="ignore"))
    with pytest.raises(ValueError, match="unknown claim 'no_such_claim'"):
        over_seeds("no_such_claim", _seeds(claim.example()))


@pytest.mark.skipif(not HAS_SEEDS_09, reason="no seeds set committed at rho 0.9")
def test_at_rho_09_aen_starves_less_than_topk_on_every_committed_seed_and_not_on_a_broken_copy():
    runs = seeds_frame(REF, 0.9)
    assert sorted(runs["seed"].unique())[:2] == [0, 1]
    assert runs.groupby("seed")["variant"].nunique().nunique() == 1  # every seed judged on the same SAEs
    v = over_seeds("aen_fewer_dead_than_topk_nearby_l0", runs, dead="dead_pct_window")
    assert v.holds, v.sentence
    broken = runs.copy()  # seed 1's AEN given TopK's dead %: the statement must fail there
    aen1 = (broken["seed"] == 1) & (broken["method"] == "aen")
    broken.loc[aen1, "dead_pct_window"] = broken.loc[(broken["seed"] == 1) & (broken["method"] == "topk"),
                                                     "dead_pct_window"].max()
    w = over_seeds("aen_fewer_dead_than_topk_nearby_l0", broken, dead="dead_pct_window")
    assert w.holds is False and w.numbers["per_seed"][1] is False
