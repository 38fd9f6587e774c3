"""Quadratically regularised OT (Blondel, Seguy, Rolet 2018): sparse plans from a smooth dual."""

from __future__ import annotations

import numpy as np
import torch

from .._core import Paper, finish, objective
from .._core.compiler import eager
from . import _domains as D
from . import _validate as V
from ._inputs import TWO_SAMPLES, points_example

__all__ = ["quadratic_ot", "solve_quadratic", "sparse_ot", "solve_sparse"]

QUAD_PAPER = Paper("Smooth and Sparse Optimal Transport", 2018, "1710.06276", "Blondel, Seguy, Rolet")


@eager
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
    properties={"nonnegative"}, meta=False, compile=False,
    skip_reasons={"compile": "the dual is maximised by SciPy's L-BFGS-B on host values"},
    domains=D.domains("a", "b", "gamma", "p"),
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

    ``gamma > 0``, ``p >= 1``; points whose costs overflow their dtype raise naming ``x`` / ``y``.

    Paper: Blondel, Seguy, Rolet, "Smooth and Sparse Optimal Transport", 2018, arXiv:1710.06276.
    """
    unbatched = x.dim() == 2
    C, ab, bb = V.balanced_costs(x, y, a, b, p)
    vals = []
    for k in range(C.shape[0]):
        f, g = solve_quadratic(C[k], ab[k], bb[k], gamma)
        R = torch.relu(f[:, None] + g[None, :] - C[k])
        vals.append((ab[k] * f).sum() + (bb[k] * g).sum() - 0.5 / gamma * (R * R).sum())
    v = torch.stack(vals)
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)



# sparse_ot moved to sparse.py (issue 15): re-exported so that every former import path works.
from .sparse import (  # noqa: E402
    SPARSE_PAPER,
    SPARSE_SAMPLES,
    _certified,
    _fit_structure,
    _polish,
    _semi_dual_np,
    _smoothed_dual,
    _solve_sparse_np,
    _sparse_pieces,
    _structure,
    _topk_simplex_np,
    solve_sparse,
    sparse_ot,
)

_REEXPORTED = (SPARSE_PAPER, SPARSE_SAMPLES, _certified, _fit_structure, _polish, _semi_dual_np, _smoothed_dual,
               _solve_sparse_np, _sparse_pieces, _structure, _topk_simplex_np)
