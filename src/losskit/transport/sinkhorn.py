"""Entropic optimal transport: the solver every transport objective rests on.

One abstraction: a batched problem (cost ``C (B, n, m)`` from :class:`~.costs.Cost`, weights ``a``, ``b``,
regularisation ``eps``, optional KL marginal relaxation ``rho``) is solved for its dual potentials ``f``,
``g`` by log-domain Sinkhorn with epsilon-scaling, and returned as an :class:`OTResult` (value,
potentials, achieved marginal error, iteration count, lazy plan and barycentric projection).

Solver (no autograd). With ``lambda = rho / (rho + eps)`` (``lambda = 1`` balanced), the soft c-transforms

    f_i = lambda * (-eps log sum_j b_j exp((g_j - C_ij) / eps))
    g_j = lambda * (-eps log sum_i a_i exp((f_i - C_ij) / eps))

alternate. One iteration is one fused pass over C (``_Kernel.sweep``): the row pass computes
``E_ij = exp((g_j - C_ij)/eps + log b_j - max_j(...))`` block by block (the log-sum-exp gives f), and
the same block, still in cache, gives the column sums for the next g as a matrix-vector product
``E^T w`` (``w_i = a_i exp(f_i/eps + row max)``): n m exponentials and one read of C per iteration, not
2 n m and two. A column whose sum underflows this row-relative scale falls back to an exact column
log-sum-exp pass. The returned potentials are ``(f, g)`` with f updated last, so the plan has exact
row marginals (balanced case). Exponent arguments are clamped at -80 after subtracting the maximum (a
term below exp(-80) = 2e-35 of the largest is irrelevant, and float32 ``exp`` is 10-15x slower below
-87). For points with the squared Euclidean cost, ``(g_j - C_ij)/eps`` is one batched GEMM:
``(2/eps) <x_i, y_j> + (g_j - |y_j|^2)/eps`` minus a row constant.

Memory: the matrix is kept when ``B n m`` entries fit under ``dense_bytes`` (default 2 GiB) (except
for the squared Euclidean cost with d <= 16, where one GEMM per block is faster than reading the block
back); otherwise the "online" path recomputes cost blocks from the points every pass and holds
O(B (n + m)) plus one block of ``block_elems`` entries. ``online=True/False`` forces a path.

Stopping: each sweep gives, for free, the L1 column-marginal error ``sum_j b_j |1 - exp((g_j - g_j^new)/eps)|``
of the plan ``(f, g)`` (whose rows are exact after the f-update). The loop stops per problem once that
error is below ``tol`` at the target eps; a converged problem is frozen, so a problem's result does not
depend on the rest of the batch. For unbalanced problems the same quantity is the fixed-point residual.

Value and gradient. The value is the dual objective at the potentials,

    OT_eps = <a, phi(f)> + <b, phi(g)> - eps (sum_ij a_i b_j exp((f_i + g_j - C_ij)/eps) - |a||b|),
    phi(f) = f (balanced) or -rho (exp(-f/rho) - 1) (unbalanced),

which at the optimum equals the primal ``min_P <P, C> + eps KL(P | a (x) b) (+ rho KL marginal terms)``.
Gradients use the envelope theorem (the potentials are treated as constants): ``dOT/dC_ij = P_ij``, so
``grad_x = sum_j P_ij grad_x c(x_i, y_j)``, computed block by block in the backward pass (O(n + m)
memory on the online path); ``grad_a = phi'(...)`` terms come from the formula. ``differentiate='unroll'``
instead back-propagates through every iteration (dense only; memory grows with the iteration count).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._core.errors import fail
from ..ops.budget import DENSE_BYTES
from . import _domains as D
from . import _validate as V
from ._kernel import _FUSED_FLOOR, BLOCK_ELEMS, CLAMP, _block_rows, _finite_or_zero, _Kernel, _lse_rows_
from ._solve import (
    AUTO_NEWTON_ENTRIES,
    AUTO_SINKHORN_ITERS,
    _as_eps,
    _detached,
    _point_cost,
    _sinkhorn,
    _sinkhorn_newton,
    _sinkhorn_symmetric,
    _Solution,
    _solve,
    _unrolled,
)
from .costs import Cost
from .result import OTResult, _Coupling, _marginal_term

# The module was split by job (issue 15): the kernel (_kernel.py), the loops (_solve.py) and the result
# type (result.py); every name importable from here before still is.
__all__ = ["OTResult", "solve", "solve_matrix"]
_REEXPORTED = (CLAMP, _FUSED_FLOOR, BLOCK_ELEMS, DENSE_BYTES, _block_rows, _finite_or_zero, _lse_rows_, _Kernel,
               AUTO_NEWTON_ENTRIES, AUTO_SINKHORN_ITERS, _as_eps, _detached, _sinkhorn, _sinkhorn_newton,
               _sinkhorn_symmetric, _Solution, _unrolled, _Coupling, _marginal_term, Cost)


#: ``solve(..., fast=True)``: the settings it stands for. Stated accuracy: L1 marginal error <= FAST_BOUND
#: (the stopping test reads the solver's float32 estimate of the error, hence the 5% margin).
FAST_BOUND = 1e-2
FAST = {"tol": 0.95 * FAST_BOUND, "scaling": 0.5, "method": "sinkhorn"}


def _relations(rho, differentiate, method, online) -> None:
    """Relations between solver options (each option's own domain is checked separately)."""
    if method == "newton":
        if rho is not None:
            raise fail("rho", "None with method='newton' (balanced problems only)", repr(rho))
        if differentiate != "envelope":
            raise fail("differentiate", "'envelope' with method='newton'", repr(differentiate))
        if online:
            raise fail("online", "False or None with method='newton' (it needs the dense cost matrix)",
                       repr(online))


def _options_check(eps, rho, tol, max_iter, scaling, differentiate, method="sinkhorn", online=None):
    """The solver options of the public functions against the family's domains (:mod:`._domains`, as the
    registry's wrapper does for the objectives), then their relations."""
    D.check("method", method)
    _relations(rho, differentiate, method, online)
    for name, value in (("eps", eps), ("rho", rho), ("tol", tol), ("max_iter", max_iter), ("scaling", scaling),
                        ("differentiate", differentiate), ("online", online)):
        D.check(name, value)


#: method='auto' takes the multiscale solver (:mod:`.multiscale`) from this many cost entries n m on
#: (squared Euclidean cost, d <= 3, balanced, envelope gradients): measured faster than the online
#: path from n = m = 10^4 at every eps tried (docs/transport.md, "Multiscale").
AUTO_MULTISCALE_ENTRIES = 1e8


def _auto_multiscale(x, y, p, cost, rho, differentiate) -> bool:
    from .multiscale import MAX_DIM

    return (cost is None and p == 2 and rho is None and differentiate == "envelope"
            and x.shape[-1] <= MAX_DIM and x.shape[-2] * y.shape[-2] >= AUTO_MULTISCALE_ENTRIES)


def _solve_points(x, y, a, b, *, eps, p, cost, rho, tol, max_iter, scaling, online, differentiate="envelope",
                  block_elems: int = BLOCK_ELEMS, dense_bytes: int = DENSE_BYTES, method="auto",
                  newton=None) -> OTResult:
    """:func:`solve` on validated batched inputs (the objectives' path: no second validation)."""
    if method == "multiscale" or (method == "auto" and _auto_multiscale(x, y, p, cost, rho, differentiate)):
        from .multiscale import _solve_multiscale, check_multiscale

        check_multiscale(x, p, cost, rho, differentiate)
        return _solve_multiscale(x, y, a, b, eps=eps, tol=tol, max_iter=max_iter, scaling=scaling,
                                 block_elems=block_elems)
    xc, yc, c = _point_cost(x, y, p, cost, eps)
    res = _solve(c, a, b, eps=eps, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=online,
                 differentiate=differentiate, block_elems=block_elems, dense_bytes=dense_bytes,
                 inputs=(xc, yc, None), method=method, newton=newton)
    res.target = y.detach()
    return res


def solve(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
          eps: float | torch.Tensor = 0.05, p: float = 2.0, cost: Callable | None = None,
          rho: float | None = None, tol: float = 1e-3, max_iter: int = 2000, scaling: float | None = 0.5,
          online: bool | None = None, differentiate: str = "envelope", block_elems: int = BLOCK_ELEMS,
          dense_bytes: int = DENSE_BYTES, method: str = "auto", newton: dict | None = None,
          fast: bool = False) -> OTResult:
    """Entropic OT between point clouds ``x (B, n, d)`` and ``y (B, m, d)`` (or unbatched ``(n, d)``).

    Cost ``C_ij = ||x_i - y_j||^p`` or ``cost(x_block, y)``; weights ``a (B, n)``, ``b (B, m)`` (uniform
    by default; zero weights are allowed, e.g. to pad ragged batches). Returns an :class:`OTResult`
    (unbatched inputs keep a batch dim of 1 in the result). See the module docstring for the algorithm.
    ``method='newton'``: Sinkhorn to a loose error, then sparse Newton steps (:mod:`.newton`; balanced,
    dense cost matrix, for small and medium problems and small eps / tight tol); ``newton`` passes its
    options (``warm_tol``, ``sparsity``). ``method='auto'`` (default): Sinkhorn, and a balanced problem
    with at most 2^20 cost entries still unconverged after min(2000, max_iter / 2) iterations
    (alternating Sinkhorn can stall at small eps) is finished by sparse Newton steps, which get the rest
    of ``max_iter``; ``'sinkhorn'``: Sinkhorn only. ``method='multiscale'``: the multiscale truncated
    solver for large clouds in d <= 3 (:func:`~.multiscale.solve_multiscale`, squared Euclidean cost,
    balanced; returns a :class:`~.multiscale.MultiscaleResult` with the truncation's certified bound);
    ``'auto'`` picks it from :data:`AUTO_MULTISCALE_ENTRIES` cost entries where it applies.

    ``fast=True``: the accuracy preset of :data:`FAST` (issue 23), which replaces ``tol``, ``scaling`` and
    ``method``: epsilon-scaling by 0.5 (one iteration per stage from the cost's diameter down to ``eps``),
    then iterations at ``eps`` until the solver's L1 marginal error is below 0.95e-2, Sinkhorn only. The
    stated bound: the plan's L1 marginal error (rows + columns) is at most 1e-2 when ``converged``
    (measured in float64 by tests/test_transport_fast.py). A training step rarely needs more (GeomLoss's
    default ``scaling=0.5`` stops at errors of about 0.1); ``docs/transport.md`` plots time against
    achieved error for every setting.
    """
    if fast:
        D.check("fast", fast)
        tol, scaling, method = FAST["tol"], FAST["scaling"], FAST["method"]
    x, y, a, b = V.samples(x, y, a, b, balanced=rho is None)
    _options_check(eps, rho, tol, max_iter, scaling, differentiate, method, online)
    D.check("p", p)
    D.check("cost", cost)
    if cost is None:
        V.cost_range(x, y, p)
    return _solve_points(x, y, a, b, eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter,
                         scaling=scaling, online=online, differentiate=differentiate, block_elems=block_elems,
                         dense_bytes=dense_bytes, method=method, newton=newton)


def solve_matrix(C: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                 eps: float | torch.Tensor = 0.05, rho: float | None = None, tol: float = 1e-3,
                 max_iter: int = 2000, scaling: float | None = 0.5, differentiate: str = "envelope",
                 block_elems: int = BLOCK_ELEMS, method: str = "auto", newton: dict | None = None) -> OTResult:
    """Entropic OT for a given cost matrix ``C (B, n, m)`` or ``(n, m)``; gradients flow to C, a, b.
    ``method='newton'``: sparse Newton iterations after a Sinkhorn warm start; ``'auto'`` (default)
    switches a stalled problem to them (see :func:`solve`)."""
    C, a, b = V.matrix(C, a, b, balanced=rho is None)
    _options_check(eps, rho, tol, max_iter, scaling, differentiate, method)
    if method == "multiscale":
        raise fail("method", "'auto', 'sinkhorn' or 'newton' for a cost matrix ('multiscale' clusters points: "
                   "use solve)", repr(method))
    c = Cost(matrix=C)
    return _solve(c, a, b, eps=eps, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=False,
                  differentiate=differentiate, block_elems=block_elems, dense_bytes=DENSE_BYTES,
                  inputs=(None, None, C), method=method, newton=newton)
