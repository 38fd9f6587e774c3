"""ParetoDA: the Pareto descent direction for domain adaptation, as combination weights over the training
objectives' gradients, steered by a held-out target-surrogate gradient (the "dynamic preference").

Given the objectives' gradients ``G`` (m x d: source classification, domain alignment, target surrogate...),
the gradient ``g_val`` of the surrogate loss on held-out unlabelled target data and that loss's value, the
weights ``alpha`` on the simplex solve a linear program over ``C = G G^T`` and ``a = G g_val``
(the EPO-style program of the authors' ``tools/epo_lp_dna.py``):

* **balance** (``val_loss > eps``): maximise ``alpha . a`` (the combined direction's alignment with the
  preference) subject to ``(C alpha)_i >= a_i`` for the objectives whose gradient opposes the preference
  (``a_i <= 0``) and ``(C alpha)_j >= 0`` for the most aligned one (no other constraint; if no objective
  is aligned, ``C alpha >= 0``: a common descent direction);
* **dominance** (``val_loss <= eps``): maximise ``1^T C alpha`` (descent on every objective together)
  subject to ``C alpha >= 0`` and ``alpha . a >= min(max_i a_i, 0)`` (dropped when ``relax``).

The update then descends on ``m * sum_i alpha_i L_i`` (the authors scale the weights by m).

Paper: Lv, Liang, Gong, Li, Liu, Li, Liu, Wang, "Pareto Domain Adaptation", NeurIPS 2021, arXiv:2112.04137.
Authors' code: BIT-DA/ParetoDA, ``tools/epo_lp_dna.py`` (cvxpy + GLPK; losskit solves the same LP with
SciPy's HiGHS).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pareto_da_weights"]


def pareto_da_weights(grads: torch.Tensor, val_grad: torch.Tensor, val_loss: float, *, eps: float = 1e-3,
                      relax: bool = False) -> torch.Tensor:
    """The ParetoDA combination weights ``alpha`` (on the simplex) for the objectives' gradients.

    Args:
        grads: (m, d), one flattened gradient per training objective.
        val_grad: (d,), the gradient of the target-surrogate loss on held-out target data.
        val_loss: that loss's value; above ``eps`` the program balances towards the preference, at or below
            it the program seeks a direction that descends on every objective.
        relax: in the dominance mode, drop the constraint that keeps the alignment with the preference.

    Returns ``alpha`` (m,) in the dtype and device of ``grads``; the combined loss is ``m * alpha . losses``.
    Raises ``RuntimeError`` if the program is infeasible (the authors then fall back to fixed preferences).
    """
    from scipy.optimize import linprog

    if grads.dim() != 2 or val_grad.dim() != 1 or grads.shape[1] != val_grad.shape[0]:
        raise ValueError(f"grads must be (m, d) and val_grad (d,), got {tuple(grads.shape)} and "
                         f"{tuple(val_grad.shape)}")
    g = grads.detach().double().cpu().numpy()
    gv = val_grad.detach().double().cpu().numpy()
    m = g.shape[0]
    c_mat = g @ g.T
    a = g @ gv
    a_eq, b_eq = np.ones((1, m)), np.array([1.0])
    if float(val_loss) > eps:
        aligned = a > 0
        if aligned.any():
            rhs = a.copy()
            rhs[aligned] = -np.inf
            rhs[np.flatnonzero(a == a.max())] = 0.0
        else:
            rhs = np.zeros(m)
        keep = np.isfinite(rhs)
        cost = -a  # maximise alpha . a
        a_ub, b_ub = -c_mat[keep], -rhs[keep]  # C alpha >= rhs
    else:
        cost = -c_mat.sum(0)  # maximise 1^T C alpha
        a_ub, b_ub = -c_mat, np.zeros(m)
        if not relax:
            a_ub = np.vstack([a_ub, -a[None]])
            b_ub = np.concatenate([b_ub, [-min(a.max(), 0.0)]])
    res = linprog(cost, A_ub=a_ub if len(b_ub) else None, b_ub=b_ub if len(b_ub) else None, A_eq=a_eq, b_eq=b_eq,
                  bounds=[(0, None)] * m, method="highs")
    if res.status != 0:
        raise RuntimeError(f"ParetoDA program: {res.message}")
    alpha = np.clip(res.x, 0.0, None)
    return torch.as_tensor(alpha / alpha.sum(), dtype=grads.dtype, device=grads.device)
