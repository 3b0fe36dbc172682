"""The benchmark scripts: the GPU session's dry run writes every section of its summary, a failing or hanging stage is
recorded and the session goes on, and the language-model-shape benchmark compares every architecture with SAELens."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _session_module():
    spec = importlib.util.spec_from_file_location("gpu_session", BENCH / "gpu_session.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finite_numbers(obj) -> list[float]:
    return _session_module()._numbers(obj)


@pytest.mark.slow
def test_gpu_session_dry_run_writes_every_section_with_numbers(tmp_path):
    _run("gpu_session.py", "--out", str(tmp_path), "--dry-run", "--threads", "1")
    s = json.loads((tmp_path / "summary.json").read_text())
    stages = ("correctness", "sweep", "pythia_tokens", "llama_shape", "pythia_slice", "reference")
    assert s["dry_run"] is True and s["device"] == "cpu" and s["summary_version"] == 1
    assert list(s["stages"]) == list(stages)
    for name in stages:
        entry = s["stages"][name]
        assert entry["status"] == "ok", (name, entry["error"])
        assert entry["error"] is None and 0 < entry["seconds"] <= entry["limit_s"] + 5
        assert _finite_numbers(entry["result"]), name
    c = s["stages"]["correctness"]["result"]
    for dtype, tol in (("float64", 1e-7), ("float32", 1e-4)):
        res = c["stacked_vs_alone"][dtype]
        assert res["tolerance"] == tol and res["pass"] and 0 <= res["max_abs_diff"] <= tol
        assert {r["architecture"] for r in res["members"]} >= {"aen", "relu_l1", "topk", "topk_auxk", "jumprelu"}
    for arch in ("aen", "topk"):
        errs = c["bf16_vs_fp32"][arch]["relative_errors"]
        assert set(errs) == {"loss", "x_hat", "grad", "train_loss"}
        assert all(0 <= v < 1 for v in errs.values())
    assert 0.5 < c["bf16_vs_fp32"]["topk"]["support_agreement"] <= 1
    assert s["stages"]["sweep"]["result"]["speedup"] > 0
    p = s["stages"]["pythia_tokens"]["result"]
    assert p["tokens_per_s"] > 0 and "synthetic stand-in" in p["data"]
    rows = s["stages"]["llama_shape"]["result"]["rows"]
    assert {(r["arch"], r["autocast"]) for r in rows} == {(a, c) for a in ("aen", "topk") for c in ("none", "bf16")}
    for r in rows:
        assert r["measured_over_planner"] == pytest.approx(r["ms_per_step"] / r["planner_step_ms"])
    sl = s["stages"]["pythia_slice"]["result"]
    assert sl["ran"] is False and "dry run" in sl["reason"] and sl["tokens_per_sae"] == 25_000 * 8_192
    ref = s["stages"]["reference"]["result"]
    assert ref["finished"] == ref["attempted"] == 2 and ref["parallel"] == 2 and ref["tarball"] == "reference.tar.gz"
    assert [r["study"] for r in ref["sets"]] == ["factorial", "factorial"]
    assert all(r["mechanism"]["status"] == "ok" for r in ref["sets"]), ref["sets"]
    names = tarfile.open(tmp_path / "reference.tar.gz").getnames()
    for folder in ref["folders"]:  # both sets, each with its records and its mechanism measures
        assert f"reference/{folder}/provenance.json" in names and f"reference/{folder}/mechanism.json" in names
    assert [g["stage"] for g in s["goals"]] == ["correctness", "correctness", "sweep", "pythia_tokens"]
    assert all(g["value"] is not None and isinstance(g["pass"], bool) for g in s["goals"])
    assert [g["applies"] for g in s["goals"]] == [True, True, False, False]  # speed goals are GPU goals
    for f in ("bench_sweep.json", "bench_sweep.txt", "gpu_llama_shape.json", "session.txt"):
        assert (tmp_path / f).is_file(), f


def test_pythia_slice_says_why_it_does_not_run_without_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mod = _session_module()
    assert "switched off" in mod.hub_unavailable({"HF_HUB_OFFLINE": "1"})
    res = mod.stage_pythia_slice(device="cuda", dry=False, out=tmp_path, deadline=time.time() + 60)
    # the Hub switched off: the stage returns at once, names the profile and runs nothing
    assert res["ran"] is False and "HF_HUB_OFFLINE" in res["reason"]
    assert res["profile"] == "params/pythia_slice/08_pythia_reproduction.yaml" and res["saes"]["topk_k"] == [32]
    assert not (tmp_path / "pythia_slice").exists()


@pytest.mark.slow
def test_gpu_session_records_a_failed_and_a_hung_stage_and_goes_on(tmp_path):
    _run("gpu_session.py", "--out", str(tmp_path), "--dry-run", "--threads", "1", "--stages",
         "correctness,sweep,pythia_tokens", "--inject-failure", "correctness", "--inject-hang", "sweep",
         "--limit", "sweep=3")
    s = json.loads((tmp_path / "summary.json").read_text())
    failed, hung, ok = (s["stages"][k] for k in ("correctness", "sweep", "pythia_tokens"))
    assert failed["status"] == "failed" and "injected failure" in failed["error"] and failed["result"] is None
    assert hung["status"] == "timeout" and "limit of 3 s" in hung["error"] and hung["seconds"] < 10
    assert ok["status"] == "ok" and ok["result"]["tokens_per_s"] > 0
    assert "llama_shape" not in s["stages"]
    goals = {g["name"].split(",")[0]: g for g in s["goals"]}
    assert goals["stacked step equals single SAEs (float64 and float32)"]["pass"] is None  # no result, no verdict


def test_the_readme_gpu_table_is_the_committed_session_record():
    records = sorted((REPO / "benchmarks" / "records").glob("gpu_session_h200_*.json"))
    assert records, "no committed GPU session record"
    mod, readme = _session_module(), (REPO / "README.md").read_text()
    for rec in records:
        date = rec.stem.rsplit("_", 1)[-1]
        table = mod.readme_table(json.loads(rec.read_text()), date)
        assert table in readme, f"README's GPU table differs from {rec.name}; paste gpu_session.readme_table's output"


def test_session_sets_are_parsed_and_a_bad_one_is_named():
    mod = _session_module()
    assert mod.parse_sets("factorial:0.9:0, paper:0.5:1") == [("factorial", 0.9, 0), ("paper", 0.5, 1)]
    with pytest.raises(ValueError, match="'paper:0.5'.*STUDY:RHO:SEED"):
        mod.parse_sets("factorial:0.9:0,paper:0.5")


def test_session_goals_flip_with_their_numbers():
    mod = _session_module()
    good = {"correctness": {"result": {"stacked_vs_alone": {"float64": {"max_abs_diff": 0.0, "pass": True}},
                                       "bf16_vs_fp32": {"aen": {"relative_errors": {"loss": 1e-3}, "pass": True}}}},
            "sweep": {"result": {"speedup": 12.0}}, "pythia_tokens": {"result": {"tokens_per_s": 2e6}}}
    assert [g["pass"] for g in mod.goals(good, dry=False)] == [True, True, True, True]
    bad = json.loads(json.dumps(good))
    bad["sweep"]["result"]["speedup"] = 9.0
    bad["pythia_tokens"]["result"]["tokens_per_s"] = 9e5
    bad["correctness"]["result"]["stacked_vs_alone"]["float64"]["pass"] = False
    assert [g["pass"] for g in mod.goals(bad, dry=False)] == [False, True, False, False]


@pytest.mark.slow
def test_lm_shape_quick_has_every_architecture_and_the_saelens_column(tmp_path):
    pytest.importorskip("sae_lens", reason="the optional dependency sae-lens is not installed")
    out = tmp_path / "lm_shape.json"
    proc = _run("bench_lm_shape.py", "--quick", "--device", "cpu", "--repeats", "1", "--warmup", "1",
                "--threads", "1", "--json", str(out))
    res = json.loads(out.read_text())
    B, n, m = (res["info"]["shape"][k] for k in ("batch", "d_in", "d_sae"))
    assert res["info"]["flops_per_step"] == 10 * B * n * m and res["info"]["sae_lens"]
    rows = {r["arch"]: r for r in res["rows"]}
    assert list(rows) == ["relu_l1", "aen", "topk", "topk_auxk"]
    assert {a: r["saelens_arch"] for a, r in rows.items()} == {
        "relu_l1": "standard", "aen": "standard", "topk": "topk", "topk_auxk": "topk +dead"}
    ceiling = res["ceiling"]["ceiling"] * 1e9
    for r in rows.values():
        for key in ("seconds_per_step", "saelens_seconds_per_step", "speedup_vs_saelens"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["arch"], key)
        assert r["speedup_vs_saelens"] == pytest.approx(r["saelens_seconds_per_step"] / r["seconds_per_step"])
        assert r["fraction_of_ceiling"] == pytest.approx(res["info"]["flops_per_step"] / r["seconds_per_step"] / ceiling)
    # AEN has no SAELens counterpart: it is timed against the one SAELens standard step measured for relu_l1
    assert rows["aen"]["saelens_seconds_per_step"] == rows["relu_l1"]["saelens_seconds_per_step"]
    assert {(t["arch"], t["metric"]) for t in res["targets"]} == {
        (a, k) for a in rows for k in ("fraction_of_ceiling", "speedup_vs_saelens")}
    assert proc.stdout.count("PASS") + proc.stdout.count("FAIL") == 8
    aux = rows["topk_auxk"]  # its auxiliary decode over the m/2 dead latents is reported apart, never credited
    assert aux["aux_flops_per_step"] == 6 * B * n * (m // 2)
    assert aux["fraction_of_ceiling_with_aux"] == pytest.approx(
        (res["info"]["flops_per_step"] + aux["aux_flops_per_step"]) / aux["seconds_per_step"] / ceiling)
    assert all("aux_flops_per_step" not in r for a, r in rows.items() if a != "topk_auxk")


@pytest.mark.slow
def test_lm_benchmark_compares_a_bf16_harvest_with_float32(tmp_path):
    out = tmp_path / "lm.json"
    _run("bench_lm.py", "--mode", "forward", "--windows", "4", "--window", "16", "--batch-size", "2", "--repeats", "1",
         "--threads", "1", "--dtype", "bfloat16", "--json", str(out))
    res = json.loads(out.read_text())
    d = res["vs_float32"]
    assert d["rows"] == 2 * 15 and d["float32_tok_s"] > 0  # one LM batch, position 0 dropped
    assert 0 < d["rel_frobenius"] < 0.05 and 0.99 < d["cosine_min"] <= d["cosine_median"] <= 1.0  # bf16 rounding
    assert res["speedup_vs_float32"] == pytest.approx(res["harvest_early_exit_tok_s"] / d["float32_tok_s"])


@pytest.mark.slow
def test_lm_benchmark_times_the_harvest_pipeline_stage_by_stage(tmp_path):
    out = tmp_path / "lm.json"
    _run("bench_lm.py", "--mode", "pipeline", "--windows", "4", "--window", "16", "--batch-size", "2", "--repeats", "1",
         "--vocab", "512", "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    p = json.loads(out.read_text())["pipeline"]
    assert (p["tokens"], p["rows"]) == (4 * 16, 4 * 15)  # position 0 of every window is dropped
    assert list(p["stages_s"]) == ["read", "tokenise", "pack", "forward", "normalise", "fingerprint", "write"]
    for k, s in p["stages_s"].items():
        assert s > 0 and p["stages_tok_s"][k] == pytest.approx(p["tokens"] / s), k
    assert p["end_to_end_tok_s"] == pytest.approx(p["tokens"] / p["end_to_end_s"])
    assert p["other_s"] == pytest.approx(p["end_to_end_s"] - sum(p["stages_s"].values()))
    assert (tmp_path / "cache" / "bench_lm_caches" / "e2e_0" / "manifest.json").is_file()


def test_reference_set_benchmark_profiles_the_real_set_and_splits_it_exactly(tmp_path):
    out = tmp_path / "ref.json"
    _run("bench_reference_set.py", "--steps", "4", "--workers", "2", "--op-steps", "1", "--ceiling-size", "256",
         "--json", str(out), timeout=600)
    res = json.loads(out.read_text())
    assert res["members"] == 16 and res["member_steps_per_s_1"] > 0 and 0 < res["fraction_of_ceiling_1"]
    stages = res["stages_seconds"]
    for stage in ("data", "forward+penalties", "backward", "adam", "dead windows", "the rest"):
        assert stage in stages
    assert stages["backward"] > 0 and stages["forward+penalties"] > 0  # the timers saw the real loop
    assert res["top_ops"] and res["matmul_only_gflops"] > 0
    assert res["split_over_one"] > 0 and res["split_records_max_rel_diff"] <= 1e-4  # two processes, same records


@pytest.mark.slow
def test_gpu_session_script_passes_its_settings_to_the_runner(tmp_path):
    """The shell wrapper a GPU loan runs (not only the Python runner behind it): DRY_RUN=1 and a budget reach
    gpu_session.py, extra arguments go through as they are, and env.txt and the summary land in $OUT."""
    env = dict(_env(), DRY_RUN="1", OUT=str(tmp_path), PY=sys.executable)
    proc = subprocess.run(["bash", str(BENCH / "gpu_session.sh"), "120", "--stages", "correctness", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["dry_run"] is True and s["budget_s"] == 120 and list(s["stages"]) == ["correctness"]
    assert s["stages"]["correctness"]["status"] == "ok"
    assert "torch" in (tmp_path / "env.txt").read_text()
    missing = subprocess.run(["bash", str(BENCH / "gpu_session.sh")], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in env.items() if k != "OUT"}, cwd=REPO)
    assert missing.returncode != 0 and "set OUT" in missing.stderr
