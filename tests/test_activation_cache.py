"""Tests for aen_lib.data.activation_cache: the folder key, writing, resuming and verifying a cache, and its refusal to mix
LMs, configurations and window sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aen_lib.data.activation_cache import (
    ActivationCache,
    CacheConfig,
    CorruptCacheError,
    activation_cache_dir,
    write_activation_cache,
)
from aen_lib.data.harvest import harvest_activations
from aen_lib.data.sources import ActivationSource
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    tiny_cache_config,
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = 1


# ----------------------------------------------------------------------------------------------------------------
# cache folder
# ----------------------------------------------------------------------------------------------------------------
def test_activation_cache_dir_is_keyed_by_every_field(tmp_path):
    cfg = CacheConfig(model="smollm2-135m", layer=15, d_model=576, window=128, dataset="offline", doc_start=100)
    a = activation_cache_dir(cfg, tmp_path)
    assert a == activation_cache_dir(CacheConfig(**cfg.to_dict()), tmp_path)
    assert a.parent == tmp_path / "activations" and a.name.startswith("smollm2-135m-L15-")
    others = [cfg.__class__(**{**cfg.to_dict(), k: v}) for k, v in
              (("layer", 14), ("doc_start", 0), ("normalization", "none"), ("dataset", "pile"), ("dtype", "float16"))]
    assert len({activation_cache_dir(o, tmp_path) for o in others} | {a}) == len(others) + 1
    hub = activation_cache_dir(cfg.__class__(**{**cfg.to_dict(), "model": "EleutherAI/pythia-70m-deduped"}), tmp_path)
    assert hub.parent == tmp_path / "activations" and "/" not in hub.name
    with pytest.raises(TypeError):
        activation_cache_dir(cfg.to_dict(), tmp_path)


def test_activation_cache_dir_root_is_an_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("AEN_LIB_CACHE", str(tmp_path / "env"))  # the old variable: no longer read
    cfg = CacheConfig(model="m", layer=0, d_model=4, window=8)
    assert activation_cache_dir(cfg, tmp_path / "arg").parent == tmp_path / "arg" / "activations"
    assert activation_cache_dir(cfg).parent == Path.home() / ".cache" / "aen_lib" / "activations"



def _config(_model, **kw):
    return tiny_cache_config(**{"layer": LAYER, **kw})


def test_cache_round_trip_and_refuses_other_config(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), batch_size=4,
                                   shard_rows=50, progress=False)
    assert cache.complete and cache.n_windows == len(tiny_windows) and len(cache.shards) > 1
    expected = harvest_activations(model, tiny_windows, LAYER, batch_size=4, progress=False)
    got = cache.load()
    for k, v in expected.to_tensors().items():
        torch.testing.assert_close(getattr(got, k), v, rtol=0, atol=0)
    assert got.normalized
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["config"]["layer"] == LAYER and all(len(s["sha256"]) == 64 for s in manifest["shards"])
    for change in (dict(layer=2), dict(normalization="none"), dict(model="other"), dict(dtype="float16")):
        field = next(iter(change))
        with pytest.raises(ValueError, match=rf"refusing to mix.*{field}"):
            write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model, **change), progress=False)
    with pytest.raises(ValueError, match="CacheConfig.dtype"):
        _config(model, dtype="int8")


def test_cache_resume_equals_one_shot(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cfg = _config(model)
    one = write_activation_cache(tmp_path / "one", model, tiny_windows, cfg, batch_size=2, shard_rows=40,
                                 progress=False)

    def crashing(n):
        for i, w in enumerate(tiny_windows):
            if i == n:
                raise KeyboardInterrupt("simulated crash")
            yield w

    with pytest.raises(KeyboardInterrupt):
        write_activation_cache(tmp_path / "two", model, crashing(7), cfg, batch_size=2, shard_rows=40, progress=False)
    partial = ActivationCache(tmp_path / "two")
    assert not partial.complete and 0 < partial.n_windows < len(tiny_windows)
    # extend with a window budget first, then to the end
    mid = write_activation_cache(tmp_path / "two", model, tiny_windows, cfg, max_windows=9, batch_size=2,
                                 shard_rows=40, progress=False)
    assert mid.n_windows == 9 and mid.complete
    two = write_activation_cache(tmp_path / "two", model, iter(tiny_windows), cfg, batch_size=2, shard_rows=40,
                                 progress=False)
    assert two.n_windows == one.n_windows == len(tiny_windows)
    a, b = one.load(), two.load()
    # window 8 ran alone in an LM batch of 1 (max_windows=9), so float rows may differ in the last bit
    for k, v in a.to_tensors().items():
        torch.testing.assert_close(getattr(b, k), v, rtol=1e-6, atol=1e-7)
    assert [s["windows"] for s in two.shards][-1][1] == len(tiny_windows)


def test_corrupt_shard_detected(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), batch_size=2, shard_rows=60, progress=False)
    shard = tmp_path / "c" / cache.shards[1]["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    cache.load_shard(0)  # intact
    with pytest.raises(CorruptCacheError, match=cache.shards[1]["file"]):
        cache.verify()
    with pytest.raises(CorruptCacheError):
        list(ActivationSource.from_cache(tmp_path / "c", 16))
    with pytest.raises(CorruptCacheError):  # resuming verifies first
        write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), progress=False)
    with pytest.raises(FileNotFoundError, match="no activation cache"):
        ActivationCache(tmp_path / "nothing")



# ------------------------------------------------------------------------------------------------------------
# The cache refuses to mix LMs and window sequences
# ------------------------------------------------------------------------------------------------------------


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_refuses_another_dtype_or_other_weights(tiny_lm, tiny_lm_dirs, tiny_windows, tmp_path):
    import copy

    from aen_lib.data.lm import load_lm

    arch, model, _ = tiny_lm
    cfg = _config(model)
    write_activation_cache(tmp_path / "c", model, tiny_windows, cfg, max_windows=6, batch_size=3, progress=False)
    before = _snapshot(tmp_path / "c")
    bf16, _ = load_lm(tiny_lm_dirs[arch], dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"LM dtype differs \(cache harvested in float32, this model is bfloat16\)"):
        write_activation_cache(tmp_path / "c", bf16, tiny_windows, cfg, batch_size=3, progress=False)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 1e-3)
    with pytest.raises(ValueError, match="LM weights differ"):
        write_activation_cache(tmp_path / "c", tuned, tiny_windows, cfg, batch_size=3, progress=False)
    assert _snapshot(tmp_path / "c") == before  # nothing written
    # the same checkpoint loaded again is accepted and extends the cache
    again, _ = load_lm(tiny_lm_dirs[arch], dtype=torch.float32)
    cache = write_activation_cache(tmp_path / "c", again, tiny_windows, cfg, batch_size=3, progress=False)
    assert cache.n_windows == len(tiny_windows) and cache.lm["dtype"] == "float32"


def test_cache_refuses_other_windows_naming_the_first_difference(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cfg = _config(model)
    write_activation_cache(tmp_path / "c", model, tiny_windows, cfg, max_windows=6, batch_size=2, shard_rows=30,
                           progress=False)
    before = _snapshot(tmp_path / "c")
    other = tiny_windows.clone()
    other[4, 10] = (other[4, 10] + 1) % 100
    with pytest.raises(ValueError, match=r"first at window index 4 \(stored tokens at positions \[1, 2"):
        write_activation_cache(tmp_path / "c", model, other, cfg, batch_size=2, progress=False)
    shifted = tiny_windows[1:]  # the same text one window later
    with pytest.raises(ValueError, match="first at window index 0"):
        write_activation_cache(tmp_path / "c", model, shifted, cfg, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="run out after 3 windows but the cache already holds 6"):
        write_activation_cache(tmp_path / "c", model, tiny_windows[:3], cfg, batch_size=2, progress=False)
    assert _snapshot(tmp_path / "c") == before
    done = write_activation_cache(tmp_path / "c", model, tiny_windows, cfg, batch_size=2, progress=False)
    assert done.n_windows == len(tiny_windows)


def test_cache_key_includes_lm_dtype_and_fingerprint(tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows, tmp_path):
    from aen_lib.data.lm import load_lm

    arch, model, _ = tiny_lm
    bf16, _ = load_lm(tiny_lm_dirs[arch], dtype=torch.bfloat16)
    kw = dict(model="tiny", layer=LAYER, window=24, dataset="pydoc")
    c32 = CacheConfig.for_lm(model, tiny_tokenizer, **kw)
    c16 = CacheConfig.for_lm(bf16, tiny_tokenizer, **kw)
    assert (c32.lm_dtype, c16.lm_dtype, c32.d_model) == ("float32", "bfloat16", D_MODEL)
    assert c32.lm_fingerprint != c16.lm_fingerprint and len(c32.tokenizer_fingerprint) == 16
    assert activation_cache_dir(c32, tmp_path) != activation_cache_dir(c16, tmp_path)
    assert CacheConfig.for_lm(load_lm(tiny_lm_dirs[arch])[0], tiny_tokenizer, **kw) == c32  # stable across loads
    with pytest.raises(ValueError, match="CacheConfig.lm_dtype='bfloat16' but the model's dtype gives 'float32'"):
        write_activation_cache(tmp_path / "x", model, tiny_windows, c16, progress=False)
    assert not (tmp_path / "x").exists()
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, c32, max_windows=2, tokenizer=tiny_tokenizer,
                                   progress=False)
    assert cache.lm["tokenizer"] == c32.tokenizer_fingerprint


def test_cache_manifest_damage_and_old_versions_are_named(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cfg = _config(model)
    write_activation_cache(tmp_path / "c", model, tiny_windows, cfg, max_windows=4, batch_size=2, progress=False)
    manifest = tmp_path / "c" / "manifest.json"
    text = manifest.read_text()
    old = json.loads(text)
    old["version"] = 1
    del old["lm"]
    manifest.write_text(json.dumps(old))
    assert ActivationCache(tmp_path / "c").n_windows == 4  # still readable
    with pytest.raises(ValueError, match="written by an older aen_lib"):
        write_activation_cache(tmp_path / "c", model, tiny_windows, cfg, progress=False)
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(CorruptCacheError, match="manifest.json is not valid JSON.*truncated"):
        ActivationCache(tmp_path / "c")
    manifest.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="is not an aen_lib.activation_cache manifest"):
        ActivationCache(tmp_path / "c")
