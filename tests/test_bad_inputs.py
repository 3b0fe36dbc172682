"""A table of bad inputs: each must fail with an error that names the problem, and lose nothing already saved.

Covers the command line (``aen-train``), configs (SAEConfig, TrainConfig, CacheConfig, RunConfig), papermill
parameters (``notebook.validate_parameters``), training batches, run files, activation caches, saved SAE folders,
and model / dataset names that cannot be loaded offline. File cases snapshot what is on disk before the bad call and
check it is byte-identical afterwards. Cases marked ``xfail(strict=True)`` document an unclear error that still has
to be fixed in the module named in the reason; they turn into failures once fixed, so the mark gets removed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import save_file

from aen_lib import cli
from aen_lib.data.activation_cache import ActivationCache, CacheConfig, CorruptCacheError, write_activation_cache
from aen_lib.sae.config import SAEConfig
from aen_lib.training.distributed import RunConfig
from aen_lib.sae.io import load_sae, save_sae
from aen_lib.data.lm import hub_offline, load_lm, resolve_model
from aen_lib.sae.model import SAE
from aen_lib.book.notebook import validate_parameters
from aen_lib.sae.saelens import read_saelens_folder, saelens_cfg
from aen_lib.data.sources import ActivationSource
from aen_lib.data.text import DocRange, load_text_dataset
from aen_lib.training.train import TrainConfig, train
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    D_MODEL, single_thread, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_cfg(**kw: Any) -> dict[str, Any]:
    base = {"out_dir": "runs/x", "saes": [{"name": "a", "d_in": 4, "d_sae": 8}], "data": {"kind": "tensor"}}
    base.update(kw)
    return base


PARAM_HINTS = {"steps": int, "lr": float, "arch": str, "lambdas": list[float]}
PARAMS_OK = {"steps": 100, "lr": 1e-3, "arch": "aen", "lambdas": [0.1, 0.2]}


def _params(**changes: Any) -> dict[str, Any]:
    return {**PARAMS_OK, **changes}


# (id, call, exception type, regex the message must match)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # --- SAE configs -----------------------------------------------------------------------------------------
    ("sae_d_in_zero", lambda: SAEConfig(d_in=0, d_sae=8), ValueError, r"d_in=0 is invalid: must be a positive"),
    ("sae_unknown_architecture", lambda: SAEConfig(d_in=4, d_sae=8, architecture="gated"), ValueError,
     r"architecture='gated' is unknown; known: \[.*'aen'"),
    ("sae_topk_k_zero", lambda: SAEConfig(d_in=4, d_sae=8, architecture="topk", k=0), ValueError,
     r"k=0 is invalid: must satisfy 1 <= k <= d_sae=8"),
    ("sae_topk_k_too_big", lambda: SAEConfig(d_in=4, d_sae=8, architecture="topk", k=9), ValueError, r"k=9 is invalid"),
    ("sae_l2_on_relu_l1", lambda: SAEConfig(d_in=4, d_sae=8, architecture="relu_l1", l2=0.1), ValueError,
     r"l2=0.1 is invalid: must be 0 for relu_l1"),
    ("sae_negative_l1", lambda: SAEConfig(d_in=4, d_sae=8, l1=-0.1), ValueError, r"l1=-0.1 is invalid: must be >= 0"),
    ("sae_ema_beta_one", lambda: SAEConfig(d_in=4, d_sae=8, ema_beta=1.0), ValueError,
     r"ema_beta=1.0 is invalid: must lie in \[0, 1\)"),
    ("sae_gamma_nan", lambda: SAEConfig(d_in=4, d_sae=8, gamma=math.nan), ValueError, r"gamma=nan is invalid: must be finite"),
    ("sae_w_min_above_w_max", lambda: SAEConfig(d_in=4, d_sae=8, w_min=5.0, w_max=1.0), ValueError,
     r"w_min=5.0 is invalid: must be <= w_max=1.0"),
    ("sae_d_in_as_text", lambda: SAEConfig(d_in="4", d_sae=8), ValueError, r"d_in='4' is invalid: must be an integer"),
    ("sae_unknown_field", lambda: SAEConfig.from_dict({"d_in": 4, "d_sae": 8, "lamda": 1.0}), ValueError,
     r"unknown SAEConfig field\(s\) \['lamda'\]; allowed fields are"),
    # --- training configs ------------------------------------------------------------------------------------
    ("train_lr_zero", lambda: TrainConfig(lr=0.0), ValueError, r"lr=0.0 is invalid: must be > 0"),
    ("train_lr_inf", lambda: TrainConfig(lr=math.inf), ValueError, r"lr=inf is invalid: must be finite"),
    ("train_negative_steps", lambda: TrainConfig(steps=-5), ValueError, r"steps=-5 is invalid: must be a positive"),
    ("train_autocast_fp16", lambda: TrainConfig(autocast="fp16"), ValueError, r"autocast='fp16' is invalid"),
    ("train_checkpoint_without_dir", lambda: TrainConfig(checkpoint_every=10), ValueError,
     r"checkpoint_dir='' is invalid: must be set when checkpoint_every > 0"),
    # --- papermill parameters --------------------------------------------------------------------------------
    ("param_yaml_float_as_text", lambda: validate_parameters(_params(lr="1e-3"), PARAM_HINTS), TypeError,
     r"parameter 'lr' must be of type float, got str '1e-3' \(YAML reads '1e-3' as text: write 1.0e-3\)"),
    ("param_bool_for_int", lambda: validate_parameters(_params(steps=True), PARAM_HINTS), TypeError,
     r"parameter 'steps' must be of type int, got bool True"),
    ("param_list_item_type", lambda: validate_parameters(_params(lambdas=[0.1, "x"]), PARAM_HINTS), TypeError,
     r"parameter 'lambdas' must be of type list\[float\]"),
    ("param_out_of_bounds", lambda: validate_parameters(_params(steps=-1), PARAM_HINTS, bounds={"steps": (1, None)}),
     ValueError, r"parameter 'steps' = -1 is outside the allowed range \[1, inf\]"),
    ("param_nan", lambda: validate_parameters(_params(lr=math.nan), PARAM_HINTS, bounds={"lr": (0, 1)}), ValueError,
     r"parameter 'lr' is NaN"),
    ("param_not_a_choice", lambda: validate_parameters(_params(arch="gated"), PARAM_HINTS, choices={"arch": ["aen", "topk"]}),
     ValueError, r"parameter 'arch' = 'gated' is not allowed; choose one of: 'aen', 'topk'"),
    ("param_missing", lambda: validate_parameters({k: v for k, v in PARAMS_OK.items() if k != "lr"}, PARAM_HINTS),
     ValueError, r"parameter 'lr' is annotated but has no value"),
    # --- run files (as dicts) --------------------------------------------------------------------------------
    ("run_unknown_data_kind", lambda: RunConfig.from_dict(_run_cfg(data={"kind": "hdf5"})), ValueError,
     r"data.kind='hdf5' is invalid: must be one of \['tensor', 'cache', 'lm', 'spiked'\]"),
    ("run_duplicate_names", lambda: RunConfig.from_dict(_run_cfg(saes=[{"name": "a", "d_in": 4, "d_sae": 8}] * 2)),
     ValueError, r"names must be unique"),
    ("run_no_saes", lambda: RunConfig.from_dict(_run_cfg(saes=[])), ValueError, r"must list at least one SAE config"),
    ("run_checkpoint_dir_in_train", lambda: RunConfig.from_dict(_run_cfg(train={"checkpoint_dir": "elsewhere"})),
     ValueError, r"train.checkpoint_dir='elsewhere' is invalid: is set by the run"),
    ("run_bad_sae_entry", lambda: RunConfig.from_dict(_run_cfg(saes=[{"name": "a", "d_in": 4, "d_sae": 8, "k": -1,
                                                                     "architecture": "topk"}])),
     ValueError, r"k=-1 is invalid"),
    ("run_bad_train_value", lambda: RunConfig.from_dict(_run_cfg(train={"lr": -1})), ValueError,
     r"lr=-1.0 is invalid: must be > 0"),
    ("run_unknown_field", lambda: RunConfig.from_dict(_run_cfg(epochs=3)), ValueError,
     r"unknown RunConfig field\(s\) \['epochs'\]"),
    # --- caches (configs) ------------------------------------------------------------------------------------
    ("cache_drop_first_whole_window", lambda: CacheConfig(model="m", layer=0, d_model=4, window=8, drop_first=8),
     ValueError, r"CacheConfig.drop_first=8 must be < window=8"),
    ("cache_unknown_normalisation", lambda: CacheConfig(model="m", layer=0, d_model=4, window=8, normalization="l2"),
     ValueError, r"CacheConfig.normalization='l2'; allowed: \['per_token_l2', 'none'\]"),
    ("cache_unknown_lm_dtype", lambda: CacheConfig(model="m", layer=0, d_model=4, window=8, lm_dtype="fp8"),
     ValueError, r"CacheConfig.lm_dtype='fp8'; allowed"),
    ("cache_negative_layer", lambda: CacheConfig(model="m", layer=-1, d_model=4, window=8), ValueError,
     r"CacheConfig.layer must be an int >= 0, got -1"),
    # --- exports ---------------------------------------------------------------------------------------------
    ("saelens_unknown_normalisation", lambda: saelens_cfg(SAEConfig(d_in=4, d_sae=8), dtype="float32",
                                                          normalization="layer_norm"),
     ValueError, r"normalization='layer_norm'; allowed: \['none', 'per_token_l2'\]"),
    ("saelens_unstated_normalisation", lambda: saelens_cfg(SAEConfig(d_in=4, d_sae=8), dtype="float32"), ValueError,
     r"say how the SAE's training inputs were normalised"),
    # --- model and dataset names -----------------------------------------------------------------------------
    ("model_unknown_name", lambda: resolve_model("gpt5"), ValueError,
     r"unknown model name 'gpt5'; registered names: \[.*'smollm2-135m'"),
    ("model_missing_local_path", lambda: resolve_model("./no/such/model"), FileNotFoundError,
     r"'./no/such/model' looks like a local path but no such directory exists"),
    ("model_dtype_as_text", lambda: load_lm("smollm2-135m", dtype="float32"), TypeError,
     r"dtype must be a torch.dtype \(e.g. torch.float32\), got 'float32'"),
    ("dataset_offline_split", lambda: load_text_dataset("offline", split="validation"), ValueError,
     r"split='validation': the offline corpus has only split 'train'"),
    ("doc_range_backwards", lambda: DocRange(5, 2), ValueError, r"DocRange.stop must be None or an int >= start=5, got 2"),
    # --- the SAE itself --------------------------------------------------------------------------------------
    ("sae_input_wrong_width", lambda: SAE(SAEConfig(d_in=4, d_sae=8))(torch.zeros(3, 5)), ValueError,
     r"x has shape \(3, 5\); expected \[..., d_in\] with d_in=4"),
    ("source_batch_size_zero", lambda: ActivationSource(None, 0), ValueError, r"batch_size must be an int >= 1, got 0"),
]


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_named(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_case_ids_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


# --------------------------------------------------------------------------------------------------------------
# Hub names that cannot be loaded offline
# --------------------------------------------------------------------------------------------------------------


def _hub_is_off() -> bool:
    try:
        import huggingface_hub.constants as hc
    except ImportError:
        return False
    return hub_offline() and bool(hc.HF_HUB_OFFLINE)


@pytest.mark.skipif(not _hub_is_off(), reason="needs HF_HUB_OFFLINE=1 (otherwise this would download a model)")
@pytest.mark.parametrize("name,pattern", [
    ("pythia-70m-deduped", r"model 'pythia-70m-deduped' \(hub id 'EleutherAI/pythia-70m-deduped'\) could not be "
                           r"loaded: .*switched off.*unset HF_HUB_OFFLINE"),
    ("nobody/no-such-model", r"model 'nobody/no-such-model' .*could not be loaded.*Models that need no Hub: "
                             r"\['smollm2-135m'\]"),
])
def test_hub_model_offline_is_named(name, pattern):
    with pytest.raises(OSError, match=pattern):
        load_lm(name)


@pytest.mark.skipif(not _hub_is_off(), reason="needs HF_HUB_OFFLINE=1 (otherwise this would download a dataset)")
def test_hub_dataset_offline_is_named():
    with pytest.raises(OSError, match=r"dataset 'nobody/no-such-corpus' \(split 'train'\) could not be loaded: .*"
                                      r"Use name='offline'"):
        load_text_dataset("nobody/no-such-corpus", streaming=True)


# --------------------------------------------------------------------------------------------------------------
# The command line: a bad flag stops before anything is trained or written
# --------------------------------------------------------------------------------------------------------------

CLI_CASES = [
    ("unknown_architecture", ["--architecture", "foo"], r"architecture='foo' is unknown; known:"),
    ("topk_k_zero", ["--architecture", "topk", "--k", "0"], r"k=0 is invalid: must satisfy 1 <= k"),
    ("spike_out_of_range", ["--rho", "1.5"], r"rho must be a float in \[0, 1\), got 1.5"),
    ("negative_batch", ["--batch-size", "-1"], r"batch_size=-1 is invalid: must be a positive integer"),
    ("negative_l1", ["--l1", "-0.5"], r"l1=-0.5 is invalid: must be >= 0"),
    ("data_k_above_m", ["--data-k", "5000"], r"k must be <= m=1024, got k=5000"),
    ("resume_without_out", ["--resume", "--steps", "1", "--n", "8", "--m", "16", "--data-k", "2"],
     r"--resume needs --out"),
]


@pytest.mark.parametrize("argv,pattern", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_flag(argv, pattern, tmp_path, capsys, saved_sae):
    out = tmp_path / "run"
    shutil.copytree(saved_sae, out / "sae")
    before = snapshot(out)
    rc = cli.main([*argv, "--out", str(out)] if "--resume" not in argv else argv)
    assert rc == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert snapshot(out) == before  # an earlier run's SAE in --out is untouched


@pytest.mark.parametrize("argv,pattern", [(["--steps", "abc"], r"invalid int value: 'abc'"),
                                          (["--autocast", "fp16"], r"invalid choice: 'fp16'")],
                         ids=["steps_not_a_number", "autocast_unknown"])
def test_cli_unparsable_flag(argv, pattern, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_cli_resume_without_checkpoint(tmp_path, capsys):
    assert cli.main(["--resume", "--out", str(tmp_path / "none"), "--steps", "2", "--n", "8", "--m", "16",
                     "--data-k", "2", "--no-progress"]) == 2
    assert re.search(r"checkpoint .*checkpoint.pt does not exist; point --out at", capsys.readouterr().err)
    assert not (tmp_path / "none" / "sae").exists()


# --------------------------------------------------------------------------------------------------------------
# Training batches
# --------------------------------------------------------------------------------------------------------------


class _Batches:
    """A data source that returns a fixed batch."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def sample(self, batch_size: int) -> torch.Tensor:
        return self.x

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _nan_batch() -> torch.Tensor:
    x = torch.randn(8, 4)
    x[2, 1] = math.nan
    x[5, 0] = math.inf
    x[7, 3] = -math.inf
    return x


@pytest.mark.parametrize("x,pattern", [
    (_nan_batch(), r"batch contains 3 NaN/Inf values; clean the activations"),
    (torch.randn(8, 5), r"batch has shape \(8, 5\); expected \[batch, d_in=4\]"),
    (torch.randn(8), r"batch has shape \(8,\); expected \[batch, d_in=4\]"),
], ids=["nan_batch", "wrong_width_batch", "one_dim_batch"])
def test_bad_batch_stops_training_and_keeps_the_checkpoint(x, pattern, tmp_path):
    sae = SAE(SAEConfig(d_in=4, d_sae=8, l1=1e-3))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "notes.txt").write_bytes(b"a file of the user's")
    before_params = [p.detach().clone() for p in sae.parameters()]
    with pytest.raises(ValueError, match=pattern):
        train(sae, _Batches(x), TrainConfig(steps=3, batch_size=8, checkpoint_every=1, checkpoint_dir=str(ckpt),
                                            progress=False))
    assert sorted(p.name for p in ckpt.iterdir()) == ["notes.txt"]  # no half-started run left behind
    assert (ckpt / "notes.txt").read_bytes() == b"a file of the user's"
    assert all(torch.equal(a, b) for a, b in zip(before_params, sae.parameters()))


def test_fresh_run_into_a_used_folder_keeps_its_metrics(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "metrics.jsonl").write_text('{"step": 500, "l0": 12.0}\n')
    sae = SAE(SAEConfig(d_in=4, d_sae=8, l1=1e-3))
    with pytest.raises(ValueError, match=r"holds (a run|metrics)"):
        train(sae, _Batches(_nan_batch()), TrainConfig(steps=3, batch_size=8, checkpoint_dir=str(ckpt), progress=False))
    assert (ckpt / "metrics.jsonl").read_text() == '{"step": 500, "l0": 12.0}\n'


# --------------------------------------------------------------------------------------------------------------
# Run files on disk
# --------------------------------------------------------------------------------------------------------------


def test_run_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run file .*nope.yaml does not exist"):
        RunConfig.load(tmp_path / "nope.yaml")


def test_run_file_not_a_mapping(tmp_path):
    (tmp_path / "run.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"run file .*run.yaml holds a list, not a mapping"):
        RunConfig.load(tmp_path / "run.yaml")


def test_run_file_truncated_json(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_run_cfg())[:40])
    with pytest.raises(ValueError, match=r"run file .*run.json is not valid JSON"):
        RunConfig.load(path)


def test_run_file_broken_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("out_dir: x\nsaes: [\n")
    with pytest.raises(ValueError, match=r"run file .*run.yaml is not valid YAML"):
        RunConfig.load(path)


# --------------------------------------------------------------------------------------------------------------
# Saved SAEs: truncated, foreign and clashing folders
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved_sae(tmp_path) -> Path:
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="aen", l1=1e-3, l2=1e-4))
    return save_sae(sae, tmp_path / "saved" / "sae", metadata={"model_name": "m"}, normalization="none")


def _damaged_copy(saved: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(saved, copy)
    damage(copy)
    return copy


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


def _edit_cfg(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        cfg = json.loads((folder / "cfg.json").read_text())
        change(cfg)
        (folder / "cfg.json").write_text(json.dumps(cfg))
    return damage


def _wrong_shape(folder: Path) -> None:
    from safetensors.torch import load_file

    t = load_file(str(folder / "sae_weights.safetensors"))
    t["W_dec"] = torch.zeros(8, 5)
    save_file(t, str(folder / "sae_weights.safetensors"))


SAVED_CASES = [
    ("truncated_cfg", _truncate("cfg.json"), ValueError, r"cfg.json is not valid JSON .*the file is truncated or corrupt"),
    ("truncated_weights", _truncate("sae_weights.safetensors"), ValueError,
     r"sae_weights.safetensors could not be read .*the file is truncated or corrupt"),
    ("missing_weights", lambda f: (f / "sae_weights.safetensors").unlink(), FileNotFoundError,
     r"sae_weights.safetensors is missing; expected an SAE folder with cfg.json \+ sae_weights.safetensors"),
    ("unknown_architecture", _edit_cfg(lambda c: c["aen_lib"].update(architecture="gated")), ValueError,
     r"architecture='gated' is unknown; known: \["),
    ("wrong_shape", _wrong_shape, ValueError, r"W_dec has shape \(8, 5\), expected \(8, 4\)"),
]


@pytest.mark.parametrize("damage,exc,pattern", [c[1:] for c in SAVED_CASES], ids=[c[0] for c in SAVED_CASES])
def test_damaged_saved_sae_is_named(damage, exc, pattern, saved_sae, tmp_path):
    before = snapshot(saved_sae)
    bad = _damaged_copy(saved_sae, tmp_path, damage)
    with pytest.raises(exc, match=pattern):
        load_sae(bad)
    assert snapshot(saved_sae) == before


def test_missing_sae_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing is not a folder; expected an SAE folder"):
        load_sae(tmp_path / "nothing")


def test_folder_without_the_aen_lib_section_loads_as_a_saelens_sae(saved_sae, tmp_path):
    """A SAELens-trained folder has no aen_lib section: it loads as the plain SAE it is at inference."""
    folder = _damaged_copy(saved_sae, tmp_path, _edit_cfg(lambda c: c.pop("aen_lib")))
    sae, meta = load_sae(folder)
    ours, _ = load_sae(saved_sae)
    x = torch.randn(5, 4)
    assert torch.allclose(sae.encode(x), ours.encode(x)) and meta["normalization"] == "none"


def test_save_over_an_existing_sae_is_refused(saved_sae):
    before = snapshot(saved_sae)
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True to replace it"):
        save_sae(SAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2)), saved_sae, normalization="none")
    assert snapshot(saved_sae) == before
    assert load_sae(saved_sae)[0].cfg.architecture == "aen"


def test_foreign_folder_with_unsupported_saelens_architecture(tmp_path):
    folder = tmp_path / "gated"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": 4, "d_sae": 8,
                                                 "metadata": {"sae_lens_version": "6.54.12"}}))
    save_file({"W_enc": torch.zeros(4, 8)}, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"SAELens architecture 'gated' is not supported by aen_lib; supported: "
                                         r"\['jumprelu', 'standard', 'topk'\]"):
        read_saelens_folder(folder)


def test_sae_folder_that_is_a_cache_or_a_list(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "cfg.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"holds a JSON list, not an object"):
        read_saelens_folder(folder)


# --------------------------------------------------------------------------------------------------------------
# Activation caches: mismatched, truncated and damaged
# --------------------------------------------------------------------------------------------------------------

LAYER = 1


@pytest.fixture(scope="module")
def tiny_llama(tiny_lm_dirs):
    return load_lm(tiny_lm_dirs["llama"], dtype=torch.float32)[0]


@pytest.fixture
def cache(tiny_llama, tiny_windows, tmp_path) -> tuple[Path, CacheConfig]:
    cfg = CacheConfig(model="tiny", layer=LAYER, d_model=D_MODEL, window=tiny_windows.shape[1], dataset="pydoc")
    path = tmp_path / "cache"
    write_activation_cache(path, tiny_llama, tiny_windows, cfg, max_windows=6, batch_size=3, shard_rows=40,
                           progress=False)
    return path, cfg


def test_cache_of_another_config_is_refused(cache, tiny_llama, tiny_windows):
    path, cfg = cache
    before = snapshot(path)
    for change, field in ((dict(layer=2), "layer"), (dict(normalization="none"), "normalization"),
                          (dict(doc_start=100), "doc_start"), (dict(dtype="float16"), "dtype")):
        with pytest.raises(ValueError, match=rf"refusing to mix activations in .*config differs \({field}: cache has"):
            write_activation_cache(path, tiny_llama, tiny_windows, CacheConfig(**{**cfg.to_dict(), **change}),
                                   progress=False)
    assert snapshot(path) == before


def test_cache_from_another_lm_dtype_is_refused(cache, tiny_lm_dirs, tiny_windows):
    path, cfg = cache
    before = snapshot(path)
    half = load_lm(tiny_lm_dirs["llama"], dtype=torch.bfloat16)[0]
    with pytest.raises(ValueError, match=r"LM dtype differs \(cache harvested in float32, this model is bfloat16\)"):
        write_activation_cache(path, half, tiny_windows, cfg, progress=False)
    assert snapshot(path) == before


def test_cache_from_another_model_is_refused(cache, tiny_lm_dirs, tiny_windows):
    path, cfg = cache
    before = snapshot(path)
    other = load_lm(tiny_lm_dirs["gpt_neox"], dtype=torch.float32)[0]
    with pytest.raises(ValueError, match=r"LM weights differ \(fingerprint [0-9a-f]{16} in the cache"):
        write_activation_cache(path, other, tiny_windows, cfg, progress=False)
    assert snapshot(path) == before


def test_cache_extended_with_other_windows_is_refused(cache, tiny_llama, tiny_windows):
    path, cfg = cache
    before = snapshot(path)
    with pytest.raises(ValueError, match=r"the windows given differ from the stored ones, first at window index 0"):
        write_activation_cache(path, tiny_llama, tiny_windows.flip(0), cfg, progress=False)
    assert snapshot(path) == before


def test_truncated_cache_manifest(cache, tiny_llama, tiny_windows):
    path, cfg = cache
    manifest = path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:50])
    before = snapshot(path)
    with pytest.raises(CorruptCacheError, match=r"manifest.json is not valid JSON .*truncated or corrupt: delete"):
        ActivationCache(path)
    with pytest.raises(CorruptCacheError, match=r"not valid JSON"):
        write_activation_cache(path, tiny_llama, tiny_windows, cfg, progress=False)
    assert snapshot(path) == before  # shards are kept for whoever wants to look at them


def test_cache_with_a_missing_shard(cache):
    path, _ = cache
    shard = sorted(path.glob("shard_*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CorruptCacheError, match=rf"shard {shard.name} listed in .*manifest.json is missing"):
        ActivationCache(path).verify()


def test_cache_source_asks_for_more_windows_than_cached(cache):
    from aen_lib.data.sources import cache_source

    path, _ = cache
    with pytest.raises(ValueError, match=r"max_windows=99 but the cache at .* holds 6 windows"):
        cache_source(path, 8, max_windows=99)


def test_a_folder_that_is_not_a_cache(saved_sae):
    with pytest.raises(FileNotFoundError, match=r"no activation cache at .* \(missing manifest.json\)"):
        ActivationCache(saved_sae)


def test_cache_manifest_from_something_else(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "webdataset", "shards": []}))
    with pytest.raises(ValueError, match=r"is not an aen_lib.activation_cache manifest"):
        ActivationCache(tmp_path)


def test_nan_activation_mean_is_refused(tiny_llama, tiny_windows):
    from aen_lib.evaluation.splice import spliced_evaluation

    with pytest.raises(ValueError, match=r"ablation_mean holds NaN or infinite values"):
        spliced_evaluation(tiny_llama, torch.nn.Identity(), tiny_windows[:2], LAYER,
                           ablation_mean=torch.full((D_MODEL,), math.nan), progress=False)


def test_splice_layer_out_of_range(tiny_llama, tiny_windows):
    from aen_lib.evaluation.splice import spliced_evaluation

    with pytest.raises(ValueError, match=r"layer=9 out of range; LlamaForCausalLM has blocks 0..3"):
        spliced_evaluation(tiny_llama, torch.nn.Identity(), tiny_windows[:2], 9, progress=False)



def test_saelens_reader_validates_our_section(saved_sae, tmp_path):
    bad = _damaged_copy(saved_sae, tmp_path, _edit_cfg(lambda c: c["aen_lib"].update(d_sae=-3)))
    with pytest.raises(ValueError, match=r"d_sae=-3 is invalid: must be a positive integer"):
        read_saelens_folder(bad)
