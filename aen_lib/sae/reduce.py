"""Reducers: how batch statistics and gradients become global-batch ones (the one difference between training in one
process and under DDP).

The training loop (:mod:`aen_lib.training.train`) and the architectures call a reducer at the few places where a statistic
of the batch is needed: the gradients, the adaptive-weight column sums (paper §2.3), the dead-latent maxima, the
AuxK firing mask, the logged metrics and the vote on whether a step is finite. In one process every call is the
identity (:data:`LOCAL`); :class:`ProcessGroupReducer` all-reduces across the ranks of a ``torch.distributed`` group,
so that every rank holds exactly the state one process would hold on the concatenated batch.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor


class Reducer:
    """One process: every reduction is the identity."""

    world_size: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and results."""
        return self.rank == 0

    def sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over ranks (in place where possible; returns the result)."""
        return t

    def max(self, t: Tensor) -> Tensor:
        """Elementwise maximum of ``t`` over ranks."""
        return t

    def all_true(self, ok: Tensor) -> Tensor:
        """``ok`` (bool tensor) AND-ed over ranks: all ranks apply or skip a member's step together."""
        return ok

    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Average the gradients over ranks (each rank's loss is the mean over its equal-sized shard)."""

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (for checkpoints of per-rank data positions and RNG states)."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank."""


LOCAL = Reducer()
"""The one-process reducer."""


class ProcessGroupReducer(Reducer):
    """All-reduces over the default ``torch.distributed`` process group (NCCL on CUDA, gloo on the CPU)."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError("ProcessGroupReducer needs an initialised process group (launch with torchrun)")
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()

    def sum(self, t: Tensor) -> Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max(self, t: Tensor) -> Tensor:
        if t.dtype == torch.bool:  # gloo has no MAX for bool
            u = t.to(torch.uint8)
            dist.all_reduce(u, op=dist.ReduceOp.MAX)
            return u.bool()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def all_true(self, ok: Tensor) -> Tensor:
        bad = (~ok).to(torch.float32)
        dist.all_reduce(bad, op=dist.ReduceOp.SUM)
        return bad == 0

    def average_gradients(self, params: Iterable[Tensor]) -> None:
        # in place, one collective per parameter: no bucket copies, so gradients cost no extra memory
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()
