"""Partial optimal transport: move only a mass ``m <= min(|a|, |b|)`` (Benamou et al. 2015; Chapel et al. 2020).

    PW(a, b; m) = min { <P, C> : P >= 0, P 1 <= a, P^T 1 <= b, 1^T P 1 = m }

Exact (:func:`partial_ot`): the dummy-point reduction (Chapel, Alaya, Gasso 2020, Prop. 1): one dummy
point added to each side, carrying the mass the other side leaves untransported (``|b| - m`` as a row,
``|a| - m`` as a column), reached at cost 0 from every real point and at a prohibitive cost from the other
dummy; the balanced problem is solved by losskit's exact solver (:func:`~.exact._exact_plan`) and the real
block of its plan is an optimal partial plan.

Entropic (:func:`entropic_partial_ot`): ``min <P, C> + eps sum_ij P_ij (log P_ij - 1)`` over the same set,
the problem of Benamou, Carlier, Cuturi, Nenna, Peyré 2015 (Sec. 5.2) that POT's
``ot.partial.entropic_partial_wasserstein`` solves by Dykstra's iterated Bregman projections. Here its dual

    D(f, g, lam) = <a, f> + <b, g> + m lam - eps sum_ij exp((f_i + g_j + lam - C_ij) / eps),  f <= 0, g <= 0,

is maximised by exact block coordinate ascent in the log domain (the same fixed point): each update is a
soft-min clipped at 0, ``f_i = min(0, eps log a_i - eps log sum_j exp((g_j + lam - C_ij)/eps))``, the same
for g, and ``lam = eps log m - eps log sum_ij exp((f_i + g_j - C_ij)/eps)``. The plan is
``P = exp((f + g + lam - C)/eps)``; the loop stops per problem when the KKT residual (the marginal excess
``(P 1 - a)_+``, and ``|P 1 - a|`` on rows whose potential is negative, the same for columns) is below
``tol``. The value is ``D`` at the potentials (= the primal at the plan); by the envelope theorem its
gradient is ``P`` in C (so in the points), ``f`` in a, ``g`` in b.
"""

from __future__ import annotations

import functools
import math

import torch

from .._core import Paper, finish, objective
from .._core.compiler import eager
from .._core.domains import check_option
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import require
from . import _domains as D
from . import _validate as V
from ._inputs import TWO_SAMPLES, two_samples_example
from .costs import pairwise_cost
from .exact import _exact_plan

__all__ = ["partial_ot", "entropic_partial_ot", "partial_plan"]

PARTIAL_PAPER = Paper("Iterative Bregman Projections for Regularized Transportation Problems", 2015, "1412.5154",
                      "Benamou, Carlier, Cuturi, Nenna, Peyré")
EXACT_PARTIAL_PAPER = Paper("Partial Optimal Transport with Applications on Positive-Unlabeled Learning", 2020,
                            "2002.08276", "Chapel, Alaya, Gasso")


_MASS = D.POSITIVE


def _mass(mass: float, a: torch.Tensor, b: torch.Tensor) -> None:
    """``0 < mass <= min(|a|, |b|)`` for every problem (a value check naming ``mass``)."""
    cap = torch.minimum(a.sum(1), b.sum(1))
    tol = 1e-12 if a.dtype == torch.float64 else 1e-6
    require("mass", a, lambda: (cap < mass * (1 - tol)).any(),
            "a mass to transport of at most min(|a|, |b|) in every problem",
            lambda: f"mass {mass:g} against min(|a|, |b|) = {cap.min().item():.6g}")


def _problems(x, y, a, b, p, mass):
    xb, yb, ab, bb = V.samples(x, y, a, b, balanced=False, finite=False)
    V.cost_range(xb, yb, p)
    _mass(mass, ab, bb)
    return xb, yb, ab, bb


# ------------------------------------------------------------------------------------------- exact
@eager
def partial_plan(C: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                 mass: float) -> torch.Tensor:
    """An optimal plan of exact partial OT (``P 1 <= a``, ``P^T 1 <= b``, ``|P| = mass``) for ``C (B, n, m)``
    or ``(n, m)``, by the dummy-point reduction onto :func:`~losskit.transport.exact_plan` (no gradient)."""
    check_option("mass", mass, _MASS)
    C3, a3, b3 = V.matrix(C.detach(), a, b, balanced=False)
    _mass(mass, a3, b3)
    out = _partial_plan(C3, a3, b3, float(mass))
    return out if C.dim() == 3 else out[0]


def _partial_plan(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mass: float) -> torch.Tensor:
    B, n, m = C.shape
    big = 2 * C.reshape(B, -1).amax(1).clamp_min(0) + 1          # dummy -> dummy: never used at the optimum
    Ce = C.new_zeros(B, n + 1, m + 1)
    Ce[:, :n, :m] = C
    Ce[:, n, m] = big
    ae = torch.cat([a, (b.sum(1) - mass).clamp_min(0).unsqueeze(1)], 1)
    be = torch.cat([b, (a.sum(1) - mass).clamp_min(0).unsqueeze(1)], 1)
    return _exact_plan(Ce, ae, be)[:, :n, :m]


def _partial_example(gen: torch.Generator, dtype: torch.dtype, **options) -> Example:
    ex = two_samples_example(gen, dtype, **options)
    return ex.replace(options={"mass": 0.6})


def _exact_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    ex = two_samples_example(gen, dtype)
    return Example(ex.inputs, options={"mass": 0.6}, grad=ex.grad)


def _partial_bad(ex: Example) -> list[BadInput]:
    x = ex.inputs["x"]
    return TWO_SAMPLES.bad_inputs(ex) + [
        BadInput("mass above min(|a|, |b|)", ex.replace(options={"mass": 1.5}), "mass"),
        BadInput("mass above the smaller total", ex.replace(options={"b": torch.full(
            (x.shape[0], ex.inputs["y"].shape[1]), 0.1, dtype=x.dtype)}), "mass"),
        BadInput("non-positive mass", ex.replace(options={"mass": 0.0}), "mass"),
    ]


PARTIAL_SAMPLES = InputKind(
    "two point clouds (partial)",
    TWO_SAMPLES.description + "; the totals of a and b may differ (a mass 0 < mass <= min(|a|, |b|) is moved)",
    bad_inputs=_partial_bad,
    extreme=TWO_SAMPLES.extreme,
)



@objective(
    "partial_ot", family="transport", input_kind=PARTIAL_SAMPLES, example=_exact_example,
    paper=EXACT_PARTIAL_PAPER, properties={"nonnegative"}, meta=False, compile=False,
    skip_reasons={"compile": "the plan comes from SciPy (assignment / HiGHS LP) on host values"},
    domains={**D.domains("a", "b", "p"), "mass": _MASS},
    formula="PW(a, b; m) = min_{P >= 0, P1 <= a, P^T1 <= b, 1^T P 1 = m} <P, C>,  C_ij = ||x_i - y_j||^p",
)
def partial_ot(x: torch.Tensor, y: torch.Tensor, *, mass: float = 0.5, a: torch.Tensor | None = None,
               b: torch.Tensor | None = None, p: float = 2.0, sample_weight: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Exact partial optimal transport cost: the cheapest way to move only ``mass`` between two clouds.

    .. math:: \\mathrm{PW}(\\alpha, \\beta; m) = \\min_{P \\ge 0,\\ P\\mathbf 1 \\le a,\\ P^\\top\\mathbf 1 \\le b,\\
              \\mathbf 1^\\top P \\mathbf 1 = m} \\langle P, C\\rangle,\\qquad C_{ij} = \\|x_i - y_j\\|^p

    ``0 < mass <= min(|a|, |b|)`` (absolute mass; uniform weights total 1, so the default 0.5 moves half of
    each cloud); the totals of ``a`` and ``b`` may differ. Robust to outliers: points far from the other
    cloud are left untransported. Solved by the dummy-point reduction (one dummy point per side absorbs
    the mass left behind) onto losskit's exact solver (assignment / HiGHS LP, small problems);
    the value ``<P, C(x, y)>`` is differentiable in the points with the plan held fixed (as
    :func:`exact_ot`); the weights get no gradient. POT's ``ot.partial.partial_wasserstein2(a, b, C, m=mass)``
    is the same number (tests/test_transport_pot.py); ``losskit.transport.partial_plan`` gives the plan.

    Paper: Chapel, Alaya, Gasso, "Partial Optimal Transport with Applications on Positive-Unlabeled
    Learning", 2020, arXiv:2002.08276 (the reduction, Prop. 1); Caffarelli & McCann 2010; Figalli 2010.
    """
    unbatched = x.dim() == 2
    xb, yb, ab, bb = _problems(x, y, a, b, p, mass)
    C = pairwise_cost(xb, yb, p)
    P = _partial_plan(C.detach(), ab.detach(), bb.detach(), float(mass))
    v = (P * C).sum((1, 2))
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)


# ----------------------------------------------------------------------------------------- entropic
@torch.no_grad()
def _partial_sinkhorn(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mass: float, eps: float, tol: float,
                      max_iter: int):
    """Block coordinate ascent on the dual (module docstring); ``(f, g, lam, n_iter, error, converged)``.
    Converged problems are frozen (batch-independent results)."""
    B, n, m = C.shape
    loga, logb = a.log(), b.log()
    K = -C / eps                                                        # log-kernel
    logm = math.log(mass)
    f = C.new_zeros(B, n)
    g = C.new_zeros(B, m)
    lam = (logm - torch.logsumexp(K.reshape(B, -1), 1)) * eps          # the mass constraint first
    n_iter = torch.zeros(B, dtype=torch.long, device=C.device)
    err = torch.full((B,), math.inf, dtype=C.dtype, device=C.device)
    done = torch.zeros(B, dtype=torch.bool, device=C.device)
    for _ in range(max_iter):
        lam1 = (lam / eps).view(B, 1)
        fn = torch.clamp(eps * (loga - torch.logsumexp(K + ((g / eps).unsqueeze(1)), 2) - lam1), max=0.0)
        gn = torch.clamp(eps * (logb - torch.logsumexp(K + ((fn / eps).unsqueeze(2)), 1) - lam1), max=0.0)
        lamn = eps * (logm - torch.logsumexp((K + (fn / eps).unsqueeze(2) + (gn / eps).unsqueeze(1)).reshape(B, -1), 1))
        # KKT residual of the new point (the mass is exact after the lam update)
        logP = K + (fn / eps).unsqueeze(2) + (gn / eps).unsqueeze(1) + (lamn / eps).view(B, 1, 1)
        P = logP.exp()
        r, c = P.sum(2), P.sum(1)
        res_r = torch.where(fn < 0, (r - a).abs(), (r - a).clamp_min(0)).sum(1)
        res_c = torch.where(gn < 0, (c - b).abs(), (c - b).clamp_min(0)).sum(1)
        e = res_r + res_c
        active = ~done
        a1 = active.view(B, 1)
        f, g = torch.where(a1, fn, f), torch.where(a1, gn, g)
        lam = torch.where(active, lamn, lam)
        err = torch.where(active, e, err)
        n_iter += active.long()
        done = done | (e < tol)
        if bool(done.all()):
            break
    return f, g, lam, n_iter, err, err < tol


@objective(
    "entropic_partial_ot", family="transport", input_kind=PARTIAL_SAMPLES,
    example=functools.partial(_partial_example), paper=PARTIAL_PAPER, meta=False, compile=False,
    skip_reasons={"compile": "an iterative solver that reads values (convergence tests)"},
    domains={**D.domains("a", "b", "p", "tol", "max_iter"), "eps": D.POSITIVE, "mass": _MASS},
    formula="PW_eps(a, b; m) = min_{P >= 0, P1 <= a, P^T1 <= b, 1^T P 1 = m} <P, C> + eps sum_ij P_ij (log P_ij - 1)",
)
def entropic_partial_ot(x: torch.Tensor, y: torch.Tensor, *, mass: float = 0.5, a: torch.Tensor | None = None,
                        b: torch.Tensor | None = None, eps: float = 0.05, p: float = 2.0, tol: float = 1e-9,
                        max_iter: int = 10000, sample_weight: torch.Tensor | None = None,
                        reduction: str = "mean") -> torch.Tensor:
    """Entropic partial optimal transport cost: move only ``mass``, with entropic regularisation.

    .. math:: \\mathrm{PW}_\\varepsilon(\\alpha, \\beta; m) = \\min_{P \\ge 0,\\ P\\mathbf 1 \\le a,\\
              P^\\top\\mathbf 1 \\le b,\\ \\mathbf 1^\\top P \\mathbf 1 = m}
              \\langle P, C\\rangle + \\varepsilon \\sum_{ij} P_{ij} (\\log P_{ij} - 1)

    The problem of Benamou et al. (2015, Sec. 5.2) and POT's ``ot.partial.entropic_partial_wasserstein``
    (same ``eps``, POT's ``reg``; same entropy, relative to the counting measure, not to ``a (x) b``),
    solved in the log domain by exact block coordinate ascent on its dual (capped soft-min updates of the
    potentials ``f, g <= 0`` and of the mass multiplier; see :mod:`losskit.transport.partial`) until the
    KKT residual is below ``tol``. The value is the dual objective at the potentials (the primal above at
    the plan); gradients by the envelope theorem: ``P`` in the cost (so in the points), ``f`` in a, ``g`` in
    b. POT reports the linear part only: ``POT's partial_w_dist = <P, C> = this - eps sum P (log P - 1)``
    (tests/test_transport_pot.py). ``0 < mass <= min(|a|, |b|)``; dense cost (small and medium problems).

    Paper: Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman Projections for Regularized
    Transportation Problems", 2015, arXiv:1412.5154.
    """
    unbatched = x.dim() == 2
    xb, yb, ab, bb = _problems(x, y, a, b, p, mass)
    C = pairwise_cost(xb, yb, p)
    v = _entropic_partial(C, ab, bb, float(mass), float(eps), tol, max_iter)[0]
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)


def _entropic_partial(C, a, b, mass: float, eps: float, tol: float, max_iter: int):
    """``(value, plan, linear part)`` of validated batched problems; the value is differentiable in C, a, b."""
    f, g, lam, _, _, _ = _partial_sinkhorn(C.detach(), a.detach(), b.detach(), mass, eps, tol, max_iter)
    B = C.shape[0]
    logP = (f.unsqueeze(2) + g.unsqueeze(1) + lam.view(B, 1, 1) - C) / eps
    # (a zero weight has f = -inf: its term is 0)
    value = (torch.where(a > 0, a * f, 0.0).sum(1) + torch.where(b > 0, b * g, 0.0).sum(1) + mass * lam
             - eps * logP.exp().sum((1, 2)))
    # the primal at the plan is the dual: D = <a, f> + <b, g> + m lam - eps |P|, with |P| = m at the lam update
    P = logP.detach().exp()
    return value, P, (P * C.detach()).sum((1, 2))
