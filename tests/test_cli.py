"""The aen-train command line."""

import json

from aen_lib.cli import main

TINY = ["--n", "16", "--m", "32", "--data-k", "3", "--steps", "40", "--batch-size", "32", "--warmup-steps", "10",
        "--ramp-steps", "10", "--dead-window", "20", "--log-every", "10", "--no-progress"]


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


def test_cli_bad_values_exit_2(capsys):
    assert main(["--architecture", "gated", *TINY]) == 2
    assert "architecture" in capsys.readouterr().err
    assert main(["--rho", "1.5", *TINY]) == 2
    assert main(["--ema-beta", "1.0", *TINY]) == 2
