"""Transport family: closed forms, SciPy / POT / GeomLoss references, properties, gradients.

References are independent of losskit: sorted quantiles, the Bures formula, the entropic Gaussian closed
form (Janati et al. 2020), SciPy's assignment and HiGHS LP, POT (ot.sinkhorn, ot.emd2) and GeomLoss.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from helpers import randn64 as _rand
from helpers import simplex64 as _simplex

import losskit
from losskit import LossInputError
from losskit.transport import exact_plan, self_transport, solve, solve_matrix

D = torch.float64


def _primal(P, C, a, b, eps, rho=None):
    """<P, C> + eps KL(P | a b^T) (+ rho KL marginals), generalised KL, from the plan alone."""
    ab = a[:, None] * b[None, :]
    kl = (P * torch.log(P / ab)).sum() - P.sum() + ab.sum()
    val = (P * C).sum() + eps * kl
    if rho is not None:
        for marg, w in ((P.sum(1), a), (P.sum(0), b)):
            val = val + rho * ((marg * torch.log(marg / w)).sum() - marg.sum() + w.sum())
    return val


# ------------------------------------------------------------------------------------ 1-D exact
def test_w1d_equal_size_sorted_quantiles():
    x, y = _rand(3, 50, seed=1), _rand(3, 50, seed=2, scale=2, shift=1)
    for p in (1, 2, 3):
        ref = ((x.sort(1).values - y.sort(1).values).abs() ** p).mean(1)
        torch.testing.assert_close(losskit.wasserstein_1d(x, y, p=p, reduction="none"), ref, rtol=1e-12, atol=1e-12)


def test_w1d_weighted_matches_scipy_and_lp():
    x, y = _rand(9, seed=3), _rand(13, seed=4, shift=0.5)
    a, b = _simplex(9, seed=5), _simplex(13, seed=6)
    w1 = scipy.stats.wasserstein_distance(x.numpy(), y.numpy(), a.numpy(), b.numpy())
    assert abs(losskit.wasserstein_1d(x, y, a=a, b=b, p=1).item() - w1) < 1e-12
    C = (x[:, None] - y[None, :]).abs() ** 2
    lp = (exact_plan(C, a, b) * C).sum().item()
    assert abs(losskit.wasserstein_1d(x, y, a=a, b=b, p=2).item() - lp) < 1e-9


# ------------------------------------------------------------------------------- Gaussian closed forms
def _sqrtm(A):
    return torch.as_tensor(np.real(scipy.linalg.sqrtm(A.numpy())), dtype=D)


def _bures(m1, S1, m2, S2):
    r = _sqrtm(S1)
    return ((m1 - m2) ** 2).sum() + torch.trace(S1 + S2 - 2 * _sqrtm(r @ S2 @ r))


def _whitened(n, d, m, S, seed):
    z = _rand(n, d, seed=seed)
    z = z - z.mean(0)
    L = torch.linalg.cholesky(z.T @ z / n)
    z = z @ torch.linalg.inv(L).T                     # empirical covariance exactly I
    return m + z @ torch.linalg.cholesky(S).T          # empirical mean m, covariance S


def test_bures_w2_between_gaussian_samples():
    # x with exact empirical moments (m1, S1); y = T(x) with T the Bures (linear, gradient of a convex)
    # map, so the identity coupling is optimal and W2^2 of the empirical measures is the Bures formula.
    d, n = 3, 40
    A = _rand(d, d, seed=7)
    S1 = A @ A.T + 0.5 * torch.eye(d, dtype=D)
    B_ = _rand(d, d, seed=8)
    S2 = B_ @ B_.T + 0.3 * torch.eye(d, dtype=D)
    m1, m2 = _rand(d, seed=9), _rand(d, seed=10)
    x = _whitened(n, d, m1, S1, seed=11)
    r = _sqrtm(S1)
    ri = torch.linalg.inv(r)
    T = ri @ _sqrtm(r @ S2 @ r) @ ri
    y = m2 + (x - m1) @ T.T
    ref = _bures(m1, S1, m2, S2).item()
    assert abs(losskit.exact_ot(x, y).item() - ref) < 1e-9
    ot_small = losskit.sinkhorn(x, y, eps=1e-3, tol=1e-10, max_iter=20000).item()
    assert 0 <= ot_small - ref <= 1e-3 * math.log(n) + 1e-9


def _entropic_gaussian(m1, A, m2, B, eps):
    """Janati et al. 2020: cost ||x - y||^2, eps KL(P | a (x) b), sigma^2 = eps / 2."""
    d = A.shape[0]
    s2 = eps / 2
    r = _sqrtm(A)
    I = torch.eye(d, dtype=D)
    Ds = _sqrtm(4 * r @ B @ r + s2 ** 2 * I)
    return (((m1 - m2) ** 2).sum() + torch.trace(A) + torch.trace(B) - torch.trace(Ds)
            + d * s2 * (1 - math.log(2 * s2)) + s2 * torch.logdet(Ds + s2 * I)).item()


@pytest.mark.slow
def test_entropic_ot_between_gaussians_closed_form():
    # Quantile grids of N(m1, s1^2) and N(m2, s2^2) (deterministic, n = 1500 points each) approximate
    # the continuous problem to O(1/n); the closed form is the continuous value.
    n = 1500
    q = torch.as_tensor(scipy.stats.norm.ppf((np.arange(n) + 0.5) / n), dtype=D)
    s1, s2, m1, m2 = 1.0, 1.7, 0.3, -0.4
    x, y = (m1 + s1 * q)[:, None], (m2 + s2 * q)[:, None]
    for eps in (0.5, 2.0):
        ref = _entropic_gaussian(torch.tensor([m1], dtype=D), torch.tensor([[s1 ** 2]], dtype=D),
                                 torch.tensor([m2], dtype=D), torch.tensor([[s2 ** 2]], dtype=D), eps)
        val = losskit.sinkhorn(x, y, eps=eps, tol=1e-9).item()
        assert abs(val - ref) < 5e-3 * abs(ref), (eps, val, ref)


# --------------------------------------------------------------------------- entropic solver checks
def test_eps_to_zero_converges_to_exact_ot():
    x, y = _rand(2, 15, 2, seed=12), _rand(2, 15, 2, seed=13, shift=0.7)
    w = losskit.exact_ot(x, y, reduction="none")
    gaps = []
    for eps in (0.3, 0.1, 0.05):
        v = losskit.sinkhorn(x, y, eps=eps, tol=1e-4, max_iter=5000, reduction="none")
        gap = v - w
        assert bool((gap >= -1e-3).all()) and bool((gap <= eps * math.log(15) + 1e-3).all()), (eps, gap)
        gaps.append(gap.max().item())
    assert gaps[2] < gaps[1] < gaps[0]


@pytest.mark.parametrize("online", [False, True])
def test_marginals_to_tolerance_and_strong_duality(online):
    x, y = _rand(3, 40, 2, seed=14), _rand(3, 30, 2, seed=15, scale=0.7, shift=0.5)
    a, b = _simplex(3, 40, seed=16), _simplex(3, 30, seed=17)
    for tol in (1e-3, 1e-8):
        r = solve(x, y, a, b, eps=0.1, tol=tol, online=online)
        assert bool(r.converged.all()) and bool((r.marginal_error < tol).all())
        assert bool((r.marginal_errors() < 3 * tol).all())
    P = r.plan()
    C = torch.cdist(x, y) ** 2
    for k in range(3):
        torch.testing.assert_close(r.value[k], _primal(P[k], C[k], a[k], b[k], 0.1), rtol=1e-7, atol=1e-9)
    # rows are exact after the final f-update
    torch.testing.assert_close(P.sum(2), a, rtol=1e-12, atol=1e-14)


def test_matches_pot_sinkhorn_and_emd():
    ot = pytest.importorskip("ot")
    x, y = _rand(30, 3, seed=18), _rand(35, 3, seed=19, shift=0.4)
    a, b = _simplex(30, seed=20), _simplex(35, seed=21)
    M = (torch.cdist(x, y) ** 2).numpy()
    P_pot = ot.sinkhorn(a.numpy(), b.numpy(), M, 0.2, stopThr=1e-13, numItermax=100000)
    r = solve(x, y, a, b, eps=0.2, tol=1e-12)
    np.testing.assert_allclose(r.plan()[0].numpy(), P_pot, atol=1e-12)
    assert abs(r.linear_cost().item() - float(ot.sinkhorn2(a.numpy(), b.numpy(), M, 0.2, stopThr=1e-13,
                                                          numItermax=100000))) < 1e-9
    emd = float(ot.emd2(a.numpy(), b.numpy(), M))
    assert abs(losskit.exact_ot(x, y, a=a, b=b).item() - emd) < 1e-9
    # uniform n = m goes through linear_sum_assignment
    x2 = _rand(20, 2, seed=22)
    M2 = (torch.cdist(x2, y[:20, :2]) ** 2).numpy()
    u = np.full(20, 1 / 20)
    assert abs(losskit.exact_ot(x2, y[:20, :2]).item() - float(ot.emd2(u, u, M2))) < 1e-10


@pytest.mark.slow
def test_matches_geomloss_samplesloss():
    geomloss = pytest.importorskip("geomloss")
    x, y = _rand(40, 2, seed=23), _rand(30, 2, seed=24, shift=0.5)
    blur = 0.4
    # GeomLoss: cost |x - y|^2 / 2 and eps = blur^2; ours: cost |x - y|^2 so OT_{2 eps}(2c) = 2 OT_eps(c).
    for debias, fn in ((False, losskit.sinkhorn), (True, losskit.sinkhorn_divergence)):
        L = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.995, debias=debias, backend="tensorized")
        ref = 2 * L(x, y).item()
        val = fn(x, y, eps=2 * blur ** 2, tol=1e-12).item()
        assert abs(val - ref) < 1e-4 * abs(ref) + 1e-8, (debias, val, ref)


def test_translation_identity():
    x, y = _rand(2, 20, 3, seed=25), _rand(2, 15, 3, seed=26, shift=0.3)
    t = torch.tensor([0.5, -1.0, 2.0], dtype=D)
    base = losskit.sinkhorn(x, y, eps=0.3, tol=1e-12, reduction="none")
    moved = losskit.sinkhorn(x + t, y, eps=0.3, tol=1e-12, reduction="none")
    ref = base + (t ** 2).sum() + 2 * ((x.mean(1) - y.mean(1)) * t).sum(-1)
    torch.testing.assert_close(moved, ref, rtol=1e-10, atol=1e-10)


def test_batched_equals_loop_and_zero_weight_padding():
    x, y = _rand(3, 12, 2, seed=27), _rand(3, 9, 2, seed=28, shift=0.2)
    batched = losskit.sinkhorn(x, y, eps=0.2, tol=1e-12, reduction="none")
    loop = torch.stack([losskit.sinkhorn(x[k], y[k], eps=0.2, tol=1e-12) for k in range(3)])
    torch.testing.assert_close(batched, loop, rtol=1e-10, atol=1e-12)
    # pad problem 0 with 4 far-away points of zero weight: same value
    pad = torch.cat([x[0], torch.full((4, 2), 50.0, dtype=D)])
    a = torch.cat([torch.full((12,), 1 / 12, dtype=D), torch.zeros(4, dtype=D)])
    v = losskit.sinkhorn(pad, y[0], a=a, eps=0.2, tol=1e-12, scaling=None)
    torch.testing.assert_close(v, batched[0], rtol=1e-9, atol=1e-12)


def test_online_equals_dense_and_user_cost():
    x, y = _rand(2, 50, 3, seed=29), _rand(2, 40, 3, seed=30, shift=0.2)
    kw = dict(eps=0.1, tol=1e-11)
    d = solve(x, y, online=False, **kw)
    o = solve(x, y, online=True, block_elems=800, **kw)
    torch.testing.assert_close(d.value, o.value, rtol=1e-10, atol=1e-12)
    u = solve(x, y, cost=lambda xb, yy: ((xb[:, :, None] - yy[:, None]) ** 2).sum(-1), **kw)
    torch.testing.assert_close(u.value, d.value, rtol=1e-10, atol=1e-12)
    m = solve_matrix(torch.cdist(x, y) ** 2, **kw)
    torch.testing.assert_close(m.value, d.value, rtol=1e-10, atol=1e-12)
    # p = 1 against POT on the same cost matrix
    ot = pytest.importorskip("ot")
    r1 = solve(x[0], y[0], p=1, eps=0.05, tol=1e-12)
    M = torch.cdist(x[0], y[0]).numpy()
    P = ot.sinkhorn(np.full(50, 1 / 50), np.full(40, 1 / 40), M, 0.05, stopThr=1e-14, numItermax=200000,
                    method="sinkhorn_log")
    np.testing.assert_allclose(r1.plan()[0].numpy(), P, atol=1e-10)


@pytest.mark.parametrize("source", ["matrix", "points", "online", "user_cost"])
@pytest.mark.parametrize("rho", [None, 0.5])
def test_fused_sweep_equals_two_logsumexp_passes(source, rho, monkeypatch):
    """One fused sweep (row soft-min, then column soft-min of the new f from the same exp block) against
    two plain float64 torch.logsumexp passes; the last case puts one target point so far away that its
    column sum underflows the row-relative scale, so the exact column pass must take over."""
    from losskit.transport.costs import Cost
    from losskit.transport.sinkhorn import _Kernel

    exact_cols = []
    plain = _Kernel.softmin_cols
    monkeypatch.setattr(_Kernel, "softmin_cols", lambda self, *args: exact_cols.append(1) or plain(self, *args))
    for far in (False, True):
        x, y = _rand(2, 23, 3, seed=70), _rand(2, 17, 3, seed=71, shift=0.3)
        if far:
            y[:, 0] = 40.0
        a, b = _simplex(2, 23, seed=72), _simplex(2, 17, seed=73)
        g = _rand(2, 17, seed=74, scale=0.1)
        eps = torch.tensor([0.5, 0.3], dtype=D)
        C = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
        cost = {"matrix": Cost(matrix=C), "points": Cost(x, y), "online": Cost(x, y),
                "user_cost": Cost(x, y, fn=lambda u, v: ((u[:, :, None] - v[:, None]) ** 2).sum(-1))}[source]
        kern = _Kernel(cost, online=source != "matrix" and source != "points", block_elems=5 * 17)
        e1, e3 = eps.view(2, 1), eps.view(2, 1, 1)
        lam = 1.0 if rho is None else rho / (rho + e1)
        s, t = kern.sweep(a.log(), b.log(), g, eps, lam)
        s_ref = -e1 * torch.logsumexp(b.log()[:, None] + (g[:, None] - C) / e3, 2)
        t_ref = -e1 * torch.logsumexp(a.log()[:, :, None] + ((lam * s_ref)[:, :, None] - C) / e3, 1)
        torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(t, t_ref, rtol=1e-12, atol=1e-11)
        assert len(exact_cols) == int(far)         # the exact column pass ran only when needed


def test_barycentric_projection_and_plan():
    x, y = _rand(15, 2, seed=31), _rand(15, 2, seed=32, shift=1.0)
    r = solve(x, y, eps=0.05, tol=1e-10)
    P = r.plan()[0]
    torch.testing.assert_close(r.barycentric_projection()[0], (P @ y) / P.sum(1, keepdim=True))


# ------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kw", [dict(p=2), dict(p=1.5), dict(p=2, online=True), dict(p=2, rho=1.0),
                                dict(p=2, differentiate="unroll"),
                                dict(cost=lambda u, v: ((u[:, :, None] - v[:, None]) ** 2).sum(-1) ** 0.75)],
                         ids=["p2", "p1.5", "online", "unbalanced", "unroll", "user_cost"])
def test_gradients_finite_differences(kw):
    x = _rand(2, 6, 3, seed=33).requires_grad_()
    y = _rand(2, 5, 3, seed=34, shift=0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: solve(x, y, eps=0.7, tol=1e-13, **kw).value, (x, y),
                                    eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradients_cost_matrix_weights_and_divergence():
    C = torch.rand(2, 5, 4, dtype=D, generator=torch.Generator().manual_seed(35)).requires_grad_()
    assert torch.autograd.gradcheck(lambda C: solve_matrix(C, eps=0.3, tol=1e-13).value, (C,))
    # unbalanced: a, b are free variables, the gradient is the envelope formula
    a, b = (_simplex(2, 5, seed=36) * 1.3).requires_grad_(), _simplex(2, 4, seed=37).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: solve_matrix(C.detach(), a, b, eps=0.3, rho=0.8, tol=1e-13).value,
                                    (a, b))
    # balanced: the derivative along the simplex is f (up to the constant the simplex removes)
    a0, b0 = _simplex(5, seed=38), _simplex(4, seed=39)
    r = solve_matrix(C.detach()[0], a0, b0, eps=0.3, tol=1e-13)
    v = torch.randn(5, dtype=D)
    v = v - v.mean()
    h = 1e-6
    fd = (solve_matrix(C.detach()[0], a0 + h * v, b0, eps=0.3, tol=1e-13).value
          - solve_matrix(C.detach()[0], a0 - h * v, b0, eps=0.3, tol=1e-13).value) / (2 * h)
    assert abs(fd.item() - (r.f[0] * v).sum().item()) < 1e-6
    x = _rand(7, 2, seed=40).requires_grad_()
    y = _rand(6, 2, seed=41, shift=0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: losskit.sinkhorn_divergence(x, y, eps=0.5, tol=1e-13), (x, y))


def test_envelope_and_unrolled_agree_and_sq_grad_formula():
    x = _rand(20, 2, seed=42).requires_grad_()
    y = _rand(25, 2, seed=43, shift=0.3)
    ge = torch.autograd.grad(losskit.sinkhorn(x, y, eps=0.1, tol=1e-12), x)[0]
    gu = torch.autograd.grad(losskit.sinkhorn(x, y, eps=0.1, tol=1e-12, differentiate="unroll"), x)[0]
    torch.testing.assert_close(ge, gu, rtol=1e-7, atol=1e-9)
    P = solve(x.detach(), y, eps=0.1, tol=1e-12).plan()[0]
    ref = 2 * (P.sum(1, keepdim=True) * x.detach() - P @ y)        # sum_j P_ij 2 (x_i - y_j)
    torch.testing.assert_close(ge, ref, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------- divergence, unbalanced
@pytest.mark.slow
def test_sinkhorn_divergence_zero_nonneg_symmetric():
    x = _rand(3, 20, 2, seed=44)
    y = _rand(3, 25, 2, seed=45, shift=0.2, scale=1.2)
    # (alternating Sinkhorn on the cross term OT(x, x) converges slowly at small eps; eps = 1 here)
    for rho in (None, 1.0):
        torch.testing.assert_close(losskit.sinkhorn_divergence(x, x, eps=1.0, rho=rho, tol=1e-12, reduction="none"),
                                   torch.zeros(3, dtype=D), atol=1e-10, rtol=0)
    s = losskit.sinkhorn_divergence(x, y, eps=0.2, tol=1e-12, reduction="none")
    assert bool((s > 0).all())
    torch.testing.assert_close(s, losskit.sinkhorn_divergence(y, x, eps=0.2, tol=1e-12, reduction="none"),
                               rtol=1e-9, atol=1e-12)
    # self_transport (symmetric averaged iteration) equals the general solver on (x, x)
    torch.testing.assert_close(self_transport(x, eps=1.0, tol=1e-12).value,
                               solve(x, x, eps=1.0, tol=1e-12).value, rtol=1e-9, atol=1e-12)


def test_sinkhorn_divergence_large_eps_is_half_energy_distance():
    # eps -> infinity with p = 1: S_eps -> MMD^2 / 2 with kernel -|x - y|, half the energy distance.
    x, y = _rand(15, 2, seed=46), _rand(12, 2, seed=47, shift=0.5)
    e = lambda u, v: torch.cdist(u, v).mean()  # noqa: E731
    half_energy = 0.5 * (2 * e(x, y) - e(x, x) - e(y, y))
    s = losskit.sinkhorn_divergence(x, y, p=1, eps=1e5, tol=1e-12, scaling=None)
    assert abs(s.item() - half_energy.item()) < 1e-3 * half_energy.item()


def test_unbalanced_primal_dual_and_rho_limit():
    x, y = _rand(12, 2, seed=48), _rand(9, 2, seed=49, shift=0.4)
    a, b = _simplex(12, seed=50) * 1.5, _simplex(9, seed=51)
    r = solve(x, y, a, b, eps=0.2, rho=0.7, tol=1e-13)
    C = torch.cdist(x, y) ** 2
    P = r.plan()[0]
    torch.testing.assert_close(r.value[0], _primal(P, C, a, b, 0.2, rho=0.7), rtol=1e-9, atol=1e-12)
    assert P.sum() <= min(a.sum(), b.sum()) + 1e-12
    bal = solve(x, y, eps=0.2, tol=1e-12).value
    far = solve(x, y, eps=0.2, rho=1e6, tol=1e-12).value
    assert abs((far - bal).item()) < 1e-4


# ----------------------------------------------------------------------------------- sliced, exact
def test_sliced_wasserstein():
    x = _rand(2, 30, 1, seed=52)
    y = _rand(2, 40, 1, seed=53, shift=1)
    torch.testing.assert_close(losskit.sliced_wasserstein(x, y, n_projections=3, reduction="none"),
                               losskit.wasserstein_1d(x[..., 0], y[..., 0], reduction="none"))
    # pure translation: W2^2 along theta is <theta, t>^2; with an orthonormal basis, mean = |t|^2 / d
    z = _rand(50, 4, seed=54)
    t = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D)
    v = losskit.sliced_wasserstein(z, z + t, projections=torch.eye(4, dtype=D))
    assert abs(v.item() - (t ** 2).sum().item() / 4) < 1e-12
    mc = losskit.sliced_wasserstein(z, z + t, n_projections=4000)
    assert abs(mc.item() - (t ** 2).sum().item() / 4) < 0.1 * (t ** 2).sum().item() / 4


def test_bad_inputs_named():
    x, y = _rand(5, 2), _rand(6, 2)
    with pytest.raises(LossInputError, match="^b:"):
        losskit.sinkhorn(x, y, b=torch.full((6,), 0.5, dtype=D))
    with pytest.raises(LossInputError, match="^rho:"):
        losskit.sinkhorn(x, y, rho=-1.0)
    with pytest.raises(LossInputError, match="^scaling:"):
        losskit.sinkhorn(x, y, scaling=1.5)
    with pytest.raises(LossInputError, match="^p:"):
        losskit.wasserstein_1d(x[:, 0], y[:, 0], p=0.5)


# ------------------------------------------------------------------------------ seed objectives
@pytest.mark.slow
def test_monge_gap_zero_for_convex_gradient_positive_for_rotation():
    x = _rand(30, 2, seed=55)
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=D)                 # SPD: x -> Ax + c = grad of convex
    eps = 0.05
    g_opt = losskit.monge_gap(x, x @ A.T + 1.0, eps=eps, tol=1e-5, max_iter=3000).item()
    assert -eps * math.log(30) - 1e-6 <= g_opt <= 1e-3
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D)                # rotation by 90 degrees: not optimal
    g_rot = losskit.monge_gap(x, x @ R.T, eps=eps, tol=1e-5, max_iter=3000).item()
    # independent check: the exact gap with an LP
    exact = (((x - x @ R.T) ** 2).sum(1).mean() - losskit.exact_ot(x, x @ R.T)).item()
    assert g_rot > 0.5 and abs(g_rot - exact) < eps * math.log(30) + 1e-3


def test_sinkhorn_kd_is_ot_between_prediction_clouds():
    s, t = _rand(8, 5, seed=56), _rand(8, 5, seed=57)
    tau = 2.0
    ref = losskit.sinkhorn(torch.softmax(s / tau, -1), torch.softmax(t / tau, -1), eps=0.05, tol=1e-10)
    val = losskit.sinkhorn_kd(s, t, temperature=tau, eps=0.05, tol=1e-10)
    torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-12)
    assert losskit.sinkhorn_kd(s, t, reduction="none").shape == (8,)
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(0))
    mixed = losskit.sinkhorn_kd(s, t, y, temperature=tau, alpha=0.3, eps=0.05, tol=1e-10)
    ce = torch.nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(mixed, 0.3 * ref + 0.7 * ce, rtol=1e-10, atol=1e-12)
    assert losskit.get("sinkhorn_kd").family == "distillation"


def test_quadratic_ot_matches_pot_smooth_and_primal():
    ot = pytest.importorskip("ot")
    x, y = _rand(12, 2, seed=58), _rand(10, 2, seed=59, shift=0.5)
    a, b = _simplex(12, seed=60), _simplex(10, seed=61)
    M = torch.cdist(x, y) ** 2
    gamma = 0.5
    P = torch.as_tensor(ot.smooth.smooth_ot_dual(a.numpy(), b.numpy(), M.numpy(), gamma, reg_type="l2",
                                                 stopThr=1e-12, numItermax=10000), dtype=D)
    primal = (P * M).sum() + 0.5 * gamma * (P * P).sum()
    val = losskit.quadratic_ot(x, y, a=a, b=b, gamma=gamma)
    assert abs(val.item() - primal.item()) < 1e-6
    assert (P == 0).any()                                              # the plan is sparse
    xr = x.clone().requires_grad_()
    g = torch.autograd.grad(losskit.quadratic_ot(xr, y, a=a, b=b, gamma=gamma), xr)[0]
    h = 1e-5
    e = torch.zeros_like(x)
    e[3, 1] = h
    fd = (losskit.quadratic_ot(x + e, y, a=a, b=b, gamma=gamma) - losskit.quadratic_ot(x - e, y, a=a, b=b,
                                                                                        gamma=gamma)) / (2 * h)
    assert abs(fd.item() - g[3, 1].item()) < 1e-5


# ------------------------------------------------------------------------------------- edges (issue: trust)
_POINT_OBJECTIVES = ["sinkhorn", "sinkhorn_divergence", "monge_gap", "exact_ot", "quadratic_ot", "sparse_ot",
                     "sliced_wasserstein"]
_SOLVERS = ["sinkhorn", "sinkhorn_divergence", "monge_gap", "exact_ot", "quadratic_ot", "sparse_ot", "whitened_ot"]


def _cloud(n=4, d=2, seed=70, dtype=D, shift=0.0):
    return _rand(n, d, seed=seed, shift=shift).to(dtype)


@pytest.mark.parametrize("name", _POINT_OBJECTIVES + ["wasserstein_1d", "whitened_ot"])
@pytest.mark.parametrize("p", [0.0, -1.0, 0.5])
def test_one_cost_exponent_rule(name, p):
    # one rule, p >= 1, for every objective (sinkhorn & co accepted p <= 0, whitened_ot p in (0, 1), and
    # exact_ot and wasserstein_1d refused both)
    x, y = _cloud(), _cloud(seed=71, shift=0.5)
    if name == "wasserstein_1d":
        x, y = x[:, 0], y[:, 0]
    if name == "whitened_ot":
        x, y = _cloud(6), _cloud(5, seed=71, shift=0.5)
    with pytest.raises(LossInputError, match="^p: expected a real number in \\[1, inf\\)"):
        losskit.get(name).fn(x, y, p=p)
    with pytest.raises(LossInputError, match="^p:"):
        solve(_cloud(), _cloud(seed=71), p=p)


def test_exponent_one_accepted_everywhere():
    x, y = _cloud(), _cloud(seed=71, shift=0.5)
    for name in _POINT_OBJECTIVES:
        assert torch.isfinite(losskit.get(name).fn(x, y, p=1.0)), name
    assert torch.isfinite(losskit.wasserstein_1d(x[:, 0], y[:, 0], p=1))


@pytest.mark.parametrize("name", _SOLVERS)
def test_solvers_refuse_meta_tensors(name):
    # they read values (convergence tests, SciPy): a LossInputError, not "Tensor.item() cannot be called"
    x, y = _cloud(6).float().to("meta"), _cloud(5, seed=71).float().to("meta")
    with pytest.raises(LossInputError, match="meta"):
        losskit.get(name).fn(x, y)


def test_sorting_objectives_run_on_meta():
    x, y = _rand(3, 7, seed=72).float().to("meta"), _rand(3, 5, seed=73).float().to("meta")
    out = losskit.wasserstein_1d(x, y, a=torch.ones(3, 7, device="meta"), reduction="none")
    assert out.device.type == "meta" and out.shape == (3,)
    out = losskit.sliced_wasserstein(x[..., None].expand(3, 7, 2), y[..., None].expand(3, 5, 2), reduction="none")
    assert out.device.type == "meta" and out.shape == (3,)


@pytest.mark.parametrize("name", _POINT_OBJECTIVES + ["wasserstein_1d"])
@pytest.mark.parametrize("which", ["x", "y"])
def test_costs_overflowing_float32_name_the_input(name, which):
    # float32 points of magnitude 1e30: ||x - y||^2 overflows. Was a NaN loss (and "C:" for exact_ot).
    x, y = _cloud(dtype=torch.float32), _cloud(seed=71, shift=0.5, dtype=torch.float32)
    if name == "wasserstein_1d":
        x, y = x[:, 0], y[:, 0]
    big = {"x": x, "y": y}
    big[which] = big[which] * 1e30
    with pytest.raises(LossInputError, match=f"^{which}: expected points whose pairwise costs"):
        losskit.get(name).fn(big["x"], big["y"])


def test_w1d_p1_at_1e30_is_finite():
    # p = 1 takes no power: the distance of float32 samples of magnitude 1e30 is representable
    x = (_rand(2, 6, seed=74) * 1e30).float().requires_grad_()
    y = (_rand(2, 6, seed=75) * 1e30).float()
    w = losskit.wasserstein_1d(x, y, p=1)
    ref = (x.detach().double().sort(1).values - y.double().sort(1).values).abs().mean()
    assert torch.isfinite(w) and abs(w.item() / ref.item() - 1) < 1e-5
    w.backward()
    assert torch.isfinite(x.grad).all()


def test_exact_ot_user_cost_overflow_names_cost():
    x, y = _cloud(), _cloud(seed=71)
    with pytest.raises(LossInputError, match="^cost:"):
        losskit.exact_ot(x, y, cost=lambda a, b: torch.full((1, 4, 4), float("inf"), dtype=D))


def test_monge_gap_point_count_mismatch_names_y():
    # with weights a, the mismatch was reported as "b:", an argument monge_gap does not have
    x, y = _cloud(5), _cloud(4, seed=71)
    with pytest.raises(LossInputError, match="^y:"):
        losskit.monge_gap(x, y, a=torch.full((5,), 0.2, dtype=D))


@pytest.mark.parametrize("over", [dict(max_iter=10.0), dict(max_iter=0), dict(scaling=1.0), dict(tol=0.0),
                                  dict(method="exact"), dict(differentiate="implicit"), dict(online="yes"),
                                  dict(eps=torch.tensor([0.1, -0.1], dtype=D)), dict(cost="sq")])
def test_solver_option_domains(over):
    # the objectives (declared domains) and the public solver (the same domains) refuse the same values
    x, y = _cloud().expand(2, 4, 2), _cloud(seed=71).expand(2, 4, 2)
    name = next(iter(over))
    with pytest.raises(LossInputError, match=f"^{name}:"):
        losskit.sinkhorn(x, y, **over)
    with pytest.raises(LossInputError, match=f"^{name}:"):
        solve(x, y, **over)


def test_sliced_wasserstein_compiles_fullgraph():
    # the seeded directions are a graph constant (torch.Generator cannot be created while tracing)
    x, y = _cloud(6, 3, dtype=torch.float32), _cloud(5, 3, seed=71, dtype=torch.float32)
    torch._dynamo.reset()
    f = torch.compile(losskit.sliced_wasserstein, backend="aot_eager", fullgraph=True)
    for seed, L in ((0, 8), (1, 8), (2, 5)):       # other seeds and counts: the same graph, no failure
        torch.testing.assert_close(f(x, y, n_projections=L, seed=seed),
                                   losskit.sliced_wasserstein(x, y, n_projections=L, seed=seed))


def test_split_modules_keep_import_paths():
    import importlib

    quadratic, sinkhorn, sparse = (importlib.import_module(f"losskit.transport.{m}")
                                   for m in ("quadratic", "sinkhorn", "sparse"))   # (the package's sinkhorn is the objective)
    assert quadratic.sparse_ot is sparse.sparse_ot is losskit.sparse_ot
    assert quadratic.solve_sparse is sparse.solve_sparse
    assert sinkhorn.OTResult is losskit.transport.OTResult
    for name in ("_Kernel", "_solve", "_point_cost", "_options_check", "BLOCK_ELEMS", "DENSE_BYTES", "CLAMP",
                 "_Coupling", "_sinkhorn", "_sinkhorn_symmetric", "_sinkhorn_newton"):
        assert hasattr(sinkhorn, name), name
