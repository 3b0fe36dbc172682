"""Typed, validated configuration dataclasses that round-trip to JSON.

Every config in ``aen_lib`` is a dataclass inheriting :class:`ConfigBase`. A bad value raises ``ValueError``
naming the field, the value and what is allowed, at construction time, so that a typo in a papermill profile or
a sweep grid stops the run before any work is done.

:class:`SAEConfig` describes one sparse autoencoder: its sizes, its architecture (which sparsity objective it
trains with, book: paper facts, model and loss) and every hyperparameter of that objective, including the adaptive-weight rule of
book: paper facts, model and loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from .architectures import get_architecture
from ..errors import fail

T = TypeVar("T", bound="ConfigBase")


@dataclass
class ConfigBase:
    """Mixin: JSON round trip with unknown-key and type checking."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
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
    """relu_l1 | elastic_net | adaptive_lasso | aen | topk | topk_auxk | batchtopk | jumprelu
    (:mod:`aen_lib.sae.architectures`)."""
    l1: float = 0.0
    """λ1, coefficient of the (adaptive) l1 penalty (l1 family only)."""
    l2: float = 0.0
    """λ2, coefficient of the l2 'structural' penalty Σ h² (elastic_net and aen only; no ½ factor)."""
    k: int = 0
    """Active latents per token (topk) or on average per token across the batch (batchtopk)."""
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
    """JumpReLU only: coefficient of the L0 penalty (Rajamanoharan et al. 2024)."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU only: initial threshold θ for every latent."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU only: bandwidth ε of the rectangle kernel in the straight-through estimator."""
    batchtopk_threshold_beta: float = 0.99
    """BatchTopK only: EMA decay of the inference threshold (mean smallest kept activation)."""
    seed: int = 0
    """Seed of the parameter initialisation."""
    options: dict = dataclasses.field(default_factory=dict)
    """Hyperparameters particular to one architecture, declared by it (e.g. topk_auxk's ``auxk_coef``)."""

    def __post_init__(self) -> None:
        self._check_types()
        if self.d_in <= 0:
            fail("d_in", self.d_in, "must be a positive integer")
        if self.d_sae <= 0:
            fail("d_sae", self.d_sae, "must be a positive integer")
        if not isinstance(self.options, dict):
            fail("options", self.options, "must be a dict of architecture options")
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
        if self.jumprelu_init_threshold <= 0:
            fail("jumprelu_init_threshold", self.jumprelu_init_threshold, "must be > 0")
        if self.jumprelu_bandwidth <= 0:
            fail("jumprelu_bandwidth", self.jumprelu_bandwidth, "must be > 0")
        if not 0 <= self.batchtopk_threshold_beta < 1:
            fail("batchtopk_threshold_beta", self.batchtopk_threshold_beta, "must lie in [0, 1)")
        arch.validate(self)

    @property
    def label(self) -> str:
        """Short human-readable name of the configuration, e.g. ``aen λ1=0.005 λ2=0.0001 γ=0.5``."""
        return get_architecture(self.architecture).label(self)
