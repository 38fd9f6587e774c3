"""CW-BASS (Tarubinga et al. 2025, arXiv:2502.15152).

Oracle: the authors' code, psychofict/CW-BASS ``main.py`` @ 4cad82cca82f81ace7892e1bca286faaf62de14f
(``compute_pixel_confidence``, ``weighted_cross_entropy_loss``, ``dynamic_thresholding``,
``detect_boundaries``, ``boundary_loss`` and the pseudo-label steps of ``train_semi_supervised``), ported
below. losskit's default boundary padding differs (replicate: image borders are not boundaries); the
authors' zero padding is ``padding='zeros'`` and matches exactly.
"""

import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit
from losskit.classification import cw_bass_pseudo_labels, label_boundaries

ORACLES = [
    Oracle("cw_bass_loss", "psychofict/CW-BASS",
           "main.py (compute_pixel_confidence, weighted_cross_entropy_loss, dynamic_thresholding, "
           "detect_boundaries, boundary_loss, train_semi_supervised)",
           "4cad82cca82f81ace7892e1bca286faaf62de14f", "1e-12",
           differences="losskit's default boundary padding is replicate (image borders are not boundaries); the "
                       "authors' zero padding is padding='zeros' and matches (1e-12, gradients 1e-10)"),
]



# ---- port of CW-BASS main.py ----
def weighted_cross_entropy_loss(prediction, pseudo_labels, confidence, gamma=1.0, ignore_index=255):
    ce_loss = F.cross_entropy(prediction, pseudo_labels, reduction="none", ignore_index=ignore_index)
    valid = (pseudo_labels != ignore_index).float()
    weighted = (confidence ** gamma) * ce_loss * valid
    return weighted.sum() / valid.sum().clamp(min=1.0)


def dynamic_thresholding(confidence, base_threshold=0.6, beta=0.5, min_threshold=0.3, max_threshold=0.8):
    avg_conf = confidence.mean()
    threshold = base_threshold / (1 + torch.exp(-beta * (avg_conf - 0.5)))
    return torch.clamp(threshold, min=min_threshold, max=max_threshold)


def detect_boundaries(labels, num_classes):
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes=num_classes).permute(0, 3, 1, 2).float()
    sobel_x = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float32)
    sobel_y = torch.tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=torch.float32)
    sobel_x = sobel_x.view(1, 1, 3, 3).repeat(num_classes, 1, 1, 1)
    sobel_y = sobel_y.view(1, 1, 3, 3).repeat(num_classes, 1, 1, 1)
    edges_x = F.conv2d(one_hot, sobel_x, padding=1, groups=num_classes)
    edges_y = F.conv2d(one_hot, sobel_y, padding=1, groups=num_classes)
    edges = torch.sqrt(edges_x ** 2 + edges_y ** 2)
    return (edges.sum(dim=1) > 0).float()


def boundary_loss(pred, pseudo_labels, confidence, boundary_mask, gamma=1.0, ignore_index=255):
    base = weighted_cross_entropy_loss(pred, pseudo_labels, confidence, gamma, ignore_index)
    ce = F.cross_entropy(pred, pseudo_labels, reduction="none", ignore_index=ignore_index)
    valid_boundary = boundary_mask * (pseudo_labels != ignore_index).float()
    boundary_term = (ce * valid_boundary).sum() / valid_boundary.sum().clamp(min=1.0)
    return base + 0.5 * boundary_term


def authors_pseudo(t_logits, nclass, decay=None):
    confidence = torch.max(F.softmax(t_logits, dim=1), dim=1).values
    pseudo = torch.argmax(t_logits, dim=1)
    boundary_mask = detect_boundaries(pseudo, nclass)
    threshold = dynamic_thresholding(confidence)
    pseudo = torch.where(confidence > threshold, pseudo, torch.full_like(pseudo, 255))
    if decay is not None:
        confidence = confidence * decay
    return pseudo, confidence, boundary_mask


def _batch(seed=0, n=2, c=5, h=12, w=10):
    g = torch.Generator().manual_seed(seed)
    # smooth teacher logits: blocky regions, so there are real boundaries and a mix of confidences
    t = F.interpolate(torch.randn(n, c, h // 3, w // 2, generator=g) * 2.5, size=(h, w), mode="nearest")
    t = t + 0.7 * torch.randn(n, c, h, w, generator=g)
    s = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    return t, s


def test_matches_authors_pipeline_with_zero_padding():
    t, s = _batch()
    c = t.shape[1]
    pseudo, conf, bmask = authors_pseudo(t, c, decay=0.9)
    target, confidence, boundary = cw_bass_pseudo_labels(t, padding="zeros", decay_factor=0.9)
    assert torch.equal(target, pseudo) and torch.equal(boundary, bmask.bool())
    torch.testing.assert_close(confidence, conf)
    assert 0 < (target == 255).sum() < target.numel() and 0 < boundary.sum() < boundary.numel()
    s1 = s.clone().requires_grad_()
    s2 = s.clone().requires_grad_()
    got = losskit.cw_bass_loss(s1, target, confidence.double(), boundary)
    ref = boundary_loss(s2, pseudo, conf.double(), bmask.double())
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, s1)[0], torch.autograd.grad(ref, s2)[0],
                               rtol=1e-10, atol=1e-15)


def test_gamma_and_boundary_weight():
    t, s = _batch(seed=1)
    target, confidence, boundary = cw_bass_pseudo_labels(t, padding="zeros")
    for gamma in (0.0, 2.0):
        ref = weighted_cross_entropy_loss(s, target, confidence.double(), gamma)
        got = losskit.cw_bass_loss(s, target, confidence.double(), boundary, gamma=gamma, boundary_weight=0.0)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_replicate_padding_marks_no_image_border():
    # one class everywhere: no boundary at all with replicate padding, the whole border with zero padding
    labels = torch.zeros(1, 6, 7, dtype=torch.long)
    assert not label_boundaries(labels, 3).any()
    zb = label_boundaries(labels, 3, padding="zeros")
    assert zb[0, 0].all() and zb[0, -1].all() and zb[0, :, 0].all() and not zb[0, 2:-2, 2:-2].any()
    # interior pixels agree with the authors' detector on a random map
    labels = torch.randint(0, 4, (2, 9, 8))
    inner = (slice(None), slice(1, -1), slice(1, -1))
    assert torch.equal(label_boundaries(labels, 4)[inner], detect_boundaries(labels, 4).bool()[inner])
    # a vertical edge marks the two columns either side of it
    labels = torch.zeros(1, 5, 6, dtype=torch.long)
    labels[..., 3:] = 1
    b = label_boundaries(labels, 2)
    assert b[0, :, 2:4].all() and not b[0, :, :2].any() and not b[0, :, 4:].any()


def test_dynamic_threshold_and_empty_batch():
    t, s = _batch(seed=2)
    conf = torch.softmax(t, 1).max(1).values
    tau = dynamic_thresholding(conf)
    target, _, _ = cw_bass_pseudo_labels(t)
    assert torch.equal(target == 255, conf <= tau)
    everything_ignored = torch.full_like(target, 255)
    assert losskit.cw_bass_loss(s, everything_ignored, conf.double()).item() == 0.0
