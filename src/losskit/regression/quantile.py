"""Quantile regression: the pinball (check) loss, the weighted interval score, and the monotone
rearrangements of crossing quantiles (sorting, isotonic regression).

Predicted quantiles ``pred (N, Q)`` are at the levels ``quantiles = (tau_1 < ... < tau_Q)``. A model that
predicts each level separately may cross (``q_{tau_1} > q_{tau_2}``); ``monotone='sort'`` (Chernozhukov,
Fernández-Val, Galichon 2010) or ``'isotonic'`` (the L2 projection onto non-decreasing vectors, by
pool-adjacent-violators) rearranges each row before the loss. Both can only lower the pinball loss and
the weighted interval score (Fakoor et al. 2023, Propositions on post-sorting / post-isotonic regression).
"""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import OPEN_UNIT, Choice, Maybe, Seq
from .._core.validate import check_floating
from ._inputs import QUANTILES, interval_example, quantile_example

__all__ = ["pinball_loss", "PinballLoss", "weighted_interval_score", "WeightedIntervalScoreLoss",
           "rearrange_quantiles"]

FAKOOR_PAPER = Paper("Flexible Model Aggregation for Quantile Regression", 2023, "2103.00083",
                     "Fakoor, Kim, Mueller, Smola, Tibshirani")
MONOTONE = Maybe(Choice("sort", "isotonic"))


def _isotonic(x: torch.Tensor) -> torch.Tensor:
    """Row-wise isotonic (non-decreasing) L2 regression of ``x (N, Q)`` with equal weights.

    The min-max formula of the pool-adjacent-violators solution,
    ``x*_k = max_{i <= k} min_{j >= k} mean(x_i..x_j)``, evaluated on all interval means at once
    (O(N Q^2) memory); its gradient is the block averaging of PAV's solution.
    """
    q = x.shape[-1]
    c = torch.nn.functional.pad(x.cumsum(-1), (1, 0))  # (N, Q+1), c[:, j] = sum of x[:, :j]
    idx = torch.arange(q, device=x.device)
    i, j = idx[:, None], idx[None, :]
    valid = j >= i
    count = torch.where(valid, (j - i + 1), torch.ones_like(j)).to(x.dtype)
    means = (c[..., None, 1:] - c[..., :-1, None]) / count  # (N, Q_i, Q_j): mean of x[i..j]
    means = torch.where(valid, means, torch.full_like(means, math.inf))
    suffix_min = means.flip(-1).cummin(-1).values.flip(-1)  # min over j >= k, indexed [i, k]
    lower = torch.where(valid, suffix_min, torch.full_like(suffix_min, -math.inf))  # only i <= k
    return lower.amax(-2)


def rearrange_quantiles(pred: torch.Tensor, method: str = "sort") -> torch.Tensor:
    """Non-crossing quantiles: each row of ``pred (N, Q)`` made non-decreasing.

    ``method='sort'`` sorts the row (Chernozhukov et al. 2010); ``'isotonic'`` is its L2 projection onto
    non-decreasing vectors (pool-adjacent-violators). Both are differentiable (almost everywhere) and
    neither increases the pinball loss or the weighted interval score at any target.
    """
    check_floating("pred", pred)
    if method == "sort":
        return pred.sort(-1).values
    if method == "isotonic":
        return _isotonic(pred)
    raise fail("method", "'sort' or 'isotonic'", repr(method))


def _quantile_inputs(pred, target, quantiles):
    check_floating("pred", pred)
    if pred.dim() != 2:
        raise fail("pred", "predicted quantiles of shape (N, Q)", f"shape {tuple(pred.shape)}")
    if tuple(target.shape) != (pred.shape[0],):
        raise fail("target", f"one real target per sample, shape ({pred.shape[0]},)", f"shape {tuple(target.shape)}")
    check_floating("target", target)
    levels = tuple(float(t) for t in quantiles)
    if len(levels) != pred.shape[1]:
        raise fail("quantiles", f"one level per column of pred ({pred.shape[1]})", f"{len(levels)} levels")
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise fail("quantiles", "strictly increasing levels", repr(levels))
    return levels


def _pinball(pred: torch.Tensor, target: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    u = target[:, None] - pred
    return torch.maximum(tau * u, (tau - 1) * u)


@objective(
    "pinball_loss", seed=True, family="regression", input_kind=QUANTILES, example=quantile_example,
    paper=FAKOOR_PAPER, properties={"nonnegative"},
    formula="L(q, y) = (1/Q) sum_k rho_{tau_k}(y - q_k),  rho_tau(u) = u (tau - 1[u < 0]) = max(tau u, (tau - 1) u)",
    domains={"quantiles": Seq(OPEN_UNIT), "monotone": MONOTONE},
)
def pinball_loss(pred: torch.Tensor, target: torch.Tensor, *, quantiles: tuple[float, ...] = (0.5,),
                 monotone: str | None = None, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Pinball (check) loss of predicted quantiles, averaged over the quantile levels.

    .. math:: \\ell(q, y) = \\frac{1}{Q}\\sum_{k=1}^{Q} \\rho_{\\tau_k}(y - q_k),\\qquad
              \\rho_\\tau(u) = u\\,(\\tau - \\mathbb 1[u < 0]) = \\max(\\tau u, (\\tau - 1) u)

    ``pred (N, Q)`` holds the predicted quantiles at the strictly increasing levels ``quantiles``
    (each in (0, 1); default ``(0.5,)``, the absolute error halved); ``target (N,)``. The expected loss
    at level ``tau`` is minimised by the ``tau``-quantile of the target's distribution. ``monotone``:
    ``None`` (default, the levels fitted as they come), ``'sort'`` or ``'isotonic'``: each row is first
    made non-decreasing (:func:`rearrange_quantiles`), which never increases the loss (Chernozhukov et
    al. 2010; Fakoor et al. 2023). ``'mean'`` over the samples equals the authors' ``pinball_loss``
    (a mean over samples and levels).

    Paper: Fakoor, Kim, Mueller, Smola, Tibshirani, "Flexible Model Aggregation for Quantile
    Regression", 2023, arXiv:2103.00083.
    """
    levels = _quantile_inputs(pred, target, quantiles)
    if monotone is not None:
        pred = rearrange_quantiles(pred, monotone)
    tau = torch.tensor(levels, dtype=pred.dtype, device=pred.device)
    per = _pinball(pred, target.to(pred.dtype), tau).mean(-1)
    return finish(per, reduction, sample_weight=sample_weight)


@objective(
    "weighted_interval_score", seed=True, family="regression", input_kind=QUANTILES, example=interval_example,
    paper=FAKOOR_PAPER, properties={"nonnegative"},
    formula="WIS = 1/(K + 1/2) (|y - m|/2 + sum_k alpha_k/2 IS_{alpha_k}),  IS_a = (u - l) + 2/a (l - y)_+ "
            "+ 2/a (y - u)_+;  = 2/(2K+1) sum_tau rho_tau(y - q_tau)",
    domains={"quantiles": Seq(OPEN_UNIT), "monotone": MONOTONE},
)
def weighted_interval_score(pred: torch.Tensor, target: torch.Tensor, *,
                            quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), monotone: str | None = None,
                            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Weighted interval score (WIS) of central prediction intervals read off predicted quantiles.

    .. math:: \\mathrm{IS}_\\alpha(l, u; y) = (u - l) + \\tfrac{2}{\\alpha}(l - y)_+ + \\tfrac{2}{\\alpha}(y - u)_+,
              \\qquad \\mathrm{WIS} = \\frac{1}{K + 1/2}\\Big(\\tfrac12|y - m| +
              \\sum_{k=1}^K \\tfrac{\\alpha_k}{2}\\mathrm{IS}_{\\alpha_k}(l_k, u_k; y)\\Big)

    (Bracher, Ray, Gneiting, Reich 2021). The levels must be symmetric, ``tau_k + tau_{Q+1-k} = 1``: the
    ``k``-th lowest and highest predicted quantiles are the ``(1 - alpha_k)`` central interval
    ``[l_k, u_k]`` with ``alpha_k = 2 tau_k``, and the median ``m`` is the middle column when ``Q = 2K+1``
    is odd (for even ``Q`` there is no median term and the prefactor is ``1/K``). Since
    ``alpha/2 IS_alpha = rho_{alpha/2}(y - l) + rho_{1-alpha/2}(y - u)``, the WIS is twice the pinball loss
    averaged over the ``2K + 1`` levels (Fakoor et al. 2023, Section 2): the relation the tests check.
    ``monotone`` as in :func:`pinball_loss`; default levels ``(0.1, 0.5, 0.9)``.

    Paper: Fakoor, Kim, Mueller, Smola, Tibshirani, "Flexible Model Aggregation for Quantile
    Regression", 2023, arXiv:2103.00083 (the interval score aggregation follows Bracher et al. 2021).
    """
    levels = _quantile_inputs(pred, target, quantiles)
    q = len(levels)
    if q < 2 and not (q == 1 and abs(levels[0] - 0.5) < 1e-12):
        raise fail("quantiles", "symmetric levels (tau_k + tau_{Q+1-k} = 1)", repr(levels))
    if any(abs(levels[k] + levels[q - 1 - k] - 1.0) > 1e-9 for k in range(q)):
        raise fail("quantiles", "symmetric levels (tau_k + tau_{Q+1-k} = 1)", repr(levels))
    if monotone is not None:
        pred = rearrange_quantiles(pred, monotone)
    y = target.to(pred.dtype)
    k = q // 2
    total = pred.new_zeros(pred.shape[0])
    if k:
        alpha = 2 * torch.tensor(levels[:k], dtype=pred.dtype, device=pred.device)
        low, up = pred[:, :k], pred[:, q - k:].flip(-1)
        score = (up - low) + (2 / alpha) * torch.relu(low - y[:, None]) + (2 / alpha) * torch.relu(y[:, None] - up)
        total = total + (alpha / 2 * score).sum(-1)
    if q % 2:
        total = total + 0.5 * (y - pred[:, k]).abs()
        per = total / (k + 0.5)
    else:
        per = total / k
    return finish(per, reduction, sample_weight=sample_weight)


PinballLoss = pinball_loss.Module
WeightedIntervalScoreLoss = weighted_interval_score.Module
