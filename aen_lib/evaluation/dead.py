"""What a dead latent is, in one place: the firing threshold, the named definitions, and the trackers that count them.

A latent *fires* on a token when ``|h| > DEAD_THRESHOLD`` (1e-12, the paper's threshold; book: paper facts, synthetic
protocol "Dead % (window)"). Whether it is *dead* depends on the stretch of data asked about, and current software asks
different questions (:data:`DEAD_DEFINITIONS`; book: chapter 9):

* ``"window"`` — no firing in the last complete window of W training steps or tokens, the window reset after each
  (the paper's convention, SAELens's steps): :class:`DeadLatentTracker`, used by the trainer and every sweep;
* ``"since_last"`` — W or more tokens (or steps) since the latent last fired (sparsify, dictionary_learning,
  OpenAI's code, and TopK + AuxK's choice of latents for its auxiliary loss): :class:`FiringTracker`;
* ``"silent_heldout"`` — no firing on any token of a held-out set (SAEBench's ``frac_alive``);
* ``"out_of_reach"`` — pre-activation ≤ 0 on every fresh sample, so no sample lies in the latent's positive
  half-space and no loss through the ReLU can revive it: :func:`latent_reach`.

Every table that shows a dead % names its definition and its window in tokens (:func:`dead_definition_name`).
:mod:`aen_lib.evaluation.metrics` and :mod:`aen_lib.evaluation.features` re-export these names.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DEAD_THRESHOLD", "DEAD_DEFINITIONS", "dead_definition_name", "DeadLatentTracker", "FiringTracker",
           "latent_reach"]

DEAD_THRESHOLD = 1e-12
"""A latent counts as firing when |h| > 1e-12 (book: paper facts, synthetic protocol L0 and dead %). The one threshold
of the library: the trainer, the sweep, TopK + AuxK, the feature tools, the held-out and recovery metrics use it.
(Recovery records written before 2026-12-04 used 1e-6 for held-out L0, support and reach; re-measured on the sets
whose SAEs were at hand, the dead and out-of-reach shares came out identical and L0 moved by at most 4e-4.)"""

DEAD_DEFINITIONS: dict[str, str] = {
    "window": "no firing in the last complete window of {window}",
    "since_last": "{window} or more since it last fired",
    "silent_heldout": "no firing on any of {window} held-out",
    "out_of_reach": "pre-activation ≤ 0 on every one of {window} fresh samples",
}
"""The named definitions of a dead latent (module docstring), each a sentence with its window left open."""


def dead_definition_name(definition: str, tokens: int, unit: str = "tokens") -> str:
    """The definition ``definition`` of :data:`DEAD_DEFINITIONS` with its window, e.g. ``dead_definition_name("window",
    2_048_000)`` -> "no firing in the last complete window of 2,048,000 tokens"."""
    if definition not in DEAD_DEFINITIONS:
        raise ValueError(f"unknown dead-latent definition {definition!r}; known: {sorted(DEAD_DEFINITIONS)}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be an int >= 1, got {tokens!r}")
    return DEAD_DEFINITIONS[definition].format(window=f"{tokens:,} {unit}")


def _codes_2d(h: Tensor) -> Tensor:
    if not isinstance(h, Tensor):
        raise TypeError(f"h must be a torch.Tensor, got {type(h).__name__}")
    if h.dim() < 2 or h.shape[0] == 0 or h.shape[-1] == 0:
        raise ValueError(f"h must be a non-empty [batch, d_sae] tensor, got shape {tuple(h.shape)}")
    return h.reshape(-1, h.shape[-1])


class DeadLatentTracker:
    """Max |h| per latent over a window of training steps or tokens; dead ⇔ max ≤ ``threshold`` (book: paper facts, language-model protocols).

    Window rule (the paper's "window reset every N steps"): batches are added with :meth:`update`. A window is
    *complete* once it holds ``window`` steps (``unit="steps"``) or at least ``window`` tokens (``unit="tokens"``;
    batches are never split, so a token window may overshoot by part of one batch). The accumulator is reset
    lazily, at the start of the first update after completion. Hence right after update number N·window the
    metric covers exactly the last full window, and at the end of training it covers the last (possibly partial)
    window, e.g. the last 5k steps of a 25k-step run with a 10k window, as in the paper's Pythia logs.

    Args:
        d_sae: number of latents m.
        window: window length in ``unit``s (> 0).
        unit: ``"steps"`` or ``"tokens"`` (tokens = rows of ``h``, or the ``tokens`` passed to update).
        threshold: firing threshold on |h| (default 1e-12).
        device: device of the per-latent buffer (default: that of the first ``h``).

    Firing counts: :meth:`update` may also be given ``fired [m]``, how many rows of the batch each latent fired on
    (|h| > threshold); the tracker then sums them over the window (:meth:`window_counts`), the raw material of a
    firing-density histogram. Counts are kept only while every update of the window passed them.
    """

    def __init__(
        self,
        d_sae: int,
        window: int,
        unit: str = "steps",
        threshold: float = DEAD_THRESHOLD,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(d_sae, int) or isinstance(d_sae, bool) or d_sae < 1:
            raise ValueError(f"d_sae must be an int >= 1, got {d_sae!r}")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if unit not in ("steps", "tokens"):
            raise ValueError(f"unit must be 'steps' or 'tokens', got {unit!r}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite float >= 0, got {threshold!r}")
        self.d_sae, self.window, self.unit, self.threshold = d_sae, window, unit, float(threshold)
        self.device = torch.device(device) if device is not None else None
        self.max_abs = torch.zeros(d_sae, device=self.device)  # [m] max |h| in the current window
        self.steps_in_window = 0
        self.tokens_in_window = 0
        self.total_steps = 0
        self.total_tokens = 0
        self.windows_completed = 0
        self.last_window_dead: Tensor | None = None  # [m] bool mask of the last completed window
        self.counts: Tensor | None = torch.zeros(d_sae, dtype=torch.float64, device=self.device)  # [m] rows fired

    @property
    def window_complete(self) -> bool:
        """Whether the current window has reached its length (it is reset at the next update)."""
        size = self.steps_in_window if self.unit == "steps" else self.tokens_in_window
        return size >= self.window

    def _close_window(self) -> None:
        self.last_window_dead = self.max_abs <= self.threshold
        self.windows_completed += 1
        self.max_abs = torch.zeros_like(self.max_abs)
        self.counts = torch.zeros_like(self.max_abs, dtype=torch.float64)
        self.steps_in_window = 0
        self.tokens_in_window = 0

    @torch.no_grad()
    def update(self, h: Tensor, tokens: int | None = None, fired: Tensor | None = None) -> None:
        """Add one training step's codes ``h [B, m]``; ``tokens`` defaults to the number of rows B. ``fired [m]``:
        rows of the batch on which each latent fired (class docstring); without it the window's counts are unknown."""
        h2 = _codes_2d(h)
        if h2.shape[1] != self.d_sae:
            raise ValueError(f"h has {h2.shape[1]} latents but the tracker has d_sae={self.d_sae}")
        if tokens is None:
            tokens = h2.shape[0]
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
        if self.window_complete:
            self._close_window()
        if self.max_abs.device != h2.device:
            self.max_abs = self.max_abs.to(h2.device)
            self.device = h2.device
        # max |h| per latent as one reduction (no |h| temporary of the batch's size)
        batch_max = torch.linalg.vector_norm(h2.detach(), float("inf"), dim=0).to(self.max_abs.dtype)
        self.max_abs = torch.maximum(self.max_abs, batch_max)
        if fired is None:
            self.counts = None
        elif self.counts is not None:
            if fired.shape != (self.d_sae,):
                raise ValueError(f"fired must have shape ({self.d_sae},), got {tuple(fired.shape)}")
            self.counts = self.counts.to(fired.device) + fired.to(torch.float64)
        self.steps_in_window += 1
        self.tokens_in_window += tokens
        self.total_steps += 1
        self.total_tokens += tokens

    def dead_mask(self) -> Tensor:
        """``[m]`` bool: latents whose max |h| over the current window is ≤ threshold (all True if empty)."""
        return self.max_abs <= self.threshold

    def window_counts(self) -> Tensor | None:
        """``[m]`` float64: rows each latent fired on over the current window, or None where some update of the
        window came without ``fired`` (or the state was restored from a tracker that kept no counts)."""
        return None if self.counts is None else self.counts.clone()

    def dead_fraction(self) -> Tensor:
        """Share of dead latents over the current window (0-dim float tensor; ×100 for the paper's dead %)."""
        return self.dead_mask().float().mean()

    def state_dict(self) -> dict:
        """Everything needed to resume the window bit-identically."""
        return {
            "d_sae": self.d_sae,
            "window": self.window,
            "unit": self.unit,
            "threshold": self.threshold,
            "max_abs": self.max_abs.clone(),
            "steps_in_window": self.steps_in_window,
            "tokens_in_window": self.tokens_in_window,
            "total_steps": self.total_steps,
            "total_tokens": self.total_tokens,
            "windows_completed": self.windows_completed,
            "last_window_dead": None if self.last_window_dead is None else self.last_window_dead.clone(),
            "counts": None if self.counts is None else self.counts.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; d_sae, window, unit and threshold must match this tracker."""
        for key in ("d_sae", "window", "unit", "threshold"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state dict has {key}={state[key]!r} but this tracker has {getattr(self, key)!r}")
        dev = self.max_abs.device
        self.max_abs = state["max_abs"].to(dev).clone()
        for key in ("steps_in_window", "tokens_in_window", "total_steps", "total_tokens", "windows_completed"):
            setattr(self, key, int(state[key]))
        lw = state["last_window_dead"]
        self.last_window_dead = None if lw is None else lw.to(dev).clone()
        c = state.get("counts")  # absent in states saved before counts were kept: this window's counts are unknown
        self.counts = None if c is None else c.to(dev).clone()


class FiringTracker:
    """For every latent, the steps and tokens since it last fired, and how often it fired (the three definitions above).

    Feed it the codes ``h [B, m]`` of consecutive training steps with :meth:`update`. Unlike
    :class:`aen_lib.evaluation.metrics.DeadLatentTracker` (a fixed window that is reset, as the paper logs it, book: paper facts, language-model protocols),
    this keeps the time since the last firing, so :meth:`dead_mask` answers "did not fire in the last ``w`` steps"
    or "... in the last ``w`` tokens" for any ``w`` up to the length of the stream seen. A latent fires on a token
    when ``|h| > threshold`` (default 1e-12, the paper's threshold).
    """

    def __init__(self, d_sae: int, threshold: float = DEAD_THRESHOLD, device: torch.device | str | None = None) -> None:
        if isinstance(d_sae, bool) or not isinstance(d_sae, int) or d_sae < 1:
            raise ValueError(f"d_sae must be an int >= 1, got {d_sae!r}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        self.d_sae, self.threshold = d_sae, float(threshold)
        self.steps_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)  # [m]
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)  # [m]
        self.fire_count = torch.zeros(d_sae, dtype=torch.long, device=device)  # [m] tokens on which it fired
        self.ever_fired = torch.zeros(d_sae, dtype=torch.bool, device=device)  # [m]
        self.total_steps = 0
        self.total_tokens = 0

    @torch.no_grad()
    def update(self, h: Tensor) -> None:
        """Add one step's codes ``h [B, m]`` (B tokens)."""
        if not isinstance(h, Tensor) or h.dim() != 2 or h.shape[1] != self.d_sae or h.shape[0] == 0:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"h must be a non-empty tensor [batch, d_sae={self.d_sae}], got {shape}")
        dev = self.fire_count.device
        fires = (h.detach().abs() > self.threshold).to(dev)  # [B, m]
        any_fire = fires.any(dim=0)  # [m]
        B = fires.shape[0]
        # tokens after the last firing token inside this batch (B if it did not fire)
        idx = torch.arange(1, B + 1, device=dev).unsqueeze(1)  # [B, 1]
        last = (fires * idx).amax(dim=0)  # [m] 1-based index of the last firing row, 0 if none
        self.tokens_since_fired = torch.where(any_fire, B - last, self.tokens_since_fired + B)
        self.steps_since_fired = torch.where(any_fire, torch.zeros_like(self.steps_since_fired),
                                             self.steps_since_fired + 1)
        self.fire_count += fires.sum(dim=0)
        self.ever_fired |= any_fire
        self.total_steps += 1
        self.total_tokens += B

    def dead_mask(self, window: int, unit: str = "steps") -> Tensor:
        """``[m]`` bool: latents that did not fire during the last ``window`` steps (``unit="steps"``: no firing in
        this or the previous ``window - 1`` updates) or the last ``window`` tokens (``unit="tokens"``).

        Raises ``ValueError`` when ``window`` is longer than the stream seen so far: there is no evidence either way.
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if unit == "steps":
            if window > self.total_steps:
                raise ValueError(f"window={window} steps is longer than the {self.total_steps} steps seen")
            # fired at the current step: 0 steps since; not in the last `window` steps: since >= window
            return self.steps_since_fired >= window
        if unit == "tokens":
            if window > self.total_tokens:
                raise ValueError(f"window={window} tokens is longer than the {self.total_tokens} tokens seen")
            return self.tokens_since_fired >= window
        raise ValueError(f"unit must be 'steps' or 'tokens', got {unit!r}")

    def frequencies(self) -> Tensor:
        """``[m]`` float: share of all tokens seen on which each latent fired."""
        if self.total_tokens == 0:
            raise ValueError("no tokens seen yet; call update() first")
        return self.fire_count.double() / self.total_tokens


def latent_reach(sae: "torch.nn.Module", x: Tensor, thresh: float = DEAD_THRESHOLD, batch_size: int = 2048) -> dict[str, float]:
    """Which latents the data can reach, on samples ``x [B, n]`` (fresh ones, not training batches).

    Returns ``eval_dead_pct``, the % of latents never active (|h| > ``thresh``) on any row of ``x``, and
    ``eval_negative_pct``, the % whose pre-activation ``(x - b_dec) W_enc + b_enc`` is ≤ 0 on every row: no sample
    lies in the latent's positive half-space. For a ReLU SAE the two coincide. For TopK the difference is the latents
    that are positive somewhere but never among the k largest (outcompeted, not out of reach). A negative latent gets no
    gradient through any loss that goes through the ReLU, the AuxK loss included (it back-propagates through the
    ReLU of the dead latents' pre-activations), so only a change of the other weights can bring data to it.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [B, n] samples, got shape {tuple(x.shape)}")
    dev, dtype = sae.W_enc.device, sae.W_enc.dtype
    active = positive = None
    for chunk in x.split(batch_size):
        chunk = chunk.to(dev, dtype)
        a = (sae.encode(chunk).abs() > thresh).any(dim=-2)
        p = (sae.pre_activation(chunk) > 0).any(dim=-2)
        active = a if active is None else active | a
        positive = p if positive is None else positive | p
    return {"eval_dead_pct": 100.0 * float((~active).float().mean()),
            "eval_negative_pct": 100.0 * float((~positive).float().mean())}
