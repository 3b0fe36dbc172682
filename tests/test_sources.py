"""Tests for the LM activation sources of aen_lib.data.sources: batches from a cache or an LM, shuffling, looping, resume,
and a cache restricted to its first windows."""

from __future__ import annotations

import json

import pytest
import torch

from aen_lib.data.activation_cache import CacheConfig, write_activation_cache
from aen_lib.data.sources import ActivationSource, cache_source
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    tiny_cache_config,
    D_MODEL, single_thread, tiny_lm, tiny_lm_dirs, tiny_tokenizer, tiny_windows,
)

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = 1


def _config(_model, **kw):
    return tiny_cache_config(**{"layer": LAYER, **kw})



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



def test_cache_source_ignores_windows_added_later(tiny_lm, tiny_windows, tmp_path, single_thread):
    """A run restricted to its first windows sees the same batches from a cache that a later run extended."""
    _, model, _ = tiny_lm
    cfg = CacheConfig(model="tiny", layer=LAYER, d_model=D_MODEL, window=tiny_windows.shape[1])
    small = write_activation_cache(tmp_path / "small", model, tiny_windows, cfg, max_windows=5, batch_size=3,
                                   shard_rows=40, progress=False)
    big = write_activation_cache(tmp_path / "big", model, tiny_windows, cfg, max_windows=12, batch_size=3,
                                 shard_rows=40, progress=False)  # several shards, one straddling window 5
    assert len(big.shards) > 2 and big.n_tokens > small.n_tokens
    kw = dict(loop=True, shuffle_buffer=32, seed=3)
    ref = ActivationSource.from_cache(small, 16, **kw)
    mine = cache_source(big, 16, max_windows=5, **kw)
    for _ in range(2 * small.n_tokens // 16 + 3):  # more than two epochs
        assert torch.equal(ref.sample(16), mine.sample(16))
    unrestricted = ActivationSource.from_cache(big, 16, **kw)
    assert not all(torch.equal(ref.sample(16), unrestricted.sample(16)) for _ in range(small.n_tokens // 16 + 2))
    with pytest.raises(ValueError, match="holds 5 windows"):
        cache_source(small, 16, max_windows=6)
