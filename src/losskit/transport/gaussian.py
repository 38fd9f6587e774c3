"""The closed-form 2-Wasserstein distance between Gaussians (the Bures-Wasserstein distance).

Between ``N(m1, S1)`` and ``N(m2, S2)`` the squared-Euclidean optimal transport cost has a closed form,

    W2^2 = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2},

the last trace being the Bures term. It is computed without a matrix square root: with the Cholesky
factor ``S1 = L L^T``, ``L^T S2 L`` is similar to ``S2 S1`` and so to ``S1^{1/2} S2 S1^{1/2}``; the trace
is the sum of the square roots of its eigenvalues (``eigvalsh``, whose gradient has no eigenvalue-gap
terms, so repeated eigenvalues are harmless).
"""

from __future__ import annotations

import torch

from .._core import Paper, finish, objective
from .._core.domains import NONNEGATIVE
from .._core.errors import fail
from .._core.validate import check_floating, describe, require
from . import _domains as D
from . import _validate as V
from ._inputs import TWO_SAMPLES, points_example

__all__ = ["bures_wasserstein", "gaussian_w2", "weighted_moments"]

BURES_PAPER = Paper("Computational Optimal Transport", 2019, "1803.00567", "Peyré, Cuturi")


def weighted_moments(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted mean ``(B, d)`` and biased covariance ``(B, d, d)`` of points ``x (B, n, d)``, weights
    ``w (B, n)`` (normalised here): ``m = sum_i w_i x_i``, ``S = sum_i w_i (x_i - m)(x_i - m)^T``."""
    w = w / w.sum(1, keepdim=True)
    m = (w.unsqueeze(-1) * x).sum(1)
    xc = x - m.unsqueeze(1)
    return m, (xc * w.unsqueeze(-1)).transpose(1, 2) @ xc


def _bures_trace(S1: torch.Tensor, S2: torch.Tensor, name: str = "cov1") -> torch.Tensor:
    """``tr (S1^{1/2} S2 S1^{1/2})^{1/2}`` for batches of symmetric matrices, S1 positive definite."""
    L, info = torch.linalg.cholesky_ex(S1)
    require(name, S1, lambda: (info > 0).any(), "positive definite covariances (pass reg > 0)",
            lambda: f"a covariance without a Cholesky factor (problem {int((info > 0).nonzero()[0])})")
    M = L.transpose(-1, -2) @ S2 @ L
    lam = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2)))
    # L^T S2 L is positive semi-definite: a non-positive eigenvalue is a zero one (or its rounding, -1e-17
    # for a singular S2); it contributes 0, with a zero gradient (the square root's is unbounded there)
    pos = lam > 0
    return torch.where(pos, torch.where(pos, lam, torch.ones_like(lam)).sqrt(), torch.zeros_like(lam)).sum(-1)


def gaussian_w2(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between ``N(mean1, cov1)`` and ``N(mean2, cov2)`` (closed form).

    ``mean (..., d)``, ``cov (..., d, d)`` (symmetric; ``cov1`` positive definite, ``cov2`` positive
    semi-definite: its zero eigenvalues, and their rounding below 0, contribute 0 with a zero gradient). Returns ``||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}``, shape
    ``(...)``, differentiable in all four. POT's ``ot.gaussian.bures_wasserstein_distance`` is its square root.
    """
    for name, t in (("mean1", mean1), ("cov1", cov1), ("mean2", mean2), ("cov2", cov2)):
        check_floating(name, t)
    d = mean1.shape[-1]
    for name, t in (("cov1", cov1), ("cov2", cov2)):
        if t.dim() < 2 or t.shape[-2:] != (d, d):
            raise fail(name, f"covariances (..., {d}, {d})", describe(t))
    if mean2.shape[-1] != d:
        raise fail("mean2", f"means of dimension {d} (as mean1)", describe(mean2))
    tr = torch.diagonal(cov1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(cov2, dim1=-2, dim2=-1).sum(-1)
    return ((mean1 - mean2) ** 2).sum(-1) + tr - 2 * _bures_trace(cov1, cov2)


@objective(
    "bures_wasserstein", family="transport", input_kind=TWO_SAMPLES, example=points_example, paper=BURES_PAPER,
    domains={**D.domains("a", "b"), "reg": NONNEGATIVE},
    formula="W2^2(N(m1, S1), N(m2, S2)) = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2},  "
            "(m, S) the weighted mean and covariance (+ reg I) of each cloud",
)
def bures_wasserstein(x: torch.Tensor, y: torch.Tensor, *, a: torch.Tensor | None = None,
                      b: torch.Tensor | None = None, reg: float = 1e-6, sample_weight: torch.Tensor | None = None,
                      reduction: str = "mean") -> torch.Tensor:
    """Squared 2-Wasserstein distance between the Gaussian fits of two point clouds (Bures-Wasserstein).

    .. math:: W_2^2 = \\|m_1 - m_2\\|^2 + \\mathrm{tr}\\,\\Sigma_1 + \\mathrm{tr}\\,\\Sigma_2
              - 2\\,\\mathrm{tr}\\big(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2}\\big)^{1/2}

    ``(m, Sigma)``: the weighted mean and biased covariance of each cloud (weights ``a``, ``b``, uniform by
    default) plus ``reg I`` (``reg >= 0``; with 0 the first cloud's covariance must be positive definite,
    e.g. more points than dimensions, else a :class:`LossInputError` names ``x``). The exact OT cost
    between the two Gaussians (the Fréchet distance of FID), in cost units (``||x - y||^2``, as
    :func:`exact_ot` with ``p = 2``); the clouds themselves enter only through their first two moments.
    Differentiable in the points (and weights); ``losskit.transport.gaussian_w2`` takes the moments.

    POT's ``ot.gaussian.empirical_bures_wasserstein_distance(x, y, reg, ws, wt)`` (same moments, same
    ``reg``) returns the distance ``W_2``: POT's value squared equals this one (tests/test_transport_pot.py).
    Paper: Peyré, Cuturi, "Computational Optimal Transport", 2019, arXiv:1803.00567 (Remark 2.31); Dowson &
    Landau 1982; Gelbrich 1990.
    """
    unbatched = x.dim() == 2
    xb, yb, ab, bb = V.samples(x, y, a, b, balanced=False, finite=False)
    V.cost_range(xb, yb, 2.0)
    m1, S1 = weighted_moments(xb, ab)
    m2, S2 = weighted_moments(yb, bb)
    if reg:
        eye = reg * torch.eye(xb.shape[-1], dtype=xb.dtype, device=xb.device)
        S1, S2 = S1 + eye, S2 + eye
    tr = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    v = ((m1 - m2) ** 2).sum(-1) + tr - 2 * _bures_trace(S1, S2, "x")
    v = v[0] if unbatched else v
    return finish(v, reduction, sample_weight=sample_weight)
