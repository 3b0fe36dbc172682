"""SAE architectures, each defined once over a leading member dimension (one SAE = one member).

An architecture is the only thing that differs between SAEs (paper §2; Bricken et al. 2023 for the shared map):
its activation (ReLU, TopK, BatchTopK, JumpReLU), its penalty terms, its per-member hyperparameters and running
state, its SAELens export, and its activation count for the memory planner. One :class:`Architecture` instance
serves a contiguous run of members of an :class:`aen_lib.model.SAE`; a single SAE is a run of one member, a sweep
stack holds several runs, and a DDP rank runs the same code with a reducer (:mod:`aen_lib.reduce`).

Adding an architecture = one new module here that subclasses :class:`Architecture` and decorates it with
:func:`register_architecture`, plus its import below. Nothing else in the library changes.
"""

from .base import ARCHITECTURES, Architecture, StepContext, get_architecture, register_architecture
from . import l1, topk, batchtopk, jumprelu, topk_auxk  # noqa: F401  (registers the built-in architectures)

__all__ = ["ARCHITECTURES", "Architecture", "StepContext", "get_architecture", "register_architecture"]
