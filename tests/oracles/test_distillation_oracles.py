"""Oracle tests (issue 17) for the seed objectives of the distillation family."""

import math

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

PSKD_COMMIT = "9aa0828d099f2faed16bbac258e4153902a55021"
DHO_COMMIT = "846de7544054ba9ee8e19404a9efce64c2ef6518"
SINKD_COMMIT = "1ffac9010a4fc462d05e7ea0a0753aca062eca62"

ORACLES = [
    Oracle(objective="ps_kd", repo="lgcnsai/PS-KD-Pytorch", path="loss/pskd_loss.py, main.py (train)",
           commit=PSKD_COMMIT, agreement="1e-12",
           differences="Custom_CrossEntropy_PSKD averages over the batch like 'mean'. ProgressiveSelfKD follows "
                       "main.py's schedule alpha_t = alpha_T (epoch + 1) / end_epoch (fixed here: it was one "
                       "epoch behind)."),
    Oracle(objective="dho_loss", repo="erjui/DHO", path="train_imgnet.py (train loop), train_imgnet_semi.py",
           commit=DHO_COMMIT, agreement="relation",
           differences="official = 0.5 CE_L + 0.5 (KD_L + KD_U), each a mean over its own (labelled / unlabelled) "
                       "batch, T = 2; losskit's 'mean' pools both batches: with L = U samples losskit = official / 2 "
                       "at lam = 0.5, and sample_weight 1/L, 1/U with reduction='sum' gives the official value "
                       "exactly. losskit's default temperature is 1, the official scripts use T = 2 (reported)."),
    Oracle(objective="sinkhorn_kd", repo="2018cx/SinKD", path="loss.py (class Sinkhorn)", commit=SINKD_COMMIT,
           agreement="relation",
           differences="the official loss is 0.001 * sum(P * W) with W the L1 (cdist p=1) cost between softmax(z/2) "
                       "rows, P ten rounds of row/column normalisation of exp(-W/0.1) (marginals 1 per row/column, "
                       "not converged) and the transport part <P, W> only; losskit is the converged entropic OT "
                       "dual value with the squared-Euclidean cost and uniform 1/N marginals. No option of "
                       "sinkhorn_kd reproduces it (reported); the test checks the official plan against "
                       "losskit.transport.solve with the L1 cost once the normalisation has converged."),
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- PS-KD
# Port of lgcnsai/PS-KD-Pytorch @ 9aa0828d: loss/pskd_loss.py Custom_CrossEntropy_PSKD.forward (L12-20) and
# the soft targets of main.py train() (L418-433); alpha_t from main.py L323-324.
def _ref_pskd_loss(output, targets):
    log_probs = F.log_softmax(output, dim=1)
    loss = (- targets * log_probs).mean(0).sum()
    return loss


def _ref_soft_targets(targets, num_classes, alpha_t, prev_predictions, epoch):
    identity_matrix = torch.eye(num_classes, dtype=torch.float64)
    targets_one_hot = identity_matrix[targets]
    if epoch == 0:
        prev_predictions = targets_one_hot
    return ((1 - alpha_t) * targets_one_hot) + (alpha_t * prev_predictions)


def _ref_alpha_t(alpha_T, epoch, end_epoch):
    alpha_t = alpha_T * ((epoch + 1) / end_epoch)
    return max(0, alpha_t)


@pytest.mark.parametrize("scale,n", [(1.0, 8), (30.0, 8), (1e3, 5), (1.0, 1)])
def test_ps_kd_matches_official(scale, n):
    g = _gen(11)
    k = 6
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    prev_logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    alpha = _ref_alpha_t(0.8, 3, 10)
    soft = _ref_soft_targets(y, k, alpha, torch.softmax(prev_logits, 1), epoch=3)
    zr = z.clone().requires_grad_(True)
    ref = _ref_pskd_loss(zr, soft)
    zl = z.clone().requires_grad_(True)
    got = losskit.ps_kd(zl, prev_logits, y, alpha=alpha)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(zl.grad, zr.grad, rtol=1e-10, atol=1e-12)


def test_ps_kd_ties_and_masked_student_class():
    k = 4
    z = torch.zeros(3, k, dtype=torch.float64)  # tied logits
    prev = torch.zeros(3, k, dtype=torch.float64)
    y = torch.tensor([0, 1, 3])
    ref = _ref_pskd_loss(z, _ref_soft_targets(y, k, 0.5, torch.softmax(prev, 1), epoch=1))
    torch.testing.assert_close(losskit.ps_kd(z, prev, y, alpha=0.5), ref, rtol=1e-12, atol=1e-12)
    # a masked (-inf) student class that has no target mass (alpha = 0): 0 log 0 = 0 in losskit; the
    # official -targets * log_probs is 0 * -inf = NaN there (a documented difference)
    zm = z.clone()
    zm[0, 2] = -math.inf
    soft0 = _ref_soft_targets(y, k, 0.0, torch.softmax(prev, 1), epoch=1)
    assert torch.isnan(_ref_pskd_loss(zm, soft0))
    ref_finite = _ref_pskd_loss(zm.clamp_min(-1e300), soft0)
    torch.testing.assert_close(losskit.ps_kd(zm, prev, y, alpha=0.0), ref_finite, rtol=1e-12, atol=1e-12)


def test_progressive_self_kd_follows_official_schedule_over_epochs():
    n, k, E = 6, 4, 3
    g = _gen(12)
    m = losskit.ProgressiveSelfKD(n, k, total_epochs=E, alpha_T=0.8, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    idx = torch.arange(n)
    all_predictions = torch.zeros(n, k, dtype=torch.float64)
    for epoch in range(E):
        z = torch.randn(n, k, generator=g, dtype=torch.float64)
        m.set_epoch(epoch)
        alpha_t = _ref_alpha_t(0.8, epoch, E)
        assert m.alpha_t == pytest.approx(alpha_t)
        soft = _ref_soft_targets(y, k, alpha_t, all_predictions[idx], epoch)
        ref = _ref_pskd_loss(z, soft)
        torch.testing.assert_close(m(z, y, index=idx), ref, rtol=1e-12, atol=1e-12)
        all_predictions[idx] = F.softmax(z, dim=1)


# ------------------------------------------------------------------------------------------- DHO
# Port of erjui/DHO @ 846de754, train_imgnet.py L165-180 (the loss of one step: CE on the CE head of the
# labelled batch, batchmean KL on the KD head of the labelled and of the unlabelled batch, times T^2).
def _ref_dho_step(ce_l, kd_l, kd_u, t_l, t_u, labels, temperature=2.0):
    ce_loss = F.cross_entropy(ce_l, labels)
    distill_loss_labeled = F.kl_div(
        F.log_softmax(kd_l / temperature, dim=1),
        F.softmax(t_l / temperature, dim=1),
        reduction='batchmean'
    ) * (temperature * temperature)
    distill_loss_unlabeled = F.kl_div(
        F.log_softmax(kd_u / temperature, dim=1),
        F.softmax(t_u / temperature, dim=1),
        reduction='batchmean'
    ) * (temperature * temperature)
    return 0.5 * ce_loss + 0.5 * (distill_loss_labeled + distill_loss_unlabeled)


@pytest.mark.parametrize("L,U,scale", [(4, 4, 1.0), (3, 7, 1.0), (1, 1, 30.0), (2, 5, 1e3)])
def test_dho_loss_relation_to_official(L, U, scale):
    g = _gen(13)
    k, T = 5, 2.0
    ce = scale * torch.randn(L + U, k, generator=g, dtype=torch.float64)
    kd = scale * torch.randn(L + U, k, generator=g, dtype=torch.float64)
    teacher = scale * torch.randn(L + U, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (L,), generator=g)
    ref = _ref_dho_step(ce[:L], kd[:L], kd[L:], teacher[:L], teacher[L:], labels, temperature=T)
    target = torch.cat([labels, torch.full((U,), -1)])
    kw = dict(student_kd_logits=kd, lam=0.5, temperature=T, unlabeled_index=-1)
    w = torch.cat([torch.full((L,), 1.0 / L, dtype=torch.float64), torch.full((U,), 1.0 / U, dtype=torch.float64)])
    got = losskit.dho_loss(ce, teacher, target, sample_weight=w, reduction="sum", **kw)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    if L == U:  # the pooled mean is half the official step
        torch.testing.assert_close(2 * losskit.dho_loss(ce, teacher, target, **kw), ref, rtol=1e-12, atol=1e-12)


def test_dho_loss_gradient_matches_official():
    g = _gen(14)
    L = U = 3
    k = 4
    ce = torch.randn(L + U, k, generator=g, dtype=torch.float64, requires_grad=True)
    kd = torch.randn(L + U, k, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(L + U, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (L,), generator=g)
    target = torch.cat([labels, torch.full((U,), -1)])
    w = torch.full((L + U,), 1.0 / L, dtype=torch.float64)
    got = losskit.dho_loss(ce, teacher, target, student_kd_logits=kd, lam=0.5, temperature=2.0, unlabeled_index=-1,
                           sample_weight=w, reduction="sum")
    g1 = torch.autograd.grad(got, (ce, kd))
    ref = _ref_dho_step(ce[:L], kd[:L], kd[L:], teacher[:L], teacher[L:], labels)
    g2 = torch.autograd.grad(ref, (ce, kd))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------- SinKD
# Port of 2018cx/SinKD @ 1ffac901, loss.py class Sinkhorn (L119-139).
def _ref_sinkhorn_normalized(x, n_iters=10):
    for _ in range(n_iters):
        x = x / torch.sum(x, dim=1, keepdim=True)
        x = x / torch.sum(x, dim=0, keepdim=True)
    return x


def _ref_sinkhorn_loss(x, y, epsilon=0.1, n_iters=20):
    Wxy = torch.cdist(x, y, p=1)
    K = torch.exp(-Wxy / epsilon)
    P = _ref_sinkhorn_normalized(K, n_iters)
    return torch.sum(P * Wxy), P


def _ref_sinkd_forward(y_s, y_t, T=2):
    p_s = F.softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    emd_loss, _ = _ref_sinkhorn_loss(x=p_s, y=p_t)
    return 0.001 * emd_loss


def test_sinkhorn_kd_official_plan_is_losskits_l1_solver_plan_when_converged():
    g = _gen(15)
    n, k = 6, 5
    zs = torch.randn(n, k, generator=g, dtype=torch.float64)
    zt = torch.randn(n, k, generator=g, dtype=torch.float64)
    ps, pt = F.softmax(zs / 2, 1), F.softmax(zt / 2, 1)
    # official normalisation run to convergence: marginals 1 per row and column = N x the uniform plan
    _, P = _ref_sinkhorn_loss(ps, pt, n_iters=5000)
    res = losskit.transport.solve(ps, pt, eps=0.1, cost=lambda a, b: torch.cdist(a, b, p=1), tol=1e-13,
                                  max_iter=100000)
    torch.testing.assert_close(P / n, res.plan()[0], rtol=1e-8, atol=1e-12)
    # the official value (10 rounds, L1 cost, transport part, x 0.001) is not losskit's sinkhorn_kd: a stated
    # difference; record that they are not the same quantity at the defaults
    official = _ref_sinkd_forward(zs, zt)
    ours = losskit.sinkhorn_kd(zs, zt, temperature=2.0, eps=0.1, tol=1e-12)
    assert not torch.isclose(official, ours, rtol=1e-2)
