"""Proximal matching (learned proximal networks): a Gaussian-kernel surrogate of the 0-1 loss whose
minimiser tends to the mode (the MAP estimate) as its width gamma shrinks."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, Maybe
from .._core.validate import check_floating, check_same_shape
from ._inputs import PAIRED, paired_example

__all__ = ["proximal_matching_loss", "ProximalMatchingLoss", "proximal_matching_gamma"]

LPN_PAPER = Paper("What's in a Prior? Learned Proximal Networks for Inverse Problems", 2023, "2310.14344",
                  "Fang, Buchanan, Sulam")

#: the authors' smallest width per unit of sqrt(dimension): gamma_min = 0.08 sqrt(n) (lpn/train.py)
GAMMA_PER_SQRT_DIM = 0.08


@objective(
    "proximal_matching_loss", seed=True, family="regression", input_kind=PAIRED, example=paired_example,
    paper=LPN_PAPER, properties={"nonnegative", "bounded"},
    formula="L(x_hat, x) = 1 - exp(-||x_hat - x||^2 / gamma^2)  (gamma default 0.08 sqrt(n), n = entries per sample)",
    domains={"gamma": Maybe(POSITIVE)},
)
def proximal_matching_loss(pred: torch.Tensor, target: torch.Tensor, *, gamma: float | None = None,
                           sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Proximal matching: one minus a Gaussian bump of the reconstruction error.

    .. math:: \\ell_{PM}(\\hat x, x; \\gamma) = 1 - \\exp\\Big(-\\frac{\\lVert \\hat x - x\\rVert_2^2}{\\gamma^2}\\Big)

    per sample (the norm over every non-batch dimension of ``pred`` and ``target``, same shape ``(N, *)``).
    As ``gamma -> 0`` the loss tends to the 0-1 loss, so the minimiser of its expectation tends to the
    mode of ``p(x | y)`` (the MAP denoiser, i.e. the proximal operator of ``-log p``), where the squared
    error would give the mean and the absolute error the median: the paper's reason for it. The authors
    train a learned proximal network with it after an L1 warm-up, halving ``gamma`` over 4 stages down
    to ``gamma_min = 0.08 sqrt(n)`` (``n`` = entries per sample; :func:`proximal_matching_gamma`).
    ``gamma=None`` (default) takes that final width; ``gamma > 0``. Bounded in ``[0, 1)``; the gradient
    ``2 (x_hat - x)/gamma^2 exp(-d^2/gamma^2)`` vanishes far from the target (far errors are ignored, not
    pulled in). The authors' ``ExpDiracSrgt`` (``lpn/utils/utils.py``); a positive factor on the
    exponential (as a normalised Gaussian would carry) changes no minimiser.

    Paper: Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems",
    2023, arXiv:2310.14344.
    """
    check_floating("pred", pred)
    check_floating("target", target)
    if pred.dim() < 1:
        raise fail("pred", "a batch of predictions (N, *)", "a 0-d tensor")
    check_same_shape("target", target, "pred", pred)
    n = max(math.prod(pred.shape[1:]), 1)
    g = GAMMA_PER_SQRT_DIM * math.sqrt(n) if gamma is None else float(gamma)
    d2 = (pred - target.to(pred.dtype)).reshape(pred.shape[0], -1).square().sum(-1)
    per = -torch.expm1(-d2 / (g * g))
    return finish(per, reduction, sample_weight=sample_weight)


def proximal_matching_gamma(step: int, num_steps: int, *, dim: int, num_stages: int = 4,
                            gamma_min: float | None = None) -> float:
    """The authors' width schedule for :func:`proximal_matching_loss` (``lpn/utils/utils.py``,
    ``get_loss_hparams_and_lr``): ``num_steps`` proximal-matching steps in ``num_stages`` equal stages,
    ``gamma = gamma_min 2^(num_stages - 1 - stage)``, ``gamma_min = 0.08 sqrt(dim)`` by default (``dim`` =
    entries per sample). ``step`` counts from the start of the proximal-matching phase (the authors first
    pretrain with the L1 loss)."""
    if num_stages < 1 or num_steps < num_stages:
        raise fail("num_steps", f"at least num_stages ({num_stages}) steps", repr(num_steps))
    if dim < 1:
        raise fail("dim", "a positive number of entries per sample", repr(dim))
    g_min = GAMMA_PER_SQRT_DIM * math.sqrt(dim) if gamma_min is None else float(gamma_min)
    stage = min(step // (num_steps // num_stages), num_stages - 1)
    return g_min * 2 ** (num_stages - 1 - stage)


ProximalMatchingLoss = proximal_matching_loss.Module
