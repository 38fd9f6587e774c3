"""Shape checks shared by the generative objectives."""

from __future__ import annotations

import torch

from .._core import fail
from .._core.validate import check_floating


def check_pair(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor, time_name: str,
               time: torch.Tensor, *more: tuple[str, torch.Tensor]) -> None:
    """``a (N, ...)``, ``b`` (and ``more``) of the same shape, ``time (N,)``; all floating."""
    check_floating(a_name, a)
    if a.dim() < 1:
        raise fail(a_name, "a batch of shape (N, ...)", "a scalar")
    for name, x in ((b_name, b), *more):
        check_floating(name, x)
        if x.shape != a.shape:
            raise fail(name, f"the shape of {a_name} {tuple(a.shape)}", f"shape {tuple(x.shape)}")
    check_floating(time_name, time)
    if tuple(time.shape) != (a.shape[0],):
        raise fail(time_name, f"one value per sample, shape ({a.shape[0]},)", f"shape {tuple(time.shape)}")


def col(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``c (N,)`` shaped to broadcast against ``like (N, ...)``."""
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(-1) if x.dim() > 1 else x
