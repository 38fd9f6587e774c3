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

Hyper-parameters
    Every option has a declared domain (:mod:`losskit._core.domains`); a value outside it raises
    :class:`LossInputError` naming the option, the value and the domain. Python-number options are
    checked on every call (that costs nothing); tensor-valued options like tensor inputs, below.

Validation modes (``losskit.set_validation``)
    ``True`` (the default): value checks run. On CPU they raise :class:`LossInputError` naming the
    argument and the first offending position (reading a CPU tensor needs no synchronisation). On an
    accelerator they are device-side assertions (``torch._assert_async``) whose message names the
    argument and what was expected: no device-to-host synchronisation, so validation does not stall
    the stream; a failure surfaces as a device-side assertion at the next synchronisation.
    ``"debug"``: the CPU behaviour everywhere (a synchronising check, the rich error with the position).
    ``False``: no value checks; shape, dtype and Python-number checks stay on.
    Value checks are skipped for tensors without data (``meta`` tensors, FakeTensors), inside
    ``torch.func`` transforms (``vmap``, ``grad``) and while ``torch.compile`` traces, so
    ``fullgraph=True`` compiles and per-sample gradients are not broken by them.

Non-finite inputs
    NaN and ``+inf`` in any input raise :class:`LossInputError` naming the argument (validation on).
    ``-inf`` is accepted in logits and log-probabilities, where it means probability zero (the usual
    masking idiom), and rejected elsewhere. A row whose every entry is ``-inf`` has no distribution:
    where the objective declares the class dimension of such an input, a fully masked row raises
    :class:`LossInputError` unless the sample it belongs to is ignored (``ignore_index`` / mask), in which
    case it contributes exactly 0. Finite inputs of any magnitude the dtype holds (e.g. float32 logits of
    1e30) give a finite loss and finite gradients, or a :class:`LossInputError` where the objective
    cannot (documented per objective). With validation off, non-finite inputs give unspecified results.
    Masked positions (``ignore_index``, token masks) never leak into results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import fail

__all__ = [
    "compute_dtype",
    "promote",
    "set_validation",
    "validation",
    "validation_enabled",
    "validation_mode",
    "value_check_mode",
    "has_values",
]

HALF_DTYPES = (torch.float16, torch.bfloat16)
_HALF = HALF_DTYPES
_state = {"validate": "on"}
_MODES = {True: "on", False: "off", "on": "on", "off": "off", "debug": "debug"}


def _mode(enabled) -> str:
    try:
        return _MODES[enabled]
    except (KeyError, TypeError):
        raise fail("enabled", "True, False or 'debug'", repr(enabled)) from None


def set_validation(enabled: bool | str) -> None:
    """Value checks (NaN/Inf, label range, probabilities summing to one, tensor hyper-parameters).

    ``True`` (default): on, without host synchronisation on accelerators; ``"debug"``: synchronising
    checks with the offending position everywhere; ``False``: off. See the module docstring.
    """
    _state["validate"] = _mode(enabled)


def validation_mode() -> str:
    """``'on'``, ``'debug'`` or ``'off'``."""
    return _state["validate"]


@contextlib.contextmanager
def validation(enabled: bool | str) -> Iterator[None]:
    """Context manager form of :func:`set_validation`."""
    old = _state["validate"]
    _state["validate"] = _mode(enabled)
    try:
        yield
    finally:
        _state["validate"] = old


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - very old torch
        return False


def validation_enabled() -> bool:
    """Whether value checks run now (never while ``torch.compile`` traces)."""
    return _state["validate"] != "off" and not _compiling()


def _has_data(x: torch.Tensor) -> bool:
    if x.is_meta:
        return False
    try:  # torch.func transforms (vmap, grad): values cannot be read on the host inside them
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            return False
    except AttributeError:  # pragma: no cover - torch without functorch
        pass
    if type(x) is torch.Tensor or isinstance(x, torch.nn.Parameter):
        return True
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:  # pragma: no cover
        return True
    return not is_fake(x)


def has_values(x: torch.Tensor) -> bool:
    """Whether reading ``x``'s values is possible now (not meta, not a FakeTensor, not while tracing)."""
    return not _compiling() and _has_data(x)


def value_check_mode(x: torch.Tensor) -> str | None:
    """How to check the values of ``x`` now: ``'eager'`` (raise with details), ``'async'`` (a device-side
    assertion, no host sync) or ``None`` (skip: validation off, tracing, or a tensor without data)."""
    mode = _state["validate"]
    if mode == "off" or _compiling() or not _has_data(x):
        return None
    if mode == "debug" or x.device.type == "cpu":
        return "eager"
    return "async"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losskit computes in for inputs of ``dtype`` (the dtype policy)."""
    return torch.float32 if dtype in _HALF else dtype


def promote(x):
    """Half-precision floating tensors become float32; everything else is returned unchanged."""
    if isinstance(x, torch.Tensor) and x.dtype in _HALF:
        return x.float()
    return x
