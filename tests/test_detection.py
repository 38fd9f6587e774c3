"""Detection family (issue 19): GIoU, DIoU, CIoU box losses; torchvision agreement is in
tests/oracles/test_detection_oracles.py."""

import math

import pytest
import torch

import losskit
from losskit import LossInputError

LOSSES = [losskit.giou_loss, losskit.diou_loss, losskit.ciou_loss]


def _box(*xs):
    return torch.tensor([xs], dtype=torch.float64)


@pytest.mark.parametrize("fn", LOSSES, ids=["giou", "diou", "ciou"])
def test_identical_boxes_give_zero_and_symmetry(fn):
    b = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 4.0, 5.0]], dtype=torch.float64)
    assert fn(b, b.clone(), reduction="none").abs().max() < 1e-6
    g = torch.Generator().manual_seed(0)
    c = b + 0.3 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fn(b, c, reduction="none"), fn(c, b, reduction="none"))


def test_closed_forms():
    a, b = _box(0, 0, 2, 2), _box(1, 0, 3, 2)  # IoU = 2 / 6, enclosing box = union
    torch.testing.assert_close(losskit.giou_loss(a, b, eps=1e-300), torch.tensor(1 - 1 / 3, dtype=torch.float64))
    # DIoU: centres 1 apart, enclosing diagonal^2 = 9 + 4
    torch.testing.assert_close(losskit.diou_loss(a, b, eps=1e-300),
                               torch.tensor(1 - 1 / 3 + 1 / 13, dtype=torch.float64))
    # same aspect ratio: CIoU = DIoU
    torch.testing.assert_close(losskit.ciou_loss(a, b), losskit.diou_loss(a, b))
    # far apart boxes: GIoU -> 2, DIoU -> 2
    far = _box(1e3, 1e3, 1e3 + 2, 1e3 + 2)
    assert 1.99 < losskit.giou_loss(a, far) < 2
    assert 1.99 < losskit.diou_loss(a, far) < 2
    # CIoU's aspect term: a 2x1 box against a 1x2 box with the same centre
    w, h = _box(0, 0.5, 2, 1.5), _box(0.5, 0, 1.5, 2)
    v = 4 / math.pi ** 2 * (math.atan(0.5) - math.atan(2)) ** 2
    iou = 1 / 3
    torch.testing.assert_close(losskit.ciou_loss(w, h, eps=1e-300),
                               torch.tensor(1 - iou + v * v / (1 - iou + v), dtype=torch.float64))


def test_ciou_gradient_holds_alpha_constant():
    g = torch.Generator().manual_seed(1)
    b1 = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.5, 2.0, 3.0]], dtype=torch.float64)
    b2 = b1 + 0.4 * torch.rand(2, 4, generator=g, dtype=torch.float64)
    x = b1.clone().requires_grad_(True)
    losskit.ciou_loss(x, b2, reduction="sum").backward()
    # alpha frozen at its value: gradcheck of DIoU + alpha v with alpha a constant
    with torch.no_grad():
        diou = losskit.diou_loss(b1, b2, reduction="none")
        ciou = losskit.ciou_loss(b1, b2, reduction="none")

    def v_of(b):
        w1, h1 = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        w2, h2 = b2[:, 2] - b2[:, 0], b2[:, 3] - b2[:, 1]
        return 4 / math.pi ** 2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2

    alpha = (ciou - diou) / v_of(b1)
    y = b1.clone().requires_grad_(True)
    (losskit.diou_loss(y, b2, reduction="sum") + (alpha * v_of(y)).sum()).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda b: losskit.diou_loss(b, b2, reduction="none") + alpha * v_of(b),
                                    (b1.clone().requires_grad_(True),))


@pytest.mark.parametrize("fn", LOSSES, ids=["giou", "diou", "ciou"])
def test_malformed_boxes_raise_naming_the_argument(fn):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    bad = good.clone()
    bad[1, 3] = -1.0  # y2 < y1
    with pytest.raises(LossInputError, match=r"^boxes2: .*y1 .*box 1 = \[0.0, 0.0, 2.0, -1.0\]"):
        fn(good, bad)
    with pytest.raises(LossInputError, match="^boxes1:"):
        fn(good[:, :3], good[:, :3])
    with pytest.raises(LossInputError, match="^boxes2:"):
        fn(good, good[:1])
    with pytest.raises(LossInputError, match="^eps:"):
        fn(good, good, eps=0.0)


def test_zero_size_boxes_giou_diou_accept_ciou_refuses():
    a = _box(0, 0, 0, 1)  # zero width
    b = _box(0, 0, 1, 1)
    for fn in (losskit.giou_loss, losskit.diou_loss):
        x = a.clone().requires_grad_(True)
        loss = fn(x, b)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    with pytest.raises(LossInputError, match="^boxes1: .*positive width and height"):
        losskit.ciou_loss(a, b)


def test_integer_and_half_boxes():
    a = torch.tensor([[0, 0, 4, 4], [2, 2, 6, 8]])
    b = torch.tensor([[1, 1, 5, 3], [2, 3, 6, 7]])
    for fn in LOSSES:
        out = fn(a, b)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, fn(a.float(), b.float()))
        torch.testing.assert_close(fn(a.half(), b.double()), fn(a.double(), b.double()))
        h = fn(a.to(torch.bfloat16), b.to(torch.bfloat16))
        assert h.dtype == torch.float32


@pytest.mark.parametrize("fn", LOSSES, ids=["giou", "diou", "ciou"])
def test_huge_coordinates_stay_finite(fn):
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]]) * 1e25
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]]) * 1e25
    x = a.clone().requires_grad_(True)
    loss = fn(x, b)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss, fn(a / 1e25, b / 1e25), rtol=1e-5, atol=1e-6)


def test_module_forms_and_sample_weight():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b1 = torch.cat([c - 1, c + 1], 1)
    b2 = b1 + 0.2 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    for fn, cls in zip(LOSSES, (losskit.GIoULoss, losskit.DIoULoss, losskit.CIoULoss)):
        m = cls(reduction="sum", eps=1e-6)
        torch.testing.assert_close(m(b1, b2), fn(b1, b2, reduction="sum", eps=1e-6))
        none = fn(b1, b2, reduction="none")
        torch.testing.assert_close(fn(b1, b2, sample_weight=w), (w * none).sum() / w.sum())
    assert losskit.get("giou_loss").family == "detection"
