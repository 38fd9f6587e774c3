"""Pairwise Euclidean costs, with one GEMM policy and gradients that stay finite at coincident points.

``expand=True`` computes squared distances by one (batched) GEMM, ``||x||^2 + ||y||^2 - 2 <x, y>``,
clamped at 0: no ``(n, m, d)`` temporary, accurate when the points are centred or normalised (callers
centre them; the cost is translation invariant). ``expand=False`` forms the differences (exact, O(nmd)
memory), for small problems and for the exact-zero diagonal of ``x`` against itself.
"""

from __future__ import annotations

import torch

__all__ = ["sq_dist", "pairwise_cost", "safe_sqrt"]


def safe_sqrt(d2: torch.Tensor) -> torch.Tensor:
    """``sqrt(d2)`` with value and gradient 0 where ``d2 == 0`` (no ``inf * 0`` at coincident points)."""
    pos = d2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), torch.zeros_like(d2))


def sq_dist(x: torch.Tensor, y: torch.Tensor, *, expand: bool = True) -> torch.Tensor:
    """Squared distances ``||x_i - y_j||^2`` of ``x (..., n, d)`` and ``y (..., m, d)`` -> ``(..., n, m)``."""
    if expand:
        sq = (x * x).sum(-1).unsqueeze(-1) + (y * y).sum(-1).unsqueeze(-2) - 2 * (x @ y.transpose(-1, -2))
        return sq.clamp_min(0)
    diff = x.unsqueeze(-2) - y.unsqueeze(-3)
    return (diff * diff).sum(-1)


def pairwise_cost(x: torch.Tensor, y: torch.Tensor, p: float = 2.0, *, expand: bool = False) -> torch.Tensor:
    """``||x_i - y_j||^p`` for batched point sets ``x (B, n, d)``, ``y (B, m, d)`` (differentiable).

    The square root is never taken at 0; for ``p != 2`` the gradient at coincident points is 0 (``p > 1``).
    """
    if expand and x.dim() == 3:
        sq = torch.baddbmm((y * y).sum(-1).unsqueeze(1), x, y.transpose(1, 2), alpha=-2.0)
        sq = (sq + (x * x).sum(-1, keepdim=True)).clamp_min(0)
    else:
        sq = sq_dist(x, y, expand=expand)
    if p == 2:
        return sq
    pos = sq > 0
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe ** (p / 2), torch.zeros_like(sq))
