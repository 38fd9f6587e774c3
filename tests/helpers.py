"""Seeded float64 inputs shared by the family test modules (pytest puts tests/ on sys.path)."""

import numpy as np
import torch


def randn64(*shape, seed=0, scale=1.0, shift=0.0):
    """``scale * N(0, 1) + shift`` in float64 from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=torch.float64) + shift


def simplex64(*shape, seed=0):
    """Random points of the simplex along the last dimension, every entry >= 0.1 / (sum) > 0."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.1
    return w / w.sum(-1, keepdim=True)


def unit_rows(x):
    """Rows of ``x`` scaled to unit Euclidean norm, as a float64 NumPy array."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
