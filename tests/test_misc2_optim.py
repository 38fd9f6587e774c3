"""GradRegNewton: iterates against a port of the authors' Algorithm 1 (epfml/grad-norm-smooth src/methods.py
``grad_norm_smooth`` @ 354f35be769b983302b143f1e02283e8ecea2da0), the step against a float64 closed form, convergence
on logistic regression to SciPy's minimiser, and the rates the paper states (superlinear with the exact Hessian,
linear with approximate ones), plus Gauss-Newton on a non-convex least-squares problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from losskit.optim import GradRegNewton, get_optimizer


def _grad_norm_smooth_port(func, grad, hess, x_0, n_iters, gamma_0=1.0, eps=1e-8, gamma_min=1e-9):
    """The authors' grad_norm_smooth (B = I, adaptive search), trimmed of bookkeeping."""
    x_k = np.copy(x_0)
    f_k, g_k = func(x_k), grad(x_k)
    g_k_norm = g_k.dot(g_k) ** 0.5
    gamma_k = gamma_0
    xs = [x_k.copy()]
    for _ in range(n_iters):
        hess_k = hess(x_k)
        for i in range(40 + 1):
            if i == 40:
                break
            lambda_k = g_k_norm / (gamma_k + eps)
            delta_x = scipy.linalg.cho_solve(scipy.linalg.cho_factor(hess_k + lambda_k * np.eye(len(x_k)), lower=False),
                                             -g_k)
            f_new, g_new = func(x_k + delta_x), grad(x_k + delta_x)
            g_new_norm_sqr = g_new.dot(g_new)
            if f_k - f_new >= g_new_norm_sqr / (8 * lambda_k):
                gamma_k = max(gamma_k * 2.0, gamma_min)
                break
            gamma_k *= 0.5
        x_k = x_k + delta_x
        f_k, g_k, g_k_norm = f_new, g_new, g_new_norm_sqr ** 0.5
        xs.append(x_k.copy())
    return xs


def _logreg(n=200, d=5, seed=2, reg=1e-3):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, d))
    w_true = 2 * rng.normal(size=d)
    ys = (rng.random(n) < 1 / (1 + np.exp(-xs @ w_true))).astype(float)
    return xs, ys, reg


def _np_oracle(X, y, reg):
    def func(w):
        z = X @ w
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * reg * w @ w

    def grad(w):
        return X.T @ (1 / (1 + np.exp(-(X @ w))) - y) / len(y) + reg * w

    def hess(w):
        s = 1 / (1 + np.exp(-(X @ w)))
        return (X.T * (s * (1 - s))) @ X / len(y) + reg * np.eye(X.shape[1])

    return func, grad, hess


def _torch_loss(w, X, y, reg):
    return torch.nn.functional.binary_cross_entropy_with_logits(X @ w, y) + 0.5 * reg * w.square().sum()


@pytest.mark.parametrize("solver", ["dense", "cg"])
@pytest.mark.parametrize("gamma_0", [1.0, 0.01, 30.0])
def test_iterates_match_authors_algorithm_1(solver, gamma_0):
    X, y, reg = _logreg()
    func, grad, hess = _np_oracle(X, y, reg)
    ref = _grad_norm_smooth_port(func, grad, hess, np.zeros(X.shape[1]), 8, gamma_0=gamma_0)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    w = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=torch.float64))
    opt = GradRegNewton([w], gamma=gamma_0, solver=solver)
    for k in range(8):
        opt.step(lambda: _torch_loss(w, Xt, yt, reg))
        np.testing.assert_allclose(w.detach().numpy(), ref[k + 1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["cg", "dense"])
def test_one_fixed_step_matches_closed_form(solver):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a, b = m @ m.T + 0.1 * np.eye(6), rng.normal(size=6)
    x0 = np.linspace(-1, 1, 6)
    x = torch.nn.Parameter(torch.tensor(x0))
    opt = GradRegNewton([x], gamma=0.3, adaptive=False, solver=solver)
    opt.step(lambda: 0.5 * x @ torch.tensor(a) @ x - torch.tensor(b) @ x)
    g = a @ x0 - b
    lam = np.linalg.norm(g) / (0.3 + 1e-8)
    np.testing.assert_allclose(x.detach().numpy(), x0 - np.linalg.solve(a + lam * np.eye(6), g), rtol=1e-9, atol=1e-11)
    assert opt.state["global"]["lambda"] == pytest.approx(lam, rel=1e-12)
    # a huge gamma is Newton's step: one step solves the quadratic
    x.data.zero_()
    GradRegNewton([x], gamma=1e14, adaptive=False, solver="dense").step(
        lambda: 0.5 * x @ torch.tensor(a) @ x - torch.tensor(b) @ x)
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(a, b), rtol=1e-7)


def _scipy_minimiser(X, y, reg):
    from scipy.optimize import minimize

    func, grad, _ = _np_oracle(X, y, reg)
    return minimize(func, np.zeros(X.shape[1]), jac=grad, method="BFGS", options={"gtol": 1e-12}).x


def test_exact_hessian_converges_superlinearly_to_scipy_minimiser():
    X, y, reg = _logreg()
    Xt, yt = torch.tensor(X), torch.tensor(y)
    w = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=torch.float64))
    opt = GradRegNewton([w], gamma=1.0)
    losses, gnorms = [], []
    for _ in range(40):
        losses.append(opt.step(lambda: _torch_loss(w, Xt, yt, reg)).item())
        (g,) = torch.autograd.grad(_torch_loss(w, Xt, yt, reg), w)
        gnorms.append(g.norm().item())
        if gnorms[-1] < 1e-12:
            break
    np.testing.assert_allclose(w.detach().numpy(), _scipy_minimiser(X, y, reg), rtol=1e-6, atol=1e-7)
    assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:]))  # the acceptance test implies descent
    assert len(gnorms) < 40
    big = [g for g in gnorms if g > 1e-10]
    ratios = [b / a for a, b in zip(big, big[1:])]
    assert ratios[-1] < 0.05 and ratios[-1] < ratios[0]  # superlinear: the contraction factor goes to 0


def test_approximate_hessians_converge_linearly():
    """The paper's application: logistic regression with approximate Hessians has a global linear rate. With the
    (regularised) empirical Fisher ``sum_i g_i g_i^T / n + reg I`` the iterates reach SciPy's minimiser in a few
    dozen steps; a stale Hessian (the one at the start, never updated) contracts the error by a steady factor."""
    X, y, reg = _logreg(seed=3)
    w_star = _scipy_minimiser(X, y, reg)
    Xt, yt = torch.tensor(X), torch.tensor(y)

    w = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=torch.float64))

    def fisher(v):
        per_sample = Xt * (torch.sigmoid(Xt @ w.detach()) - yt)[:, None]
        return per_sample.T @ (per_sample @ v) / len(yt) + reg * v

    opt = GradRegNewton([w], gamma=1.0)
    for _ in range(30):
        opt.step(lambda: _torch_loss(w, Xt, yt, reg), hvp=fisher)
    assert np.abs(w.detach().numpy() - w_star).max() < 1e-6

    w2 = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=torch.float64))
    h0 = torch.autograd.functional.hessian(lambda v: _torch_loss(v, Xt, yt, reg), w2.detach())
    opt2 = GradRegNewton([w2], gamma=1.0)
    errs, losses = [], []
    for i in range(150):
        losses.append(opt2.step(lambda: _torch_loss(w2, Xt, yt, reg), hvp=lambda v: h0 @ v).item())
        if i % 30 == 29:
            errs.append(np.abs(w2.detach().numpy() - w_star).max())
    ratios = [b / a for a, b in zip(errs, errs[1:])]
    assert max(ratios) < 0.75 and errs[-1] < 0.2 * errs[0]
    assert all(b <= a for a, b in zip(losses, losses[1:]))


def test_global_convergence_where_newton_diverges():
    """f(x) = sum sqrt(1 + x_i^2): Newton's step from |x| > 1 overshoots and diverges (x+ = -x^3); the
    gradient-normalised step converges to 0."""
    f = lambda x: torch.sqrt(1 + x.square()).sum()  # noqa: E731
    x = torch.nn.Parameter(torch.tensor([3.0, -5.0, 10.0], dtype=torch.float64))
    opt = GradRegNewton([x], gamma=1.0, solver="dense")
    for _ in range(60):
        opt.step(lambda: f(x))
    assert x.detach().abs().max().item() < 1e-8
    x0 = torch.tensor([3.0])
    assert (x0 - x0 * (1 + x0 ** 2)).abs().item() > 3.0  # one plain Newton step from 3 lands at -27


def test_gauss_newton_on_nonlinear_least_squares():
    """Non-convex least squares r(w) = tanh(A w) - y with the Gauss-Newton product J^T J v / n (the paper's
    non-convex use): the iterates reach the exact fit."""
    torch.manual_seed(0)
    a = torch.randn(30, 4, dtype=torch.float64)
    w_true = torch.tensor([0.5, -0.3, 0.8, 0.1], dtype=torch.float64)
    y = torch.tanh(a @ w_true)
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def gn(v):
        j = (1 - torch.tanh(a @ w.detach()).square())[:, None] * a
        return j.T @ (j @ v) / 30

    opt = GradRegNewton([w], gamma=1.0)
    for _ in range(40):
        opt.step(lambda: 0.5 * (torch.tanh(a @ w) - y).square().mean(), hvp=gn)
    torch.testing.assert_close(w.detach(), w_true, rtol=1e-8, atol=1e-9)


def test_registry_and_validation():
    assert get_optimizer("gradreg_newton").cls is GradRegNewton
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="gamma"):
        GradRegNewton([p], gamma=0.0)
    with pytest.raises(ValueError, match="solver"):
        GradRegNewton([p], solver="lu")
    with pytest.raises(ValueError, match="closure"):
        GradRegNewton([p]).step(None)
