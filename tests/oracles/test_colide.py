"""CoLiDE (Saboksayr, Mateos, Tepper, ICLR 2024, arXiv:2310.02895).

Oracle: the authors' NumPy code, SAMiatto/colide ``model.py`` @ a35893ff6c5cdd849b176e195e38ea28c64d0759
(``colide_ev._score``/``_h``/``_func``, ``colide_nv._score``, the closed-form ``sigma`` updates and the
gradient ``Gobj`` of ``minimize``), ported below. Properties: the log-det acyclicity is 0 exactly on DAGs
and positive on cyclic graphs; the profiled score is the minimum over sigma (SciPy).
"""

import numpy as np
import numpy.linalg as la
import pytest
import scipy.linalg as sla
import scipy.optimize
import torch
from oracle_meta import Oracle

import losskit
from losskit.regression import colide_sigma, logdet_acyclicity

ORACLES = [
    Oracle("colide", "SAMiatto/colide",
           "model.py (colide_ev._score/_h/_func, colide_nv._score, the sigma updates, Gobj of minimize)",
           "a35893ff6c5cdd849b176e195e38ea28c64d0759", "1e-10",
           differences="value 1e-10 relative; gradient in W = the authors' Gobj at the closed-form sigma "
                       "(envelope theorem, 1e-8); sigma 1e-12; acyclicity gradient 1e-10"),
]



# ---- port of SAMiatto/colide model.py (score, h, sigma update, gradient) ----
def ref_score_ev(cov, W, sigma):
    d = len(W)
    dif = np.eye(d) - W
    rhs = cov @ dif
    return 0.5 * np.trace(dif.T @ rhs) / sigma + 0.5 * sigma * d


def ref_score_nv(cov, W, sigma):
    d = len(W)
    dif = np.eye(d) - W
    rhs = cov @ dif
    return (np.trace(np.diag(1.0 / sigma) @ (dif.T @ rhs)) + np.sum(sigma)) / 2.0


def ref_h(W, s=1.0):
    d = len(W)
    M = s * np.eye(d) - W * W
    return -la.slogdet(M)[1] + d * np.log(s), 2 * W * sla.inv(M).T


def ref_sigma(cov, W, nonequal):
    d = len(W)
    dif = np.eye(d) - W
    rhs = cov @ dif
    return np.sqrt(np.diag(dif.T @ rhs)) if nonequal else np.sqrt(np.trace(dif.T @ rhs) / d)


def ref_grad(cov, W, sigma, mu, lambda1, s, nonequal):
    d = len(W)
    M = sla.inv(s * np.eye(d) - W * W) + 1e-16
    if nonequal:
        g_score = -mu * (cov @ (np.eye(d) - W) @ np.diag(1.0 / sigma))
    else:
        g_score = -mu * cov @ (np.eye(d) - W) / sigma
    return g_score + mu * lambda1 * np.sign(W) + 2 * W * M.T


def _problem(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    W0 = np.triu(rng.uniform(0.5, 2.0, (d, d)) * rng.choice([-1, 1], (d, d)) * (rng.random((d, d)) < 0.5), 1)
    Z = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, d)
    X = Z @ la.inv(np.eye(d) - W0)
    Xc = X - X.mean(0, keepdims=True)
    W = 0.15 * rng.normal(size=(d, d))
    return X, Xc.T @ Xc / n, W


@pytest.mark.parametrize("variance", ["equal", "nonequal"])
@pytest.mark.parametrize("mu,lambda1,s", [(1.0, 0.05, 1.0), (0.1, 0.2, 0.9)])
def test_matches_authors_objective_and_gradient(variance, mu, lambda1, s):
    X, cov, W = _problem(seed=1)
    nonequal = variance == "nonequal"
    sig = ref_sigma(cov, W, nonequal)
    score = (ref_score_nv if nonequal else ref_score_ev)(cov, W, sig)
    h, _ = ref_h(W, s)
    ref = mu * (score + lambda1 * np.abs(W).sum()) + h  # colide_ev._func
    Wt = torch.tensor(W, requires_grad=True)
    Xt = torch.tensor(X)
    got = losskit.colide(Xt, Wt, lambda1=lambda1, mu=mu, s=s, variance=variance)
    assert abs(got.item() - ref) < 1e-10 * max(1, abs(ref))
    # the same value with sigma passed explicitly (the joint score)
    got_joint = losskit.colide(Xt, Wt, lambda1=lambda1, mu=mu, s=s, variance=variance, sigma=torch.tensor(sig))
    assert abs(got_joint.item() - ref) < 1e-10 * max(1, abs(ref))
    # gradient in W = the authors' Gobj at the closed-form sigma (envelope theorem for the profiled score)
    got.backward()
    np.testing.assert_allclose(Wt.grad.numpy(), ref_grad(cov, W, sig, mu, lambda1, s, nonequal),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(colide_sigma(Xt, torch.tensor(W), variance).numpy(), sig, rtol=1e-12)


@pytest.mark.parametrize("variance", ["equal", "nonequal"])
def test_profiled_sigma_is_the_minimiser(variance):
    X, cov, W = _problem(seed=2)
    Xt, Wt = torch.tensor(X), torch.tensor(W)
    prof = losskit.colide(Xt, Wt, variance=variance, lambda1=0.0, s=1.0).item()
    sig_star = colide_sigma(Xt, Wt, variance)
    d = W.shape[0]
    if variance == "equal":
        res = scipy.optimize.minimize_scalar(
            lambda v: losskit.colide(Xt, Wt, lambda1=0.0, sigma=float(v)).item(), bounds=(1e-3, 100), method="bounded",
            options={"xatol": 1e-10})
        assert abs(res.x - sig_star.item()) < 1e-5
        assert abs(res.fun - prof) < 1e-9
        # the profiled score is sqrt(d / n) ||X - XW||_F, the square-root lasso's loss
        R = (X - X.mean(0)) - (X - X.mean(0)) @ W
        h = ref_h(W)[0]
        assert abs(prof - h - np.sqrt(d / len(X)) * la.norm(R)) < 1e-10
    else:
        res = scipy.optimize.minimize(
            lambda v: losskit.colide(Xt, Wt, lambda1=0.0, variance="nonequal", sigma=torch.tensor(v)).item(),
            np.ones(d), bounds=[(1e-3, 100)] * d, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
        np.testing.assert_allclose(res.x, sig_star.numpy(), rtol=1e-4)
        assert abs(res.fun - prof) < 1e-8
    for f in (0.9, 1.1):  # any other scale is worse
        assert losskit.colide(Xt, Wt, variance=variance, lambda1=0.0, sigma=sig_star * f).item() > prof


def test_acyclicity_zero_exactly_on_dags():
    rng = np.random.default_rng(4)
    d = 6
    for _ in range(5):
        perm = rng.permutation(d)
        W = np.triu(rng.normal(size=(d, d)) * 0.4, 1)[np.ix_(perm, perm)]  # a DAG in a random node order
        assert abs(logdet_acyclicity(torch.tensor(W)).item()) < 1e-12
        assert abs(logdet_acyclicity(torch.tensor(W), s=0.7).item()) < 1e-12
        Wc = W.copy()
        i, j = np.argwhere(W != 0)[0]
        Wc[j, i] = 0.3  # close a 2-cycle
        hv = logdet_acyclicity(torch.tensor(Wc)).item()
        assert hv > 1e-4
        assert abs(hv - ref_h(Wc)[0]) < 1e-12
    # outside the domain rho(W∘W) < s: +inf (the barrier)
    assert logdet_acyclicity(torch.tensor([[0.0, 2.0], [2.0, 0.0]])).item() == float("inf")


def test_acyclicity_gradient_matches_authors():
    _, _, W = _problem(seed=5)
    Wt = torch.tensor(W, requires_grad=True)
    logdet_acyclicity(Wt, s=0.8).backward()
    np.testing.assert_allclose(Wt.grad.numpy(), ref_h(W, 0.8)[1], rtol=1e-10, atol=1e-12)


def test_bad_sigma_shape():
    X, _, W = _problem(d=3)
    with pytest.raises(losskit.LossInputError, match="sigma"):
        losskit.colide(torch.tensor(X), torch.tensor(W), sigma=torch.ones(3))
