"""Tests for aen_lib.activations: normalisation (book: paper facts, model and loss), early-exit harvesting, the cache, batch source."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aen_lib.activations import (
    ActivationCache,
    ActivationSource,
    CacheConfig,
    CorruptCacheError,
    block_output,
    denormalize_per_token,
    harvest_activations,
    normalize_per_token,
    write_activation_cache,
)
from aen_lib.lm import residual_hook_module
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = 1


def _full_forward_resid(model, ids, layer):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]


def test_normalize_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 16, generator=g) * torch.logspace(-3, 4, 50).unsqueeze(1)
    xn, norms = normalize_per_token(x)
    torch.testing.assert_close(xn.norm(dim=-1), torch.full((50,), 4.0), rtol=1e-6, atol=0)  # √16
    torch.testing.assert_close(norms, x.norm(dim=-1))
    torch.testing.assert_close(denormalize_per_token(xn, norms), x, rtol=1e-6, atol=0)
    # direction preserved, no centering
    torch.testing.assert_close(xn / 4.0, x / x.norm(dim=-1, keepdim=True))
    zero_n, zero_norm = normalize_per_token(torch.zeros(2, 16))
    assert torch.equal(zero_n, torch.zeros(2, 16)) and torch.equal(zero_norm, torch.zeros(2))
    with pytest.raises(ValueError, match="norms shape"):
        denormalize_per_token(xn, norms[:3])


def test_early_exit_matches_full_forward_and_skips_later_blocks(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:3]
    calls = {"later": 0, "head": 0}
    h1 = residual_hook_module(model, LAYER + 1).register_forward_hook(lambda *a: calls.__setitem__("later", calls["later"] + 1))
    h2 = model.get_output_embeddings().register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    try:
        early = block_output(model, ids, LAYER, early_exit=True)
        assert calls == {"later": 0, "head": 0}
        late = block_output(model, ids, LAYER, early_exit=False)
        assert calls == {"later": 1, "head": 1}
    finally:
        h1.remove()
        h2.remove()
    full = _full_forward_resid(model, ids, LAYER)
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    torch.testing.assert_close(late, full, rtol=0, atol=0)
    # the model still works normally afterwards (hook removed, no state left behind)
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[:2] == ids.shape


def test_harvest_drops_position0_normalises_and_records(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:5]
    full = _full_forward_resid(model, ids, LAYER)  # [5, T, d]
    T = ids.shape[1]
    acts = harvest_activations(model, ids, LAYER, batch_size=2, progress=False)
    assert acts.acts.shape == (5 * (T - 1), D_MODEL)
    raw = full[:, 1:].reshape(-1, D_MODEL)
    torch.testing.assert_close(acts.norms, raw.norm(dim=-1))
    torch.testing.assert_close(acts.acts, raw / raw.norm(dim=-1, keepdim=True) * math.sqrt(D_MODEL))
    torch.testing.assert_close(acts.raw(), raw, rtol=1e-5, atol=1e-6)
    assert acts.position.tolist() == list(range(1, T)) * 5
    assert acts.window_index.tolist() == [w for w in range(5) for _ in range(T - 1)]
    assert torch.equal(acts.token_ids, ids[:, 1:].reshape(-1))
    raw_mode = harvest_activations(model, iter(ids), LAYER, normalization="none", drop_first=0, progress=False)
    torch.testing.assert_close(raw_mode.acts, full.reshape(-1, D_MODEL))
    assert not raw_mode.normalized
    torch.testing.assert_close(raw_mode.raw(), full.reshape(-1, D_MODEL))
    with pytest.raises(ValueError, match="normalised and raw"):
        type(acts).cat([acts, raw_mode])
    with pytest.raises(ValueError, match="normalization='l2'"):
        harvest_activations(model, ids, LAYER, normalization="l2")
    with pytest.raises(ValueError, match="drop_first"):
        harvest_activations(model, ids, LAYER, drop_first=-1)


def test_outlier_filter_uses_window_median(tiny_lm, tiny_windows):
    _, model, _ = tiny_lm
    ids = tiny_windows[:4]
    norms = _full_forward_resid(model, ids, LAYER)[:, 1:].norm(dim=-1)  # [4, T-1]
    c = float((norms / norms.median(dim=1, keepdim=True).values).quantile(0.8))  # drops ~20%
    keep = norms <= c * norms.median(dim=1, keepdim=True).values
    assert 0 < int((~keep).sum()) < keep.numel()
    acts = harvest_activations(model, ids, LAYER, outlier_norm_multiple=c, batch_size=3, progress=False)
    torch.testing.assert_close(acts.norms, norms[keep])
    assert len(acts) == int(keep.sum())


def _config(_model, **kw):
    base = dict(model="tiny", layer=LAYER, d_model=D_MODEL, window=24, dataset="pydoc")
    base.update(kw)
    return CacheConfig(**base)


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


def test_source_from_cache_order_shuffle_loop(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), batch_size=2, shard_rows=70, progress=False)
    rows = cache.load().acts
    batches = list(ActivationSource.from_cache(cache, 32))
    assert [len(b) for b in batches] == [32] * (len(rows) // 32) + ([len(rows) % 32] if len(rows) % 32 else [])
    torch.testing.assert_close(torch.cat(batches), rows, rtol=0, atol=0)  # FIFO order, like the paper
    assert len(list(ActivationSource.from_cache(cache, 32, drop_last=True))) == len(rows) // 32

    shuffled = torch.cat(list(ActivationSource.from_cache(cache, 32, shuffle_buffer=100, seed=3)))
    assert not torch.equal(shuffled, rows)
    # a permutation inside consecutive blocks of 100 rows
    for s in range(0, len(rows), 100):
        a, b = shuffled[s:s + 100], rows[s:s + 100]
        torch.testing.assert_close(a[a[:, 0].argsort()], b[b[:, 0].argsort()], rtol=0, atol=0)

    looped = ActivationSource.from_cache(cache, 32, loop=True)
    it = iter(looped)
    n = len(rows) // 32 + 3
    got = torch.cat([next(it) for _ in range(n)])
    torch.testing.assert_close(got, torch.cat([rows, rows])[: n * 32], rtol=0, atol=0)
    assert looped.state_dict()["epoch"] == 1


@pytest.mark.parametrize("shuffle_buffer", [0, 50])
def test_source_resume_from_state(tiny_lm, tiny_windows, tmp_path, shuffle_buffer):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), batch_size=2, shard_rows=70, progress=False)
    n_rows = cache.n_tokens
    kw = dict(shuffle_buffer=shuffle_buffer, seed=1, loop=True)
    n_total = n_rows // 24 + 4  # crosses an epoch boundary
    reference = [b for _, b in zip(range(n_total), ActivationSource.from_cache(cache, 24, **kw))]
    for stop in (1, 5, n_rows // 24 + 1):
        src = ActivationSource.from_cache(cache, 24, **kw)
        first = [b for _, b in zip(range(stop), src)]
        state = json.loads(json.dumps(src.state_dict()))  # serialisable
        resumed = ActivationSource.from_cache(cache, 24, **kw)
        resumed.load_state_dict(state)
        rest = [b for _, b in zip(range(n_total - stop), resumed)]
        torch.testing.assert_close(torch.cat(first + rest), torch.cat(reference), rtol=0, atol=0)


def test_source_from_model_matches_cache_and_resumes(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), progress=False)
    from_cache = list(ActivationSource.from_cache(cache, 20))
    windows = lambda: iter(tiny_windows)  # noqa: E731
    src = ActivationSource.from_model(model, windows, LAYER, 20, lm_batch_size=3)
    streamed = list(src)
    torch.testing.assert_close(torch.cat(streamed), torch.cat(from_cache), rtol=1e-6, atol=1e-6)
    src = ActivationSource.from_model(model, windows, LAYER, 20, lm_batch_size=3)
    head = [b for _, b in zip(range(4), src)]
    resumed = ActivationSource.from_model(model, windows, LAYER, 20, lm_batch_size=3)
    resumed.load_state_dict(src.state_dict())
    torch.testing.assert_close(torch.cat(head + list(resumed)), torch.cat(streamed), rtol=0, atol=0)
    with pytest.raises(TypeError, match="windows must be"):
        ActivationSource.from_model(model, [w for w in tiny_windows], LAYER, 20)


def test_source_sample_protocol(tiny_lm, tiny_windows, tmp_path):
    _, model, _ = tiny_lm
    cache = write_activation_cache(tmp_path / "c", model, tiny_windows, _config(model), batch_size=2, progress=False)
    rows = cache.load().acts
    src = ActivationSource.from_cache(cache, 16, loop=True)
    first = [src.sample(16) for _ in range(3)]
    torch.testing.assert_close(torch.cat(first), rows[:48], rtol=0, atol=0)
    other = ActivationSource.from_cache(cache, 16, loop=True)
    other.load_state_dict(src.state_dict())
    torch.testing.assert_close(other.sample(16), rows[48:64], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch_size=8 differs"):
        src.sample(8)
    finite = ActivationSource.from_cache(cache, len(rows), drop_last=True)
    finite.sample(len(rows))
    with pytest.raises(StopIteration):
        finite.sample(len(rows))


# ------------------------------------------------------------------------------------------------------------
# The cache refuses to mix LMs and window sequences
# ------------------------------------------------------------------------------------------------------------


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_refuses_another_dtype_or_other_weights(tiny_lm, tiny_lm_dirs, tiny_windows, tmp_path):
    import copy

    from aen_lib.lm import load_lm

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
    from aen_lib.features import activation_cache_dir
    from aen_lib.lm import load_lm

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
