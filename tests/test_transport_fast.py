"""``solve(..., fast=True)`` (issue 23): its stated accuracy, the L1 marginal error (rows + columns) of the
returned plan at most ``FAST_BOUND = 1e-2``, measured here by one independent float64 pass over the plan
``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)`` (not the solver's own float32 estimate)."""

from __future__ import annotations

import pytest
import torch

from losskit.transport import solve
from losskit.transport.sinkhorn import FAST_BOUND


def _l1_error(x, y, a, b, f, g, eps):
    x, y, a, b, f, g = (t.double() for t in (x, y, a, b, f, g))
    C = torch.cdist(x, y) ** 2
    P = a[:, None] * b[None] * torch.exp((f[:, None] + g[None] - C) / eps)
    return float((P.sum(1) - a).abs().sum() + (P.sum(0) - b).abs().sum())


@pytest.mark.parametrize("n,m,d,frac,weighted", [
    (300, 300, 2, 0.05, False), (300, 200, 2, 0.01, True), (400, 400, 5, 0.05, True), (200, 300, 3, 0.005, False),
])
def test_fast_meets_its_stated_bound(n, m, d, frac, weighted):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(m, d, generator=g) * 0.8 + 0.5
    a = torch.rand(n, generator=g) + 0.1 if weighted else torch.full((n,), 1.0)
    b = torch.rand(m, generator=g) + 0.1 if weighted else torch.full((m,), 1.0)
    a, b = a / a.sum(), b / b.sum()
    eps = frac * float((torch.cdist(x, y) ** 2).median())
    r = solve(x, y, a, b, eps=eps, fast=True, max_iter=20000)
    assert bool(r.converged[0])
    # solve() centres the points (translation-invariant cost): measure on the centred clouds
    c = 0.5 * (x.mean(0) + y.mean(0))
    err = _l1_error(x - c, y - c, a, b, r.f[0], r.g[0], eps)
    assert err <= FAST_BOUND
    # ... and it is a real preset: the default tol (1e-3) takes more iterations and is more accurate
    tight = solve(x, y, a, b, eps=eps, max_iter=20000, method="sinkhorn")
    assert int(tight.n_iter[0]) > int(r.n_iter[0])
    assert _l1_error(x - c, y - c, a, b, tight.f[0], tight.g[0], eps) < err


def test_fast_replaces_tol_and_is_checked():
    x, y = torch.randn(50, 2), torch.randn(40, 2)
    r1 = solve(x, y, eps=0.1, fast=True)
    r2 = solve(x, y, eps=0.1, fast=True, tol=1e-9)          # fast wins over tol (documented)
    assert int(r1.n_iter[0]) == int(r2.n_iter[0])
    from losskit import LossInputError
    with pytest.raises(LossInputError, match="fast"):
        solve(x, y, eps=0.1, fast="yes")
