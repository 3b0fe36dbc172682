"""Tests for aen_lib.book.notebook: parameter validation, results folders, JSON, stripping and run summaries."""

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch

from aen_lib.book import notebook as nbh


WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@pytest.fixture(autouse=True)
def _keep_wait_policy(monkeypatch):
    """validate_parameters sets OMP_WAIT_POLICY when it is unset; monkeypatch restores the variable after each test."""
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


def _ns(code: str) -> dict:
    """Execute a parameters cell the way the kernel does (module-level annotated assignments)."""
    ns: dict = {}
    exec(compile(code, "<parameters>", "exec"), ns)
    return ns


PARAMS = """
seed: int = 0  # seed
l1: float = 1e-3  # penalty
architectures: list[str] = ["relu_l1", "topk"]  # which SAEs
device: str = "cpu"  # torch device
note: str | None = None  # free text
"""


def test_validate_parameters_accepts_defaults_and_returns_them():
    ns = _ns(PARAMS)
    got = nbh.validate_parameters(ns, choices={"device": ("cpu", "cuda")}, bounds={"l1": (0.0, None)})
    assert got == {"seed": 0, "l1": 1e-3, "architectures": ["relu_l1", "topk"], "device": "cpu", "note": None}


@pytest.mark.parametrize(
    "override, exc, words",
    [
        ("seed = 1.5", TypeError, ["'seed'", "int", "1.5"]),
        ("seed = True", TypeError, ["'seed'", "int", "bool"]),
        ("l1 = '1e-3'", TypeError, ["'l1'", "float", "1.0e-3"]),
        ("architectures = ['relu_l1', 3]", TypeError, ["'architectures'", "list[str]"]),
        ("device = 'tpu'", ValueError, ["'device'", "'tpu'", "'cuda'"]),
        ("l1 = -0.5", ValueError, ["'l1'", "-0.5", "range"]),
    ],
)
def test_validate_parameters_names_the_bad_parameter(override, exc, words):
    ns = _ns(PARAMS + override + "\n")
    with pytest.raises(exc) as info:
        nbh.validate_parameters(ns, choices={"device": ("cpu", "cuda")}, bounds={"l1": (0.0, None)})
    for w in words:
        assert w in str(info.value)


def test_validate_parameters_int_is_a_float_and_literal_and_tuple():
    ns = {"l1": 3, "mode": "a", "pair": [1, 2.0]}
    ann = {"l1": float, "mode": Literal["a", "b"], "pair": tuple[int, float]}
    assert nbh.validate_parameters(ns, ann)["l1"] == 3
    with pytest.raises(TypeError, match="'mode'"):
        nbh.validate_parameters({**ns, "mode": "c"}, ann)
    with pytest.raises(TypeError, match="'pair'"):
        nbh.validate_parameters({**ns, "pair": [1.5, 2.0]}, ann)


def test_validate_parameters_rejects_missing_or_unknown_names():
    with pytest.raises(ValueError, match="no annotated parameters"):
        nbh.validate_parameters({"x": 1})
    with pytest.raises(ValueError, match="'steps'"):
        nbh.validate_parameters({"__annotations__": {"steps": int}})
    with pytest.raises(ValueError, match="'stepz'"):
        nbh.validate_parameters({"steps": 1}, {"steps": int}, bounds={"stepz": (0, 1)})


def test_results_dir_and_chapter_context_roots(tmp_path, monkeypatch):
    assert nbh.results_dir("01_feature_starvation", root=tmp_path) == tmp_path / "01_feature_starvation"
    assert (tmp_path / "01_feature_starvation").is_dir()
    repo = nbh.repo_root()
    assert repo is not None and (repo / "_toc.yml").is_file()
    monkeypatch.setenv("AEN_RESULTS_DIR", str(tmp_path / "env"))  # the old variable: no longer read
    assert nbh.chapter_context("02_lasso_geometry").results == repo / "results" / "02_lasso_geometry"
    ctx = nbh.chapter_context("02_lasso_geometry", results_root=str(tmp_path / "ci"))
    assert ctx.results == tmp_path / "ci" / "02_lasso_geometry" and ctx.results.is_dir() and ctx.runs_root is None
    assert not (tmp_path / "env").exists()
    for bad in ["1_x", "01-x", "01_X", "", 5]:
        with pytest.raises(ValueError, match="chapter"):
            nbh.results_dir(bad, root=tmp_path)


def test_in_colab_follows_google_colab_module(monkeypatch):
    assert nbh.in_colab() is ("google.colab" in sys.modules)
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert nbh.in_colab() is True


@dataclass
class _Cfg:
    k: int
    lam: float


def test_save_json_round_trip_converts_arrays_and_tensors(tmp_path):
    obj = {
        "cfg": _Cfg(4, 0.5),
        "np": np.arange(3, dtype=np.int64),
        "t": torch.tensor([0.5, 1.5]),
        "scalar": np.float32(2.5),
        "path": tmp_path,
        "nan": float("nan"),
    }
    path = nbh.save_json(obj, tmp_path / "a" / "b.json")
    back = nbh.load_json(path)
    assert back["cfg"] == {"k": 4, "lam": 0.5}
    assert back["np"] == [0, 1, 2] and back["t"] == [0.5, 1.5] and back["scalar"] == 2.5
    assert back["path"] == str(tmp_path) and math.isnan(back["nan"])
    with pytest.raises(TypeError, match="object"):
        nbh.save_json({"x": object()}, tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        nbh.load_json(tmp_path / "missing.json")


def _nb_with_outputs(render_only=False):
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# t"},
            {"cell_type": "code", "metadata": {"papermill": {"duration": 1}}, "execution_count": 3,
             "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}], "source": "print('hi')"},
        ],
        "metadata": {"papermill": {"duration": 2.0}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    if render_only:
        nb["metadata"]["mystnb"] = {"execution_mode": "off"}
    return nb


def test_strip_outputs_and_cli(tmp_path):
    nb = _nb_with_outputs()
    assert nbh.has_outputs(nb) and not nbh.is_render_only(nb)
    stripped = nbh.strip_outputs(json.loads(json.dumps(nb)))
    assert not nbh.has_outputs(stripped)
    assert "papermill" not in stripped["metadata"] and "papermill" not in stripped["cells"][1]["metadata"]
    dirty, render = tmp_path / "01_a.ipynb", tmp_path / "09_b.ipynb"
    dirty.write_text(json.dumps(nb))
    render.write_text(json.dumps(_nb_with_outputs(render_only=True)))
    assert nbh._main(["check-stripped", str(dirty), str(render)]) == 1
    assert nbh._main(["strip", str(dirty), str(render)]) == 0
    assert nbh._main(["check-stripped", str(dirty), str(render)]) == 0
    assert nbh.has_outputs(json.loads(render.read_text()))  # render-only chapters keep their outputs


def test_summarize_runs_reads_papermill_metadata(tmp_path):
    ok = _nb_with_outputs()
    ok["metadata"]["papermill"] = {"duration": 12.5, "exception": None, "parameters": {"steps": 10}}
    bad = _nb_with_outputs()
    bad["metadata"]["papermill"] = {"duration": 3.0, "exception": True, "parameters": {}}
    (tmp_path / "01_feature_starvation.ipynb").write_text(json.dumps(ok))
    (tmp_path / "05_aen_sae__rho09.ipynb").write_text(json.dumps(bad))
    res = tmp_path / "results" / "01_feature_starvation" / "01_feature_starvation"
    nbh.save_json({"dead": 1}, res / "summary.json")
    rows = nbh.summarize_runs(tmp_path)
    assert [r["run"] for r in rows] == ["01_feature_starvation", "05_aen_sae__rho09"]
    assert rows[0]["status"] == "ok" and rows[0]["duration_s"] == 12.5 and rows[0]["parameters"] == {"steps": 10}
    assert rows[0]["results"] == [str(res / "summary.json")]
    assert rows[1]["status"] == "failed" and rows[1]["chapter"] == "05_aen_sae"
    table = nbh.format_summary(rows)
    assert "| 01_feature_starvation | ok | 12.5 | steps=10 |" in table
    assert nbh._main(["summarize", str(tmp_path)]) == 1  # one failed run
    assert (tmp_path / "summary.md").read_text() == table
    with pytest.raises(FileNotFoundError, match="nowhere"):
        nbh.summarize_runs(tmp_path / "nowhere")


def test_resolve_device():
    assert nbh.resolve_device("cpu") == torch.device("cpu")
    assert nbh.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        nbh.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            nbh.resolve_device("cuda")


def test_glue_returns_plain_numbers_and_checks_the_name():
    assert nbh.glue("dead_pct", np.float64(12.5)) == 12.5
    assert type(nbh.glue("n_dead", torch.tensor(3))) is int
    with pytest.raises(ValueError, match="'dead pct'"):
        nbh.glue("dead pct", 1.0)


def test_previous_results_follow_each_layout(tmp_path):
    ch7, ch8 = "08_pythia_reproduction", "09_what_features_are"
    # make test: all chapters share one results root
    shared = nbh.chapter_context(ch8, results_root=tmp_path / "shared")
    assert shared.previous(ch7) is None
    (tmp_path / "shared" / ch7 / "saes").mkdir(parents=True)
    assert shared.previous(ch7) == tmp_path / "shared" / ch7
    assert shared.previous(ch7, must_contain="saes/manifest.json") is None
    # make reproduce: one results root per run under runs_root; chapter 9 runs in its own folder
    root = tmp_path / "runs" / "results"
    ctx = nbh.chapter_context(ch8, results_root=root / ch8, runs_root=root)
    with pytest.raises(nbh.MissingResultsError) as info:
        ctx.previous(ch7, must_contain="saes/manifest.json", required=True)
    msg = str(info.value)
    assert str(root / ch7 / ch7) in msg and str(root / ch8 / ch7) in msg and "manifest" in msg
    (root / ch7 / ch7 / "saes").mkdir(parents=True)
    (root / ch7 / ch7 / "saes" / "manifest.json").write_text("{}")
    assert ctx.previous(ch7, must_contain="saes/manifest.json", required=True) == root / ch7 / ch7
    # without runs_root the same chapter does not look there
    alone = nbh.chapter_context(ch8, results_root=root / ch8)
    assert alone.previous(ch7, must_contain="saes/manifest.json") is None
    with pytest.raises(ValueError, match="NN_name"):
        ctx.previous("chapter7")


class _FakeEnv:
    """Stands in for the Sphinx BuildEnvironment that jupyter-book pickles (only nb_metadata is read)."""

    def __init__(self, nb_metadata):
        self.nb_metadata = nb_metadata


def test_book_execution_times_reads_the_build_environment(tmp_path, capsys):
    import pickle

    meta = {"book/intro": {},
            "chapters/01_a": {"exec_data": {"mtime": 0.0, "runtime": 61.5, "method": "force", "succeeded": True,
                                            "error": None}},
            "chapters/02_b": {"exec_data": {"mtime": 0.0, "runtime": 3.25, "method": "force", "succeeded": False,
                                            "error": "CellExecutionError"}}}
    (tmp_path / ".doctrees").mkdir()
    with open(tmp_path / ".doctrees" / "environment.pickle", "wb") as fh:
        pickle.dump(_FakeEnv(meta), fh)
    rows = nbh.book_execution_times(tmp_path)
    assert [(r["page"], r["seconds"], r["succeeded"]) for r in rows] == [("chapters/01_a", 61.5, True),
                                                                         ("chapters/02_b", 3.25, False)]
    text = nbh.format_book_times(rows)
    assert "61.5" in text and "FAILED (CellExecutionError)" in text and "total" in text and "64.8" in text
    assert nbh._main(["book-times", str(tmp_path)]) == 0
    assert "chapters/01_a" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="make book"):
        nbh.book_execution_times(tmp_path / "nothing")


def test_validate_parameters_sets_sleeping_waits_and_keeps_the_users_choice(monkeypatch):
    for name in WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    nbh.validate_parameters(_ns(PARAMS))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    nbh.validate_parameters(_ns(PARAMS))
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_chapter_setup_cell_reaches_openmp_in_time():
    """Cells 1-3 of a chapter in a fresh kernel-like process, then a cell that imports torch: GNU libgomp starts with
    sleeping waits (spin count 0; its default is 300,000)."""
    code = ("from aen_lib.book.notebook import validate_parameters\n"
            "seed: int = 0\n"
            "validate_parameters(globals())\n"
            "import torch\n")
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_DISPLAY_ENV="VERBOSE")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    spin = [line for line in proc.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    if not spin:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp here: no spin count to read")
    assert spin == ["  GOMP_SPINCOUNT = '0'"]


def test_save_json_writes_a_versioned_result_of_the_kind_its_name_says_and_rewrites_it(tmp_path):
    from aen_lib.results.records import read_result

    out = tmp_path / "results" / "01_feature_starvation"
    summary = nbh.save_json({"b": np.float64(0.5), "a": {"z": 1, "y": [2]}}, out / "summary.json")
    text = summary.read_text()
    assert json.loads(text) == {"record_version": 1, "a": {"y": [2], "z": 1}, "b": 0.5}
    assert list(json.loads(text)) == ["record_version", "a", "b"] and text.index('"y"') < text.index('"z"')  # sorted
    assert read_result(summary, "chapter_summary")["b"] == 0.5
    nbh.save_json({"a": 2}, summary)  # a chapter rewrites its summary on every run
    assert nbh.load_json(summary) == {"record_version": 1, "a": 2}
    claims = nbh.save_json({"headline": {"holds": True}}, out / "claims.json")
    manifest = nbh.save_json({"model": "m", "saes": {}}, out / "saes" / "manifest.json")
    other = nbh.save_json({"device": "cpu"}, out / "timing.json")
    for path, kind in ((claims, "chapter_claims"), (manifest, "chapter_manifest"), (other, "chapter_result")):
        assert nbh.CHAPTER_RESULT_KINDS.get(path.name, "chapter_result") == kind
        assert read_result(path, kind)["record_version"] == 1
    with pytest.raises(ValueError, match=r"x.json: this train_final record lacks \['dead_pct'"):  # an explicit kind
        nbh.save_json({"l0": 1.0}, out / "x.json", kind="train_final")
    assert not (out / "x.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["claims.json", "saes", "summary.json", "timing.json"]  # no tmp


def test_save_json_keeps_a_table_as_it_is_and_load_json_reads_legacy_files(tmp_path):
    rows = [{"run": "ch1", "status": "ok"}]
    path = nbh.save_json(rows, tmp_path / "summary.json")  # make reproduce's run summary: a list has no version
    assert json.loads(path.read_text()) == rows and nbh.load_json(path) == rows
    assert nbh.load_json(nbh.save_json(None, tmp_path / "ddp_demo.json")) is None
    legacy = {"parameters": {"steps": 10}, "nan": float("nan")}  # a summary.json written before results had a version
    (tmp_path / "old" / "saes").mkdir(parents=True)
    (tmp_path / "old" / "summary.json").write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")
    back = nbh.load_json(tmp_path / "old" / "summary.json")
    assert sorted(back) == ["nan", "parameters"] and back["parameters"] == {"steps": 10} and math.isnan(back["nan"])
    (tmp_path / "old" / "saes" / "manifest.json").write_text(json.dumps({"model": "m", "saes": {}}))
    assert nbh.load_json(tmp_path / "old" / "saes" / "manifest.json") == {"model": "m", "saes": {}}  # as version 1


def test_load_json_refuses_a_newer_version_or_another_kind_naming_the_file_and_the_fix(tmp_path):
    newer = tmp_path / "summary.json"
    newer.write_text(json.dumps({"record_version": 2, "dead": 1}))
    with pytest.raises(ValueError, match=r"summary.json: record_version 2 is not supported \(this library reads 1\); "
                                         "it was written by a newer aen_lib: update aen_lib"):
        nbh.load_json(newer)
    final = tmp_path / "final.json"
    final.write_text(json.dumps({"l0": 1.0, "dead_pct": 0.0, "ev": 0.9, "skipped_steps": 0, "seconds": 1.0}))
    assert nbh.load_json(final, kind="train_final")["l0"] == 1.0
    with pytest.raises(ValueError, match="final.json: this invocation record lacks .*holds the keys of a train_final"):
        nbh.load_json(final, kind="invocation")
    with pytest.raises(ValueError, match="a stored train_final result must be a JSON object"):
        nbh.load_json(nbh.save_json([1], tmp_path / "rows.json"), kind="train_final")
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(ValueError, match="cut.json is not valid JSON .*run the chapter that writes it again"):
        nbh.load_json(tmp_path / "cut.json")
