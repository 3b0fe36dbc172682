"""Classical sparse coding for a fixed dictionary (book: paper facts, theory, "Setup" and "KKT conditions").

The sparse coding map studied in the theory chapters is

    h*(y) = argmin_{h >= 0}  ½‖y − D h‖² + λ1 Σ_i w_i h_i + (λ2/2)‖h‖²,

a non-negative (weighted, i.e. adaptive) elastic net. λ2 = 0 gives the non-negative (adaptive) lasso.

Layout. The dictionary is passed as ``W_dec [m, n]`` whose *rows* are the atoms d_i ∈ R^n, exactly the layout
of the SAE decoder, so the column-form product D h of the paper is ``h @ W_dec`` in row form and Dᵀy is
``y @ W_dec.T``. Inputs ``y`` are ``[B, n]`` (one regression per row; a 1-D ``[n]`` input returns 1-D codes),
codes are ``[B, m]``. In an SAE, ``y = x − b_dec`` (the decoder bias is subtracted first), so that
``x − x̂ = y − D h``.

Solver. FISTA (Beck & Teboulle 2009) on the smooth part ½‖y − Dh‖² + (λ2/2)‖h‖² with the exact proximal map of
λ1 Σ w_i h_i + ι{h ≥ 0}, namely ``relu(z − λ1 w / L)``, plus the gradient-based adaptive restart of
O'Donoghue & Candès (2015). Each sample stops on its own when its *scaled KKT residual* (see
:func:`kkt_residual`) drops below ``tol``; converged samples are frozen, so a batched solve returns the same
codes as solving each sample alone. Everything is pure torch: device from the inputs, dtype from the inputs or
the ``dtype`` argument (use ``torch.float64`` for tolerances below about 1e-6).

Scalings (book: paper facts, model and loss "rescalings"). The SAE training loss for one token, with the code h treated as free,
is

    L_sae(h) = (1/n)‖y − D h‖² + λ1_sae Σ_i w_i h_i + λ2_sae ‖h‖²        (MSE is a mean over the n dimensions,
                                                                             no ½ on the ℓ2 term)
             = (2/n) · [ ½‖y − D h‖² + (n λ1_sae / 2) Σ_i w_i h_i + (n λ2_sae / 2) ‖h‖² ]
             = (2/n) · J(h)   with   λ1 = n λ1_sae / 2,   λ2 = n λ2_sae,

where J is the theory objective above (its ℓ2 term is (λ2/2)‖h‖² = (n λ2_sae / 2)‖h‖²). A positive factor does
not move the minimiser, so the SAE's optimal codes are h*(y) with these λ's: see
:func:`sae_to_theory_penalties` and :func:`theory_to_sae_penalties`. (A shorthand "divided by n, times 2 for λ2"
puts the factor 2 on the wrong penalty: it is λ1_sae = 2 λ1 / n and λ2_sae = λ2 / n.) The batch mean over
tokens used in training does not change the per-token minimiser either.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SolverInfo",
    "weighted_elastic_net",
    "nonneg_elastic_net",
    "nonneg_lasso",
    "kkt_residual",
    "closed_form_on_support",
    "coding_objective",
    "sae_coding_objective",
    "sae_to_theory_penalties",
    "theory_to_sae_penalties",
]

logger = logging.getLogger(__name__)


@dataclass
class SolverInfo:
    """Diagnostics returned by the FISTA solvers (one entry per sample of the batch)."""

    iterations: Tensor
    """[B] int64: FISTA steps taken by each sample before it stopped."""
    converged: Tensor
    """[B] bool: whether the scaled KKT residual reached ``tol`` within ``max_iter`` steps."""
    residual: Tensor
    """[B]: scaled KKT residual of the returned codes (:func:`kkt_residual` with ``scaled=True``)."""
    lipschitz: float
    """Step-size constant L = ‖D‖₂² + λ2 used by FISTA."""


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _check_penalty(name: str, value: float) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value.item())
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_finite(name: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite entries; all entries must be finite")


def _prepare(
    W_dec: Tensor,
    y: Tensor,
    l1: float,
    l2: float,
    w: Tensor | None,
    dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor, float, float, Tensor, bool]:
    """Validate a coding problem; return (D [m,n], y [B,n], l1, l2, w [1 or B, m], was_1d) in one dtype."""
    if not isinstance(W_dec, Tensor):
        raise TypeError(f"W_dec must be a torch.Tensor [m, n], got {type(W_dec).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor [B, n] or [n], got {type(y).__name__}")
    if W_dec.dim() != 2:
        raise ValueError(f"W_dec must be 2-D [m, n] (rows = atoms), got shape {tuple(W_dec.shape)}")
    m, n = W_dec.shape
    was_1d = y.dim() == 1
    if was_1d:
        y = y.unsqueeze(0)
    if y.dim() != 2:
        raise ValueError(f"y must be [B, n] or [n], got shape {tuple(y.shape)}")
    if y.shape[1] != n:
        raise ValueError(f"y has {y.shape[1]} features but W_dec rows have n={n}; y must be [B, {n}]")
    if y.device != W_dec.device:
        raise ValueError(f"y is on {y.device} but W_dec is on {W_dec.device}; put them on one device")
    l1 = _check_penalty("l1", l1)
    l2 = _check_penalty("l2", l2)
    if dtype is None:
        dtype = torch.promote_types(W_dec.dtype, y.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating type, got {dtype}")
    D = W_dec.to(dtype)
    y = y.to(dtype)
    _check_finite("W_dec", D)
    _check_finite("y", y)
    B = y.shape[0]
    if w is None:
        w_t = torch.ones(1, m, dtype=dtype, device=D.device)
    else:
        if not isinstance(w, Tensor):
            raise TypeError(f"w must be a torch.Tensor [m] or [B, m], got {type(w).__name__}")
        if w.device != D.device:
            raise ValueError(f"w is on {w.device} but W_dec is on {D.device}; put them on one device")
        if w.dim() == 1 and w.shape[0] == m:
            w_t = w.to(dtype).unsqueeze(0)
        elif w.dim() == 2 and w.shape == (B, m):
            w_t = w.to(dtype)
        else:
            raise ValueError(f"w must have shape [m]=[{m}] or [B, m]=[{B}, {m}], got {tuple(w.shape)}")
        _check_finite("w", w_t)
        if (w_t < 0).any():
            raise ValueError(f"w must be >= 0 everywhere, got min {w_t.min().item()}")
    return D, y, l1, l2, w_t, was_1d


# ----------------------------------------------------------------------------------------------------------
# KKT residual
# ----------------------------------------------------------------------------------------------------------


def _kkt_from_corr(c: Tensor, h: Tensor, pen: Tensor, l2: float) -> Tensor:
    """Max KKT violation per sample from c = Dᵀ(y − Dh) [B,m], h [B,m], pen = λ1 w [1 or B, m]."""
    active = h > 0
    act = (c - pen - l2 * h).abs()
    inact = torch.relu(c - pen)
    viol = torch.where(active, act, inact)
    viol = torch.maximum(viol, torch.relu(-h))
    return viol.amax(dim=1)


def _kkt_scale(Dty: Tensor, pen: Tensor) -> Tensor:
    """Per-sample scale max(‖Dᵀy‖∞, λ1 max_i w_i), floored at the dtype's tiny value. [B]"""
    s = torch.maximum(Dty.abs().amax(dim=1), pen.amax(dim=1).expand(Dty.shape[0]))
    return s.clamp_min(torch.finfo(Dty.dtype).tiny)


def kkt_residual(
    D: Tensor,
    y: Tensor,
    h: Tensor,
    l1: float,
    l2: float,
    w: Tensor | None = None,
    *,
    scaled: bool = False,
) -> Tensor:
    """Largest violation of the KKT conditions of the non-negative weighted elastic net (book: paper facts, theory "KKT").

    With residual r = y − D h and correlations c_i = d_iᵀ r, the conditions for h to minimise
    ½‖y − Dh‖² + λ1 Σ w_i h_i + (λ2/2)‖h‖² over h ≥ 0 are

    * active (h_i > 0):   c_i = λ1 w_i + λ2 h_i,
    * inactive (h_j = 0): c_j ≤ λ1 w_j,
    * feasibility:        h ≥ 0.

    Returns, per sample, ``max_i`` of |c_i − λ1 w_i − λ2 h_i| (active i), max(c_j − λ1 w_j, 0) (inactive j)
    and max(−h_i, 0). With ``scaled=True`` it is divided by max(‖Dᵀy‖∞, λ1 max_i w_i) (the size of the
    correlations at h = 0), which is the stopping quantity of the FISTA solvers.

    Args:
        D: dictionary ``W_dec [m, n]``, rows = atoms.
        y: targets ``[B, n]`` or ``[n]``.
        h: codes ``[B, m]`` or ``[m]`` (same batching as ``y``).
        l1, l2: λ1, λ2 ≥ 0 in the theory scaling.
        w: optional weights ``[m]`` or ``[B, m]`` (default all ones).

    Returns:
        ``[B]`` residuals (a 0-dim tensor for 1-D ``y``), in the promoted dtype of the inputs.
    """
    Dm, yb, l1, l2, w_t, was_1d = _prepare(D, y, l1, l2, w, None)
    if not isinstance(h, Tensor):
        raise TypeError(f"h must be a torch.Tensor [B, m], got {type(h).__name__}")
    hb = h.unsqueeze(0) if was_1d else h
    if hb.shape != (yb.shape[0], Dm.shape[0]):
        raise ValueError(f"h must have shape [B, m]=[{yb.shape[0]}, {Dm.shape[0]}] to match y, got {tuple(h.shape)}")
    hb = hb.to(Dm.dtype)
    _check_finite("h", hb)
    pen = l1 * w_t
    c = (yb - hb @ Dm) @ Dm.T
    res = _kkt_from_corr(c, hb, pen, l2)
    if scaled:
        res = res / _kkt_scale(yb @ Dm.T, pen)
    return res[0] if was_1d else res


# ----------------------------------------------------------------------------------------------------------
# FISTA
# ----------------------------------------------------------------------------------------------------------


def weighted_elastic_net(
    W_dec: Tensor,
    y: Tensor,
    l1: float,
    l2: float = 0.0,
    w: Tensor | None = None,
    *,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    dtype: torch.dtype | None = None,
    h0: Tensor | None = None,
) -> tuple[Tensor, SolverInfo]:
    """Solve the non-negative weighted (adaptive) elastic net for a fixed dictionary (book: paper facts, theory, sparse coding map).

    h*(y) = argmin_{h ≥ 0} ½‖y − D h‖² + λ1 Σ_i w_i h_i + (λ2/2)‖h‖², batched over the rows of ``y``, by FISTA
    with adaptive restart. Each sample stops when its scaled KKT residual (:func:`kkt_residual`, ``scaled=True``)
    is ≤ ``tol``.

    Args:
        W_dec: dictionary ``[m, n]``, rows = atoms (SAE decoder layout). Atoms need not be unit norm.
        y: targets ``[B, n]`` or ``[n]`` (for an SAE: x − b_dec).
        l1: λ1 ≥ 0 (theory scaling; convert SAE values with :func:`sae_to_theory_penalties`).
        l2: λ2 ≥ 0 (theory scaling).
        w: optional non-negative weights ``[m]`` or ``[B, m]``; default all ones.
        tol: stopping threshold on the scaled KKT residual.
        max_iter: maximum number of FISTA steps.
        dtype: compute dtype (default: promoted dtype of ``W_dec`` and ``y``); codes are returned in it.
        h0: optional warm start ``[B, m]`` (negative entries are clipped to 0).

    Returns:
        ``(h, info)`` with codes ``h [B, m]`` (``[m]`` for 1-D ``y``) and a :class:`SolverInfo`.
    """
    D, yb, l1, l2, w_t, was_1d = _prepare(W_dec, y, l1, l2, w, dtype)
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    B, m = yb.shape[0], D.shape[0]
    dev, dt = D.device, D.dtype

    L = float(torch.linalg.matrix_norm(D, ord=2).item()) ** 2 + l2 if D.numel() > 0 else l2
    L = max(L, torch.finfo(dt).tiny)
    pen = l1 * w_t  # [1 or B, m]
    Dty = yb @ D.T  # [B, m]
    scale = _kkt_scale(Dty, pen)  # [B]

    if h0 is None:
        h = torch.zeros(B, m, dtype=dt, device=dev)
        c = Dty.clone()
    else:
        h0b = h0.unsqueeze(0) if (was_1d and h0.dim() == 1) else h0
        if h0b.shape != (B, m):
            raise ValueError(f"h0 must have shape [B, m]=[{B}, {m}], got {tuple(h0.shape)}")
        h = torch.relu(h0b.to(device=dev, dtype=dt))
        _check_finite("h0", h)
        c = (yb - h @ D) @ D.T
    h_prev, c_prev = h, c
    t = torch.ones(B, dtype=dt, device=dev)
    res = _kkt_from_corr(c, h, pen, l2) / scale
    done = res <= tol
    iters = torch.zeros(B, dtype=torch.long, device=dev)

    for k in range(1, max_iter + 1):
        if k % 10 == 1 and bool(done.all()):  # host sync only every 10 steps; finished samples are frozen anyway
            break
        t_next = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = ((t - 1.0) / t_next).unsqueeze(1)
        z = h + beta * (h - h_prev)
        cz = c + beta * (c - c_prev)  # Dᵀ(y − D z), by linearity
        h_new = torch.relu(z + (cz - l2 * z - pen) / L)  # prox step on the smooth part's gradient −c + λ2 h
        c_new = (yb - h_new @ D) @ D.T
        # Gradient-based restart: kill the momentum when it points uphill.
        restart = ((z - h_new) * (h_new - h)).sum(dim=1) > 0
        t_next = torch.where(restart, torch.ones_like(t_next), t_next)
        res_new = _kkt_from_corr(c_new, h_new, pen, l2) / scale
        run = ~done
        run2 = run.unsqueeze(1)
        h_prev = torch.where(run2, h, h_prev)
        c_prev = torch.where(run2, c, c_prev)
        h = torch.where(run2, h_new, h)
        c = torch.where(run2, c_new, c)
        t = torch.where(run, t_next, t)
        res = torch.where(run, res_new, res)
        iters = torch.where(run, torch.full_like(iters, k), iters)
        done = done | (res <= tol)

    if not bool(done.all()):
        logger.warning(
            "weighted_elastic_net: %d of %d samples did not reach tol=%g in max_iter=%d (worst residual %.3g)",
            int((~done).sum()), B, tol, max_iter, float(res.max()),
        )
    info = SolverInfo(iterations=iters, converged=done, residual=res, lipschitz=L)
    return (h[0] if was_1d else h), info


def nonneg_elastic_net(
    W_dec: Tensor, y: Tensor, l1: float, l2: float, **solver_kwargs
) -> tuple[Tensor, SolverInfo]:
    """Non-negative elastic net, w ≡ 1 (book: paper facts, theory with w = 1; the "Elastic Net" baseline's coding map).

    argmin_{h ≥ 0} ½‖y − D h‖² + λ1 Σ_i h_i + (λ2/2)‖h‖². Keyword options as in :func:`weighted_elastic_net`.
    """
    return weighted_elastic_net(W_dec, y, l1, l2, None, **solver_kwargs)


def nonneg_lasso(W_dec: Tensor, y: Tensor, l1: float, **solver_kwargs) -> tuple[Tensor, SolverInfo]:
    """Non-negative lasso, w ≡ 1 and λ2 = 0 (book: paper facts, theory; the "Vanilla L1" coding map).

    argmin_{h ≥ 0} ½‖y − D h‖² + λ1 Σ_i h_i. Keyword options as in :func:`weighted_elastic_net`.
    """
    return weighted_elastic_net(W_dec, y, l1, 0.0, None, **solver_kwargs)


# ----------------------------------------------------------------------------------------------------------
# closed form on a support
# ----------------------------------------------------------------------------------------------------------


def closed_form_on_support(
    D: Tensor,
    y: Tensor,
    support: Tensor,
    l1: float,
    l2: float = 0.0,
    w: Tensor | None = None,
) -> Tensor:
    """Affine piece of the coding map on active set A (book: paper facts, theory "Closed form on A").

    h_A = (G_AA + λ2 I)^{-1} (D_Aᵀ y − λ1 w_A), h_{Aᶜ} = 0, with G = DᵀD (``W_dec @ W_dec.T`` here).
    This solves the active-set KKT equations only: it equals h*(y) exactly when the result is ≥ 0 on A and the
    inactive inequalities hold (check with :func:`kkt_residual`).

    Args:
        D: dictionary ``W_dec [m, n]``, rows = atoms.
        y: targets ``[B, n]`` or ``[n]``.
        support: shared active set, either a bool mask ``[m]`` or an index tensor ``[k]``; or per-sample bool
            masks ``[B, m]``.
        l1, l2: λ1, λ2 ≥ 0 (theory scaling).
        w: optional weights ``[m]`` or ``[B, m]``.

    Returns:
        Codes ``[B, m]`` (``[m]`` for 1-D ``y``) in the promoted dtype.
    """
    Dm, yb, l1, l2, w_t, was_1d = _prepare(D, y, l1, l2, w, None)
    B, m = yb.shape[0], Dm.shape[0]
    if not isinstance(support, Tensor):
        raise TypeError(f"support must be a bool mask [m] / [B, m] or an index tensor [k], got {type(support).__name__}")
    support = support.to(Dm.device)
    if support.dtype == torch.bool:
        if support.dim() == 1:
            if support.shape[0] != m:
                raise ValueError(f"support mask must have length m={m}, got {support.shape[0]}")
            masks = support.unsqueeze(0).expand(B, m)
        elif support.dim() == 2 and support.shape == (B, m):
            masks = support
        else:
            raise ValueError(f"support mask must be [m]=[{m}] or [B, m]=[{B}, {m}], got {tuple(support.shape)}")
    elif not support.dtype.is_floating_point and support.dim() == 1:
        if support.numel() and (support.min() < 0 or support.max() >= m):
            raise ValueError(f"support indices must lie in [0, {m}), got range [{support.min()}, {support.max()}]")
        if support.unique().numel() != support.numel():
            raise ValueError("support indices must be distinct")
        mask = torch.zeros(m, dtype=torch.bool, device=Dm.device)
        mask[support] = True
        masks = mask.unsqueeze(0).expand(B, m)
    else:
        raise TypeError(f"support must be bool [m] / [B, m] or integer [k], got dtype {support.dtype} shape {tuple(support.shape)}")

    pen = (l1 * w_t).expand(B, m)
    Dty = yb @ Dm.T  # [B, m]
    h = torch.zeros(B, m, dtype=Dm.dtype, device=Dm.device)

    def _solve(idx: Tensor, rows: Tensor) -> None:
        if idx.numel() == 0:
            return
        DA = Dm[idx]  # [|A|, n]
        M = DA @ DA.T + l2 * torch.eye(idx.numel(), dtype=Dm.dtype, device=Dm.device)
        rhs = (Dty[rows][:, idx] - pen[rows][:, idx]).T  # [|A|, b]
        try:
            sol = torch.linalg.solve(M, rhs)
        except RuntimeError as err:  # singular G_AA + λ2 I
            raise ValueError(
                f"G_AA + l2*I is singular for |A|={idx.numel()} (n={Dm.shape[1]}, l2={l2}); "
                "use l2 > 0 or a support whose atoms are linearly independent"
            ) from err
        h[rows.unsqueeze(1), idx.unsqueeze(0)] = sol.T

    if support.dim() == 2 and support.dtype == torch.bool:
        for b in range(B):
            _solve(masks[b].nonzero().squeeze(1), torch.tensor([b], device=Dm.device))
    else:
        _solve(masks[0].nonzero().squeeze(1), torch.arange(B, device=Dm.device))
    return h[0] if was_1d else h


# ----------------------------------------------------------------------------------------------------------
# objectives and scaling conversions
# ----------------------------------------------------------------------------------------------------------


def coding_objective(
    D: Tensor, y: Tensor, h: Tensor, l1: float, l2: float, w: Tensor | None = None
) -> Tensor:
    """Theory objective J(h) = ½‖y − D h‖² + λ1 Σ_i w_i |h_i| + (λ2/2)‖h‖² per sample (book: paper facts, theory "Setup").

    For feasible h ≥ 0, |h_i| = h_i. Returns ``[B]`` (0-dim for 1-D ``y``).
    """
    Dm, yb, l1, l2, w_t, was_1d = _prepare(D, y, l1, l2, w, None)
    hb = (h.unsqueeze(0) if was_1d else h).to(Dm.dtype)
    if hb.shape != (yb.shape[0], Dm.shape[0]):
        raise ValueError(f"h must have shape [B, m]=[{yb.shape[0]}, {Dm.shape[0]}], got {tuple(h.shape)}")
    r = yb - hb @ Dm
    val = 0.5 * (r * r).sum(1) + l1 * (w_t * hb.abs()).sum(1) + 0.5 * l2 * (hb * hb).sum(1)
    return val[0] if was_1d else val


def sae_coding_objective(
    D: Tensor, y: Tensor, h: Tensor, l1_sae: float, l2_sae: float, w: Tensor | None = None
) -> Tensor:
    """Per-token SAE training objective with free codes (book: paper facts, model and loss): (1/n)‖y − D h‖² + λ1 Σ w_i|h_i| + λ2‖h‖².

    This is the summand of the SAE loss before the batch mean (MSE averaged over the n dimensions, no ½ on
    ℓ2). It equals (2/n)·:func:`coding_objective` with the penalties from :func:`sae_to_theory_penalties`.
    Returns ``[B]`` (0-dim for 1-D ``y``).
    """
    Dm, yb, l1_sae, l2_sae, w_t, was_1d = _prepare(D, y, l1_sae, l2_sae, w, None)
    hb = (h.unsqueeze(0) if was_1d else h).to(Dm.dtype)
    if hb.shape != (yb.shape[0], Dm.shape[0]):
        raise ValueError(f"h must have shape [B, m]=[{yb.shape[0]}, {Dm.shape[0]}], got {tuple(h.shape)}")
    r = yb - hb @ Dm
    n = Dm.shape[1]
    val = (r * r).sum(1) / n + l1_sae * (w_t * hb.abs()).sum(1) + l2_sae * (hb * hb).sum(1)
    return val[0] if was_1d else val


def _check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (input dimension) must be an int >= 1, got {n!r}")
    return n


def sae_to_theory_penalties(l1_sae: float, l2_sae: float, n: int) -> tuple[float, float]:
    """Map SAE-loss penalties (book: paper facts, model and loss) to the theory scaling of §3: λ1 = n·λ1_sae/2, λ2 = n·λ2_sae.

    Derivation: (1/n)‖r‖² + λ1_sae Σ w h + λ2_sae ‖h‖² = (2/n)[½‖r‖² + (nλ1_sae/2) Σ w h + (nλ2_sae/2)‖h‖²],
    and the theory writes the ℓ2 term as (λ2/2)‖h‖², so λ2 = nλ2_sae. Both objectives have the same minimiser.
    """
    n = _check_n(n)
    l1_sae = _check_penalty("l1_sae", l1_sae)
    l2_sae = _check_penalty("l2_sae", l2_sae)
    return n * l1_sae / 2.0, n * l2_sae


def theory_to_sae_penalties(l1: float, l2: float, n: int) -> tuple[float, float]:
    """Inverse of :func:`sae_to_theory_penalties`: λ1_sae = 2λ1/n, λ2_sae = λ2/n (book: paper facts, theory "rescalings")."""
    n = _check_n(n)
    l1 = _check_penalty("l1", l1)
    l2 = _check_penalty("l2", l2)
    return 2.0 * l1 / n, l2 / n
