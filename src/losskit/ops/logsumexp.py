"""Log-sum-exp over a mask."""

from __future__ import annotations

import torch

__all__ = ["masked_logsumexp"]


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log sum exp x`` over ``mask`` along ``dim``; ``-inf`` (with zero gradient) where the mask is empty."""
    neg_inf = x.new_full((), float("-inf"))
    empty = ~mask.any(dim, keepdim=True)
    xm = torch.where(mask, x, neg_inf)
    xm = torch.where(empty, x.new_zeros(()), xm)  # all-empty rows: finite placeholder, no NaN grads
    out = torch.logsumexp(xm, dim=dim, keepdim=True)
    return torch.where(empty, neg_inf, out).squeeze(dim)
