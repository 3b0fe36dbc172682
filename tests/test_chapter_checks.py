"""The headline checks of chapters 1 and 4 can fail: they fail on broken input and pass on the chapter's own results.

Each chapter defines its claim as a function in a code cell (chapter 1: TopK starves more than ReLU + l1 at matched
L0; chapter 4: the adaptive elastic net recovers the support where the lasso fails). These tests run the chapter
with its `ci` profile through papermill, then

* call the chapter's own check function on the results it wrote (must pass), and on the same results with the two
  methods swapped or with an unmatched run (must fail);
* run the chapter once more with a deliberately broken parameter (chapter 1: no lambda_1 search, so the l1 SAE is not
  sparsity-matched; chapter 4: w_max = 1, i.e. adaptive weights switched off) and show that papermill stops the
  chapter at the assertion that names the claim (AssertionError in the failing cell's output).

Chapter 6's paper-size section is run on two smoke reference sets (it must read them and draw its figures) and on a
copy with one TopK record broken (its hard-sparsity check must stop it).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CH1 = "01_feature_starvation"
CH4 = "04_adaptive_reweighting"


def _chapter_function(chapter: str, name: str):
    """Execute the code cell of ``chapter`` that defines ``name`` and return the function."""
    nb = nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"{chapter}: expected one cell defining {name}, found {len(cells)}"
    namespace: dict = {}
    exec(compile(cells[0], f"<{chapter}:{name}>", "exec"), namespace)
    return namespace[name]


class ChapterFailed(Exception):
    """papermill stopped the chapter; ``ename``/``evalue`` are those of the failing cell's error output."""

    def __init__(self, ename: str, evalue: str, log: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.log = ename, evalue, log


def _run_chapter(chapter: str, out_dir: Path, **overrides) -> Path:
    """papermill the chapter (its ci profile plus overrides, one thread) in a subprocess; return its results folder.

    A subprocess keeps the kernel away from pytest's output capture (an ipywidgets cell can stall a kernel started
    from a capturing pytest process). Raises :class:`ChapterFailed` with the failing cell's error if a cell fails.
    """
    params = yaml.safe_load((ROOT / "params" / "ci" / f"{chapter}.yaml").read_text()) or {}
    results = out_dir / "results"
    params.update(overrides, results_root=str(results))
    (out_dir / "params.yaml").write_text(yaml.safe_dump(params))
    out_nb = out_dir / f"{chapter}.ipynb"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=os.pathsep.join(
                   p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "chapters" / f"{chapter}.ipynb"), str(out_nb),
         "-f", str(out_dir / "params.yaml"), "-k", "python3", "--cwd", str(ROOT / "chapters"), "--no-progress-bar"],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    if proc.returncode != 0:
        errors = [o for c in nbformat.read(out_nb, as_version=4).cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"] if out_nb.is_file() else []
        if not errors:
            raise RuntimeError(f"papermill failed without a cell error:\n{proc.stderr[-3000:]}")
        raise ChapterFailed(errors[0]["ename"], errors[0]["evalue"], proc.stderr[-3000:])
    return results / chapter


# ------------------------------------------------------------------------------------------------------------------
# Chapter 1: TopK starves more than ReLU + l1 at matched L0
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ch1(tmp_path_factory):
    out = _run_chapter(CH1, tmp_path_factory.mktemp("ch1"))
    data = json.loads((out / "runs.json").read_text())
    topk = [r for r in data["runs"] if r["architecture"] == "topk"]
    check = _chapter_function(CH1, "check_topk_starves_more_at_matched_l0")
    return {"data": data, "topk": topk, "check": check, "k": data["parameters"]["topk_k"],
            "tol": data["parameters"]["l0_match_tol"]}


@pytest.mark.slow
def test_chapter1_check_passes_on_its_results(ch1):
    ch1["check"](ch1["topk"], ch1["data"]["matched_runs"], ch1["k"], ch1["tol"])


@pytest.mark.slow
def test_chapter1_check_fails_with_the_methods_swapped(ch1):
    with pytest.raises(AssertionError, match="not above|no dead latents"):
        ch1["check"](ch1["data"]["matched_runs"], ch1["topk"], ch1["k"], ch1["tol"])


@pytest.mark.slow
def test_chapter1_check_fails_at_unmatched_sparsity(ch1):
    unmatched = [r for r in ch1["data"]["runs"] if r["architecture"] == "relu_l1"]  # λ1 = l1, L0 far above k
    with pytest.raises(AssertionError, match="not within"):
        ch1["check"](ch1["topk"], unmatched, ch1["k"], ch1["tol"])


@pytest.mark.slow
def test_chapter1_check_fails_when_starvation_is_equal(ch1):
    equal = copy.deepcopy(ch1["data"]["matched_runs"])
    for r, t in zip(equal, sorted(ch1["topk"], key=lambda r: r["seed"])):
        r["dead_pct_final"] = t["dead_pct_final"]
    with pytest.raises(AssertionError, match="not above"):
        ch1["check"](ch1["topk"], equal, ch1["k"], ch1["tol"])


@pytest.mark.slow
def test_chapter1_fails_without_the_sparsity_search(tmp_path):
    """With no λ1 search the 'matched' ReLU + l1 SAE is the λ1 = l1 one (L0 far above k): the chapter must stop."""
    with pytest.raises(ChapterFailed) as info:
        _run_chapter(CH1, tmp_path, l1_search_steps=0)
    assert info.value.ename == "AssertionError"
    assert "not within" in info.value.evalue and "confound" in info.value.evalue


# ------------------------------------------------------------------------------------------------------------------
# Chapter 4: the adaptive elastic net recovers the support where the lasso fails
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ch4(tmp_path_factory):
    out = _run_chapter(CH4, tmp_path_factory.mktemp("ch4"))
    summary = json.loads((out / "summary.json").read_text())
    best = {name: d["best"] for name, d in summary["designs"].items()}
    return {"best": best, "check": _chapter_function(CH4, "check_aen_recovers_support_where_lasso_fails")}


@pytest.mark.slow
def test_chapter4_check_passes_on_its_results(ch4):
    ch4["check"](ch4["best"])


@pytest.mark.slow
def test_chapter4_check_fails_with_lasso_and_aen_swapped(ch4):
    swapped = copy.deepcopy(ch4["best"])
    for design in swapped.values():
        design["lasso"], design["adaptive_elastic_net"] = design["adaptive_elastic_net"], design["lasso"]
    with pytest.raises(AssertionError):
        ch4["check"](swapped)


@pytest.mark.slow
def test_chapter4_check_fails_with_the_elastic_net_in_place_of_the_aen(ch4):
    no_weights = copy.deepcopy(ch4["best"])
    for design in no_weights.values():
        design["adaptive_elastic_net"] = design["elastic_net"]
    with pytest.raises(AssertionError, match="adaptive elastic net recovers S in only"):
        ch4["check"](no_weights)


@pytest.mark.slow
def test_chapter4_fails_with_the_adaptive_weights_switched_off(tmp_path):
    """w_max = 1 clamps every adaptive weight to 1: the AEN becomes the elastic net and must fail its claim."""
    with pytest.raises(ChapterFailed) as info:
        _run_chapter(CH4, tmp_path, w_max=1.0)
    assert info.value.ename == "AssertionError"
    assert "adaptive elastic net recovers S in only" in info.value.evalue


# ------------------------------------------------------------------------------------------------------------------
# Chapter 6, "At the paper's size": the section reads committed reference sets, and its checks fail on a broken one
# ------------------------------------------------------------------------------------------------------------------
CH6 = "06_spiked_dictionary"


@pytest.fixture(scope="module")
def smoke_sets(tmp_path_factory):
    """Two reference sets (ρ 0 and 0.9) of the paper-size grid trained for 2 steps: the section's code paths with
    records present, seconds instead of hours."""
    from aen_lib.reference import run_spiked

    root = tmp_path_factory.mktemp("reference")
    for rho in (0.0, 0.9):
        run_spiked(rho, 0, out_root=root / "sets", work_root=root / "work", steps=2, command="test", progress=False)
    return root / "sets"


def test_chapter6_paper_size_section_reads_sets_and_its_checks_fail_on_a_broken_one(smoke_sets, tmp_path):
    import shutil

    for sub in ("good", "bad"):
        (tmp_path / sub).mkdir()
    out = _run_chapter(CH6, tmp_path / "good", reference_dir=str(smoke_sets))
    findings = json.loads((out / "paper_size_findings.json").read_text())
    assert len(findings["sets"]) == 2 and {s["rho"] for s in findings["sets"]} == {0.0, 0.9}
    assert len(findings["findings"]) == 6 and len(findings["auxk"]) == 6  # two ρ × k 8, 16, 32
    # every matched pair whose L0 lies outside [k/2, 2k] is named as loosely matched, and no other
    import pandas as pd

    matched = pd.read_csv(out / "paper_size_matched_l0.csv")
    far = {(r.rho, r.method) for r in matched.itertuples() if not 8 <= r.l0 <= 32}
    assert {(r["rho"], r["method"]) for r in findings["loosely_matched"]} == far
    reach = json.loads((out / "paper_size_reach.json").read_text())  # dead / out of reach of the 16 k-sparse SAEs
    assert len(reach) == 16 and all(0 <= r["eval_negative_pct"] <= r["eval_dead_pct"] for r in reach)
    for name in ("paper_size_figure2_rho0.png", "paper_size_figure2_rho0.9.png", "paper_size_training_curves.png"):
        assert (out / name).is_file(), name
    # a set whose TopK k = 16 SAE has more than 16 active latents: the chapter's hard-sparsity check must stop it
    broken = tmp_path / "broken_sets"
    shutil.copytree(smoke_sets, broken)
    rec_path = next(p for p in (broken / "spiked_paper_rho0_seed0_steps2").glob("topk-*.json")
                    if json.loads(p.read_text())["sae_config"]["k"] == 16)
    rec = json.loads(rec_path.read_text())
    rec["final"]["l0"] = 17.0
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(ChapterFailed) as err:
        _run_chapter(CH6, tmp_path / "bad", reference_dir=str(broken))
    assert err.value.ename == "AssertionError" and "l0" in err.value.evalue
