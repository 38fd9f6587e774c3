"""Input checks for the transport family (each raises LossInputError naming the argument).

Value checks go through :func:`losskit._core.validate.require` (validation modes, no host sync on
accelerators, skipped for meta tensors). The registry's wrapper already rejects NaN/+inf in every input
of a registered objective, so the objectives pass ``finite=False``; the public solver functions
(:func:`~.sinkhorn.solve`, :func:`~.sinkhorn.solve_matrix`, ...), which the wrapper does not see, check
finiteness here.
"""

from __future__ import annotations

import math

import torch

from .._core.conventions import promote
from .._core.errors import fail
from .._core.validate import (
    check_finite,
    check_floating,
    check_nonnegative,
    describe,
    require,
    value_check_mode,
)

#: costs are bounded this far below the dtype's largest value (sums of a few costs and the GEMM
#: expansion's ``||x||^2 + ||y||^2`` stay finite)
_COST_HEADROOM = 16.0


def uniform(B: int, n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.full((B, n), 1.0 / n, dtype=ref.dtype, device=ref.device)


def _weights(name: str, w, B: int, n: int, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    if w is None:
        return uniform(B, n, ref)
    check_floating(name, w)
    w = promote(w)
    if w.dim() == 1 and B == 1:
        w = w.unsqueeze(0)
    if tuple(w.shape) != (B, n):
        raise fail(name, f"weights of shape {(B, n)} (one per point of {ref_name})", f"shape {tuple(w.shape)}")
    check_nonnegative(name, w, "non-negative finite weights")
    require(name, w, lambda: (w.sum(1) <= 0).any(), "weights with a positive total per problem",
            lambda: f"a problem with total weight 0 (problem {int((w.sum(1) <= 0).nonzero()[0])})")
    return w.to(ref.dtype)


def _balanced(a: torch.Tensor, b: torch.Tensor) -> None:
    tol = 1e-6 if a.dtype == torch.float64 else 1e-3

    def off():
        sa, sb = a.sum(1), b.sum(1)
        return (sa - sb).abs() > tol * sa.abs().clamp_min(1)

    def got():
        i = int(off().nonzero()[0])
        return f"total {b[i].sum().item():.6g} against {a[i].sum().item():.6g} in problem {i}"

    require("b", b, lambda: off().any(), "the same total mass as a (balanced OT; pass rho= for unbalanced OT)", got)


def _points(name: str, x, finite: bool = True) -> torch.Tensor:
    check_floating(name, x)
    x = promote(x)
    if x.dim() not in (2, 3):
        raise fail(name, "points of shape (n, d) or a batch (B, n, d)", describe(x))
    if x.shape[-2] == 0:
        raise fail(name, "at least one point", f"shape {tuple(x.shape)}")
    if finite:
        check_finite(name, x)
    return x


def samples(x, y, a=None, b=None, *, balanced: bool = True, finite: bool = True):
    """Batched ``x (B, n, d)``, ``y (B, m, d)``, ``a (B, n)``, ``b (B, m)``. ``finite=False``: the points'
    finiteness was already checked (by the registry's wrapper)."""
    x = _points("x", x, finite)
    y = _points("y", y, finite)
    if x.dim() != y.dim():
        raise fail("y", f"a {x.dim()}-d tensor like x", describe(y))
    if x.dim() == 2:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if y.shape[0] != x.shape[0]:
        raise fail("y", f"a batch of {x.shape[0]} problems (as x)", f"shape {tuple(y.shape)}")
    if y.shape[-1] != x.shape[-1]:
        raise fail("y", f"points of dimension {x.shape[-1]} (as x)", f"shape {tuple(y.shape)}")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    B, n, m = x.shape[0], x.shape[1], y.shape[1]
    a = _weights("a", a, B, n, x, "x")
    b = _weights("b", b, B, m, x, "y")
    if balanced:
        _balanced(a, b)
    return x, y, a, b


def balanced_costs(x, y, a, b, p: float):
    """The validated balanced problems of the dense solvers: ``(C (B, n, m), a (B, n), b (B, m))`` with
    ``C = ||x_i - y_j||^p``, after refusing points whose costs would overflow (:func:`cost_range`)."""
    from ..ops.pairwise import pairwise_cost

    xb, yb, ab, bb = samples(x, y, a, b, balanced=True, finite=False)
    cost_range(xb, yb, p)
    return pairwise_cost(xb, yb, p), ab, bb


def cost_range(x: torch.Tensor, y: torch.Tensor, p: float, names: tuple[str, str] = ("x", "y")) -> None:
    """Refuse points whose pairwise costs ``||x_i - y_j||^p`` overflow their dtype (float32 points of
    magnitude 1e30, say), naming the input (not the internal cost matrix). A value check.

    ``x (B, n, d)``, ``y (B, m, d)``. With every coordinate of x within ``r_x`` of x's mean (per problem),
    of y within ``r_y`` of y's mean, and the two means ``s`` apart (largest coordinate difference),
    ``||x_i - y_j|| <= sqrt(d) (r_x + s + r_y)``. Each of the three is asked to be at most
    ``lim = (max / 16)^(1/p) / (3 sqrt(d))`` (``max`` the dtype's largest value; the factor 16 leaves
    headroom for sums of costs and the GEMM expansion): for float32, d = 2, p = 2 about 1e18. ``x``
    is named for its own spread, ``y`` for its spread and for its distance to x.
    """
    if value_check_mode(x) is None:               # validation off, tracing, or no data: nothing to compute
        return
    d = x.shape[-1]
    lim = math.exp(math.log(torch.finfo(x.dtype).max / _COST_HEADROOM) / p) / (3 * math.sqrt(d))
    what = (f"points whose pairwise costs ||x_i - y_j||^{p:g} fit in {str(x.dtype).replace('torch.', '')} "
            f"(coordinates within {lim:.3g} of")

    def spread(t):
        return (t - t.mean(-2, keepdim=True)).abs().amax()

    def apart():
        return (x.mean(-2) - y.mean(-2)).abs().amax()

    for name, t in zip(names, (x, y)):
        require(name, t, lambda t=t: ~(spread(t) <= lim), f"{what} the cloud's mean)",
                lambda t=t: f"a coordinate {spread(t).item():.3g} away from it")
    require(names[1], y, lambda: ~(apart() <= lim), f"{what} each other's mean)",
            lambda: f"means {apart().item():.3g} apart")


def matrix(C, a=None, b=None, *, balanced: bool = True):
    check_floating("C", C)
    C = promote(C)
    if C.dim() == 2:
        C = C.unsqueeze(0)
    if C.dim() != 3 or C.shape[1] == 0 or C.shape[2] == 0:
        raise fail("C", "a cost matrix (n, m) or a batch (B, n, m)", describe(C))
    check_finite("C", C)
    B, n, m = C.shape
    a = _weights("a", a, B, n, C, "the rows of C")
    b = _weights("b", b, B, m, C, "the columns of C")
    if balanced:
        _balanced(a, b)
    return C, a, b
