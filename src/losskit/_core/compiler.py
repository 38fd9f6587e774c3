"""Running a function eagerly under ``torch.compile`` without importing the compiler at ``import losskit``."""

from __future__ import annotations

import functools

import torch

__all__ = ["eager"]


def eager(fn):
    """``torch.compiler.disable(fn)``, applied at the first call rather than at import.

    The fused passes run eagerly under ``torch.compile`` (a graph break around the chunked pass, which
    has data-dependent chunking and a custom autograd Function). ``torch.compiler.disable`` imports
    ``torch._dynamo`` (about a second), so the decorator defers it to the first call: ``import losskit``
    does not pull in the compiler stack. The behaviour is that of ``torch.compiler.disable`` (also when
    the first call happens while ``torch.compile`` traces: dynamo then meets the disabled function).
    """
    disabled = None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return wrapper
