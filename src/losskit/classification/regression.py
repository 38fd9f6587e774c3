"""Regression through classification: HL-Gauss and two-hot cross-entropy, and the Thurstone fidelity loss."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, REAL, Maybe, Tensor
from .._core.validate import check_floating, check_unit_interval
from ._inputs import LEVEL_PAIRS, REGRESSION_LOGITS, level_pairs_example, regression_example
from ._targets import built_distribution, class_last, classwise_loss
from .margins import margin_logsumexp
from .targets import _hl_gauss, _two_hot, ndtr

__all__ = ["hl_gauss_loss", "HLGaussLoss", "two_hot_loss", "TwoHotLoss", "thurstone_fidelity_loss",
           "ThurstoneFidelityLoss"]

HLGAUSS_PAPER = Paper("Stop Regressing: Training Value Functions via Classification for Scalable Deep RL", 2024,
                      "2403.03950", "Farebrother, Orbay, Vuong, Taïga, Chebotar, Xiao, Irpan, Levine, Castro, "
                      "Faust, Kumar, Agarwal")
DEQA_PAPER = Paper("Teaching LLMs to Regress Accurate Image Quality Scores using Score Distribution", 2025,
                   "2501.11561", "You, Cai, Gu, Xue, Dong")


def _bin_targets(logits, target, builder, **kw):
    # target's finiteness and the logits' rows (LOGIT_ROWS) were checked by the registry wrapper
    z = class_last(logits)
    if z.dim() != 2:
        raise fail("logits", "shape (N, K) over the bins", f"shape {tuple(logits.shape)}")
    y = check_floating("target", target)
    if tuple(y.shape) != (z.shape[0],):
        raise fail("target", f"one real value per sample, shape ({z.shape[0]},)", f"shape {tuple(y.shape)}")
    return built_distribution(z, builder(y.to(z.dtype), num_bins=z.shape[-1], **kw))


@objective(
    "hl_gauss_loss", seed=True, family="classification", input_kind=REGRESSION_LOGITS, example=regression_example,
    paper=HLGAUSS_PAPER, properties={"nonnegative", "convex", "shift_invariant"},
    formula="L(z, y) = -sum_i t_i log softmax(z)_i,  t_i = Phi((e_{i+1} - y)/sigma) - Phi((e_i - y)/sigma) "
            "(renormalised on [v_min, v_max])",
    module_name="HLGaussLoss", domains={"v_min": REAL, "v_max": REAL, "sigma": Maybe(POSITIVE)},
)
def hl_gauss_loss(logits: torch.Tensor, target: torch.Tensor, *, v_min: float, v_max: float,
                  sigma: float | None = None, sample_weight: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """HL-Gauss: cross-entropy against the histogram of a Gaussian centred on the regression target.

    .. math:: \\ell(z, y) = -\\sum_i t_i \\log \\mathrm{softmax}(z)_i,\\quad
              t_i \\propto \\Phi\\Big(\\frac{e_{i+1} - y}{\\sigma}\\Big) - \\Phi\\Big(\\frac{e_i - y}{\\sigma}\\Big)

    ``K = logits.shape[1]`` bins of width ``zeta = (v_max - v_min)/K``; ``sigma`` defaults to
    ``0.75 zeta`` (the paper's ratio); ``v_max > v_min``, ``sigma > 0``. The prediction is ``expected_value(logits, bin_centers(v_min,
    v_max, K))``. Targets come from :func:`hl_gauss_targets` (``y`` clipped to ``[v_min, v_max]``).

    Paper: Farebrother et al., "Stop Regressing: Training Value Functions via Classification for
    Scalable Deep RL", 2024, arXiv:2403.03950.
    """
    t = _bin_targets(logits, target, _hl_gauss, v_min=v_min, v_max=v_max, sigma=sigma)
    return classwise_loss(logits, t, margin_logsumexp, sample_weight=sample_weight, reduction=reduction)


@objective(
    "two_hot_loss", seed=True, family="classification", input_kind=REGRESSION_LOGITS, example=regression_example,
    paper=HLGAUSS_PAPER, properties={"nonnegative", "convex", "shift_invariant"},
    formula="L(z, y) = -sum_i t_i log softmax(z)_i,  t = two-hot split of y between neighbouring bin centres",
    module_name="TwoHotLoss", domains={"v_min": REAL, "v_max": REAL},
)
def two_hot_loss(logits: torch.Tensor, target: torch.Tensor, *, v_min: float, v_max: float,
                 sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Two-hot: cross-entropy against ``y`` split linearly between its two nearest bin centres.

    .. math:: t_j = \\frac{c_{j+1} - y}{c_{j+1} - c_j},\\ t_{j+1} = 1 - t_j,\\qquad
              \\ell(z, y) = -\\sum_i t_i \\log \\mathrm{softmax}(z)_i

    so ``sum_i t_i c_i = y`` exactly. Bins as in :func:`hl_gauss_loss`; ``y`` is clipped to the
    centres' range.

    Paper: Farebrother et al., "Stop Regressing: Training Value Functions via Classification for
    Scalable Deep RL", 2024, arXiv:2403.03950.
    """
    t = _bin_targets(logits, target, _two_hot, v_min=v_min, v_max=v_max)
    return classwise_loss(logits, t, margin_logsumexp, sample_weight=sample_weight, reduction=reduction)


def _moments(logits: torch.Tensor, levels: torch.Tensor):
    p = torch.softmax(logits, -1)
    mu = (p * levels).sum(-1)
    var = (p * (levels - mu.unsqueeze(-1)) ** 2).sum(-1)
    return mu, var


@objective(
    "thurstone_fidelity_loss", seed=True, family="classification", input_kind=LEVEL_PAIRS, example=level_pairs_example,
    paper=DEQA_PAPER, properties={"bounded"},
    formula="P^ = Phi((mu_A - mu_B) / sqrt(s_A^2 + s_B^2 + eps)),  mu, s^2 the mean / variance of softmax(z) "
            "over the levels;  L = 1 - sqrt(P^ P + eps) - sqrt((1 - P^)(1 - P) + eps)",
    module_name="ThurstoneFidelityLoss",
    domains={"levels": Maybe(Tensor("a tensor of level values, shape (K,)")), "eps": POSITIVE},
)
def thurstone_fidelity_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, target: torch.Tensor, *,
                            levels: torch.Tensor | None = None, eps: float = 1e-8,
                            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """DeQA-Score's fidelity loss on the Thurstone probability that item A outranks item B.

    .. math:: \\hat P = \\Phi\\Big(\\frac{\\hat\\mu_A - \\hat\\mu_B}{\\sqrt{\\hat\\sigma_A^2 + \\hat\\sigma_B^2}}\\Big),
              \\quad \\ell = 1 - \\sqrt{\\hat P P} - \\sqrt{(1 - \\hat P)(1 - P)}

    ``mu_hat, sigma_hat^2`` are the mean and variance of ``softmax(logits)`` over the score ``levels``
    (default ``1..K``); ``target`` is the ground-truth ``P`` (e.g. :func:`thurstone_probability` of the
    two items' mean opinion scores and spreads). ``eps = 1e-8`` is added under every square root (the
    paper's choice for the fidelity roots; losskit also adds it to the variance sum so one-hot
    predictions stay finite; ``eps > 0``), so the minimum is ``-O(sqrt(eps))`` rather than exactly 0. The soft labels
    for the companion KL term are :func:`score_distribution`.

    Paper: You, Cai, Gu, Xue, Dong, "Teaching LLMs to Regress Accurate Image Quality Scores using Score
    Distribution" (DeQA-Score), 2025, arXiv:2501.11561.
    """
    check_floating("logits_a", logits_a)
    check_floating("logits_b", logits_b)
    if logits_a.dim() != 2:
        raise fail("logits_a", "shape (N, K) over the score levels", f"shape {tuple(logits_a.shape)}")
    if logits_b.shape != logits_a.shape:
        raise fail("logits_b", f"the shape of logits_a {tuple(logits_a.shape)}", f"shape {tuple(logits_b.shape)}")
    check_floating("target", target)
    if tuple(target.shape) != (logits_a.shape[0],):
        raise fail("target", f"one probability per pair, shape ({logits_a.shape[0]},)", f"shape {tuple(target.shape)}")
    check_unit_interval("target", target)
    k = logits_a.shape[1]
    if levels is None:
        levels = torch.arange(1, k + 1, dtype=logits_a.dtype, device=logits_a.device)
    elif tuple(levels.shape) != (k,):
        raise fail("levels", f"one value per level, shape ({k},)", f"shape {tuple(levels.shape)}")
    levels = levels.to(logits_a.dtype)
    mu_a, var_a = _moments(logits_a, levels)
    mu_b, var_b = _moments(logits_b, levels)
    # thurstone_probability with the variances directly (no sqrt of a variance that may be 0)
    p_hat = ndtr((mu_a - mu_b) / torch.sqrt(var_a.clamp(min=0) + var_b.clamp(min=0) + eps))
    p = target.to(p_hat.dtype)
    per = 1 - torch.sqrt(p_hat * p + eps) - torch.sqrt((1 - p_hat) * (1 - p) + eps)
    return finish(per, reduction, sample_weight=sample_weight)


HLGaussLoss = hl_gauss_loss.Module
TwoHotLoss = two_hot_loss.Module
ThurstoneFidelityLoss = thurstone_fidelity_loss.Module
