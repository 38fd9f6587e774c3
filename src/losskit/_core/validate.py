"""Input checks shared by every objective. Each raises :class:`LossInputError` naming the argument.

Shape and dtype checks always run (they are free). Value checks (NaN/Inf, label ranges,
probabilities summing to one) run while :func:`losskit.validation_enabled` is true.
"""

from __future__ import annotations

import torch

from .conventions import validation_enabled
from .errors import fail

__all__ = [
    "describe",
    "check_tensor",
    "check_finite",
    "check_floating",
    "check_nonempty",
    "check_shape",
    "check_same_shape",
    "check_batch",
    "check_labels",
    "check_probabilities",
    "check_sample_weight",
    "check_class_weight",
    "check_positive",
    "check_in_range",
]


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"


def _first_position(bad: torch.Tensor) -> str:
    idx = bad.nonzero()[0].tolist()
    return str(idx[0]) if len(idx) == 1 else str(tuple(idx))


def check_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise fail(name, "a torch.Tensor", describe(x))
    return x


def check_floating(name: str, x) -> torch.Tensor:
    check_tensor(name, x)
    if not x.is_floating_point():
        raise fail(name, "a floating-point tensor", describe(x))
    return x


def check_nonempty(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:
        raise fail(name, "a non-empty batch", f"shape {tuple(x.shape)} with no elements")
    return x


def check_finite(name: str, x: torch.Tensor, *, allow_neg_inf: bool = False) -> torch.Tensor:
    """NaN and +inf always fail; -inf fails unless ``allow_neg_inf`` (logits / log-probabilities)."""
    if not validation_enabled() or not x.is_floating_point():
        return x
    bad = torch.isnan(x)
    bad = bad | (x == float("inf")) if allow_neg_inf else bad | torch.isinf(x)
    if bool(bad.any()):
        value = x[tuple(bad.nonzero()[0].tolist())].item()
        allowed = "finite values (or -inf to mask)" if allow_neg_inf else "finite values"
        raise fail(name, allowed, f"{value} at position {_first_position(bad)}")
    return x


def check_shape(name: str, x: torch.Tensor, shape: tuple, what: str | None = None) -> torch.Tensor:
    if tuple(x.shape) != tuple(shape):
        raise fail(name, what or f"shape {tuple(shape)}", f"shape {tuple(x.shape)}")
    return x


def check_same_shape(name: str, x: torch.Tensor, other_name: str, other: torch.Tensor) -> torch.Tensor:
    if x.shape != other.shape:
        raise fail(name, f"the shape of {other_name} {tuple(other.shape)}", f"shape {tuple(x.shape)}")
    return x


def check_batch(name: str, x: torch.Tensor, n: int, ref: str) -> torch.Tensor:
    if x.dim() == 0 or x.shape[0] != n:
        raise fail(name, f"a batch of {n} (as {ref})", f"shape {tuple(x.shape)}")
    return x


def check_labels(name: str, target: torch.Tensor, num_classes: int, ignore_index: int | None = None):
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise fail(name, "integer class indices", describe(target))
    if not validation_enabled() or target.numel() == 0:
        return target
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        pos = bad.nonzero()[0].tolist()
        value = target[tuple(pos)].item()
        where = str(pos[0]) if len(pos) == 1 else str(tuple(pos))
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise fail(name, f"class indices in [0, {num_classes}){extra}", f"{value} at position {where}")
    return target


def check_probabilities(name: str, p: torch.Tensor, dim: int = -1, atol: float | None = None):
    """Entries in [0, 1] summing to one along ``dim`` (tolerance scaled to the dtype)."""
    check_floating(name, p)
    if not validation_enabled() or p.numel() == 0:
        return p
    check_finite(name, p)
    if bool(((p < 0) | (p > 1)).any()):
        bad = (p < 0) | (p > 1)
        raise fail(name, "probabilities in [0, 1]", f"{p[tuple(bad.nonzero()[0].tolist())].item()} at "
                   f"position {_first_position(bad)}")
    if atol is None:
        # float64: 1e-5 (admits finite-difference perturbations); float32, which includes half inputs already
        # promoted (fp16 rounding of K entries moves the sum by up to ~K * 2^-12): 1e-3 + min(K/4000, 0.01).
        # The mistakes this catches (unnormalised scores, logits passed as probabilities) are far off.
        k = p.shape[dim] if p.dim() else 1
        atol = 1e-5 if p.dtype == torch.float64 else 1e-3 + min(k * 2.5e-4, 1e-2)
    s = p.sum(dim)
    off = (s - 1).abs() > atol
    if bool(off.any()):
        pos = off.nonzero()[0].tolist()
        raise fail(name, f"probabilities summing to 1 along dim {dim}",
                   f"sum {s[tuple(pos)].item():.6g} at batch position {tuple(pos) if len(pos) > 1 else pos[0]}")
    return p


def check_sample_weight(sample_weight, loss_shape: tuple, name: str = "sample_weight"):
    """A sample weight broadcasts from the left: shape (N,) or the per-sample loss shape."""
    if sample_weight is None:
        return None
    check_floating(name, sample_weight)
    shape = tuple(sample_weight.shape)
    loss_shape = tuple(loss_shape)
    if shape != loss_shape and shape != loss_shape[:1]:
        raise fail(name, f"shape {loss_shape} or {loss_shape[:1]} (one weight per sample)", f"shape {shape}")
    check_finite(name, sample_weight)
    if validation_enabled() and bool((sample_weight < 0).any()):
        raise fail(name, "non-negative weights", f"min {sample_weight.min().item():.6g}")
    if shape != loss_shape:
        sample_weight = sample_weight.reshape(shape + (1,) * (len(loss_shape) - 1))
    return sample_weight


def check_class_weight(weight, num_classes: int, name: str = "weight"):
    if weight is None:
        return None
    check_floating(name, weight)
    if tuple(weight.shape) != (num_classes,):
        raise fail(name, f"one weight per class, shape ({num_classes},)", f"shape {tuple(weight.shape)}")
    check_finite(name, weight)
    if validation_enabled() and bool((weight < 0).any()):
        raise fail(name, "non-negative class weights", f"min {weight.min().item():.6g}")
    return weight


def check_positive(name: str, value, *, strict: bool = True):
    ok = value > 0 if strict else value >= 0
    if isinstance(value, torch.Tensor):
        ok = bool(ok.all())
    if not ok:
        raise fail(name, "a positive number" if strict else "a non-negative number", repr(value))
    return value


def check_in_range(name: str, value, lo, hi, *, closed: str = "both"):
    lo_ok = value >= lo if closed in ("both", "left") else value > lo
    hi_ok = value <= hi if closed in ("both", "right") else value < hi
    if not (lo_ok and hi_ok):
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        raise fail(name, f"a value in {lb}{lo}, {hi}{rb}", repr(value))
    return value


def check_unit_interval(name: str, x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (e.g. binary or soft binary targets)."""
    check_floating(name, x)
    check_finite(name, x)
    if validation_enabled() and x.numel() and bool(((x < 0) | (x > 1)).any()):
        raise fail(name, "values in [0, 1]", f"range [{x.min().item():.4g}, {x.max().item():.4g}]")
    return x
