"""Input checks for the transport family (each raises LossInputError naming the argument)."""

from __future__ import annotations

import torch

from .._core.conventions import promote, validation_enabled
from .._core.errors import fail
from .._core.validate import check_finite, check_floating, describe


def _weights(name: str, w, B: int, n: int, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    if w is None:
        return torch.full((B, n), 1.0 / n, dtype=ref.dtype, device=ref.device)
    check_floating(name, w)
    w = promote(w)
    if w.dim() == 1 and B == 1:
        w = w.unsqueeze(0)
    if tuple(w.shape) != (B, n):
        raise fail(name, f"weights of shape {(B, n)} (one per point of {ref_name})", f"shape {tuple(w.shape)}")
    check_finite(name, w)
    if validation_enabled():
        if bool((w < 0).any()):
            raise fail(name, "non-negative weights", f"min {w.min().item():.6g}")
        if bool((w.sum(1) <= 0).any()):
            raise fail(name, "weights with a positive total per problem", "a problem with total weight 0")
    return w.to(ref.dtype)


def _balanced(a: torch.Tensor, b: torch.Tensor) -> None:
    if not validation_enabled():
        return
    sa, sb = a.sum(1), b.sum(1)
    tol = 1e-6 if a.dtype == torch.float64 else 1e-3
    off = (sa - sb).abs() > tol * sa.abs().clamp_min(1)
    if bool(off.any()):
        i = int(off.nonzero()[0])
        raise fail("b", "the same total mass as a (balanced OT; pass rho= for unbalanced OT)",
                   f"total {sb[i].item():.6g} against {sa[i].item():.6g} in problem {i}")


def _points(name: str, x) -> torch.Tensor:
    check_floating(name, x)
    x = promote(x)
    if x.dim() not in (2, 3):
        raise fail(name, "points of shape (n, d) or a batch (B, n, d)", describe(x))
    if x.shape[-2] == 0:
        raise fail(name, "at least one point", f"shape {tuple(x.shape)}")
    check_finite(name, x)
    return x


def samples(x, y, a=None, b=None, *, balanced: bool = True):
    """Batched ``x (B, n, d)``, ``y (B, m, d)``, ``a (B, n)``, ``b (B, m)``."""
    x = _points("x", x)
    y = _points("y", y)
    if x.dim() != y.dim():
        raise fail("y", f"a {x.dim()}-d tensor like x", describe(y))
    if x.dim() == 2:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if y.shape[0] != x.shape[0]:
        raise fail("y", f"a batch of {x.shape[0]} problems (as x)", f"shape {tuple(y.shape)}")
    if y.shape[-1] != x.shape[-1]:
        raise fail("y", f"points of dimension {x.shape[-1]} (as x)", f"shape {tuple(y.shape)}")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    B, n, m = x.shape[0], x.shape[1], y.shape[1]
    a = _weights("a", a, B, n, x, "x")
    b = _weights("b", b, B, m, x, "y")
    if balanced:
        _balanced(a, b)
    return x, y, a, b


def matrix(C, a=None, b=None, *, balanced: bool = True):
    check_floating("C", C)
    C = promote(C)
    if C.dim() == 2:
        C = C.unsqueeze(0)
    if C.dim() != 3 or C.shape[1] == 0 or C.shape[2] == 0:
        raise fail("C", "a cost matrix (n, m) or a batch (B, n, m)", describe(C))
    check_finite("C", C)
    B, n, m = C.shape
    a = _weights("a", a, B, n, C, "the rows of C")
    b = _weights("b", b, B, m, C, "the columns of C")
    if balanced:
        _balanced(a, b)
    return C, a, b
