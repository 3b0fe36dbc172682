"""SAE architectures, each defined once over a leading member dimension (one SAE = one member).

An architecture is the only thing that differs between SAEs (paper §2; Bricken et al. 2023 for the shared map):
its activation (ReLU, TopK, BatchTopK, JumpReLU), its penalty terms, its per-member hyperparameters and running
state, its SAELens export, and its activation count for the memory planner. One :class:`Architecture` instance
serves a contiguous run of members of an :class:`aen_lib.sae.model.SAE`; a single SAE is a run of one member, a sweep
stack holds several runs, and a DDP rank runs the same code with a reducer (:mod:`aen_lib.sae.reduce`).

Adding an architecture = one module that subclasses :class:`Architecture` and decorates it with
:func:`register_architecture`, giving each of its names an :class:`ArchitectureSpec` (display name, colour, marker,
whether the paper trains it, the config fields it reads); a built-in one is also imported below. Config validation,
the planner, SAELens export, plotting and the ``aen-train`` command line all read the registry, so nothing else in
the library changes (``tests/test_architecture_registry.py`` registers a throwaway one from a temporary module).
"""

from .base import (ARCHITECTURES, CONFIG_FIELDS, SPECS, Architecture, ArchitectureSpec, StepContext,
                   architecture_spec, get_architecture, register_architecture, unregister_architecture)
from . import l1, topk, topk_auxk, batchtopk, jumprelu  # noqa: F401  (registers the built-in architectures)

__all__ = ["ARCHITECTURES", "CONFIG_FIELDS", "SPECS", "Architecture", "ArchitectureSpec", "StepContext",
           "architecture_spec", "get_architecture", "register_architecture", "unregister_architecture"]
