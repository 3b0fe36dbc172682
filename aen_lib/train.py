"""Training loop: Adam at constant LR, decoder projection after every step, a NaN-step guard, metric history,
atomic checkpoints and bit-identical resume (DIGEST §2.5).

A *data source* is any object with ``sample(batch_size)`` returning ``x [B, d_in]`` or ``(x, h_true)``, and
``state_dict()`` / ``load_state_dict()`` so that a resumed run sees exactly the batches the uninterrupted run
would have seen (:class:`aen_lib.data.SpikedDictionaryData` and the LM activation sources qualify).

Typical use::

    data = SpikedDictionaryData(SpikedConfig(rho=0.0, seed=0))
    sae = SAE(SAEConfig(d_in=256, d_sae=1024, architecture="aen", l1=5e-3, l2=1e-4))
    result = train(sae, data, TrainConfig(steps=2000, batch_size=256))
    result.final  # metrics averaged over the last logged points
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from . import metrics as M
from .config import ConfigBase, _fail
from .io import atomic_write
from .model import SAE

CHECKPOINT_VERSION = 1


class DataSource(Protocol):
    def sample(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainConfig(ConfigBase):
    """How to train one SAE (DIGEST §2.5, §4.1). Defaults are the paper's synthetic protocol."""

    steps: int = 50_000
    """Total optimiser steps."""
    batch_size: int = 256
    """Samples (tokens) per step."""
    lr: float = 1e-3
    """Adam learning rate, constant (no scheduler)."""
    adam_beta1: float = 0.9
    """Adam β1 (PyTorch default)."""
    adam_beta2: float = 0.999
    """Adam β2 (PyTorch default)."""
    adam_eps: float = 1e-8
    """Adam ε (PyTorch default)."""
    grad_clip: float = 0.0
    """Global gradient-norm clip; 0 disables it (synthetic runs: off; LLM runs: 1.0)."""
    log_every: int = 500
    """Log metrics on the current batch every this many steps (and at the last step)."""
    dead_window_steps: int = 10_000
    """Window (in steps) of the dead-latent metric: dead = max |h| <= 1e-12 over the window."""
    dead_window_tokens: int = 0
    """Optional second dead-latent window in tokens (samples); 0 disables it."""
    final_avg_logs: int = 10
    """The final metrics average this many last logged points (DIGEST §4.3)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps into checkpoint_dir; 0 disables periodic checkpoints."""
    checkpoint_dir: str = ""
    """Folder for checkpoints (``checkpoint.pt``, replaced atomically) and ``metrics.jsonl``."""
    autocast: str = "none"
    """Mixed precision for the forward pass: none | bf16."""
    progress: bool = True
    """Show a tqdm progress bar with step, loss, L0 and dead %."""
    seed: int = 0
    """Seed of torch/python/numpy RNGs at the start of training."""

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("steps", "batch_size", "log_every", "dead_window_steps", "final_avg_logs"):
            if getattr(self, name) <= 0:
                _fail(name, getattr(self, name), "must be a positive integer")
        for name in ("checkpoint_every", "dead_window_tokens"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "must be >= 0")
        if self.lr <= 0:
            _fail("lr", self.lr, "must be > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                _fail(name, getattr(self, name), "must lie in [0, 1)")
        if self.adam_eps <= 0:
            _fail("adam_eps", self.adam_eps, "must be > 0")
        if self.grad_clip < 0:
            _fail("grad_clip", self.grad_clip, "must be >= 0 (0 disables clipping)")
        if self.autocast not in ("none", "bf16"):
            _fail("autocast", self.autocast, "must be 'none' or 'bf16'")
        if self.checkpoint_every and not self.checkpoint_dir:
            _fail("checkpoint_dir", self.checkpoint_dir, "must be set when checkpoint_every > 0")


@dataclass
class TrainResult:
    """What :func:`train` returns: the metric history (one dict per logged step) and the final metrics."""

    history: list[dict[str, float]]
    final: dict[str, float]
    skipped_steps: int
    steps: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def make_optimizer(sae: SAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with PyTorch defaults and constant LR (DIGEST §2.5)."""
    return torch.optim.Adam(
        sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps
    )


def check_batch(x: Tensor, d_in: int) -> None:
    """Raise ``ValueError`` for a batch of the wrong shape or with NaN/Inf values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"the data source returned {type(x).__name__}; expected a torch.Tensor [batch, d_in]")
    if x.dim() != 2 or x.shape[1] != d_in:
        raise ValueError(f"batch has shape {tuple(x.shape)}; expected [batch, d_in={d_in}]")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"batch contains {n_bad} NaN/Inf values; clean the activations (drop or clip outlier tokens) first"
        )


def _split(batch: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.autocast == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def batch_metrics(x: Tensor, x_hat: Tensor, h: Tensor) -> dict[str, float]:
    """The per-batch metrics of DIGEST §4.3: L0, EV (the paper's residual-centred form), MSE, shrinkage."""
    x, x_hat, h = x.float(), x_hat.float(), h.float()
    return {
        "l0": float(M.l0(h)),
        "ev": float(M.explained_variance(x, x_hat)),
        "mse_metric": float(M.mse(x, x_hat)),
        "shrinkage": float(M.shrinkage_ratio(x, x_hat)),
    }


class Trainer:
    """Owns the optimiser, the dead-latent trackers and the history; :func:`train` is the one-call front end."""

    def __init__(self, sae: SAE, data: DataSource, cfg: TrainConfig) -> None:
        if not isinstance(sae, SAE):
            raise TypeError(f"sae must be an aen_lib SAE, got {type(sae).__name__}")
        self.sae, self.data, self.cfg = sae, data, cfg
        self.device = sae.W_enc.device
        self.opt = make_optimizer(sae, cfg)
        self.step = 0
        self.skipped = 0
        self.history: list[dict[str, float]] = []
        self.dead = M.DeadLatentTracker(sae.cfg.d_sae, window=cfg.dead_window_steps, unit="steps", device=self.device)
        self.dead_tokens = (
            M.DeadLatentTracker(sae.cfg.d_sae, window=cfg.dead_window_tokens, unit="tokens", device=self.device)
            if cfg.dead_window_tokens
            else None
        )
        self.ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "sae_cfg": self.sae.cfg.to_dict(),
            "train_cfg": self.cfg.to_dict(),
            "step": self.step,
            "skipped": self.skipped,
            "sae": self.sae.state_dict(),
            "optimizer": self.opt.state_dict(),
            "data": self.data.state_dict(),
            "dead": self.dead.state_dict(),
            "dead_tokens": self.dead_tokens.state_dict() if self.dead_tokens else None,
            "history": self.history,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})")
        if state["sae_cfg"] != self.sae.cfg.to_dict():
            raise ValueError("checkpoint was written for a different SAEConfig; build the SAE from state['sae_cfg']")
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["optimizer"])
        self.data.load_state_dict(state["data"])
        self.dead.load_state_dict(state["dead"])
        if self.dead_tokens is not None and state.get("dead_tokens"):
            self.dead_tokens.load_state_dict(state["dead_tokens"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.history = list(state["history"])
        _set_rng_state(state["rng"])

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (temp file, then rename)."""
        if path is None:
            if self.ckpt_dir is None:
                raise ValueError("no path given and TrainConfig.checkpoint_dir is empty")
            path = self.ckpt_dir / "checkpoint.pt"
        state = self.state_dict()
        return atomic_write(path, lambda p: torch.save(state, p))

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` and continue from its step."""
        self.load_state_dict(load_checkpoint(path, map_location=self.device))

    # --- the loop -----------------------------------------------------------------------------------------
    def _snapshot_buffers(self) -> list[Tensor]:
        return [b.clone() for b in self.sae.objective.buffers()]

    def _restore_buffers(self, snap: list[Tensor]) -> None:
        with torch.no_grad():
            for b, s in zip(self.sae.objective.buffers(), snap):
                b.copy_(s)

    # Hooks the distributed trainer overrides (aen_lib.distributed): moving a batch to the device, the loss
    # (through the DDP wrapper there), and the agreement of all ranks on whether a step is finite.
    def _to_device(self, x: Tensor) -> Tensor:
        return x.to(self.device)

    def _loss(self, x: Tensor) -> tuple[Any, Any]:
        return self.sae.loss(x)

    def _all_ok(self, ok: bool) -> bool:
        """Whether every process found the loss finite (one process: just ``ok``)."""
        return ok

    @property
    def _backward_even_if_skipped(self) -> bool:
        """Run backward on a step that will be skipped (needed under DDP: backward holds the gradient all-reduce)."""
        return False

    def train_step(self) -> tuple[Tensor, Tensor, Any, Any, bool]:
        """One step. Returns (x, h_true, out, terms, applied); a non-finite loss/gradient skips the step."""
        x, h_true = _split(self.data.sample(self.cfg.batch_size))
        x = self._to_device(x)
        check_batch(x, self.sae.cfg.d_in)
        snap = self._snapshot_buffers()
        with _autocast(self.cfg, self.device):
            out, terms = self._loss(x.to(self.sae.W_enc.dtype))
        self.opt.zero_grad(set_to_none=True)
        ok = self._all_ok(bool(torch.isfinite(terms.total)))
        if ok or self._backward_even_if_skipped:
            terms.total.backward()
            if ok and self.cfg.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.cfg.grad_clip)
                ok = bool(torch.isfinite(norm))
            elif ok:
                ok = all(bool(torch.isfinite(p.grad).all()) for p in self.sae.parameters() if p.grad is not None)
        if ok:
            self.opt.step()
            self.sae.project_decoder_()
        else:
            # Never apply a non-finite step: drop the gradients and roll back the adaptive/threshold state.
            self.opt.zero_grad(set_to_none=True)
            self._restore_buffers(snap)
            self.skipped += 1
        self.step += 1
        return x, h_true, out, terms, ok

    def step_metrics(self, x: Tensor, out: Any, terms: Any) -> dict[str, float]:
        """Loss terms and batch metrics logged at a log step (overridden by the DDP trainer to reduce over ranks)."""
        return {**terms.as_floats(), **batch_metrics(x, out.x_hat.detach(), out.h.detach())}

    def run(self) -> TrainResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        jsonl = self.ckpt_dir / "metrics.jsonl" if self.ckpt_dir else None
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            # On resume, keep exactly the lines up to the checkpoint's step.
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        bar = _progress(cfg, self.step)
        self.sae.train()
        while self.step < cfg.steps:
            x, h_true, out, terms, applied = self.train_step()
            h = out.h.detach()
            self.dead.update(h, tokens=x.shape[0])
            if self.dead_tokens is not None:
                self.dead_tokens.update(h, tokens=x.shape[0])
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rec = {"step": self.step, **self.step_metrics(x, out, terms)}
                rec["dead_pct"] = 100.0 * float(self.dead.dead_fraction())
                rec["dead_window_fill"] = self.dead.steps_in_window / self.dead.window
                if self.dead_tokens is not None:
                    rec["dead_pct_tokens"] = 100.0 * float(self.dead_tokens.dead_fraction())
                rec["skipped_steps"] = self.skipped
                w = getattr(self.sae.objective, "weights", None)
                if w is not None:
                    rec.update(w.summary())
                self.history.append(rec)
                if jsonl is not None:
                    with jsonl.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['total']:.4g}", L0=f"{rec['l0']:.1f}", dead=f"{rec['dead_pct']:.1f}%")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return TrainResult(
            history=self.history,
            final=final_metrics(self.history, cfg.final_avg_logs),
            skipped_steps=self.skipped,
            steps=self.step,
            seconds=time.perf_counter() - t0,
        )


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True, leave=False)


def final_metrics(history: list[dict[str, float]], n_last: int = 10) -> dict[str, float]:
    """Mean of each metric over the last ``n_last`` logged points (DIGEST §4.3: figures average the last 10).

    The averaged ``dead_pct`` mixes partial dead windows (the paper's figure convention). ``dead_pct_window`` is the
    dead % over the last *complete* window logged (a record with ``dead_window_fill == 1``); NaN if none was logged.
    """
    if not history:
        return {}
    last = history[-n_last:]
    keys = [k for k in last[-1] if k not in ("step", "dead_window_fill")]
    out = {k: float(np.mean([r[k] for r in last if k in r])) for k in keys}
    out["step"] = float(last[-1]["step"])
    complete = [r for r in history if r.get("dead_window_fill", 0.0) >= 1.0]
    out["dead_pct_window"] = float(complete[-1]["dead_pct"]) if complete else float("nan")
    return out


def load_checkpoint(path: str | Path, map_location: torch.device | str | None = "cpu") -> dict[str, Any]:
    """Read a training checkpoint, with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e}); the file is corrupt") from e
    if not isinstance(state, dict) or "sae" not in state or "sae_cfg" not in state:
        raise ValueError(f"checkpoint {path} does not look like an aen_lib training checkpoint")
    return state


def train(
    sae: SAE,
    data: DataSource,
    cfg: TrainConfig | None = None,
    *,
    resume_from: str | Path | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``sae`` on ``data`` (in place) and return the history and final metrics.

    ``overrides`` are TrainConfig fields (``train(sae, data, steps=100, progress=False)``). With ``resume_from``
    the run continues from that checkpoint and, on CPU, ends bit-identical to an uninterrupted run.
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides else (cfg or TrainConfig())
    trainer = Trainer(sae, data, cfg)
    if resume_from is not None:
        trainer.resume(resume_from)
    return trainer.run()
