"""Sinkhorn with sparse Newton iterations (Tang et al. 2024, arXiv:2401.12253): same solution as plain
log-domain Sinkhorn and POT, far fewer iterations at small eps, envelope gradients."""

import pytest
import torch
from helpers import randn64 as _rand
from helpers import simplex64 as _simplex

import losskit
from losskit import LossInputError
from losskit.transport import solve, solve_matrix

D = torch.float64


def _normalised(r):
    """Potentials up to the constant (f + t, g - t): fix <a, f> = 0."""
    t = (r.a * r.f).sum(1, keepdim=True) / r.a.sum(1, keepdim=True)
    return r.f - t, r.g + t


def test_newton_equals_plain_sinkhorn_weighted_batched():
    x, y = _rand(3, 40, 2, seed=1), _rand(3, 30, 2, seed=2, scale=0.7, shift=0.5)
    a, b = _simplex(3, 40, seed=3), _simplex(3, 30, seed=4)
    a[1, -5:] = 0                                                  # zero-weight padding in problem 1
    a = a / a.sum(1, keepdim=True)
    kw = dict(eps=0.05, tol=1e-11, max_iter=50000)
    plain = solve(x, y, a, b, method="sinkhorn", **kw)
    newt = solve(x, y, a, b, method="newton", **kw)
    assert bool(newt.converged.all()) and bool((newt.marginal_errors() < 1e-10).all())
    torch.testing.assert_close(newt.value, plain.value, rtol=1e-11, atol=1e-12)
    keep = a > 0
    (f1, g1), (f2, g2) = _normalised(plain), _normalised(newt)
    torch.testing.assert_close(f2[keep], f1[keep], rtol=0, atol=1e-8)
    torch.testing.assert_close(g2, g1, rtol=0, atol=1e-8)
    torch.testing.assert_close(newt.plan(), plain.plan(), rtol=0, atol=1e-11)


def test_newton_matches_pot_sinkhorn2():
    ot = pytest.importorskip("ot")
    x, y = _rand(60, 3, seed=5), _rand(50, 3, seed=6, shift=0.4)
    a, b = _simplex(60, seed=7), _simplex(50, seed=8)
    C = torch.cdist(x, y) ** 2
    eps = 0.01 * float(C.median())
    r = solve_matrix(C, a, b, eps=eps, tol=1e-10, max_iter=20000, method="newton")
    ref = float(ot.sinkhorn2(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", stopThr=1e-12,
                             numItermax=200000))
    assert abs(r.linear_cost().item() - ref) < 1e-9
    P = ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", stopThr=1e-12, numItermax=200000)
    torch.testing.assert_close(r.plan()[0], torch.as_tensor(P), rtol=0, atol=1e-10)


def test_newton_far_fewer_iterations_at_small_eps():
    x, y = _rand(200, 2, seed=9), _rand(150, 2, seed=10, scale=0.8, shift=0.5)
    C = torch.cdist(x, y) ** 2
    eps = 0.005 * float(C.median())
    plain = solve_matrix(C, eps=eps, tol=1e-8, max_iter=100000, method="sinkhorn")
    newt = solve_matrix(C, eps=eps, tol=1e-8, max_iter=100000, method="newton")
    assert bool(plain.converged.all()) and bool(newt.converged.all())
    assert newt.marginal_errors().item() < 1e-8
    # measured: 2105 Sinkhorn iterations vs 232 warm-up sweeps (to 1e-2) + 6 Newton steps
    assert plain.n_iter.item() >= 5 * newt.n_iter.item(), (plain.n_iter, newt.n_iter)
    torch.testing.assert_close(newt.value, plain.value, rtol=1e-9, atol=1e-10)


def test_newton_envelope_gradients():
    x = _rand(2, 12, 2, seed=11).requires_grad_()
    y = _rand(2, 9, 2, seed=12, shift=0.3).requires_grad_()
    kw = dict(eps=0.1, tol=1e-10, max_iter=2000, reduction="sum")
    assert torch.autograd.gradcheck(lambda u, v: losskit.sinkhorn(u, v, method="newton", **kw), (x, y),
                                    eps=1e-6, atol=1e-6)
    gn = torch.autograd.grad(losskit.sinkhorn(x, y, method="newton", **kw), (x, y))
    gp = torch.autograd.grad(losskit.sinkhorn(x, y, **kw), (x, y))
    for u, v in zip(gn, gp):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10)
    C = torch.cdist(x, y).detach() ** 2
    C.requires_grad_()
    r = solve_matrix(C, eps=0.05, tol=1e-12, method="newton")
    (gC,) = torch.autograd.grad(r.value.sum(), C)
    torch.testing.assert_close(gC, r.plan(), rtol=1e-12, atol=1e-14)      # dOT/dC = P


def test_newton_float32_and_bad_options():
    x, y = _rand(30, 2, seed=13).float(), _rand(25, 2, seed=14, shift=0.5).float()
    v32 = losskit.sinkhorn(x, y, eps=0.05, tol=1e-5, method="newton")
    v64 = losskit.sinkhorn(x.double(), y.double(), eps=0.05, tol=1e-8, max_iter=50000)
    assert v32.dtype == torch.float32 and abs(v32.item() - v64.item()) < 1e-4
    for kw, name in ((dict(method="lbfgs"), "method"), (dict(method="newton", rho=1.0), "rho"),
                     (dict(method="newton", online=True), "online"),
                     (dict(method="newton", differentiate="unroll"), "differentiate")):
        with pytest.raises(LossInputError, match=name):
            losskit.sinkhorn(x, y, **kw)


def _stalling_problem():
    """3 x 6 points on the unit sphere of R^4, cost ||x - y|| (p = 1), eps = 0.01: alternating Sinkhorn
    does not reach 1e-6 in 20,000 iterations (measured 1.85e-5)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, generator=g, dtype=D)
    y = torch.randn(6, 4, generator=g, dtype=D)
    return x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)


def test_auto_finishes_a_stalled_sinkhorn_with_newton():
    x, y = _stalling_problem()
    kw = dict(p=1, eps=0.01, tol=1e-6, max_iter=3000)
    plain = solve(x, y, method="sinkhorn", **kw)
    auto = solve(x, y, **kw)                                       # method='auto' is the default
    assert not bool(plain.converged.all())
    assert bool(auto.converged.all()) and auto.marginal_errors().item() < 1e-6
    assert int(auto.n_iter) < 2100
    # the same optimum as the sparse Newton method run to a tight tolerance, value and plan
    ref = solve(x, y, p=1, eps=0.01, tol=1e-12, max_iter=3000, method="newton")
    torch.testing.assert_close(auto.value, ref.value, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(auto.plan(), ref.plan(), rtol=0, atol=1e-6)
    # envelope gradient of the Newton-finished solution against finite differences
    xr = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: solve(z, y, p=1, eps=0.01, tol=1e-12, max_iter=3000).value,
                                    (xr,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_auto_is_plain_sinkhorn_when_sinkhorn_converges():
    x, y = _rand(2, 30, 2, seed=11), _rand(2, 25, 2, seed=12, shift=0.3)
    kw = dict(eps=0.1, tol=1e-9)
    plain, auto = solve(x, y, method="sinkhorn", **kw), solve(x, y, **kw)
    assert torch.equal(plain.n_iter, auto.n_iter)
    assert torch.equal(plain.value, auto.value) and torch.equal(plain.f, auto.f)
