"""Tests for aen_lib.theory.sparse_coding (book: paper facts, theory): KKT, scikit-learn agreement, closed forms, scalings, bad input."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet, Lasso

from aen_lib.theory.sparse_coding import (
    closed_form_on_support,
    coding_objective,
    kkt_residual,
    nonneg_elastic_net,
    nonneg_lasso,
    sae_coding_objective,
    sae_to_theory_penalties,
    theory_to_sae_penalties,
    weighted_elastic_net,
)

F64 = torch.float64


def _problem(n: int, m: int, B: int, k: int, seed: int, noise: float = 0.05):
    """Unit-norm random dictionary [m, n] and targets y = h_true D + noise [B, n]."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, n, generator=g, dtype=F64)
    D = D / D.norm(dim=1, keepdim=True)
    h = torch.zeros(B, m, dtype=F64)
    idx = torch.rand(B, m, generator=g).topk(k, dim=1).indices
    h.scatter_(1, idx, 1 + 2 * torch.rand(B, k, generator=g, dtype=F64))
    y = h @ D + noise * torch.randn(B, n, generator=g, dtype=F64)
    w = 0.2 + 2 * torch.rand(m, generator=g, dtype=F64)
    return D, y, w


# ---------------------------------------------------------------------------------------------------- KKT


@pytest.mark.parametrize(
    "n,m,l1,l2,weighted",
    [(20, 40, 0.1, 0.0, False), (20, 40, 0.3, 0.2, False), (30, 15, 0.05, 0.0, True), (16, 64, 0.2, 0.1, True)],
)
def test_codes_satisfy_kkt(n, m, l1, l2, weighted):
    D, y, w = _problem(n, m, B=6, k=4, seed=n + m)
    h, info = weighted_elastic_net(D, y, l1, l2, w if weighted else None)
    assert info.converged.all()
    assert (h >= 0).all()
    res = kkt_residual(D, y, h, l1, l2, w if weighted else None)
    assert res.shape == (6,)
    assert res.max() < 1e-6
    # the reported residual is the scaled one of the returned codes
    torch.testing.assert_close(info.residual, kkt_residual(D, y, h, l1, l2, w if weighted else None, scaled=True))
    # and the codes are not trivially zero
    assert (h > 0).any()


def test_kkt_residual_hand_values():
    D = torch.eye(2, dtype=F64)  # orthonormal atoms, so c = y - h
    y = torch.tensor([3.0, 0.5], dtype=F64)
    # optimum of ½||y-h||² + h_0 + h_1 over h >= 0 is relu(y - 1) = [2, 0]
    assert kkt_residual(D, y, torch.tensor([2.0, 0.0], dtype=F64), 1.0, 0.0).item() == 0.0
    # h=[1,0]: active violation |2 - 1| = 1; inactive 0.5 - 1 < 0
    assert kkt_residual(D, y, torch.tensor([1.0, 0.0], dtype=F64), 1.0, 0.0).item() == pytest.approx(1.0)
    # h=[2,0.5]: second coordinate active with c = 0, violation |0 - 1| = 1
    assert kkt_residual(D, y, torch.tensor([2.0, 0.5], dtype=F64), 1.0, 0.0).item() == pytest.approx(1.0)
    # h=[2,-0.1]: infeasible by 0.1; c_1 = 0.6 < 1 so the inactive inequality holds
    assert kkt_residual(D, y, torch.tensor([2.0, -0.1], dtype=F64), 1.0, 0.0).item() == pytest.approx(0.1)
    # h=[0,0]: inactive 3 - 1 = 2 > 0 violates
    assert kkt_residual(D, y, torch.zeros(2, dtype=F64), 1.0, 0.0).item() == pytest.approx(2.0)
    # with l2 = 1 and weights w=[2, 1]: optimum h_0 = (3 - 2)/(1 + 1) = 0.5
    w = torch.tensor([2.0, 1.0], dtype=F64)
    assert kkt_residual(D, y, torch.tensor([0.5, 0.0], dtype=F64), 1.0, 1.0, w).item() == pytest.approx(0.0, abs=1e-15)
    # scaled: divide by max(||D^T y||_inf, l1 max w) = max(3, 2) = 3
    r = kkt_residual(D, y, torch.tensor([1.0, 0.0], dtype=F64), 1.0, 1.0, w, scaled=True)
    # active: c_0 = 2, 2 - 2 - 1 = -1 -> 1; scaled 1/3
    assert r.item() == pytest.approx(1.0 / 3.0)


def test_orthonormal_dictionary_closed_form():
    # For orthonormal atoms the problem separates: h_i = relu(d_i^T y - l1 w_i) / (1 + l2).
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=F64))
    D = Q[:8]  # 8 orthonormal rows in R^12
    y = torch.randn(5, 12, generator=g, dtype=F64)
    w = torch.rand(8, generator=g, dtype=F64) + 0.5
    l1, l2 = 0.3, 0.7
    h, info = weighted_elastic_net(D, y, l1, l2, w)
    expected = torch.relu(y @ D.T - l1 * w) / (1 + l2)
    torch.testing.assert_close(h, expected, atol=1e-10, rtol=0)
    assert info.converged.all()


# ---------------------------------------------------------------------------------------------------- sklearn


def _sk_lasso(X: np.ndarray, yv: np.ndarray, alpha: float) -> np.ndarray:
    return Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(X, yv).coef_


@pytest.mark.parametrize("n,m,l1", [(30, 20, 0.2), (20, 40, 0.1)])
def test_lasso_matches_sklearn(n, m, l1):
    # sklearn Lasso: (1/(2 n_samples))||y - X b||² + alpha ||b||_1 with X = D^T [n, m], n_samples = n.
    # Multiplying by n gives ½||y - X b||² + n alpha ||b||_1, so alpha = l1 / n.
    D, y, _ = _problem(n, m, B=4, k=3, seed=7 + m)
    h, info = nonneg_lasso(D, y, l1)
    assert info.converged.all()
    X = D.T.numpy()
    for b in range(y.shape[0]):
        ref = _sk_lasso(X, y[b].numpy(), l1 / n)
        np.testing.assert_allclose(h[b].numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n,m,l1,l2", [(30, 20, 0.2, 0.5), (20, 40, 0.1, 0.05)])
def test_elastic_net_matches_sklearn(n, m, l1, l2):
    # sklearn ElasticNet: (1/(2n))||y - Xb||² + a r ||b||_1 + (a (1-r)/2)||b||².  Times n:
    # ½||y - Xb||² + n a r ||b||_1 + (n a (1-r)/2)||b||², so l1 = n a r and l2 = n a (1-r):
    # a = (l1 + l2)/n and r = l1/(l1 + l2).
    D, y, _ = _problem(n, m, B=4, k=3, seed=11 + m)
    h, info = nonneg_elastic_net(D, y, l1, l2)
    assert info.converged.all()
    X = D.T.numpy()
    for b in range(y.shape[0]):
        en = ElasticNet(alpha=(l1 + l2) / n, l1_ratio=l1 / (l1 + l2), positive=True, fit_intercept=False,
                        tol=1e-14, max_iter=1_000_000)
        ref = en.fit(X, y[b].numpy()).coef_
        np.testing.assert_allclose(h[b].numpy(), ref, atol=1e-5, rtol=0)


def test_weighted_lasso_matches_sklearn_on_rescaled_design():
    # With g_i = w_i h_i the weighted penalty l1 Σ w_i h_i becomes l1 Σ g_i on the design with columns d_i / w_i.
    n, m, l1 = 25, 35, 0.15
    D, y, w = _problem(n, m, B=3, k=3, seed=3)
    h, info = weighted_elastic_net(D, y, l1, 0.0, w)
    assert info.converged.all()
    X = (D.T / w).numpy()
    for b in range(y.shape[0]):
        g = _sk_lasso(X, y[b].numpy(), l1 / n)
        np.testing.assert_allclose(h[b].numpy(), g / w.numpy(), atol=1e-5, rtol=0)


def test_weighted_elastic_net_matches_sklearn_on_augmented_design():
    # ½||y - Dh||² + (l2/2)||h||² = ½||[y; 0] - [D^T; sqrt(l2) I] h||²; then rescale columns by 1/w as above.
    # sklearn divides by n_samples = n + m here, so alpha = l1 / (n + m).
    n, m, l1, l2 = 20, 30, 0.1, 0.3
    D, y, w = _problem(n, m, B=3, k=3, seed=5)
    h, info = weighted_elastic_net(D, y, l1, l2, w)
    assert info.converged.all()
    X = torch.cat([D.T, math.sqrt(l2) * torch.eye(m, dtype=F64)], dim=0) / w
    for b in range(y.shape[0]):
        y_aug = torch.cat([y[b], torch.zeros(m, dtype=F64)])
        g = _sk_lasso(X.numpy(), y_aug.numpy(), l1 / (n + m))
        np.testing.assert_allclose(h[b].numpy(), g / w.numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- batching


def test_batched_equals_unbatched_and_per_sample_weights():
    n, m, l1, l2 = 16, 48, 0.1, 0.02
    D, y, _ = _problem(n, m, B=5, k=4, seed=9)
    g = torch.Generator().manual_seed(10)
    W = 0.5 + torch.rand(5, m, generator=g, dtype=F64)  # [B, m] per-sample weights
    h, info = weighted_elastic_net(D, y, l1, l2, W)
    for b in range(5):
        hb, ib = weighted_elastic_net(D, y[b], l1, l2, W[b])
        assert hb.shape == (m,)
        torch.testing.assert_close(hb, h[b], atol=1e-10, rtol=0)
        assert int(ib.iterations[0]) == int(info.iterations[b])


def test_dtype_and_float32_input():
    D, y, _ = _problem(12, 24, B=2, k=2, seed=4)
    h32, info32 = nonneg_lasso(D.float(), y.float(), 0.1, tol=1e-5)
    assert h32.dtype == torch.float32
    h64, _ = nonneg_lasso(D.float(), y.float(), 0.1, dtype=F64)
    assert h64.dtype == F64
    torch.testing.assert_close(h32.double(), h64, atol=1e-4, rtol=0)


def test_zero_target_and_max_iter_flag():
    D, y, _ = _problem(10, 20, B=2, k=2, seed=2)
    h, info = nonneg_lasso(D, torch.zeros_like(y), 0.1)
    assert (h == 0).all() and info.converged.all() and (info.iterations == 0).all()
    h, info = nonneg_lasso(D, y, 0.01, max_iter=1)
    assert not info.converged.any()
    assert (info.iterations == 1).all()


def test_warm_start_from_solution_stops_immediately():
    D, y, _ = _problem(10, 20, B=3, k=2, seed=12)
    h, _ = nonneg_elastic_net(D, y, 0.1, 0.1)
    h2, info = nonneg_elastic_net(D, y, 0.1, 0.1, h0=h)
    assert (info.iterations == 0).all()
    torch.testing.assert_close(h2, h)


# ---------------------------------------------------------------------------------------------------- closed form


def test_closed_form_hand_example():
    # Two atoms at 60 degrees in R^2: G = [[1, .5], [.5, 1]].
    D = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=F64)
    y = torch.tensor([2.0, 1.0], dtype=F64)
    l1, l2 = 0.2, 0.1
    w = torch.tensor([1.0, 2.0], dtype=F64)
    Dty = torch.tensor([2.0, 1.0 + math.sqrt(3) / 2], dtype=F64)
    b = Dty - l1 * w
    # (G + l2 I)^{-1} = 1/det * [[1.1, -.5], [-.5, 1.1]], det = 1.21 - .25 = .96
    expected = torch.tensor([1.1 * b[0] - 0.5 * b[1], -0.5 * b[0] + 1.1 * b[1]], dtype=F64) / 0.96
    h = closed_form_on_support(D, y, torch.tensor([True, True]), l1, l2, w)
    torch.testing.assert_close(h, expected, atol=1e-14, rtol=0)
    # support {0} only: h_0 = (2 - 0.2)/(1 + 0.1)
    h0 = closed_form_on_support(D, y, torch.tensor([0]), l1, l2, w)
    torch.testing.assert_close(h0, torch.tensor([1.8 / 1.1, 0.0], dtype=F64), atol=1e-14, rtol=0)


def test_closed_form_reproduces_solver_on_its_support():
    n, m, l1, l2 = 20, 40, 0.1, 0.05
    D, y, w = _problem(n, m, B=4, k=3, seed=21)
    h, info = weighted_elastic_net(D, y, l1, l2, w, tol=1e-13)
    assert info.converged.all()
    support = h > 0  # [B, m] per-sample masks
    hc = closed_form_on_support(D, y, support, l1, l2, w)
    # |h - hc| <= ||KKT residual on A|| / lambda_min(G_AA + l2 I), and lambda_min >= l2 = 0.05
    torch.testing.assert_close(hc, h, atol=1e-13 * 10 * (1 / l2) * math.sqrt(m), rtol=0)
    # a wrong support gives a KKT violation
    bad = support.clone()
    bad[0, (~support[0]).nonzero()[0]] = True
    hb = closed_form_on_support(D, y[:1], bad[:1], l1, l2, w)
    assert kkt_residual(D, y[:1], hb, l1, l2, w).item() > 1e-6


def test_closed_form_singular_raises():
    D = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)  # duplicated atom
    with pytest.raises(ValueError, match="singular"):
        closed_form_on_support(D, torch.ones(2, dtype=F64), torch.tensor([0, 1]), 0.1, 0.0)


# ---------------------------------------------------------------------------------------------------- scalings


def test_penalty_conversion_hand_values_and_round_trip():
    l1, l2 = sae_to_theory_penalties(0.005, 1e-4, 256)
    assert l1 == pytest.approx(256 * 0.005 / 2) and l1 == pytest.approx(0.64)
    assert l2 == pytest.approx(256 * 1e-4) and l2 == pytest.approx(0.0256)
    back = theory_to_sae_penalties(l1, l2, 256)
    assert back == pytest.approx((0.005, 1e-4))


def test_sae_objective_is_two_over_n_times_theory_objective():
    n, m = 16, 32
    D, y, w = _problem(n, m, B=4, k=3, seed=30)
    g = torch.Generator().manual_seed(31)
    h = torch.rand(4, m, generator=g, dtype=F64)
    l1s, l2s = 0.01, 0.003
    l1, l2 = sae_to_theory_penalties(l1s, l2s, n)
    sae = sae_coding_objective(D, y, h, l1s, l2s, w)
    th = coding_objective(D, y, h, l1, l2, w)
    torch.testing.assert_close(sae, 2.0 / n * th, atol=1e-13, rtol=1e-13)
    # hand value of the SAE objective, term by term
    r = y - h @ D
    hand = (r**2).mean(1) + l1s * (w * h).sum(1) + l2s * (h**2).sum(1)
    torch.testing.assert_close(sae, hand, atol=1e-13, rtol=1e-13)


def test_theory_minimiser_minimises_sae_objective():
    # Local optimality check of the converted problem: no small feasible perturbation lowers the SAE objective.
    n, m = 16, 32
    D, y, w = _problem(n, m, B=2, k=3, seed=40)
    l1s, l2s = 0.02, 0.005
    h, _ = weighted_elastic_net(D, y, *sae_to_theory_penalties(l1s, l2s, n), w)
    base = sae_coding_objective(D, y, h, l1s, l2s, w)
    g = torch.Generator().manual_seed(41)
    for _ in range(20):
        hp = torch.relu(h + 1e-3 * torch.randn(h.shape, generator=g, dtype=F64))
        assert (sae_coding_objective(D, y, hp, l1s, l2s, w) >= base - 1e-12).all()
    # while the unconverted penalties give a different (wrong) minimiser
    h_wrong, _ = weighted_elastic_net(D, y, l1s, l2s, w)
    assert (h_wrong - h).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise():
    D, y, w = _problem(10, 20, B=2, k=2, seed=1)
    with pytest.raises(ValueError, match="features"):
        nonneg_lasso(D, y[:, :9], 0.1)
    with pytest.raises(ValueError, match="l1"):
        nonneg_lasso(D, y, -0.1)
    with pytest.raises(ValueError, match="l2"):
        nonneg_elastic_net(D, y, 0.1, -1.0)
    with pytest.raises(ValueError, match="l1"):
        nonneg_lasso(D, y, float("nan"))
    y_nan = y.clone()
    y_nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        nonneg_lasso(D, y_nan, 0.1)
    D_nan = D.clone()
    D_nan[1, 1] = float("inf")
    with pytest.raises(ValueError, match="W_dec contains NaN"):
        nonneg_lasso(D_nan, y, 0.1)
    with pytest.raises(ValueError, match="w must have shape"):
        weighted_elastic_net(D, y, 0.1, 0.0, w[:5])
    with pytest.raises(ValueError, match="w must be >= 0"):
        weighted_elastic_net(D, y, 0.1, 0.0, -w)
    with pytest.raises(ValueError, match="W_dec must be 2-D"):
        nonneg_lasso(D[0], y, 0.1)
    with pytest.raises(TypeError, match="W_dec"):
        nonneg_lasso(D.numpy(), y, 0.1)
    with pytest.raises(ValueError, match="h must have shape"):
        kkt_residual(D, y, torch.zeros(2, 19, dtype=F64), 0.1, 0.0)
    with pytest.raises(ValueError, match="max_iter"):
        nonneg_lasso(D, y, 0.1, max_iter=-1)
    with pytest.raises(ValueError, match="n \\(input dimension\\)"):
        sae_to_theory_penalties(0.1, 0.1, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    D, y, w = _problem(32, 96, B=8, k=4, seed=50)
    h_cpu, _ = weighted_elastic_net(D, y, 0.1, 0.05, w)
    h_gpu, info = weighted_elastic_net(D.cuda(), y.cuda(), 0.1, 0.05, w.cuda())
    assert h_gpu.device.type == "cuda" and info.converged.all()
    torch.testing.assert_close(h_gpu.cpu(), h_cpu, atol=1e-9, rtol=0)
