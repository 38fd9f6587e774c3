"""Reference tests (issue 19), segmentation: Lovász-softmax / Lovász-hinge against a port of the authors'
PyTorch code; Dice, Tversky and focal-Tversky against a direct per-image, per-class loop over the pixels
(the closed form; segmentation_models_pytorch is not installed). Seeded float64 inputs with ignored pixels,
absent classes, extreme logits and a batch of one; values and gradients.
"""

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import NoReference, Oracle

import losskit

LV_REPO, LV_COMMIT = "bermanmaxim/LovaszSoftmax", "188332eb284aa492d1c713c30a051d3f13ec2e6b"
IGN = -100

ORACLES = [
    Oracle(objective="lovasz_softmax", repo=LV_REPO, path="pytorch/lovasz_losses.py", commit=LV_COMMIT,
           agreement="1e-12",
           differences="takes logits (softmax here; the official takes probabilities); averages over the classes "
                       "present (the official only_present=True / classes='present'); default per_image=True (the "
                       "official default per_image=False: pass it)"),
    Oracle(objective="lovasz_hinge", repo=LV_REPO, path="pytorch/lovasz_losses.py", commit=LV_COMMIT,
           agreement="1e-12",
           differences="an image whose pixels are all ignored leaves the mean (the official counts it as 0)"),
    NoReference(objective="dice_loss", reason="segmentation_models_pytorch (the peer) is not installed and its "
                "source is not in the stored index; the authors of V-Net published Caffe code only",
                checked_against="a per-image, per-class loop over the pixels (the closed form), values and gradients"),
    NoReference(objective="tversky_loss", reason="as dice_loss: no installed peer; the authors' code is not public",
                checked_against="the same per-class loop, and tversky(0.5, 0.5) = dice"),
    NoReference(objective="focal_tversky_loss", reason="as dice_loss; the authors' Keras code (nabsabraham/"
                "focal-tversky-unet) was not ported",
                checked_against="the same per-class loop raised to gamma"),
]


# ---- port of bermanmaxim/LovaszSoftmax pytorch/lovasz_losses.py @188332e (lovasz_grad, lovasz_hinge_flat,
# ---- flatten_binary_scores, lovasz_softmax_flat, flatten_probas, mean; Variable dropped)
def lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.double().cumsum(0)
    union = gts + (1 - gt_sorted).double().cumsum(0)
    jaccard = 1. - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def mean(values, empty=0):
    values = list(values)
    if not values:
        return empty
    acc = values[0]
    for v in values[1:]:
        acc = acc + v
    return acc / len(values)


def lovasz_hinge_flat(logits, labels):
    if len(labels) == 0:
        return logits.sum() * 0.
    signs = 2. * labels.double() - 1.
    errors = (1. - logits * signs)
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    gt_sorted = labels[perm]
    grad = lovasz_grad(gt_sorted)
    return torch.dot(F.relu(errors_sorted), grad)


def flatten_binary_scores(scores, labels, ignore=None):
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    if ignore is None:
        return scores, labels
    valid = labels != ignore
    return scores[valid], labels[valid]


def lovasz_hinge_official(logits, labels, per_image=True, ignore=None):
    if per_image:
        return mean(lovasz_hinge_flat(*flatten_binary_scores(log.unsqueeze(0), lab.unsqueeze(0), ignore))
                    for log, lab in zip(logits, labels))
    return lovasz_hinge_flat(*flatten_binary_scores(logits, labels, ignore))


def lovasz_softmax_flat(probas, labels, only_present=False):
    if probas.numel() == 0:
        return probas * 0.
    C = probas.size(1)
    losses = []
    for c in range(C):
        fg = (labels == c).double()
        if only_present and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        fg_sorted = fg[perm]
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg_sorted)))
    return mean(losses)


def flatten_probas(probas, labels, ignore=None):
    B, C, H, W = probas.size()
    probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)
    labels = labels.view(-1)
    if ignore is None:
        return probas, labels
    valid = labels != ignore
    return probas[valid.nonzero().squeeze(1)], labels[valid]


def lovasz_softmax_official(probas, labels, only_present=False, per_image=False, ignore=None):
    if per_image:
        return mean(lovasz_softmax_flat(*flatten_probas(prob.unsqueeze(0), lab.unsqueeze(0), ignore),
                                        only_present=only_present) for prob, lab in zip(probas, labels))
    return lovasz_softmax_flat(*flatten_probas(probas, labels, ignore), only_present=only_present)


def _seg(seed, n=3, c=4, h=5, w=6, scale=2.0, ignore_frac=0.15):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    y = torch.randint(0, c - 1, (n, h, w), generator=g)  # the last class is absent
    y[0, 0, :3] = c - 1  # ... except in image 0
    y = torch.where(torch.rand(n, h, w, generator=g) < ignore_frac, torch.full_like(y, IGN), y)
    return z, y


def _both(fn_a, fn_b, z):
    za = z.clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    a, b = fn_a(za), fn_b(zb)
    ga, = torch.autograd.grad(a, za)
    gb, = torch.autograd.grad(b, zb)
    return a, b, ga, gb


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_softmax_matches_the_authors(seed, per_image):
    z, y = _seg(seed)
    a, b, ga, gb = _both(lambda t: losskit.lovasz_softmax(t, y, per_image=per_image),
                         lambda t: lovasz_softmax_official(torch.softmax(t, 1), y, only_present=True,
                                                           per_image=per_image, ignore=IGN), z)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_lovasz_softmax_edges():
    z, y = _seg(5, n=1, scale=30.0)  # batch of one, near-saturated softmax
    torch.testing.assert_close(losskit.lovasz_softmax(z, y),
                               lovasz_softmax_official(torch.softmax(z, 1), y, True, True, IGN), rtol=1e-12, atol=1e-12)
    # a perfect prediction costs 0; an all-ignored image leaves the mean
    y2 = torch.randint(0, 4, (2, 3, 3), generator=torch.Generator().manual_seed(1))
    perfect = 1e3 * F.one_hot(y2, 4).permute(0, 3, 1, 2).double()
    assert losskit.lovasz_softmax(perfect, y2) == 0
    z3, y3 = _seg(6)
    y3[1] = IGN
    torch.testing.assert_close(losskit.lovasz_softmax(z3, y3), losskit.lovasz_softmax(z3[[0, 2]], y3[[0, 2]]))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_hinge_matches_the_authors(seed, per_image):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (3, 5, 6), generator=g)
    y = torch.where(torch.rand(3, 5, 6, generator=g) < 0.2, torch.full_like(y, IGN), y)
    a, b, ga, gb = _both(lambda t: losskit.lovasz_hinge(t, y, per_image=per_image),
                         lambda t: lovasz_hinge_official(t, y, per_image=per_image, ignore=IGN), z)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # extreme logits, a batch of one
    zx = torch.tensor([[[1e3, -1e3, 30.0, -30.0]]], dtype=torch.float64)
    yx = torch.tensor([[[0, 1, 1, IGN]]])
    torch.testing.assert_close(losskit.lovasz_hinge(zx, yx), lovasz_hinge_official(zx, yx, True, IGN))
    # an all-ignored image: official counts 0 in the mean, losskit leaves it out (stated relation)
    y[1] = IGN
    torch.testing.assert_close(losskit.lovasz_hinge(z, y) * 2 / 3, lovasz_hinge_official(z, y, True, IGN),
                               rtol=1e-12, atol=1e-12)


# ---- closed form: per unit, per class, a loop over the valid pixels
def tversky_loop(z, y, alpha, beta, gamma=1.0, smooth=0.0, per_image=True):
    p = torch.softmax(z, 1)
    n, c = p.shape[:2]
    units = [(p[i:i + 1], y[i:i + 1]) for i in range(n)] if per_image else [(p, y)]
    out = []
    for pu, yu in units:
        vals = []
        for k in range(c):
            tp = fp = fn = 0.0
            present = False
            for idx in torch.nonzero(yu != IGN).tolist():
                b, hh, ww = idx
                pk = pu[b, k, hh, ww]
                if int(yu[b, hh, ww]) == k:
                    present = True
                    tp = tp + pk
                    fn = fn + (1 - pk)
                else:
                    fp = fp + pk
            if present:
                ti = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
                vals.append((1 - ti) ** gamma)
        if vals:
            out.append(sum(vals) / len(vals))
    return sum(out) / len(out)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("per_image", [True, False])
def test_dice_tversky_focal_tversky_closed_form(seed, per_image):
    z, y = _seg(seed, h=3, w=4)
    cases = [(losskit.dice_loss, dict(), (0.5, 0.5, 1.0, 0.0)),
             (losskit.dice_loss, dict(smooth=1.0), (0.5, 0.5, 1.0, 1.0)),
             (losskit.tversky_loss, dict(), (0.3, 0.7, 1.0, 0.0)),
             (losskit.tversky_loss, dict(alpha=0.9, beta=0.1, smooth=0.5), (0.9, 0.1, 1.0, 0.5)),
             (losskit.focal_tversky_loss, dict(), (0.3, 0.7, 0.75, 1.0)),
             (losskit.focal_tversky_loss, dict(gamma=2.0, smooth=0.0), (0.3, 0.7, 2.0, 0.0))]
    for fn, opts, (al, be, ga, sm) in cases:
        a, b, g_a, g_b = _both(lambda t, fn=fn, opts=opts: fn(t, y, per_image=per_image, **opts),
                               lambda t, al=al, be=be, ga=ga, sm=sm: tversky_loop(t, y, al, be, ga, sm, per_image), z)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_a, g_b, rtol=1e-9, atol=1e-12)
    # Tversky at alpha = beta = 1/2 is Dice; a perfect prediction costs 0
    torch.testing.assert_close(losskit.tversky_loss(z, y, alpha=0.5, beta=0.5), losskit.dice_loss(z, y))
    y2 = torch.randint(0, 4, (2, 3, 3), generator=torch.Generator().manual_seed(1))
    assert losskit.dice_loss(1e3 * F.one_hot(y2, 4).permute(0, 3, 1, 2).double(), y2) == 0
    # per_image=False refuses sample weights (one loss for the batch)
    with pytest.raises(losskit.LossInputError):
        losskit.dice_loss(z, y, per_image=False, sample_weight=torch.ones(3, dtype=torch.float64))
