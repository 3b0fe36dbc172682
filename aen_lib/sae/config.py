"""Typed, validated configuration dataclasses that round-trip to JSON.

Every config in ``aen_lib`` is a dataclass inheriting :class:`ConfigBase`. A bad value raises ``ValueError``
naming the field, the value and what is allowed, at construction time, so that a typo in a papermill profile or
a sweep grid stops the run before any work is done.

:class:`SAEConfig` describes one sparse autoencoder: its sizes, its architecture (which sparsity objective it
trains with, book: paper facts, model and loss) and every hyperparameter of that objective, including the adaptive-weight rule of
book: paper facts, model and loss. What only one architecture reads, it declares itself (its ``OPTIONS``, in its file
under :mod:`aen_lib.sae.architectures`), default and check included, so a new architecture edits nothing here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, TypeVar, get_type_hints

from .architectures import get_architecture
from .architectures.base import top_level_options
from ..errors import fail

T = TypeVar("T", bound="ConfigBase")


@dataclass
class ConfigBase:
    """Mixin: JSON round trip with unknown-key and type checking."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def stored_keys(cls) -> set[str]:
        """The keys of :meth:`to_dict` (the fields)."""
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = cls.stored_keys()
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; allowed fields are {sorted(known)}"
            )
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls: type[T], path_or_text: str | Path) -> T:
        p = Path(path_or_text) if not str(path_or_text).lstrip().startswith("{") else None
        if p is not None:
            if not p.exists():
                raise FileNotFoundError(f"config file {p} does not exist")
            text = p.read_text()
        else:
            text = str(path_or_text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}: could not parse JSON ({e}); is the file corrupt?") from e
        return cls.from_dict(data)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def _check_types(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            t = hints[f.name]
            if t is int and (isinstance(v, bool) or not isinstance(v, int)):
                fail(f.name, v, "must be an integer")
            if t is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    fail(f.name, v, "must be a number")
                if not math.isfinite(float(v)):
                    fail(f.name, v, "must be finite")
                setattr(self, f.name, float(v))
            if t is str and not isinstance(v, str):
                fail(f.name, v, "must be a string")
            if t is bool and not isinstance(v, bool):
                fail(f.name, v, "must be true or false")


@dataclass
class SAEConfig(ConfigBase):
    """One sparse autoencoder and its sparsity objective (book: paper facts, model and loss).

    Loss scaling follows book: paper facts, model and loss exactly, so the paper's λ values mean the same thing here:
    ``mse`` is averaged over batch *and* dimensions, penalties are summed over features and averaged over batch.
    """

    d_in: int
    """Input width n (d_model of the residual stream, or n of the spiked dictionary)."""
    d_sae: int
    """Dictionary size m (number of latents)."""
    architecture: str = "aen"
    """A registered architecture name (:func:`aen_lib.sae.architectures.architecture_names`)."""
    l1: float = 0.0
    """λ1, coefficient of the (adaptive) l1 penalty (l1 family only)."""
    l2: float = 0.0
    """λ2, coefficient of the l2 'structural' penalty Σ h² (elastic_net and aen only; no ½ factor)."""
    k: int = 0
    """Active latents per token, or on average per token across the batch (the k-sparse architectures)."""
    gamma: float = 0.5
    """γ, exponent of the adaptive weight (r / EMA)^γ (book: paper facts, model and loss)."""
    ema_beta: float = 0.9999
    """β, decay of the EMA of mean |h| per feature; must lie in [0, 1)."""
    ref_top_pct: float = 0.05
    """p, the reference scale is the mean of the top ⌊p·m⌋ EMA values (at least one); p in (0, 1]."""
    w_min: float = 0.01
    """Lower clamp of the adaptive weights."""
    w_max: float = 10.0
    """Upper clamp of the adaptive weights."""
    warmup_steps: int = 10_000
    """T_w: adaptive weights are held at 1 for steps t < T_w (the EMA still accumulates)."""
    ramp_steps: int = 2_000
    """R: after T_w the weights ramp linearly from 1 to their adaptive value over R steps."""
    l0: float = 0.0
    """λ0, coefficient of an L0 penalty (the architectures whose spec reads ``l0``)."""
    seed: int = 0
    """Seed of the parameter initialisation."""
    options: dict = dataclasses.field(default_factory=dict)
    """Hyperparameters particular to one architecture, declared by its ``OPTIONS`` (e.g. topk_auxk's ``auxk_coef``).
    A *top-level* option (:attr:`aen_lib.sae.architectures.base.Option.top_level`, a field here once) is also taken
    as a keyword and is a top-level key of :meth:`to_dict`, as it was then; it is kept here only where it differs from
    its default."""

    def __post_init__(self) -> None:
        self._check_types()
        if self.d_in <= 0:
            fail("d_in", self.d_in, "must be a positive integer")
        if self.d_sae <= 0:
            fail("d_sae", self.d_sae, "must be a positive integer")
        if not isinstance(self.options, dict):
            fail("options", self.options, "must be a dict of architecture options")
        self.options = _without_top_level_defaults(self.options)
        arch = get_architecture(self.architecture)  # ValueError listing the known architectures
        for name in ("l1", "l2", "l0"):
            if getattr(self, name) < 0:
                fail(name, getattr(self, name), "must be >= 0")
        if self.k < 0:
            fail("k", self.k, "must be >= 0")
        if self.gamma <= 0:
            fail("gamma", self.gamma, "must be > 0")
        if not 0 <= self.ema_beta < 1:
            fail("ema_beta", self.ema_beta, "must lie in [0, 1)")
        if not 0 < self.ref_top_pct <= 1:
            fail("ref_top_pct", self.ref_top_pct, "must lie in (0, 1]")
        if self.w_min <= 0:
            fail("w_min", self.w_min, "must be > 0")
        if self.w_min > self.w_max:
            fail("w_min", self.w_min, f"must be <= w_max={self.w_max}")
        if self.warmup_steps < 0:
            fail("warmup_steps", self.warmup_steps, "must be >= 0")
        if self.ramp_steps < 0:
            fail("ramp_steps", self.ramp_steps, "must be >= 0")
        arch.validate(self)  # its options, and whatever else it needs

    @property
    def label(self) -> str:
        """Short human-readable name of the configuration, e.g. ``aen λ1=0.005 λ2=0.0001 γ=0.5``."""
        return get_architecture(self.architecture).label(self)

    # --- top-level options: the stored form of the settings that were fields before options existed -------------
    @classmethod
    def stored_keys(cls) -> set[str]:
        return super().stored_keys() | set(top_level_options())

    def to_dict(self) -> dict[str, Any]:
        """The fields, with every registered architecture's top-level option as a key of its own (its default where
        this config does not set it) before ``seed``: the form of every committed record, so its variant id holds."""
        d = super().to_dict()
        seed, options = d.pop("seed"), d.pop("options")
        top = top_level_options()
        for name in sorted(top, reverse=True):  # the order they had as fields: a new record reads as the committed do
            d[name] = options.pop(name, top[name].default)
        return {**d, "seed": seed, "options": options}

    def replace(self, **changes: Any) -> "SAEConfig":
        """A copy with some fields or top-level options changed (validated again)."""
        top = {k: changes.pop(k) for k in list(changes) if k in top_level_options()}
        if top:
            changes["options"] = {**changes.get("options", self.options), **top}
        return dataclasses.replace(self, **changes)


def _without_top_level_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the top-level options at their default, an integer given for a float one made a float
    (as the field it once was): the same config has one ``options`` and one variant id however it was written."""
    top = top_level_options()
    out = {}
    for key, value in options.items():
        if key in top:
            default = top[key].default
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is type(default) and value == default:
                continue
        out[key] = value
    return out


def _taking_top_level_options(init: Callable[..., None]) -> Callable[..., None]:
    """Let ``SAEConfig(...)`` take a top-level option as a keyword, as it took the field it once was (the chapters,
    the tests and :meth:`SAEConfig.from_dict` of a stored record do): it goes into ``options``."""

    @functools.wraps(init)
    def __init__(self: SAEConfig, *args: Any, **kwargs: Any) -> None:
        top = {k: kwargs.pop(k) for k in list(kwargs) if k in top_level_options()}
        options = kwargs.get("options") or {}
        if top and isinstance(options, dict):
            twice = sorted(set(top) & set(options))
            if twice:
                raise ValueError(f"{twice[0]} is given twice, as a keyword and in options; give it once")
            kwargs["options"] = {**options, **top}
        init(self, *args, **kwargs)

    return __init__


SAEConfig.__init__ = _taking_top_level_options(SAEConfig.__init__)  # type: ignore[method-assign]
