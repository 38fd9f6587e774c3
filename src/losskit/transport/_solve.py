"""The Sinkhorn loops (plain, symmetric, Newton-finished, unrolled), epsilon-scaling, ``method='auto'``
and the dispatch :func:`_solve` that returns an :class:`~.result.OTResult` (see :mod:`.sinkhorn`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._core.compiler import eager
from ._kernel import _Kernel
from .costs import Cost
from .result import OTResult, _Coupling, _marginal_term


@dataclass
class _Solution:
    f: torch.Tensor
    g: torch.Tensor
    s: torch.Tensor          # the last row soft-min (f = lambda * s)
    eps: torch.Tensor        # (B,)
    n_iter: torch.Tensor     # (B,) int
    error: torch.Tensor      # (B,) last measured marginal error / residual
    converged: torch.Tensor  # (B,) bool


def _as_eps(eps, B, dtype, device) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=dtype, device=device)
    return e.expand(B).clone() if e.dim() == 0 else e.reshape(B).clone()


def _start(kernel: _Kernel, eps, scaling):
    """What both Sinkhorn loops start from: the target eps per problem, the eps-scaling start (the cost's
    diameter, or None without scaling), and the per-problem done / iteration / error state."""
    B, dtype, device = kernel.B, kernel.dtype, kernel.device
    eps_t = _as_eps(eps, B, dtype, device)
    eps0 = None if scaling is None else torch.maximum(kernel.cost.diameter().to(dtype), eps_t)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n_iter = torch.zeros(B, dtype=torch.long, device=device)
    err = torch.full((B,), math.inf, dtype=dtype, device=device)
    return eps_t, eps0, done, n_iter, err


@torch.no_grad()
def _sinkhorn(kernel: _Kernel, loga, logb, eps, rho, tol, max_iter, scaling, g0=None) -> _Solution:
    """``g0``: a warm start for the column potential (zeros by default), e.g. the previous solve of an
    outer loop whose cost changes little between calls (Gromov-Wasserstein's linearised costs)."""
    B, n, m = kernel.B, kernel.n, kernel.m
    dtype, device = kernel.dtype, kernel.device
    eps_t, eps0, done, n_iter, err = _start(kernel, eps, scaling)
    b = logb.exp()
    f = torch.zeros(B, n, dtype=dtype, device=device)
    g = torch.zeros(B, m, dtype=dtype, device=device) if g0 is None else g0.detach().to(dtype).clone()
    s = f.clone()
    k = 0
    annealing = scaling is not None
    eps_k, at_target = eps_t, torch.ones(B, dtype=torch.bool, device=device)
    lam = 1.0
    any_done = False
    while True:
        if annealing:
            eps_k = torch.maximum(eps_t, eps0 * scaling ** k)
            at_target = eps_k <= eps_t
            annealing = not bool(at_target.all())   # from here on eps_k = eps_t: stop recomputing
        if rho is not None:
            lam = rho / (rho + eps_k.view(B, 1))
        s_new, t_new = kernel.sweep(loga, logb, g, eps_k, lam)
        g_new = t_new if rho is None else lam * t_new
        e = (b * (1 - torch.exp((g - g_new) / eps_k.view(B, 1))).abs()).sum(1)
        f_new = s_new if rho is None else lam * s_new
        if any_done:                     # converged problems are frozen
            active = ~done
            f = torch.where(active.view(B, 1), f_new, f)
            s = torch.where(active.view(B, 1), s_new, s)
            err = torch.where(active, e, err)
            n_iter += active.long()
        else:
            f, s, err = f_new, s_new, e
            n_iter += 1
        k += 1
        done = done | (at_target & (err < tol))
        # (f, g) with f just updated has exact row marginals; e is its column error. A problem that
        # converges keeps that g (the returned plan's rows are exact), the others move on to g_new.
        if bool(done.all()):
            break
        any_done = B > 1 and bool(done.any())
        g = torch.where(done.view(B, 1), g, g_new) if any_done else g_new
        if k >= max_iter:
            break
    return _Solution(f, g, s, eps_t, n_iter, err, done)


@torch.no_grad()
def _sinkhorn_symmetric(kernel: _Kernel, loga, eps, rho, tol, max_iter, scaling) -> _Solution:
    """OT_eps(a, a) on a symmetric cost: one potential, averaged updates f <- (f + lambda T(f)) / 2."""
    B, n = kernel.B, kernel.n
    dtype, device = kernel.dtype, kernel.device
    eps_t, eps0, done, n_iter, err = _start(kernel, eps, scaling)
    a = loga.exp()
    f = torch.zeros(B, n, dtype=dtype, device=device)
    k = 0
    while True:
        eps_k = eps_t if scaling is None else torch.maximum(eps_t, eps0 * scaling ** k)
        at_target = eps_k <= eps_t
        lam = 1.0 if rho is None else rho / (rho + eps_k.view(B, 1))
        s = kernel.softmin_rows(loga, f, eps_k)
        e = (a * (1 - torch.exp((f - lam * s) / eps_k.view(B, 1))).abs()).sum(1)
        active = ~done
        f = torch.where(active.view(B, 1), 0.5 * (f + lam * s), f)
        err = torch.where(active, e, err)
        n_iter += active.long()
        k += 1
        done = done | (at_target & (err < tol))
        if bool(done.all()) or k >= max_iter:
            break
    s = kernel.softmin_rows(loga, f, eps_t)
    return _Solution(f, f, s, eps_t, n_iter, err, done)


AUTO_SINKHORN_ITERS = 2000       # method='auto': Sinkhorn iterations before a stalled problem goes to Newton
AUTO_NEWTON_ENTRIES = 1 << 20    # ... if its dense n x m float64 matrix has at most this many entries


def _sinkhorn_newton(kernel: _Kernel, loga, logb, eps_t, tol, max_iter, scaling, warm_tol: float = 1e-2,
                     sparsity: float = 1e-6, warm_iter: int | None = None) -> _Solution:
    """Sinkhorn down to ``warm_tol`` (at most ``warm_iter`` iterations), then sparse Newton steps for
    each problem not yet within ``tol`` (see :mod:`.newton`); the dense cost of a problem is read from
    the stored matrix or recomputed from the points."""
    from .newton import newton_refine

    warm = _sinkhorn(kernel, loga, logb, eps_t, None, max(tol, warm_tol), warm_iter or max_iter, scaling)
    f, g = warm.f.clone(), warm.g.clone()
    n_iter, err = warm.n_iter.clone(), warm.error.clone()
    for k in range(kernel.B):
        if bool(warm.converged[k]) and float(warm.error[k]) < tol:
            continue
        Ck = kernel.C[k] if kernel.C is not None else kernel.cost.rows(0, kernel.n, differentiable=False)[k]
        fk, gk, steps, e = newton_refine(Ck.double(), loga[k].double(), logb[k].double(),
                                         float(eps_t[k]), f[k].double(), g[k].double(), tol,
                                         max(1, max_iter - int(n_iter[k])), sparsity)
        f[k], g[k] = fk.to(f.dtype), gk.to(g.dtype)
        n_iter[k] += steps
        err[k] = e
    # the Newton phase ends with a row update, so s = f (balanced)
    s = torch.where((n_iter > warm.n_iter).view(-1, 1), f, warm.s)
    return _Solution(f, g, s, eps_t, n_iter, err, err < tol)



def _unrolled(cost: Cost, a, b, eps_t, rho, tol, max_iter, scaling):
    """Differentiable loop (autograd through every iteration); dense C."""
    C = cost.full()
    B = cost.B
    loga, logb = a.log(), b.log()
    eps0 = torch.maximum(cost.diameter().detach().to(C.dtype), eps_t) if scaling is not None else eps_t
    f = C.new_zeros(B, cost.n)
    g = C.new_zeros(B, cost.m)
    k = 0
    n_iter = 0
    err = torch.full((B,), math.inf, dtype=C.dtype)
    while True:
        eps_k = eps_t if scaling is None else torch.maximum(eps_t, eps0 * scaling ** k)
        e1, e3 = eps_k.view(B, 1), eps_k.view(B, 1, 1)
        lam = 1.0 if rho is None else rho / (rho + e1)
        g = lam * -e1 * torch.logsumexp((loga + f / e1).unsqueeze(-1) - C / e3, 1)
        s = -e1 * torch.logsumexp((logb + g / e1).unsqueeze(1) - C / e3, 2)
        f_new = lam * s
        err = (a * (1 - torch.exp((f - f_new) / e1)).abs()).sum(1).detach()
        f = f_new
        k += 1
        n_iter += 1
        if (bool((eps_k <= eps_t).all()) and bool((err < tol).all())) or k >= max_iter:
            break
    e1, e3 = eps_t.view(B, 1), eps_t.view(B, 1, 1)
    mass = torch.exp((loga + f / e1).unsqueeze(-1) + (logb + g / e1).unsqueeze(1) - C / e3).sum((1, 2))
    value = _marginal_term(a, f, rho) + _marginal_term(b, g, rho) - eps_t * (mass - a.sum(1) * b.sum(1))
    n_it = torch.full((B,), n_iter, dtype=torch.long)
    return value, f.detach(), g.detach(), n_it, err, err < tol


@eager
def _solve(cost: Cost, a, b, *, eps, rho, tol, max_iter, scaling, online, differentiate, block_elems,
           dense_bytes, inputs, symmetric=False, method="sinkhorn", newton=None, g0=None) -> OTResult:
    B, n, m = cost.B, cost.n, cost.m
    ref = cost.matrix if cost.is_matrix else cost.x
    eps_t = _as_eps(eps, B, ref.dtype, ref.device)
    if differentiate == "unroll":
        value, f, g, n_it, err, conv = _unrolled(cost, a, b, eps_t, rho, tol, max_iter, scaling)
        return OTResult(value, f, g, eps_t, n_it, err, conv, cost, a.detach(), b.detach(), rho, block_elems)
    if method == "newton":
        online = False
    if method == "auto":
        # plain Sinkhorn; a problem that has not converged after AUTO_SINKHORN_ITERS iterations (slow
        # alternating convergence at small eps) is finished by sparse Newton steps, when balanced and
        # small enough for a dense matrix
        small = n * m <= AUTO_NEWTON_ENTRIES and not symmetric
        method = "auto-newton" if (rho is None and small and max_iter >= 20) else "sinkhorn"
    if online is None:
        # Keep the matrix when it fits, except for the squared Euclidean cost in low dimension, whose
        # blocks one GEMM recomputes faster than they can be read back (measured at d = 2).
        too_big = B * n * m * ref.element_size() > dense_bytes
        cheap = cost.sq_euclidean and cost.x.shape[-1] <= 16
        online = (not cost.is_matrix) and (too_big or cheap)
    kernel = _Kernel(_detached(cost), bool(online), block_elems)
    ad, bd = a.detach(), b.detach()
    if symmetric:
        sol = _sinkhorn_symmetric(kernel, ad.log(), eps_t, rho, tol, max_iter, scaling)
    elif method == "newton":
        sol = _sinkhorn_newton(kernel, ad.log(), bd.log(), eps_t, tol, max_iter, scaling, **(newton or {}))
    elif method == "auto-newton":
        # at most half of the budget for Sinkhorn, so that the Newton phase has the rest
        sol = _sinkhorn_newton(kernel, ad.log(), bd.log(), eps_t, tol, max_iter, scaling, warm_tol=tol,
                               warm_iter=min(AUTO_SINKHORN_ITERS, max_iter // 2))
    else:
        sol = _sinkhorn(kernel, ad.log(), bd.log(), eps_t, rho, tol, max_iter, scaling, g0)
    e1 = eps_t.view(B, 1)
    with torch.no_grad():
        mass = (ad * torch.exp((sol.f - sol.s) / e1)).sum(1)
        coupling = -eps_t * (mass - ad.sum(1) * bd.sum(1))
    state = {"cost": _detached(cost), "f": sol.f, "g": sol.g, "s": sol.s, "eps": eps_t, "block_elems": block_elems}
    x, y, C = inputs
    coupling = _Coupling.apply(coupling, state, x, y, C, a, b)
    value = _marginal_term(a, sol.f, rho) + _marginal_term(b, sol.g, rho) + coupling
    return OTResult(value, sol.f, sol.g, eps_t, sol.n_iter, sol.error, sol.converged, _detached(cost),
                    ad, bd, rho, block_elems)


def _detached(cost: Cost) -> Cost:
    if cost.is_matrix:
        return Cost(matrix=cost.matrix.detach())
    return Cost(cost.x.detach(), cost.y.detach(), p=cost.p, fn=cost.fn, expand=cost.expand)


def _point_cost(x, y, p, fn, eps):
    """Centre the points (translation-invariant costs) and decide whether the GEMM expansion of
    ``||x - y||^2`` is accurate enough: its rounding error is about ``8 u max ||x||^2`` (u the unit
    roundoff); when that exceeds 1e-3 eps, or p != 2, costs are computed from differences (slower)."""
    if fn is not None:
        return x, y, Cost(x, y, p=p, fn=fn)
    centre = 0.5 * (x.detach().mean(1, keepdim=True) + y.detach().mean(1, keepdim=True))
    xc, yc = x - centre, y - centre
    with torch.no_grad():
        r2 = max(float((xc * xc).sum(-1).max()), float((yc * yc).sum(-1).max()))
        u = torch.finfo(x.dtype).eps
        e_min = float(torch.as_tensor(eps).min())
    # For p != 2 the root of an expanded square is inaccurate near coincident points: use differences.
    return xc, yc, Cost(xc, yc, p=p, expand=p == 2 and 8 * u * r2 <= 1e-3 * e_min)
