"""Sinkhorn with sparse Newton iterations (Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao,
Ying, "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024, arXiv:2401.12253).

Phase 1 is ordinary log-domain Sinkhorn (with epsilon-scaling) down to a loose marginal error
(``warm_tol``). Phase 2 maximises the concave entropic dual

    D(f, g) = <a, f> + <b, g> - eps sum_ij a_i b_j exp((f_i + g_j - C_ij)/eps) + eps |a||b|

by Newton steps. With the plan ``P = a b^T exp((f + g - C)/eps)``, ``r = P 1``, ``c = P^T 1``:

    grad D = (a - r, b - c),   -eps Hess D = [[diag r, P], [P^T, diag c]] =: M.

The off-diagonal block is sparsified: only the entries of P above ``sparsity`` times their row's or
column's largest entry are kept (the plan concentrates near the optimal assignment at small eps, so
this keeps a few entries per row); the diagonal stays exact, so the sparsified M stays diagonally
dominant (positive semi-definite, null space (1, -1) orthogonal to the gradient). The step
``M d = eps grad`` is solved by Jacobi-preconditioned conjugate gradient, followed by a backtracking
(Armijo) line search on D. The phase runs in float64 on the dense cost matrix (small / medium
problems); it ends with one Sinkhorn sweep so that the returned potentials have the same form as the
plain solver's (exact row marginals), and the reported iteration count is Sinkhorn sweeps + Newton steps.
† The relative threshold rule and the Jacobi preconditioner are our choices; the paper truncates P
to a target density.
"""

from __future__ import annotations

import math

import torch

__all__ = ["newton_refine"]


def _dual(C, loga, logb, eps, f, g):
    lp = loga[:, None] + logb[None, :] + (f[:, None] + g[None, :] - C) / eps
    lse = torch.logsumexp(lp.reshape(-1), 0)
    return (loga.exp() * f).sum() + (logb.exp() * g).sum() - eps * lse.exp(), lp


def _cg(matvec, rhs, diag, tol, max_iter):
    """Preconditioned conjugate gradient for a PSD system (Jacobi preconditioner ``diag``)."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    p = z.clone()
    rz = (r * z).sum()
    stop = tol * rhs.norm()
    for _ in range(max_iter):
        Ap = matvec(p)
        pAp = (p * Ap).sum()
        if not pAp > 0:
            break
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        if r.norm() <= stop:
            break
        z = r / diag
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x


@torch.no_grad()
def newton_refine(C: torch.Tensor, loga: torch.Tensor, logb: torch.Tensor, eps: float, f: torch.Tensor,
                  g: torch.Tensor, tol: float, max_steps: int, sparsity: float = 1e-6,
                  cg_tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Newton phase for one balanced problem ``C (n, m)`` (float64). Returns (f, g, iterations, error):
    Newton steps until the L1 row + column marginal error is below ``tol`` (or ``max_steps``), then one
    Sinkhorn sweep (counted); error is the row error measured by that sweep (columns exact)."""
    a, b = loga.exp(), logb.exp()
    n, m = C.shape
    D, lp = _dual(C, loga, logb, eps, f, g)
    steps = 0
    err = math.inf
    while True:
        P = lp.exp()
        r, c = P.sum(1), P.sum(0)
        err = float((r - a).abs().sum() + (c - b).abs().sum())
        if err < tol or steps >= max_steps:
            break
        keep = (P >= sparsity * P.amax(1, keepdim=True)) | (P >= sparsity * P.amax(0, keepdim=True))
        Ps = torch.where(keep, P, torch.zeros_like(P))
        # scale-invariant Jacobi preconditioner; tiny shift on the (1, -1) null space
        diag = torch.cat([r, c]).clamp_min(1e-300)
        shift = 1e-14 * float(diag.max())

        def matvec(v, Ps=Ps, r=r, c=c, shift=shift):
            vf, vg = v[:n], v[n:]
            return torch.cat([r * vf + Ps @ vg, Ps.T @ vf + c * vg]) + shift * v

        grad = torch.cat([a - r, b - c])
        d = eps * _cg(matvec, grad, diag + shift, cg_tol, 4 * (n + m))
        slope = float((grad * d).sum())
        t = 1.0
        while True:
            D_new, lp_new = _dual(C, loga, logb, eps, f + t * d[:n], g + t * d[n:])
            # Armijo, with the dual's rounding error as slack: near the optimum D is flat to machine
            # precision and an exact-arithmetic ascent test would reject the step that fixes the marginals
            slack = 16 * torch.finfo(C.dtype).eps * max(1.0, abs(float(D)))
            if float(D_new) >= float(D) + 1e-4 * t * slope - slack or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10:          # no ascent left at this precision: stalled at the rounding floor
            break
        f, g, D, lp = f + t * d[:n], g + t * d[n:], D_new, lp_new
        steps += 1
    # one Sinkhorn sweep (g, then f): the returned potentials have exact row marginals, and the error
    # reported is the row error of the plan before the f-update (its columns are exact), as in Sinkhorn
    g = -eps * torch.logsumexp(loga[:, None] + (f[:, None] - C) / eps, 0)
    f_new = -eps * torch.logsumexp(logb[None, :] + (g[None, :] - C) / eps, 1)
    err = float((a * (1 - torch.exp((f - f_new) / eps)).abs()).sum())
    return f_new, g, steps + 1, err
