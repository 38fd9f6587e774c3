"""Reference tests (issue 19): the bi-tempered logistic loss against a torch port of the authors' TensorFlow
code, and AugMix's JSD consistency loss against the authors' training step. Seeded float64 inputs, edge
cases included (extreme logits, a masked class, ignored samples, a batch of one), values and gradients.
"""

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

BT_REPO, BT_COMMIT = "google/bi-tempered-loss", "18f29aaf289ae3c8899a874ccb275a659c385106"
AM_REPO, AM_COMMIT = "google-research/augmix", "a43b785668b38f5a1fef90793d8b23f43729aeaf"

ORACLES = [
    Oracle(objective="bi_tempered_logistic_loss", repo=BT_REPO, path="tensorflow/loss.py", commit=BT_COMMIT,
           agreement="1e-9",
           differences="same normaliser iteration (num_iters=5 by default); the authors add 1e-10 to the targets "
                       "inside log_t (losskit: 0 log_t 0 = 0), hence 1e-9; their custom gradient assumes an exactly "
                       "normalised p and agrees with losskit's autograd as num_iters grows (1e-9 at 40); their "
                       "label smoothing eps is losskit's eps (K-1)/K (tested)"),
    Oracle(objective="augmix_jsd", repo=AM_REPO, path="cifar.py (train)", commit=AM_COMMIT, agreement="1e-12",
           differences="the authors clamp the mixture M to [1e-7, 1] before the log; identical where no class has "
                       "M < 1e-7, within lam * 1e-7 per such class otherwise (tested at logits of +-30)"),
]


# ---- port of google/bi-tempered-loss tensorflow/loss.py @18f29aa (lines 22-60 and 118-214), TF -> torch
def tf_log_t(u, t):
    return torch.log(u) if t == 1 else (u ** (1.0 - t) - 1.0) / (1.0 - t)


def tf_exp_t(u, t):
    return torch.exp(u) if t == 1 else torch.relu(1.0 + (1.0 - t) * u) ** (1.0 / (1.0 - t))


def tf_compute_normalization(activations, t, num_iters=5):
    mu = activations.max(-1, keepdim=True).values
    normalized_activations_step_0 = activations - mu
    normalized_activations = normalized_activations_step_0
    for _ in range(num_iters):
        logt_partition = tf_exp_t(normalized_activations, t).sum(-1, keepdim=True)
        normalized_activations = normalized_activations_step_0 * logt_partition ** (1 - t)
    logt_partition = tf_exp_t(normalized_activations, t).sum(-1, keepdim=True)
    return -tf_log_t(1.0 / logt_partition, t) + mu


def tf_tempered_softmax(activations, t, num_iters=5):
    if t == 1.0:
        normalization_constants = torch.log(torch.exp(activations).sum(-1, keepdim=True))
    else:
        normalization_constants = tf_compute_normalization(activations, t, num_iters)
    return tf_exp_t(activations - normalization_constants, t)


class _TFBiTempered(torch.autograd.Function):
    """bi_tempered_logistic_loss with the authors' custom gradient (_custom_gradient_bi_tempered_logistic_loss)."""

    @staticmethod
    def forward(ctx, activations, labels, t1, t2, num_iters):
        probabilities = tf_tempered_softmax(activations, t2, num_iters)
        loss_values = labels * (tf_log_t(labels + 1e-10, t1) - tf_log_t(probabilities, t1)) - 1.0 / (2.0 - t1) * (
            labels ** (2.0 - t1) - probabilities ** (2.0 - t1))
        ctx.save_for_backward(probabilities, labels)
        ctx.t = (t1, t2)
        return loss_values.sum(-1)

    @staticmethod
    def backward(ctx, d_loss):
        probabilities, labels = ctx.saved_tensors
        t1, t2 = ctx.t
        delta_probs = probabilities - labels
        forget_factor = probabilities ** (t2 - t1)
        delta_forget_sum = (delta_probs * forget_factor).sum(-1, keepdim=True)
        escorts = probabilities ** t2
        escorts = escorts / escorts.sum(-1, keepdim=True)
        derivative = delta_probs * forget_factor - escorts * delta_forget_sum
        return d_loss[..., None] * derivative, None, None, None, None


def tf_bi_tempered(activations, labels, t1, t2, label_smoothing=0.0, num_iters=5):
    if label_smoothing > 0.0:
        num_classes = labels.shape[-1]
        labels = (1 - num_classes / (num_classes - 1) * label_smoothing) * labels + label_smoothing / (num_classes - 1)
    return _TFBiTempered.apply(activations, labels, t1, t2, num_iters)


def _data(seed, n=7, k=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return z, y


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("t1,t2", [(0.8, 1.2), (0.2, 4.0), (1.0, 1.0), (0.5, 1.0), (1.0, 1.5), (0.0, 2.0)])
def test_bi_tempered_matches_the_authors(seed, t1, t2):
    z, y = _data(seed)
    oh = F.one_hot(y, 5).double()
    ref = tf_bi_tempered(z, oh, t1, t2)
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z, y, t1=t1, t2=t2, reduction="none"), ref,
                               rtol=1e-9, atol=1e-9)
    # soft targets, a batch of one
    soft = torch.softmax(torch.randn(1, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z[:1], soft, t1=t1, t2=t2, reduction="none"),
                               tf_bi_tempered(z[:1], soft, t1, t2), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t1,t2", [(0.8, 1.2), (0.2, 4.0), (0.5, 1.0)])
def test_bi_tempered_gradient_converges_to_the_authors_custom_gradient(t1, t2):
    z, y = _data(7)
    oh = F.one_hot(y, 5).double()
    za = z.clone().requires_grad_(True)
    tf_bi_tempered(za, oh, t1, t2, num_iters=40).sum().backward()
    zb = z.clone().requires_grad_(True)
    losskit.bi_tempered_logistic_loss(zb, y, t1=t1, t2=t2, num_iters=40, reduction="sum").backward()
    torch.testing.assert_close(zb.grad, za.grad, rtol=1e-9, atol=1e-9)
    # at num_iters = 40 the tempered probabilities sum to one (the normaliser has converged)
    p = losskit.tempered_softmax(z, t2, 40)
    torch.testing.assert_close(p.sum(-1), torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-12)


def test_bi_tempered_edges_smoothing_and_cross_entropy():
    z = torch.tensor([[30.0, -30.0, 0.0], [1e3, 0.0, -1e3], [0.5, 0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([1, 0, 2])
    oh = F.one_hot(y, 3).double()
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z, y, reduction="none"),
                               tf_bi_tempered(z, oh, 0.8, 1.2), rtol=1e-9, atol=1e-9)
    # bounded for t1 < 1: a confidently wrong prediction costs at most 1/(2-t1) + ... (finite), never inf
    assert torch.isfinite(losskit.bi_tempered_logistic_loss(z, y, reduction="none")).all()
    # the authors' smoothing eps is losskit's eps (K-1)/K
    z5, y5 = _data(2)
    eps = 0.1
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z5, y5, label_smoothing=eps * 5 / 4, reduction="none"),
                               tf_bi_tempered(z5, F.one_hot(y5, 5).double(), 0.8, 1.2, label_smoothing=eps),
                               rtol=1e-9, atol=1e-9)
    # t1 = t2 = 1 is cross-entropy (index targets: the target entropy is 0)
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z5, y5, t1=1.0, t2=1.0), F.cross_entropy(z5, y5))
    # ignored samples contribute nothing and leave the mean
    yi = y5.clone()
    yi[0] = -100
    torch.testing.assert_close(losskit.bi_tempered_logistic_loss(z5, yi),
                               losskit.bi_tempered_logistic_loss(z5[1:], y5[1:]))


# ---- port of google-research/augmix cifar.py @a43b785, train() (the JSD branch, lines ~225-240)
def augmix_official(logits_clean, logits_aug1, logits_aug2, targets):
    loss = F.cross_entropy(logits_clean, targets)
    p_clean, p_aug1, p_aug2 = F.softmax(logits_clean, dim=1), F.softmax(logits_aug1, dim=1), F.softmax(logits_aug2, dim=1)
    p_mixture = torch.clamp((p_clean + p_aug1 + p_aug2) / 3., 1e-7, 1).log()
    loss += 12 * (F.kl_div(p_mixture, p_clean, reduction='batchmean') +
                  F.kl_div(p_mixture, p_aug1, reduction='batchmean') +
                  F.kl_div(p_mixture, p_aug2, reduction='batchmean')) / 3.
    return loss


@pytest.mark.parametrize("seed", range(4))
def test_augmix_matches_the_authors(seed):
    g = torch.Generator().manual_seed(seed)
    zs = [(2 * torch.randn(6, 7, generator=g, dtype=torch.float64)).requires_grad_(True) for _ in range(3)]
    y = torch.randint(0, 7, (6,), generator=g)
    ref = augmix_official(*zs, y)
    mine = losskit.augmix_jsd(*zs, y)
    torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(ref, zs)
    g_mine = torch.autograd.grad(mine, zs)
    for a, b in zip(g_mine, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # batch of one; no target = the consistency term alone
    torch.testing.assert_close(losskit.augmix_jsd(*(z[:1] for z in zs), y[:1]),
                               augmix_official(*(z[:1] for z in zs), y[:1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.augmix_jsd(*zs) + F.cross_entropy(zs[0], y), ref, rtol=1e-12, atol=1e-12)


def test_augmix_clamp_difference_at_extreme_logits():
    z0 = torch.tensor([[30.0, -30.0, -30.0, 0.0]], dtype=torch.float64)
    z1 = torch.tensor([[29.0, -31.0, -29.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[-30.0, 30.0, -30.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    mine, ref = losskit.augmix_jsd(z0, z1, z2, y), augmix_official(z0, z1, z2, y)
    # class 2 has M ~ 1e-26 < 1e-7: the clamp binds there; the difference is below lam * 1e-7 per such class
    assert 0 <= (mine - ref).abs() < 12 * 1e-7 * 4
    # identical views: no consistency cost
    torch.testing.assert_close(losskit.augmix_jsd(z0, z0, z0), torch.zeros((), dtype=torch.float64))
