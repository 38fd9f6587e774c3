"""Oracle tests (issue 19): giou_loss, diou_loss, ciou_loss against a port of torchvision.ops.

torchvision is not a dependency (nor in the test environment), so its three files are ported here
(``_log_api_usage_once`` dropped). ``tests/test_migration.py`` also compares with torchvision itself
when it is installed.
"""

import pytest
import torch
from oracle_meta import Oracle

import losskit

TV = "pytorch/vision"
GIOU_COMMIT = "90a8f703cd1f83e4cc90f943643a9f03e97cfc0f"
DIOU_COMMIT = "ae5c34625d15e766ef51eb7602ceebf901c3f55b"
CIOU_COMMIT = "28fbd4bfabb8ad621abb833e9f5b23f7a8f8a817"

_COMMON = ("losskit's default reduction is 'mean' (torchvision's 'none'); malformed boxes (x2 < x1 or y2 < y1) "
           "raise LossInputError where torchvision returns a silently wrong value (tested)")

ORACLES = [
    Oracle(objective="giou_loss", repo=TV, path="torchvision/ops/giou_loss.py (generalized_box_iou_loss)",
           commit=GIOU_COMMIT, agreement="1e-12", source="peer",
           differences=_COMMON + ". Later torchvision versions moved the intersection into "
                                 "ops/_utils.py::_loss_inter_union and upcast non-float boxes (same values)"),
    Oracle(objective="diou_loss", repo=TV,
           path="torchvision/ops/diou_loss.py (distance_box_iou_loss, _diou_iou_loss; _loss_inter_union as in "
                "giou_loss.py)", commit=DIOU_COMMIT, agreement="1e-12", source="peer", differences=_COMMON),
    Oracle(objective="ciou_loss", repo=TV, path="torchvision/ops/ciou_loss.py (complete_box_iou_loss)",
           commit=CIOU_COMMIT, agreement="1e-12", source="peer",
           differences=_COMMON + "; torchvision passes its eps to alpha only (its IoU and diagonal use 1e-7), "
                                 "losskit uses eps in all three: equal at the default eps = 1e-7 (tested), and "
                                 "equal to the port with eps threaded through for other eps (tested)"),
]


# ---------------------------------------------------------------------------------------- the port
# pytorch/vision @ 90a8f703, torchvision/ops/giou_loss.py (the intersection block is the later
# ops/_utils.py::_loss_inter_union, used by diou_loss.py @ ae5c3462 and ciou_loss.py @ 28fbd4bf).
def _loss_inter_union(boxes1, boxes2):
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)

    # Intersection keypoints
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)

    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    return intsctk, unionk


def _reduce(loss, reduction):
    if reduction == "mean":
        loss = loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    intsctk, unionk = _loss_inter_union(boxes1, boxes2)
    iouk = intsctk / (unionk + eps)

    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)

    # smallest enclosing box
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)

    area_c = (xc2 - xc1) * (yc2 - yc1)
    miouk = iouk - ((area_c - unionk) / (area_c + eps))

    loss = 1 - miouk
    return _reduce(loss, reduction)


# pytorch/vision @ ae5c3462, torchvision/ops/diou_loss.py
def _diou_iou_loss(boxes1, boxes2, eps=1e-7):
    intsct, union = _loss_inter_union(boxes1, boxes2)
    iou = intsct / (union + eps)
    # smallest enclosing box
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    # The diagonal distance of the smallest enclosing box squared
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    # centers of boxes
    x_p = (x2 + x1) / 2
    y_p = (y2 + y1) / 2
    x_g = (x1g + x2g) / 2
    y_g = (y1g + y2g) / 2
    # The distance between boxes' centers squared.
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    # The distance IoU is the IoU penalized by a normalized
    # distance between boxes' centers squared.
    loss = 1 - iou + (centers_distance_squared / diagonal_distance_squared)
    return loss, iou


def distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    loss, _ = _diou_iou_loss(boxes1, boxes2, eps)
    return _reduce(loss, reduction)


# pytorch/vision @ 28fbd4bf, torchvision/ops/ciou_loss.py; `thread_eps=True` is the variant with eps passed
# to _diou_iou_loss too (losskit's convention), torchvision's own call is _diou_iou_loss(boxes1, boxes2).
def complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7, thread_eps=False):
    diou_loss, iou = _diou_iou_loss(boxes1, boxes2, eps) if thread_eps else _diou_iou_loss(boxes1, boxes2)

    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)

    # width and height of boxes
    w_pred = x2 - x1
    h_pred = y2 - y1
    w_gt = x2g - x1g
    h_gt = y2g - y1g
    v = (4 / (torch.pi**2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)

    loss = diou_loss + alpha * v
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------------------- the tests
PAIRS = [
    (losskit.giou_loss, generalized_box_iou_loss),
    (losskit.diou_loss, distance_box_iou_loss),
    (losskit.ciou_loss, complete_box_iou_loss),
]


def _boxes(n, scale, seed, shape=()):
    g = torch.Generator().manual_seed(seed)
    c1 = scale * torch.randn(n, *shape, 2, generator=g, dtype=torch.float64)
    c2 = c1 + scale * torch.randn(n, *shape, 2, generator=g, dtype=torch.float64)
    wh1 = scale * (0.1 + 2 * torch.rand(n, *shape, 2, generator=g, dtype=torch.float64))
    wh2 = scale * (0.1 + 2 * torch.rand(n, *shape, 2, generator=g, dtype=torch.float64))
    return torch.cat([c1 - wh1 / 2, c1 + wh1 / 2], -1), torch.cat([c2 - wh2 / 2, c2 + wh2 / 2], -1)


def _check(ours, ref, b1, b2, reduction, **kw):
    b1 = b1.clone().requires_grad_(True)
    b2 = b2.clone().requires_grad_(True)
    got = ours(b1, b2, reduction=reduction, **kw)
    r1, r2 = b1.detach().clone().requires_grad_(True), b2.detach().clone().requires_grad_(True)
    want = ref(r1, r2, reduction=reduction, **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.linspace(0.5, 1.5, got.numel(), dtype=torch.float64).reshape(got.shape)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    torch.testing.assert_close(b1.grad, r1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b2.grad, r2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ours,ref", PAIRS, ids=["giou", "diou", "ciou"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("n,scale,seed", [(16, 1.0, 0), (9, 100.0, 1), (5, 0.01, 2), (1, 3.0, 3)])
def test_values_and_gradients_match_torchvision(ours, ref, reduction, n, scale, seed):
    b1, b2 = _boxes(n, scale, seed)
    _check(ours, ref, b1, b2, reduction)


@pytest.mark.parametrize("ours,ref", PAIRS, ids=["giou", "diou", "ciou"])
def test_extra_axes_and_identical_and_disjoint_boxes(ours, ref):
    b1, b2 = _boxes(4, 2.0, 5, shape=(3,))  # (N, *, 4)
    _check(ours, ref, b1, b2, "none")
    same, _ = _boxes(6, 1.0, 6)
    _check(ours, ref, same, same.clone(), "none")  # loss 0 (up to eps)
    far = same + torch.tensor([50.0, 0.0, 50.0, 0.0], dtype=torch.float64)  # no overlap
    _check(ours, ref, same, far, "none")


@pytest.mark.parametrize("ours,ref", PAIRS[:2], ids=["giou", "diou"])
def test_degenerate_boxes_match(ours, ref):
    b1, b2 = _boxes(6, 1.0, 7)
    b1[:, 2] = b1[:, 0]  # zero width: accepted by GIoU and DIoU
    _check(ours, ref, b1, b2, "none")


@pytest.mark.parametrize("ours,ref", PAIRS[:2], ids=["giou", "diou"])
@pytest.mark.parametrize("eps", [1e-4, 1e-9])
def test_eps_matches(ours, ref, eps):
    b1, b2 = _boxes(8, 0.1, 8)
    _check(ours, ref, b1, b2, "none", eps=eps)


@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_ciou_eps_relation(eps):
    b1, b2 = _boxes(8, 0.1, 9)
    _check(losskit.ciou_loss, lambda x, y, **kw: complete_box_iou_loss(x, y, thread_eps=True, **kw), b1, b2,
           "none", eps=eps)
    # torchvision's own function differs when eps != 1e-7 (its IoU and diagonal keep 1e-7)
    assert not torch.allclose(losskit.ciou_loss(b1, b2, eps=eps, reduction="none"),
                              complete_box_iou_loss(b1, b2, eps=eps), rtol=1e-12, atol=1e-12)


def test_torchvision_accepts_malformed_boxes_losskit_refuses():
    b1, b2 = _boxes(4, 1.0, 10)
    bad = b1.clone()
    bad[0, [0, 2]] = bad[0, [2, 0]]  # x2 < x1
    ref = generalized_box_iou_loss(bad, b2)
    assert torch.isfinite(ref).all()  # a value, silently (negative area)
    for ours in (losskit.giou_loss, losskit.diou_loss, losskit.ciou_loss):
        with pytest.raises(losskit.LossInputError, match="^boxes1:.*box 0"):
            ours(bad, b2)
