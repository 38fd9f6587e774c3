"""Input checks shared by every objective. Each raises :class:`LossInputError` naming the argument.

Shape and dtype checks always run (they are free). Value checks (NaN/Inf, label ranges,
probabilities summing to one) go through :func:`require`, which applies the validation mode
(:mod:`losskit._core.conventions`): a raising check with the offending position on CPU or in debug mode,
a device-side assertion without host synchronisation on accelerators, nothing for tensors without data
(meta, FakeTensor), while tracing, or with validation off. Each check first computes one cheap
reduction (``amax`` / ``aminmax``, one pass over the data); the position is looked for only on failure.
"""

from __future__ import annotations

import torch

from .conventions import validation_enabled, value_check_mode  # noqa: F401  (families import it from here)
from .errors import fail

__all__ = [
    "require",
    "check_rows",
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


def require(name: str, x: torch.Tensor, bad, expected: str, got) -> None:
    """The one value-check primitive. ``bad()`` returns a 0-d bool tensor, true when the values of ``x``
    are invalid; ``got()`` describes what came (called only to build the eager error)."""
    mode = value_check_mode(x)
    if mode is None:
        return
    flag = bad()
    if mode == "async":
        torch._assert_async(~flag, f"{name}: expected {expected} (losskit value check; "
                                   f"losskit.set_validation('debug') reports the position)")
        return
    if bool(flag):
        raise fail(name, expected, got())


def _nonfinite(x: torch.Tensor, allow_neg_inf: bool) -> torch.Tensor:
    if allow_neg_inf:
        return torch.isnan(x) | (x == float("inf"))
    return ~torch.isfinite(x)


def check_finite(name: str, x: torch.Tensor, *, allow_neg_inf: bool = False) -> torch.Tensor:
    """NaN and +inf always fail; -inf fails unless ``allow_neg_inf`` (logits / log-probabilities)."""
    if not x.is_floating_point() or x.numel() == 0:
        return x

    def bad():
        if allow_neg_inf:
            m = x.amax()  # NaN propagates through amax; +inf is the max
            return torch.isnan(m) | (m == float("inf"))
        lo, hi = torch.aminmax(x)
        return ~(torch.isfinite(lo) & torch.isfinite(hi))

    def got():
        b = _nonfinite(x, allow_neg_inf)
        return f"{x[tuple(b.nonzero()[0].tolist())].item()} at position {_first_position(b)}"

    require(name, x, bad, "finite values (or -inf to mask)" if allow_neg_inf else "finite values", got)
    return x


def check_rows(name: str, x: torch.Tensor, dim: int = -1, ignored: torch.Tensor | None = None,
               rowmax: torch.Tensor | None = None) -> torch.Tensor:
    """Logits / log-probabilities along ``dim``: no NaN or +inf, and no row masked entirely (all ``-inf``)
    unless ``ignored`` (bool, the shape of ``x`` without ``dim``) marks that row as not counted.

    One ``amax`` along ``dim`` checks all three (NaN propagates, +inf is the max, a fully masked row's max
    is -inf), so it replaces the generic finiteness check of such an input (register the input as
    ``unchecked``). ``rowmax`` passes that ``amax`` when the caller has it already (one pass, not two).
    """
    if not x.is_floating_point() or x.numel() == 0:
        return x

    def rowmax_():
        m = x.amax(dim) if rowmax is None else rowmax
        if ignored is not None:
            m = torch.where(ignored, m.new_zeros(()), m)
        return m

    def bad():
        return (~torch.isfinite(rowmax_())).any()

    def got():
        m = rowmax_()
        b = ~torch.isfinite(m)
        if torch.isneginf(m[tuple(b.nonzero()[0].tolist())]):
            return f"a row with every entry -inf (fully masked, nothing to predict) at row {_first_position(b)}"
        bx = _nonfinite(x, allow_neg_inf=True)
        if ignored is not None:
            bx = bx & ~ignored.unsqueeze(dim % x.dim())
        return f"{x[tuple(bx.nonzero()[0].tolist())].item()} at position {_first_position(bx)}"

    dim_ = dim % x.dim() if x.dim() else 0
    require(name, x, bad, f"finite values with at least one entry > -inf along dim {dim_} "
                          "(or the row's sample ignored)", got)
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
    """Integer class indices (any integer dtype, as torch) in ``[0, num_classes)`` or ``ignore_index``."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise fail(name, "integer class indices", describe(target))
    if target.numel() == 0:
        return target

    def badmask():
        b = (target < 0) | (target >= num_classes)
        return b & (target != ignore_index) if ignore_index is not None else b

    def got():
        b = badmask()
        return f"{target[tuple(b.nonzero()[0].tolist())].item()} at position {_first_position(b)}"

    extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
    require(name, target, lambda: badmask().any(), f"class indices in [0, {num_classes}){extra}", got)
    return target


def check_probabilities(name: str, p: torch.Tensor, dim: int = -1, atol: float | None = None):
    """Entries in [0, 1] summing to one along ``dim`` (tolerance scaled to the dtype)."""
    check_floating(name, p)
    if p.numel() == 0:
        return p
    if atol is None:
        # float64: 1e-5 (admits finite-difference perturbations); float32, which includes half inputs already
        # promoted (fp16 rounding of K entries moves the sum by up to ~K * 2^-12): 1e-3 + min(K/4000, 0.01).
        # The mistakes this catches (unnormalised scores, logits passed as probabilities) are far off.
        k = p.shape[dim] if p.dim() else 1
        atol = 1e-5 if p.dtype == torch.float64 else 1e-3 + min(k * 2.5e-4, 1e-2)
    mode = value_check_mode(p)
    if mode is None:
        return p
    if mode == "eager":  # all three conditions in one host read; the checks below only name what failed
        lo, hi = torch.aminmax(p.detach())
        dev = (p.detach().sum(dim) - 1).abs().amax()
        mn, mx, d = torch.stack([lo, hi, dev.to(lo.dtype)]).tolist()
        if mn >= 0 and mx <= 1 and d <= atol:  # NaN fails every comparison, +-inf the range
            return p
    check_finite(name, p)

    def out_of_range():
        lo, hi = torch.aminmax(p)
        return (lo < 0) | (hi > 1)

    def got_range():
        b = (p < 0) | (p > 1)
        return f"{p[tuple(b.nonzero()[0].tolist())].item()} at position {_first_position(b)}"

    require(name, p, out_of_range, "probabilities in [0, 1]", got_range)

    def off():
        return (p.sum(dim) - 1).abs() > atol

    def got_sum():
        o = off()
        pos = o.nonzero()[0].tolist()
        return (f"sum {p.sum(dim)[tuple(pos)].item():.6g} at batch position "
                f"{tuple(pos) if len(pos) > 1 else pos[0]}")

    require(name, p, lambda: off().any(), f"probabilities summing to 1 along dim {dim}", got_sum)
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
    check_nonnegative(name, sample_weight, "non-negative weights")
    if shape != loss_shape:
        sample_weight = sample_weight.reshape(shape + (1,) * (len(loss_shape) - 1))
    return sample_weight


def check_class_weight(weight, num_classes: int, name: str = "weight"):
    if weight is None:
        return None
    check_floating(name, weight)
    if tuple(weight.shape) != (num_classes,):
        raise fail(name, f"one weight per class, shape ({num_classes},)", f"shape {tuple(weight.shape)}")
    check_nonnegative(name, weight, "non-negative class weights")
    return weight


def check_nonnegative(name: str, x: torch.Tensor, expected: str = "non-negative finite values"):
    """Finite and >= 0 (weights)."""
    if x.numel() == 0:
        return x
    require(name, x, lambda: (lambda lo, hi: ~torch.isfinite(lo) | ~torch.isfinite(hi) | (lo < 0))(
        *torch.aminmax(x)), expected, lambda: f"range [{x.min().item():.6g}, {x.max().item():.6g}]")
    return x


def check_positive(name: str, value, *, strict: bool = True):
    """A positive (``strict``) or non-negative number, or a tensor of them (a value check for tensors)."""
    expected = "a positive number" if strict else "a non-negative number"
    if isinstance(value, torch.Tensor):
        if value.numel():
            require(name, value, lambda: ~((value > 0) if strict else (value >= 0)).all() | ~torch.isfinite(
                value).all(), expected, lambda: f"min {value.min().item():.6g}")
        return value
    ok = value > 0 if strict else value >= 0
    if not ok or value != value:
        raise fail(name, expected, repr(value))
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
    if x.numel() == 0:
        return x
    require(name, x, lambda: (lambda lo, hi: ~(lo >= 0) | ~(hi <= 1))(*torch.aminmax(x)), "values in [0, 1]",
            lambda: f"range [{x.min().item():.4g}, {x.max().item():.4g}]")
    return x
