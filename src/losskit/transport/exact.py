"""Unregularised OT: exact 1-D Wasserstein by sorting, sliced Wasserstein, and small exact problems
solved by SciPy (assignment or HiGHS linear programming).

The cost exponent follows the family's one rule, ``p >= 1`` (:data:`._domains.EXPONENT`: the sorted
coupling is optimal only for convex costs). Samples whose costs ``|x - y|^p`` would overflow their dtype
(float32 values of 1e30 with ``p = 2``) raise :class:`LossInputError` naming ``x`` or ``y``; with ``p = 1``
no power is taken and such samples give a finite value. :func:`wasserstein_1d` and
:func:`sliced_wasserstein` have no data-dependent control flow (they run on meta tensors and compile);
:func:`exact_ot` solves a linear program with SciPy (``meta=False``, ``compile=False``).
"""

from __future__ import annotations

import numpy as np
import torch

from .._core import finish, objective
from .._core.compiler import eager
from .._core.conventions import promote
from .._core.errors import fail
from .._core.validate import check_finite, check_floating, describe
from . import _domains as D
from . import _validate as V
from ._inputs import TWO_SAMPLES, TWO_SAMPLES_1D, points_example, samples_1d_example
from .costs import pairwise_cost

__all__ = ["wasserstein_1d", "sliced_wasserstein", "exact_ot", "exact_plan"]


def _samples_1d(x, y, a, b, p: float):
    """Batched samples and weights; finiteness was checked by the registry's wrapper."""
    check_floating("x", x)
    check_floating("y", y)
    x, y = promote(x), promote(y)
    if x.dim() not in (1, 2):
        raise fail("x", "samples (n,) or a batch (B, n)", describe(x))
    if y.dim() != x.dim():
        raise fail("y", f"a {x.dim()}-d tensor like x", describe(y))
    if x.dim() == 1:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if y.shape[0] != x.shape[0]:
        raise fail("y", f"a batch of {x.shape[0]} samples (as x)", f"shape {tuple(y.shape)}")
    dt = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dt), y.to(dt)
    B, n, m = x.shape[0], x.shape[1], y.shape[1]
    a = V._weights("a", a, B, n, x, "x")
    b = V._weights("b", b, B, m, x, "y")
    V.cost_range(x.unsqueeze(-1), y.unsqueeze(-1), p)
    return x, y, a, b


def _w1d(x, y, a, b, p: float) -> torch.Tensor:
    """``W_p^p`` between batched weighted 1-D samples (weights normalised): integral over quantile
    levels t of ``|F^{-1}(t) - G^{-1}(t)|^p``, exact for the piecewise-constant quantile functions."""
    a = a / a.sum(1, keepdim=True)
    b = b / b.sum(1, keepdim=True)
    xs, ix = torch.sort(x, 1)
    ys, iy = torch.sort(y, 1)
    ca = torch.cumsum(torch.gather(a, 1, ix), 1)
    cb = torch.cumsum(torch.gather(b, 1, iy), 1)
    t, _ = torch.sort(torch.cat([ca, cb], 1), 1)
    t = t.clamp(max=1.0)
    dt = torch.diff(t, dim=1, prepend=torch.zeros_like(t[:, :1]))
    mid = (t - 0.5 * dt).detach()
    qi = torch.searchsorted(ca.detach().contiguous(), mid.contiguous()).clamp(max=x.shape[1] - 1)
    qj = torch.searchsorted(cb.detach().contiguous(), mid.contiguous()).clamp(max=y.shape[1] - 1)
    diff = (torch.gather(xs, 1, qi) - torch.gather(ys, 1, qj)).abs()
    return (dt * (diff if p == 1 else diff ** p)).sum(1)


@objective(
    "wasserstein_1d", family="transport", input_kind=TWO_SAMPLES_1D, example=samples_1d_example,
    properties={"nonnegative"}, domains=D.domains("a", "b", "p"),
    formula="W_p^p(a, b) = int_0^1 |F^{-1}(t) - G^{-1}(t)|^p dt  (sorted samples, exact)",
)
def wasserstein_1d(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, p: float = 2.0, sample_weight: torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """Exact p-Wasserstein distance to the p-th power between 1-D samples, by sorting.

    .. math:: W_p^p(\\alpha, \\beta) = \\int_0^1 |F_\\alpha^{-1}(t) - F_\\beta^{-1}(t)|^p\\,dt

    For equal-size uniform samples this is ``mean_i |x_(i) - y_(i)|^p``; general weights are handled by
    merging the two quantile grids. Differentiable in the sample values (and the weights).

    Args:
        x, y: samples ``(B, n)``, ``(B, m)`` (one problem per row) or unbatched ``(n,)``, ``(m,)``.
        a, b: non-negative weights of the same shapes (normalised per problem; uniform by default).
        p: exponent ``p >= 1``.
        sample_weight, reduction: losskit's per-problem weights and reduction.

    Paper: standard (e.g. Peyré & Cuturi, Computational Optimal Transport, 2019, Remark 2.30).
    """
    p = float(p)
    unbatched = x.dim() == 1
    x, y, a, b = _samples_1d(x, y, a, b, p)
    w = _w1d(x, y, a, b, p)
    w = w[0] if unbatched else w
    return finish(w, reduction, sample_weight=sample_weight)


@torch.library.custom_op("losskit::sliced_directions", mutates_args=())
def _directions(d: int, n_projections: int, seed: int) -> torch.Tensor:
    """Unit directions ``(L, d)`` from a CPU generator seeded by ``seed`` (float64). An opaque operator
    for ``torch.compile`` (a ``torch.Generator`` cannot be created while tracing): the directions of a
    seed are the eager ones, and a changed seed, ``L`` or ``d`` needs no recompilation."""
    gen = torch.Generator().manual_seed(int(seed))
    th = torch.randn(n_projections, d, generator=gen, dtype=torch.float64)
    return th / th.norm(dim=1, keepdim=True)


@_directions.register_fake
def _(d, n_projections, seed):
    return torch.empty(n_projections, d, dtype=torch.float64)


def _projections(d: int, n_projections: int, seed: int, dtype, device) -> torch.Tensor:
    return _directions(d, n_projections, seed).to(dtype=dtype, device=device)


@objective(
    "sliced_wasserstein", family="transport", input_kind=TWO_SAMPLES, example=points_example,
    properties={"nonnegative"}, domains=D.domains("a", "b", "p", "n_projections", "projections", "seed"),
    formula="SW_p^p = (1/L) sum_l W_p^p(<theta_l, x>, <theta_l, y>),  theta_l uniform on the sphere",
)
def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                       b: torch.Tensor | None = None, p: float = 2.0, n_projections: int = 64,
                       projections: torch.Tensor | None = None, seed: int = 0,
                       sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Sliced Wasserstein distance to the p-th power: the mean exact 1-D W_p^p over random directions.

    .. math:: SW_p^p(\\alpha, \\beta) = \\frac1L \\sum_{l=1}^L W_p^p(\\theta_l\\#\\alpha, \\theta_l\\#\\beta)

    Directions are drawn from a generator seeded by ``seed`` (the same directions on every call and for
    every problem of the batch), or given as ``projections (L, d)`` (normalised here). It is a Monte-Carlo
    estimate of the sliced distance: error ~ 1/sqrt(L).

    Paper: standard (Rabin, Peyré, Delon, Bernot, "Wasserstein Barycenter and its Application to Texture
    Mixing", 2011; Bonneel et al. 2015).
    """
    p = float(p)
    unbatched = x.dim() == 2
    x, y, a, b = V.samples(x, y, a, b, balanced=False, finite=False)
    V.cost_range(x, y, p)
    B, n, d = x.shape
    if projections is None:
        th = _projections(d, n_projections, seed, x.dtype, x.device)
    else:
        check_floating("projections", projections)
        if projections.dim() != 2 or projections.shape[1] != d:
            raise fail("projections", f"directions of shape (L, {d})", describe(projections))
        th = promote(projections).to(x.dtype)
        th = th / th.norm(dim=1, keepdim=True)
    L = th.shape[0]
    px = (x @ th.T).transpose(1, 2).reshape(B * L, n)
    py = (y @ th.T).transpose(1, 2).reshape(B * L, -1)
    w = _w1d(px, py, a.repeat_interleave(L, 0), b.repeat_interleave(L, 0), p).view(B, L).mean(1)
    w = w[0] if unbatched else w
    return finish(w, reduction, sample_weight=sample_weight)


@eager
def exact_plan(C: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    """An optimal plan of the unregularised problem ``min <P, C>, P 1 = a, P^T 1 = b`` (no gradient).

    ``C (n, m)`` or ``(B, n, m)``. Uniform weights with n = m: ``scipy.optimize.linear_sum_assignment``
    (the optimum is a permutation, Birkhoff); otherwise ``scipy.optimize.linprog`` (HiGHS) on the
    ``n m`` variables. For small problems (n m up to a few 1e5).
    """
    C3, a, b = V.matrix(C.detach(), a, b, balanced=True)
    out = _exact_plan(C3, a, b)
    return out if C.dim() == 3 else out[0]


@eager
def _exact_plan(C3: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`exact_plan` of validated batched ``C3 (B, n, m)``, ``a (B, n)``, ``b (B, m)``."""
    from scipy.optimize import linear_sum_assignment

    B, n, m = C3.shape
    out = torch.zeros(B, n, m, dtype=C3.dtype, device=C3.device)
    for k in range(B):
        ck = C3[k].double().cpu().numpy()
        ak, bk = a[k].double().cpu().numpy(), b[k].double().cpu().numpy()
        if n == m and np.allclose(ak, 1.0 / n, rtol=1e-12, atol=0) and np.allclose(bk, 1.0 / m, rtol=1e-12, atol=0):
            r, c = linear_sum_assignment(ck)
            out[k, torch.as_tensor(r), torch.as_tensor(c)] = 1.0 / n
            continue
        _, plan = transport_lp(ck, ak, bk * (ak.sum() / bk.sum()))
        out[k] = torch.as_tensor(plan, dtype=C3.dtype)
    return out


def transport_lp(C: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unregularised OT linear program ``min <P, C>, P 1 = a, P^T 1 = b, P >= 0`` by SciPy's HiGHS
    (float64 NumPy, one problem, balanced masses): the row potentials (the duals of the row
    constraints) and an optimal vertex plan."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    n, m = C.shape
    rows = np.concatenate([np.repeat(np.arange(n), m), n + np.tile(np.arange(m), n)])
    cols = np.concatenate([np.arange(n * m), np.arange(n * m)])
    A = coo_matrix((np.ones(2 * n * m), (rows, cols)), shape=(n + m, n * m)).tocsr()
    res = linprog(C.ravel(), A_eq=A, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"transport LP: linprog failed: {res.message}")
    return res.eqlin.marginals[:n].copy(), np.maximum(res.x, 0.0).reshape(n, m)


@objective(
    "exact_ot", family="transport", input_kind=TWO_SAMPLES, example=points_example,
    properties={"nonnegative"}, meta=False, compile=False,
    skip_reasons={"compile": "the plan comes from SciPy (assignment / HiGHS LP) on host values"},
    domains=D.domains("a", "b", "p", "cost"),
    formula="W_c(a, b) = min_{P >= 0, P1 = a, P^T 1 = b} <P, C>,  C_ij = ||x_i - y_j||^p",
)
def exact_ot(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
             p: float = 2.0, cost=None, sample_weight: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Exact (unregularised) optimal transport cost between small point clouds, via SciPy.

    .. math:: W_c(\\alpha, \\beta) = \\min_{P \\ge 0,\\ P\\mathbf 1 = a,\\ P^\\top \\mathbf 1 = b} \\langle P, C\\rangle

    With ``C_ij = ||x_i - y_j||^p`` (``p = 2``: the squared 2-Wasserstein distance) or ``cost(x, y)``.
    The plan comes from :func:`exact_plan` (assignment or HiGHS LP); the value ``<P, C(x, y)>`` is
    differentiable in the points with P held fixed (a valid gradient wherever the optimal plan is unique).
    For more than a few hundred points use :func:`sinkhorn` with a small ``eps``.

    Paper: standard (Kantorovich 1942; Peyré & Cuturi 2019, ch. 3).
    """
    unbatched = x.dim() == 2
    x, y, a, b = V.samples(x, y, a, b, balanced=True, finite=False)
    B, n, m = x.shape[0], x.shape[1], y.shape[1]
    if n * m > 4_000_000:
        raise fail("x", "at most 4e6 point pairs for the exact solver (use sinkhorn)", f"{n} x {m}")
    if cost is None:
        V.cost_range(x, y, p)
        C = pairwise_cost(x, y, p)
    else:
        C = cost(x, y)
        if not isinstance(C, torch.Tensor) or tuple(C.shape) != (B, n, m):
            raise fail("cost", f"a callable returning the costs (B, n, m) = {(B, n, m)}", describe(C))
        check_finite("cost", C)            # a computed cost: a user function may overflow
    P = _exact_plan(C.detach(), a.detach(), b.detach())
    w = (P * C).sum((1, 2))
    w = w[0] if unbatched else w
    return finish(w, reduction, sample_weight=sample_weight)
