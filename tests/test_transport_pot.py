"""Issue 19's transport objectives against POT 0.9.7 (and GeomLoss 0.3.1), float64.

References are POT's / GeomLoss's own functions (installed with the bench extra; skipped without them),
never losskit: the Gaussian closed form, the unbalanced Sinkhorn divergence, entropic (fused)
Gromov-Wasserstein with its gradients, and entropic partial OT.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

import losskit
from losskit.transport import gaussian_w2

D = torch.float64


def _rand(*shape, seed, shift=0.0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D) + shift


def _simplex(n, seed):
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=D) + 0.1
    return w / w.sum()


# ------------------------------------------------------------------------------------- Bures-Wasserstein
@pytest.mark.parametrize("d, n, m, reg", [(3, 20, 15, 1e-6), (5, 4, 30, 1e-2), (1, 7, 9, 0.0), (4, 50, 50, 1e-6)])
def test_bures_wasserstein_is_pot_squared(d, n, m, reg):
    ot = pytest.importorskip("ot")
    x, y = _rand(n, d, seed=1), _rand(m, d, seed=2, shift=0.7, scale=1.5)
    a, b = _simplex(n, 3), _simplex(m, 4)
    for wa, wb in ((None, None), (a, b)):
        ref = ot.gaussian.empirical_bures_wasserstein_distance(
            x.numpy(), y.numpy(), reg=reg, ws=None if wa is None else wa.numpy()[:, None],
            wt=None if wb is None else wb.numpy()[:, None])
        got = losskit.bures_wasserstein(x, y, a=wa, b=wb, reg=reg)
        torch.testing.assert_close(got, torch.tensor(float(ref) ** 2, dtype=D), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # POT's sqrtm of the rank-one case (not compared)
def test_gaussian_w2_is_the_scipy_sqrtm_formula_and_batched():
    ot = pytest.importorskip("ot")
    B, d = 4, 3
    A = _rand(B, d, d, seed=5)
    S1 = A @ A.transpose(1, 2) + 0.1 * torch.eye(d, dtype=D)
    C = _rand(B, d, d, seed=6)
    S2 = C @ C.transpose(1, 2)                       # positive semi-definite allowed for the second
    S2[0] = torch.outer(C[0, 0], C[0, 0])            # rank one
    m1, m2 = _rand(B, d, seed=7), _rand(B, d, seed=8)
    got = gaussian_w2(m1, S1, m2, S2)
    for k in range(B):
        r = scipy.linalg.sqrtm(S1[k].numpy())
        ref = ((m1[k] - m2[k]) ** 2).sum().item() + np.trace(S1[k].numpy() + S2[k].numpy()
                                                            - 2 * np.real(scipy.linalg.sqrtm(r @ S2[k].numpy() @ r)))
        assert abs(got[k].item() - ref) < 1e-8
    w = ot.gaussian.bures_wasserstein_distance(m1.numpy(), m2.numpy(), S1.numpy(), S2.numpy(), paired=True)
    torch.testing.assert_close(got[1:], torch.as_tensor(w[1:] ** 2), rtol=1e-9, atol=1e-9)


def test_bures_wasserstein_gradient_matches_pot_torch_backend():
    ot = pytest.importorskip("ot")
    x, y = _rand(12, 3, seed=9).requires_grad_(), _rand(10, 3, seed=10, shift=0.5).requires_grad_()
    w = ot.gaussian.empirical_bures_wasserstein_distance(x, y, reg=1e-6)
    gx, gy = torch.autograd.grad(w ** 2, (x, y))
    lx, ly = torch.autograd.grad(losskit.bures_wasserstein(x, y, reg=1e-6), (x, y))
    torch.testing.assert_close(lx, gx, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ly, gy, rtol=1e-7, atol=1e-9)


def test_bures_wasserstein_edges():
    x = _rand(30, 2, seed=11)
    # identical clouds: 0 (up to rounding, reg included on both sides)
    assert abs(losskit.bures_wasserstein(x, x).item()) < 1e-10
    # a translation: exactly the squared shift
    assert abs(losskit.bures_wasserstein(x, x + torch.tensor([3.0, -4.0], dtype=D)).item() - 25.0) < 1e-9
    # singular covariance without reg is refused naming x; with reg it is defined
    flat = torch.cat([x[:, :1], torch.zeros(30, 1, dtype=D)], 1)
    with pytest.raises(losskit.LossInputError, match="^x:"):
        losskit.bures_wasserstein(flat, x, reg=0.0)
    assert torch.isfinite(losskit.bures_wasserstein(flat, x, reg=1e-6))


# ----------------------------------------------------------------------- unbalanced Sinkhorn divergence
def _kl(p, q):
    """Generalised KL, sum p log(p/q) - p + q (POT's nx.kl_div has no mass terms by default)."""
    return float(np.sum(p * np.log(p / q)) - p.sum() + q.sum())


def _pot_unbalanced(ot, a, b, C, eps, rho):
    """The primal OT_eps,rho at POT's plan (ot.unbalanced.sinkhorn_unbalanced, reg_type='kl': reference a b^T)."""
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg=eps, reg_m=rho, reg_type="kl", numItermax=200000,
                                          stopThr=1e-15)
    return float((P * C).sum()) + eps * _kl(P, np.outer(a, b)) + rho * _kl(P.sum(1), a) + rho * _kl(P.sum(0), b)


@pytest.mark.parametrize("eps, rho", [(0.5, 1.0), (0.2, 0.3), (1.0, 10.0)])
def test_unbalanced_sinkhorn_divergence_matches_pot(eps, rho):
    ot = pytest.importorskip("ot")
    n, m = 9, 7
    x, y = _rand(n, 2, seed=21), _rand(m, 2, seed=22, shift=0.6)
    a, b = _simplex(n, 23), 1.7 * _simplex(m, 24)                 # total masses 1 and 1.7
    xn, yn, an, bn = x.numpy(), y.numpy(), a.numpy(), b.numpy()
    C = lambda u, v: ot.dist(u, v)                                  # noqa: E731 - squared Euclidean
    ref = (_pot_unbalanced(ot, an, bn, C(xn, yn), eps, rho) - 0.5 * _pot_unbalanced(ot, an, an, C(xn, xn), eps, rho)
           - 0.5 * _pot_unbalanced(ot, bn, bn, C(yn, yn), eps, rho) + 0.5 * eps * (an.sum() - bn.sum()) ** 2)
    got = losskit.unbalanced_sinkhorn_divergence(x, y, a=a, b=b, eps=eps, rho=rho, tol=1e-13, max_iter=100000)
    assert abs(got.item() - ref) < 1e-9 * max(1.0, abs(ref)), (got.item(), ref)
    # the registered name is sinkhorn_divergence(rho=...)
    same = losskit.sinkhorn_divergence(x, y, a=a, b=b, eps=eps, rho=rho, tol=1e-13, max_iter=100000)
    assert got.item() == same.item()
    # and the unbalanced OT term alone is POT's primal
    ot_xy = losskit.sinkhorn(x, y, a=a, b=b, eps=eps, rho=rho, tol=1e-13, max_iter=100000)
    assert abs(ot_xy.item() - _pot_unbalanced(ot, an, bn, C(xn, yn), eps, rho)) < 1e-9


def test_unbalanced_sinkhorn_divergence_geomloss_reach_convention():
    geomloss = pytest.importorskip("geomloss")
    x, y = _rand(40, 2, seed=25), _rand(30, 2, seed=26, shift=0.5)
    blur, reach = 0.5, 1.0
    # GeomLoss: cost |x - y|^2 / 2, eps = blur^2, rho = reach^2; a slow annealing (scaling 0.99) leaves it
    # near its fixed point at the final eps (GeomLoss runs no extra iterations there)
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, reach=reach, scaling=0.99, debias=True,
                                backend="tensorized")
    ref = loss(x, y).item()
    got = losskit.unbalanced_sinkhorn_divergence(x, y, eps=2 * blur ** 2, rho=2 * reach ** 2, tol=1e-12,
                                                 max_iter=100000)
    # its last iterate is 3e-4 relative from the fixed point here (0.18816 vs 0.18810; 0.18873 at scaling 0.9)
    assert abs(0.5 * got.item() - ref) < 1e-3 * abs(ref), (0.5 * got.item(), ref)


def test_unbalanced_sinkhorn_divergence_edges():
    x = _rand(10, 2, seed=27)
    assert abs(losskit.unbalanced_sinkhorn_divergence(x, x.clone(), tol=1e-12).item()) < 1e-10
    with pytest.raises(losskit.LossInputError, match="^rho:"):
        losskit.unbalanced_sinkhorn_divergence(x, x, rho=None)
    # large rho: towards the balanced divergence (gap O(1/rho): 6.5e-3 relative at rho = 1e3, 6.6e-4 at 1e4)
    y = _rand(12, 2, seed=28, shift=1.0)
    bal = losskit.sinkhorn_divergence(x, y, eps=0.5, tol=1e-12).item()
    unb = losskit.unbalanced_sinkhorn_divergence(x, y, eps=0.5, rho=1e3, tol=1e-8, max_iter=100000).item()
    assert 0 < bal - unb < 1e-2 * bal


# ------------------------------------------------------------------------ (fused) Gromov-Wasserstein
def _gw_inputs(n=12, m=10, seed=30):
    x, y = _rand(n, 2, seed=seed), _rand(m, 3, seed=seed + 1, scale=0.8)
    return x, y, _simplex(n, seed + 2), _simplex(m, seed + 3)


def _kl_plan(T, a, b):
    return float((T * np.log(T / np.outer(a, b))).sum())


_POT_GW = dict(max_iter=10000, tol=1e-12, numItermax=20000, stopThr=1e-13, log=True)


@pytest.mark.parametrize("eps", [5.0, 1.0])
def test_entropic_gromov_wasserstein_matches_pot(eps):
    ot = pytest.importorskip("ot")
    from losskit.transport import solve_gromov
    x, y, a, b = _gw_inputs()
    C1, C2 = ot.dist(x.numpy(), x.numpy()), ot.dist(y.numpy(), y.numpy())
    T, log = ot.gromov.entropic_gromov_wasserstein(C1, C2, a.numpy(), b.numpy(), "square_loss", epsilon=eps,
                                                   **_POT_GW)
    res = solve_gromov(torch.as_tensor(C1), torch.as_tensor(C2), a, b, eps=eps, tol=1e-12)
    assert bool(res.converged.all())
    assert abs(res.loss.item() - log["gw_dist"]) < 1e-9 * max(1.0, log["gw_dist"])
    np.testing.assert_allclose(res.plan[0].numpy(), T, atol=1e-11)
    # the objective on the points: the entropic value, POT's + eps KL(T | a (x) b)
    got = losskit.gromov_wasserstein(x, y, a=a, b=b, eps=eps, tol=1e-12)
    assert abs(got.item() - (log["gw_dist"] + eps * _kl_plan(T, a.numpy(), b.numpy()))) < 1e-9 * max(1.0, got.item())
    # ot.gromov.entropic_gromov_wasserstein2 is the same number
    ref2 = ot.gromov.entropic_gromov_wasserstein2(C1, C2, a.numpy(), b.numpy(), "square_loss", epsilon=eps,
                                                  max_iter=10000, tol=1e-12, numItermax=20000, stopThr=1e-13)
    assert abs(res.loss.item() - float(ref2)) < 1e-9 * max(1.0, float(ref2))


@pytest.mark.parametrize("alpha, eps", [(0.5, 2.0), (0.2, 0.5), (0.9, 5.0)])
def test_entropic_fused_gromov_wasserstein_matches_pot(alpha, eps):
    ot = pytest.importorskip("ot")
    from losskit.transport import solve_gromov
    x, y, a, b = _gw_inputs(10, 8, seed=40)
    fx, fy = _rand(10, 4, seed=44), _rand(8, 4, seed=45, shift=0.3)
    M = ot.dist(fx.numpy(), fy.numpy())
    C1, C2 = ot.dist(x.numpy(), x.numpy()), ot.dist(y.numpy(), y.numpy())
    T, log = ot.gromov.entropic_fused_gromov_wasserstein(M, C1, C2, a.numpy(), b.numpy(), "square_loss",
                                                         epsilon=eps, alpha=alpha, **_POT_GW)
    res = solve_gromov(torch.as_tensor(C1), torch.as_tensor(C2), a, b, M=torch.as_tensor(M), alpha=alpha, eps=eps,
                       tol=1e-12)
    assert abs(res.loss.item() - log["fgw_dist"]) < 1e-9 * max(1.0, log["fgw_dist"])
    np.testing.assert_allclose(res.plan[0].numpy(), T, atol=1e-11)
    got = losskit.fused_gromov_wasserstein(x, y, torch.as_tensor(M), a=a, b=b, alpha=alpha, eps=eps, tol=1e-12)
    ref = log["fgw_dist"] + eps * _kl_plan(T, a.numpy(), b.numpy())
    assert abs(got.item() - ref) < 1e-9 * max(1.0, ref)


def test_entropic_gromov_wasserstein_kl_loss_and_asymmetric_costs_match_pot():
    ot = pytest.importorskip("ot")
    from losskit.transport import solve_gromov
    n, m = 9, 7
    C1 = torch.rand(n, n, generator=torch.Generator().manual_seed(50), dtype=D) + 0.1   # asymmetric, positive
    C2 = torch.rand(m, m, generator=torch.Generator().manual_seed(51), dtype=D) + 0.1
    a, b = _simplex(n, 52), _simplex(m, 53)
    for loss, pot_loss in (("kl", "kl_loss"), ("square", "square_loss")):
        T, log = ot.gromov.entropic_gromov_wasserstein(C1.numpy(), C2.numpy(), a.numpy(), b.numpy(), pot_loss,
                                                       epsilon=0.05, **_POT_GW)
        res = solve_gromov(C1, C2, a, b, eps=0.05, loss=loss, tol=1e-12)
        assert abs(res.loss.item() - log["gw_dist"]) < 1e-9, (loss, res.loss.item(), log["gw_dist"])
        np.testing.assert_allclose(res.plan[0].numpy(), T, atol=1e-10)


def test_gromov_wasserstein_gradients_are_envelope():
    from losskit.transport import solve_gromov
    x, y, a, b = _gw_inputs(5, 4, seed=60)
    # gradcheck of the converged value (float64, finite differences of the whole solve)
    f = lambda u, v: losskit.gromov_wasserstein(u, v, a=a, b=b, eps=2.0, tol=1e-12)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), y.clone().requires_grad_()), eps=1e-6,
                                    atol=1e-6, rtol=1e-4)
    C1 = torch.rand(4, 4, generator=torch.Generator().manual_seed(61), dtype=D) + 0.1   # asymmetric, positive
    C2 = torch.rand(3, 3, generator=torch.Generator().manual_seed(62), dtype=D) + 0.1
    M = torch.rand(4, 3, generator=torch.Generator().manual_seed(63), dtype=D)
    for loss in ("square", "kl"):
        g = lambda c1, c2, mm, loss=loss: solve_gromov(c1, c2, M=mm, alpha=0.4, eps=0.2, loss=loss,  # noqa: E731
                                                        tol=1e-12).value
        assert torch.autograd.gradcheck(g, (C1.clone().requires_grad_(), C2.clone().requires_grad_(),
                                            M.clone().requires_grad_()), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gromov_wasserstein_edges():
    from losskit.transport import solve_gromov
    x = _rand(10, 2, seed=70, scale=0.5)
    rot = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=D)
    # isometric clouds (rotated, translated, embedded in 3-d): the same value as the cloud against itself
    y = torch.cat([x @ rot.T + 3.0, torch.zeros(10, 1, dtype=D)], 1)
    same = losskit.gromov_wasserstein(x, x, eps=0.5, tol=1e-12)
    assert abs(losskit.gromov_wasserstein(x, y, eps=0.5, tol=1e-12).item() - same.item()) < 1e-8
    # batched = one by one
    xb, yb = _rand(3, 6, 2, seed=71, scale=0.5), _rand(3, 5, 4, seed=72, scale=0.5)
    whole = losskit.gromov_wasserstein(xb, yb, reduction="none", tol=1e-12, eps=1.0)
    for k in range(3):
        assert abs(whole[k].item() - losskit.gromov_wasserstein(xb[k], yb[k], tol=1e-12, eps=1.0).item()) < 1e-10
    # bad inputs
    with pytest.raises(losskit.LossInputError, match="^C1:"):
        solve_gromov(torch.ones(3, 4, dtype=D), torch.ones(4, 4, dtype=D))
    with pytest.raises(losskit.LossInputError, match="^C2:"):
        solve_gromov(torch.ones(3, 3, dtype=D), torch.zeros(4, 4, dtype=D), loss="kl")
    with pytest.raises(losskit.LossInputError, match="^loss:"):
        solve_gromov(torch.ones(3, 3, dtype=D), torch.ones(4, 4, dtype=D), loss="l1")
    with pytest.raises(losskit.LossInputError, match="^M:"):
        solve_gromov(torch.ones(3, 3, dtype=D), torch.ones(4, 4, dtype=D), M=torch.ones(4, 3, dtype=D))
    with pytest.raises(losskit.LossInputError, match="^alpha:"):
        losskit.fused_gromov_wasserstein(x, x, torch.ones(10, 10, dtype=D), alpha=1.5)


# ------------------------------------------------------------------------------------------- partial OT
def _partial_inputs(seed=80):
    x, y = _rand(12, 2, seed=seed), _rand(10, 2, seed=seed + 1, shift=0.5)
    return x, y, _simplex(12, seed + 2), 1.3 * _simplex(10, seed + 3)        # totals 1 and 1.3


@pytest.mark.parametrize("mass", [0.3, 0.7, 1.0])
def test_partial_ot_matches_pot(mass):
    ot = pytest.importorskip("ot")
    from losskit.transport import partial_plan
    x, y, a, b = _partial_inputs()
    C = ot.dist(x.numpy(), y.numpy())
    P = ot.partial.partial_wasserstein(a.numpy(), b.numpy(), C, m=mass)
    ref = ot.partial.partial_wasserstein2(a.numpy(), b.numpy(), C, m=mass)
    assert abs(losskit.partial_ot(x, y, a=a, b=b, mass=mass).item() - ref) < 1e-12
    mine = partial_plan(torch.as_tensor(C), a, b, mass=mass)
    assert abs(mine.sum().item() - mass) < 1e-12
    assert bool((mine.sum(1) <= a + 1e-12).all()) and bool((mine.sum(0) <= b + 1e-12).all())
    assert abs((mine.numpy() * C).sum() - (P * C).sum()) < 1e-12


@pytest.mark.parametrize("mass, eps", [(0.3, 0.5), (0.7, 0.1), (1.0, 0.5)])
def test_entropic_partial_ot_matches_pot(mass, eps):
    ot = pytest.importorskip("ot")
    x, y, a, b = _partial_inputs(90)
    C = ot.dist(x.numpy(), y.numpy())
    P, log = ot.partial.entropic_partial_wasserstein(a.numpy(), b.numpy(), C, reg=eps, m=mass, numItermax=100000,
                                                     stopThr=1e-14, log=True)
    ref = log["partial_w_dist"] + eps * float((P * (np.log(P) - 1)).sum())
    got = losskit.entropic_partial_ot(x, y, a=a, b=b, mass=mass, eps=eps, tol=1e-12)
    assert abs(got.item() - ref) < 1e-9 * max(1.0, abs(ref)), (got.item(), ref)
    # POT's log-domain variant: the same plan
    P2 = ot.partial.entropic_partial_wasserstein(a.numpy(), b.numpy(), C, reg=eps, m=mass, method="sinkhorn_log",
                                                 numItermax=100000, stopThr=1e-14)
    np.testing.assert_allclose(P2, P, atol=1e-9)


def test_entropic_partial_ot_gradients():
    x, y, a, b = _partial_inputs(100)
    x, y = x[:6], y[:5]
    a, b = a[:6] / a[:6].sum(), 0.8 * b[:5] / b[:5].sum()
    f = lambda u, v, wa, wb: losskit.entropic_partial_ot(u, v, a=wa, b=wb, mass=0.5, eps=0.3, tol=1e-13)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(t.clone().requires_grad_() for t in (x, y, a, b)), eps=1e-6, atol=1e-6,
                                    rtol=1e-4)
    # exact: <P, C(x, y)> with the plan fixed
    g = lambda u, v: losskit.partial_ot(u, v, a=a, b=b, mass=0.5)  # noqa: E731
    assert torch.autograd.gradcheck(g, (x.clone().requires_grad_(), y.clone().requires_grad_()), eps=1e-6,
                                    atol=1e-6, rtol=1e-4)


def test_partial_ot_edges():
    x, y, a, b = _partial_inputs(110)
    # the full mass of balanced weights is ordinary OT
    bb = b / b.sum()
    assert abs(losskit.partial_ot(x, y, a=a, b=bb, mass=1.0).item() - losskit.exact_ot(x, y, a=a, b=bb).item()) < 1e-12
    # an outlier far away is left out when the mass allows it
    yo = torch.cat([y, torch.full((1, 2), 50.0, dtype=D)])
    assert losskit.partial_ot(x, yo, mass=0.9).item() < 10
    for fn in (losskit.partial_ot, losskit.entropic_partial_ot):
        with pytest.raises(losskit.LossInputError, match="^mass:"):
            fn(x, y, a=a, b=b, mass=1.2)
        with pytest.raises(losskit.LossInputError, match="^mass:"):
            fn(x, y, mass=-0.1)
        with pytest.raises(losskit.LossInputError, match="^a:"):
            fn(x, y, a=-a, b=b, mass=0.5)


# ------------------------------------------------------------------------------------------ barycenters
def test_fixed_support_barycenter_matches_pot():
    ot = pytest.importorskip("ot")
    from losskit.transport import barycenter
    d = 30
    s = torch.linspace(0, 1, d, dtype=D)[:, None]
    M = ot.dist(s, s)
    A = torch.rand(3, d, generator=torch.Generator().manual_seed(120), dtype=D) + 0.05
    A = A / A.sum(1, keepdim=True)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    for eps in (0.05, 0.01):
        ref = ot.bregman.barycenter(A.T.numpy(), M.numpy(), eps, weights=w.numpy(), method="sinkhorn_log",
                                    numItermax=100000, stopThr=1e-11)
        q = barycenter(A, M, w, eps=eps, tol=1e-11, max_iter=100000)
        np.testing.assert_allclose(q.numpy(), ref, atol=1e-10)
        assert abs(q.sum().item() - 1) < 1e-9
    with pytest.raises(losskit.LossInputError, match="^A:"):
        barycenter(2 * A, M)
    with pytest.raises(losskit.LossInputError, match="^M:"):
        barycenter(A, M[:-1])
    with pytest.raises(losskit.LossInputError, match="^weights:"):
        barycenter(A, M, -w)


def test_free_support_barycenter_matches_pot():
    ot = pytest.importorskip("ot")
    from losskit.transport import free_support_barycenter
    g = torch.Generator().manual_seed(130)
    Ys = [torch.randn(7, 2, generator=g, dtype=D) + i for i in range(3)]
    bs = [torch.full((7,), 1 / 7, dtype=D), _simplex(7, 131), torch.full((7,), 1 / 7, dtype=D)]
    X0 = torch.randn(5, 2, generator=g, dtype=D)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=D)
    ref = ot.lp.free_support_barycenter([y.numpy() for y in Ys], [b.numpy() for b in bs], X0.numpy(),
                                        weights=w.numpy())
    X = free_support_barycenter(Ys, bs, X0, weights=w)
    np.testing.assert_allclose(X.numpy(), ref, atol=1e-12)
    # a uniform k = n support on equal-size uniform measures (assignments)
    X0 = torch.randn(7, 2, generator=g, dtype=D)
    ref = ot.lp.free_support_barycenter([y.numpy() for y in Ys], [bs[0].numpy()] * 3, X0.numpy())
    np.testing.assert_allclose(free_support_barycenter(Ys, None, X0).numpy(), ref, atol=1e-12)
    with pytest.raises(losskit.LossInputError, match="^locations:"):
        free_support_barycenter([Ys[0][:, :1]], None, X0)
    with pytest.raises(losskit.LossInputError, match="^masses:"):
        free_support_barycenter(Ys, [2 * b for b in bs], X0)
