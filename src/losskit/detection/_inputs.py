"""Input kind of the detection family: two sets of boxes ``(x1, y1, x2, y2)`` of the same shape."""

from __future__ import annotations

import torch

from .._core.registry import BadInput, Example, InputKind

__all__ = ["BOX_PAIRS", "boxes_example"]


def boxes_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6) -> Example:
    """``n`` pairs of boxes, some overlapping and some apart (no coordinate ties)."""
    c1 = 2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    c2 = c1 + 1.5 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    wh1 = 0.5 + 2 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    wh2 = 0.5 + 2 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    b1 = torch.cat([c1 - wh1 / 2, c1 + wh1 / 2], 1)
    b2 = torch.cat([c2 - wh2 / 2, c2 + wh2 / 2], 1)
    return Example({"boxes1": b1.to(dtype), "boxes2": b2.to(dtype)}, grad=("boxes1", "boxes2"))


def _swap(b: torch.Tensor, i: int, j: int) -> torch.Tensor:
    b = b.clone()
    b[0, [i, j]] = b[0, [j, i]]
    return b


def _bad(ex: Example) -> list[BadInput]:
    b1, b2 = ex.inputs["boxes1"], ex.inputs["boxes2"]
    return [
        BadInput("x2 < x1 in boxes1", ex.replace({"boxes1": _swap(b1, 0, 2)}), "boxes1"),
        BadInput("y2 < y1 in boxes2", ex.replace({"boxes2": _swap(b2, 1, 3)}), "boxes2"),
        BadInput("boxes of 3 coordinates", ex.replace({"boxes1": b1[:, :3], "boxes2": b2[:, :3]}), "boxes1"),
        BadInput("boxes2 of another shape", ex.replace({"boxes2": b2[:-1]}), "boxes2"),
        BadInput("a single box without a batch axis", ex.replace({"boxes1": b1[0], "boxes2": b2[0]}), "boxes1"),
        BadInput("boolean boxes", ex.replace({"boxes2": b2 > 0}), "boxes2"),
    ]


BOX_PAIRS = InputKind(
    "box pairs",
    "boxes1 and boxes2 of the same shape (N, 4) or (N, *, 4), corners (x1, y1, x2, y2) with x1 <= x2, y1 <= y2",
    bad_inputs=_bad,
    extreme=lambda ex: ex.map_floats(lambda x: (x * 1e4).float()),
)
