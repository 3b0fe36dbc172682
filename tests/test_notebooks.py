"""Chapter conventions (static checks on every chapters/NN_*.ipynb) and the papermill/nbval plumbing of `make test`.

The conventions are documented in aen_lib/book/notebook.py and book/how_to_run.md.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import nbformat
import papermill as pm
import pytest
import yaml

from aen_lib.book import notebook as nbh

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(ROOT.glob("chapters/[0-9][0-9]_*.ipynb"))
PROFILES = ("ci", "paper")


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _load(path: Path):
    return nbformat.read(path, as_version=4)


def _run_cells(sources: list[str], namespace: dict | None = None) -> dict:
    ns = namespace if namespace is not None else {}
    for src in sources:
        exec(compile(src, "<cell>", "exec", dont_inherit=True), ns)
    return ns


def test_there_is_at_least_one_chapter():
    assert CHAPTERS, "no chapters/NN_name.ipynb found"


@pytest.fixture(params=CHAPTERS, ids=[p.stem for p in CHAPTERS])
def chapter(request):
    return request.param


def test_kernelspec_is_python3(chapter):
    assert _load(chapter).metadata.get("kernelspec", {}).get("name") == "python3"


def test_every_cell_has_its_own_id(chapter):
    # nbformat renames a repeated id when it loads the notebook, so a link or a tag aimed at one cell may miss it
    ids = [c.get("id") for c in json.loads(chapter.read_text())["cells"]]
    assert None not in ids, f"{chapter.name}: a cell without an id"
    assert len(set(ids)) == len(ids), f"{chapter.name}: repeated cell ids {sorted({i for i in ids if ids.count(i) > 1})}"


def test_outputs_are_stripped_unless_render_only(chapter):
    nb = json.loads(chapter.read_text())
    if nbh.is_render_only(nb):
        assert nbh.has_outputs(nb), f"{chapter.name} is render-only but carries no outputs to render"
    else:
        assert not nbh.has_outputs(nb), f"{chapter.name} carries outputs: run `make strip` before committing"


def test_cell1_is_a_colab_only_setup(chapter):
    src = _code_cells(_load(chapter))[0].source
    assert "google.colab" in src and nbh.REPO_URL in src
    install_lines = [ln for ln in src.splitlines() if "install" in ln and not ln.lstrip().startswith("#")]
    assert install_lines and not any("torch" in ln for ln in install_lines), "cell 1 must never (re)install torch"
    # Outside Colab it must do nothing: no subprocess, no pip.
    with mock.patch.object(subprocess, "run", side_effect=AssertionError("cell 1 ran pip outside Colab")), \
            mock.patch.object(subprocess, "check_call", side_effect=AssertionError("pip outside Colab")):
        _run_cells([src])


def test_cell2_is_tagged_parameters_with_types_and_comments(chapter):
    nb = _load(chapter)
    cells = _code_cells(nb)
    assert "parameters" in cells[1].metadata.get("tags", []), "cell 2 must carry the tag 'parameters'"
    assert sum("parameters" in c.metadata.get("tags", []) for c in cells) == 1
    inferred = pm.inspect_notebook(str(chapter))
    assert inferred, "papermill infers no parameters"
    for name, info in inferred.items():
        assert info["inferred_type_name"] not in ("None", ""), f"parameter {name!r} has no type hint"
        assert info["help"].strip(), f"parameter {name!r} has no comment explaining it"
    tree = ast.parse(cells[1].source)
    plain = [n.targets[0].id for n in tree.body if isinstance(n, ast.Assign)]
    assert not plain, f"parameters without a type hint: {plain}"
    annotated = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)]
    # papermill silently drops lines it cannot parse (e.g. a comment containing "="): it must see every parameter
    assert sorted(inferred) == sorted(annotated), f"papermill cannot parse {sorted(set(annotated) - set(inferred))}"


def test_cell3_validates_the_defaults(chapter):
    cells = _code_cells(_load(chapter))
    assert "validate_parameters(" in cells[2].source, "cell 3 must call aen_lib.book.notebook.validate_parameters"
    ns = _run_cells([cells[1].source, cells[2].source])
    assert ns.get("PARAMS") and set(ns["PARAMS"]) == set(pm.inspect_notebook(str(chapter)))


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_exists_and_passes_the_chapter_validation(chapter, profile):
    path = ROOT / "params" / profile / f"{chapter.stem}.yaml"
    assert path.is_file(), f"missing papermill profile {path.relative_to(ROOT)}"
    values = yaml.safe_load(path.read_text()) or {}
    known = set(pm.inspect_notebook(str(chapter)))
    unknown = set(values) - known
    assert not unknown, f"{path.name}: unknown parameters {sorted(unknown)}; the chapter has {sorted(known)}"
    cells = _code_cells(_load(chapter))
    ns = _run_cells([cells[1].source])
    ns.update(values)  # what papermill's injected-parameters cell does
    _run_cells([cells[2].source], ns)


SLICE_GRID = {"seeds", "vanilla_l1", "en_l1", "en_l2", "adalasso_l1", "aen_l1", "aen_l2", "adaptive_gamma",
              "adaptive_beta", "adaptive_p", "topk_k", "topk_auxk_k", "targets"}


def test_the_pythia_slice_is_the_paper_protocol_with_a_smaller_grid():
    """params/pythia_slice (the GPU session's Pythia stage) keeps every protocol setting of the paper profile and
    trains a subset of its grid: TopK k 32 and AEN at the paper's L0-32 row, one seed; the chapter accepts it."""
    ch = next(c for c in CHAPTERS if c.stem.startswith("08_"))
    paper = yaml.safe_load((ROOT / "params" / "paper" / f"{ch.stem}.yaml").read_text())
    piece = yaml.safe_load((ROOT / "params" / "pythia_slice" / f"{ch.stem}.yaml").read_text())
    assert set(piece) == set(paper)
    assert {k: v for k, v in piece.items() if k not in SLICE_GRID} == {k: v for k, v in paper.items() if k not in SLICE_GRID}
    for key in SLICE_GRID:
        assert set(piece[key]) <= set(paper[key]), key
    assert piece["topk_k"] == [32] and piece["aen_l1"] == [0.005] and piece["seeds"] == [0]
    cells = _code_cells(_load(ch))
    ns = _run_cells([cells[1].source])
    ns.update(piece)
    _run_cells([cells[2].source], ns)


def test_every_profile_file_belongs_to_a_chapter():
    stems = {c.stem for c in CHAPTERS}
    for path in sorted(ROOT.glob("params/*/*.yaml")):
        assert path.stem.split("__")[0] in stems, f"{path.relative_to(ROOT)} names no chapter"


def test_chapter_is_in_the_toc(chapter):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert f"chapters/{chapter.stem}" in files


GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`\n]*)`")
GLUE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?::[^`{}\n]*)?")


def glue_role_errors(markdown: str) -> list[str]:
    """Malformed glue roles in one markdown cell: a role whose content is not ``key`` or ``key:format``, or a
    ``{glue`` opening no role closes (the build only reports these as a missing key, far from the typo)."""
    errors = [f"{{glue}}`{m.group(1)}`: not key or key:format" for m in GLUE_ROLE.finditer(markdown)
              if not GLUE_KEY.fullmatch(m.group(1))]
    rest = GLUE_ROLE.sub("", markdown)
    errors += [f"unclosed role near {rest[i:i + 60]!r}" for i in [j for j in range(len(rest))
                                                                    if rest.startswith("{glue", j)]]
    return errors


def test_glue_role_check_catches_a_typo():
    assert glue_role_errors("at most {glue:text}`reach_max:.1f`% and {glue}`n`") == []
    assert glue_role_errors("at most {glue:text}`reach_max:.1f}% are out of reach and {glue:text}`n`") != []
    assert glue_role_errors("a {glue:text}`x:.1f` and a {glue:text}x") != []


def test_glue_roles_are_well_formed(chapter):
    bad = [f"cell {i}: {e}" for i, c in enumerate(_load(chapter).cells) if c.cell_type == "markdown"
           for e in glue_role_errors(c.source)]
    assert not bad, f"{chapter.name}: " + "; ".join(bad)


def test_chapter_saves_results_and_checks_its_claim(chapter):
    cells = _code_cells(_load(chapter))
    code = "\n".join(c.source for c in cells)
    assert f'"{chapter.stem}"' in code and "chapter_context(CHAPTER, results_root" in code, \
        "the chapter must write its results under chapter_context(CHAPTER, results_root).results"
    asserts = [n for c in cells[3:] for n in ast.walk(ast.parse(c.source)) if isinstance(n, ast.Assert)]
    assert asserts, "the chapter needs an assertion cell that checks its claim numerically"


# ------------------------------------------------------------------------------------------------------------------
# Plumbing: papermill + validation + nbval on a miniature chapter that follows the conventions.
# ------------------------------------------------------------------------------------------------------------------
def _mini_chapter(path: Path, body: str = "total = sum(range(steps))\nprint(total)") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Mini"),
        nbformat.v4.new_code_cell("import sys\nif 'google.colab' in sys.modules:\n    pass"),
        nbformat.v4.new_code_cell('steps: int = 4  # number of steps\nmode: str = "a"  # "a" or "b"',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from aen_lib.book.notebook import validate_parameters\n"
            "PARAMS = validate_parameters(globals(), choices={'mode': ('a', 'b')})"
        ),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_wrong_parameter_type_stops_at_the_validation_cell(tmp_path):
    src = _mini_chapter(tmp_path / "mini.ipynb")
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"steps": "ten"},
                            kernel_name="python3", progress_bar=False)
    err = info.value
    assert err.ename == "TypeError" and "'steps'" in err.evalue and "int" in err.evalue
    out = _load(tmp_path / "out.ipynb")
    failed = [c for c in _code_cells(out) if any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "validate_parameters(" in failed[0].source
    assert _code_cells(out)[-1].execution_count is None  # nothing after it ran


@pytest.mark.slow
def test_papermill_output_passes_nbval_and_a_broken_cell_fails_it(tmp_path):
    out = tmp_path / "ok.ipynb"
    pm.execute_notebook(str(_mini_chapter(tmp_path / "mini.ipynb")), str(out), parameters={"steps": 3},
                        kernel_name="python3", progress_bar=False)
    run = _load(out)
    assert run.metadata.papermill.parameters == {"steps": 3}
    assert _code_cells(run)[-1].outputs[0]["text"] == "3\n"  # injected value used: 0 + 1 + 2
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval-lax",
           "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "--rootdir", str(tmp_path),
           "--color=no"]
    ok = subprocess.run([*cmd, str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = _load(out)
    _code_cells(broken)[-1].source = "raise RuntimeError('broken cell')"
    nbformat.write(broken, tmp_path / "broken.ipynb")
    bad = subprocess.run([*cmd, str(tmp_path / "broken.ipynb")], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1
    assert "Cell 4" in bad.stdout and "broken cell" in bad.stdout  # the failing cell is named


# ------------------------------------------------------------------------------------------------------------------
# make reproduce: chapter 9 reuses chapter 8's SAEs, or says loudly that it cannot.
# ------------------------------------------------------------------------------------------------------------------
CH7, CH8 = "08_pythia_reproduction", "09_what_features_are"


@pytest.mark.slow
def test_chapter8_asked_to_reuse_chapter7_fails_loudly_when_it_is_missing(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(ROOT / "chapters" / f"{CH8}.ipynb"), str(tmp_path / "08.ipynb"),
                            parameters={"reuse_chapter7": "require", "results_root": str(tmp_path / "results")},
                            kernel_name="python3", progress_bar=False,
                            cwd=str(ROOT / "chapters"), execution_timeout=600)
    err = info.value
    assert err.ename == "MissingResultsError", (err.ename, err.evalue)
    assert CH7 in err.evalue and str(tmp_path / "results" / CH7) in err.evalue


@pytest.mark.slow
def test_make_reproduce_hands_chapter7_to_chapter8(tmp_path):
    """A two-chapter profile (the ci sizes) through `make reproduce`: chapter 9 must reuse chapter 8's SAEs."""
    profile = tmp_path / "profile"
    profile.mkdir()
    shutil.copy(ROOT / "params" / "ci" / f"{CH7}.yaml", profile / f"{CH7}.yaml")
    ch8 = yaml.safe_load((ROOT / "params" / "ci" / f"{CH8}.yaml").read_text())
    (profile / f"{CH8}.yaml").write_text(yaml.safe_dump({**ch8, "reuse_chapter7": "require"}))
    venv = Path(sys.prefix)  # the environment running the tests: the Makefile's VENV
    stamp = f"{venv}/.aen-book-installed"
    runs = tmp_path / "runs"
    # -o: never (re)install into the running environment, whatever the stamp's age
    # a cell limit, so that a stalled chapter fails the test instead of hanging it (reproduce has none by default)
    out = subprocess.run(["make", "--no-print-directory", "-o", stamp, "reproduce", f"VENV={venv}",
                          f"PROFILE_DIR={profile}", f"RUNS_DIR={runs}", "REPRODUCE_CELL_TIMEOUT=600"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = json.loads((runs / "summary.json").read_text())
    assert [(r["run"], r["status"]) for r in summary] == [(CH7, "ok"), (CH8, "ok")]
    ch8_summary = json.loads((runs / "results" / CH8 / CH8 / "summary.json").read_text())
    assert ch8_summary["reused_chapter7"] is True
    assert ch8_summary["source"].startswith("chapter 8's SAEs")
    assert (runs / "results" / CH7 / CH7 / "saes" / "manifest.json").is_file()


# ------------------------------------------------------------------------------------------------------------------
# A stalled or dead kernel fails fast, naming the cell (the papermill options of `make test`'s ci-runs)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("body,words", [
    ("import time\ntime.sleep(600)  # a stalled cell", ["timed out", "time.sleep(600)"]),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)  # the kernel dies", ["Kernel died", "Dead"]),
])
def test_stalled_or_dead_kernel_fails_fast_and_names_the_cell(tmp_path, body, words):
    import time

    src = _mini_chapter(tmp_path / "mini.ipynb", body=body)
    cmd = [sys.executable, "-m", "papermill", str(src), str(tmp_path / "out.ipynb"), "--kernel", "python3",
           "--no-progress-bar", "--log-output", "--execution-timeout", "5"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    elapsed = time.perf_counter() - t0
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert elapsed < 120, f"took {elapsed:.0f} s to fail"
    assert any(w in text for w in words), text[-3000:]
    last = _code_cells(_load(tmp_path / "out.ipynb"))[-1]  # the cell that stalled or killed the kernel
    assert last.source == body and (last.metadata.papermill.get("duration") or 0) < 60, last.metadata
