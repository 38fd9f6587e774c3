"""Ordinal regression with cumulative logits: the cumulative-logit NLL, the proportional-odds model, and
PRESTO's relaxation (one coefficient vector per class boundary, fused-L1 shrinkage towards proportional odds).

Classes ``0 < 1 < ... < K-1``. A cumulative logit model gives ``P(y <= k | x) = sigmoid(z_k)`` for the
``K - 1`` boundaries, so ``P(y = k) = sigmoid(z_k) - sigmoid(z_{k-1})`` (``z_{-1} = -inf``,
``z_{K-1} = +inf``); the probabilities are valid when ``z`` is non-decreasing in ``k``. Each class
probability is computed in log space, ``log(sigmoid(b) - sigmoid(a)) = log sigmoid(b) + log sigmoid(-a) +
log(1 - e^{a - b})``, so no difference of two nearly equal probabilities is ever formed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG, NONNEGATIVE
from .._core.validate import check_floating, check_labels, require
from ._inputs import (
    CUMULATIVE,
    ORDINAL_HEAD,
    THRESHOLDS,
    cumulative_example,
    ordinal_head_example,
    threshold_example,
)

__all__ = ["cumulative_logit_loss", "CumulativeLogitLoss", "proportional_odds_loss", "ProportionalOddsLoss",
           "presto_loss", "PRESTOLoss", "presto_penalty"]

MCCULLAGH = Paper("Regression Models for Ordinal Data", 1980, None, "McCullagh")
PRESTO_PAPER = Paper("Predicting Rare Events by Shrinking Towards Proportional Odds", 2023, "2305.16915",
                     "Faletto, Bien")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-x))`` for ``x >= 0`` (Mächler's two branches; ``-inf`` at 0, 0 at ``+inf``)."""
    small = x < math.log(2.0)
    xs = torch.where(small, x, torch.ones_like(x))  # each branch sees only its own range (no NaN gradients)
    xl = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, torch.log(-torch.expm1(-xs)), torch.log1p(-torch.exp(-xl)))


def _ordinal_nll(z: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """``-log P(y = target)`` under ``P(y <= k) = sigmoid(z_k)``, ``z (N, K-1)`` non-decreasing in k."""
    require(name, z, lambda: (z.diff(dim=1) < 0).any() if z.shape[1] > 1 else torch.zeros((), dtype=torch.bool),
            "cumulative logits non-decreasing along the boundaries (valid class probabilities)",
            lambda: "decreasing cumulative logits (crossing boundaries) in some row")
    n = z.shape[0]
    inf = torch.full((n, 1), math.inf, dtype=z.dtype, device=z.device)
    zp = torch.cat([-inf, z, inf], 1)  # (N, K+1)
    t = target[:, None]
    upper, lower = zp.gather(1, t + 1)[:, 0], zp.gather(1, t)[:, 0]
    up_fin, lo_fin = torch.isfinite(upper), torch.isfinite(lower)
    u = torch.where(up_fin, upper, torch.zeros_like(upper))
    lo = torch.where(lo_fin, lower, torch.zeros_like(lower))
    log_p = torch.where(up_fin, F.logsigmoid(u), torch.zeros_like(u))  # log sigmoid(+inf) = 0
    log_p = log_p + torch.where(lo_fin, F.logsigmoid(-lo), torch.zeros_like(lo))  # log sigmoid(-(-inf)) = 0
    both = up_fin & lo_fin
    gap = torch.where(both, u - lo, torch.ones_like(u))
    log_p = log_p + torch.where(both, _log1mexp(gap), torch.zeros_like(gap))
    return -log_p


def _labels(target: torch.Tensor, n: int, k: int) -> torch.Tensor:
    if tuple(target.shape) != (n,):
        raise fail("target", f"one class per sample, shape ({n},)", f"shape {tuple(target.shape)}")
    check_labels("target", target, k)
    return target


@objective(
    "cumulative_logit_loss", family="regression", input_kind=CUMULATIVE, example=cumulative_example,
    paper=MCCULLAGH, properties={"nonnegative"},
    formula="L(z, y) = -log(sigmoid(z_y) - sigmoid(z_{y-1})),  z_{-1} = -inf, z_{K-1} = +inf",
)
def cumulative_logit_loss(cum_logits: torch.Tensor, target: torch.Tensor, *,
                          sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of an ordinal class under a cumulative logit model.

    .. math:: P(y \\le k) = \\sigma(z_k),\\qquad \\ell(z, y) = -\\log\\big(\\sigma(z_y) - \\sigma(z_{y-1})\\big),
              \\quad z_{-1} = -\\infty,\\ z_{K-1} = +\\infty

    ``cum_logits (N, K-1)`` are the logits of ``P(y <= k)`` at the ``K - 1`` class boundaries, which must
    be non-decreasing along the boundaries (crossing boundaries would give negative probabilities and
    raise :class:`~losskit.LossInputError`); ``target (N,)`` the classes in ``[0, K)``. Equal adjacent
    logits give the class between them probability 0 (a loss of ``+inf`` if it is the target). The model
    behind :func:`proportional_odds_loss` (``z_k = theta_k - s``) and :func:`presto_loss`
    (``z_k = alpha_k + x beta_k``); any network can output ``z`` directly (e.g. a cumulative sum of
    positive increments).

    Paper: McCullagh, "Regression Models for Ordinal Data", 1980 (the cumulative logit model).
    """
    check_floating("cum_logits", cum_logits)
    if cum_logits.dim() != 2 or cum_logits.shape[1] < 1:
        raise fail("cum_logits", "cumulative logits of shape (N, K-1), K >= 2", f"shape {tuple(cum_logits.shape)}")
    _labels(target, cum_logits.shape[0], cum_logits.shape[1] + 1)
    return finish(_ordinal_nll(cum_logits, target, "cum_logits"), reduction, sample_weight=sample_weight)


@objective(
    "proportional_odds_loss", family="regression", input_kind=THRESHOLDS, example=threshold_example,
    paper=MCCULLAGH, properties={"nonnegative"},
    formula="P(y <= k) = sigmoid(theta_k - s);  L = -log(sigmoid(theta_y - s) - sigmoid(theta_{y-1} - s))",
)
def proportional_odds_loss(scores: torch.Tensor, thresholds: torch.Tensor, target: torch.Tensor, *,
                           sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Proportional-odds (all-threshold cumulative logit) negative log-likelihood.

    .. math:: P(y \\le k \\mid s) = \\sigma(\\theta_k - s),\\qquad
              \\ell = -\\log\\big(\\sigma(\\theta_y - s) - \\sigma(\\theta_{y-1} - s)\\big)

    ``scores (N,)``: one score ``s = x^T beta`` per sample (higher means a higher class);
    ``thresholds (K-1,)``: the strictly increasing cut points ``theta`` (learnable: pass a parameter, e.g.
    a first cut plus the cumulative sum of positive increments); ``target (N,)`` in ``[0, K)``. The
    convention of statsmodels' ``OrderedModel`` (``distr='logit'``), whose log-likelihood is ``-N`` times
    the ``'mean'``. One coefficient vector shared by every boundary: the model PRESTO relaxes
    (:func:`presto_loss`).

    Paper: McCullagh, "Regression Models for Ordinal Data", 1980.
    """
    check_floating("scores", scores)
    if scores.dim() != 1:
        raise fail("scores", "one score per sample, shape (N,)", f"shape {tuple(scores.shape)}")
    check_floating("thresholds", thresholds)
    if thresholds.dim() != 1 or thresholds.shape[0] < 1:
        raise fail("thresholds", "K-1 >= 1 cut points, shape (K-1,)", f"shape {tuple(thresholds.shape)}")
    require("thresholds", thresholds, lambda: (thresholds.diff() <= 0).any(), "strictly increasing thresholds",
            lambda: f"{thresholds.detach().tolist()}")
    _labels(target, scores.shape[0], thresholds.shape[0] + 1)
    z = thresholds[None, :] - scores[:, None]
    return finish(_ordinal_nll(z, target, "thresholds"), reduction, sample_weight=sample_weight)


def presto_penalty(coef: torch.Tensor, *, penalize_first: bool = True) -> torch.Tensor:
    """PRESTO's fused-L1 penalty of the boundary coefficients ``coef (p, K-1)``:
    ``sum_j |beta_{j,1}| + sum_{k >= 2} sum_j |beta_{j,k} - beta_{j,k-1}|`` (the first term only with
    ``penalize_first``): the lasso on ``psi`` in the authors' reparametrisation ``beta_k = sum_{l <= k} psi_l``.
    """
    fused = (coef[:, 1:] - coef[:, :-1]).abs().sum()
    return fused + coef[:, 0].abs().sum() if penalize_first else fused


@objective(
    "presto_loss", seed=True, family="regression", input_kind=ORDINAL_HEAD, example=ordinal_head_example,
    paper=PRESTO_PAPER, properties={"nonnegative"},
    formula="z_k = alpha_k + x^T beta_k,  P(y <= k) = sigmoid(z_k);  L_i = -log P(y_i | x_i) + "
            "lam (||beta_1||_1 + sum_{k>=2} ||beta_k - beta_{k-1}||_1)",
    module_name="PRESTOLoss", domains={"lam": NONNEGATIVE, "penalize_first": FLAG},
)
def presto_loss(features: torch.Tensor, coef: torch.Tensor, bias: torch.Tensor, target: torch.Tensor, *,
                lam: float, penalize_first: bool = True, sample_weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
    """PRESTO: a cumulative logit model with one coefficient vector per class boundary, shrunk towards
    proportional odds by a fused L1 penalty on adjacent boundaries.

    .. math:: P(y \\le k \\mid x) = \\sigma(\\alpha_k + x^\\top\\beta_k),\\qquad
              \\ell_i = -\\log P(y_i \\mid x_i) + \\lambda\\Big(\\lVert\\beta_1\\rVert_1 +
              \\sum_{k=2}^{K-1}\\lVert\\beta_k - \\beta_{k-1}\\rVert_1\\Big)

    ``features (N, p)`` (a network's last hidden layer, or covariates), ``coef (p, K-1)`` the boundary
    coefficients ``beta_k`` (columns), ``bias (K-1,)`` the intercepts ``alpha_k``, ``target (N,)`` in
    ``[0, K)``. Proportional odds is the case of equal columns; PRESTO lets rare late transitions borrow
    strength from the common early ones. ``lam >= 0`` (required: the paper tunes it by cross-validation
    on the Brier score) weighs the penalty :func:`presto_penalty`; ``penalize_first=True`` (the paper's
    and the authors' ``ordinalNet`` fit: the lasso on ``psi_1 = beta_1`` and the differences ``psi_k``)
    includes ``||beta_1||_1``. The penalty is added to every sample's loss, so ``'mean'`` (also weighted)
    is the paper's objective ``-(1/n) log-lik + lam * penalty`` and ``'sum'`` counts it ``N`` times.
    Boundaries that cross at some ``x`` (decreasing ``z``) give no valid probabilities and raise
    :class:`~losskit.LossInputError` naming ``coef``. Sign convention of the authors' ``predictPrestoProbs``
    (``P(y <= k) = plogis(alpha_k + x beta_k)``); ``ordinalNet`` standardizes the features before
    penalising, so pass standardized features to reproduce its fit.

    Paper: Faletto, Bien, "Predicting Rare Events by Shrinking Towards Proportional Odds", 2023,
    arXiv:2305.16915.
    """
    check_floating("features", features)
    if features.dim() != 2:
        raise fail("features", "features of shape (N, p)", f"shape {tuple(features.shape)}")
    check_floating("coef", coef)
    if coef.dim() != 2 or coef.shape[0] != features.shape[1] or coef.shape[1] < 1:
        raise fail("coef", f"boundary coefficients of shape ({features.shape[1]}, K-1)", f"shape {tuple(coef.shape)}")
    check_floating("bias", bias)
    if tuple(bias.shape) != (coef.shape[1],):
        raise fail("bias", f"one intercept per boundary, shape ({coef.shape[1]},)", f"shape {tuple(bias.shape)}")
    _labels(target, features.shape[0], coef.shape[1] + 1)
    z = bias + features @ coef
    nll = _ordinal_nll(z, target, "coef")
    per = nll + lam * presto_penalty(coef, penalize_first=penalize_first)
    return finish(per, reduction, sample_weight=sample_weight)


CumulativeLogitLoss = cumulative_logit_loss.Module
ProportionalOddsLoss = proportional_odds_loss.Module
PRESTOLoss = presto_loss.Module
