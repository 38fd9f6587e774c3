"""Entropic OT losses on point clouds: each is a few lines on top of :func:`.sinkhorn.solve`.

Every objective here runs the Sinkhorn solver, which reads values (convergence tests): they declare
``meta=False`` and ``compile=False`` (the solver is excluded from tracing). Options have the family's
domains (:mod:`._domains`): ``p >= 1``, ``eps > 0`` (or a tensor of them), ``tol > 0``, ``max_iter >= 1``,
``scaling`` in ``(0, 1)`` or None, ``rho > 0`` or None. Point clouds whose pairwise costs would overflow
their dtype (float32 coordinates of 1e30) raise :class:`LossInputError` naming ``x`` or ``y``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .._core import Paper, finish, objective
from .._core.errors import fail
from . import _domains as D
from . import _validate as V
from ._inputs import TWO_SAMPLES, two_samples_example
from .costs import Cost
from .sinkhorn import (
    BLOCK_ELEMS,
    DENSE_BYTES,
    _options_check,
    _point_cost,
    _relations,
    _solve,
    _solve_points,
)

__all__ = ["sinkhorn", "sinkhorn_divergence", "unbalanced_sinkhorn_divergence", "self_transport", "monge_gap"]

_SOLVER_SKIPS = {"compile": "an iterative solver that reads values (convergence tests) and runs outside the "
                            "graph (torch.compiler.disable)"}


def _points(x, y, a, b, p, cost, *, balanced: bool):
    """The objectives' input path: shapes and weights (finiteness was checked by the registry's wrapper),
    then the cost range of the points (named x / y) unless a user cost replaces ``||x - y||^p``."""
    xb, yb, ab, bb = V.samples(x, y, a, b, balanced=balanced, finite=False)
    if cost is None:
        V.cost_range(xb, yb, p)
    return xb, yb, ab, bb


@objective(
    "sinkhorn", family="transport", input_kind=TWO_SAMPLES, example=two_samples_example,
    properties={"nonnegative"}, meta=False, compile=False, skip_reasons=_SOLVER_SKIPS,
    domains=D.domains("a", "b", "p", "cost", *D.SOLVER),
    formula="OT_eps(a, b) = min_{P1=a, P^T1=b} <P, C> + eps KL(P | a (x) b),  C_ij = ||x_i - y_j||^p",
)
def sinkhorn(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
             eps: float = 0.05, p: float = 2.0, cost: Callable | None = None, rho: float | None = None,
             tol: float = 1e-3, max_iter: int = 2000, scaling: float | None = 0.5, online: bool | None = None,
             differentiate: str = "envelope", method: str = "auto", sample_weight: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Entropic optimal transport cost between point clouds (log-domain Sinkhorn, epsilon-scaling).

    .. math:: \\mathrm{OT}_\\varepsilon(\\alpha, \\beta) = \\min_{P\\mathbf 1 = a,\\ P^\\top\\mathbf 1 = b}
              \\langle P, C\\rangle + \\varepsilon\\,\\mathrm{KL}(P \\,\\|\\, a \\otimes b)

    computed as the dual value ``<a, f> + <b, g>`` at the converged potentials (with ``rho``: the
    unbalanced problem whose marginal constraints are replaced by ``rho KL(P1 | a) + rho KL(P^T 1 | b)``).
    One problem per batch entry; ``reduction='none'`` returns the ``(B,)`` costs. For the potentials,
    the plan, the achieved marginal error and the iteration count use
    :func:`losskit.transport.solve`. Note ``OT_eps(alpha, alpha) > 0``: for a loss that vanishes at
    ``alpha = beta`` use :func:`sinkhorn_divergence`.

    Args:
        x, y: point clouds ``(B, n, d)``, ``(B, m, d)`` or unbatched ``(n, d)``, ``(m, d)``.
        a, b: non-negative point weights ``(B, n)``, ``(B, m)`` (uniform by default; zeros pad ragged
            problems). Balanced OT needs equal totals.
        sample_weight, reduction: per-problem weights ``(B,)`` and losskit's reduction.

    Solver options (shared by every entropic objective):
        eps: entropic regularisation, in cost units (a float, or one per problem ``(B,)``).
        p: the cost ``||x - y||^p``, ``p >= 1`` (``p = 2``: squared Euclidean; note GeomLoss's ``p = 2`` is
            half of it). Points whose costs overflow their dtype raise naming ``x`` / ``y``.
        cost: a user cost ``cost(x_block (B, r, d), y (B, m, d)) -> (B, r, m)`` replacing ``p``.
        rho: KL marginal relaxation strength (unbalanced OT); ``None`` = balanced.
        tol: stop when the L1 marginal error (balanced) / fixed-point residual is below ``tol``.
        max_iter: iteration cap (an iteration = one update of each potential).
        scaling: epsilon-scaling factor (eps goes from the cost's diameter down to ``eps`` by this factor
            per iteration, then iterates at ``eps``); ``None`` disables annealing.
        online: ``None`` chooses (the n x m matrix is never held above 2 GiB); True/False forces.
        differentiate: ``'envelope'`` (default: gradients from the converged plan, no unrolling) or
            ``'unroll'`` (autograd through every iteration; dense, memory grows with iterations).
        method: ``'newton'``: Sinkhorn to a loose error then sparse Newton steps on the dual (Tang et
            al., "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", 2024, arXiv:2401.12253;
            balanced, dense cost matrix; much faster at small eps / tight ``tol``). ``'auto'`` (default):
            Sinkhorn, and a balanced problem of at most 2^20 cost entries that has not converged after
            min(2000, max_iter / 2) iterations is finished by those Newton steps. ``'sinkhorn'``:
            Sinkhorn only. ``'multiscale'``: clustered, truncated Sinkhorn for large clouds in d <= 3
            (:func:`losskit.transport.solve_multiscale`; by hand, ``'auto'`` does not pick it yet).

    Paper: standard (Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", 2013,
    arXiv:1306.0895; log-domain stabilisation and epsilon-scaling: Schmitzer 2019, arXiv:1610.06519).
    """
    _relations(rho, differentiate, method, online)
    unbatched = x.dim() == 2
    xb, yb, ab, bb = _points(x, y, a, b, p, cost, balanced=rho is None)
    res = _solve_points(xb, yb, ab, bb, eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter,
                        scaling=scaling, online=online, differentiate=differentiate, method=method)
    v = res.value[0] if unbatched else res.value
    return finish(v, reduction, sample_weight=sample_weight)


def self_transport(x: torch.Tensor, a: torch.Tensor | None = None, *, eps=0.05, p: float = 2.0,
                   cost: Callable | None = None, rho: float | None = None, tol: float = 1e-3,
                   max_iter: int = 2000, scaling: float | None = 0.5, online: bool | None = None):
    """``OT_eps(alpha, alpha)`` by the symmetric iteration ``f <- (f + T(f)) / 2`` (one potential).

    Returns the :class:`~.sinkhorn.OTResult` (``f == g``). Used for the debiasing terms of
    :func:`sinkhorn_divergence`.
    """
    _options_check(eps, rho, tol, max_iter, scaling, "envelope", "sinkhorn", online)
    D.check("p", p)
    D.check("cost", cost)
    x, _, a, _ = V.samples(x, x, a, a, balanced=False)
    if cost is None:
        V.cost_range(x, x, p)
    return _self_transport(x, a, eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling,
                           online=online)


def _self_transport(x, a, *, eps, p, cost, rho, tol, max_iter, scaling, online):
    """:func:`self_transport` on validated batched inputs."""
    xc, _, c = _point_cost(x, x, p, cost, eps)
    c = Cost(xc, xc, p=c.p, fn=c.fn, expand=c.expand)
    return _solve(c, a, a, eps=eps, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=online,
                  differentiate="envelope", block_elems=BLOCK_ELEMS, dense_bytes=DENSE_BYTES,
                  inputs=(xc, xc, None), symmetric=True)


@objective(
    "sinkhorn_divergence", seed=True, family="transport", input_kind=TWO_SAMPLES, example=two_samples_example,
    properties={"nonnegative"}, meta=False, compile=False, skip_reasons=_SOLVER_SKIPS,
    domains=D.domains("a", "b", "p", "cost", "eps", "rho", "tol", "max_iter", "scaling", "online"),
    formula="S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2 (+ eps/2 (|a| - |b|)^2 unbalanced)",
)
def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                        b: torch.Tensor | None = None, eps: float = 0.05, p: float = 2.0,
                        cost: Callable | None = None, rho: float | None = None, tol: float = 1e-3,
                        max_iter: int = 2000, scaling: float | None = 0.5, online: bool | None = None,
                        sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Debiased Sinkhorn divergence: 0 for identical inputs, >= 0, symmetric, metrises weak convergence.

    .. math:: S_\\varepsilon(\\alpha, \\beta) = \\mathrm{OT}_\\varepsilon(\\alpha, \\beta)
              - \\tfrac12 \\mathrm{OT}_\\varepsilon(\\alpha, \\alpha) - \\tfrac12 \\mathrm{OT}_\\varepsilon(\\beta, \\beta)

    (unbalanced, ``rho`` given: plus ``eps/2 (|a| - |b|)^2``, the mass term of Séjourné et al. 2019).
    The self terms use the symmetric averaged iteration. Interpolates between ``W_c`` (eps -> 0) and
    ``MMD^2/2`` with kernel ``-C`` (eps -> infinity). Arguments as :func:`sinkhorn`. GeomLoss (the
    paper's code) uses ``|x - y|^2 / 2`` for ``p = 2`` and ``eps = blur^p``: its
    ``SamplesLoss('sinkhorn', p=2, blur=s)`` is ``0.5 * sinkhorn_divergence(x, y, eps=2 s^2)`` once its
    annealed loop has converged (tests/oracles/test_transport_oracles.py).

    Paper: Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and
    MMD using Sinkhorn Divergences", 2019, arXiv:1810.08278 (Genevay, Peyré, Cuturi 2018).
    """
    return _divergence(x, y, a, b, eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling,
                       online=online, sample_weight=sample_weight, reduction=reduction)


def _divergence(x, y, a, b, *, eps, p, cost, rho, tol, max_iter, scaling, online, sample_weight, reduction):
    """The debiased divergence of :func:`sinkhorn_divergence` (balanced, or unbalanced with ``rho``)."""
    unbatched = x.dim() == 2
    xb, yb, ab, bb = _points(x, y, a, b, p, cost, balanced=rho is None)
    kw = dict(eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=online)
    xy = _solve_points(xb, yb, ab, bb, **kw).value
    xx = _self_transport(xb, ab, **kw).value
    yy = _self_transport(yb, bb, **kw).value
    s = xy - 0.5 * (xx + yy)
    if rho is not None:
        s = s + 0.5 * torch.as_tensor(eps, dtype=s.dtype) * (ab.sum(1) - bb.sum(1)) ** 2
    v = s[0] if unbatched else s
    return finish(v, reduction, sample_weight=sample_weight)


UNBALANCED_PAPER = Paper("Sinkhorn Divergences for Unbalanced Optimal Transport", 2019, "1910.12958",
                         "Séjourné, Feydy, Vialard, Trouvé, Peyré")


@objective(
    "unbalanced_sinkhorn_divergence", family="transport", input_kind=TWO_SAMPLES, example=functools.partial(two_samples_example, rho=1.0),
    paper=UNBALANCED_PAPER, properties={"nonnegative"}, meta=False, compile=False, skip_reasons=_SOLVER_SKIPS,
    domains={**D.domains("a", "b", "p", "cost", "eps", "tol", "max_iter", "scaling", "online"), "rho": D.POSITIVE},
    formula="S_eps,rho(a, b) = OT_eps,rho(a, b) - OT_eps,rho(a, a)/2 - OT_eps,rho(b, b)/2 + eps/2 (|a| - |b|)^2,  "
            "OT_eps,rho = min_P <P, C> + eps KL(P | a (x) b) + rho KL(P1 | a) + rho KL(P^T 1 | b)",
)
def unbalanced_sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                                   b: torch.Tensor | None = None, rho: float = 1.0, eps: float = 0.05,
                                   p: float = 2.0, cost: Callable | None = None, tol: float = 1e-3,
                                   max_iter: int = 2000, scaling: float | None = 0.5, online: bool | None = None,
                                   sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Unbalanced Sinkhorn divergence: debiased entropic OT with KL-relaxed marginals (masses may differ).

    .. math:: S_{\\varepsilon,\\rho}(\\alpha, \\beta) = \\mathrm{OT}_{\\varepsilon,\\rho}(\\alpha, \\beta)
              - \\tfrac12 \\mathrm{OT}_{\\varepsilon,\\rho}(\\alpha, \\alpha)
              - \\tfrac12 \\mathrm{OT}_{\\varepsilon,\\rho}(\\beta, \\beta)
              + \\tfrac\\varepsilon2 (|\\alpha| - |\\beta|)^2

    with ``OT_eps,rho = min_P <P, C> + eps KL(P | a (x) b) + rho KL(P 1 | a) + rho KL(P^T 1 | b)`` (generalised
    KL, ``KL(p | q) = sum p log(p/q) - p + q``). The same computation as
    ``sinkhorn_divergence(x, y, rho=rho)``, under the name users look for and with the marginal relaxation
    ``rho > 0`` required (default 1; ``rho -> inf`` is the balanced divergence). The weights ``a``, ``b``
    need not have equal totals. ``rho`` is in cost units: GeomLoss's ``reach`` is ``rho = reach^p`` on its
    halved cost, so ``SamplesLoss('sinkhorn', p=2, blur=s, reach=r) = 0.5 * this(eps=2 s^2, rho=2 r^2)``;
    POT's ``ot.unbalanced.sinkhorn_unbalanced2(a, b, C, reg=eps, reg_m=rho, returnCost='total')`` omits the
    mass terms of its KLs (``-p + q``), the primal above evaluated at POT's plan is the value here
    (tests/test_transport_pot.py). Solver options as :func:`sinkhorn`.

    Paper: Séjourné, Feydy, Vialard, Trouvé, Peyré, "Sinkhorn Divergences for Unbalanced Optimal Transport",
    2019, arXiv:1910.12958.
    """
    return _divergence(x, y, a, b, eps=eps, p=p, cost=cost, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling,
                       online=online, sample_weight=sample_weight, reduction=reduction)


MONGE_GAP_PAPER = Paper("The Monge Gap: A Regularizer to Learn All Transport Maps", 2023, "2302.04953",
                        "Uscidda, Cuturi")


@objective(
    "monge_gap", seed=True, family="transport", input_kind=TWO_SAMPLES, example=functools.partial(two_samples_example, m=4),
    paper=MONGE_GAP_PAPER, meta=False, compile=False, skip_reasons=_SOLVER_SKIPS,
    domains=D.domains("a", "p", "cost", "eps", "tol", "max_iter", "scaling", "online"),
    formula="M(T) = sum_i a_i c(x_i, T(x_i)) - OT_eps(sum_i a_i delta_{x_i}, sum_i a_i delta_{T(x_i)})",
)
def monge_gap(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None, eps: float = 0.05,
              p: float = 2.0, cost: Callable | None = None, tol: float = 1e-3, max_iter: int = 2000,
              scaling: float | None = 0.5, online: bool | None = None,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Monge gap of a map T on reference points x, given ``y = T(x)`` (same number of points).

    .. math:: \\mathcal M^\\varepsilon_\\mu(T) = \\sum_i a_i\\, c(x_i, T(x_i))
              - \\mathrm{OT}_\\varepsilon(\\mu, T_\\#\\mu),\\qquad \\mu = \\sum_i a_i \\delta_{x_i}

    It is 0 (up to the entropic bias, ``>= -eps H(a)``, ``H(a) = log n`` for uniform a) exactly when T
    moves the points c-optimally (e.g. T = gradient of a convex function for the squared Euclidean
    cost), and positive otherwise; used as a regulariser when fitting a transport map. Gradients flow to
    both x and y (envelope theorem for the OT term). Solver options as :func:`sinkhorn`. OTT's
    ``monge_gap_from_samples`` subtracts ``ent_reg_cost = OT_eps - eps (H(a) + H(b))`` instead of the
    dual value ``OT_eps``: ``ott = losskit + 2 eps H(a)`` (a constant, ``2 eps log n`` for uniform
    weights; same gradients), and its default ``epsilon`` is relative (0.05 x the mean cost) where
    ``eps`` here is absolute. We keep the dual value so the gap vanishes (up to the entropic bias)
    at an optimal map, as the paper's Eq. (8) reads (tests/oracles/test_transport_oracles.py).

    Paper: Uscidda, Cuturi, "The Monge Gap: A Regularizer to Learn All Transport Maps", 2023,
    arXiv:2302.04953.
    """
    unbatched = x.dim() == 2
    if x.dim() == y.dim() and x.dim() in (2, 3) and x.shape[-2] != y.shape[-2]:
        raise fail("y", f"T(x): one image per point of x ({x.shape[-2]})", f"shape {tuple(y.shape)}")
    xb, yb, ab, _ = _points(x, y, a, None, p, cost, balanced=False)
    diag = ((xb - yb) ** 2).sum(-1) if cost is None and p == 2 else (
        cost(xb, yb).diagonal(dim1=1, dim2=2) if cost is not None else pairwise_cost_diag(xb, yb, p))
    transport = (ab * diag).sum(1)
    ot = _solve_points(xb, yb, ab, ab, eps=eps, p=p, cost=cost, rho=None, tol=tol, max_iter=max_iter,
                       scaling=scaling, online=online).value
    gap = transport - ot
    v = gap[0] if unbatched else gap
    return finish(v, reduction, sample_weight=sample_weight)


def pairwise_cost_diag(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """``||x_i - y_i||^p`` (row-wise), with a zero gradient at coincident points."""
    sq = ((x - y) ** 2).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)) ** (p / 2), torch.zeros_like(sq))
