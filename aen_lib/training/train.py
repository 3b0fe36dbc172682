"""The one training loop, for one SAE, a stack of SAEs (a sweep) or a DDP rank: Adam at constant LR, decoder
projection after every step, a non-finite-step guard, dead-latent windows, metric history, progress bar, atomic
checkpoints and bit-identical resume (paper §2).

What differs between one process and DDP is only the reducer (:mod:`aen_lib.sae.reduce`): it averages gradients,
all-reduces the batch statistics that the architectures and the dead-latent windows keep, and makes every rank vote
on skipped steps. What differs between one SAE and a stack is only the member dimension of the SAE
(:class:`aen_lib.sae.model.SAE`).

A *data source* is any object with ``sample(batch_size)`` returning ``x [B, d_in]`` or ``(x, h_true)``, and
``state_dict()`` / ``load_state_dict()`` so that a resumed run sees exactly the batches the uninterrupted run
would have seen (:class:`aen_lib.data.synthetic.SpikedDictionaryData` and the LM activation sources qualify).

Typical use::

    data = SpikedDictionaryData(SpikedConfig(rho=0.0, seed=0))
    sae = SAE(SAEConfig(d_in=256, d_sae=1024, architecture="aen", l1=5e-3, l2=1e-4))
    result = train(sae, data, TrainConfig(steps=2000, batch_size=256))
    result.final  # metrics averaged over the last logged points

A stack ``SAE([cfg1, cfg2, ...])`` trains the same way; ``result.histories[j]`` / ``result.finals[j]`` per member.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..evaluation import metrics as M
from ..sae.config import ConfigBase
from ..errors import fail
from ..sae.model import SAE, LossTerms, SAEOutput
from ..sae.optim import MemberAdam
from ..sae.reduce import LOCAL, Reducer
from ..data.sources import DataSource
from .run_files import RunFiles, write_checkpoint

CHECKPOINT_VERSION = 2


@dataclass
class TrainConfig(ConfigBase):
    """How to train one SAE (book: paper facts, model and loss). Defaults are the paper's synthetic protocol."""

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
    """The final metrics average this many last logged points (book: paper facts, synthetic protocol)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps into checkpoint_dir; 0 disables periodic checkpoints
    (sweeps take theirs as ``train_sweep(..., checkpoint_dir=, checkpoint_every=)``)."""
    checkpoint_dir: str = ""
    """Folder for checkpoints (``checkpoint.pt``, replaced atomically) and ``metrics.jsonl``."""
    autocast: str = "none"
    """Mixed precision for the forward pass: none | bf16."""
    progress: bool = True
    """Show a tqdm progress bar with step, loss, L0 and dead %."""
    seed: int = 0
    """The run's seed as recorded with it. It draws nothing: the initialisation draws from ``SAEConfig.seed`` and the
    data from its source's own generator, and the trainer leaves the global torch/Python/NumPy RNGs alone."""

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("steps", "batch_size", "log_every", "dead_window_steps", "final_avg_logs"):
            if getattr(self, name) <= 0:
                fail(name, getattr(self, name), "must be a positive integer")
        for name in ("checkpoint_every", "dead_window_tokens"):
            if getattr(self, name) < 0:
                fail(name, getattr(self, name), "must be >= 0")
        if self.lr <= 0:
            fail("lr", self.lr, "must be > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                fail(name, getattr(self, name), "must lie in [0, 1)")
        if self.adam_eps <= 0:
            fail("adam_eps", self.adam_eps, "must be > 0")
        if self.grad_clip < 0:
            fail("grad_clip", self.grad_clip, "must be >= 0 (0 disables clipping)")
        if self.autocast not in ("none", "bf16"):
            fail("autocast", self.autocast, "must be 'none' or 'bf16'")
        if self.checkpoint_every and not self.checkpoint_dir:
            fail("checkpoint_dir", self.checkpoint_dir, "must be set when checkpoint_every > 0")


@dataclass
class TrainResult:
    """What :func:`train` returns: per member, the metric history (one dict per logged step), the final metrics and
    the number of skipped steps. ``history`` / ``final`` / ``skipped_steps`` are those of a single SAE."""

    histories: list[list[dict[str, float]]]
    finals: list[dict[str, float]]
    skipped: list[int]
    steps: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def _one(self, values: list[Any], name: str) -> Any:
        if len(values) != 1:
            raise TypeError(f"this result holds {len(values)} members; use .{name}[j]")
        return values[0]

    @property
    def history(self) -> list[dict[str, float]]:
        return self._one(self.histories, "histories")

    @property
    def final(self) -> dict[str, float]:
        return self._one(self.finals, "finals")

    @property
    def skipped_steps(self) -> int:
        return self._one(self.skipped, "skipped")


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


def split_batch(batch: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
    """``(x, h_true or None)`` from what a data source's ``sample`` returned."""
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Move a batch to ``device``; CPU -> CUDA copies go through pinned memory without blocking the host."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def rng_state() -> dict[str, Any]:
    """torch, Python and NumPy RNG states (and CUDA's when present), for checkpoints."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def autocast_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass when ``cfg.autocast == "bf16"``, else nothing."""
    if cfg.autocast == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def batch_metrics(x: Tensor, x_hat: Tensor, h: Tensor, reducer: Reducer = LOCAL) -> list[dict[str, float]]:
    """Per member, the batch metrics of the paper's logs: L0, EV (residual-centred form, as
    :func:`aen_lib.evaluation.metrics.explained_variance`), MSE and shrinkage, over the global batch.

    x [B, n] or [M, B, n]; x_hat [M, B, n]; h [M, B, m]. Each metric is a ratio of sums over tokens, so ranks sum
    per-dimension statistics (float64) and every rank gets the metrics of the concatenated batch:
    EV = 1 − Σ_j Var(e_j) / Σ_j Var(x_j) with biased variances from Σe, Σe², Σx, Σx²
    (:func:`aen_lib.evaluation.metrics.explained_variance_from_sums`).
    """
    mm, n = x_hat.shape[0], x_hat.shape[-1]
    x64 = x.to(torch.float64).expand(mm, -1, -1) if x.dim() == 2 else x.to(torch.float64)
    e = x64 - x_hat.to(torch.float64)
    b = x_hat.shape[1]
    per_member = torch.cat([
        e.sum(1), (e * e).sum(1), x64.sum(1), (x64 * x64).sum(1),  # 4 x [M, n]
        torch.stack([
            torch.full((mm,), float(b), dtype=torch.float64, device=e.device),
            (h.abs() > M.DEAD_THRESHOLD).sum(dim=(1, 2)).to(torch.float64),
            x_hat.to(torch.float64).abs().sum(dim=(1, 2)),
            x64.abs().sum(dim=(1, 2)),
        ], dim=1),
    ], dim=1)  # [M, 4n + 4]
    stats = reducer.sum(per_member)
    se, se2, sx, sx2 = stats[:, :n], stats[:, n:2 * n], stats[:, 2 * n:3 * n], stats[:, 3 * n:4 * n]
    count, active, l1_hat, l1_x = stats[:, 4 * n:].unbind(dim=1)
    ev = M.explained_variance_from_sums(count, sx, sx2.sum(1), se, se2.sum(1))
    mse = se2.sum(1) / (count * n)
    return [{"l0": float(active[j] / count[j]), "ev": float(ev[j]), "mse_metric": float(mse[j]),
             "shrinkage": float(l1_hat[j] / l1_x[j])} for j in range(mm)]


class Trainer:
    """The training loop for an :class:`~aen_lib.sae.model.SAE` of M ≥ 1 members; :func:`train` is the one-call front end.

    Per step: one batch for every member, every member's loss, one backward, the reducer's gradient average,
    a per-member finite check (and gradient clipping), Adam, decoder projection, dead-latent windows; at log steps
    one record per member. A member whose loss or gradient is not finite skips the step entirely: parameters, Adam
    moments and step count, architecture state (adaptive EMA, thresholds, AuxK counters) and dead statistics keep
    their values (its dead window still advances by one step). Under DDP all ranks vote, so they skip together.

    The loop opens no file: checkpoints and metrics lines go to ``files`` (a
    :class:`~aen_lib.training.run_files.RunFiles`; by default the one of ``cfg.checkpoint_dir``, or none).
    """

    def __init__(self, sae: SAE, data: DataSource, cfg: TrainConfig, *, reducer: Reducer = LOCAL,
                 bar: Any = None, files: RunFiles | None = None) -> None:
        if not isinstance(sae, SAE):
            raise TypeError(f"sae must be an aen_lib SAE, got {type(sae).__name__}")
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        if reducer.world_size > 1:
            for r in sae.runs:
                if not r.supports_ddp:
                    raise ValueError(f"architecture={r.cfgs[0].architecture!r} cannot be trained with world_size > 1 "
                                     "(its activation couples tokens across the batch, which DDP splits across ranks); "
                                     "use one process")
        self.sae, self.data, self.cfg, self.reducer = sae, data, cfg, reducer
        self.device = sae.W_enc.device
        mm = sae.n_members
        self.opt = MemberAdam(sae.member_params(), mm, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                              eps=cfg.adam_eps)
        self.step = 0
        self.skipped = torch.zeros(mm, dtype=torch.long)
        self.histories: list[list[dict[str, float]]] = [[] for _ in range(mm)]
        # one tracker over all members side by side: the window rule is shared, the mask is per latent
        self.dead = M.DeadLatentTracker(mm * sae.d_sae, window=cfg.dead_window_steps, unit="steps", device=self.device)
        self.dead_tokens = (M.DeadLatentTracker(mm * sae.d_sae, window=cfg.dead_window_tokens, unit="tokens",
                                                device=self.device) if cfg.dead_window_tokens else None)
        # where checkpoints and metrics lines go: the runner's RunFiles, or cfg.checkpoint_dir's; None keeps nothing
        self.files = files if files is not None else (RunFiles(cfg.checkpoint_dir) if cfg.checkpoint_dir else None)
        self.bar = bar
        # no global reseeding: every random draw of training (initialisation, data, shuffles) has its own generator

    @property
    def history(self) -> list[dict[str, float]]:
        """The history of a single SAE (member 0 of a one-member stack)."""
        if len(self.histories) != 1:
            raise AttributeError("a stack has one history per member: use .histories[j]")
        return self.histories[0]

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (collective under DDP: every rank's data position and RNG)."""
        per_rank = self.reducer.gather_objects({"data": self.data.state_dict(), "rng": rng_state()})
        return {
            "version": CHECKPOINT_VERSION,
            "sae_cfgs": [c.to_dict() for c in self.sae.cfgs],
            "train_cfg": self.cfg.to_dict(),
            "world_size": self.reducer.world_size,
            "step": self.step,
            "skipped": self.skipped.clone(),
            "sae": self.sae.state_dict(),
            "optimizer": self.opt.state_dict(),
            "dead": self.dead.state_dict(),
            "dead_tokens": self.dead_tokens.state_dict() if self.dead_tokens else None,
            "histories": self.histories,
            "per_rank": per_rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} is not supported (expected "
                             f"{CHECKPOINT_VERSION}); it was written by another aen_lib version: start a new run")
        if state["sae_cfgs"] != [c.to_dict() for c in self.sae.cfgs]:
            raise ValueError("checkpoint was written for different SAEConfig(s); build the SAE from state['sae_cfgs'] "
                             "or use another checkpoint folder")
        if int(state["world_size"]) != self.reducer.world_size:
            raise ValueError(f"checkpoint was written by world_size={state['world_size']} ranks but this run has "
                             f"world_size={self.reducer.world_size}; resume with the same number of processes")
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["optimizer"])
        self.dead.load_state_dict(state["dead"])
        if self.dead_tokens is not None and state.get("dead_tokens"):
            self.dead_tokens.load_state_dict(state["dead_tokens"])
        self.step = int(state["step"])
        self.skipped = state["skipped"].clone()
        self.histories = [list(h) for h in state["histories"]]
        mine = state["per_rank"][self.reducer.rank]
        self.data.load_state_dict(mine["data"])
        # mine["rng"] (the global RNG states at save time) is kept in checkpoints for older readers and not restored:
        # training draws from its own generators, and the caller's global RNG is not the trainer's to set

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (temp file, then rename); rank 0 writes, every rank waits."""
        if path is None and self.files is None:
            raise ValueError("no path given and TrainConfig.checkpoint_dir is empty")
        state = self.state_dict()
        out = self.files.checkpoint if path is None else Path(path)
        if self.reducer.is_main:
            if path is None:
                self.files.save_checkpoint(state)
            else:
                write_checkpoint(out, state)
        self.reducer.barrier()
        return out

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` and continue from its step."""
        self.load_state_dict(load_checkpoint(path, map_location=self.device))

    # --- one step -----------------------------------------------------------------------------------------
    def _member_ok(self, finite: Tensor) -> Tensor:
        """[M] bool: finite loss and finite gradients; clips each member's gradient norm if ``cfg.grad_clip``
        (as ``torch.nn.utils.clip_grad_norm_`` per SAE)."""
        clip = self.cfg.grad_clip > 0
        acc = torch.zeros(self.sae.n_members, device=self.device, dtype=torch.float64)
        params = self.sae.member_params()
        for p, sl, has in params:
            if p.grad is not None:
                g = (p.grad if has else p.grad.unsqueeze(0)).detach().flatten(1)
                # clipping needs the norms; otherwise a plain sum, non-finite as soon as one entry is NaN/Inf
                acc[sl] += g.norm(dim=1).double().pow(2) if clip else g.sum(dim=1).double()
        ok = finite & torch.isfinite(acc)
        if clip:
            coef = (self.cfg.grad_clip / (acc.sqrt() + 1e-6)).clamp(max=1.0)
            with torch.no_grad():
                for p, sl, has in params:
                    if p.grad is not None:
                        c = coef[sl].to(p.grad.dtype)
                        p.grad.mul_(c.reshape((-1,) + (1,) * (p.dim() - 1)) if has else c.reshape(()))
        return ok

    def train_step(self) -> tuple[Tensor, Tensor | None, SAEOutput, LossTerms, Tensor]:
        """One step for every member. Returns (x, h_true, out, terms, applied [M] bool)."""
        x, h_true = split_batch(self.data.sample(self.cfg.batch_size))
        x = to_device(x, self.device)
        check_batch(x, self.sae.d_in)
        snap = self.sae.snapshot_state()
        with autocast_context(self.cfg, self.device):
            out, terms = self.sae.loss(x.to(self.sae.W_enc.dtype), update=True, reducer=self.reducer)
        self.opt.zero_grad()
        total = terms.total.reshape(-1)
        finite = torch.isfinite(total.detach())
        torch.where(finite, total, torch.zeros_like(total)).sum().backward()
        self.reducer.average_gradients(p for p, _, _ in self.sae.member_params())
        ok = self.reducer.all_true(self._member_ok(finite))
        if bool(ok.all()):
            self.opt.step()
            self.sae.project_decoder_()
        else:
            self.opt.step(apply=ok)
            self.sae.project_decoder_(ok)
            self.sae.restore_state(snap, ok)
            self.skipped += (~ok).cpu().long()
        self.opt.zero_grad()
        self.step += 1
        return x, h_true, out, terms, ok

    @torch.no_grad()
    def _update_dead(self, out: SAEOutput, ok: Tensor, tokens: int) -> None:
        mm, m = self.sae.n_members, self.sae.d_sae
        a = out.h.detach().reshape(mm, -1, m).abs()
        batch_max = a.amax(dim=1).float()  # [M, m]: max |h| over the batch (several times faster than an ∞-norm)
        fired = (a > self.dead.threshold).sum(dim=1).float()  # [M, m]: rows each latent fired on
        keep = ok.reshape(-1, 1)
        batch_max = torch.where(keep, batch_max, torch.zeros_like(batch_max))  # skipped: contributes nothing
        fired = torch.where(keep, fired, torch.zeros_like(fired))
        batch_max = self.reducer.max(batch_max).reshape(1, -1)
        fired = self.reducer.sum(fired).reshape(-1)
        self.dead.update(batch_max, tokens=tokens, fired=fired)
        if self.dead_tokens is not None:
            self.dead_tokens.update(batch_max, tokens=tokens, fired=fired)

    def _log(self, x: Tensor, out: SAEOutput, terms: LossTerms) -> None:
        mm, m = self.sae.n_members, self.sae.d_sae
        loss = torch.stack([getattr(terms, k).detach().float().reshape(-1) for k in LossTerms.NAMES])  # [5, M]
        loss = (self.reducer.sum(loss) / self.reducer.world_size).cpu()
        x_hat = out.x_hat.detach().reshape(mm, -1, self.sae.d_in)
        metrics = batch_metrics(x, x_hat, out.h.detach().reshape(mm, -1, m), self.reducer)
        dead = 100.0 * self.dead.dead_mask().reshape(mm, m).float().mean(dim=1).cpu()
        dead_tok = (100.0 * self.dead_tokens.dead_mask().reshape(mm, m).float().mean(dim=1).cpu()
                    if self.dead_tokens is not None else None)
        fill = self.dead.steps_in_window / self.dead.window
        lines = []
        for j in range(mm):
            rec: dict[str, float] = {"step": self.step}
            rec.update({k: float(loss[i, j]) for i, k in enumerate(LossTerms.NAMES)})
            rec.update(metrics[j])
            rec["dead_pct"] = float(dead[j])
            rec["dead_window_fill"] = fill
            if dead_tok is not None:
                rec["dead_pct_tokens"] = float(dead_tok[j])
                rec["dead_tokens_fill"] = self.dead_tokens.tokens_in_window / self.dead_tokens.window
            rec["skipped_steps"] = int(self.skipped[j])
            rec.update(self.sae.summary(j))
            self.histories[j].append(rec)
            lines.append(self._jsonl_line(rec, j))
        if self.files is not None and self.reducer.is_main:
            self.files.append_metrics(lines)

    def _jsonl_line(self, rec: dict[str, float], j: int) -> str:
        """One line of metrics.jsonl; a stack's lines name their member."""
        return json.dumps({**rec, "member": j} if self.sae.stacked else rec) + "\n"

    # --- the loop -----------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``cfg.steps`` (from the current step: after :meth:`resume`, the rest)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        mm = self.sae.n_members
        if self.files is not None:
            used = self.step == 0 and self.files.holds_run()
            if self.reducer.gather_objects(used)[0]:  # rank 0's view, on every rank: all stop together
                raise ValueError(f"checkpoint_dir {self.files.folder} already holds a run (checkpoint.pt / "
                                 "metrics.jsonl); resume it (resume_from=...) or choose another folder")
            if self.reducer.is_main:  # on resume, the metrics lines up to the checkpoint's step
                self.files.start([self._jsonl_line(h[i], j) for i in range(len(self.histories[0]))
                                  for j, h in enumerate(self.histories)] if self.step > 0 else None)
        own_bar = self.bar is None and cfg.progress and self.reducer.is_main
        bar = _progress(cfg, self.step, mm) if own_bar else self.bar
        tokens = cfg.batch_size * self.reducer.world_size
        self.sae.train()
        while self.step < cfg.steps:
            x, _, out, terms, ok = self.train_step()
            self._update_dead(out, ok, tokens)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(x, out, terms)
                if bar is not None:
                    last = [h[-1] for h in self.histories]
                    l0 = [r["l0"] for r in last]
                    bar.set_postfix(loss=f"{last[0]['total']:.4g}" if mm == 1 else f"{mm} members",
                                    L0=f"{min(l0):.1f}" if mm == 1 else f"{min(l0):.1f}-{max(l0):.1f}",
                                    dead=f"{max(r['dead_pct'] for r in last):.1f}%")
            if self.files is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if bar is not None:
                bar.update(mm)
        if own_bar and bar is not None:
            bar.close()
        return TrainResult(
            histories=self.histories,
            finals=[final_metrics(h, cfg.final_avg_logs) for h in self.histories],
            skipped=[int(s) for s in self.skipped],
            steps=self.step,
            seconds=time.perf_counter() - t0,
            extra={"final_window": self.final_window()},
        )

    def final_window(self) -> list[dict[str, Any]]:
        """Per member, the dead-latent window training ended in (the last, possibly partial, window): its steps and
        tokens, and the rows each latent fired on over it (``firing_counts``, None where unknown, e.g. after a resume
        from a checkpoint that kept no counts)."""
        mm, m = self.sae.n_members, self.sae.d_sae
        counts = self.dead.window_counts()
        rows = counts.reshape(mm, m).cpu() if counts is not None else None
        return [{"steps": int(self.dead.steps_in_window), "tokens": int(self.dead.tokens_in_window),
                 "firing_counts": rows[j] if rows is not None else None} for j in range(mm)]


def _progress(cfg: TrainConfig, start: int, members: int) -> Any:
    from tqdm.auto import tqdm

    unit = "step" if members == 1 else "member-step"
    return tqdm(total=cfg.steps * members, initial=start * members, desc="train", unit=unit, unit_scale=members > 1,
                dynamic_ncols=True, leave=False)


def final_metrics(history: list[dict[str, float]], n_last: int = 10) -> dict[str, float]:
    """Mean of each metric over the last ``n_last`` logged points (the paper's figures average the last 10).

    The averaged ``dead_pct`` mixes partial dead windows (the paper's figure convention). ``dead_pct_window`` is the
    dead % over the last *complete* window logged (a record with ``dead_window_fill == 1``); NaN if none was logged.
    With a token window (``TrainConfig.dead_window_tokens``), ``dead_pct_tokens_window`` is the same for it.
    """
    if not history:
        return {}
    last = history[-n_last:]
    keys = [k for k in last[-1] if k not in ("step", "dead_window_fill", "dead_tokens_fill")]
    out = {k: float(np.mean([r[k] for r in last if k in r])) for k in keys}
    out["step"] = float(last[-1]["step"])
    complete = [r for r in history if r.get("dead_window_fill", 0.0) >= 1.0]
    out["dead_pct_window"] = float(complete[-1]["dead_pct"]) if complete else float("nan")
    if any("dead_tokens_fill" in r for r in history):
        full = [r for r in history if r.get("dead_tokens_fill", 0.0) >= 1.0]
        out["dead_pct_tokens_window"] = float(full[-1]["dead_pct_tokens"]) if full else float("nan")
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
    if not isinstance(state, dict) or "sae" not in state or "sae_cfgs" not in state:
        raise ValueError(f"checkpoint {path} does not look like an aen_lib training checkpoint (version "
                         f"{CHECKPOINT_VERSION})")
    return state


def train(
    sae: SAE,
    data: DataSource,
    cfg: TrainConfig | None = None,
    *,
    resume_from: str | Path | None = None,
    reducer: Reducer = LOCAL,
    **overrides: Any,
) -> TrainResult:
    """Train ``sae`` (one SAE or a stack) on ``data`` in place and return histories and final metrics.

    ``overrides`` are TrainConfig fields (``train(sae, data, steps=100, progress=False)``). With ``resume_from``
    the run continues from that checkpoint and, on CPU, ends bit-identical to an uninterrupted run.
    """
    cfg = (cfg or TrainConfig()).replace(**overrides) if overrides else (cfg or TrainConfig())
    trainer = Trainer(sae, data, cfg, reducer=reducer)
    if resume_from is not None:
        trainer.resume(resume_from)
    return trainer.run()
