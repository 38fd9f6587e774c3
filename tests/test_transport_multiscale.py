"""Multiscale truncated Sinkhorn (losskit.transport.multiscale, issue 23).

References: the dense solver (``solve(..., method='newton', online=False)``, float64, tol 1e-10) on the
same problems, n = m = 1000 in d = 2 and 3, small enough for both; the full plan (``OTResult.plan()``,
every entry, float64) at the returned potentials for the truncation certificate.
"""

from __future__ import annotations

import math

import pytest
import torch

from losskit import LossInputError
from losskit.transport import MultiscaleResult, solve, solve_multiscale
from losskit.transport.multiscale import MAX_DIM

TOL = 1e-5


def _problem(d: int, n: int = 1000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
    med = float((torch.cdist(x[:500], y[:500]) ** 2).median())
    return x, y, med


@pytest.fixture(scope="module", params=[2, 3])
def pair(request):
    """(d, eps, x, y, dense reference result, multiscale result, their gradients wrt x and y)."""
    d = request.param
    x, y, med = _problem(d)
    # eps = 0.01 median and cells of 0.5: a real truncation at n = 1000 (checked below)
    eps = 0.01 * med
    out = {}
    for name in ("dense", "multiscale"):
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        if name == "dense":
            r = solve(xg, yg, eps=eps, tol=1e-10, max_iter=5000, method="newton", online=False)
        else:
            r = solve_multiscale(xg, yg, eps=eps, tol=TOL, cluster_size=0.5)
        r.value.sum().backward()
        out[name] = (r, xg.grad, yg.grad)
    return d, eps, x, y, out


def test_agrees_with_dense(pair):
    d, eps, x, y, out = pair
    (rd, gxd, gyd), (rm, gxm, gym) = out["dense"], out["multiscale"]
    assert isinstance(rm, MultiscaleResult) and bool(rm.converged)
    # value: the dual objective; at marginal error tol it is within about eps * tol of the optimum
    assert abs(float(rm.value - rd.value)) <= 10 * eps * TOL
    # potentials up to the constant (f + c, g - c). The kept blocks can leave an outlier's block as its
    # own connected component, whose potentials have their own constant in the truncated problem (the
    # plan and the value do not see it; the gradients below check the plan): 99% of the points agree.
    c = float((rd.f - rm.f).median())
    bound = 20 * eps * TOL * math.sqrt(x.shape[0])
    assert float((rm.f + c - rd.f).abs().quantile(0.99)) <= bound
    assert float((rm.g - c - rd.g).abs().quantile(0.99)) <= bound
    # envelope gradients (the plan of the kept blocks) against the dense plan's
    for gm, gd in ((gxm, gxd), (gym, gyd)):
        assert float((gm - gd).abs().max()) <= 100 * TOL * float(gd.abs().max())


def test_truncation_is_real_and_certified(pair):
    d, eps, x, y, out = pair
    rm = out["multiscale"][0]
    kept = float(rm.kept_fraction)
    assert kept < 0.6, f"the test problem should drop blocks (kept {kept:.2f})"
    delta = float(rm.dropped_mass_bound)
    # the full plan at the returned potentials, every entry: its mass outside the kept blocks is its
    # total minus the truncated plan's, whose rows are exact (sum = |a| = 1)
    P = rm.plan()[0]
    dropped = float(P.sum()) - 1.0
    assert -1e-12 <= dropped <= delta + 1e-12
    assert delta <= 0.1 * TOL                                   # the default budget
    assert delta <= math.exp(-float(rm.tau)) + 1e-300           # the rule R_IJ >= eps tau on dropped blocks
    # the reported error bounds the full plan's measured L1 error (rows + columns)
    full = float((P.sum(1) - 1 / x.shape[0]).abs().sum() + (P.sum(0) - 1 / y.shape[0]).abs().sum())
    assert full <= float(rm.marginal_error) + 1e-12
    assert float(rm.marginal_error) == pytest.approx(float(rm.truncated_error) + 2 * delta, rel=1e-6)


def test_fixed_tau_rule():
    x, y, med = _problem(2, n=800, seed=1)
    tau = 6.0
    r = solve_multiscale(x, y, eps=0.01 * med, tol=1e-4, tau=tau, cluster_size=0.5)
    assert float(r.tau) >= tau
    P = r.plan()[0]
    assert float(P.sum()) - 1.0 <= float(r.dropped_mass_bound) + 1e-12 <= math.exp(-tau) + 1e-12


def test_solve_method_dispatch_and_batch():
    x, y, med = _problem(2, n=600, seed=2)
    eps = 0.05 * med
    r1 = solve(x, y, eps=eps, tol=1e-5, method="multiscale")
    r2 = solve_multiscale(x, y, eps=eps, tol=1e-5)
    assert isinstance(r1, MultiscaleResult)
    torch.testing.assert_close(r1.value, r2.value, rtol=0, atol=0)
    # a batch: each problem solved on its own
    x2, y2, _ = _problem(2, n=600, seed=3)
    rb = solve(torch.stack([x, x2]), torch.stack([y, y2]), eps=eps, tol=1e-5, method="multiscale")
    rs = solve(x2, y2, eps=eps, tol=1e-5, method="multiscale")
    torch.testing.assert_close(rb.value, torch.cat([r1.value, rs.value]))


def test_bad_input():
    x, y, _ = _problem(2, n=50)
    with pytest.raises(LossInputError, match="x"):
        solve_multiscale(torch.randn(50, MAX_DIM + 1), torch.randn(50, MAX_DIM + 1))
    with pytest.raises(LossInputError, match="x"):
        solve(torch.randn(50, MAX_DIM + 1), torch.randn(50, MAX_DIM + 1), method="multiscale")
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(LossInputError, match="x"):
        solve_multiscale(bad, y)
    bad = y.clone()
    bad[0, 1] = float("inf")
    with pytest.raises(LossInputError, match="y"):
        solve(x, bad, method="multiscale")
    with pytest.raises(LossInputError, match="p"):
        solve(x, y, p=1.0, method="multiscale")
    with pytest.raises(LossInputError, match="rho"):
        solve(x, y, rho=1.0, method="multiscale")
    with pytest.raises(LossInputError, match="tau"):
        solve_multiscale(x, y, tau=-1.0)
    with pytest.raises(LossInputError, match="method"):
        from losskit.transport import solve_matrix
        solve_matrix(torch.cdist(x, y) ** 2, method="multiscale")


def test_auto_picks_multiscale_from_the_threshold(monkeypatch):
    import importlib

    S = importlib.import_module("losskit.transport.sinkhorn")    # the module (the package exports a function)
    x, y, med = _problem(2, n=300, seed=4)
    assert S.AUTO_MULTISCALE_ENTRIES == 1e8                   # n = m = 10^4 (docs/transport.md)
    r = solve(x, y, eps=0.05 * med, tol=1e-4)
    assert not isinstance(r, MultiscaleResult)
    monkeypatch.setattr(S, "AUTO_MULTISCALE_ENTRIES", 300 * 300)
    rm = solve(x, y, eps=0.05 * med, tol=1e-4)
    assert isinstance(rm, MultiscaleResult) and bool(rm.converged)
    assert abs(float(rm.value - r.value)) <= 0.05 * med * 1e-3
    # where it does not apply (a cost callable, unbalanced, d > 3) auto keeps the dense path
    assert not isinstance(solve(x, y, eps=0.05 * med, rho=1.0), MultiscaleResult)
    assert not isinstance(solve(x, y, eps=0.05 * med, p=1.0), MultiscaleResult)
