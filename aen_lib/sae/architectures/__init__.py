"""SAE architectures, each defined once over a leading member dimension (one SAE = one member).

An architecture is the only thing that differs between SAEs (paper §2; Bricken et al. 2023 for the shared map):
its activation (ReLU, TopK, BatchTopK, JumpReLU), its penalty terms, its per-member hyperparameters and running
state, its SAELens export, and its activation count for the memory planner. One :class:`Architecture` instance
serves a contiguous run of members of an :class:`aen_lib.sae.model.SAE`; a single SAE is a run of one member, a sweep
stack holds several runs, and a DDP rank runs the same code with a reducer (:mod:`aen_lib.sae.reduce`).

Adding an architecture = one module in this folder that subclasses :class:`Architecture` and decorates it with
:func:`register_architecture`, giving each of its names an :class:`ArchitectureSpec` (display name, colour, marker,
whether the paper trains it, the config fields it reads). Every module of this folder is imported below, so the file
alone registers it. Config validation, the planner, SAELens export, plotting, the theory measures, the results
statements, the chapters and the ``aen-train`` command line all read the registry (:data:`SPECS`, or
:func:`architecture_names` for the names with a given property), so nothing else in the library changes
(``tests/test_architecture_registry.py`` registers a throwaway one from a temporary module).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (ARCHITECTURES, CONFIG_FIELDS, SPECS, Architecture, ArchitectureSpec, StepContext,
                   architecture_spec, get_architecture, register_architecture, unregister_architecture)

BUILT_IN_ORDER = ("l1", "topk", "topk_auxk", "batchtopk", "jumprelu")
"""The modules of this folder in the order they register, which is the registry's order: the book's legend order,
the command line's list and a sweep's stacking order. A module not named here registers after these, by file name."""


def _register_modules() -> list[str]:
    """Import every module of this package but :mod:`.base` (the first import of one registers the architectures it
    defines; a later call imports only new ones); returns the module names in the order they were imported."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.name.startswith("_"))
    order = [m for m in BUILT_IN_ORDER if m in found] + [m for m in found if m not in BUILT_IN_ORDER]
    for name in order:
        importlib.import_module(f"{__name__}.{name}")
    return order


_register_modules()


def architecture_names(*, uses: str | None = None, lacks: str | None = None, in_paper: bool | None = None
                       ) -> list[str]:
    """The registered architecture names in registry (legend) order, read when called, so one registered later is
    there: all of them, or only those whose :class:`ArchitectureSpec` reads the config field ``uses`` (e.g. ``"l1"``:
    the ℓ1 family; ``"k"``: the k-sparse ones), does not read ``lacks``, or has ``in_paper`` equal to the value
    given."""
    for name in (uses, lacks):
        if name is not None and name not in CONFIG_FIELDS:
            raise ValueError(f"{name!r} is not a config field an architecture can use; known: {list(CONFIG_FIELDS)}")
    return [a for a, s in SPECS.items()
            if (uses is None or uses in s.uses) and (lacks is None or lacks not in s.uses)
            and (in_paper is None or s.in_paper == in_paper)]


__all__ = ["ARCHITECTURES", "BUILT_IN_ORDER", "CONFIG_FIELDS", "SPECS", "Architecture", "ArchitectureSpec",
           "StepContext", "architecture_names", "architecture_spec", "get_architecture", "register_architecture",
           "unregister_architecture"]
