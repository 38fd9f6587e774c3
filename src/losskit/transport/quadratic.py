"""Quadratically regularised OT (Blondel, Seguy, Rolet 2018): sparse plans from a smooth dual."""

from __future__ import annotations

import numpy as np
import torch

from .._core import Paper, objective, reduce
from .._core.errors import fail
from .._core.validate import check_sample_weight
from . import _validate as V
from ._inputs import TWO_SAMPLES, points_example
from .costs import pairwise_cost

__all__ = ["quadratic_ot", "solve_quadratic", "sparse_ot", "solve_sparse"]

QUAD_PAPER = Paper("Smooth and Sparse Optimal Transport", 2018, "1710.06276", "Blondel, Seguy, Rolet")


@torch.compiler.disable
def solve_quadratic(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gamma: float, tol: float = 1e-12,
                    max_iter: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual potentials of ``min <P, C> + gamma/2 ||P||^2`` s.t. marginals, for ``C (n, m)`` (no grad).

    Maximises the smooth concave dual ``<a, f> + <b, g> - 1/(2 gamma) sum_ij [f_i + g_j - C_ij]_+^2`` by
    SciPy's L-BFGS-B in float64; the plan is ``P = [f + g - C]_+ / gamma``.
    """
    from scipy.optimize import minimize

    Cn = C.detach().double().cpu().numpy()
    an, bn = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    n, m = Cn.shape

    def fun(w):
        f, g = w[:n], w[n:]
        R = np.maximum(f[:, None] + g[None, :] - Cn, 0.0)
        val = f @ an + g @ bn - 0.5 / gamma * (R * R).sum()
        P = R / gamma
        return -val, -np.concatenate([an - P.sum(1), bn - P.sum(0)])

    w0 = np.concatenate([np.zeros(n), Cn.min(0)])
    res = minimize(fun, w0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 30})
    f = torch.as_tensor(res.x[:n], dtype=C.dtype, device=C.device)
    g = torch.as_tensor(res.x[n:], dtype=C.dtype, device=C.device)
    return f, g


@objective(
    "quadratic_ot", family="transport", input_kind=TWO_SAMPLES, example=points_example, paper=QUAD_PAPER,
    properties={"nonnegative"},
    formula="OT_gamma = min_{P1=a, P^T1=b, P>=0} <P, C> + gamma/2 ||P||_F^2 = max_{f,g} <a,f> + <b,g> "
            "- 1/(2 gamma) sum_ij [f_i + g_j - C_ij]_+^2",
)
def quadratic_ot(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                 b: torch.Tensor | None = None, gamma: float = 1.0, p: float = 2.0,
                 sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Quadratically regularised optimal transport cost: sparse plans, smooth in the inputs.

    .. math:: \\mathrm{OT}_\\gamma = \\min_{P \\ge 0,\\ P\\mathbf 1 = a,\\ P^\\top\\mathbf 1 = b}
              \\langle P, C\\rangle + \\tfrac{\\gamma}{2}\\|P\\|_F^2

    solved in the dual (SciPy L-BFGS-B, float64, dense: small and medium problems); the plan is
    ``[f_i + g_j - C_ij]_+ / gamma`` (exactly sparse). The value is the dual objective with the optimal
    potentials held fixed, so gradients follow the envelope theorem (``dOT/dC = P``).

    Paper: Blondel, Seguy, Rolet, "Smooth and Sparse Optimal Transport", 2018, arXiv:1710.06276.
    """
    if not gamma > 0:
        raise fail("gamma", "a positive regularisation strength", repr(gamma))
    unbatched = x.dim() == 2
    xb, yb, ab, bb = V.samples(x, y, a, b, balanced=True)
    C = pairwise_cost(xb, yb, p)
    vals = []
    for k in range(C.shape[0]):
        f, g = solve_quadratic(C[k], ab[k], bb[k], gamma)
        R = torch.relu(f[:, None] + g[None, :] - C[k])
        vals.append((ab[k] * f).sum() + (bb[k] * g).sum() - 0.5 / gamma * (R * R).sum())
    v = torch.stack(vals)
    v = v[0] if unbatched else v
    return reduce(v, reduction, weight=check_sample_weight(sample_weight, v.shape))


SPARSE_PAPER = Paper("Sparsity-Constrained Optimal Transport", 2023, "2209.15466", "Liu, Puigcerver, Blondel")


def _topk_simplex(V: torch.Tensor, k: int) -> torch.Tensor:
    """Column-wise projection of ``V (n, m)`` onto ``{p in simplex, ||p||_0 <= k}``: keep the top k
    entries of each column and project them onto the simplex (Kyrillidis et al. 2013)."""
    n, m = V.shape
    k = min(k, n)
    top, idx = torch.topk(V, k, dim=0)                              # sorted, descending
    css = top.cumsum(0) - 1
    r = torch.arange(1, k + 1, dtype=V.dtype, device=V.device)[:, None]
    rho = ((top - css / r) > 0).sum(0).clamp_min(1)
    theta = css.gather(0, (rho - 1)[None, :]) / rho[None, :].to(V.dtype)
    return torch.zeros_like(V).scatter_(0, idx, (top - theta).clamp_min(0))


def _semi_dual(f, C, a, b, gamma, k):
    S = f[:, None] - C
    Pi = _topk_simplex(S / (gamma * b[None, :]), k)
    val = (f * a).sum() - (b * ((Pi * S).sum(0) - 0.5 * gamma * b * (Pi * Pi).sum(0))).sum()
    return val, Pi


@torch.compiler.disable
@torch.no_grad()
def solve_sparse(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gamma: float, k: int,
                 tol: float = 1e-13, max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Semi-dual of k-sparse-column, squared-l2-regularised OT for ``C (n, m)``: returns (f, plan).

    ``max_f <f, a> - sum_j b_j max_{pi in simplex, ||pi||_0 <= k} [<pi, f - C_:j> - gamma b_j/2 ||pi||^2]``;
    the inner maximiser is the top-k simplex projection of ``(f - C_:j) / (gamma b_j)`` and the plan
    column is ``b_j pi_j``. The objective is concave and piecewise quadratic; it is maximised by a
    damped semismooth Newton method in float64: with ``S_j`` the support of ``pi_j``, the generalised
    Hessian is ``-(1/gamma) sum_j (I_{S_j} - 1_{S_j} 1_{S_j}^T / |S_j|)``, the step solves
    ``(H + mu I) d = grad`` with ``mu = |grad| / gamma`` (Levenberg damping, -> 0 at the optimum), then a
    backtracking (Armijo) line search. Stops when ``||a - P 1||_1 < tol``.
    ``k = 1`` makes the semi-dual piecewise linear (the c-transform dual of unregularised OT, plus the
    constant ``gamma/2 sum_j b_j^2``): it is solved exactly by the LP (:func:`.exact.exact_plan`),
    ``f = 0`` (a column of the LP plan may split when the weights are not uniform).
    """
    dt = C.dtype
    if k == 1:
        from .exact import exact_plan

        P = exact_plan(C.detach().double(), a.detach().double(), b.detach().double()).reshape(C.shape)
        return torch.zeros(C.shape[0], dtype=dt, device=C.device), P.to(dt)
    Cd, ad, bd = C.detach().double(), a.detach().double(), b.detach().double()
    n = Cd.shape[0]
    f = torch.zeros(n, dtype=torch.float64, device=C.device)
    val, Pi = _semi_dual(f, Cd, ad, bd, gamma, k)
    eye = torch.eye(n, dtype=torch.float64, device=C.device)
    for _ in range(max_iter):
        grad = ad - (Pi * bd[None, :]).sum(1)
        gnorm = float(grad.abs().sum())
        if gnorm < tol:
            break
        M = (Pi > 0).to(torch.float64)
        H = (torch.diag(M.sum(1)) - (M / M.sum(0).clamp_min(1)) @ M.T) / gamma
        d = torch.linalg.solve(H + (gnorm / gamma + 1e-12 / gamma) * eye, grad)
        slope = float((grad * d).sum())
        t = 1.0
        while True:
            v_new, Pi_new = _semi_dual(f + t * d, Cd, ad, bd, gamma, k)
            if float(v_new) >= float(val) + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:
            break
        f, val, Pi = f + t * d, v_new, Pi_new
    return f.to(dt), (Pi * bd[None, :]).to(dt)


def sparse_ot(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
              k: int = 2, gamma: float = 1.0, p: float = 2.0, sample_weight: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """(Experimental, unregistered) sparsity-constrained OT: each column of the plan has at most ``k`` nonzeros (squared-l2 regularised).

    .. math:: \\max_f\\ \\langle f, a\\rangle - \\sum_j b_j \\max_{\\pi \\in \\Delta,\\ \\|\\pi\\|_0 \\le k}
              \\Big[\\langle \\pi, f - C_{:j}\\rangle - \\tfrac{\\gamma b_j}{2}\\|\\pi\\|^2\\Big]

    the semi-dual of the paper with a top-k-constrained simplex projection; the plan's column j is
    ``b_j pi_j`` (exactly k-sparse; its columns sum to b, its rows match a at the optimum of the relaxed
    problem). ``k >= n`` is :func:`quadratic_ot`. Gradients by the envelope theorem (``d/dC = P``).
    † The column (target-side) sparsity, the regulariser ``gamma/2 ||P||^2`` and the semi-dual solver
    (damped semismooth Newton in float64, dense ``n x n`` systems: small and medium problems) are our
    choices within the paper's framework.

    Not registered as an objective: for small k the semi-dual is non-smooth (the paper: "the smoothness
    of the objectives increases as k increases"); its maximum often sits on a kink where two top-k
    supports of a column tie, no single top-k selection has ``P 1 = a`` (the solver then stops with a
    row-marginal residual), and the gradient ``P`` returned is one element of the superdifferential
    rather than the tie-mixing plan, so finite-difference gradient checks fail there.

    Paper: Liu, Puigcerver, Blondel, "Sparsity-Constrained Optimal Transport", 2023, arXiv:2209.15466.
    """
    if not gamma > 0:
        raise fail("gamma", "a positive regularisation strength", repr(gamma))
    if not (isinstance(k, int) and k >= 1):
        raise fail("k", "a positive number of nonzeros per column", repr(k))
    unbatched = x.dim() == 2
    xb, yb, ab, bb = V.samples(x, y, a, b, balanced=True)
    C = pairwise_cost(xb, yb, p)
    vals = []
    for i in range(C.shape[0]):
        f, P = solve_sparse(C[i], ab[i], bb[i], gamma, k)
        f, P = f.to(C.dtype), P.to(C.dtype)
        S = f[:, None] - C[i]
        Pi = P / bb[i][None, :]
        vals.append((ab[i] * f).sum() - (bb[i] * ((Pi * S).sum(0) - 0.5 * gamma * bb[i] * (Pi * Pi).sum(0))).sum())
    v = torch.stack(vals)
    v = v[0] if unbatched else v
    return reduce(v, reduction, weight=check_sample_weight(sample_weight, v.shape))
