"""Entropic Gromov-Wasserstein and fused Gromov-Wasserstein (Peyré, Cuturi, Solomon 2016; Vayer et al. 2019).

Two metric-measure spaces are compared through their intra-domain costs ``C1 (n, n)``, ``C2 (m, m)``
(point clouds: ``C1_ik = ||x_i - x_k||^p``, the two clouds may live in different dimensions), weights
``a``, ``b`` and, for the fused version, a feature cost ``M (n, m)`` between them:

    F(T) = alpha E(T) + (1 - alpha) <M, T> + eps KL(T | a (x) b),
    E(T) = sum_ijkl L(C1_ik, C2_jl) T_ij T_kl,

minimised over couplings ``T 1 = a``, ``T^T 1 = b`` (``alpha = 1``: Gromov-Wasserstein). ``L`` is the
square loss ``(c1 - c2)^2`` or the KL loss ``c1 log(c1 / c2) - c1 + c2``. Written as
``L(c1, c2) = f1(c1) + f2(c2) - h1(c1) h2(c2)`` (Peyré et al., Prop. 1) the tensor product is
``(L (x) T)_ij = (f1(C1) r)_i + (f2(C2) c)_j - (h1(C1) T h2(C2)^T)_ij`` (r, c the marginals of T): O(n^2 m +
n m^2) per evaluation, never the n^2 m^2 tensor.

Solver: the projected mirror descent of Peyré et al. 2016 (Prop. 2; POT's ``solver='PGD'``). Each outer
step linearises F at the current plan, ``G = alpha grad E(T) + (1 - alpha) M`` with
``grad E(T) = L (x) T + L^T (x) T``, and solves the entropic OT problem ``min <G, T'> + eps KL(T' | a (x) b)``
with losskit's log-domain Sinkhorn (:func:`~._solve._solve`, warm-started from the previous step's column
potential); the new plan is its solution. A fixed point is a stationary point of F (the problem is not
convex: a local minimum, found from ``T0 = a b^T / |a|``, as POT). The loop stops per problem when the L1
change of the plan is below ``tol``, raised to the plan's resolution in the dtype where that is coarser:
``8 u max|G| / eps`` (u the unit roundoff: a float32 problem with ``max|G| / eps = 100`` stops at 1e-4); a converged problem is frozen (batch-independent results).

Value and gradient: the value is F at the converged plan (the entropic objective, KL term included). By
the envelope theorem (F is stationary in T on the constraint set at the solution), its gradient in the
costs ``C1``, ``C2`` (so in the points, through :func:`~losskit.ops.pairwise.pairwise_cost`) and in ``M``
is the partial gradient with the plan held fixed: ``dF/dC1_ik = alpha sum_jl dL/dc1(C1_ik, C2_jl) T_ij T_kl``,
``dF/dM = (1 - alpha) T``. It is exact at a converged stationary point, up to the solver's tolerance. The
weights ``a``, ``b`` are constants (passing weights that require grad raises).

POT (``ot.gromov.entropic_gromov_wasserstein2`` / ``entropic_fused_gromov_wasserstein2``, PGD solver) uses
the same epsilon (in units of the linearised cost, ``reg`` of its inner ``ot.sinkhorn``), the same loss
(no 1/2) and the same iteration from the same start; it reports ``alpha E(T) + (1 - alpha) <M, T>`` at its
plan, without the entropic term: ``POT = losskit - eps KL(T | a (x) b)``, and :class:`GWResult` carries
POT's number as ``loss``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .._core import Paper, finish, objective
from .._core.conventions import promote
from .._core.domains import UNIT, Choice, check_option
from .._core.errors import fail
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_finite, check_floating, describe, require
from ..ops.pairwise import pairwise_cost
from . import _domains as D
from . import _validate as V
from ._solve import _solve
from .costs import Cost
from .sinkhorn import BLOCK_ELEMS, DENSE_BYTES

__all__ = ["GWResult", "solve_gromov", "gromov_wasserstein", "fused_gromov_wasserstein", "TWO_SPACES",
           "TWO_SPACES_FEATURES"]

GW_PAPER = Paper("Gromov-Wasserstein Averaging of Kernel and Distance Matrices", 2016, None,
                 "Peyré, Cuturi, Solomon")
FGW_PAPER = Paper("Optimal Transport for structured data with application on graphs", 2019, "1805.09114",
                  "Vayer, Chapel, Flamary, Tavenard, Courty")

#: Sinkhorn iterations allowed per outer step (warm-started: after the first steps a few suffice)
INNER_MAX_ITER = 10000
#: inexact inner solves: Sinkhorn tolerance = INNER_TOL_RATIO x the last plan change, in [tol / 10, INNER_TOL_MAX]
INNER_TOL_RATIO, INNER_TOL_MAX = 1e-2, 1e-3
#: the outer tolerance is at least TOL_FLOOR u max|G| / eps (u the unit roundoff): the plan's resolution
TOL_FLOOR = 8
LOSSES = ("square", "kl")


@dataclass
class GWResult:
    """A solved batch of entropic (fused) Gromov-Wasserstein problems; tensors have a leading batch dim B.

    Attributes:
        value: ``F(T) = alpha E(T) + (1 - alpha) <M, T> + eps KL(T | a (x) b)`` at the plan, (B,);
            differentiable in ``C1``, ``C2``, ``M`` (envelope theorem).
        loss: ``alpha E(T) + (1 - alpha) <M, T>`` at the plan (POT's ``*_gromov_wasserstein2`` value), (B,),
            detached.
        plan: the coupling T, (B, n, m), detached.
        n_iter: outer (mirror-descent) steps per problem.
        error: the last L1 change of the plan per problem.
        converged: whether ``error < tol`` was reached within ``max_iter`` outer steps.
    """

    value: torch.Tensor
    loss: torch.Tensor
    plan: torch.Tensor
    n_iter: torch.Tensor
    error: torch.Tensor
    converged: torch.Tensor


def _parts(C1: torch.Tensor, C2: torch.Tensor, loss: str):
    """``(f1(C1), f2(C2), h1(C1), h2(C2))`` with ``L(c1, c2) = f1(c1) + f2(c2) - h1(c1) h2(c2)``."""
    if loss == "square":
        return C1 * C1, C2 * C2, C1, 2 * C2
    return torch.xlogy(C1, C1) - C1, C2, C1, torch.log(C2)


def _tensor(parts, T: torch.Tensor, r: torch.Tensor, c: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``(L (x) T)_ij = sum_kl L(C1_ik, C2_jl) T_kl`` with the marginals of T given as r, c (B, n), (B, m)
    (``transpose``: the same with ``C1^T``, ``C2^T``)."""
    f1, f2, h1, h2 = parts
    if transpose:
        f1, f2, h1, h2 = (t.transpose(1, 2) for t in parts)
    const = (f1 @ r.unsqueeze(-1)) + (f2 @ c.unsqueeze(-1)).transpose(1, 2)
    return const - h1 @ T @ h2.transpose(1, 2)


def _energy(parts, T: torch.Tensor) -> torch.Tensor:
    """``E(T) = sum_ijkl L(C1_ik, C2_jl) T_ij T_kl``, (B,), differentiable in the parts (T held fixed)."""
    f1, f2, h1, h2 = parts
    r, c = T.sum(2), T.sum(1)
    quad1 = (r.unsqueeze(1) @ f1 @ r.unsqueeze(-1)).reshape(-1)
    quad2 = (c.unsqueeze(1) @ f2 @ c.unsqueeze(-1)).reshape(-1)
    return quad1 + quad2 - ((h1 @ T @ h2.transpose(1, 2)) * T).sum((1, 2))


@torch.no_grad()
def _mirror_descent(parts, M, a, b, alpha: float, eps: float, tol: float, max_iter: int):
    """The projected mirror descent (Peyré et al. 2016, Prop. 2) on validated batched inputs (no grad).

    Returns ``(T, log_ratio, n_iter, error, converged)`` with ``log_ratio = log(T / (a (x) b))`` where
    ``a_i b_j > 0`` (from the last Sinkhorn's potentials: no log of an underflowed entry)."""
    B, n, m = a.shape[0], a.shape[1], b.shape[1]
    dtype, device = a.dtype, a.device
    T = a.unsqueeze(-1) * b.unsqueeze(1) / a.sum(1).view(B, 1, 1)
    logr = torch.zeros(B, n, m, dtype=dtype, device=device)
    g = torch.zeros(B, m, dtype=dtype, device=device)
    n_iter = torch.zeros(B, dtype=torch.long, device=device)
    err = torch.full((B,), math.inf, dtype=dtype, device=device)
    active = torch.arange(B, device=device)
    loga, logb = a.log(), b.log()
    # the last inner solves go below the outer tolerance (a plan change cannot be measured below the
    # inner error), but not below the dtype's resolution of the marginal error
    u = torch.finfo(dtype).eps
    tols = torch.full((B,), float(tol), dtype=dtype, device=device)
    for k in range(max_iter):
        idx = active
        pk = tuple(t[idx] for t in parts)
        Tk = T[idx]
        G = _tensor(pk, Tk, a[idx], b[idx]) + _tensor(pk, Tk, a[idx], b[idx], transpose=True)
        G = alpha * G if M is None else alpha * G + (1 - alpha) * M[idx]
        # the first step anneals eps from the cost's diameter; later steps start from the last potential.
        # Inexact inner solves: each problem's Sinkhorn tolerance follows its last plan change (down to tol),
        # so the fixed point is the same and the early steps are cheap.
        # the plan's resolution in the dtype: log T carries an error of about u max|G| / eps, so a plan change
        # below TOL_FLOOR times that is not measurable; the outer tolerance is at least that (documented)
        tols[idx] = torch.maximum(tols[idx], TOL_FLOOR * u * G.abs().amax((1, 2)) / eps)
        itol = torch.maximum(err[idx].mul(INNER_TOL_RATIO).clamp(max=INNER_TOL_MAX),
                             (INNER_TOL_RATIO * 10 * tols[idx]).clamp(min=16 * u))
        res = _solve(Cost(matrix=G), a[idx], b[idx], eps=eps, rho=None, tol=itol, max_iter=INNER_MAX_ITER,
                     scaling=0.5 if k == 0 else None, online=False, differentiate="envelope",
                     block_elems=BLOCK_ELEMS, dense_bytes=DENSE_BYTES, inputs=(None, None, None),
                     method="sinkhorn", g0=None if k == 0 else g[idx])
        # the plan of (f, g), f recomputed in the log domain from g (Sinkhorn's last row update): exact row
        # marginals, and no cancellation in f_i + g_j - G_ij when G / eps is large
        h = logb[idx].unsqueeze(1) + (res.g.unsqueeze(1) - G) / eps
        logT = loga[idx].unsqueeze(-1) + (h - torch.logsumexp(h, 2, keepdim=True))
        Tn = torch.exp(logT)
        lr = torch.where(Tn > 0, logT - loga[idx].unsqueeze(-1) - logb[idx].unsqueeze(1), torch.zeros_like(logT))
        e = (Tn - Tk).abs().sum((1, 2))
        T[idx], logr[idx], g[idx], err[idx] = Tn, lr, res.g, e
        n_iter[idx] += 1
        keep = ~(e < tols[idx])    # (a NaN change is not convergence)
        if not bool(keep.any()):
            break
        active = idx[keep]
    return T, logr, n_iter, err, err < tols


def _gw(C1, C2, M, a, b, *, alpha, eps, loss, tol, max_iter) -> GWResult:
    """The solve on validated batched inputs; the value keeps the graph to C1, C2, M (envelope)."""
    parts = _parts(C1, C2, loss)
    T, logr, n_iter, err, conv = _mirror_descent(tuple(t.detach() for t in parts), None if M is None else M.detach(),
                                                 a, b, alpha, eps, tol, max_iter)
    # generalised KL(T | a (x) b) = sum T log(T / ab) - |T| + |a||b| (entries with a_i b_j = 0 carry T = 0)
    kl = torch.where(T > 0, T * logr, torch.zeros_like(T)).sum((1, 2)) - T.sum((1, 2)) + a.sum(1) * b.sum(1)
    quad = _energy(parts, T)
    value = alpha * quad + eps * kl
    if M is not None:
        value = value + (1 - alpha) * (M * T).sum((1, 2))
    with torch.no_grad():
        lossv = value.detach() - eps * kl
    return GWResult(value, lossv, T, n_iter, err, conv)


def _constant_weights(a, b) -> None:
    for name, w in (("a", a), ("b", b)):
        if isinstance(w, torch.Tensor) and w.requires_grad:
            raise fail(name, "constant weights (the Gromov-Wasserstein value is differentiated in the costs and "
                             "points only; detach the weights)", "weights that require grad")


def _matrices(C1, C2, M, a, b, loss):
    """Validated batched ``C1 (B, n, n)``, ``C2 (B, m, m)``, ``M (B, n, m)`` or None, ``a``, ``b``."""
    out = []
    for name, C in (("C1", C1), ("C2", C2)):
        check_floating(name, C)
        C = promote(C)
        if C.dim() == 2:
            C = C.unsqueeze(0)
        if C.dim() != 3 or C.shape[1] != C.shape[2] or C.shape[1] == 0:
            raise fail(name, "a square intra-domain cost matrix (n, n) or a batch (B, n, n)", describe(C))
        check_finite(name, C)
        out.append(C)
    C1, C2 = out
    if C2.shape[0] != C1.shape[0]:
        raise fail("C2", f"a batch of {C1.shape[0]} matrices (as C1)", f"shape {tuple(C2.shape)}")
    dt = torch.promote_types(C1.dtype, C2.dtype)
    B, n, m = C1.shape[0], C1.shape[1], C2.shape[1]
    if M is not None:
        M = _feature_cost(M, B, n, m)
        dt = torch.promote_types(dt, M.dtype)
        M = M.to(dt)
        check_finite("M", M)
    C1, C2 = C1.to(dt), C2.to(dt)
    if loss == "kl":
        require("C1", C1, lambda: (C1 < 0).any(), "non-negative costs (loss='kl')",
                lambda: f"a minimum of {C1.min().item():.6g}")
        require("C2", C2, lambda: (C2 <= 0).any(), "positive costs (loss='kl' takes their log)",
                lambda: f"a minimum of {C2.min().item():.6g}")
    a = V._weights("a", a, B, n, C1, "the rows of C1")
    b = V._weights("b", b, B, m, C1, "the rows of C2")
    V._balanced(a, b)
    return C1, C2, M, a, b


def _feature_cost(M, B: int, n: int, m: int) -> torch.Tensor:
    check_floating("M", M)
    M = promote(M)
    if M.dim() == 2 and B == 1:
        M = M.unsqueeze(0)
    if tuple(M.shape) != (B, n, m):
        raise fail("M", f"a feature cost matrix of shape {(B, n, m)} (one row per point of x, one column per "
                        f"point of y)", f"shape {tuple(M.shape)}")
    return M


def _solver_options(eps, alpha, tol, max_iter, loss) -> None:
    D.check("eps", eps)
    D.check("tol", tol)
    D.check("max_iter", max_iter)
    check_option("alpha", alpha, UNIT)
    check_option("loss", loss, Choice(*LOSSES))
    if isinstance(eps, torch.Tensor):
        raise fail("eps", "a positive number (one eps for the batch)", describe(eps))


def solve_gromov(C1: torch.Tensor, C2: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                 *, M: torch.Tensor | None = None, alpha: float = 0.5, eps: float = 0.1, loss: str = "square",
                 tol: float = 1e-9, max_iter: int = 1000) -> GWResult:
    """Entropic (fused) Gromov-Wasserstein between intra-domain cost matrices ``C1 (B, n, n)``, ``C2 (B, m, m)``.

    .. math:: F(T) = \\alpha \\sum_{ijkl} L(C^1_{ik}, C^2_{jl}) T_{ij} T_{kl} + (1 - \\alpha) \\langle M, T\\rangle
              + \\varepsilon\\,\\mathrm{KL}(T \\,\\|\\, a \\otimes b),\\quad T\\mathbf 1 = a,\\ T^\\top \\mathbf 1 = b

    Without ``M`` this is Gromov-Wasserstein (``alpha`` ignored, taken as 1); with a feature cost ``M (B, n, m)``
    the fused version (``alpha`` in [0, 1] weighs structure against features, POT's convention). ``loss``:
    ``'square'`` (``(c1 - c2)^2``) or ``'kl'`` (``c1 log(c1/c2) - c1 + c2``; C1 >= 0, C2 > 0). Weights uniform by
    default, equal totals (constants: no gradient). Returns a :class:`GWResult`: ``value`` (F, differentiable
    in C1, C2, M by the envelope theorem), ``loss`` (POT's reported value, F without the entropic term), the
    plan, and the outer iteration count / last plan change / convergence flag. See the module docstring for
    the algorithm (projected mirror descent with losskit's Sinkhorn as the inner solver).

    Paper: Peyré, Cuturi, Solomon, "Gromov-Wasserstein Averaging of Kernel and Distance Matrices", ICML 2016;
    Vayer, Chapel, Flamary, Tavenard, Courty, "Optimal Transport for structured data with application on
    graphs", 2019, arXiv:1805.09114.
    """
    _solver_options(eps, alpha, tol, max_iter, loss)
    _constant_weights(a, b)
    C1, C2, M, a, b = _matrices(C1, C2, M, a, b, loss)
    return _gw(C1, C2, M, a, b, alpha=1.0 if M is None else float(alpha), eps=float(eps), loss=loss, tol=tol,
               max_iter=max_iter)


# ------------------------------------------------------------------------------ registered objectives
def _spaces(x, y, a, b, p: float):
    """Two batched clouds in their own spaces (dimensions may differ), their weights and intra costs."""
    _constant_weights(a, b)
    x = V._points("x", x, finite=False)
    y = V._points("y", y, finite=False)
    if x.dim() != y.dim():
        raise fail("y", f"a {x.dim()}-d tensor like x", describe(y))
    if x.dim() == 2:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if y.shape[0] != x.shape[0]:
        raise fail("y", f"a batch of {x.shape[0]} problems (as x)", f"shape {tuple(y.shape)}")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    B, n, m = x.shape[0], x.shape[1], y.shape[1]
    # the square loss squares the costs: refuse clouds whose ||x_i - x_k||^(2p) would overflow
    V.cost_range(x, x, 2 * p, names=("x", "x"))
    V.cost_range(y, y, 2 * p, names=("y", "y"))
    a = V._weights("a", a, B, n, x, "x")
    b = V._weights("b", b, B, m, x, "y")
    V._balanced(a, b)
    return x, y, a, b, pairwise_cost(x, x, p), pairwise_cost(y, y, p)


def two_spaces_example(gen: torch.Generator, dtype: torch.dtype, B: int = 2, n: int = 4, m: int = 3,
                       features: bool = False) -> Example:
    """B problems: x (B, n, 2) and y (B, m, 3), Gaussian clouds in different dimensions (and, with
    ``features``, a feature cost M (B, n, m))."""
    x = 0.5 * torch.randn(B, n, 2, generator=gen, dtype=torch.float64)
    y = 0.6 * torch.randn(B, m, 3, generator=gen, dtype=torch.float64)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    inputs = {"x": x.to(dtype), "y": y.to(dtype)}
    grad = ("x", "y")
    if features:
        fx = torch.randn(B, n, 2, generator=gen, dtype=torch.float64)
        fy = torch.randn(B, m, 2, generator=gen, dtype=torch.float64)
        inputs["M"] = pairwise_cost(fx, fy, 2.0).to(dtype)
        grad = ("x", "y", "M")
    return Example(inputs, options={"eps": 0.5, "tol": tol}, grad=grad)


def _two_spaces_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    B, n = x.shape[0], x.shape[1]
    bad = [
        BadInput("batch sizes differ", ex.replace({"y": y[:-1]}), "y"),
        BadInput("points without a feature dimension", ex.replace({"x": x[..., 0, 0]}), "x"),
        BadInput("integer points", ex.replace({"x": x.round().long()}), "x"),
        BadInput("+inf in y", ex.replace({"y": y.clone().fill_(float("inf"))}), "y"),
        BadInput("negative weight", ex.replace(options={"a": -torch.ones(B, n, dtype=x.dtype)}), "a"),
        BadInput("weights of the wrong length", ex.replace(options={"a": torch.ones(B, n + 1, dtype=x.dtype)}), "a"),
        BadInput("unequal total masses", ex.replace(options={"b": 2 * torch.ones(B, y.shape[1], dtype=x.dtype)
                                                             / y.shape[1]}), "b"),
        BadInput("weights that require grad",
                 ex.replace(options={"a": torch.full((B, n), 1.0 / n, dtype=x.dtype, requires_grad=True)}), "a"),
        BadInput("non-positive eps", ex.replace(options={"eps": 0.0}), "eps"),
    ]
    if "M" in ex.inputs:
        M = ex.inputs["M"]
        bad += [BadInput("M of the wrong shape", ex.replace({"M": M[:, :-1]}), "M"),
                BadInput("NaN in M", ex.replace({"M": M.clone().fill_(float("nan"))}), "M")]
    return bad


def _two_spaces_extreme(ex: Example) -> Example:
    """Clouds of spread 30 in float32 with eps = 1e-2: linearised costs / eps ~ 1e7 (log domain)."""
    return ex.replace({k: (v.double() * 30).float() for k, v in ex.inputs.items()}, {"eps": 1e-2, "tol": 1e-3,
                                                                                     "max_iter": 50})


TWO_SPACES = InputKind(
    "two point clouds in their own spaces",
    "two batched point clouds x (B, n, d1), y (B, m, d2) (or unbatched (n, d1), (m, d2)), compared through "
    "their intra-domain costs (d1 may differ from d2), with optional weights a (B, n), b (B, m)",
    bad_inputs=_two_spaces_bad,
    extreme=_two_spaces_extreme,
)

TWO_SPACES_FEATURES = InputKind(
    "two point clouds in their own spaces with a feature cost",
    "two batched point clouds x (B, n, d1), y (B, m, d2) (structure) and a feature cost M (B, n, m) between "
    "their points (or unbatched (n, d1), (m, d2), (n, m)), optional weights a (B, n), b (B, m)",
    bad_inputs=_two_spaces_bad,
    extreme=_two_spaces_extreme,
)

_SKIPS = {"compile": "an iterative solver that reads values (convergence tests) and runs outside the graph"}
_GW_DOMAINS = {**D.domains("a", "b", "p", "eps", "tol", "max_iter")}


@objective(
    "gromov_wasserstein", family="transport", input_kind=TWO_SPACES, example=two_spaces_example,
    paper=GW_PAPER, meta=False, compile=False, skip_reasons=_SKIPS, domains={**_GW_DOMAINS, "eps": D.POSITIVE},
    formula="GW_eps = min_{T1=a, T^T1=b} sum_ijkl (C1_ik - C2_jl)^2 T_ij T_kl + eps KL(T | a (x) b),  "
            "C1_ik = ||x_i - x_k||^p, C2_jl = ||y_j - y_l||^p",
)
def gromov_wasserstein(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                       b: torch.Tensor | None = None, eps: float = 0.1, p: float = 2.0, tol: float = 1e-9,
                       max_iter: int = 1000, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Entropic Gromov-Wasserstein discrepancy between two point clouds, possibly of different dimensions.

    .. math:: \\mathrm{GW}_\\varepsilon = \\min_{T\\mathbf 1 = a,\\ T^\\top\\mathbf 1 = b}
              \\sum_{ijkl} (C^1_{ik} - C^2_{jl})^2\\, T_{ij} T_{kl} + \\varepsilon\\,\\mathrm{KL}(T \\,\\|\\, a\\otimes b),
              \\quad C^1_{ik} = \\|x_i - x_k\\|^p,\\ C^2_{jl} = \\|y_j - y_l\\|^p

    Compares the clouds' internal geometries (invariant to isometries of either cloud). Solved by the
    projected mirror descent of Peyré, Cuturi & Solomon (each step one losskit Sinkhorn on the linearised
    cost ``2 L (x) T``), from ``T0 = a b^T``: the problem is not convex, the value is that of the stationary
    point reached (a local minimum). The value includes the entropic term; gradients in x, y are the
    envelope-theorem ones (plan held fixed), exact at convergence (``tol``: the L1 change of the plan
    between outer steps, raised to the plan's resolution ``8 u max|G| / eps`` in the dtype, u its unit
    roundoff and G the linearised cost; ``max_iter`` outer steps). ``eps`` is in units of the linearised cost, as POT's
    ``epsilon``: ``ot.gromov.entropic_gromov_wasserstein2(C1, C2, p, q, 'square_loss', epsilon=eps)``
    equals ``this - eps KL(T | a (x) b)`` at the plan (tests/test_transport_pot.py). For cost matrices,
    the KL loss, the plan and POT's number use :func:`losskit.transport.solve_gromov`. Weights are
    constants (no gradient).

    Paper: Peyré, Cuturi, Solomon, "Gromov-Wasserstein Averaging of Kernel and Distance Matrices", ICML
    2016 (Mémoli 2011 for the Gromov-Wasserstein distance).
    """
    unbatched = x.dim() == 2
    _, _, ab, bb, C1, C2 = _spaces(x, y, a, b, p)
    v = _gw(C1, C2, None, ab, bb, alpha=1.0, eps=float(eps), loss="square", tol=tol, max_iter=max_iter).value
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)


@objective(
    "fused_gromov_wasserstein", family="transport", input_kind=TWO_SPACES_FEATURES,
    example=functools.partial(two_spaces_example, features=True), paper=FGW_PAPER, meta=False, compile=False,
    skip_reasons=_SKIPS, domains={**_GW_DOMAINS, "eps": D.POSITIVE, "alpha": UNIT},
    formula="FGW_eps = min_{T1=a, T^T1=b} (1 - alpha) <M, T> + alpha sum_ijkl (C1_ik - C2_jl)^2 T_ij T_kl "
            "+ eps KL(T | a (x) b)",
)
def fused_gromov_wasserstein(x: torch.Tensor, y: torch.Tensor, M: torch.Tensor, *, a: torch.Tensor | None = None,
                             b: torch.Tensor | None = None, alpha: float = 0.5, eps: float = 0.1, p: float = 2.0,
                             tol: float = 1e-9, max_iter: int = 1000, sample_weight: torch.Tensor | None = None,
                             reduction: str = "mean") -> torch.Tensor:
    """Entropic fused Gromov-Wasserstein: structure (intra-domain costs) and features (a cost M) together.

    .. math:: \\mathrm{FGW}_\\varepsilon = \\min_{T\\mathbf 1 = a,\\ T^\\top\\mathbf 1 = b}
              (1 - \\alpha)\\langle M, T\\rangle + \\alpha \\sum_{ijkl} (C^1_{ik} - C^2_{jl})^2\\, T_{ij} T_{kl}
              + \\varepsilon\\,\\mathrm{KL}(T \\,\\|\\, a\\otimes b)

    ``x (B, n, d1)``, ``y (B, m, d2)``: the structure points (``C1_ik = ||x_i - x_k||^p``); ``M (B, n, m)``: the
    feature cost between the points of the two clouds (e.g. ``pairwise_cost(features_x, features_y)``).
    ``alpha = 1``: :func:`gromov_wasserstein`; ``alpha = 0``: entropic OT on M. Solver, value and gradients
    (in x, y and M, envelope theorem) as :func:`gromov_wasserstein`. POT's
    ``ot.gromov.entropic_fused_gromov_wasserstein2(M, C1, C2, p, q, 'square_loss', epsilon=eps, alpha=alpha)``
    (same alpha and epsilon conventions) equals ``this - eps KL(T | a (x) b)`` at the plan.

    Paper: Vayer, Chapel, Flamary, Tavenard, Courty, "Optimal Transport for structured data with application
    on graphs", 2019, arXiv:1805.09114 (entropic solver: Peyré, Cuturi, Solomon 2016).
    """
    unbatched = x.dim() == 2
    _, _, ab, bb, C1, C2 = _spaces(x, y, a, b, p)
    Mb = _feature_cost(M, C1.shape[0], C1.shape[1], C2.shape[1])
    dt = torch.promote_types(C1.dtype, Mb.dtype)
    v = _gw(C1.to(dt), C2.to(dt), Mb.to(dt), ab.to(dt), bb.to(dt), alpha=float(alpha), eps=float(eps),
            loss="square", tol=tol, max_iter=max_iter).value
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)
