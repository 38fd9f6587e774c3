"""Costs: the one place that knows how to produce rows of C = c(x_i, y_j), from points or a matrix.

A cost is evaluated by row blocks ``C[:, i0:i1, :]`` (batched, shape ``(B, r, m)``), so that the solver
never needs the whole ``n x m`` matrix unless it decides to keep it. Three sources:

* points with the p-th power of the Euclidean distance, ``C_ij = ||x_i - y_j||^p`` (default p = 2);
* points with a user cost function ``cost(x_block (B, r, d), y (B, m, d)) -> (B, r, m)``;
* a given cost matrix ``(B, n, m)``.

For ``p = 2`` the solver uses the expansion ``||x||^2 + ||y||^2 - 2 <x, y>`` inside one batched GEMM
(see :mod:`.sinkhorn`); the points are centred first (the cost is translation invariant) so that the
expansion does not cancel catastrophically.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops.pairwise import pairwise_cost

__all__ = ["Cost", "pairwise_cost"]


class Cost:
    """A batched cost ``C (B, n, m)`` given by points (+ exponent or function) or by a matrix."""

    def __init__(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, *, p: float = 2.0,
                 fn: Callable | None = None, matrix: torch.Tensor | None = None, expand: bool = True):
        self.x, self.y, self.p, self.fn, self.matrix = x, y, float(p), fn, matrix
        self._sq_norms: tuple[torch.Tensor, torch.Tensor] | None = None
        self.expand = expand
        if matrix is not None:
            self.B, self.n, self.m = matrix.shape
        else:
            self.B, self.n, self.m = x.shape[0], x.shape[1], y.shape[1]

    @property
    def is_matrix(self) -> bool:
        return self.matrix is not None

    @property
    def sq_euclidean(self) -> bool:
        """Points with the plain squared Euclidean cost (the GEMM fast path applies)."""
        return self.matrix is None and self.fn is None and self.p == 2.0 and self.expand

    def sq_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||x_i||^2, ||y_j||^2)``, shapes (B, n), (B, m); computed once per cost (the solver asks
        every iteration)."""
        if self._sq_norms is None:
            self._sq_norms = ((self.x * self.x).sum(-1), (self.y * self.y).sum(-1))
        return self._sq_norms

    def transpose(self) -> Cost:
        if self.matrix is not None:
            return Cost(matrix=self.matrix.transpose(1, 2))
        fn = self.fn
        tfn = None if fn is None else (lambda yb, x: fn(x, yb).transpose(1, 2))
        return Cost(self.y, self.x, p=self.p, fn=tfn, expand=self.expand)

    def rows(self, i0: int, i1: int, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
             *, differentiable: bool = True) -> torch.Tensor:
        """``C[:, i0:i1, :]``, differentiable in the (optionally substituted) points ``x``, ``y``.

        ``differentiable=False`` (the solver's path) computes Euclidean costs by the GEMM expansion
        ``||x||^2 + ||y||^2 - 2 <x, y>``; the differentiable path uses differences, whose gradient is
        exact (and 0 at coincident points).
        """
        if self.matrix is not None:
            return self.matrix[:, i0:i1]
        x = self.x if x is None else x
        y = self.y if y is None else y
        xb = x[:, i0:i1]
        if self.fn is not None:
            return self.fn(xb, y)
        if differentiable or not self.expand:
            return pairwise_cost(xb, y, self.p)
        sq = torch.baddbmm((y * y).sum(-1).unsqueeze(1), xb, y.transpose(1, 2), alpha=-2.0)
        sq.add_((xb * xb).sum(-1, keepdim=True)).clamp_min_(0)
        return sq if self.p == 2 else sq.pow_(self.p / 2)

    def full(self, *, differentiable: bool = True) -> torch.Tensor:
        return self.rows(0, self.n, differentiable=differentiable)

    def diameter(self) -> torch.Tensor:
        """Per-problem upper bound on max C - min C (for the first epsilon of epsilon-scaling), shape (B,)."""
        if self.matrix is not None:
            flat = self.matrix.reshape(self.B, -1)
            return (flat.amax(1) - flat.amin(1)).clamp_min(1e-12)
        if self.fn is not None:
            # A user cost: evaluate on a subsample of rows (bounded work) and take the range.
            step = max(1, self.n // 256)
            c = self.fn(self.x[:, ::step], self.y)
            flat = c.reshape(self.B, -1)
            return (flat.amax(1) - flat.amin(1)).clamp_min(1e-12)
        # max ||x_i - y_j|| is at most the bounding box's diagonal and at most r_x + r_y, the radii of
        # the two clouds about a common centre; the second is far smaller in high dimension (d = 64
        # Gaussian clouds: about 7x), which saves epsilon-scaling iterations.
        both = torch.cat([self.x, self.y], 1)
        span = both.amax(1) - both.amin(1)
        diag = span.pow(2).sum(-1).sqrt()
        c = both.mean(1, keepdim=True)
        radii = (self.x - c).norm(dim=-1).amax(1) + (self.y - c).norm(dim=-1).amax(1)
        return (torch.minimum(diag, radii) ** self.p).clamp_min(1e-12)
