"""Linear DAG structure learning: CoLiDE's concomitant (scale-profiled) score with DAGMA's log-det
acyclicity penalty.

A linear structural equation model ``X = X W + Z`` (data ``X (n, d)``, weighted adjacency ``W (d, d)``,
``W_ij`` the weight of the edge ``i -> j``) is fitted by minimising, over ``W`` (and the noise scale),

    F(W) = mu * (S(W, sigma) + lambda1 ||W||_1) + h_s(W),
    h_s(W) = -log det(s I - W∘W) + d log s,

where ``h_s`` (Bello, Aragam, Ravikumar 2022, DAGMA) is >= 0 on its domain ``{W : rho(W∘W) < s}`` and 0
exactly when ``W`` is the weighted adjacency matrix of a DAG. CoLiDE's score estimates the exogenous
noise scale *concomitantly* (Owen 2007; the scaled/square-root lasso), which decouples ``lambda1`` from
the noise level:

- equal variances (CoLiDE-EV): ``S(W, sigma) = ||X - X W||_F² / (2 n sigma) + d sigma / 2``, minimised
  at ``sigma* = ||X - X W||_F / sqrt(n d)``, where ``S = sqrt(d / n) ||X - X W||_F``;
- non-equal variances (CoLiDE-NV): ``S(W, sigma) = sum_j (||x_j - X w_j||² / (n sigma_j) + sigma_j) / 2``,
  minimised at ``sigma_j* = ||x_j - X w_j|| / sqrt(n)``, where ``S = sum_j ||x_j - X w_j|| / sqrt(n)``.

Both scores are jointly convex in ``(W, sigma)``. Paper: Saboksayr, Mateos, Tepper, "CoLiDE: Concomitant
Linear DAG Estimation", ICLR 2024, arXiv:2310.02895.
"""

from __future__ import annotations

import math

import torch

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Choice, Maybe, Real
from .._core.validate import check_floating

__all__ = ["colide", "CoLiDELoss", "logdet_acyclicity", "colide_sigma"]

COLIDE = Paper("CoLiDE: Concomitant Linear DAG Estimation", 2024, "2310.02895", "Saboksayr, Mateos, Tepper")


def logdet_acyclicity(W: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    """DAGMA's log-det acyclicity function ``h_s(W) = -log det(s I - W∘W) + d log s``.

    Zero iff ``W`` is a DAG's weighted adjacency matrix, positive elsewhere on its domain
    ``{W : spectral radius of W∘W < s}``; ``+inf`` outside it (the barrier an optimiser started at
    ``W = 0`` with small steps does not cross). Gradient ``2 W ∘ (s I - W∘W)^{-T}``.
    """
    check_floating("W", W)
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise fail("W", "a square (d, d) adjacency matrix", f"shape {tuple(W.shape)}")
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        raise fail("s", "a real number > 0", repr(s))
    d = W.shape[0]
    w2 = W * W
    eye = torch.eye(d, dtype=W.dtype, device=W.device)
    with torch.no_grad():
        finite = torch.isfinite(w2).all()
        probe = torch.where(finite, w2, torch.zeros_like(w2))  # LAPACK must not see inf / NaN
        inside = finite & (torch.linalg.eigvals(probe).abs().amax() < s) if w2.numel() else torch.tensor(True)
    m = torch.where(inside, s * eye - w2, eye)  # a safe matrix outside the domain (no NaN gradients)
    h = -torch.linalg.slogdet(m)[1] + d * math.log(s)
    return torch.where(inside, h, torch.full_like(h, math.inf))


def _residual_norms(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Column norms ``||x_j - X w_j||`` of the residual of centred data, scaled to avoid overflow."""
    X = X - X.mean(0)
    R = X - X @ W
    scale = R.detach().abs().amax().clamp_min(torch.finfo(R.dtype).tiny)
    r2 = (R / scale).square().sum(0)
    pos = r2 > 0
    return scale * torch.where(pos, torch.where(pos, r2, torch.ones_like(r2)).sqrt(), torch.zeros_like(r2))


def colide_sigma(X: torch.Tensor, W: torch.Tensor, variance: str = "equal") -> torch.Tensor:
    """The closed-form noise scale(s) minimising CoLiDE's score at ``W``: ``||X - XW||_F / sqrt(n d)``
    (``'equal'``, a scalar) or ``||x_j - X w_j|| / sqrt(n)`` per node (``'nonequal'``, shape (d,))."""
    n, d = X.shape
    r = _residual_norms(X, W)
    if variance == "equal":
        return r.square().sum().sqrt() / math.sqrt(n * d)
    return r / math.sqrt(n)


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 30, d: int = 4) -> Example:
    W0 = torch.triu(torch.randn(d, d, generator=gen, dtype=torch.float64), 1)  # a DAG generates the data
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.inv(torch.eye(d, dtype=torch.float64) - W0)
    W = 0.2 * torch.randn(d, d, generator=gen, dtype=torch.float64)  # a dense iterate inside the domain
    return Example({"X": X.to(dtype), "W": W.to(dtype)}, grad=("W",))


def _bad(ex: Example) -> list[BadInput]:
    X, W = ex.inputs["X"], ex.inputs["W"]
    return [BadInput("non-square W", ex.replace({"W": W[:, :-1]}), "W"),
            BadInput("W of the wrong size", ex.replace({"W": W[:-1, :-1]}), "W"),
            BadInput("1-d data", ex.replace({"X": X[:, 0]}), "X"),
            BadInput("integer data", ex.replace({"X": X.round().long()}), "X"),
            BadInput("+inf datum", ex.replace({"X": X.clone().fill_(float("inf"))}), "X")]


DATA_ADJACENCY = InputKind("data+adjacency", "data X (n, d) and a weighted adjacency matrix W (d, d)",
                           bad_inputs=_bad,
                           extreme=lambda ex: ex.map_floats(lambda t: t.float()).replace(
                               {"X": (ex.inputs["X"] * 1e4).float()}))


@objective("colide", seed=True, family="regression", input_kind=DATA_ADJACENCY, example=_example, paper=COLIDE,
           per_sample=False, batch_scalar=True, sample_weight=False, allow_neg_inf=(), module_name="CoLiDELoss",
           formula="F = mu (S(W, sigma) + lambda1 ||W||_1) + h_s(W);  EV: S = ||X - XW||_F²/(2 n sigma) + d sigma/2 "
                   "(= sqrt(d/n) ||X - XW||_F at sigma*);  NV: S = sum_j (||x_j - X w_j||²/(n sigma_j) + sigma_j)/2;  "
                   "h_s = -log det(sI - W∘W) + d log s",
           domains={"lambda1": NONNEGATIVE, "mu": NONNEGATIVE, "s": POSITIVE,
                    "variance": Choice("equal", "nonequal"), "sigma": Maybe(Real(0.0, None, lo_open=True, tensor=True))},
           meta=False)
def colide(X: torch.Tensor, W: torch.Tensor, *, lambda1: float = 0.05, mu: float = 1.0, s: float = 1.0,
           variance: str = "equal", sigma: float | torch.Tensor | None = None,
           reduction: str = "mean") -> torch.Tensor:
    """CoLiDE's objective for linear DAG learning: concomitant score + l1 + log-det acyclicity.

    .. math:: F(W) = \\mu\\big(S(W, \\sigma) + \\lambda_1\\lVert W\\rVert_1\\big) + h_s(W),\\quad
              h_s(W) = -\\log\\det(sI - W\\circ W) + d\\log s

    .. math:: S_{EV}(W, \\sigma) = \\frac{\\lVert X - XW\\rVert_F^2}{2n\\sigma} + \\frac{d\\sigma}{2},\\qquad
              S_{NV}(W, \\sigma) = \\sum_{j=1}^d \\frac{\\lVert x_j - Xw_j\\rVert^2}{2n\\sigma_j} + \\frac{\\sigma_j}{2}

    ``X (n, d)`` data (centred here, as the authors' ``fit`` does), ``W (d, d)`` the weighted adjacency
    (``W[i, j]``: edge ``i -> j``). ``variance='equal'`` is CoLiDE-EV (one noise scale), ``'nonequal'``
    CoLiDE-NV (one per node). ``sigma=None`` (default) profiles the scale out in closed form
    (:func:`colide_sigma`), which is what the authors' solver does after every step; by the envelope
    theorem the gradient in ``W`` is the same as at a fixed ``sigma = sigma*``. Pass ``sigma`` (a scalar,
    or a (d,) tensor for ``'nonequal'``) to evaluate the joint score instead. Paper notation: ``lambda1``
    (λ, the l1 weight; default 0.05, the authors' ``main.py``), ``mu`` (μ, the score's weight against the
    penalty, decreased over the path of ``s`` values by the authors' solver: 1, 0.1, 0.01, ...), ``s`` (the
    log-det domain parameter, 1.0 first). ``h_s`` is ``+inf`` outside ``{rho(W∘W) < s}``
    (:func:`logdet_acyclicity`). One value per data set: ``reduction`` has no effect.

    Paper: Saboksayr, Mateos, Tepper, "CoLiDE: Concomitant Linear DAG Estimation", ICLR 2024,
    arXiv:2310.02895 (acyclicity: Bello, Aragam, Ravikumar, "DAGMA", NeurIPS 2022).
    """
    check_floating("X", X)
    check_floating("W", W)
    if X.dim() != 2 or X.shape[0] < 2:
        raise fail("X", "data of shape (n, d) with n >= 2", f"shape {tuple(X.shape)}")
    n, d = X.shape
    if tuple(W.shape) != (d, d):
        raise fail("W", f"a ({d}, {d}) adjacency matrix", f"shape {tuple(W.shape)}")
    X = X.to(W.dtype)
    r = _residual_norms(X, W)
    if sigma is None:
        score = math.sqrt(d / n) * r.square().sum().sqrt() if variance == "equal" else r.sum() / math.sqrt(n)
    else:
        sg = torch.as_tensor(sigma, dtype=W.dtype, device=W.device)
        if variance == "equal" and sg.numel() != 1:
            raise fail("sigma", "one noise scale (variance='equal')", f"shape {tuple(sg.shape)}")
        if variance == "nonequal" and sg.numel() not in (1, d):
            raise fail("sigma", f"one noise scale per node, shape ({d},)", f"shape {tuple(sg.shape)}")
        if variance == "equal":
            score = r.square().sum() / (2 * n * sg.reshape(())) + d * sg.reshape(()) / 2
        else:
            score = (r.square() / (n * sg.reshape(-1)) + sg.reshape(-1).expand(d)).sum() / 2
    total = mu * (score + lambda1 * W.abs().sum()) + logdet_acyclicity(W, s)
    return finish(total, reduction)


CoLiDELoss = colide.Module
