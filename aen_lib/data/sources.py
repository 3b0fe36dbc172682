"""Data sources for training: rows of a tensor in order, one rank's share of a stream under DDP, and LM activations
from a cache or harvested while training (:class:`ActivationSource`, :func:`cache_source`).

A data source is any object with ``sample(batch_size)`` and ``state_dict()`` / ``load_state_dict()``
(:class:`DataSource`); the spiked-dictionary sampler (:mod:`aen_lib.data.synthetic`) is the other.
"""

from __future__ import annotations

import os
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
from torch import Tensor, nn

from .activation_cache import ActivationCache
from .harvest import KEY_STRIDE, check_harvest_args, iter_harvest
from .lm import model_device


class DataSource(Protocol):
    """What the training loop reads from: batches, and a state that makes a resumed run see the same batches."""

    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CentredSource:
    """A source whose samples have a fixed vector subtracted: ``x - mean`` (targets, if any, unchanged).

    Mean-centring the inputs is the remedy for feature death that Simon, Adams & Zou (2026) propose; the reference
    studies train on it with the exact population mean of the synthetic data. Its state is the inner source's."""

    def __init__(self, source: DataSource, mean: Tensor) -> None:
        if not isinstance(mean, Tensor) or mean.dim() != 1:
            raise ValueError(f"mean must be a 1-d tensor [d_in], got {type(mean).__name__} "
                             f"{tuple(mean.shape) if isinstance(mean, Tensor) else ''}")
        self.source, self.mean = source, mean

    @property
    def config(self) -> "_Described":
        """What a sweep manifest records: the inner source's config and the mean's norm."""
        inner = getattr(self.source, "config", None)
        return _Described({"centred": True, "mean_norm": round(float(self.mean.norm()), 6),
                           "source": inner.to_dict() if hasattr(inner, "to_dict") else type(self.source).__name__})

    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]:
        batch = self.source.sample(batch_size)
        if isinstance(batch, tuple):
            x, *rest = batch
            if x.shape[-1] != self.mean.shape[0]:
                raise ValueError(f"samples have width {x.shape[-1]} but the mean has {self.mean.shape[0]}")
            return (x - self.mean.to(x.device, x.dtype), *rest)  # type: ignore[return-value]
        if batch.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"samples have width {batch.shape[-1]} but the mean has {self.mean.shape[0]}")
        return batch - self.mean.to(batch.device, batch.dtype)

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


class _Described(dict):
    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class StridedShard:
    """Rank ``rank`` of ``world_size`` takes every ``world_size``-th batch of a stream source, starting at its rank.

    For a source that yields rows in stream order, global batch g (``world_size * batch`` rows) is then exactly the
    concatenation of the ranks' g-th batches, so N ranks see the batches one process would see with an N-times
    larger batch. Every rank reads (but does not train on) the whole stream; use it for cached activations or
    synthetic data. For an LM, shard the *windows* instead (:func:`shard_windows`), so no rank runs the LM twice.
    """

    def __init__(self, source: DataSource, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.source, self.rank, self.world_size = source, rank, world_size

    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, ...]:
        mine = None
        for r in range(self.world_size):
            b = self.source.sample(batch_size)
            if r == self.rank:
                mine = b
        return mine  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


class TensorStream:
    """Rows of an in-memory tensor ``[N, d]`` in order, looping at the end (a stream source for ``sample``)."""

    def __init__(self, rows: Tensor) -> None:
        if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty [N, d] tensor, got {getattr(rows, 'shape', type(rows))}")
        self.rows = rows
        self.pos = 0

    def sample(self, batch_size: int) -> Tensor:
        n = self.rows.shape[0]
        idx = (torch.arange(batch_size) + self.pos) % n
        self.pos = (self.pos + batch_size) % n
        return self.rows[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


def shard_windows(windows: Callable[[], Iterable[Tensor]] | Tensor, rank: int,
                  world_size: int) -> Callable[[], Iterable[Tensor]] | Tensor:
    """Windows ``rank, rank + world_size, ...`` of a window stream: each rank harvests a disjoint shard of tokens."""
    if isinstance(windows, Tensor):
        return windows[rank::world_size]
    return lambda: islice(iter(windows()), rank, None, world_size)


# --------------------------------------------------------------------------------------------------------------
# LM activations: rows of a cache or of an LM, in batches
# --------------------------------------------------------------------------------------------------------------


class _CacheRows:
    """Rows of a cache; key = global row index."""

    def __init__(self, cache: ActivationCache, verify: bool) -> None:
        self.cache, self.verify = cache, verify

    def iter_from(self, key: int) -> Iterator[tuple[Tensor, Tensor]]:
        offset = 0
        for i, shard in enumerate(self.cache.shards):
            n = shard["n_rows"]
            if offset + n > key:
                acts = self.cache.load_shard(i, self.verify).acts
                lo = max(0, key - offset)
                yield acts[lo:], torch.arange(offset + lo, offset + n)
            offset += n


class _ModelRows:
    """Rows harvested on the fly; key = window_index * KEY_STRIDE + position."""

    def __init__(self, model: nn.Module, windows: Callable[[], Iterable[Tensor]] | Tensor, harvest_kwargs: dict[str, Any]) -> None:
        self.model, self.windows, self.kwargs = model, windows, harvest_kwargs

    def iter_from(self, key: int) -> Iterator[tuple[Tensor, Tensor]]:
        # start at the LM batch that holds the key, so batches (and hence float results) match an unbroken run
        bs = self.kwargs["batch_size"]
        w0 = (key // KEY_STRIDE) // bs * bs
        source = self.windows if isinstance(self.windows, Tensor) else self.windows()
        todo = islice(iter(source), w0, None)
        for acts in iter_harvest(self.model, todo, start_window=w0, **self.kwargs):
            keys = acts.window_index.cpu() * KEY_STRIDE + acts.position.cpu()
            mask = keys >= key
            yield acts.acts[mask.to(acts.acts.device)], keys[mask]


class ActivationSource:
    """Iterator of SAE training batches ``x [batch_size, d]`` with a resumable state (book: paper facts, language-model protocols batching).

    Build it with :meth:`from_cache` (an :class:`ActivationCache`) or :meth:`from_model` (harvest while training).
    Rows come in stream order, like the paper's FIFO buffer, unless ``shuffle_buffer=n > 0``: then the stream is cut
    into consecutive blocks of ``n`` rows and each block is permuted with a generator seeded by
    ``(seed, epoch, block start)``. ``loop=True`` restarts the stream at its end (a new epoch), as the paper's
    training stream does; otherwise the last batch may be smaller (dropped with ``drop_last=True``).

    :meth:`state_dict` after a batch, passed to :meth:`load_state_dict` of a fresh source over the same data, makes
    it continue with exactly the next batch. Iterate over it, or call :meth:`sample` (the trainer's data-source
    protocol, :mod:`aen_lib.training.train`).
    """

    def __init__(self, rows: Any, batch_size: int, *, loop: bool = False, shuffle_buffer: int = 0, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        """``rows`` is a row provider: ``rows.iter_from(key)`` yields chunks ``(x [n, d], keys [n] int64)`` of every
        row whose key is ``>= key``, keys strictly increasing, the same rows on every call (see :meth:`from_cache`
        and :meth:`from_model` for the two built-in providers). Batches are moved to ``device``/``dtype`` if given.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be an int >= 0 (0 = no shuffling), got {shuffle_buffer!r}")
        self._rows = rows
        self.batch_size, self.loop, self.shuffle_buffer, self.seed = batch_size, loop, shuffle_buffer, seed
        self.drop_last, self.device, self.dtype = drop_last, device, dtype
        self._state = {"epoch": 0, "block_key": 0, "block_offset": 0, "batches": 0, "done": False}
        self._live: Iterator[Tensor] | None = None  # the iterator behind sample()

    @classmethod
    def from_cache(cls, cache: ActivationCache | str | os.PathLike[str], batch_size: int, *, verify: bool = True,
                   **kwargs: Any) -> "ActivationSource":
        """Batches from an on-disk cache (shard checksums checked on read unless ``verify=False``)."""
        if not isinstance(cache, ActivationCache):
            cache = ActivationCache(cache)
        return cls(_CacheRows(cache, verify), batch_size, **kwargs)

    @classmethod
    def from_model(cls, model: nn.Module, windows: Callable[[], Iterable[Tensor]] | Tensor, layer: int, batch_size: int,
                   *, lm_batch_size: int = 64, normalization: str = "per_token_l2", eps: float = 1e-6,
                   drop_first: int = 1, outlier_norm_multiple: float | None = None, progress: bool = False,
                   **kwargs: Any) -> "ActivationSource":
        """Batches harvested on the fly. ``windows`` is a ``[n, T]`` tensor or a zero-argument callable returning a
        fresh iterable of the same windows each time (called at every epoch and on resume)."""
        if not isinstance(windows, Tensor) and not callable(windows):
            raise TypeError("windows must be a [n, T] tensor or a callable returning an iterable of windows")
        check_harvest_args(layer, normalization, drop_first, outlier_norm_multiple, lm_batch_size, eps)
        hk = dict(layer=layer, batch_size=lm_batch_size, normalization=normalization, eps=eps, drop_first=drop_first,
                  outlier_norm_multiple=outlier_norm_multiple, progress=progress, device=model_device(model))
        return cls(_ModelRows(model, windows, hk), batch_size, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch yielded (JSON-serialisable)."""
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        missing = set(self._state) - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        self._state = {k: state[k] for k in self._state}
        self._live = None

    def sample(self, batch_size: int) -> Tensor:
        """The next batch ``[batch_size, d]`` (the :class:`DataSource` protocol).

        ``batch_size`` must equal the source's; raises ``StopIteration`` when a non-looping stream is exhausted.
        """
        if batch_size != self.batch_size:
            raise ValueError(f"batch_size={batch_size} differs from this source's batch_size={self.batch_size}")
        if self._live is None:
            self._live = iter(self)
        return next(self._live)

    def _perm(self, n: int, epoch: int, block_key: int) -> Tensor | None:
        if self.shuffle_buffer == 0:
            return None
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 7_919 + block_key) % (1 << 62))
        return torch.randperm(n, generator=g)

    def _blocks(self, key: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(block start key, rows [n, d], keys [n]) blocks of up to ``block`` rows starting at ``key``."""
        size = self.shuffle_buffer or self.batch_size
        rows: list[Tensor] = []
        keys: list[Tensor] = []
        n = 0
        for r, k in self._rows.iter_from(key):
            rows.append(r)
            keys.append(k)
            n += len(k)
            while n >= size:
                R, K = torch.cat(rows), torch.cat(keys)
                yield int(K[0]), R[:size], K[:size]
                rows, keys, n = [R[size:]], [K[size:]], n - size
        if n:
            R, K = torch.cat(rows), torch.cat(keys)
            yield int(K[0]), R, K

    def __iter__(self) -> Iterator[Tensor]:
        st = self._state
        if st["done"]:
            return
        pending: list[Tensor] = []
        n_pending = 0
        while True:
            epoch, start_key, skip = st["epoch"], st["block_key"], st["block_offset"]
            any_rows = False
            for block_key, rows, _ in self._blocks(start_key):
                any_rows = True
                perm = self._perm(len(rows), epoch, block_key)
                if perm is not None:
                    rows = rows[perm.to(rows.device)]
                offset = skip if block_key == start_key else 0
                while offset < len(rows):
                    take = min(self.batch_size - n_pending, len(rows) - offset)
                    pending.append(rows[offset:offset + take])
                    n_pending += take
                    offset += take
                    if n_pending == self.batch_size:
                        batch = torch.cat(pending)
                        pending, n_pending = [], 0
                        st.update(epoch=epoch, block_key=block_key, block_offset=offset, batches=st["batches"] + 1)
                        yield batch.to(device=self.device, dtype=self.dtype)
            if not any_rows and start_key == 0:
                raise ValueError("the activation stream is empty")
            if not self.loop:
                break
            st.update(epoch=epoch + 1, block_key=0, block_offset=0)
        st["done"] = True
        if n_pending and not self.drop_last:
            st["batches"] += 1
            yield torch.cat(pending).to(device=self.device, dtype=self.dtype)


class _HeadRows:
    """Row provider (see :class:`ActivationSource`) keeping the rows with key < ``n_rows``."""

    def __init__(self, rows: Any, n_rows: int) -> None:
        self.rows, self.n_rows = rows, n_rows

    def iter_from(self, key: int) -> Iterable[tuple[Tensor, Tensor]]:
        for x, keys in self.rows.iter_from(key):
            keep = keys < self.n_rows
            if keep.any():
                yield x[keep.to(x.device)], keys[keep]
            if not keep.all():
                return


def cache_source(cache: ActivationCache | str | os.PathLike[str], batch_size: int, *, max_windows: int | None = None,
                 verify: bool = True, **kwargs: Any) -> ActivationSource:
    """:meth:`ActivationSource.from_cache` restricted to the rows of the first ``max_windows`` windows (book: paper facts, language-model protocols).

    An activation cache only grows: a later run that asks for more windows extends it. Restricting the stream to the
    windows a run asked for makes its batches (and, with ``shuffle_buffer``, their order) independent of what else the
    cache holds. Keyword arguments go to :class:`ActivationSource` (``loop``, ``shuffle_buffer``, ``seed``, ``device``,
    ``dtype``...). Raises ``ValueError`` when the cache holds fewer than ``max_windows`` windows.
    With ``max_windows`` the returned source carries ``n_rows``, the number of activation rows (tokens) it streams.
    """
    if not isinstance(cache, ActivationCache):
        cache = ActivationCache(cache)
    src = ActivationSource.from_cache(cache, batch_size, verify=verify, **kwargs)
    if max_windows is None:
        return src
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"max_windows must be an int >= 1, got {max_windows!r}")
    if cache.n_windows < max_windows:
        raise ValueError(f"max_windows={max_windows} but the cache at {cache.path} holds {cache.n_windows} windows")
    n_rows = 0
    for i, shard in enumerate(cache.shards):
        first, last = shard["windows"]
        if last <= max_windows:
            n_rows += shard["n_rows"]
        else:
            if first < max_windows:
                n_rows += int((cache.load_shard(i, verify).window_index < max_windows).sum())
            break
    head = ActivationSource(_HeadRows(src._rows, n_rows), batch_size, **kwargs)
    head.n_rows = n_rows
    return head
