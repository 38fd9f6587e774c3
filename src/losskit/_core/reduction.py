"""The one reduction: per-sample losses -> what ``reduction`` asks for, with weights, masks and ranks.

Every objective with per-sample losses ends in :func:`finish`; ``losskit._core.conventions`` states the
rules it implements (``'none'`` returns the weighted per-sample losses, ``'sum'`` their sum, ``'mean'`` the
weighted mean over the counted samples, an empty denominator gives 0 with zero gradient).
"""

from __future__ import annotations

import torch

from . import distributed as D
from .errors import fail
from .validate import check_sample_weight

__all__ = ["REDUCTIONS", "check_reduction", "reduce", "finish"]

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise fail("reduction", "one of 'mean', 'sum', 'none'", repr(reduction))
    return reduction


def _safe_div(total: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    # An empty denominator (all ignored, or all weights 0) gives 0 with zero gradient, not NaN.
    return total / torch.where(denom == 0, denom.new_ones(()), denom)


def reduce(
    loss: torch.Tensor,
    reduction: str,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply already-validated weights, a validity mask and the reduction to per-sample losses.

    ``weight`` and ``mask`` broadcast against ``loss``. Masked-out entries are replaced by an exact 0
    (``torch.where``, so a NaN or inf there cannot leak into the value or the gradient). Objectives call
    :func:`finish`, which validates ``sample_weight`` first.
    """
    check_reduction(reduction)
    if mask is not None:
        loss = torch.where(mask, loss, loss.new_zeros(()))
    if weight is not None:
        weight = weight.to(loss.dtype)
        if mask is not None:
            weight = torch.where(mask, weight, weight.new_zeros(()))
        weighted = loss * weight
    else:
        weighted = loss
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    if weight is not None:
        denom = weight.expand_as(loss).sum() if weight.shape != loss.shape else weight.sum()
    elif mask is not None:
        denom = mask.expand_as(loss).sum().to(loss.dtype)
    else:
        return weighted.mean() if weighted.numel() else total
    return _safe_div(total, denom)


def finish(
    loss: torch.Tensor,
    reduction: str,
    *,
    sample_weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    denominator: torch.Tensor | None = None,
    gathered: bool = False,
    group=None,
) -> torch.Tensor:
    """The reduction tail every per-sample objective ends in.

    Args:
        loss: per-sample losses (any shape whose first dimension is the batch).
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``.
        sample_weight: ``(N,)`` or ``loss.shape`` non-negative weights (validated here).
        mask: bool, broadcastable to ``loss`` from the left (e.g. ``(N,)`` for ``(N, T)`` losses): False
            entries contribute an exact 0 and are not counted.
        denominator: per-sample weights that the ``'mean'`` divides by instead of the sample weights,
            torch's class-weight rule (``loss`` already carries ``w[y_i]``; the mean is
            ``sum_i s_i w[y_i] l_i / sum_i s_i w[y_i]`` with sample weights ``s``).
        gathered: the losses are this rank's share of a batch gathered over ``group``: ``'sum'`` and
            ``'mean'`` are then over every rank's samples (value all-reduced, gradient through the
            local terms, see :mod:`losskit._core.distributed`).
    """
    check_reduction(reduction)
    w = check_sample_weight(sample_weight, loss.shape)
    if mask is not None and mask.dim() < loss.dim():
        mask = mask.reshape(mask.shape + (1,) * (loss.dim() - mask.dim()))
    distributed = gathered and D.is_distributed(group) and reduction != "none"
    if denominator is None and not distributed:
        return reduce(loss, reduction, weight=w, mask=mask)
    if reduction != "mean":
        total = reduce(loss, reduction, weight=w, mask=mask)
        return D.global_value(total, group) if distributed else total
    total = reduce(loss, "sum", weight=w, mask=mask)
    if denominator is not None:
        d = denominator.to(loss.dtype)
        if w is not None:
            d = d * w.to(loss.dtype)
    elif w is not None:
        d = w.to(loss.dtype)
    else:
        d = torch.ones((), dtype=loss.dtype, device=loss.device)
    d = d.expand_as(loss)
    if mask is not None:
        d = torch.where(mask.expand_as(loss), d, d.new_zeros(()))
    denom = d.sum()
    if distributed:
        denom = D.global_sum(denom.detach(), group)
        return D.global_value(_safe_div(total, denom), group)
    return _safe_div(total, denom)
