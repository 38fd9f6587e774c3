"""Reference tests (issue 19), multi-label: ASL against a port of the authors' ``AsymmetricLoss``, timm's
``BinaryCrossEntropy`` and its mixup targets / ``SoftTargetCrossEntropy`` against ports of timm's lines
(timm is not installed). Seeded float64 inputs, edge cases included (extreme logits, a row without
positives, a batch of one, soft targets), values and gradients.
"""

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

ASL_REPO, ASL_COMMIT = "Alibaba-MIIL/ASL", "05b193d8a39bbc5fb2c3be7b52d5188416594544"
TIMM_REPO = "huggingface/pytorch-image-models"
TIMM_BCE_COMMIT = "308d0b9554cea42dad38ce542d2478dc9abfd9fb"  # timm/loss/binary_cross_entropy.py, cross_entropy.py
TIMM_MIX_COMMIT = "066e490605ba1d3666861096163246c885603469"  # timm/data/mixup.py

ORACLES = [
    Oracle(objective="asymmetric_loss", repo=ASL_REPO, path="src/loss_functions/losses.py (AsymmetricLoss)",
           commit=ASL_COMMIT, agreement="1e-12",
           differences="the official module returns the sum over all entries (reduction='sum' here); its "
                       "log(max(p, 1e-8)) differs from losskit's exact log-sigmoid only for a positive with "
                       "x < -18.4 (at x = -30: 18.42 official, 30 losskit; tested)"),
    Oracle(objective="binary_cross_entropy", repo=TIMM_REPO, path="timm/loss/binary_cross_entropy.py",
           commit=TIMM_BCE_COMMIT, agreement="1e-12", source="peer",
           differences="timm smooths class-index targets only and defaults to smoothing=0.1; losskit also "
                       "smooths dense targets and defaults to 0 (torch's default)"),
]


# ---- port of Alibaba-MIIL/ASL src/loss_functions/losses.py @05b193d, AsymmetricLoss.forward (lines 15-47)
def asl_official(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8):
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss = loss * one_sided_w
    return -loss.sum()


# ---- port of timm/loss/binary_cross_entropy.py @308d0b9, BinaryCrossEntropy.forward (lines 27-45)
def timm_bce(x, target, smoothing=0.1, target_threshold=None, weight=None, pos_weight=None, reduction="mean"):
    if target.shape != x.shape:
        num_classes = x.shape[-1]
        off_value = smoothing / num_classes
        on_value = 1. - smoothing + off_value
        target = target.long().view(-1, 1)
        target = torch.full((target.size()[0], num_classes), off_value, dtype=x.dtype).scatter_(1, target, on_value)
    if target_threshold is not None:
        target = target.gt(target_threshold).to(dtype=target.dtype)
    return F.binary_cross_entropy_with_logits(x, target, weight, pos_weight=pos_weight, reduction=reduction)


# ---- port of timm/data/mixup.py @066e490, one_hot and mixup_target (lines 16-27)
def timm_one_hot(x, num_classes, on_value=1., off_value=0.):
    x = x.long().view(-1, 1)
    return torch.full((x.size()[0], num_classes), off_value, dtype=torch.float64).scatter_(1, x, on_value)


def timm_mixup_target(target, num_classes, lam=1., smoothing=0.0):
    off_value = smoothing / num_classes
    on_value = 1. - smoothing + off_value
    y1 = timm_one_hot(target, num_classes, on_value=on_value, off_value=off_value)
    y2 = timm_one_hot(target.flip(0), num_classes, on_value=on_value, off_value=off_value)
    return y1 * lam + y2 * (1. - lam)


# ---- port of timm/loss/cross_entropy.py @308d0b9, SoftTargetCrossEntropy.forward (lines 35-37)
def timm_soft_ce(x, target):
    return torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1).mean()


def _inputs(seed, n=7, k=6, scale=3.0, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = (torch.rand(n, k, generator=g) < 0.4).double()
    if soft:
        y = torch.rand(n, k, generator=g, dtype=torch.float64)
    return x, y


def _edge():
    x = torch.tensor([[30.0, -30.0, 0.0, 1e3, -1e3, 0.0],
                      [-3.0, 3.0, 0.04, -0.04, 2.9444, 18.0],   # logit(0.95) ~ 2.9444: p - clip = 0.9
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],             # a row without positives
                      [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    return x, y


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    v = fn(x)
    (g,) = torch.autograd.grad(v, x)
    return v.detach(), g


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("opts", [dict(), dict(gamma_neg=2.0, gamma_pos=0.0, clip=0.0),
                                  dict(gamma_neg=0.0, gamma_pos=0.0, clip=0.1), dict(gamma_neg=3.5, clip=0.2)])
def test_asl_matches_official(seed, opts):
    x, y = _inputs(seed)
    off = {"gamma_neg": opts.get("gamma_neg", 4.0), "gamma_pos": opts.get("gamma_pos", 1.0),
           "clip": opts.get("clip", 0.05)}
    v_ref, g_ref = _grad(lambda z: asl_official(z, y, **off), x)
    v, g = _grad(lambda z: losskit.asymmetric_loss(z, y, reduction="sum", **opts), x)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    # 'mean' over every element, 'none' the logits' shape
    torch.testing.assert_close(losskit.asymmetric_loss(x, y, **opts), v_ref / x.numel(), rtol=1e-12, atol=1e-12)
    assert losskit.asymmetric_loss(x, y, reduction="none", **opts).shape == x.shape


def test_asl_edges_and_the_eps_clamp():
    x, y = _edge()
    ok = ~((y > 0) & (x < -18.4))  # where the official's log(max(p, 1e-8)) binds
    mine = losskit.asymmetric_loss(x, y, reduction="none")
    ref = torch.stack([torch.stack([asl_official(x[i, j], y[i, j]) for j in range(x.shape[1])])
                       for i in range(x.shape[0])])
    torch.testing.assert_close(mine[ok], ref[ok], rtol=1e-12, atol=1e-12)
    # positive at x = -1e3: official -log(1e-8) (1 - 1e-8)^1 ~ 18.42; losskit the exact 1000
    assert ref[0, 4] == 0 and ref[0, 3] < 1e-300  # negative at -1e3; positive at +1e3
    z = torch.tensor([-30.0], dtype=torch.float64)
    one = torch.tensor([1.0], dtype=torch.float64)
    torch.testing.assert_close(asl_official(z, one), torch.tensor(18.420680743952367, dtype=torch.float64))
    torch.testing.assert_close(losskit.asymmetric_loss(z[None], one[None], reduction="sum"),
                               torch.tensor(30.0, dtype=torch.float64), rtol=1e-12, atol=0)  # (1-p)^1 ~ 1 - 9e-14
    # a negative below the margin (p <= clip) is discarded: zero loss and zero gradient
    v, g = _grad(lambda t: losskit.asymmetric_loss(t, torch.zeros(1, 1, dtype=torch.float64), reduction="sum"),
                 torch.tensor([[-3.5]], dtype=torch.float64))
    assert v == 0 and g == 0
    # batch of one, class-index targets = one-hot rows
    xi, _ = _inputs(9, n=1)
    torch.testing.assert_close(losskit.asymmetric_loss(xi, torch.tensor([2]), reduction="sum"),
                               asl_official(xi, F.one_hot(torch.tensor([2]), 6).double()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("opts", [dict(smoothing=0.0), dict(smoothing=0.1), dict(smoothing=0.1, target_threshold=0.2),
                                  dict(smoothing=0.0, weights=True), dict(smoothing=0.2, pos=True)])
def test_bce_matches_timm(seed, opts):
    x, yd = _inputs(seed, k=5)
    yi = torch.randint(0, 5, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(100 + seed)
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5 if opts.get("weights") else None
    pw = torch.rand(5, generator=g, dtype=torch.float64) * 3 if opts.get("pos") else None
    eps, thr = opts["smoothing"], opts.get("target_threshold")
    # class-index targets: timm's one-hot with smoothed on/off values
    v_ref, g_ref = _grad(lambda z: timm_bce(z, yi, eps, thr, w, pw), x)
    v, gr = _grad(lambda z: losskit.binary_cross_entropy(z, yi, label_smoothing=eps, target_threshold=thr,
                                                         weight=w, pos_weight=pw), x)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gr, g_ref, rtol=1e-10, atol=1e-14)
    # dense targets: timm does not smooth them, so compare at label_smoothing=0 (and with mixup targets)
    ym = timm_mixup_target(yi, 5, 0.7, eps)
    torch.testing.assert_close(losskit.binary_cross_entropy(x, ym, target_threshold=thr, weight=w, pos_weight=pw),
                               timm_bce(x, ym, eps, thr, w, pw), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.binary_cross_entropy(x, yd, reduction="sum", weight=w, pos_weight=pw),
                               timm_bce(x, yd, 0.0, None, w, pw, "sum"), rtol=1e-12, atol=1e-12)


def test_bce_extremes_and_smoothed_dense_targets():
    x, y = _edge()
    torch.testing.assert_close(losskit.binary_cross_entropy(x, y, reduction="none"),
                               timm_bce(x, y, 0.0, reduction="none"), rtol=1e-12, atol=1e-12)
    # losskit smooths dense targets too: = timm on targets smoothed upstream
    t = y * 0.9 + 0.1 / 6
    torch.testing.assert_close(losskit.binary_cross_entropy(x, y, label_smoothing=0.1), timm_bce(x, t, 0.0))
    # -inf logit with target 0 is 0 (torch: NaN)
    z = torch.tensor([[-float("inf"), 1.0]], dtype=torch.float64)
    assert losskit.binary_cross_entropy(z, torch.tensor([[0.0, 1.0]], dtype=torch.float64)).isfinite()


@pytest.mark.parametrize("lam", [0.0, 0.35, 1.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mixup_targets_and_soft_target_ce_match_timm(lam, eps):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 7, (6,), generator=g)
    z = 3 * torch.randn(6, 7, generator=g, dtype=torch.float64)
    t = losskit.mix_targets(y, lam, num_classes=7, dtype=torch.float64, label_smoothing=eps)
    ref = timm_mixup_target(y, 7, lam, eps)
    torch.testing.assert_close(t, ref, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(losskit.cross_entropy(z, t), timm_soft_ce(z, ref), rtol=1e-12, atol=1e-12)
    # an explicit permutation equal to the flip gives the same targets
    torch.testing.assert_close(losskit.mix_targets(y, lam, torch.arange(5, -1, -1), num_classes=7,
                                                   dtype=torch.float64, label_smoothing=eps), ref)
