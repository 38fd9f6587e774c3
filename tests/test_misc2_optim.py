"""GradRegNewton: the step against a float64 closed form on quadratics, convergence on logistic regression
against SciPy's minimiser, the local (superlinear) and global behaviour the gradient-regularised Newton
analysis predicts, and approximate Hessians (a stale Hessian, the Gauss-Newton matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losskit.optim import GradRegNewton, get_optimizer


def _quadratic(n=6, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    a = m @ m.T + 0.1 * np.eye(n)
    b = rng.normal(size=n)
    return a, b


@pytest.mark.parametrize("solver", ["cg", "dense"])
@pytest.mark.parametrize("holder", [1.0, 0.5, 0.0])
def test_one_step_matches_closed_form(solver, holder):
    a, b = _quadratic()
    x0 = np.linspace(-1, 1, 6)
    x = torch.nn.Parameter(torch.tensor(x0))
    at, bt = torch.tensor(a), torch.tensor(b)
    opt = GradRegNewton([x], L=3.0, holder=holder, adaptive=False, solver=solver)
    opt.step(lambda: 0.5 * x @ at @ x - bt @ x)
    g = a @ x0 - b
    lam = 3.0 ** (1 / (1 + holder)) * np.linalg.norm(g) ** (holder / (1 + holder))
    ref = x0 - np.linalg.solve(a + lam * np.eye(6), g)
    np.testing.assert_allclose(x.detach().numpy(), ref, rtol=1e-9, atol=1e-11)
    assert opt.state["global"]["lambda"] == pytest.approx(lam, rel=1e-12)


def test_newton_limit_solves_a_quadratic_in_one_step():
    a, b = _quadratic(seed=1)
    x = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = GradRegNewton([x], L=1e-30, adaptive=False, solver="dense")
    opt.step(lambda: 0.5 * x @ torch.tensor(a) @ x - torch.tensor(b) @ x)
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(a, b), rtol=1e-10)


def _logreg(n=200, d=5, seed=2, reg=1e-3):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, d))
    w_true = rng.normal(size=d)
    ys = (rng.random(n) < 1 / (1 + np.exp(-xs @ w_true))).astype(float)
    return torch.tensor(xs), torch.tensor(ys), reg


def _logreg_loss(w, xs, ys, reg):
    return torch.nn.functional.binary_cross_entropy_with_logits(xs @ w, ys) + 0.5 * reg * w.square().sum()


def _scipy_minimiser(xs, ys, reg):
    from scipy.optimize import minimize

    X, y = xs.numpy(), ys.numpy()

    def f(w):
        z = X @ w
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * reg * w @ w

    def grad(w):
        return X.T @ (1 / (1 + np.exp(-(X @ w))) - y) / len(y) + reg * w

    return minimize(f, np.zeros(X.shape[1]), jac=grad, method="BFGS", options={"gtol": 1e-12}).x


@pytest.mark.parametrize("solver", ["cg", "dense"])
def test_logistic_regression_converges_to_scipy_minimiser(solver):
    xs, ys, reg = _logreg()
    w = torch.nn.Parameter(torch.zeros(xs.shape[1], dtype=torch.float64))
    opt = GradRegNewton([w], L=10.0, solver=solver)
    losses, gnorms = [], []
    for _ in range(30):
        losses.append(opt.step(lambda: _logreg_loss(w, xs, ys, reg)).item())
        (g,) = torch.autograd.grad(_logreg_loss(w, xs, ys, reg), w)
        gnorms.append(g.norm().item())
        if gnorms[-1] < 1e-13:
            break
    np.testing.assert_allclose(w.detach().numpy(), _scipy_minimiser(xs, ys, reg), rtol=1e-6, atol=1e-7)
    assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:]))  # monotone (the line search)
    assert len(gnorms) < 30
    # superlinear locally: the gradient norm falls faster than any fixed linear rate
    big = [g for g in gnorms if g > 1e-11]
    ratios = [b / a for a, b in zip(big, big[1:])]
    assert ratios[-1] < 0.05 and ratios[-1] < ratios[0]


def test_global_convergence_from_far_where_plain_newton_overshoots():
    """f(x) = sum sqrt(1 + x_i^2): Newton's step from |x| > 1 diverges (x+ = -x^3); the gradient-regularised
    step converges globally to 0 (the Hessian is not Lipschitz-bounded away from 0 relative to the gradient,
    the adaptive L handles it)."""
    f = lambda x: torch.sqrt(1 + x.square()).sum()  # noqa: E731
    x = torch.nn.Parameter(torch.tensor([3.0, -5.0, 10.0], dtype=torch.float64))
    opt = GradRegNewton([x], L=1.0, solver="dense")
    for _ in range(60):
        opt.step(lambda: f(x))
    assert x.detach().abs().max().item() < 1e-8
    # plain Newton from the same point blows up
    x0 = torch.tensor([3.0])
    assert (x0 - x0 * (1 + x0 ** 2)).abs().item() > 3.0


def test_approximate_hessians_still_converge():
    xs, ys, reg = _logreg(seed=3)
    w_star = _scipy_minimiser(xs, ys, reg)
    # (a) a stale Hessian: the one at the starting point, never updated. It over-estimates the curvature at the
    # solution, so the rate is linear (the paper's global linear rate for logistic regression with approximate
    # Hessians), not superlinear: the error contracts by a steady factor per window of 20 steps
    w = torch.nn.Parameter(torch.zeros(xs.shape[1], dtype=torch.float64))
    h0 = torch.autograd.functional.hessian(lambda v: _logreg_loss(v, xs, ys, reg), w.detach())
    opt = GradRegNewton([w], L=1.0, solver="cg")
    errs = []
    for i in range(200):
        opt.step(lambda: _logreg_loss(w, xs, ys, reg), hvp=lambda v: h0 @ v)
        if i % 20 == 19:
            errs.append(np.abs(w.detach().numpy() - w_star).max())
    ratios = [b / a for a, b in zip(errs, errs[1:])]
    assert errs[-1] < 1e-4
    assert max(ratios) < 0.5 and max(ratios) / min(ratios) < 2.0
    # (b) exact Hessians reach the same accuracy in a handful of steps (superlinear, previous test)
    w3 = torch.nn.Parameter(torch.zeros(xs.shape[1], dtype=torch.float64))
    opt3 = GradRegNewton([w3], L=1.0, solver="cg")
    for _ in range(20):
        opt3.step(lambda: _logreg_loss(w3, xs, ys, reg))
    assert np.abs(w3.detach().numpy() - w_star).max() < 1e-2 * errs[-1]  # (w_star itself is BFGS, ~1e-9)


def test_gauss_newton_on_nonlinear_least_squares():
    """Non-convex least squares r(w) = tanh(A w) - y with the Gauss-Newton product J^T J v (the paper's
    non-convex application): the residual reaches the exact fit."""
    torch.manual_seed(0)
    a = torch.randn(30, 4, dtype=torch.float64)
    w_true = torch.tensor([0.5, -0.3, 0.8, 0.1], dtype=torch.float64)
    y = torch.tanh(a @ w_true)
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def gn(v):
        z = a @ w.detach()
        j = (1 - torch.tanh(z).square())[:, None] * a
        return j.T @ (j @ v) / 30

    opt = GradRegNewton([w], L=1.0)
    for _ in range(40):
        opt.step(lambda: 0.5 * (torch.tanh(a @ w) - y).square().mean(), hvp=gn)
    torch.testing.assert_close(w.detach(), w_true, rtol=1e-8, atol=1e-9)


def test_registry_and_validation():
    assert get_optimizer("gradreg_newton").cls is GradRegNewton
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="L"):
        GradRegNewton([p], L=0.0)
    with pytest.raises(ValueError, match="holder"):
        GradRegNewton([p], holder=2.0)
    with pytest.raises(ValueError, match="closure"):
        GradRegNewton([p]).step(None)
