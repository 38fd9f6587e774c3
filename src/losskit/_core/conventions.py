"""The conventions every losskit objective follows, in one place.

Reduction
    ``reduction='none'`` returns the per-sample losses, already multiplied by their weights;
    ``'sum'`` their sum; ``'mean'`` the *weighted* mean ``sum_i w_i l_i / sum_i w_i`` over the
    samples that are not ignored (``w_i = 1`` without weights, so it is the plain mean). This is
    ``torch.nn.functional.cross_entropy``'s rule for class weights, extended to sample weights.

Weights
    ``weight`` keeps its ``torch.nn.functional`` meaning where torch has one (per-class weights of
    shape ``(K,)`` for class-index losses); ``sample_weight`` (shape: the per-sample loss shape, or
    ``(N,)``) weights samples in every objective that has per-sample losses.

ignore_index
    Where targets are class indices, entries equal to ``ignore_index`` (default -100) contribute
    nothing: their ``'none'`` loss is exactly 0 (even if the logits there are NaN or infinite), they do
    not count in the mean's denominator, and they get zero gradient.

Empty denominators
    When every sample is ignored (or all weights are 0), ``'mean'`` returns ``0`` with zero gradient
    instead of torch's ``nan``: a micro-batch of padding must not poison gradient accumulation.
    A batch with no samples at all is an error (:class:`LossInputError`).

Dtype policy
    float16 and bfloat16 inputs are computed in float32 and the loss is returned in **float32**
    (the precision a loss needs for loss scaling and logging). float32 and float64 inputs are
    computed and returned in their own dtype. Gradients flow back to the inputs in their dtype.

NaN / Inf policy
    By default losskit validates values: a NaN or ``+inf`` in an input raises
    :class:`LossInputError` naming the argument. ``-inf`` is accepted in logits and
    log-probabilities (it means probability zero, the usual masking idiom) and is rejected
    elsewhere. Masked positions (``ignore_index``, token masks) never leak into results.
    Value checks cost a device synchronisation; ``losskit.set_validation(False)`` (or the
    context manager ``losskit.validation(False)``) turns them off, shape checks stay on. Value checks
    are skipped while ``torch.compile`` traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import fail

__all__ = [
    "REDUCTIONS",
    "check_reduction",
    "reduce",
    "compute_dtype",
    "promote",
    "set_validation",
    "validation",
    "validation_enabled",
]

REDUCTIONS = ("mean", "sum", "none")
_HALF = (torch.float16, torch.bfloat16)
_state = {"validate": True}


def set_validation(enabled: bool) -> None:
    """Turn value checks (NaN/Inf, label range, probabilities summing to one) on or off globally."""
    _state["validate"] = bool(enabled)


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_validation`."""
    old = _state["validate"]
    _state["validate"] = bool(enabled)
    try:
        yield
    finally:
        _state["validate"] = old


def validation_enabled() -> bool:
    """Whether value checks run now (never while ``torch.compile`` traces)."""
    if not _state["validate"]:
        return False
    try:
        return not torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - very old torch
        return True


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise fail("reduction", "one of 'mean', 'sum', 'none'", repr(reduction))
    return reduction


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losskit computes in for inputs of ``dtype`` (the dtype policy)."""
    return torch.float32 if dtype in _HALF else dtype


def promote(x):
    """Half-precision floating tensors become float32; everything else is returned unchanged."""
    if isinstance(x, torch.Tensor) and x.dtype in _HALF:
        return x.float()
    return x


def reduce(
    loss: torch.Tensor,
    reduction: str,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply weights, a validity mask and the reduction to per-sample losses.

    ``weight`` and ``mask`` broadcast against ``loss``. Masked-out entries are replaced by an exact 0
    (``torch.where``, so a NaN or inf there cannot leak into the value or the gradient).
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
    # An empty denominator (all ignored, or all weights 0) gives 0 with zero gradient, not NaN.
    return total / torch.where(denom == 0, denom.new_ones(()), denom)
