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
