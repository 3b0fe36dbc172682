"""Data sources for training: rows of a tensor in order, and one rank's share of a stream under DDP.

A data source is any object with ``sample(batch_size)`` and ``state_dict()`` / ``load_state_dict()``
(:class:`DataSource`); the spiked-dictionary sampler (:mod:`aen_lib.data`) and the LM activation
sources (:mod:`aen_lib.activations`) are the others.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import Tensor


class DataSource(Protocol):
    """What the training loop reads from: batches, and a state that makes a resumed run see the same batches."""

    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
