"""LegoGCD's LER + DKL (Cao et al., CVPR 2024).

Oracle: the authors' code, Cliffia123/LegoGCD @ 601141654f2dfd9bc72a63ea2c7b9bb86ec98b93: ``train.py``
(the ``mask_old`` selection, ``nll_loss`` with the debiasing prior ``qhat`` and ``loss += 2*nll_loss.mean()``)
and ``model.py`` (``DistillLoss``'s ``loss_entropy``, ``update_qhat``), ported below. The authors' DKL applies
``log_softmax`` to probabilities; losskit computes the KL divergence the paper states, so DKL is checked
against the port with that one call fixed (``log_softmax`` of the tempered logits), and the difference
from the unfixed port is pinned down.
"""

import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

ORACLES = [
    Oracle("legogcd", "Cliffia123/LegoGCD",
           "train.py (mask_old, nll_loss with qhat) and model.py (DistillLoss loss_entropy, update_qhat)",
           "601141654f2dfd9bc72a63ea2c7b9bb86ec98b93", "relation",
           differences="LER matches (1e-12, gradients 1e-10); the authors' DKL applies log_softmax to "
                       "probabilities, losskit computes the KL divergence the paper states: equal to the port with "
                       "that call fixed and to torch's kl_div (1e-12); the full objective is the authors' sum (1e-12)"),
]



def ref_ler(student_out, mask_lab, num_labeled_classes, qhat, thr=0.7):  # train.py, both views stacked
    unsup_logits = torch.softmax(student_out / 0.1, dim=-1)
    max_probs_, idx = torch.max(unsup_logits, dim=-1)
    mask_all = max_probs_.ge(thr)
    mask_lab_p = torch.cat([mask_lab, mask_lab], dim=0)
    mask_p_true = (mask_lab_p == False) & (mask_all == True)  # noqa: E712
    mask_old = torch.zeros_like(mask_p_true)
    mask_old[(idx.lt(num_labeled_classes)) & (mask_p_true == True)] = 1  # noqa: E712
    pseudo_label = torch.softmax((student_out / 0.05), dim=-1)
    delta_logits = torch.log(qhat)
    logits_u = student_out / 0.05 + 0.4 * delta_logits
    log_pred = F.log_softmax(logits_u, dim=-1)
    nll_loss = torch.sum(-pseudo_label * log_pred, dim=1) * mask_old
    return 2 * nll_loss.mean(), int(mask_old.sum())


def ref_dkl(student_output, fixed):  # DistillLoss.forward, the loss_entropy term
    student_out = (student_output / 0.1).chunk(2)
    s1, s2 = student_out
    p1 = torch.softmax(s1, dim=-1)
    if fixed:  # the KL of the paper: log-softmax of the tempered logits
        return torch.sum(p1 * (F.log_softmax(s1, dim=-1) - F.log_softmax(s2, dim=-1)), dim=-1).mean()
    p2 = torch.softmax(s2, dim=-1)
    return torch.sum(p1 * (F.log_softmax(p1, dim=-1) - F.log_softmax(p2, dim=-1)), dim=-1).mean()


def update_qhat(probs, qhat, momentum):
    return momentum * qhat + (1 - momentum) * probs.detach().mean(dim=0)


def _batch(n=24, k=10, known=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    # cosine-head logits in [-1, 1]; some rows confident (at T = 0.1) in a known or a novel class
    z = torch.tanh(0.4 * torch.randn(2 * n, k, generator=g, dtype=torch.float64))
    hot = torch.randint(0, k, (2 * n,), generator=g)
    z[torch.arange(2 * n), hot] += torch.rand(2 * n, generator=g, dtype=torch.float64) * 0.8
    mask_lab = torch.rand(n, generator=g) < 0.4
    qhat = torch.ones(1, k, dtype=torch.float64) / k
    for _ in range(5):  # a non-uniform running prior, updated as the authors do (momentum 0.999)
        qhat = update_qhat(torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 3, -1), qhat, 0.9)
    return z.requires_grad_(), mask_lab, qhat, known


def test_ler_matches_authors_value_and_gradient():
    z, mask_lab, qhat, known = _batch()
    ref, selected = ref_ler(z, mask_lab, known, qhat)
    assert 3 <= selected < 40  # the selection is neither empty nor everything
    za, zb = z.chunk(2)
    got = losskit.legogcd(za, zb, mask_lab, qhat, num_known=known, dkl_weight=0.0)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    g1, = torch.autograd.grad(got, z)
    g2, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)


def test_dkl_is_the_kl_divergence_of_the_two_views():
    z, mask_lab, qhat, known = _batch(seed=1)
    za, zb = z.chunk(2)
    got = losskit.legogcd(za, zb, mask_lab, qhat, num_known=known, ler_weight=0.0)
    torch.testing.assert_close(got, ref_dkl(z, fixed=True), rtol=1e-12, atol=0)
    # torch's kl_div agrees too
    kl = F.kl_div(F.log_softmax(zb / 0.1, -1), F.log_softmax(za / 0.1, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(got, kl, rtol=1e-12, atol=0)
    # the authors' unfixed term (log-softmax of probabilities) is a different, much flatter function
    assert abs(ref_dkl(z, fixed=False).item() - got.item()) > 0.1 * got.item()


def test_full_objective_is_the_authors_sum():
    z, mask_lab, qhat, known = _batch(seed=2)
    za, zb = z.chunk(2)
    got = losskit.legogcd(za, zb, mask_lab, qhat, num_known=known)
    ref = ref_ler(z, mask_lab, known, qhat)[0] + ref_dkl(z, fixed=True)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_uniform_prior_gives_entropy_and_selection_rules():
    z = torch.tensor([[0.9, -0.5, -0.5, -0.5, -0.5],   # confident, known class 0
                      [-0.5, -0.5, -0.5, 0.9, -0.5],   # confident, novel class 3
                      [0.1, 0.0, 0.05, 0.0, 0.02]], dtype=torch.float64)  # not confident
    lab = torch.tensor([False, False, False])
    per = losskit.legogcd(z, z, lab, num_known=3, reduction="none", ler_weight=1.0)
    p = torch.softmax(z[0] / 0.05, -1)
    torch.testing.assert_close(per[0], -(p * p.log()).sum())  # entropy of the sharpened prediction
    assert per[1].item() == 0 and per[2].item() == 0
    # a labelled sample is never selected
    assert losskit.legogcd(z, z, torch.tensor([True, False, False]), num_known=3, reduction="none")[0].item() == 0
