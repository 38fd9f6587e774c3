"""Wasserstein barycenters: fixed support (entropic, iterative Bregman projections) and free support.

Solvers, not losses (they return a measure, not a number to minimise), exposed in ``losskit.transport``
as :func:`exact_plan` and :func:`solve` are; they run without gradient.

Fixed support (:func:`barycenter`): histograms ``A (K, d)`` on one support with cost ``M (d, d)``, weights
``w`` on the simplex; the entropic barycenter

    q = argmin_q sum_k w_k OT_eps(a_k, q),  OT_eps(a, q) = min_{P1 = a, P^T1 = q} <P, M> + eps sum P (log P - 1)

by the iterative Bregman projections of Benamou, Carlier, Cuturi, Nenna, Peyré (2015, Sec. 3.2), in the log
domain: K coupled Sinkhorn problems (one batch of losskit's soft c-transform kernel, :class:`~._kernel._Kernel`)
whose column updates share one marginal, the weighted geometric mean of the plans' column marginals,
``log q = sum_k w_k log (P_k^T 1)``. Stops when the column marginals agree: ``sum_j std_k (P_k^T 1)_j < tol``
(POT's criterion). POT's ``ot.bregman.barycenter(A.T, M, reg=eps, weights=w)`` (its histograms are columns)
is the same iteration.

Free support (:func:`free_support_barycenter`): the barycenter of discrete measures ``(Y_k, b_k)`` supported
on ``k`` free points ``X`` with fixed weights ``c`` (Cuturi & Doucet 2014, Alg. 2 with exact plans): for the
squared Euclidean cost, alternate exact plans ``T_k`` (:func:`~.exact._exact_plan`) and the update
``X <- sum_k w_k diag(1/c) T_k Y_k`` until the squared displacement is below ``tol`` (POT's
``ot.lp.free_support_barycenter``).
"""

from __future__ import annotations

import torch

from .._core.conventions import promote
from .._core.domains import COUNT, POSITIVE, check_option
from .._core.errors import fail
from .._core.validate import check_finite, check_floating, check_nonnegative, describe, require
from . import _validate as V
from ._kernel import BLOCK_ELEMS, _Kernel
from ._solve import _as_eps
from .costs import Cost, pairwise_cost
from .exact import _exact_plan

__all__ = ["barycenter", "free_support_barycenter"]

CHECK_EVERY = 10


def _simplex_weights(name: str, w, K: int, ref: torch.Tensor) -> torch.Tensor:
    """Barycentric weights (K,), non-negative with a positive total, normalised (uniform by default)."""
    if w is None:
        return torch.full((K,), 1.0 / K, dtype=ref.dtype, device=ref.device)
    check_floating(name, w)
    w = promote(w)
    if tuple(w.shape) != (K,):
        raise fail(name, f"one weight per measure, shape ({K},)", f"shape {tuple(w.shape)}")
    check_nonnegative(name, w, "non-negative finite weights")
    require(name, w, lambda: w.sum() <= 0, "weights with a positive total", lambda: "a total of 0")
    w = w.to(ref.dtype)
    return w / w.sum()


@torch.no_grad()
def barycenter(A: torch.Tensor, M: torch.Tensor, weights: torch.Tensor | None = None, *, eps: float = 0.05,
               tol: float = 1e-9, max_iter: int = 10000) -> torch.Tensor:
    """Entropic Wasserstein barycenter of histograms on a fixed support (iterative Bregman projections).

    .. math:: q = \\arg\\min_q \\sum_k w_k\\, \\mathrm{OT}_\\varepsilon(a_k, q),\\quad
              \\mathrm{OT}_\\varepsilon(a, q) = \\min_{P\\mathbf 1 = a,\\ P^\\top\\mathbf 1 = q}
              \\langle P, M\\rangle + \\varepsilon \\sum_{ij} P_{ij}(\\log P_{ij} - 1)

    ``A (K, d)``: K histograms (rows, non-negative, each of total 1) on one support of d points; ``M (d, d)``:
    the cost between support points; ``weights (K,)``: barycentric weights (uniform by default, normalised).
    Returns ``q (d,)`` (no gradient). ``eps`` in cost units (POT's ``reg``); ``tol``: stop when the K plans'
    column marginals agree to ``sum_j std_k < tol`` (checked every 10 iterations); ``max_iter`` iterations.
    Log domain throughout (small eps is safe). POT: ``ot.bregman.barycenter(A.T, M, eps, weights)`` (its
    histograms are the columns of its A).

    Paper: Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman Projections for Regularized
    Transportation Problems", 2015, arXiv:1412.5154 (Agueh & Carlier 2011 for barycenters).
    """
    check_option("eps", eps, POSITIVE)
    check_option("tol", tol, POSITIVE)
    check_option("max_iter", max_iter, COUNT)
    check_floating("A", A)
    A = promote(A)
    if A.dim() != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise fail("A", "histograms (K, d): one per row", describe(A))
    check_nonnegative("A", A, "non-negative finite histograms")
    require("A", A, lambda: ((A.sum(1) - 1).abs() > 1e-6).any(), "histograms of total 1 (one per row)",
            lambda: f"totals in [{A.sum(1).min().item():.6g}, {A.sum(1).max().item():.6g}]")
    K, d = A.shape
    check_floating("M", M)
    M = promote(M)
    if tuple(M.shape) != (d, d):
        raise fail("M", f"the cost between the {d} support points, shape ({d}, {d})", describe(M))
    check_finite("M", M)
    dt = torch.promote_types(A.dtype, M.dtype)
    A, M = A.to(dt), M.to(dt)
    w = _simplex_weights("weights", weights, K, A)
    kernel = _Kernel(Cost(matrix=M.unsqueeze(0).expand(K, d, d)), online=False, block_elems=BLOCK_ELEMS)
    e = _as_eps(float(eps), K, dt, A.device)
    e1 = e.view(K, 1)
    zeros = torch.zeros(K, d, dtype=dt, device=A.device)
    logA = A.log()
    g = torch.zeros(K, d, dtype=dt, device=A.device)          # column potentials (eps units)
    log_bar = torch.zeros(d, dtype=dt, device=A.device)
    for it in range(max_iter):
        f = e1 * logA + kernel.softmin_rows(zeros, g, e)        # rows of every plan = a_k
        log_cols = g / e1 - kernel.softmin_cols(zeros, f, e) / e1   # log of each plan's column marginal
        log_bar = (w.unsqueeze(1) * log_cols).sum(0)
        # the stopping test reads a value (a host synchronisation): every CHECK_EVERY iterations
        if (it % CHECK_EVERY == 0 or it == max_iter - 1) and float(log_cols.exp().std(0).sum()) < tol:
            break
        g = g + e1 * (log_bar.unsqueeze(0) - log_cols)         # columns of every plan = the barycenter
    return log_bar.exp()


@torch.no_grad()
def free_support_barycenter(locations: list[torch.Tensor], masses: list[torch.Tensor] | None, X_init: torch.Tensor,
                            c: torch.Tensor | None = None, weights: torch.Tensor | None = None, *,
                            max_iter: int = 100, tol: float = 1e-7) -> torch.Tensor:
    """Free-support Wasserstein barycenter (squared Euclidean cost) of discrete measures, by exact plans.

    .. math:: X = \\arg\\min_X \\sum_k w_k\\, W_2^2\\Big(\\sum_i c_i \\delta_{X_i},\\ \\sum_j b_{kj} \\delta_{Y_{kj}}\\Big)

    ``locations``: K point sets ``Y_k (n_k, d)``; ``masses``: their weights ``b_k (n_k,)`` (uniform if None),
    each of total 1; ``X_init (k, d)``: the starting support; ``c (k,)``: its fixed weights (uniform by default);
    ``weights (K,)``: barycentric weights (uniform, normalised). Alternates exact plans ``T_k`` (losskit's exact
    solver) and ``X <- sum_k w_k diag(1/c) T_k Y_k`` until ``||X_new - X||^2 <= tol`` or ``max_iter`` steps.
    Returns ``X (k, d)`` (no gradient). A local method (the problem is not convex in X): the result depends
    on ``X_init``. POT: ``ot.lp.free_support_barycenter(locations, masses, X_init, c, weights)``.

    Paper: Cuturi, Doucet, "Fast Computation of Wasserstein Barycenters", 2014, arXiv:1310.4375 (Alg. 2).
    """
    check_option("tol", tol, POSITIVE)
    check_option("max_iter", max_iter, COUNT)
    check_floating("X_init", X_init)
    X = promote(X_init)
    if X.dim() != 2 or X.shape[0] == 0:
        raise fail("X_init", "a support (k, d)", describe(X_init))
    check_finite("X_init", X)
    k, d = X.shape
    if not isinstance(locations, (list, tuple)) or not locations:
        raise fail("locations", "a non-empty list of point sets (n_k, d)", describe(locations))
    Ks = len(locations)
    if masses is not None and (not isinstance(masses, (list, tuple)) or len(masses) != Ks):
        raise fail("masses", f"a list of {Ks} weight vectors (one per point set)", describe(masses))
    Ys, bs = [], []
    for i, Y in enumerate(locations):
        Y = V._points("locations", Y)
        if Y.dim() != 2 or Y.shape[1] != d:
            raise fail("locations", f"point sets of shape (n_k, {d}) (as X_init)", f"set {i} of shape {tuple(Y.shape)}")
        Ys.append(Y.to(X.dtype))
        bk = V._weights("masses", None if masses is None else masses[i], 1, Y.shape[0], X, "its point set")[0]
        require("masses", bk, lambda bk=bk: ((bk.sum() - 1).abs() > 1e-6), "weights of total 1",
                lambda bk=bk: f"a total of {bk.sum().item():.6g}")
        bs.append(bk)
    cw = V._weights("c", c, 1, k, X, "X_init")[0]
    require("c", cw, lambda: ((cw.sum() - 1).abs() > 1e-6), "weights of total 1",
            lambda: f"a total of {cw.sum().item():.6g}")
    w = _simplex_weights("weights", weights, Ks, X)
    for _ in range(max_iter):
        T_sum = torch.zeros_like(X)
        for Y, bk, wk in zip(Ys, bs, w):
            T = _exact_plan(pairwise_cost(X.unsqueeze(0), Y.unsqueeze(0), 2.0), cw.unsqueeze(0), bk.unsqueeze(0))[0]
            T_sum = T_sum + wk * (T @ Y) / cw.unsqueeze(1)
        disp = float(((T_sum - X) ** 2).sum())
        X = T_sum
        if not disp > tol:
            break
    return X

