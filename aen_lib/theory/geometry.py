"""Geometry of the sparse-coding map: regions, Jacobians, Lipschitz constants, Hoffman constants, support recovery.

The object of study (book: paper facts, theory, "Setup") is the non-negative weighted elastic-net coding map of a fixed dictionary

    h*(y) = argmin_{h ≥ 0}  ½‖y − D h‖² + λ1 Σ_i w_i h_i + (λ2/2)‖h‖².

Its KKT conditions cut input space into polyhedral regions, one per active set A, and on each region the map is
affine with Jacobian J_A = (G_AA + λ2 I)^{-1} D_Aᵀ (G = DᵀD). Everything here computes a quantity of that picture
for chapters 2-5 of the book. The paper's exact theorem statements were not recovered (book: paper facts, theory): the Jacobian,
Lipschitz and Hoffman statements below are a standard reconstruction, tagged **[INF]** in the docstrings.

Layout: as in :mod:`aen_lib.theory.sparse_coding`, a dictionary is ``W_dec [m, n]`` whose *rows* are the atoms d_i, so
the paper's D h is ``h @ W_dec`` and Dᵀy is ``y @ W_dec.T``. Active sets are bool masks ``[m]`` or index tensors.
The solvers (FISTA) live in :mod:`aen_lib.theory.sparse_coding`; this module only calls them. Device and dtype follow
the dictionary; use ``torch.float64`` for the tight tolerances the Lipschitz estimates need.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sae.adaptive import raw_adaptive_weights, reference_scale
from ..sae.architectures import architecture_names, architecture_spec
from ..evaluation.metrics import support_metrics
from .sparse_coding import sae_coding_objective, sae_to_theory_penalties, weighted_elastic_net

__all__ = [
    "PENALTIES",
    "planar_dictionary",
    "active_mask",
    "region_jacobian",
    "region_jacobian_norm",
    "jacobian_profile",
    "elastic_net_lipschitz_bound",
    "crude_lipschitz_bound",
    "LipschitzEstimate",
    "local_lipschitz",
    "worst_case_direction",
    "exact_coding_map",
    "label_regions",
    "region_grid",
    "lambda_max",
    "solution_path",
    "HoffmanDiagnostics",
    "hoffman_matrix",
    "hoffman_diagnostics",
    "cross_leverage",
    "interaction_leakage",
    "nonneg_irrepresentable",
    "pilot_weights",
    "penalty_setup",
    "support_recovery_curves",
    "oracle_bias",
    "grouping_bound",
    "AmortisationGap",
    "amortisation_gap",
]

PENALTIES: tuple[str, ...] = ("lasso", "elastic_net", "adaptive_lasso", "adaptive_elastic_net")
"""The four penalties of chapter 4 (book: paper facts, claims: vanilla ℓ1, elastic net, adaptive lasso, adaptive elastic net)."""


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _check_dict(W_dec: Tensor) -> tuple[int, int]:
    if not isinstance(W_dec, Tensor):
        raise TypeError(f"W_dec must be a torch.Tensor [m, n] (rows = atoms), got {type(W_dec).__name__}")
    if W_dec.dim() != 2:
        raise ValueError(f"W_dec must be 2-D [m, n] (rows = atoms), got shape {tuple(W_dec.shape)}")
    if not W_dec.dtype.is_floating_point:
        raise TypeError(f"W_dec must have a floating dtype, got {W_dec.dtype}")
    return W_dec.shape[0], W_dec.shape[1]


def _check_nonneg(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def active_mask(active: Tensor | Sequence[int], m: int, device: torch.device | None = None) -> Tensor:
    """An active set as a bool mask ``[m]``, from a bool mask ``[m]`` or a sequence/tensor of distinct indices."""
    if isinstance(active, Tensor) and active.dtype == torch.bool:
        if active.shape != (m,):
            raise ValueError(f"active mask must have shape [m]=[{m}], got {tuple(active.shape)}")
        return active.to(device) if device is not None else active
    idx = torch.as_tensor(list(active) if not isinstance(active, Tensor) else active, dtype=torch.long)
    if idx.dim() != 1:
        raise ValueError(f"active indices must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= m):
        raise ValueError(f"active indices must lie in [0, {m}), got {idx.tolist()}")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"active indices must be distinct, got {idx.tolist()}")
    mask = torch.zeros(m, dtype=torch.bool, device=device)
    mask[idx.to(mask.device)] = True
    return mask


def planar_dictionary(
    angles_deg: Sequence[float], *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """Unit atoms in the plane at the given angles (degrees): ``W_dec [m, 2]`` with rows (cos θ_i, sin θ_i).

    The 2-D dictionaries of chapter 2, where the polyhedral partition of book: paper facts, theory can be drawn.
    """
    if len(angles_deg) == 0:
        raise ValueError("angles_deg must hold at least one angle")
    th = torch.tensor([math.radians(float(a)) for a in angles_deg], dtype=dtype, device=device)
    return torch.stack([th.cos(), th.sin()], dim=1)


# ----------------------------------------------------------------------------------------------------------
# Jacobians and Lipschitz bounds
# ----------------------------------------------------------------------------------------------------------


def region_jacobian(W_dec: Tensor, active: Tensor | Sequence[int], l2: float) -> Tensor:
    """Jacobian of the coding map on the region of active set A: J_A = (G_AA + λ2 I)^{-1} D_Aᵀ (book: paper facts, theory).

    Differentiating the closed form h_A = (G_AA + λ2 I)^{-1}(D_Aᵀ y − λ1 w_A) in y gives J_A; the inactive rows
    of the full Jacobian are zero. Returns ``[|A|, n]`` (rows in increasing atom order). With λ2 = 0 and
    linearly dependent active atoms the matrix is singular and a ``ValueError`` is raised.
    """
    m, n = _check_dict(W_dec)
    l2 = _check_nonneg("l2", l2)
    mask = active_mask(active, m, W_dec.device)
    DA = W_dec[mask]  # [|A|, n]
    k = DA.shape[0]
    if k == 0:
        return W_dec.new_zeros(0, n)
    M = DA @ DA.T + l2 * torch.eye(k, dtype=W_dec.dtype, device=W_dec.device)
    if l2 == 0 and torch.linalg.matrix_rank(M) < k:
        raise ValueError(f"G_AA is singular for |A|={k} with l2=0: the active atoms are linearly dependent")
    return torch.linalg.solve(M, DA)


def jacobian_profile(s: Tensor, l2: float) -> Tensor:
    """The scalar map s ↦ s/(s² + λ2) that turns a singular value of D_A into one of J_A (book: paper facts, theory).

    With the SVD D_Aᵀ = U S Vᵀ, J_A = V diag(s/(s² + λ2)) Uᵀ. For λ2 > 0 the map peaks at s = √λ2 with value
    1/(2√λ2) (AM-GM: s² + λ2 ≥ 2s√λ2). For λ2 = 0 it is 1/s, unbounded as s → 0. Entries with s = 0 give 0
    when λ2 > 0 and +inf when λ2 = 0.
    """
    l2 = _check_nonneg("l2", l2)
    if l2 == 0:
        return torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(s, math.inf))
    return s / (s * s + l2)


def region_jacobian_norm(W_dec: Tensor, active: Tensor | Sequence[int], l2: float) -> float:
    """‖J_A‖₂ = max over singular values s of D_A of s/(s² + λ2) (book: paper facts, theory) [INF].

    For λ2 = 0 this is 1/σ_min(D_A) (``inf`` if the active atoms are linearly dependent), the lasso's
    piece-wise Lipschitz constant that blows up with coherence.
    """
    m, _ = _check_dict(W_dec)
    l2 = _check_nonneg("l2", l2)
    mask = active_mask(active, m, W_dec.device)
    DA = W_dec[mask]
    k = DA.shape[0]
    if k == 0:
        return 0.0
    s = torch.linalg.svdvals(DA)  # min(k, n) values
    if l2 == 0:
        if k > s.numel() or float(s.min()) <= torch.finfo(s.dtype).eps * max(1.0, float(s.max())) * max(DA.shape):
            return math.inf
        return float(1.0 / s.min())
    return float(jacobian_profile(s, l2).max())


def elastic_net_lipschitz_bound(l2: float) -> float:
    """Coherence-free Lipschitz bound of the elastic-net coding map: 1/(2√λ2) (book: paper facts, theory) [INF].

    ‖J_A‖₂ = max_s s/(s² + λ2) ≤ 1/(2√λ2) for every A, and a continuous piecewise-affine map is Lipschitz with
    the largest Jacobian norm of its pieces. ``inf`` for λ2 = 0 (the lasso has no such bound).
    """
    l2 = _check_nonneg("l2", l2)
    return math.inf if l2 == 0 else 1.0 / (2.0 * math.sqrt(l2))


def crude_lipschitz_bound(W_dec: Tensor, l2: float) -> float:
    """The cruder standard bound ‖D‖₂/λ2 (book: paper facts, theory): from λ2-strong convexity, ‖Δh‖ ≤ ‖DᵀΔy‖/λ2."""
    _check_dict(W_dec)
    l2 = _check_nonneg("l2", l2)
    if l2 == 0:
        return math.inf
    return float(torch.linalg.matrix_norm(W_dec, ord=2)) / l2


@dataclass
class LipschitzEstimate:
    """Result of :func:`local_lipschitz`: ‖h*(y+Δ) − h*(y)‖/‖Δ‖ for each base point and direction."""

    ratios: Tensor
    """[B, K] ratio for base point b and perturbation k."""
    estimate: Tensor
    """[B] the largest ratio per base point (a lower bound on the local Lipschitz constant)."""
    solver_residual: float
    """Largest scaled KKT residual of all solves (to check the solver error is far below the perturbation)."""


def local_lipschitz(
    solve: Callable[[Tensor], Tensor],
    y: Tensor,
    *,
    radius: float = 1e-3,
    n_dirs: int = 32,
    directions: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LipschitzEstimate:
    """Empirical local Lipschitz constant of a coding map: max_k ‖h*(y + Δ_k) − h*(y)‖/‖Δ_k‖ (book: paper facts, theory).

    ``solve`` maps inputs ``[B, n]`` to codes ``[B, m]`` (e.g. a lambda around
    :func:`aen_lib.theory.sparse_coding.weighted_elastic_net`). All B·(K+1) inputs go through ``solve`` in one batch.

    Args:
        solve: the coding map, batched.
        y: base points ``[B, n]``.
        radius: ‖Δ‖ of every perturbation (absolute). It must be small enough to stay in one region for a local
            value, and large compared with the solver error (see ``solver_residual`` of the chapters' solves).
        n_dirs: number K of random directions (uniform on the sphere), used when ``directions`` is None.
        directions: optional explicit directions ``[K, n]`` or ``[B, K, n]`` (normalised here).
        generator: random generator for the directions.
    """
    if not isinstance(y, Tensor) or y.dim() != 2:
        raise ValueError(f"y must be a torch.Tensor [B, n], got {getattr(y, 'shape', type(y).__name__)}")
    radius = _check_nonneg("radius", radius, positive=True)
    B, n = y.shape
    if directions is None:
        if not isinstance(n_dirs, int) or isinstance(n_dirs, bool) or n_dirs < 1:
            raise ValueError(f"n_dirs must be an int >= 1, got {n_dirs!r}")
        gdev = generator.device if generator is not None else y.device  # draw on the generator's device
        u = torch.randn(B, n_dirs, n, generator=generator, dtype=y.dtype, device=gdev).to(y.device)
    else:
        u = directions.to(dtype=y.dtype, device=y.device)
        if u.dim() == 2:
            u = u.unsqueeze(0).expand(B, *u.shape)
        if u.dim() != 3 or u.shape[0] != B or u.shape[2] != n:
            raise ValueError(f"directions must be [K, n] or [B, K, n] with n={n}, B={B}; got {tuple(directions.shape)}")
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    K = u.shape[1]
    ys = torch.cat([y, (y.unsqueeze(1) + radius * u).reshape(B * K, n)], dim=0)
    out = solve(ys)
    h = out[0] if isinstance(out, tuple) else out
    residual = math.nan
    if isinstance(out, tuple) and hasattr(out[1], "residual"):
        residual = float(out[1].residual.max())
    h0, hp = h[:B], h[B:].reshape(B, K, -1)
    ratios = (hp - h0.unsqueeze(1)).norm(dim=-1) / radius
    return LipschitzEstimate(ratios=ratios, estimate=ratios.amax(dim=1), solver_residual=residual)


def worst_case_direction(W_dec: Tensor, active: Tensor | Sequence[int], l2: float) -> Tensor:
    """Unit input direction ``[n]`` that J_A stretches most (top right singular vector of J_A, book: paper facts, theory).

    A perturbation along it that stays inside region A changes the code by exactly ‖J_A‖₂ times its length.
    """
    J = region_jacobian(W_dec, active, l2)
    if J.shape[0] == 0:
        return torch.zeros(W_dec.shape[1], dtype=W_dec.dtype, device=W_dec.device)
    _, _, Vh = torch.linalg.svd(J, full_matrices=False)
    return Vh[0]


# ----------------------------------------------------------------------------------------------------------
# Exact coding map of a small dictionary by active-set enumeration (the polyhedral partition)
# ----------------------------------------------------------------------------------------------------------


def exact_coding_map(
    W_dec: Tensor,
    y: Tensor,
    l1: float,
    l2: float = 0.0,
    w: Tensor | None = None,
    *,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Solve the coding problem exactly for a *small* dictionary (m ≤ 12) by enumerating active sets (book: paper facts, theory).

    For each candidate A (smallest first) it forms the closed form h_A = (G_AA + λ2 I)^{-1}(D_Aᵀ y − λ1 w_A) and
    accepts it where the KKT conditions hold: h_A > 0 and d_jᵀ(y − D h) ≤ λ1 w_j for j ∉ A. The set of inputs
    accepting A is a polyhedron, the region of A. This is an independent check of the FISTA solver and what
    :func:`label_regions` colours. Sets with singular G_AA + λ2 I are skipped (with λ2 = 0 the lasso solution may
    then be non-unique; the smallest valid set is returned).

    Args:
        W_dec: ``[m, n]`` with m ≤ 12.
        y: ``[B, n]``.
        l1, l2: λ1 ≥ 0, λ2 ≥ 0 (theory scaling).
        w: optional weights ``[m]``.
        tol: slack in the KKT checks.

    Returns:
        ``(h [B, m], labels [B])``: the codes and the active set as a bit mask (bit i set ⇔ atom i active);
        −1 where no candidate passed (only possible through round-off on a region boundary).
    """
    m, n = _check_dict(W_dec)
    if m > 12:
        raise ValueError(f"exact_coding_map enumerates 2^m active sets; m must be <= 12, got m={m}")
    if not isinstance(y, Tensor) or y.dim() != 2 or y.shape[1] != n:
        raise ValueError(f"y must be a torch.Tensor [B, n={n}], got {getattr(y, 'shape', type(y).__name__)}")
    l1 = _check_nonneg("l1", l1)
    l2 = _check_nonneg("l2", l2)
    dt, dev = W_dec.dtype, W_dec.device
    y = y.to(dt)
    wv = torch.ones(m, dtype=dt, device=dev) if w is None else w.to(dtype=dt, device=dev)
    if wv.shape != (m,):
        raise ValueError(f"w must have shape [m]=[{m}], got {tuple(wv.shape)}")
    B = y.shape[0]
    G = W_dec @ W_dec.T
    c0 = y @ W_dec.T  # [B, m] = Dᵀy
    h = torch.zeros(B, m, dtype=dt, device=dev)
    labels = torch.full((B,), -1, dtype=torch.long, device=dev)
    scale = max(1.0, float(c0.abs().max()) if B else 1.0, l1 * float(wv.max()))
    for k in range(0, min(m, n if l2 == 0 else m) + 1):
        for A in itertools.combinations(range(m), k):
            todo = labels < 0
            if not bool(todo.any()):
                return h, labels
            idx = torch.tensor(A, dtype=torch.long, device=dev)
            hA = torch.zeros(B, m, dtype=dt, device=dev)
            if k > 0:
                M = G[idx][:, idx] + l2 * torch.eye(k, dtype=dt, device=dev)
                if torch.linalg.matrix_rank(M) < k:
                    continue
                sol = torch.linalg.solve(M, (c0[:, idx] - l1 * wv[idx]).T).T  # [B, k]
                hA[:, idx] = sol
                ok = (sol > tol * scale).all(dim=1)
            else:
                ok = torch.ones(B, dtype=torch.bool, device=dev)
            corr = (y - hA @ W_dec) @ W_dec.T  # [B, m]
            inactive = torch.ones(m, dtype=torch.bool, device=dev)
            inactive[idx] = False
            if bool(inactive.any()):
                ok = ok & (corr[:, inactive] - l1 * wv[inactive] <= tol * scale).all(dim=1)
            new = ok & todo
            h[new] = hA[new]
            labels[new] = sum(1 << i for i in A)
    return h, labels


def label_regions(
    W_dec: Tensor, y: Tensor, l1: float, l2: float = 0.0, w: Tensor | None = None
) -> Tensor:
    """Active-set label (bit mask, see :func:`exact_coding_map`) of each input ``y [B, n]``: the polyhedral
    partition of input space by the coding map (book: paper facts, theory), for drawing a grid of 2-D inputs."""
    return exact_coding_map(W_dec, y, l1, l2, w)[1]


def region_grid(
    W_dec: Tensor, l1: float, l2: float = 0.0, w: Tensor | None = None, *, extent: float = 3.0, n_grid: int = 201
) -> tuple[Tensor, Tensor, Tensor]:
    """Active-set labels on a square grid of 2-D inputs [−extent, extent]² (book: paper facts, theory polyhedral partition).

    Returns ``(xs [n_grid], ys [n_grid], labels [n_grid, n_grid])`` with ``labels[i, j]`` the bit mask of the
    active set at input (xs[j], ys[i]) (image layout, ready for ``imshow``/``pcolormesh``).
    """
    m, n = _check_dict(W_dec)
    if n != 2:
        raise ValueError(f"region_grid draws 2-D inputs only; W_dec must be [m, 2], got n={n}")
    if not isinstance(n_grid, int) or isinstance(n_grid, bool) or n_grid < 2:
        raise ValueError(f"n_grid must be an int >= 2, got {n_grid!r}")
    extent = _check_nonneg("extent", extent, positive=True)
    xs = torch.linspace(-extent, extent, n_grid, dtype=W_dec.dtype, device=W_dec.device)
    YY, XX = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([XX.reshape(-1), YY.reshape(-1)], dim=1)
    labels = label_regions(W_dec, pts, l1, l2, w).reshape(n_grid, n_grid)
    return xs, xs.clone(), labels


# ----------------------------------------------------------------------------------------------------------
# Solution paths over λ1
# ----------------------------------------------------------------------------------------------------------


def lambda_max(W_dec: Tensor, y: Tensor, w: Tensor | None = None) -> Tensor:
    """Smallest λ1 at which h*(y) = 0 for the non-negative (weighted) lasso/EN: max_i (d_iᵀ y)_+ / w_i. ``[B]``.

    From the inactive KKT inequality at h = 0: d_iᵀ y ≤ λ1 w_i for all i (book: paper facts, theory). Independent of λ2.
    """
    m, n = _check_dict(W_dec)
    yb = y.unsqueeze(0) if y.dim() == 1 else y
    c = yb.to(W_dec.dtype) @ W_dec.T
    if w is not None:
        c = c / w.to(c.dtype)
    out = c.clamp_min(0).amax(dim=1)
    return out[0] if y.dim() == 1 else out


def solution_path(
    W_dec: Tensor,
    y: Tensor,
    l1_grid: Sequence[float] | Tensor,
    l2: float = 0.0,
    w: Tensor | None = None,
    **solver_kwargs,
) -> Tensor:
    """Codes h*(y; λ1) for every λ1 of a grid, one FISTA batch (book: paper facts, theory, the regularisation path).

    The per-λ problems are batched by folding λ1 into per-sample weights (λ1 w_i = 1 · (λ1 w_i)), so one call of
    :func:`aen_lib.theory.sparse_coding.weighted_elastic_net` solves the whole path.

    Args:
        W_dec: ``[m, n]``.
        y: one input ``[n]``.
        l1_grid: ``L`` values of λ1 ≥ 0.
        l2: λ2 ≥ 0.
        w: optional weights ``[m]``.
        **solver_kwargs: passed to the solver (``tol``, ``max_iter``, ``dtype``).

    Returns:
        ``[L, m]`` codes, row l for λ1 = l1_grid[l].
    """
    m, n = _check_dict(W_dec)
    if not isinstance(y, Tensor) or y.shape != (n,):
        raise ValueError(f"y must be a torch.Tensor [n={n}], got {getattr(y, 'shape', type(y).__name__)}")
    lam = torch.as_tensor(l1_grid, dtype=W_dec.dtype, device=W_dec.device).reshape(-1)
    if lam.numel() == 0 or bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
        raise ValueError(f"l1_grid must hold finite values >= 0, got {lam.tolist()}")
    wv = torch.ones(m, dtype=W_dec.dtype, device=W_dec.device) if w is None else w.to(W_dec)
    W = lam.unsqueeze(1) * wv.unsqueeze(0)  # [L, m]
    h, _ = weighted_elastic_net(W_dec, y.to(W_dec).expand(lam.numel(), n).contiguous(), 1.0, l2, W, **solver_kwargs)
    return h


# ----------------------------------------------------------------------------------------------------------
# Hoffman-type constant, cross-leverage, interaction leakage
# ----------------------------------------------------------------------------------------------------------


@dataclass
class HoffmanDiagnostics:
    """The local Hoffman-type constant of book: paper facts, theory and its block bounds, for one active set.

    With P = G_AA + λ2 I and W = diag(w_{Aᶜ}), M_A = [[P, 0], [G_{AᶜA}, λ1 W]] and
    M_A^{-1} = [[P^{-1}, 0], [−(λ1W)^{-1} G_{AᶜA} P^{-1}, (λ1W)^{-1}]].
    """

    H: float
    """H_A = ‖M_A^{-1}‖₂."""
    curvature: float
    """‖(G_AA + λ2 I)^{-1}‖₂ = 1/(λ_min(G_AA) + λ2) ≤ 1/λ2: the term λ2 caps."""
    inactive: float
    """max_j 1/(λ1 w_j) over j ∉ A: the term large adaptive weights shrink."""
    interaction: float
    """‖(λ1 W)^{-1} G_{AᶜA} (G_AA + λ2 I)^{-1}‖₂: how inactive atoms feel the active block."""
    lower: float
    """max of the three terms ≤ H_A (each block of M_A^{-1} is a submatrix)."""
    upper: float
    """√(sum of squares of the three terms) ≥ H_A (norm of a block matrix ≤ Frobenius norm of its block norms)."""
    leakage: float
    """Interaction leakage ‖D_{Aᶜ}ᵀ D_A‖_F."""
    mean_cross_leverage: float
    """Mean over inactive atoms of the cross-leverage (:func:`cross_leverage`)."""


def _split(W_dec: Tensor, active: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
    m, _ = _check_dict(W_dec)
    mask = active_mask(active, m, W_dec.device)
    return mask, ~mask


def hoffman_matrix(
    W_dec: Tensor, active: Tensor | Sequence[int], l1: float, l2: float, w: Tensor | None = None
) -> Tensor:
    """M_A = [[G_AA + λ2 I, 0], [G_{AᶜA}, λ1 diag(w_{Aᶜ})]] (book: paper facts, theory, local Hoffman constant) [INF].

    Rows/columns are ordered active atoms first, then inactive ones (each in increasing index order).
    Returns ``[m, m]``.
    """
    l1 = _check_nonneg("l1", l1)
    l2 = _check_nonneg("l2", l2)
    mask, inact = _split(W_dec, active)
    m = W_dec.shape[0]
    wv = torch.ones(m, dtype=W_dec.dtype, device=W_dec.device) if w is None else w.to(W_dec)
    if wv.shape != (m,):
        raise ValueError(f"w must have shape [m]=[{m}], got {tuple(wv.shape)}")
    G = W_dec @ W_dec.T
    a = int(mask.sum())
    M = torch.zeros(m, m, dtype=W_dec.dtype, device=W_dec.device)
    M[:a, :a] = G[mask][:, mask] + l2 * torch.eye(a, dtype=W_dec.dtype, device=W_dec.device)
    M[a:, :a] = G[inact][:, mask]
    M[a:, a:] = torch.diag(l1 * wv[inact])
    return M


def cross_leverage(W_dec: Tensor, active: Tensor | Sequence[int]) -> Tensor:
    """Cross-leverage of each inactive atom: ‖P_A d_j‖²/‖d_j‖², P_A the projector onto span{d_i : i ∈ A} (book: paper facts, theory).

    the paper writes h_j(A) = (1/n)‖P_A d_j‖² in the regression convention where columns have ‖d_j‖² = n; for the
    book's unit-norm atoms that is ‖P_A d_j‖²/‖d_j‖² ∈ [0, 1] [INF]: 0 for an atom orthogonal to the active
    subspace, 1 for an atom inside it ("shadowed"). Returns ``[|Aᶜ|]`` in increasing atom order.
    """
    mask, inact = _split(W_dec, active)
    DA, Dc = W_dec[mask], W_dec[inact]
    if DA.shape[0] == 0:
        return Dc.new_zeros(Dc.shape[0])
    Q, R = torch.linalg.qr(DA.T)  # columns of Q: orthonormal basis of span(D_A)  [n, |A|]
    # Keep only directions with a non-negligible R diagonal (rank-deficient D_A).
    diag = R.diagonal().abs()
    keep = diag > torch.finfo(W_dec.dtype).eps * max(1.0, float(diag.max())) * max(DA.shape)
    Q = Q[:, keep]
    proj = Dc @ Q  # [|Aᶜ|, r] coordinates of P_A d_j
    return proj.pow(2).sum(1) / Dc.pow(2).sum(1).clamp_min(torch.finfo(W_dec.dtype).tiny)


def interaction_leakage(W_dec: Tensor, active: Tensor | Sequence[int]) -> float:
    """Interaction leakage ‖D_{Aᶜ}ᵀ D_A‖_F: total correlation between inactive and active atoms (book: paper facts, theory)."""
    mask, inact = _split(W_dec, active)
    return float((W_dec[inact] @ W_dec[mask].T).norm())


def hoffman_diagnostics(
    W_dec: Tensor, active: Tensor | Sequence[int], l1: float, l2: float, w: Tensor | None = None
) -> HoffmanDiagnostics:
    """H_A = ‖M_A^{-1}‖₂ with its three block terms, block bounds, leakage and cross-leverage (book: paper facts, theory) [INF].

    Requires λ1 w_j > 0 on inactive atoms and G_AA + λ2 I invertible (otherwise H_A = inf, returned as such).
    """
    l1 = _check_nonneg("l1", l1)
    l2 = _check_nonneg("l2", l2)
    mask, inact = _split(W_dec, active)
    m = W_dec.shape[0]
    dt, dev = W_dec.dtype, W_dec.device
    wv = torch.ones(m, dtype=dt, device=dev) if w is None else w.to(W_dec)
    G = W_dec @ W_dec.T
    a = int(mask.sum())
    P = G[mask][:, mask] + l2 * torch.eye(a, dtype=dt, device=dev)
    pen = l1 * wv[inact]
    leak = interaction_leakage(W_dec, mask)
    lev = cross_leverage(W_dec, mask)
    mean_lev = float(lev.mean()) if lev.numel() else 0.0
    if (a and torch.linalg.matrix_rank(P) < a) or bool((pen <= 0).any()):
        inf = math.inf
        return HoffmanDiagnostics(inf, inf, inf, inf, inf, inf, leak, mean_lev)
    Pinv = torch.linalg.inv(P) if a else P
    curvature = float(torch.linalg.matrix_norm(Pinv, ord=2)) if a else 0.0
    inactive = float((1.0 / pen).max()) if pen.numel() else 0.0
    if a and pen.numel():
        interaction = float(torch.linalg.matrix_norm((G[inact][:, mask] / pen.unsqueeze(1)) @ Pinv, ord=2))
    else:
        interaction = 0.0
    H = float(torch.linalg.matrix_norm(torch.linalg.inv(hoffman_matrix(W_dec, mask, l1, l2, wv)), ord=2))
    terms = (curvature, inactive, interaction)
    return HoffmanDiagnostics(
        H=H,
        curvature=curvature,
        inactive=inactive,
        interaction=interaction,
        lower=max(terms),
        upper=math.sqrt(sum(t * t for t in terms)),
        leakage=leak,
        mean_cross_leverage=mean_lev,
    )


# ----------------------------------------------------------------------------------------------------------
# Support recovery with the four penalties (Zhao & Yu 2006; Zou 2006; Zou & Zhang 2009)
# ----------------------------------------------------------------------------------------------------------


def nonneg_irrepresentable(W_dec: Tensor, support: Tensor | Sequence[int], w: Tensor | None = None) -> float:
    """One-sided (weighted) irrepresentable value max_{j ∉ S} G_{jS} G_SS^{-1} w_S / w_j for non-negative codes.

    For the non-negative lasso the inactive KKT condition is one-sided (d_jᵀr ≤ λ1 w_j), so the Zhao-Yu condition
    becomes max_j (G_{SᶜS} G_SS^{-1} w_S)_j / w_j < 1 [INF, our non-negative, weighted form of book: paper facts, theory]. With
    w ≡ 1 it is at most the two-sided value ‖G_{SᶜS} G_SS^{-1} 1‖_∞ of :func:`aen_lib.data.synthetic.irrepresentable_condition`;
    large weights on inactive atoms (adaptive penalties) push it below 1.
    """
    m, _ = _check_dict(W_dec)
    S = active_mask(support, m, W_dec.device)
    wv = torch.ones(m, dtype=W_dec.dtype, device=W_dec.device) if w is None else w.to(W_dec)
    G = W_dec @ W_dec.T
    z = torch.linalg.solve(G[S][:, S], wv[S])
    v = G[~S][:, S] @ z / wv[~S]
    return float(v.max())


def pilot_weights(
    pilot: Tensor, *, gamma: float = 1.0, top_pct: float | None = None, w_min: float = 1.0, w_max: float = 1e3
) -> Tensor:
    """Adaptive weights from a pilot estimate, with the SAE's rule (book: paper facts, model and loss steps 2-3) in place of Zou's 1/|β̂|^γ.

    w_i = clip((r / max(|pilot_i|, 1e-5))^γ, w_min, w_max), r = mean of the top ⌊p·m⌋ |pilot| values per sample
    (p = ``top_pct``; default 1/m, i.e. r = max |pilot|). Zou (2006) uses w_i = |β̂_i|^{-γ}; dividing by r only
    rescales λ1, so that the strongest feature gets weight 1 and both adaptive penalties share the lasso's λ1 axis.
    Pilot zeros get w_max (the theory's w → ∞, clamped as in the SAE). ``pilot [B, m] -> w [B, m]``.
    """
    if not isinstance(pilot, Tensor) or pilot.dim() != 2:
        raise ValueError(f"pilot must be a torch.Tensor [B, m], got {getattr(pilot, 'shape', type(pilot).__name__)}")
    gamma = _check_nonneg("gamma", gamma, positive=True)
    m = pilot.shape[1]
    p = 1.0 / m if top_pct is None else float(top_pct)
    if not 0 < p <= 1:
        raise ValueError(f"top_pct must lie in (0, 1], got {top_pct}")
    if not 0 < w_min <= w_max:
        raise ValueError(f"need 0 < w_min <= w_max, got w_min={w_min}, w_max={w_max}")
    a = pilot.abs()
    return raw_adaptive_weights(a, reference_scale(a, p), gamma, w_min, w_max)


def penalty_setup(penalty: str, l2: float) -> tuple[float, bool]:
    """(λ2 used, adaptive?) for one of :data:`PENALTIES`: the lasso variants use λ2 = 0."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    return (l2 if "elastic" in penalty else 0.0), penalty.startswith("adaptive")


def support_recovery_curves(
    W_dec: Tensor,
    support: Tensor | Sequence[int],
    l1_grid: Sequence[float] | Tensor,
    *,
    l2: float,
    n_trials: int,
    noise_std: float,
    magnitude: tuple[float, float] = (1.0, 3.0),
    pilot_l1: float,
    pilot_l2: float,
    gamma: float = 1.0,
    w_max: float = 1e3,
    penalties: Sequence[str] = PENALTIES,
    support_tol: float = 1e-6,
    generator: torch.Generator | None = None,
    **solver_kwargs,
) -> dict[str, Tensor]:
    """P(supp ĥ = S) against λ1 for lasso, elastic net, adaptive lasso and adaptive EN (book: paper facts, theory, support recovery).

    Each trial draws a non-negative code on the fixed support S with magnitudes U[magnitude] (as the spiked model,
    book: paper facts, synthetic protocol), observes y = D h0 + σ ε, and solves every penalty on the whole λ1 grid in one solver batch. The
    adaptive penalties use :func:`pilot_weights` of a non-negative elastic-net pilot (λ1 = ``pilot_l1``,
    λ2 = ``pilot_l2``), as Zou & Zhang (2009) do; the pilot is computed once per trial and shared.
    The recovered support is {i : ĥ_i > support_tol} (book: paper facts, synthetic protocol).

    Returns:
        ``{"recovery": {penalty: [L]}, "shrinkage": {penalty: [L]}, "pilot_recall": float}``: the share of trials
        with supp ĥ = S; the mean relative shrinkage of the true atoms 1 − Σ_S ĥ / Σ_S h0 (0 = unbiased, 1 = all
        shrunk to zero); the share of trials whose pilot kept every true atom (without it the adaptive penalties
        cannot recover S).
    """
    m, n = _check_dict(W_dec)
    S = active_mask(support, m, W_dec.device)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
    noise_std = _check_nonneg("noise_std", noise_std)
    lo, hi = magnitude
    if not 0 < lo <= hi:
        raise ValueError(f"magnitude must be (low, high) with 0 < low <= high, got {magnitude}")
    for p in penalties:
        penalty_setup(p, l2)
    dt, dev = W_dec.dtype, W_dec.device
    lam = torch.as_tensor(l1_grid, dtype=dt, device=dev).reshape(-1)
    L = lam.numel()
    gen_dev = generator.device if generator is not None else dev
    h0 = torch.zeros(n_trials, m, dtype=dt, device=dev)
    mags = torch.rand(n_trials, int(S.sum()), generator=generator, dtype=dt, device=gen_dev).to(dev)
    h0[:, S] = lo + (hi - lo) * mags
    eps = torch.randn(n_trials, n, generator=generator, dtype=dt, device=gen_dev).to(dev)
    y = h0 @ W_dec + noise_std * eps  # [T, n]

    pilot, _ = weighted_elastic_net(W_dec, y, pilot_l1, pilot_l2, None, **solver_kwargs)
    w_ad = pilot_weights(pilot, gamma=gamma, w_max=w_max)  # [T, m]
    out: dict = {"recovery": {}, "shrinkage": {},
                 "pilot_recall": float((pilot[:, S] > support_tol).all(dim=1).to(dt).mean())}
    yy = y.unsqueeze(0).expand(L, n_trials, n).reshape(L * n_trials, n)
    true_mass = h0[:, S].sum(1)  # [T]
    for p in penalties:
        l2_p, adaptive = penalty_setup(p, l2)
        base = w_ad if adaptive else torch.ones_like(w_ad)
        W = (lam.view(L, 1, 1) * base.unsqueeze(0)).reshape(L * n_trials, m)
        h, _ = weighted_elastic_net(W_dec, yy, 1.0, l2_p, W, **solver_kwargs)
        hit = ((h > support_tol) == S.unsqueeze(0)).all(dim=1).reshape(L, n_trials)
        out["recovery"][p] = hit.to(dt).mean(dim=1)
        mass = h[:, S].sum(1).reshape(L, n_trials)
        out["shrinkage"][p] = (1.0 - mass / true_mass.unsqueeze(0)).mean(dim=1)
    return out


# ----------------------------------------------------------------------------------------------------------
# Shrinkage bias and grouping effect
# ----------------------------------------------------------------------------------------------------------


def oracle_bias(
    W_dec: Tensor,
    h0: Tensor,
    support: Tensor | Sequence[int],
    l1: float,
    l2: float = 0.0,
    w: Tensor | None = None,
) -> Tensor:
    """Bias of the coding map on a noiseless input y = D h0 when it selects the true support S (book: paper facts, theory).

    From the closed form on S with y = D_S h0_S:
    ĥ_S − h0_S = −(G_SS + λ2 I)^{-1} (λ2 h0_S + λ1 w_S): the ℓ1 term shrinks by λ1 w_S (Tibshirani's shrinkage,
    removed as w_S → 0) and the ℓ2 term by λ2 h0_S (Zou & Hastie's "double shrinkage"). Valid when ĥ_S > 0 and the
    inactive KKT inequalities hold. ``h0 [m]`` or ``[B, m]`` → bias ``[|S|]`` or ``[B, |S|]``.
    """
    m, _ = _check_dict(W_dec)
    l1 = _check_nonneg("l1", l1)
    l2 = _check_nonneg("l2", l2)
    S = active_mask(support, m, W_dec.device)
    hb = h0.unsqueeze(0) if h0.dim() == 1 else h0
    wv = torch.ones(m, dtype=W_dec.dtype, device=W_dec.device) if w is None else w.to(W_dec)
    wb = wv.unsqueeze(0) if wv.dim() == 1 else wv
    k = int(S.sum())
    P = W_dec[S] @ W_dec[S].T + l2 * torch.eye(k, dtype=W_dec.dtype, device=W_dec.device)
    rhs = l2 * hb[:, S].to(W_dec) + l1 * wb[:, S].expand(hb.shape[0], k)
    bias = -torch.linalg.solve(P, rhs.T).T
    return bias[0] if h0.dim() == 1 else bias


def grouping_bound(W_dec: Tensor, y: Tensor, h: Tensor, l2: float) -> Tensor:
    """Zou-Hastie grouping bound for the non-negative (weighted-equal) elastic net: |h_i − h_j| ≤ ‖d_i − d_j‖‖r‖/λ2.

    With r = y − D h* and equal weights w_i = w_j, subtracting the KKT conditions of i and j gives
    λ2 (h_i − h_j) = (d_i − d_j)ᵀ r when both are active, and the inequality when one is inactive; Cauchy-Schwarz
    and ‖r‖ ≤ ‖y‖ (the objective at h* is at most its value at 0) finish it (Zou & Hastie 2005, Thm 1, our
    non-negative version [INF]). ``y [n]``, ``h [m]`` → ``[m, m]`` bounds (``inf`` for λ2 = 0).
    """
    m, n = _check_dict(W_dec)
    l2 = _check_nonneg("l2", l2)
    r = float((y.to(W_dec) - h.to(W_dec) @ W_dec).norm())
    dist = torch.cdist(W_dec, W_dec)  # ‖d_i − d_j‖ = √(2(1 − cos θ_ij)) for unit atoms
    if l2 == 0:  # the lasso has no grouping bound: identical atoms can split their weight arbitrarily
        eye = torch.eye(m, dtype=torch.bool, device=W_dec.device)
        return torch.where(eye, torch.zeros_like(dist), torch.full_like(dist, math.inf))
    return dist * r / l2


# ----------------------------------------------------------------------------------------------------------
# Amortisation gap: an SAE encoder vs the sparse-coding map of its own decoder
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AmortisationGap:
    """How far an SAE's encoder codes are from the exact codes of its decoder (book: paper facts, theory, last bullet) [INF]."""

    rel_code_error: float
    """‖h_enc − h*‖_F / ‖h*‖_F over the batch."""
    support_f1: float
    """F1 of the encoder's support against the solver's support (pooled over the batch)."""
    support_jaccard: float
    """Jaccard index of the same supports."""
    objective_gap: float
    """Mean relative excess SAE loss (L(h_enc) − L(h*)) / L(h*) per token; ≥ 0 up to solver tolerance."""
    l0_encoder: float
    """Mean number of active encoder codes per token."""
    l0_solver: float
    """Mean number of active solver codes per token."""
    h_encoder: Tensor
    """[B, m] encoder codes."""
    h_solver: Tensor
    """[B, m] solver codes h*(x − b_dec) for the decoder, in the theory scaling of the same loss."""


@torch.no_grad()
def amortisation_gap(
    sae: torch.nn.Module,
    x: Tensor,
    *,
    weights: Tensor | None = None,
    support_tol: float = 1e-6,
    **solver_kwargs,
) -> AmortisationGap:
    """Compare ``sae.encode(x)`` with the exact minimiser of the SAE's own per-token loss for its decoder.

    For frozen ``W_dec`` and ``b_dec`` the best code of a token is h*(x − b_dec) for the loss
    (1/n)‖y − Dh‖² + λ1 Σ w_i h_i + λ2 ‖h‖² (book: paper facts, model and loss), i.e. the theory map of §3 with
    λ1 = nλ1_sae/2, λ2 = nλ2_sae (:func:`aen_lib.theory.sparse_coding.sae_to_theory_penalties`). The encoder, one affine map
    and a ReLU, amortises that optimisation; the gap measures what the amortisation loses. ``weights`` are the
    adaptive weights w̃ [m] to use (default: the SAE's current ones if it has any, else 1). λ2 is taken as 0 for
    architectures without an ℓ2 term.
    """
    if not hasattr(sae, "W_dec") or not hasattr(sae, "cfg"):
        raise TypeError(f"sae must be an aen_lib SAE, got {type(sae).__name__}")
    cfg = sae.cfg
    uses = architecture_spec(cfg.architecture).uses  # the config fields its loss reads
    if "l1" not in uses:
        raise ValueError(f"amortisation_gap needs an l1-family SAE ({', '.join(architecture_names(uses='l1'))}), "
                         f"got architecture={cfg.architecture!r}")
    uses_l2 = "l2" in uses
    l1_sae, l2_sae = float(cfg.l1), float(cfg.l2) if uses_l2 else 0.0
    if weights is None:
        run = sae.architecture  # ones for the non-adaptive members, and for an architecture without weights
        weights = run.weights()[0].to(sae.W_dec) if hasattr(run, "weights") else sae.W_dec.new_ones(sae.W_dec.shape[-2])
    D = sae.W_dec.detach()
    y = x.to(D) - sae.b_dec.detach()
    n = D.shape[1]
    l1, l2 = sae_to_theory_penalties(l1_sae, l2_sae, n)
    h_star, _ = weighted_elastic_net(D, y, l1, l2, weights, **solver_kwargs)
    h_enc = sae.encode(x.to(D)).detach()
    sup = support_metrics(h_enc, torch.where(h_star > support_tol, h_star, torch.zeros_like(h_star)), thresh=support_tol)
    loss_enc = sae_coding_objective(D, y, h_enc, l1_sae, l2_sae, weights)
    loss_star = sae_coding_objective(D, y, h_star, l1_sae, l2_sae, weights)
    rel = float((h_enc - h_star).norm() / h_star.norm().clamp_min(torch.finfo(D.dtype).tiny))
    return AmortisationGap(
        rel_code_error=rel,
        support_f1=sup["f1"],
        support_jaccard=sup["jaccard"],
        objective_gap=float(((loss_enc - loss_star) / loss_star.clamp_min(torch.finfo(D.dtype).tiny)).mean()),
        l0_encoder=float((h_enc > support_tol).sum(1).double().mean()),
        l0_solver=float((h_star > support_tol).sum(1).double().mean()),
        h_encoder=h_enc,
        h_solver=h_star,
    )
