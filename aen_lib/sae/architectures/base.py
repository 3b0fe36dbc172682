"""The architecture interface and its registry (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor, nn

from ...errors import fail
from ...palette import FALLBACK_GREY
from ..reduce import LOCAL, Reducer

ARCHITECTURES: dict[str, type["Architecture"]] = {}
"""Registered architecture name -> class (several names may share one class, e.g. the l1 family)."""

CONFIG_FIELDS = ("l1", "l2", "k", "l0", "gamma", "ema_beta", "ref_top_pct", "w_min", "w_max", "warmup_steps",
                 "ramp_steps")
"""The hyperparameter fields of :class:`aen_lib.sae.config.SAEConfig` an architecture may read (sizes and seed are
every architecture's; architecture-only ones live in ``SAEConfig.options``, declared by :attr:`Architecture.OPTIONS`)."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything outside an architecture's class that the rest of the library needs to know about one registered
    name: how the book shows it (``label``, ``color``, ``marker``), whether the paper trains it (``in_paper``), which
    :data:`CONFIG_FIELDS` it reads (``uses``; the command line leaves the others at 0; an option an architecture
    registered before declares may be named too) and the command line's defaults for them where they differ from
    :class:`aen_lib.sae.config.SAEConfig`'s (``cli_defaults``). Its own options it declares in its ``OPTIONS``."""

    name: str
    label: str
    color: str
    marker: str
    in_paper: bool = False
    uses: tuple[str, ...] = ()
    cli_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [f for f in (*self.uses, *self.cli_defaults) if f not in CONFIG_FIELDS and f not in declared_options()]
        if unknown:
            raise ValueError(f"architecture {self.name!r} names config fields {unknown} that SAEConfig does not have; "
                             f"known: {list(CONFIG_FIELDS)} (architecture-only settings go in OPTIONS)")


SPECS: dict[str, ArchitectureSpec] = {}
"""Registered architecture name -> its :class:`ArchitectureSpec`, in registration order (the book's legend order)."""


def register_architecture(*names: str | ArchitectureSpec) -> Callable[[type["Architecture"]], type["Architecture"]]:
    """Class decorator adding an architecture class to the registry under one or more names, each given as an
    :class:`ArchitectureSpec` (or a bare name, shown in grey with its name as label and ``x`` markers)."""
    specs = [n if isinstance(n, ArchitectureSpec) else ArchitectureSpec(str(n), str(n), FALLBACK_GREY, "x")
             for n in names]

    def deco(cls: type[Architecture]) -> type[Architecture]:
        for spec in specs:
            if spec.name in ARCHITECTURES:
                raise ValueError(f"architecture {spec.name!r} is already registered")
        for spec in specs:
            ARCHITECTURES[spec.name] = cls
            SPECS[spec.name] = spec
        return cls

    return deco


def unregister_architecture(name: str) -> None:
    """Remove ``name`` from the registry (a test's throwaway architecture)."""
    ARCHITECTURES.pop(name, None)
    SPECS.pop(name, None)


def architecture_spec(name: str) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` registered under ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"architecture={name!r} is unknown; known: {sorted(SPECS)}") from None


def get_architecture(name: str) -> type["Architecture"]:
    """The class registered under ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"architecture={name!r} is unknown; known: {sorted(ARCHITECTURES)}") from None


@dataclass
class StepContext:
    """What one forward/loss call needs besides tensors.

    ``update``: advance running statistics (adaptive EMA, BatchTopK threshold, AuxK dead counters): True in a
    training step, False when evaluating. ``training``: the module's mode (BatchTopK selects over the batch in
    training and thresholds at inference). ``reducer`` turns per-rank batch statistics into global-batch ones
    (identity in one process, all-reduce under DDP; :mod:`aen_lib.sae.reduce`).
    """

    update: bool = False
    training: bool = False
    reducer: Reducer = field(default_factory=lambda: LOCAL)


@dataclass
class Option:
    """An architecture-specific hyperparameter kept in ``SAEConfig.options``: default, type, check and doc."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str
    doc: str
    top_level: bool = False
    """Also a keyword of ``SAEConfig`` (``SAEConfig(jumprelu_bandwidth=0.1)``) and a top-level key of its ``to_dict()``,
    for every architecture, holding the default where another architecture is configured. Only the settings that
    were ``SAEConfig`` fields before options existed are: every record written since holds them so, and its variant
    id (:func:`aen_lib.results.records.variant_id`) hashes them. A new top-level option would change the id of every
    committed record (``tests/test_config.py`` recomputes them); declare a new option without it."""


def declared_options() -> dict[str, Option]:
    """Every option a registered architecture declares, name -> :class:`Option` (the first declaration of a name)."""
    out: dict[str, Option] = {}
    for cls in ARCHITECTURES.values():
        for name, opt in cls.OPTIONS.items():
            out.setdefault(name, opt)
    return out


def top_level_options() -> dict[str, Option]:
    """The :attr:`Option.top_level` options of the registered architectures, in registry order."""
    return {name: opt for name, opt in declared_options().items() if opt.top_level}


class Architecture(nn.Module):
    """Activation, penalties and state of members ``[start, stop)`` of an SAE.

    Shapes: ``pre`` and ``h`` are ``[Mg, B, m]`` (Mg = members of this run), ``x`` is ``[B, n]`` or ``[Mg, B, n]``,
    ``x_hat`` ``[Mg, B, n]``; every penalty is ``[Mg]``, already multiplied by its coefficient.

    Per-member hyperparameters are *non-persistent* buffers (rebuilt from the configs); running state and learned
    extra parameters are persistent buffers / parameters whose leading dimension is the member. That convention is
    all the generic code needs to checkpoint, roll back a skipped step, stack trained SAEs and export one member.
    """

    names: ClassVar[tuple[str, ...]] = ()
    saelens_architecture: ClassVar[str | None] = None
    """SAELens ``architecture`` this one exports to (``"standard"``, ``"topk"``, ``"jumprelu"``); None: no export."""
    supports_ddp: ClassVar[bool] = True
    """False when the activation couples tokens across the batch in a way DDP's split would change."""
    ACTIVATION_COUNTS: ClassVar[tuple[float, float, float]] = (3, 4, 3)
    """[B, m]-sized tensors alive in the penalty backward, decoder backward and encoder backward (planner)."""
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    """Hyperparameters of this architecture that live in ``SAEConfig.options``."""

    def __init__(self, cfgs: Sequence[Any], start: int, device: torch.device | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.cfgs = list(cfgs)
        self.start, self.stop = start, start + len(self.cfgs)
        self.d_sae = self.cfgs[0].d_sae

    # --- configuration --------------------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Check the fields this architecture uses (``ValueError`` naming field, value and range)."""
        top = top_level_options()
        for key, value in cfg.options.items():
            name = key if key in top else f"options[{key!r}]"  # a top-level option is named as its keyword
            if key not in cls.OPTIONS:
                fail(name, value, f"{cfg.architecture} takes the options {sorted(cls.OPTIONS)}"
                     + (f"; leave {key} at its default {top[key].default!r}" if key in top else ""))
            if not cls.OPTIONS[key].check(value):
                fail(name, value, cls.OPTIONS[key].allowed)

    @classmethod
    def option(cls, cfg: Any, key: str) -> Any:
        """``cfg.options[key]`` or its default."""
        return cfg.options.get(key, cls.OPTIONS[key].default)

    @classmethod
    def activation_counts(cls, name: str) -> tuple[float, float, float]:
        """How many [B, m] tensors each phase of a training step holds (:func:`aen_lib.training.planner.sae_memory`)."""
        return cls.ACTIVATION_COUNTS

    @classmethod
    def label(cls, cfg: Any) -> str:
        """Short human-readable name, e.g. ``aen λ1=0.005 λ2=0.001 γ=0.5``."""
        return cfg.architecture

    @property
    def size(self) -> int:
        return len(self.cfgs)

    def hyper(self, name: str, values: Sequence[float], device: torch.device | None, dtype: torch.dtype) -> None:
        """Register a per-member hyperparameter ``[Mg]`` (not saved: it is rebuilt from the configs)."""
        self.register_buffer(name, torch.tensor(list(values), device=device, dtype=dtype), persistent=False)

    # --- the map --------------------------------------------------------------------------------------------
    def activate(self, pre: Tensor, ctx: StepContext) -> Tensor:
        """Codes ``h [Mg, B, m]`` from pre-activations ``[Mg, B, m]``."""
        return torch.relu(pre)

    def penalty(self, h: Tensor, pre: Tensor, x: Tensor, x_hat: Tensor, w_dec: Tensor, ctx: StepContext
                ) -> dict[str, Tensor]:
        """``{"l1", "l2", "aux"}``, each ``[Mg]`` (zeros where the architecture has no such term)."""
        z = h.new_zeros(self.size)
        return {"l1": z, "l2": z, "aux": z}

    # --- running state --------------------------------------------------------------------------------------
    def member_state(self, j: int) -> dict[str, Tensor]:
        """Persistent state (buffers and extra parameters) of local member ``j``, each with a leading dim of 1."""
        return {k: v[j : j + 1].detach().clone() for k, v in self.state_dict().items()}

    @torch.no_grad()
    def load_member_state(self, j: int, state: Mapping[str, Tensor]) -> None:
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        for k, v in state.items():
            own[k][j : j + 1].copy_(v)

    def snapshot(self) -> list[Tensor]:
        """Copies of the running-state buffers (rolled back for members whose step is skipped)."""
        return [b.clone() for name, b in self.named_buffers() if name not in self._non_persistent_buffers_set]

    @torch.no_grad()
    def restore(self, snap: list[Tensor], keep: Tensor) -> None:
        """Put back the snapshot for members where ``keep [Mg]`` is False."""
        bufs = [b for name, b in self.named_buffers() if name not in self._non_persistent_buffers_set]
        for b, old in zip(bufs, snap):
            k = keep.to(b.device).reshape(-1, *([1] * (b.dim() - 1)))
            b.copy_(torch.where(k, b, old))

    def summary(self, j: int) -> dict[str, float]:
        """Extra per-member diagnostics for the training log."""
        return {}

    # --- SAELens export -------------------------------------------------------------------------------------
    @classmethod
    def saelens_fields(cls, cfg: Any) -> dict[str, Any]:
        """Architecture-specific SAELens cfg fields of an SAE with config ``cfg`` (e.g. ``k`` for TopK)."""
        return {}

    def saelens_tensors(self, j: int) -> dict[str, Tensor]:
        """Extra inference tensors of member ``j`` in SAELens layout (e.g. ``threshold [m]``)."""
        return {}

    @torch.no_grad()
    def load_saelens_tensors(self, j: int, tensors: Mapping[str, Tensor]) -> None:
        """Inverse of :meth:`saelens_tensors`."""
