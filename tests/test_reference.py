"""The reference-results store (aen_lib.reference): committed sets are complete and well-formed, and the check that
says so fails on a broken set."""

import json
import shutil
from pathlib import Path

import pytest

from aen_lib.reference import SPIKED_PAPER_GRID, check_set, committed_sets, main, run_spiked
from aen_lib.sweep import expand_grid

REPO = Path(__file__).resolve().parents[1]
SETS = committed_sets(REPO / "reference")


@pytest.mark.parametrize("folder", SETS or [None], ids=[p.name for p in SETS] or ["none-committed"])
def test_every_committed_set_is_complete(folder):
    if folder is None:
        pytest.skip("no reference set is committed yet (paper-size runs are in progress)")
    prov = check_set(folder)
    assert prov["members"] == len(expand_grid(dict(d_in=256, d_sae=1024), SPIKED_PAPER_GRID))
    assert prov["protocol"]["train"]["steps"] == 50_000


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """The paper-size grid for 6 steps: the same command path, minutes faster."""
    root = tmp_path_factory.mktemp("ref")
    out = run_spiked(0.0, 0, out_root=root / "out", work_root=root / "work", steps=6, command="test", progress=False)
    return out


def test_a_finished_set_passes_the_check_and_is_not_overwritten(tiny_set):
    prov = check_set(tiny_set)
    assert prov["members"] == 16 and prov["member_steps"] == 16 * 6
    assert prov["invocations"][0]["torch"] and prov["invocations"][0]["cpu"]
    before = {p.name: p.read_bytes() for p in tiny_set.iterdir()}
    assert run_spiked(0.0, 0, out_root=tiny_set.parent, work_root=tiny_set.parent / "w2", steps=6) is None
    assert {p.name: p.read_bytes() for p in tiny_set.iterdir()} == before
    assert main(["check", str(tiny_set.parent)]) == 0


@pytest.mark.parametrize("damage, match", [
    (lambda f: next(f.glob("aen-*.json")).unlink(), "15 records but provenance.json says 16"),
    (lambda f: _edit(f, "provenance.json", lambda d: d.pop("command")), r"lacks \['command'\]"),
    (lambda f: _edit(f, next(f.glob("topk-*.json")).name, lambda d: d["history"].pop()), "does not reach step 6"),
    (lambda f: _edit(f, "provenance.json", lambda d: d.update(member_steps=1)), "does not add up"),
])
def test_the_check_fails_on_a_broken_set(tiny_set, tmp_path, damage, match):
    broken = tmp_path / tiny_set.name
    shutil.copytree(tiny_set, broken)
    damage(broken)
    with pytest.raises(ValueError, match=match):
        check_set(broken)


def _edit(folder, name, change):
    path = folder / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
