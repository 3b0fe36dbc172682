"""Chapter 7's wording of the factorial verdicts (aen_lib.book.spiked_chapter): which verdicts turn over when a cell
trained on two machines is read from its other copy, and the floor two machines set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aen_lib.book.spiked_chapter import (factorial_verdicts, other_copy_sentence, replicate_sentence, verdict_key)
from aen_lib.results.claims import CLAIMS
from aen_lib.results.factorial import factorial_frame

REF = Path(__file__).resolve().parents[1] / "reference"
PAPER0, FACT0 = REF / "spiked_paper_rho0_seed0", REF / "spiked_factorial_rho0_seed0"
both = pytest.mark.skipif(not (PAPER0.is_dir() and FACT0.is_dir()),
                          reason="the paper and factorial sets at ρ = 0, seed 0 are not both committed")


def test_verdict_keys_name_claim_metric_and_rho():
    assert verdict_key("factorial_l2_lowers_death", "dead_pct_window", 0.9) == "l2_lowers_death_dead_0_9"
    assert verdict_key("factorial_adaptive_smaller_than_l2", "eval_dead_pct", 0.0) == "adaptive_smaller_than_l2_eval_0"


def _two_copies(tmp_path: Path, bump: float = 0.0) -> Path:
    """The paper and factorial sets at ρ = 0, seed 0 (two CPU models); ``bump`` raises the factorial copy's ℓ2 cells'
    dead % (a deliberately broken copy)."""
    for folder in (PAPER0, FACT0):
        shutil.copytree(folder, tmp_path / folder.name)
    for rec in (tmp_path / FACT0.name).glob("*-*.json"):
        r = json.loads(rec.read_text())
        if r["method"] in ("elastic_net", "aen"):
            r["final"]["dead_pct_window"] += bump
            rec.write_text(json.dumps(r))
    return tmp_path


@both
def test_a_verdict_that_turns_over_with_the_copy_is_named(tmp_path):
    root = _two_copies(tmp_path, bump=5.0)  # on the factorial copy the ℓ2 term now raises dead % by 5 points
    frame = factorial_frame(root, 0.0, seeds=(0,))
    verdicts = factorial_verdicts({0.0: frame})
    assert verdicts["l2_lowers_death_dead_0"].holds is False
    text = other_copy_sentence(root, 0.0, frame, verdicts)
    assert CLAIMS["factorial_l2_lowers_death"].statement in text
    assert "turns over to “holds”" in text and "the last window" in text
    assert "is not evidence either way" in text


@both
def test_no_replicate_no_other_copy(tmp_path):
    shutil.copytree(FACT0, tmp_path / FACT0.name)
    frame = factorial_frame(tmp_path, 0.0, seeds=(0,))
    assert other_copy_sentence(tmp_path, 0.0, frame, factorial_verdicts({0.0: frame})).startswith("No cell")
    assert replicate_sentence(tmp_path, {0.0: frame}).startswith("No factorial cell")


@both
def test_the_replicate_floor_names_the_machines_from_the_provenance(tmp_path):
    root = _two_copies(tmp_path)
    text = replicate_sentence(root, {0.0: factorial_frame(root, 0.0, seeds=(0,))})
    cpus = {c["cpu"] for f in (PAPER0, FACT0) for c in json.loads((f / "provenance.json").read_text())["invocations"]}
    assert text.startswith("4 of the factorial's cells") and all(cpu in text for cpu in cpus)
    assert "different commits" in text
