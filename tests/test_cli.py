"""The aen-train command line."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from aen_lib.cli import main

TINY = ["--n", "16", "--m", "32", "--data-k", "3", "--steps", "40", "--batch-size", "32", "--warmup-steps", "10",
        "--ramp-steps", "10", "--dead-window", "20", "--log-every", "10", "--no-progress"]


@pytest.fixture(autouse=True)
def _keep_wait_policy(monkeypatch):
    """main() sets OMP_WAIT_POLICY when it is unset; monkeypatch puts the variable back as it was after each test."""
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


def test_cli_trains_and_writes_results(tmp_path, capsys):
    assert main(["--architecture", "aen", "--out", str(tmp_path / "run"), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "L0" in printed and "dead" in printed and "support F1" in printed
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    for key in ("l0", "dead_pct", "ev", "support_f1", "dictionary_mean_cos"):
        assert key in final
    assert 0 <= final["support_f1"] <= 1 and 0 <= final["dead_pct"] <= 100
    assert (tmp_path / "run" / "sae" / "sae_weights.safetensors").exists()


def test_cli_topk_has_l0_k(tmp_path):
    assert main(["--architecture", "topk", "--k", "3", "--out", str(tmp_path / "t"), *TINY]) == 0
    final = json.loads((tmp_path / "t" / "final.json").read_text())
    assert final["l0"] <= 3.0


def test_final_json_is_a_versioned_train_final_result_that_a_resume_rewrites(tmp_path, capsys):
    from aen_lib.results.records import read_result

    out = tmp_path / "run"
    assert main(["--out", str(out), "--checkpoint-every", "20", *TINY]) == 0
    first = read_result(out / "final.json", "train_final")
    assert first["record_version"] == 1 and list(json.loads((out / "final.json").read_text()))[0] == "record_version"
    with pytest.raises(ValueError, match="final.json: this distributed_result record lacks .*train_final record"):
        read_result(out / "final.json", "distributed_result")
    (out / "final.json").write_text(json.dumps({k: v for k, v in first.items() if k != "record_version"}))
    assert read_result(out / "final.json", "train_final")["l0"] == first["l0"]  # written before the version: v1
    assert main(["--resume", "--out", str(out), *TINY, "--steps", "60"]) == 0  # the same run continued: replaced
    assert json.loads((out / "final.json").read_text())["record_version"] == 1  # the legacy file was rewritten
    capsys.readouterr()


def test_cli_bad_values_exit_2(capsys):
    assert main(["--architecture", "gated", *TINY]) == 2
    assert "architecture" in capsys.readouterr().err
    assert main(["--rho", "1.5", *TINY]) == 2
    assert main(["--ema-beta", "1.0", *TINY]) == 2


# --------------------------------------------------------------------------------------------------------------
# Problems the user can fix end in one line naming the problem and the fix, exit code 2, and nothing trained
# --------------------------------------------------------------------------------------------------------------


def fails_in_one_line(argv, capsys, *words):
    """Run main(argv); it must return 2 and print one stderr line ``aen-train: ...`` holding every word."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("aen-train: ") and "\n" not in err, err
    assert "Traceback" not in err and "L0" not in captured.out  # nothing was trained
    for word in words:
        assert word in err, (word, err)
    return err


def test_device_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails_in_one_line(["--device", "cuda", "--out", str(tmp_path / "run"), *TINY], capsys,
                      "--device cuda", "no CUDA GPU", "use --device cpu")
    assert not (tmp_path / "run").exists()  # the device is checked before --out is created


def test_device_that_torch_does_not_know(capsys):
    fails_in_one_line(["--device", "gpu", *TINY], capsys, "'gpu' is not a torch device", "use auto, cpu, cuda")


def test_out_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("notes\n")
    fails_in_one_line(["--out", str(tmp_path / "run"), *TINY], capsys, "is a file, not a folder", "give a folder path")
    assert (tmp_path / "run").read_text() == "notes\n"


def test_out_below_a_file(tmp_path, capsys):
    """A path whose parent is a regular file cannot be created, whoever runs it (root included)."""
    (tmp_path / "notes.txt").write_text("notes\n")
    out = tmp_path / "notes.txt" / "run"
    fails_in_one_line(["--out", str(out), *TINY], capsys, f"{tmp_path / 'notes.txt'} is a file",
                      "choose a path inside a folder")


def test_out_not_writable(tmp_path, capsys):
    """A read-only folder, for real; root (as in CI) writes into it anyway: the next test covers that case."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0 or os.access(locked, os.W_OK):
            pytest.skip("root (or this file system) can write into a read-only folder")
        fails_in_one_line(["--out", str(locked / "run"), *TINY], capsys, "not writable", "choose a folder you can write")
        fails_in_one_line(["--out", str(locked), *TINY], capsys, "not writable")
    finally:
        locked.chmod(0o700)


def test_out_not_writable_whoever_runs_it(tmp_path, capsys, monkeypatch):
    """The CLI's write probe (a temporary file in --out) refused as the kernel refuses it, for any user, root included;
    in another folder the probe passes and the next check (here: no checkpoint to resume) speaks."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.TemporaryFile

    def refuse_in_locked(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(locked.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_in_locked)
    fails_in_one_line(["--out", str(locked / "run"), *TINY], capsys, "not writable", "choose a folder you can write")
    fails_in_one_line(["--out", str(locked), *TINY], capsys, "not writable")
    fails_in_one_line(["--resume", "--out", str(locked), *TINY], capsys, "not writable")
    (tmp_path / "open").mkdir()
    err = fails_in_one_line(["--resume", "--out", str(tmp_path / "open"), *TINY], capsys, "cannot resume")
    assert "not writable" not in err


def test_out_holding_a_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    fails_in_one_line(["--out", str(out), *TINY], capsys, "already holds a run", "add --resume")


def test_resume_without_checkpoint(tmp_path, capsys):
    fails_in_one_line(["--resume", "--out", str(tmp_path / "none"), *TINY], capsys,
                      "checkpoint.pt does not exist", "drop --resume")
    assert not (tmp_path / "none").exists()


def test_resume_from_a_corrupt_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint\n" * 3)
    fails_in_one_line(["--resume", "--out", str(out), *TINY], capsys,
                      "checkpoint.pt could not be read", "the file is corrupt", "delete it")


def test_resume_with_other_flags_names_them(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["--out", out, "--checkpoint-every", "20", *TINY]) == 0
    capsys.readouterr()
    fails_in_one_line(["--resume", "--out", out, "--l1", "0.01", "--rho", "0.5", *TINY], capsys,
                      "--l1 0.005 (this command: 0.01)", "--rho 0.0 (this command: 0.5)", "repeat that run's flags")
    assert main(["--resume", "--out", out, *TINY, "--steps", "60"]) == 0  # the same flags continue it


def test_console_script_fails_in_one_line_and_sleeps_openmp(tmp_path):
    """As the installed ``aen-train`` runs it (a fresh process): exit code 2, one stderr line, no traceback; and the
    process's OpenMP runtime started with sleeping waits (GNU libgomp reports a spin count of 0)."""
    (tmp_path / "run").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(OMP_NUM_THREADS="1", OMP_DISPLAY_ENV="VERBOSE")
    code = "import sys; from aen_lib.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "--out", str(tmp_path / "run"), *TINY], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aen-train: ")]
    assert len(lines) == 1 and "is a file, not a folder" in lines[0] and "Traceback" not in proc.stderr
    if "GOMP_SPINCOUNT" not in proc.stderr:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp here: no spin count to read")
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr


def test_option_flags_reach_the_architecture_and_bad_ones_fail_in_one_line(tmp_path, capsys):
    """--option sets an architecture's own setting (here TopK+AuxK's k_aux and coefficient, saved with the SAE's
    config); an unknown name, a bad value or a malformed flag ends in one line naming the problem, exit 2."""
    from aen_lib.sae.io import load_sae

    out = tmp_path / "aux"
    assert main(["--architecture", "topk_auxk", "--k", "3", "--option", "auxk_k=5", "--option", "auxk_coef=0.25",
                 "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    sae, _ = load_sae(out / "sae")
    assert sae.cfgs[0].options == {"auxk_k": 5, "auxk_coef": 0.25}
    for flags, says in ((["--option", "auxk_k=-1"], "auxk_k"), (["--option", "nonsense=1"], "nonsense"),
                        (["--option", "auxk_k"], "NAME=VALUE")):
        assert main(["--architecture", "topk_auxk", "--k", "3", *flags, *TINY]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert "auxk_dead_tokens" in subprocess.run([sys.executable, "-m", "aen_lib.cli", "--help"], capture_output=True,
                                                text=True, timeout=120).stdout
