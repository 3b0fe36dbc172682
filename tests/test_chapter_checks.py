"""The headline claims of chapters 1, 4 and 5 can fail: they hold on the chapter's own results and fail on broken ones.

Each chapter judges its results with claims registered in :mod:`aen_lib.results.claims` (chapter 1:
``topk_starves_more_than_l1_at_matched_l0``; chapter 4: ``aen_recovers_support_where_lasso_fails``; chapter 5:
``solver_beats_encoder`` and its verdicts on one small run). These tests run the chapter with its `ci` profile through
papermill, then

* rebuild the claim's input from the results the chapter saved, check that the library claim holds on it and that
  the verdict the chapter saved is the one the library gives;
* call the same claim on those results broken by hand (the two methods swapped, an unmatched run, equal starvation,
  the elastic net in place of the adaptive elastic net), where it must fail or be not testable;
* run the chapter once more with a deliberately broken parameter (chapter 1: no lambda_1 search, so the l1 SAE is not
  sparsity-matched; chapter 4: w_max = 1, i.e. adaptive weights switched off) and show that papermill stops the
  chapter at the assertion on the claim (AssertionError in the failing cell's output).

Chapter 6's paper-size section is run on two smoke reference sets (it must read them and draw its figures) and on a
copy with one TopK record broken (its hard-sparsity check must stop it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from aen_lib.results.claims import CLAIMS

ROOT = Path(__file__).resolve().parent.parent
CH1 = "01_feature_starvation"
CH4 = "04_adaptive_reweighting"
CH5 = "05_aen_sae"


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


def _same_verdict(saved: dict, verdict) -> None:
    """The verdict a chapter saved is the library's verdict on the results it saved."""
    assert saved["claim"] == verdict.claim and saved["holds"] == verdict.holds and saved["sentence"] == verdict.sentence


# ------------------------------------------------------------------------------------------------------------------
# Chapter 1: TopK starves more than ReLU + l1 at matched L0 (dead = no firing over the last training window)
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ch1(tmp_path_factory):
    out = _run_chapter(CH1, tmp_path_factory.mktemp("ch1"))
    data = json.loads((out / "runs.json").read_text())
    p = data["parameters"]
    return {"table": pd.DataFrame(data["summary"]), "churn": pd.DataFrame(data["churn"]),
            "saved": json.loads((out / "claims.json").read_text()), "window_samples": data["window_samples"],
            "k": p["topk_k"], "tol": p["l0_match_tol"], "eval_samples": p["eval_samples"]}


def _ch1_headline(ch1, table):
    return CLAIMS["topk_starves_more_than_l1_at_matched_l0"](table, k=ch1["k"], tol=ch1["tol"],
                                                             window_samples=ch1["window_samples"])


@pytest.mark.slow
def test_chapter1_claims_hold_on_its_results_and_are_the_ones_it_saved(ch1):
    v = _ch1_headline(ch1, ch1["table"])
    assert v.holds, v.sentence
    _same_verdict(ch1["saved"]["headline"], v)
    revival = CLAIMS["topk_dead_latents_revive"](ch1["churn"])
    assert revival.holds and revival.numbers["revived"] > 0
    _same_verdict(ch1["saved"]["revival"], revival)
    fresh = CLAIMS["topk_silent_more_than_l1_on_fresh_samples"](ch1["table"], k=ch1["k"], tol=ch1["tol"],
                                                                 eval_samples=ch1["eval_samples"])
    _same_verdict(ch1["saved"]["fresh"], fresh)
    assert set(ch1["saved"]) - {"record_version"} == {"headline", "fresh", "free", "reconstruction", "revival", "reach"}


@pytest.mark.slow
def test_chapter1_claim_fails_with_the_methods_swapped(ch1):
    swap = {"topk": "relu_l1_matched", "relu_l1_matched": "topk"}
    table = ch1["table"].assign(run=ch1["table"]["run"].map(lambda r: swap.get(r, r)))
    assert _ch1_headline(ch1, table).holds is False


@pytest.mark.slow
def test_chapter1_claim_is_not_evidence_at_unmatched_sparsity(ch1):
    t = ch1["table"]
    unmatched = pd.concat([t[t["run"] == "topk"], t[t["run"] == "relu_l1"].assign(run="relu_l1_matched")])
    v = _ch1_headline(ch1, unmatched)  # λ1 = l1: L0 far above k
    assert v.holds is None and "not within" in v.sentence and "confound" in v.sentence


@pytest.mark.slow
def test_chapter1_claim_fails_when_starvation_is_equal(ch1):
    t = ch1["table"].copy()
    topk = t[t["run"] == "topk"].set_index("seed")["dead_pct_window"]
    mine = t["run"] == "relu_l1_matched"
    t.loc[mine, "dead_pct_window"] = t.loc[mine, "seed"].map(topk)
    assert _ch1_headline(ch1, t).holds is False
    t.loc[mine, "dead_pct_window"] = t.loc[mine, "seed"].map(topk) - 0.5  # within the margin: still no evidence
    assert _ch1_headline(ch1, t).holds is False


@pytest.mark.slow
def test_chapter1_fails_without_the_sparsity_search(tmp_path):
    """With no λ1 search the 'matched' ReLU + l1 SAE is the λ1 = l1 one (L0 far above k): the chapter must stop."""
    with pytest.raises(ChapterFailed) as info:
        _run_chapter(CH1, tmp_path, l1_search_steps=0)
    assert info.value.ename == "AssertionError"
    assert "not within" in info.value.evalue and "confound" in info.value.evalue


# ------------------------------------------------------------------------------------------------------------------
# Chapter 4: the adaptive elastic net recovers the support where the lasso fails (exact coding maps)
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ch4(tmp_path_factory):
    out = _run_chapter(CH4, tmp_path_factory.mktemp("ch4"))
    summary = json.loads((out / "summary.json").read_text())
    recovery = pd.DataFrame([{"design": name, "penalty": p, **b} for name, d in summary["designs"].items()
                             for p, b in d["best"].items()])
    return {"recovery": recovery, "saved": summary["claims"]}


def _ch4_headline(recovery):
    return CLAIMS["aen_recovers_support_where_lasso_fails"](recovery)


@pytest.mark.slow
def test_chapter4_claim_holds_on_its_results_and_is_the_one_it_saved(ch4):
    v = _ch4_headline(ch4["recovery"])
    assert v.holds, v.sentence
    _same_verdict(ch4["saved"]["headline"], v)
    for key in ("irc_trend", "lasso_holds", "adaptive_lasso", "bias", "curvature"):
        assert ch4["saved"][key]["holds"], ch4["saved"][key]["sentence"]


@pytest.mark.slow
def test_chapter4_claim_fails_with_lasso_and_aen_swapped(ch4):
    swap = {"lasso": "adaptive_elastic_net", "adaptive_elastic_net": "lasso"}
    r = ch4["recovery"]
    assert _ch4_headline(r.assign(penalty=r["penalty"].map(lambda p: swap.get(p, p)))).holds is False


@pytest.mark.slow
def test_chapter4_claim_fails_with_the_elastic_net_in_place_of_the_aen(ch4):
    r = ch4["recovery"]
    no_weights = pd.concat([r[r["penalty"] != "adaptive_elastic_net"],
                            r[r["penalty"] == "elastic_net"].assign(penalty="adaptive_elastic_net")])
    v = _ch4_headline(no_weights)
    assert v.holds is False and "adaptive elastic net recovers S in only" in v.sentence


@pytest.mark.slow
def test_chapter4_fails_with_the_adaptive_weights_switched_off(tmp_path):
    """w_max = 1 clamps every adaptive weight to 1: the AEN becomes the elastic net and must fail its claim."""
    with pytest.raises(ChapterFailed) as info:
        _run_chapter(CH4, tmp_path, w_max=1.0)
    assert info.value.ename == "AssertionError"
    assert "adaptive elastic net recovers S in only" in info.value.evalue


# ------------------------------------------------------------------------------------------------------------------
# Chapter 5: the verdicts the chapter prints are the library's, on the results it saved
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chapter5_verdicts_are_the_library_claims_on_its_saved_results(tmp_path):
    out = _run_chapter(CH5, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    p = summary["parameters"]
    gap = pd.DataFrame([{"arch": a, **v} for a, v in summary["amortisation"].items()])
    warm = pd.DataFrame([{"run": name, "m": p["m"], **{k: v for k, v in r.items() if not k.endswith("_curve")}}
                         for name, r in summary["warmup_comparison"].items()])
    window = p["dead_window"] * p["batch_size"]
    expect = {"solver": CLAIMS["solver_beats_encoder"](gap), "steepness": CLAIMS["l1_target_outruns_its_encoder"](gap),
              "gap": CLAIMS["elastic_net_amortises_better"](gap),
              "warmup": CLAIMS["warmup_keeps_latents_alive"](warm, window_samples=window),
              "dictionary": CLAIMS["aen_sae_recovers_dictionary"](warm)}
    assert expect["solver"].holds
    for key, v in expect.items():
        _same_verdict(summary["claims"][key], v)
    assert expect["dictionary"].numbers["m"] == p["m"]


# ------------------------------------------------------------------------------------------------------------------
# Chapter 6, "At the paper's size": the section reads committed reference sets, and its checks fail on a broken one
# ------------------------------------------------------------------------------------------------------------------
CH6 = "06_spiked_dictionary"


@pytest.fixture(scope="module")
def smoke_sets(tmp_path_factory):
    """Two reference sets (ρ 0 and 0.9) of the paper-size grid trained for 2 steps: the section's code paths with
    records present, seconds instead of hours."""
    from aen_lib.results.reference import run_spiked

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
    assert len(findings["auxk"]) == 6  # two ρ × k 8, 16, 32
    # the verdicts it saved are the library's claims on the same records, under both dead-% definitions
    from aen_lib.results.claims.synthetic import figure2_verdicts
    from aen_lib.results.reference import committed_sets, set_frames

    ref, _ = set_frames(committed_sets(smoke_sets))
    assert set(findings["verdicts"]) == {"dead_pct", "dead_pct_window"}
    for dead, saved in findings["verdicts"].items():
        assert {v["claim"]: v["holds"] for v in saved} == {
            name: v.holds for name, v in figure2_verdicts(ref, k=16, dead=dead).items()}
    assert len(findings["beyond"]) == 2 * (5 * 2 + 2)  # per ρ: five claims under two definitions, two without
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
    assert err.value.ename == "AssertionError" and "Hard sparsity broken" in err.value.evalue
    assert "topk k=16 has L0 17.00 > k" in err.value.evalue
