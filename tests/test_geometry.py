"""Tests for aen_lib.theory.geometry: hand computations on 2-3 atom dictionaries, scikit-learn, and the book: paper facts, theory bounds."""

import math

import numpy as np
import pytest
import torch

from aen_lib.theory import geometry as g
from aen_lib.theory.sparse_coding import weighted_elastic_net

F64 = torch.float64


def _random_dict(m: int, n: int, seed: int, rho: float = 0.0) -> torch.Tensor:
    """Unit-norm rows; rho > 0 adds a shared spike (coherent dictionary)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(m, n, generator=gen, dtype=F64)
    v = torch.randn(n, generator=gen, dtype=F64)
    u = u / u.norm(dim=1, keepdim=True)
    v = v / v.norm()
    d = math.sqrt(1 - rho) * u + math.sqrt(rho) * v
    return d / d.norm(dim=1, keepdim=True)


# ---------------------------------------------------------------- Jacobians and Lipschitz bounds


def test_planar_dictionary_rows_are_unit_atoms_at_angles():
    D = g.planar_dictionary([0, 90, 45])
    expected = torch.tensor([[1, 0], [0, 1], [math.sqrt(0.5), math.sqrt(0.5)]], dtype=F64)
    assert torch.allclose(D, expected, atol=1e-15)


def test_region_jacobian_two_atoms_matches_hand_inverse():
    # Atoms at angle θ: G = [[1, c], [c, 1]], c = cos θ. J = (G + λ2 I)^{-1} D_Aᵀ by hand.
    th, l2 = 30.0, 0.2
    D = g.planar_dictionary([0, th])
    c = math.cos(math.radians(th))
    a, b = 1 + l2, c
    inv = torch.tensor([[a, -b], [-b, a]], dtype=F64) / (a * a - b * b)
    expected = inv @ D  # rows of D are atoms, so D_Aᵀ in column form is D here
    assert torch.allclose(g.region_jacobian(D, [0, 1], l2), expected, atol=1e-13)
    # Singular values of D_A are √(1 ± c); the Jacobian norm is the larger of s/(s² + λ2).
    s = torch.tensor([math.sqrt(1 + c), math.sqrt(1 - c)], dtype=F64)
    assert g.region_jacobian_norm(D, [0, 1], l2) == pytest.approx(float((s / (s * s + l2)).max()), rel=1e-12)
    assert g.region_jacobian_norm(D, [0, 1], 0.0) == pytest.approx(1 / math.sqrt(1 - c), rel=1e-12)


def test_lasso_jacobian_norm_is_infinite_for_collinear_atoms():
    D = g.planar_dictionary([20, 20])
    assert g.region_jacobian_norm(D, [0, 1], 0.0) == math.inf
    with pytest.raises(ValueError, match="singular"):
        g.region_jacobian(D, [0, 1], 0.0)
    # λ2 > 0 makes it finite, and it respects the coherence-free bound.
    assert g.region_jacobian_norm(D, [0, 1], 0.05) <= g.elastic_net_lipschitz_bound(0.05)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_jacobian_norm_bound_holds_on_random_dictionaries(rho):
    D = _random_dict(24, 10, seed=3, rho=rho)
    gen = torch.Generator().manual_seed(4)
    for l2 in (1e-3, 0.03, 0.5):
        for _ in range(5):
            A = torch.randperm(24, generator=gen)[:6]
            norm = g.region_jacobian_norm(D, A, l2)
            direct = float(torch.linalg.matrix_norm(g.region_jacobian(D, A, l2), ord=2))
            assert norm == pytest.approx(direct, rel=1e-10)
            assert norm <= g.elastic_net_lipschitz_bound(l2) * (1 + 1e-12)
            assert norm <= g.crude_lipschitz_bound(D, l2)


def test_profile_peak_is_the_bound():
    l2 = 0.04
    s = torch.linspace(1e-4, 3, 20001, dtype=F64)
    prof = g.jacobian_profile(s, l2)
    assert float(prof.max()) == pytest.approx(g.elastic_net_lipschitz_bound(l2), rel=1e-6)
    assert float(s[prof.argmax()]) == pytest.approx(math.sqrt(l2), rel=1e-3)


def test_local_lipschitz_matches_jacobian_inside_a_region():
    # Two atoms at 10°, input on the bisector: both active, the map is affine with Jacobian J_A near y.
    th = 10.0
    D = g.planar_dictionary([0, th])
    y = 3 * torch.tensor([[math.cos(math.radians(th / 2)), math.sin(math.radians(th / 2))]], dtype=F64)
    for l2 in (0.0, 0.1):
        est = g.local_lipschitz(
            lambda Y: weighted_elastic_net(D, Y, 0.5, l2, tol=1e-13, max_iter=100_000), y, radius=1e-4, n_dirs=64,
            generator=torch.Generator().manual_seed(0),
        )
        exact = g.region_jacobian_norm(D, [0, 1], l2)
        assert float(est.estimate[0]) <= exact * (1 + 1e-6)
        assert float(est.estimate[0]) >= 0.99 * exact  # 64 directions in the plane come close to the worst one
        # Along the worst-case direction it is exact.
        u = g.worst_case_direction(D, [0, 1], l2)
        est2 = g.local_lipschitz(
            lambda Y: weighted_elastic_net(D, Y, 0.5, l2, tol=1e-13, max_iter=100_000), y, radius=1e-4,
            directions=u.unsqueeze(0),
        )
        assert float(est2.estimate[0]) == pytest.approx(exact, rel=1e-6)


def test_local_lipschitz_rejects_bad_radius():
    with pytest.raises(ValueError, match="radius"):
        g.local_lipschitz(lambda Y: Y, torch.zeros(1, 2, dtype=F64), radius=0.0)


# ---------------------------------------------------------------- exact map, regions, paths


def test_exact_map_single_atom_is_soft_threshold():
    D = g.planar_dictionary([0])
    y = torch.tensor([[2.0, 1.0], [0.3, -1.0], [-1.0, 0.0]], dtype=F64)
    h, lab = g.exact_coding_map(D, y, l1=0.5, l2=0.25)
    # h = max(y_1 − λ1, 0)/(1 + λ2)
    assert torch.allclose(h[:, 0], torch.tensor([1.5 / 1.25, 0.0, 0.0], dtype=F64))
    assert lab.tolist() == [1, 0, 0]


def test_exact_map_agrees_with_fista_and_labels_cover_the_plane():
    D = g.planar_dictionary([0, 50, 110])
    y = 2 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    for l2 in (0.0, 0.3):
        h, lab = g.exact_coding_map(D, y, 0.5, l2)
        hf, _ = weighted_elastic_net(D, y, 0.5, l2, tol=1e-12)
        assert (lab >= 0).all()
        assert torch.allclose(h, hf, atol=1e-8)
        assert torch.equal(g.label_regions(D, y, 0.5, l2), lab)
        # The label is the support of the solution.
        bits = (hf > 1e-8).long() * torch.tensor([1, 2, 4])
        assert torch.equal(bits.sum(1), lab)


def test_lambda_max_zeroes_the_code():
    D = _random_dict(8, 5, seed=2)
    y = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=F64)
    lm = float(g.lambda_max(D, y))
    path = g.solution_path(D, y, [lm * 1.0001, lm * 0.9], l2=0.1, tol=1e-12)
    assert float(path[0].abs().max()) == 0.0
    assert float(path[1].max()) > 0.0


def test_solution_path_matches_sklearn_lasso_path_positive():
    sk = pytest.importorskip("sklearn.linear_model")
    D = _random_dict(12, 8, seed=5, rho=0.3)
    y = torch.randn(8, generator=torch.Generator().manual_seed(6), dtype=F64)
    n = D.shape[1]
    lam = np.geomspace(float(g.lambda_max(D, y)) * 0.9, 0.01, 15)
    ours = g.solution_path(D, y, torch.tensor(lam), l2=0.0, tol=1e-12, max_iter=200_000).numpy()
    # scikit-learn minimises (1/(2 n_samples))‖y − Xβ‖² + α‖β‖₁: X = Dᵀ (n samples = n input dims), α = λ1/n.
    _, coefs, _ = sk.lasso_path(D.T.numpy(), y.numpy(), alphas=lam / n, positive=True, tol=1e-14, max_iter=100_000)
    assert np.allclose(ours, coefs.T, atol=1e-6)


# ---------------------------------------------------------------- Hoffman constant and diagnostics


def test_hoffman_matrix_blocks_and_inverse():
    D = _random_dict(6, 4, seed=7, rho=0.4)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=F64)
    A = [1, 3]
    M = g.hoffman_matrix(D, A, l1=0.2, l2=0.1, w=w)
    G = D @ D.T
    assert torch.allclose(M[:2, :2], G[[1, 3]][:, [1, 3]] + 0.1 * torch.eye(2, dtype=F64))
    assert torch.count_nonzero(M[:2, 2:]) == 0
    assert torch.allclose(M[2:, :2], G[[0, 2, 4, 5]][:, [1, 3]])
    assert torch.allclose(M[2:, 2:], torch.diag(0.2 * w[[0, 2, 4, 5]]))
    d = g.hoffman_diagnostics(D, A, 0.2, 0.1, w)
    assert d.H == pytest.approx(float(torch.linalg.matrix_norm(torch.linalg.inv(M), ord=2)), rel=1e-12)
    assert d.inactive == pytest.approx(1 / (0.2 * 1.0))


@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_hoffman_block_bounds_sandwich_H(rho):
    D = _random_dict(16, 8, seed=8, rho=rho)
    gen = torch.Generator().manual_seed(9)
    for l2 in (0.0, 0.01, 0.3):
        for _ in range(4):
            A = torch.randperm(16, generator=gen)[:4]
            w = 1 + 9 * torch.rand(16, generator=gen, dtype=F64)
            d = g.hoffman_diagnostics(D, A, 0.1, l2, w)
            assert d.lower <= d.H * (1 + 1e-10)
            assert d.H <= d.upper * (1 + 1e-10)
            if l2 > 0:
                assert d.curvature <= 1 / l2 * (1 + 1e-12)  # λ2 caps the curvature term


def test_larger_inactive_weights_shrink_hoffman_terms():
    D = _random_dict(16, 8, seed=10, rho=0.5)
    A = [0, 1, 2]
    d1 = g.hoffman_diagnostics(D, A, 0.1, 0.05, torch.ones(16, dtype=F64))
    w = torch.ones(16, dtype=F64)
    w[3:] = 10.0
    d10 = g.hoffman_diagnostics(D, A, 0.1, 0.05, w)
    assert d10.inactive == pytest.approx(d1.inactive / 10)
    assert d10.interaction == pytest.approx(d1.interaction / 10)
    assert d10.curvature == pytest.approx(d1.curvature)


def test_cross_leverage_and_leakage_by_hand():
    # Atoms e1, e2, (e1+e3)/√2, e3 in R^3; A = {e1, e2}.
    s = math.sqrt(0.5)
    D = torch.tensor([[1, 0, 0], [0, 1, 0], [s, 0, s], [0, 0, 1]], dtype=F64)
    lev = g.cross_leverage(D, [0, 1])
    assert torch.allclose(lev, torch.tensor([0.5, 0.0], dtype=F64), atol=1e-14)
    # D_Aᶜᵀ D_A = [[s, 0], [0, 0]] → Frobenius norm s.
    assert g.interaction_leakage(D, [0, 1]) == pytest.approx(s)
    # An atom inside the active span is fully shadowed.
    assert float(g.cross_leverage(D, [2, 3])[0]) == pytest.approx(1.0)


# ---------------------------------------------------------------- shrinkage, grouping, support recovery


def test_oracle_bias_matches_solver_on_orthogonal_design():
    D = torch.eye(3, dtype=F64)
    h0 = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    y = h0 @ D
    for l2, w in ((0.0, None), (0.5, torch.tensor([0.1, 0.3, 10.0], dtype=F64))):
        bias = g.oracle_bias(D, h0, [0, 1], 0.4, l2, w)
        wv = torch.ones(3, dtype=F64) if w is None else w
        # Orthogonal design: ĥ_i = (h0_i − λ1 w_i)/(1 + λ2) on S.
        hand = (h0[:2] - 0.4 * wv[:2]) / (1 + l2) - h0[:2]
        assert torch.allclose(bias, hand)
        h, _ = weighted_elastic_net(D, y, 0.4, l2, w, tol=1e-13)
        assert torch.allclose(h[:2] - h0[:2], bias, atol=1e-10)
        assert float(h[2]) == 0.0


def test_grouping_bound_holds_and_lasso_has_none():
    D = _random_dict(10, 6, seed=11, rho=0.8)
    y = torch.rand(3, generator=torch.Generator().manual_seed(12), dtype=F64) @ D[:3] * 2
    l2 = 0.05
    h, _ = weighted_elastic_net(D, y, 0.05, l2, tol=1e-13)
    bound = g.grouping_bound(D, y, h, l2)
    gap = (h.unsqueeze(0) - h.unsqueeze(1)).abs()
    assert (gap <= bound + 1e-9).all()
    lasso_bound = g.grouping_bound(D, y, h, 0.0)
    assert lasso_bound[0, 1] == math.inf and lasso_bound[0, 0] == 0


def test_pilot_weights_rule():
    pilot = torch.tensor([[2.0, 1.0, 0.0, 0.5]], dtype=F64)
    w = g.pilot_weights(pilot, gamma=1.0, w_max=100.0)
    # r = max |pilot| = 2 → w = 2/|pilot|, zeros get w_max, floored at w_min = 1.
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, 100.0, 4.0]], dtype=F64))


def test_support_recovery_orthogonal_design_is_perfect_for_mid_lambda():
    # Orthogonal atoms, no noise, magnitudes ≥ 1: every penalty recovers S for 0 < λ1 < 1 (and none for λ1 > 3).
    D = torch.eye(6, dtype=F64)
    res = g.support_recovery_curves(
        D, [0, 2], [0.5, 5.0], l2=0.1, n_trials=8, noise_std=0.0, pilot_l1=0.01, pilot_l2=0.01,
        generator=torch.Generator().manual_seed(0), tol=1e-12,
    )
    for p in g.PENALTIES:
        assert res["recovery"][p].tolist() == [1.0, 0.0]
    assert res["pilot_recall"] == 1.0
    # Orthogonal design, noiseless: the lasso shrinks each true code by λ1, so the relative shrinkage is
    # λ1·|S| / Σ_S h0 on average; at λ1 = 5 everything is zero (shrinkage 1).
    assert float(res["shrinkage"]["lasso"][1]) == pytest.approx(1.0)
    # Magnitudes lie in [1, 3], so λ1 = 0.5 shrinks the pair's mass by between 1/6 and 1/2.
    assert 1 / 6 <= float(res["shrinkage"]["lasso"][0]) <= 1 / 2


def test_support_recovery_lasso_fails_when_irrepresentable_condition_fails():
    # Zhao-Yu style design: atom 2 is (almost) the normalised sum of the true atoms 0 and 1, so
    # G_{2S} G_SS^{-1} 1 = 2/√2·0.99.. > 1: the non-negative lasso picks atom 2 for every λ1 (noiseless).
    e = torch.eye(3, dtype=F64)
    d2 = 0.99 * (e[0] + e[1]) / math.sqrt(2) + math.sqrt(1 - 0.99**2) * e[2]
    D = torch.stack([e[0], e[1], d2])
    S = [0, 1]
    irc = float((D[2:] @ D[S].T) @ torch.linalg.solve(D[S] @ D[S].T, torch.ones(2, dtype=F64)))
    assert irc > 1
    res = g.support_recovery_curves(
        D, S, np.geomspace(0.01, 0.5, 6), l2=0.05, n_trials=20, noise_std=0.0, magnitude=(1.0, 1.0),
        pilot_l1=1e-4, pilot_l2=1e-4, generator=torch.Generator().manual_seed(1), tol=1e-12, max_iter=50_000,
    )
    assert float(res["recovery"]["lasso"].max()) == 0.0
    assert float(res["recovery"]["adaptive_lasso"].max()) == 1.0
    assert irc == pytest.approx(g.nonneg_irrepresentable(D, S))


def test_bad_inputs_raise():
    D = g.planar_dictionary([0, 30])
    with pytest.raises(ValueError, match="l2"):
        g.region_jacobian(D, [0], -1.0)
    with pytest.raises(ValueError, match="active indices"):
        g.region_jacobian(D, [0, 5], 0.1)
    with pytest.raises(TypeError, match="W_dec"):
        g.region_jacobian(np.eye(2), [0], 0.1)
    with pytest.raises(ValueError, match="penalty"):
        g.penalty_setup("ridge", 0.1)
    with pytest.raises(ValueError, match="m must be <= 12"):
        g.exact_coding_map(torch.eye(13, dtype=F64), torch.zeros(1, 13, dtype=F64), 0.1)


def test_region_grid_labels_match_hand_regions_for_orthogonal_atoms():
    # Atoms e1, e2, λ1 = 1, λ2 = 0: atom i is active iff y_i > 1 (orthogonal design: soft thresholding per axis).
    D = g.planar_dictionary([0, 90])
    xs, ys, lab = g.region_grid(D, 1.0, extent=3.0, n_grid=7)  # grid -3..3 step 1; avoid the boundary at 1
    XX = xs.unsqueeze(0).expand(7, 7)
    YY = ys.unsqueeze(1).expand(7, 7)
    hand = (XX > 1).long() + 2 * (YY > 1).long()
    assert torch.equal(lab, hand)


def test_nonneg_irrepresentable_by_hand_and_weighted():
    # e1, e2 and d = (e1 + e2)/√2 · 0.8 + 0.6 e3: G_{dS} G_SS^{-1} 1 = 2 · 0.8/√2 = 1.131...
    e = torch.eye(3, dtype=F64)
    d = 0.8 * (e[0] + e[1]) / math.sqrt(2) + 0.6 * e[2]
    D = torch.stack([e[0], e[1], d])
    assert g.nonneg_irrepresentable(D, [0, 1]) == pytest.approx(1.6 / math.sqrt(2))
    # A weight of 2 on the inactive atom halves it (below 1: the weighted condition holds).
    w = torch.tensor([1.0, 1.0, 2.0], dtype=F64)
    assert g.nonneg_irrepresentable(D, [0, 1], w) == pytest.approx(0.8 / math.sqrt(2))
    # One-sided: a negatively correlated atom does not count, unlike the two-sided ∞-norm.
    D2 = torch.stack([e[0], e[1], -d])
    assert g.nonneg_irrepresentable(D2, [0, 1]) < 0


def test_amortisation_gap_is_zero_for_an_exact_encoder_and_positive_otherwise():
    # Orthogonal decoder (rows e_i): the SAE-loss minimiser is h* = relu(y − λ1 n/2)/(1 + nλ2), exactly an affine
    # map + ReLU, so an encoder set to it has no gap; any other encoder has a positive objective gap.
    from aen_lib import SAE, SAEConfig

    n = 4
    cfg = SAEConfig(d_in=n, d_sae=n, architecture="elastic_net", l1=0.1, l2=0.05)
    sae = SAE(cfg).double()
    l1, l2 = n * 0.1 / 2, n * 0.05
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(n, dtype=F64))
        sae.b_dec.zero_()
        sae.W_enc.copy_(torch.eye(n, dtype=F64) / (1 + l2))
        sae.b_enc.fill_(-l1 / (1 + l2))
    x = 2 * torch.rand(16, n, generator=torch.Generator().manual_seed(0), dtype=F64)
    gap = g.amortisation_gap(sae, x, tol=1e-13)
    assert gap.rel_code_error < 1e-8 and abs(gap.objective_gap) < 1e-10
    assert gap.support_f1 == pytest.approx(1.0)
    with torch.no_grad():
        sae.b_enc.zero_()  # no threshold: codes too large and too dense
    gap2 = g.amortisation_gap(sae, x, tol=1e-13)
    assert gap2.objective_gap > 0 and gap2.rel_code_error > 0.1
    assert gap2.l0_encoder >= gap2.l0_solver
