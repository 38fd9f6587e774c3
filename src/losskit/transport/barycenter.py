"""Wasserstein barycenters: fixed support (entropic, iterative Bregman projections) and free support.

The solvers return a measure, not a number to minimise; they are exposed in ``losskit.transport`` as
:func:`exact_plan` and :func:`solve` are, and run without gradient. The objective a model trains with is
:func:`barycenter_loss` (registered, at the end of this module): the weighted debiased Sinkhorn divergence
to K targets, whose minimiser is the (debiased) barycenter.

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

from collections.abc import Callable

import torch

from .._core import Paper, finish, objective
from .._core.conventions import promote
from .._core.domains import COUNT, POSITIVE, Maybe, Tensor, check_option
from .._core.errors import fail
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_finite, check_floating, check_nonnegative, describe, require
from . import _domains as D
from . import _validate as V
from ._kernel import BLOCK_ELEMS, _Kernel
from ._solve import _as_eps
from .costs import Cost, pairwise_cost
from .exact import _exact_plan

__all__ = ["barycenter", "free_support_barycenter", "barycenter_loss"]

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



# ----------------------------------------------------------------------------------- the barycentric loss
# Issue 19: the barycenter as an objective a model trains with (the solvers above return measures).


def _targets_example(gen: torch.Generator, dtype: torch.dtype, B: int = 3, n: int = 4, K: int = 2, m: int = 5,
                     d: int = 2, **options) -> Example:
    """B problems: a predicted cloud x (B, n, d) and K target clouds y (B, K, m, d), shifted Gaussians."""
    x = torch.randn(B, n, d, generator=gen, dtype=torch.float64)
    shift = torch.linspace(-0.5, 0.5, K, dtype=torch.float64).view(1, K, 1, 1)
    y = 0.8 * torch.randn(B, K, m, d, generator=gen, dtype=torch.float64) + 0.5 + shift
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    opts = {"eps": 1.0, "tol": tol, **options}
    return Example({"x": x.to(dtype), "y": y.to(dtype)}, options=opts, grad=("x", "y"))


def _targets_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    B, n = x.shape[0], x.shape[1]
    K, m = y.shape[1], y.shape[2]
    return [
        BadInput("point dimensions differ", ex.replace({"y": y[..., :1]}), "y"),
        BadInput("batch sizes differ", ex.replace({"y": y[:-1]}), "y"),
        BadInput("targets without the K dimension", ex.replace({"y": y[:, 0]}), "y"),
        BadInput("integer points", ex.replace({"x": x.round().long()}), "x"),
        BadInput("+inf in y", ex.replace({"y": y.clone().fill_(float("inf"))}), "y"),
        BadInput("negative weight", ex.replace(options={"a": -torch.ones(B, n, dtype=x.dtype)}), "a"),
        BadInput("target weights of the wrong shape", ex.replace(options={"b": torch.ones(B, m, dtype=x.dtype)}), "b"),
        BadInput("negative barycentric weight", ex.replace(options={"weights": -torch.ones(K, dtype=x.dtype)}),
                 "weights"),
        BadInput("non-positive eps", ex.replace(options={"eps": 0.0}), "eps"),
    ]


def _targets_extreme(ex: Example) -> Example:
    """Clouds 1e3 apart with eps = 1e-2 of the spread, in float32: cost/eps ~ 1e8 (log-domain test)."""
    x = ex.inputs["x"].double()
    y = ex.inputs["y"].double() + 1e3
    return ex.replace({"x": x.float(), "y": y.float()}, {"eps": 1e-2, "tol": 1e-3})


CLOUD_AND_TARGETS = InputKind(
    "a point cloud and K target clouds",
    "a batched point cloud x (B, n, d) (or unbatched (n, d)) and K target clouds per problem y (B, K, m, d) "
    "(or (K, m, d)), with optional weights a (B, n), b (B, K, m): one barycentric problem per batch entry",
    bad_inputs=_targets_bad,
    extreme=_targets_extreme,
)

BARYCENTER_PAPER = Paper("Debiased Sinkhorn barycenters", 2020, "2006.02575", "Janati, Cuturi, Gramfort")


@objective(
    "barycenter_loss", family="transport", input_kind=CLOUD_AND_TARGETS, example=_targets_example,
    paper=BARYCENTER_PAPER, properties={"nonnegative"}, meta=False, compile=False,
    skip_reasons={"compile": "an iterative solver that reads values (convergence tests) and runs outside the "
                             "graph (torch.compiler.disable)"},
    domains={**D.domains("a", "b", "p", "cost", "eps", "rho", "tol", "max_iter", "scaling", "online", "debias"),
             "weights": Maybe(Tensor("barycentric weights (K,) or (B, K), non-negative (normalised here)"))},
    formula="L(alpha) = sum_k w_k S_eps(alpha, beta_k),  S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - "
            "OT_eps(b, b)/2 (debias=False: sum_k w_k OT_eps(alpha, beta_k)),  w normalised to sum 1",
)
def barycenter_loss(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                    b: torch.Tensor | None = None, weights: torch.Tensor | None = None, eps: float = 0.05,
                    p: float = 2.0, cost: Callable | None = None, rho: float | None = None, debias: bool = True,
                    tol: float = 1e-3, max_iter: int = 2000, scaling: float | None = 0.5,
                    online: bool | None = None, sample_weight: torch.Tensor | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """Barycentric loss: the weighted (debiased) entropic OT from a predicted measure to K target measures.

    .. math:: \\mathcal L(\\alpha) = \\sum_{k=1}^K w_k\\, S_\\varepsilon(\\alpha, \\beta_k),\\qquad
              S_\\varepsilon(\\alpha, \\beta) = \\mathrm{OT}_\\varepsilon(\\alpha, \\beta)
              - \\tfrac12 \\mathrm{OT}_\\varepsilon(\\alpha, \\alpha) - \\tfrac12 \\mathrm{OT}_\\varepsilon(\\beta, \\beta)

    with ``alpha = sum_i a_i delta_{x_i}`` the predicted measure, ``beta_k = sum_j b_kj delta_{y_kj}`` the
    targets and ``w`` on the simplex. Its minimiser over ``alpha`` is the debiased Sinkhorn barycenter of
    Janati et al. (2020), which (unlike the plain entropic barycenter) is not blurred by ``eps``: it
    matches the exact Wasserstein barycenter as ``eps -> 0`` and, for Gaussians, already at ``eps > 0``.
    Train ``x`` (free support: a generator's samples) and/or ``a`` (fixed support: a predicted histogram,
    e.g. a softmax); the gradient is the envelope gradient of each term (no unrolling).
    ``debias=False`` gives ``sum_k w_k OT_eps(alpha, beta_k)`` (OT with the ``KL(P | a (x) b)`` entropy,
    as :func:`sinkhorn`); its minimiser over the weights on a fixed support is NOT POT's
    ``ot.bregman.barycenter`` (which uses the entropy ``sum P (log P - 1)``): that one minimises
    ``sum_k w_k OT_eps(alpha, beta_k) - eps H(a)``, i.e. this loss plus ``eps <a, log a>``. The debiased
    loss is the same under either entropy (the entropy terms cancel), so its minimiser on a fixed support
    is POT's ``ot.bregman.barycenter_debiased`` (tests/test_transport_barycenter_loss.py).

    Args:
        x: the predicted cloud ``(B, n, d)`` (or ``(n, d)``), weights ``a (B, n)`` (uniform by default).
        y: K target clouds per problem ``(B, K, m, d)`` (or ``(K, m, d)``), weights ``b (B, K, m)``
            (uniform; zeros pad ragged targets). Balanced OT needs every ``b_k`` of the total of ``a``.
        weights: barycentric weights ``(K,)`` or ``(B, K)``, non-negative with a positive total,
            normalised to sum 1 (uniform by default).
        debias: subtract the self terms (default True, the Sinkhorn divergence; the targets' self terms
            are constants for the gradient in ``x``, ``a`` but make the loss 0 when all targets equal alpha).
        sample_weight, reduction: per-problem weights ``(B,)`` and losskit's reduction.
        eps, p, cost, rho, tol, max_iter, scaling, online: as :func:`sinkhorn` (``rho``: unbalanced terms,
            with the mass term ``eps/2 (|alpha| - |beta_k|)^2`` of :func:`unbalanced_sinkhorn_divergence`).

    Paper: Janati, Cuturi, Gramfort, "Debiased Sinkhorn barycenters", 2020, arXiv:2006.02575 (ICML 2020);
    the barycenter problem: Agueh & Carlier 2011; Cuturi & Doucet, "Fast Computation of Wasserstein
    Barycenters", 2014, arXiv:1310.4375.
    """
    from .losses import _points, _self_transport
    from .sinkhorn import _solve_points

    unbatched = x.dim() == 2
    check_floating("x", x)
    check_floating("y", y)
    if y.dim() != x.dim() + 1 or x.dim() not in (2, 3):
        raise fail("y", f"K target clouds per problem: a {x.dim() + 1}-d tensor (B, K, m, d) / (K, m, d) for x "
                        f"of {x.dim()} dimensions", describe(y))
    xb, yb = (x.unsqueeze(0), y.unsqueeze(0)) if unbatched else (x, y)
    if yb.shape[0] != xb.shape[0]:
        raise fail("y", f"a batch of {xb.shape[0]} problems (as x)", f"shape {tuple(y.shape)}")
    B, n = xb.shape[0], xb.shape[1]
    K, m = yb.shape[1], yb.shape[2]
    if K == 0:
        raise fail("y", "at least one target cloud", f"shape {tuple(y.shape)}")
    if b is not None:
        check_floating("b", b)
        bb = b.unsqueeze(0) if unbatched else b
        if tuple(bb.shape) != (B, K, m):
            raise fail("b", f"weights of shape {(B, K, m)} (one per point of each target cloud)",
                       f"shape {tuple(b.shape)}")
        b_flat = bb.reshape(B * K, m)
    else:
        b_flat = None
    a_b = None
    if a is not None:
        check_floating("a", a)
        a_b = a.unsqueeze(0) if (unbatched and a.dim() == 1) else a
        if tuple(a_b.shape) != (B, n):
            raise fail("a", f"weights of shape {(B, n)} (one per point of x)", f"shape {tuple(a.shape)}")
    xr = xb.unsqueeze(1).expand(B, K, n, xb.shape[-1]).reshape(B * K, n, xb.shape[-1])
    ar = None if a_b is None else a_b.unsqueeze(1).expand(B, K, n).reshape(B * K, n)
    xr, yr, ar, br = _points(xr, yb.reshape(B * K, m, yb.shape[-1]), ar, b_flat, p, cost, balanced=rho is None)
    w = _barycentric_weights(weights, B, K, xr)
    eps_r = eps.reshape(-1).repeat_interleave(K) if isinstance(eps, torch.Tensor) and eps.dim() > 0 else eps
    if isinstance(eps, torch.Tensor) and eps.dim() > 0 and eps.numel() != B:
        raise fail("eps", f"one eps per problem ({B},) or a number", f"shape {tuple(eps.shape)}")
    kw = dict(p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=online)
    xy = _solve_points(xr, yr, ar, br, eps=eps_r, **kw).value.view(B, K)
    value = (w * xy).sum(1)
    if debias:
        ab = ar.view(B, K, n)[:, 0]
        xx = _self_transport(xr.view(B, K, n, -1)[:, 0], ab, eps=eps, **kw).value
        yy = _self_transport(yr, br, eps=eps_r, **kw).value.view(B, K)
        value = value - 0.5 * xx - 0.5 * (w * yy).sum(1)
        if rho is not None:
            e = torch.as_tensor(eps, dtype=value.dtype, device=value.device).reshape(-1, 1)
            mass = (ab.sum(1, keepdim=True) - br.view(B, K, m).sum(2)) ** 2
            value = value + 0.5 * (w * e * mass).sum(1)
    v = value[0] if unbatched else value
    return finish(v, reduction, sample_weight=sample_weight)


def _barycentric_weights(w, B: int, K: int, ref: torch.Tensor) -> torch.Tensor:
    """``weights`` (K,) or (B, K) -> (B, K) on the simplex (uniform by default)."""
    if w is None:
        return torch.full((B, K), 1.0 / K, dtype=ref.dtype, device=ref.device)
    check_floating("weights", w)
    w = promote(w)
    if tuple(w.shape) == (K,):
        w = w.unsqueeze(0).expand(B, K)
    if tuple(w.shape) != (B, K):
        raise fail("weights", f"one weight per target cloud, shape ({K},) or ({B}, {K})", f"shape {tuple(w.shape)}")
    check_nonnegative("weights", w, "non-negative finite weights")
    require("weights", w, lambda: (w.sum(1) <= 0).any(), "weights with a positive total per problem",
            lambda: "a problem with total weight 0")
    w = w.to(ref.dtype)
    return w / w.sum(1, keepdim=True)
