"""IoU-based bounding-box regression losses: GIoU, DIoU and CIoU, as ``torchvision.ops`` computes them.

Boxes are corners ``(x1, y1, x2, y2)``, ``boxes1`` and ``boxes2`` of the same shape ``(N, 4)`` or
``(N, *, 4)``; the per-sample loss has shape ``(N, *)`` (one value per box pair). The three losses are
symmetric in their arguments (as torchvision says, ``boxes1`` and ``boxes2`` are interchangeable;
by convention the prediction first). Formulas, ``eps`` placement and the masked intersection are
torchvision's (``torchvision/ops/giou_loss.py``, ``diou_loss.py``, ``ciou_loss.py``), checked to 1e-12
in float64 against a port of them (``tests/oracles/test_detection_oracles.py``).

Where losskit differs from torchvision, on purpose:

* **malformed boxes.** torchvision documents ``x1 < x2`` and ``y1 < y2`` but checks nothing: a box with
  ``x2 < x1`` has a negative area and gives a silently wrong loss (an early version asserted; the
  assertion was removed). losskit raises :class:`~losskit.LossInputError` naming the argument and the
  first bad box (``losskit.set_validation`` governs the check, as every value check). Zero-width or
  zero-height boxes are accepted by GIoU and DIoU (``eps`` keeps them finite) and refused by CIoU, whose
  aspect term ``atan(w / h)`` has no value or gradient there.
* **reduction.** losskit's default is ``'mean'`` (torchvision's is ``'none'``); ``sample_weight`` weights
  the box pairs. An empty batch raises (torchvision returns 0), a losskit convention.
* **dtypes.** float16 / bfloat16 boxes are computed in float32 and integer boxes are converted to float32
  (or the other argument's float dtype), as torchvision's ``_upcast_non_float``; mixed float dtypes are
  promoted.
* **overflow.** Boxes with coordinates beyond ``sqrt(finfo.max) / 16`` (about 1e18 in float32) are
  divided by their largest coordinate before the areas are formed; the losses are scale-invariant up to
  ``eps``, and no box of ordinary size is touched (the values are bit-identical to torchvision's there).
"""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE
from .._core.validate import require
from ._inputs import BOX_PAIRS, boxes_example

__all__ = ["giou_loss", "GIoULoss", "diou_loss", "DIoULoss", "ciou_loss", "CIoULoss"]

GIOU_PAPER = Paper("Generalized Intersection over Union: A Metric and A Loss for Bounding Box Regression", 2019,
                   "1902.09630", "Rezatofighi, Tsoi, Gwak, Sadeghian, Reid, Savarese")
DIOU_PAPER = Paper("Distance-IoU Loss: Faster and Better Learning for Bounding Box Regression", 2020,
                   "1911.08287", "Zheng, Wang, Liu, Li, Ye, Ren")

_BOX = dict(family="detection", input_kind=BOX_PAIRS, example=boxes_example, properties={"nonnegative"},
            domains={"eps": POSITIVE})


def _as_float(name: str, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype == torch.bool or x.is_complex():
        raise fail(name, "a tensor of box coordinates (floating or integer)",
                   f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__)
    if x.is_floating_point():
        return x
    return x.to(other.dtype if isinstance(other, torch.Tensor) and other.is_floating_point() else torch.float32)


def _check_boxes(boxes1: torch.Tensor, boxes2: torch.Tensor, strict: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Float boxes of the same shape ``(N, *, 4)`` with ordered corners (strictly, for ``strict``)."""
    b1 = _as_float("boxes1", boxes1, boxes2)
    b2 = _as_float("boxes2", boxes2, boxes1)
    if b1.dim() < 2 or b1.shape[-1] != 4:
        raise fail("boxes1", "boxes (N, 4) or (N, *, 4) as (x1, y1, x2, y2) (a single box: boxes[None])",
                   f"shape {tuple(b1.shape)}")
    if b2.shape != b1.shape:
        raise fail("boxes2", f"the shape of boxes1 {tuple(b1.shape)}", f"shape {tuple(b2.shape)}")
    if b1.dtype != b2.dtype:
        common = torch.promote_types(b1.dtype, b2.dtype)
        b1, b2 = b1.to(common), b2.to(common)
    order = "x1 < x2 and y1 < y2 (boxes of positive width and height)" if strict else "x1 <= x2 and y1 <= y2"
    for name, b in (("boxes1", b1), ("boxes2", b2)):
        def bad(b=b):
            w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
            return ((w <= 0) | (h <= 0)).any() if strict else ((w < 0) | (h < 0)).any()

        def got(b=b):
            w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
            m = ((w <= 0) | (h <= 0)) if strict else ((w < 0) | (h < 0))
            i = tuple(m.nonzero()[0].tolist())
            return f"box {i[0] if len(i) == 1 else i} = {[round(v, 6) for v in b[i].tolist()]}"

        require(name, b, bad, f"boxes (x1, y1, x2, y2) with {order}", got)
    return b1, b2


def _rescale(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide the pairs with coordinates beyond ``sqrt(finfo.max) / 16`` by their largest coordinate (so the
    areas and squared distances stay finite); every other pair is divided by exactly 1."""
    big = math.sqrt(torch.finfo(b1.dtype).max) / 16
    m = torch.maximum(b1.detach().abs().amax(-1), b2.detach().abs().amax(-1))
    s = torch.where(m > big, m, torch.ones_like(m)).unsqueeze(-1)
    return b1 / s, b2 / s


def _inter_union(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``_loss_inter_union``: intersection (0 where the boxes do not overlap) and union."""
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlap = (ykis2 > ykis1) & (xkis2 > xkis1)
    inter = torch.where(overlap, (xkis2 - xkis1) * (ykis2 - ykis1), torch.zeros_like(x1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def _enclosing(b1: torch.Tensor, b2: torch.Tensor):
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    return torch.min(x1, x1g), torch.min(y1, y1g), torch.max(x2, x2g), torch.max(y2, y2g)


def _diou_iou(b1: torch.Tensor, b2: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``_diou_iou_loss``: (DIoU loss, IoU)."""
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = _enclosing(b1, b2)
    diagonal_sq = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    centers_sq = ((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2 + ((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2
    return 1 - iou + centers_sq / diagonal_sq, iou


@objective("giou_loss", paper=GIOU_PAPER, module_name="GIoULoss",
           formula="1 - IoU + (|C| - |A u B|) / |C|,  C the smallest box enclosing A and B; "
                   "IoU = |A n B| / (|A u B| + eps), |C| + eps in the second denominator", **_BOX)
def giou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, eps: float = 1e-7,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Generalized IoU loss: IoU loss plus a penalty for the empty part of the smallest enclosing box,
    so that boxes that do not overlap still get a gradient.

    .. math:: \\ell = 1 - \\frac{|A \\cap B|}{|A \\cup B| + \\epsilon}
              + \\frac{|C| - |A \\cup B|}{|C| + \\epsilon}

    with ``C`` the smallest axis-aligned box enclosing ``A`` and ``B``; ``0 <= ℓ < 2``. As
    ``torchvision.ops.generalized_box_iou_loss`` (itself fvcore's): the same ``eps = 1e-7`` placement;
    see the module docstring for what losskit adds (malformed boxes raise, default ``'mean'``).

    Paper: Rezatofighi, Tsoi, Gwak, Sadeghian, Reid, Savarese, "Generalized Intersection over Union: A
    Metric and A Loss for Bounding Box Regression", CVPR 2019, arXiv:1902.09630. Code compared with:
    pytorch/vision (``torchvision/ops/giou_loss.py``).
    """
    b1, b2 = _rescale(*_check_boxes(boxes1, boxes2, strict=False))
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = _enclosing(b1, b2)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    per = 1 - (iou - (area_c - union) / (area_c + eps))
    return finish(per, reduction, sample_weight=sample_weight)


@objective("diou_loss", paper=DIOU_PAPER, module_name="DIoULoss",
           formula="1 - IoU + rho^2(b, b_gt) / (c^2 + eps),  rho the distance between the box centres, c the "
                   "diagonal of the smallest enclosing box; IoU = |A n B| / (|A u B| + eps)", **_BOX)
def diou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, eps: float = 1e-7,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Distance-IoU loss: IoU loss plus the squared distance between the box centres, normalised by the
    squared diagonal of the smallest enclosing box.

    .. math:: \\ell = 1 - \\frac{|A \\cap B|}{|A \\cup B| + \\epsilon}
              + \\frac{\\rho^2(\\mathbf b, \\mathbf b^{gt})}{c^2 + \\epsilon}

    ``0 <= ℓ < 2``; for boxes with the same centre it is the IoU loss. As
    ``torchvision.ops.distance_box_iou_loss`` (itself detectron2's); see the module docstring for what
    losskit adds.

    Paper: Zheng, Wang, Liu, Li, Ye, Ren, "Distance-IoU Loss: Faster and Better Learning for Bounding Box
    Regression", AAAI 2020, arXiv:1911.08287. Code compared with: pytorch/vision
    (``torchvision/ops/diou_loss.py``).
    """
    b1, b2 = _rescale(*_check_boxes(boxes1, boxes2, strict=False))
    per, _ = _diou_iou(b1, b2, eps)
    return finish(per, reduction, sample_weight=sample_weight)


@objective("ciou_loss", paper=DIOU_PAPER, module_name="CIoULoss",
           formula="DIoU loss + alpha v,  v = 4 / pi^2 (atan(w_gt / h_gt) - atan(w / h))^2, "
                   "alpha = v / (1 - IoU + v + eps) treated as a constant (no gradient)",
           gradcheck=False, skip_reasons={"gradcheck": "alpha is held constant in the backward pass (the paper's and "
                                                       "torchvision's choice), so the gradient is not the derivative "
                                                       "of the value; tests/test_detection.py checks it against "
                                                       "gradcheck with alpha frozen"}, **_BOX)
def ciou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, eps: float = 1e-7,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Complete-IoU loss: the DIoU loss plus an aspect-ratio consistency term.

    .. math:: \\ell = \\ell_{DIoU} + \\alpha v, \\qquad
              v = \\frac{4}{\\pi^2}\\Big(\\arctan\\frac{w^{gt}}{h^{gt}} - \\arctan\\frac{w}{h}\\Big)^2,
              \\qquad \\alpha = \\frac{v}{1 - \\mathrm{IoU} + v + \\epsilon}

    ``alpha`` is computed without gradient (``torch.no_grad()``, as torchvision and the authors' code).
    As ``torchvision.ops.complete_box_iou_loss``, with one difference: torchvision's function uses its
    ``eps`` only in ``alpha`` (its IoU and enclosing-diagonal terms always use 1e-7), losskit uses ``eps``
    in all three; the two agree at the default ``eps = 1e-7``. Both boxes must have positive width and
    height (``atan(w / h)``); see the module docstring for the other conventions.

    Paper: Zheng, Wang, Liu, Li, Ye, Ren, "Distance-IoU Loss: Faster and Better Learning for Bounding Box
    Regression", AAAI 2020, arXiv:1911.08287. Code compared with: pytorch/vision
    (``torchvision/ops/ciou_loss.py``).
    """
    b1, b2 = _rescale(*_check_boxes(boxes1, boxes2, strict=True))
    diou, iou = _diou_iou(b1, b2, eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    v = (4 / (math.pi ** 2)) * torch.pow(torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    per = diou + alpha * v
    return finish(per, reduction, sample_weight=sample_weight)


GIoULoss = giou_loss.Module
DIoULoss = diou_loss.Module
CIoULoss = ciou_loss.Module
