"""Mechanism measures of a trained SAE: how stable its encoder is, how far its codes are from the best codes, and
what its adaptive weights ended up doing (book: chapter "What stops starvation").

* **Encoder Lipschitz constant.** The encoders here are piecewise linear: on the region of an input ``x`` with
  active set A (the latents with |h| > :data:`aen_lib.evaluation.metrics.DEAD_THRESHOLD`), ``h_A = W_encᵀ[A] (x − b_dec) + b_A``
  and ``h_{Aᶜ} = 0``, so the Jacobian ``dh/dx`` is ``W_enc[:, A]ᵀ`` and its operator norm is the largest singular
  value of those columns. :func:`jacobian_norms` returns it per sample (exact almost everywhere: it is the
  autograd Jacobian's norm, which a test checks); the set's measure is its maximum and 99th percentile over fresh
  samples. Chapter 3's bound ``1/λ2`` is for the *exact* elastic-net coding map in theory units; this is the
  amortised encoder's, in the SAE's own units.
* **Amortisation gap.** The encoder is trained to approximate the code that minimises the per-token SAE objective
  with the decoder fixed (:func:`aen_lib.theory.sparse_coding.sae_coding_objective`). For the ℓ1 family (ReLU-ℓ1, elastic
  net, adaptive lasso, AEN) that minimiser is a non-negative weighted elastic net, solved exactly by
  :func:`aen_lib.theory.sparse_coding.weighted_elastic_net` with the member's final weights; the gap is the objective at
  the encoder's code minus the objective at the exact code (≥ 0 up to the solver's tolerance), reported relative to
  the latter. The exact codes also say which latents the *decoder's geometry* would use on these samples
  (``exact_dead_pct``): a latent the exact code uses but the encoder never fires is starved by the encoder, not by
  the objective. For TopK the exact k-sparse code is a combinatorial problem, so the reference is the least-squares
  refit on the encoder's own support (signs free; :func:`aen_lib.theory.sparse_coding.closed_form_on_support`): a lower
  bound on the objective of any code with that support, hence an upper bound on the gap to the best non-negative
  code there. ``gap_reference`` names which reference a number used.
* **Weights against firing.** For adaptive members, the final weights grouped by the latent's firing frequency on
  the samples, and their Spearman correlation: the adaptive rule is meant to give rarely firing latents large
  weights (heavier ℓ1), which is what would starve them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..evaluation.metrics import DEAD_THRESHOLD
from ..sae.architectures import architecture_names, architecture_spec
from .sparse_coding import closed_form_on_support, sae_coding_objective, sae_to_theory_penalties, weighted_elastic_net

__all__ = ["jacobian_norms", "amortisation_gap", "weights_vs_firing", "mechanism_measures", "MECHANISM_SAMPLES"]

MECHANISM_SAMPLES = 2048
"""Fresh samples per SAE for the mechanism measures (the exact codes cost a FISTA solve per sample)."""
PIECEWISE_LINEAR_FIELDS = ("l1", "k", "l0")
"""An architecture whose spec reads one of these config fields has a piecewise-linear encoder: ReLU codes under an ℓ1
penalty, TopK-style codes of a fixed k, JumpReLU codes under an ℓ0 penalty. Which measure handles an architecture is
read from its :class:`aen_lib.sae.architectures.ArchitectureSpec` (``uses``), so one registered later is handled by
what it declares: ``l1`` (the ℓ1 family) has an exact reference code, ``k`` a support refit."""


def _uses(architecture: str, *fields: str) -> bool:
    return any(f in architecture_spec(architecture).uses for f in fields)


def _names(*fields: str) -> str:
    return ", ".join(a for a in architecture_names() if _uses(a, *fields))


def _single(sae: Any) -> None:
    if getattr(sae, "stacked", False):
        raise ValueError("pass one SAE (sae.member(j)), not a stack")


def _check_x(x: Tensor, n: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != n:
        raise ValueError(f"x must be samples [B, d_in={n}], got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


@torch.no_grad()
def jacobian_norms(sae: Any, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Operator norm of the encoder's Jacobian ``dh/dx`` at each row of ``x [B, n]`` -> ``[B]`` (float64).

    Exact for piecewise-linear encoders (ReLU, TopK, JumpReLU codes): the largest singular value of the active
    latents' encoder columns; 0 where no latent fires."""
    _single(sae)
    arch = sae.cfg.architecture
    if not _uses(arch, *PIECEWISE_LINEAR_FIELDS):
        raise ValueError(f"jacobian_norms needs a piecewise-linear encoder ({_names(*PIECEWISE_LINEAR_FIELDS)}); "
                         f"got {arch!r}")
    _check_x(x, sae.d_in)
    Wt = sae.W_enc.detach().double().T  # [m, n]: row i is latent i's encoder direction
    out = []
    for chunk in x.split(batch_size):
        active = sae.encode(chunk.to(sae.W_enc.device, sae.W_enc.dtype)).abs() > DEAD_THRESHOLD  # [b, m]
        a_max = int(active.sum(1).max())
        if a_max == 0:
            out.append(torch.zeros(chunk.shape[0], dtype=torch.float64))
            continue
        keep, idx = active.double().topk(a_max, dim=1)  # the active latents first, zero-padded
        rows = Wt[idx] * keep.unsqueeze(-1)  # [b, a_max, n]
        out.append(torch.linalg.svdvals(rows)[:, 0].cpu())
    return torch.cat(out)


def _final_weights(sae: Any) -> Tensor:
    """The ℓ1 weights the member's loss uses at its current step ([m]; ones for fixed-weight members)."""
    run = sae.architecture
    return run.weights()[0].detach() if hasattr(run, "weights") else torch.ones(sae.d_sae)


@torch.no_grad()
def amortisation_gap(sae: Any, x: Tensor, *, tol: float = 1e-7, max_iter: int = 20_000) -> dict[str, Any]:
    """The encoder's codes against the best codes of the same per-token objective, decoder fixed (module docstring).

    Returns ``gap_reference`` ("exact" or "support_refit"), ``gap_rel_mean`` and ``gap_rel_median`` (objective gap
    over the reference objective), ``gap_abs_mean``, ``objective_encoder`` and ``objective_reference`` (means), and
    for the exact reference also ``exact_l0``, ``exact_dead_pct`` (latents no exact code uses on ``x``),
    ``encoder_dead_exact_used_pct`` (latents the encoder never fires but the exact codes use) and
    ``solver_unconverged`` (samples whose solve stopped at ``max_iter``)."""
    _single(sae)
    cfg = sae.cfg
    _check_x(x, sae.d_in)
    dev = sae.W_enc.device
    x = x.to(dev, sae.W_enc.dtype)
    D = sae.W_dec.detach().double()
    y = (x - sae.b_dec.detach()).double()
    h_enc = sae.encode(x).double()
    n = sae.d_in
    out: dict[str, Any] = {}
    if _uses(cfg.architecture, "l1"):
        w = _final_weights(sae).double().to(dev)
        l1_t, l2_t = sae_to_theory_penalties(cfg.l1, cfg.l2, n)
        h_ref, info = weighted_elastic_net(D, y, l1_t, l2_t, w, tol=tol, max_iter=max_iter, dtype=torch.float64,
                                           h0=h_enc)
        obj_enc = sae_coding_objective(D, y, h_enc, cfg.l1, cfg.l2, w)
        obj_ref = sae_coding_objective(D, y, h_ref, cfg.l1, cfg.l2, w)
        used_exact = (h_ref.abs() > DEAD_THRESHOLD).any(0)
        fired_enc = (h_enc.abs() > DEAD_THRESHOLD).any(0)
        out.update(gap_reference="exact",
                   exact_l0=float((h_ref.abs() > DEAD_THRESHOLD).sum(1).double().mean()),
                   exact_dead_pct=100.0 * float((~used_exact).double().mean()),
                   encoder_dead_exact_used_pct=100.0 * float((~fired_enc & used_exact).double().mean()),
                   solver_unconverged=int((~info.converged).sum()))
    elif _uses(cfg.architecture, "k"):
        support = h_enc.abs() > DEAD_THRESHOLD
        h_ref = closed_form_on_support(D, y, support, 0.0, 0.0)
        obj_enc = sae_coding_objective(D, y, h_enc, 0.0, 0.0)
        obj_ref = sae_coding_objective(D, y, h_ref, 0.0, 0.0)
        out["gap_reference"] = "support_refit"
    else:
        raise ValueError(f"no amortisation-gap reference for architecture {cfg.architecture!r}; "
                         f"supported: {_names('l1', 'k')}")
    gap = obj_enc - obj_ref
    rel = gap / obj_ref.clamp_min(torch.finfo(torch.float64).tiny)
    out.update(gap_rel_mean=float(rel.mean()), gap_rel_median=float(rel.median()), gap_abs_mean=float(gap.mean()),
               objective_encoder=float(obj_enc.mean()), objective_reference=float(obj_ref.mean()))
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a constant has no rank order
    return float(spearmanr(a, b).statistic)


@torch.no_grad()
def weights_vs_firing(sae: Any, x: Tensor, *, bins: int = 10) -> dict[str, Any] | None:
    """For an adaptive member: Spearman ρ between its final weights and firing frequencies on ``x``, and the mean
    weight per firing-frequency group (never firing; then ``bins`` quantile groups of the firing latents). None for
    a member with fixed weights."""
    _single(sae)
    if not _uses(sae.cfg.architecture, "gamma"):  # the adaptive members: their weights have an exponent γ
        return None
    _check_x(x, sae.d_in)
    h = sae.encode(x.to(sae.W_enc.device, sae.W_enc.dtype))
    freq = (h.abs() > DEAD_THRESHOLD).double().mean(0).cpu().numpy()
    w = _final_weights(sae).double().cpu().numpy()
    groups = [{"firing": "never", "latents": int((freq == 0).sum()),
               "w_mean": float(w[freq == 0].mean()) if (freq == 0).any() else None}]
    live = np.flatnonzero(freq > 0)
    if live.size:
        order = live[np.argsort(freq[live], kind="stable")]
        for part in np.array_split(order, min(bins, order.size)):
            groups.append({"firing": [float(freq[part].min()), float(freq[part].max())], "latents": int(part.size),
                           "w_mean": float(w[part].mean())})
    return {"spearman_w_freq": _spearman(w, freq), "groups": groups}


def mechanism_measures(sae: Any, x: Tensor, **gap_kwargs: Any) -> dict[str, Any]:
    """Every measure of this module for one trained SAE on fresh samples ``x`` (JSON-ready floats)."""
    norms = jacobian_norms(sae, x).numpy()
    out: dict[str, Any] = {"samples": int(x.shape[0]), "lipschitz_max": float(norms.max()),
                           "lipschitz_p99": float(np.percentile(norms, 99)),
                           "lipschitz_median": float(np.median(norms))}
    out.update(amortisation_gap(sae, x, **gap_kwargs))
    wf = weights_vs_firing(sae, x)
    if wf is not None:
        out["weights_vs_firing"] = wf
    return _nan_to_none(out)


def _nan_to_none(obj: Any) -> Any:
    """``None`` for every NaN, nested dicts and lists included (an undefined measure, e.g. the rank correlation of
    weights that are all equal at step 0), so that the measures are strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj
