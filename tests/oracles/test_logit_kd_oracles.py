"""Reference tests (issue 19), distillation: DKD, DIST, logit-standardised KD and GKD's generalised JSD, each
against a port of the authors' (or TRL's) lines on seeded float64 inputs, edge cases included (extreme
logits, ignored samples, a batch of one, beta at 0 and 1); values and gradients.
"""

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

DKD_REPO, DKD_COMMIT = "megvii-research/mdistiller", "e8c5bb331e78c9d79a8894ca233caae78531cf7f"
DIST_REPO, DIST_COMMIT = "hunto/DIST_KD", "6d93ca01e2cd78e011730dcaf63d9bfa3e187fa3"
LS_REPO, LS_COMMIT = "sunshangquan/logit-standardization-KD", "2ba395457d10c2b12bdb1cb2feab4b7a5bd04b6c"
TRL_REPO, TRL_COMMIT = "huggingface/trl", "f2cd57710ae345ea6428ae95363267fcf38a3dc8"

ORACLES = [
    Oracle(objective="dkd_loss", repo=DKD_REPO, path="mdistiller/distillers/DKD.py", commit=DKD_COMMIT,
           agreement="1e-12",
           differences="exact masked softmax for the non-target classes (the official subtracts 1000 from the "
                       "target logit: identical in float64 for logits/T below ~700); warm-up is the caller's"),
    Oracle(objective="dist_loss", repo=DIST_REPO, path="segmentation/losses/dist_kd.py", commit=DIST_COMMIT,
           agreement="1e-12",
           differences="the T^2 factor with temperature (1 at the default T = 1, where it is the ported file); "
                       "ignored rows leave both terms"),
    Oracle(objective="logit_standardized_kd", repo=LS_REPO, path="mdistiller/distillers/KD_ours.py (kd_loss, "
           "normalize)", commit=LS_COMMIT, agreement="1e-12",
           differences="a constant logit row maps to 0 (the official divides by a zero std: NaN)"),
    Oracle(objective="gkd_loss", repo=TRL_REPO, path="trl/experimental/gkd/gkd_trainer.py "
           "(GKDTrainer.generalized_jsd_loss)", commit=TRL_COMMIT, agreement="1e-12", source="peer",
           differences="vocabulary on axis 1 (TRL: last); 'mean' with labels = TRL's 'batchmean' with labels"),
]


# ---- port of megvii-research/mdistiller mdistiller/distillers/DKD.py @e8c5bb3 (dkd_loss, _get_gt_mask,
# ---- _get_other_mask, cat_mask; size_average=False written as reduction='sum')
def _get_gt_mask(logits, target):
    return torch.zeros_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 1).bool()


def _get_other_mask(logits, target):
    return torch.ones_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 0).bool()


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    return torch.cat([t1, t2], dim=1)


def dkd_official(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (temperature**2) / target.shape[0]
    return alpha * tckd_loss + beta * nckd_loss


# ---- port of hunto/DIST_KD segmentation/losses/dist_kd.py @6d93ca0 (cosine_similarity .. DIST.forward)
def cosine_similarity(x, y, eps=1e-8):
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1) + eps)


def pearson_correlation(x, y, eps=1e-8):
    return cosine_similarity(x - x.mean(1).unsqueeze(1), y - y.mean(1).unsqueeze(1), eps)


def dist_official(y_s, y_t, beta=1., gamma=1.):
    y_s, y_t = y_s.softmax(dim=1), y_t.softmax(dim=1)
    l_loss = 1 - pearson_correlation(y_s, y_t).mean()
    c_loss = 1 - pearson_correlation(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return beta * l_loss + gamma * c_loss


# ---- port of sunshangquan/logit-standardization-KD mdistiller/distillers/KD_ours.py @2ba3954 (normalize, kd_loss)
def normalize(logit):
    return (logit - logit.mean(dim=-1, keepdims=True)) / logit.std(dim=-1, keepdims=True)


def ls_kd_official(logits_student, logits_teacher, temperature):
    log_pred_student = F.log_softmax(normalize(logits_student) / temperature, dim=1)
    pred_teacher = F.softmax(normalize(logits_teacher) / temperature, dim=1)
    return F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean() * temperature**2


# ---- port of huggingface/trl trl/experimental/gkd/gkd_trainer.py @f2cd577, generalized_jsd_loss (lines 239-323)
def trl_gjsd(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0):
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log1p(-beta), teacher_log_probs + torch.log(beta)]), dim=0)
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]
    denom = mask.sum().clamp_min(1) if labels is not None else max(jsd.size(0), 1)
    return jsd.sum() / denom


def _kd(seed, n=7, k=6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, k, generator=g, dtype=torch.float64),
            scale * torch.randn(n, k, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g))


def _grads(fa, fb, s):
    sa, sb = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    a, b = fa(sa), fb(sb)
    return a, b, torch.autograd.grad(a, sa)[0], torch.autograd.grad(b, sb)[0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("opts", [dict(alpha=1.0, beta=8.0, temperature=4.0), dict(alpha=0.5, beta=0.5, temperature=1.0),
                                  dict(alpha=2.0, beta=1.0, temperature=10.0)])
def test_dkd_matches_official(seed, opts):
    s, t, y = _kd(seed)
    a, b, ga, gb = _grads(lambda z: losskit.dkd_loss(z, t, y, ce_weight=0.0, **opts),
                          lambda z: dkd_official(z, t, y, opts["alpha"], opts["beta"], opts["temperature"]), s)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # with the official CE term (CE_WEIGHT 1), a batch of one, extreme logits
    torch.testing.assert_close(losskit.dkd_loss(s, t, y, **opts),
                               dkd_official(s, t, y, opts["alpha"], opts["beta"], opts["temperature"])
                               + F.cross_entropy(s, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.dkd_loss(s[:1], t[:1], y[:1], ce_weight=0.0, **opts),
                               dkd_official(s[:1], t[:1], y[:1], opts["alpha"], opts["beta"], opts["temperature"]),
                               rtol=1e-12, atol=1e-12)


def test_dkd_edges():
    s = torch.tensor([[30.0, -30.0, 0.0, 5.0], [1e3, 0.0, -1e3, 2.0]], dtype=torch.float64)
    t = torch.tensor([[-30.0, 30.0, 1.0, 0.0], [0.0, 1e3, 0.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    mine = losskit.dkd_loss(s, t, y, ce_weight=0.0, reduction="none")
    ref = torch.stack([dkd_official(s[i:i + 1], t[i:i + 1], y[i:i + 1], 1.0, 8.0, 4.0) for i in range(2)])
    torch.testing.assert_close(mine[0], ref[0], rtol=1e-12, atol=1e-12)  # row 1: official log(0) on 1e3/4
    assert torch.isfinite(mine).all()
    # ignored samples leave the mean
    yi = torch.tensor([0, -100])
    torch.testing.assert_close(losskit.dkd_loss(s, t, yi), losskit.dkd_loss(s[:1], t[:1], y[:1]))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("bg", [(1.0, 1.0), (2.0, 0.5)])
def test_dist_matches_official(seed, bg):
    s, t, y = _kd(seed)
    a, b, ga, gb = _grads(lambda z: losskit.dist_loss(z, t, beta=bg[0], gamma=bg[1]),
                          lambda z: dist_official(z, t, *bg), s)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # temperature: T^2 times the official on z / T
    torch.testing.assert_close(losskit.dist_loss(s, t, temperature=4.0), 16 * dist_official(s / 4, t / 4),
                               rtol=1e-12, atol=1e-12)
    # ignored rows leave both terms; spatial logits flatten as the official's 4-d branch
    yi = y.clone()
    yi[2] = -100
    keep = yi != -100
    torch.testing.assert_close(losskit.dist_loss(s, t, yi), dist_official(s[keep], t[keep]), rtol=1e-12, atol=1e-12)
    s4, t4 = s.reshape(1, 7, 6, 1).transpose(1, 2), t.reshape(1, 7, 6, 1).transpose(1, 2)  # (1, K, 7, 1)
    torch.testing.assert_close(losskit.dist_loss(s4, t4), dist_official(s, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_logit_standardized_kd_matches_official(seed, temperature):
    s, t, y = _kd(seed)
    a, b, ga, gb = _grads(lambda z: losskit.logit_standardized_kd(z, t, temperature=temperature),
                          lambda z: ls_kd_official(z, t, temperature), s)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # invariant to the scale and shift of either side's logits (the point of the standardisation)
    torch.testing.assert_close(losskit.logit_standardized_kd(3 * s + 1, 0.2 * t - 5, temperature=temperature), a)
    torch.testing.assert_close(losskit.logit_standardized_kd(s, t, y, temperature=temperature, ce_weight=0.1, kd_weight=9.0),
                               0.1 * F.cross_entropy(s, y) + 9 * b, rtol=1e-12, atol=1e-12)
    # extreme logits, a batch of one
    torch.testing.assert_close(losskit.logit_standardized_kd(1e3 * s[:1], t[:1], temperature=temperature),
                               ls_kd_official(1e3 * s[:1], t[:1], temperature), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gkd_matches_trl(seed, beta, temperature):
    g = torch.Generator().manual_seed(seed)
    s = 3 * torch.randn(2, 5, 11, generator=g, dtype=torch.float64)  # (B, T, V) as TRL
    t = 3 * torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, :2] = -100
    a, b, ga, gb = _grads(lambda z: losskit.gkd_loss(z.transpose(1, 2), t.transpose(1, 2), labels, beta=beta,
                                                     temperature=temperature),
                          lambda z: trl_gjsd(z, t, labels, beta, temperature), s)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    # = losskit's generalised JSD with pi = beta and the teacher first (0 < beta < 1)
    if 0 < beta < 1:
        torch.testing.assert_close(
            losskit.gkd_loss(s[1].T[None], t[1].T[None], beta=beta, reduction="none")[0],
            losskit.generalized_js_divergence(t[1], s[1], pi=beta, reduction="none"), rtol=1e-12, atol=1e-12)
    # extreme logits stay finite
    assert torch.isfinite(losskit.gkd_loss(1e3 * s.transpose(1, 2), t.transpose(1, 2), beta=beta))
