"""Logit distillation beyond KL at one temperature: DKD (target / non-target decoupling), DIST (Pearson
correlations), logit-standardised KD, and GKD's generalised Jensen-Shannon divergence.

Shapes and conventions as :mod:`.losses`: logits ``(N, K, *)`` with the classes on axis 1, labels ``(N, *)``
(``ignore_index`` positions contribute 0 and leave the mean), gradients flow into ``teacher_logits`` unless
the caller detaches them.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, UNIT
from ..classification.margins import masked_logsumexp
from ..divergences.generators import KL, REVERSE_KL, skew_js_generator
from ._inputs import STUDENT_TEACHER, kd_example
from .losses import _check_pair, _cross_entropy, _valid, rows, soft_divergence

__all__ = ["dkd_loss", "DKDLoss", "dist_loss", "DISTLoss", "logit_standardized_kd", "LogitStandardizedKD",
           "gkd_loss", "GKDLoss"]

_KD = dict(family="distillation", input_kind=STUDENT_TEACHER)


def _xlogy_diff(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """``p (log p - log q)`` elementwise from log-probabilities, 0 where ``p = 0``."""
    ok = lp > float("-inf")
    return torch.where(ok, lp.exp() * (torch.where(ok, lp, 0.0) - lq), torch.zeros_like(lp))


@objective("dkd_loss", paper=Paper("Decoupled Knowledge Distillation", 2022, "2203.08679",
                                   "Zhao, Cui, Song, Qiu, Liang"),
           example=lambda g, d: kd_example(g, d), properties={"nonnegative"}, module_name="DKDLoss",
           formula="ce_weight CE(z_s, y) + T^2 [alpha KL(b_t || b_s) + beta KL(p^_t || p^_s)],  b = (p_y, 1 - p_y), "
                   "p^ = softmax over the non-target classes, p = softmax(z / T)",
           domains={"alpha": NONNEGATIVE, "beta": NONNEGATIVE, "temperature": POSITIVE, "ce_weight": NONNEGATIVE},
           **_KD)
def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, *,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, ce_weight: float = 1.0,
             ignore_index: int = -100, sample_weight: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Decoupled knowledge distillation: target-class KD (TCKD) and non-target-class KD (NCKD) weighted apart.

    .. math:: \\ell = w_{ce}\\,\\mathrm{CE}(z_s, y) + T^2\\big[\\alpha\\,\\mathrm{KL}(b^t \\| b^s)
              + \\beta\\,\\mathrm{KL}(\\hat p^t \\| \\hat p^s)\\big]

    with ``b = (p_y, 1 - p_y)`` the binary target/non-target split of ``p = softmax(z / T)`` and
    ``p^`` the softmax over the non-target classes. Defaults ``alpha=1, beta=8, T=4, ce_weight=1`` (the
    official CIFAR-100 setting; their ImageNet ``beta`` is 0.5). The non-target distribution is an exact
    masked softmax (the official code subtracts 1000 from the target logit). The official warm-up factor
    ``min(epoch / 20, 1)`` on the KD terms is the caller's (scale ``alpha`` and ``beta``).

    Paper: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", 2022, arXiv:2203.08679. Code:
    megvii-research/mdistiller (``mdistiller/distillers/DKD.py``).
    """
    if target is None:
        raise fail("target", "class indices (DKD splits the target class from the others)", "None")
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    zs = rows("student_logits", student_logits, valid)
    zt = rows("teacher_logits", teacher_logits, valid)
    idx = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
    gt = torch.zeros_like(zs, dtype=torch.bool).scatter(1, idx, True)
    parts = []
    for z in (zt, zs):
        lp = torch.log_softmax(z / temperature, 1)
        log_gt = lp.gather(1, idx)
        log_rest = masked_logsumexp(lp, ~gt, dim=1, keepdim=True)  # log(1 - p_y), no cancellation
        parts.append((torch.cat([log_gt, log_rest], 1), lp - log_rest))
    (bt, nt), (bs, ns) = parts
    tckd = _xlogy_diff(bt, bs).sum(1)
    nckd = torch.where(gt, torch.zeros_like(nt), _xlogy_diff(torch.where(gt, float("-inf"), nt), ns)).sum(1)
    per = temperature ** 2 * (alpha * tckd + beta * nckd)
    if ce_weight:
        per = per + ce_weight * _cross_entropy(zs, target, ignore_index)[0]
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


def _pearson_rows(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Pearson correlation of each row of ``x`` and ``y`` ``(R, M)`` over the entries weighted by ``w`` (0/1)
    ``(R, M)``; the official ``cosine_similarity`` of centred rows with ``eps`` added to the norm product."""
    n = w.sum(1, keepdim=True).clamp(min=1)
    xc = (x - (w * x).sum(1, keepdim=True) / n) * w
    yc = (y - (w * y).sum(1, keepdim=True) / n) * w
    return (xc * yc).sum(1) / (xc.norm(dim=1) * yc.norm(dim=1) + eps)


@objective("dist_loss", paper=Paper("Knowledge Distillation from A Stronger Teacher", 2022, "2205.10536",
                                    "Huang, You, Wang, Qian, Xu"),
           example=lambda g, d: kd_example(g, d), properties=set(), module_name="DISTLoss",
           per_sample=False, batch_scalar=True, sample_weight=False,
           formula="T^2 [beta (1 - mean_i rho(p_s,i, p_t,i)) + gamma (1 - mean_k rho(p_s,:k, p_t,:k))],  "
                   "p = softmax(z / T), rho the Pearson correlation",
           domains={"beta": NONNEGATIVE, "gamma": NONNEGATIVE, "temperature": POSITIVE, "eps": NONNEGATIVE}, **_KD)
def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None, *,
              beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0, eps: float = 1e-8,
              ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """DIST: match the teacher's inter-class (per sample) and intra-class (per class, over the batch) relations.

    .. math:: \\ell = T^2\\Big[\\beta\\Big(1 - \\frac1N \\sum_i \\rho(p^s_{i\\cdot}, p^t_{i\\cdot})\\Big)
              + \\gamma\\Big(1 - \\frac1K \\sum_k \\rho(p^s_{\\cdot k}, p^t_{\\cdot k})\\Big)\\Big]

    ``rho`` the Pearson correlation (centred cosine with ``eps`` added to the norm product, as the
    official ``cosine_similarity``), ``p = softmax(z / T)``. The intra-class term couples the batch: one
    loss for the batch (``reduction`` has no effect). ``(N, K, *)`` logits are flattened to
    ``(N prod(*), K)`` rows as the official segmentation variant. ``target`` is optional and only selects
    the rows that count (``ignore_index`` rows leave both terms). Defaults ``beta = gamma = 1, T = 1``
    (the ported file's); ``T^2`` follows Hinton's scaling (a factor 1 at ``T = 1``).

    Paper: Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", 2022,
    arXiv:2205.10536. Code: hunto/DIST_KD (``segmentation/losses/dist_kd.py``).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    zs = rows("student_logits", student_logits, valid)
    zt = rows("teacher_logits", teacher_logits, valid)
    k = zs.shape[1]
    ps = torch.softmax(zs.movedim(1, -1).reshape(-1, k) / temperature, -1)
    pt = torch.softmax(zt.movedim(1, -1).reshape(-1, k) / temperature, -1)
    w = torch.ones(ps.shape[0], dtype=ps.dtype, device=ps.device) if valid is None else valid.reshape(-1).to(ps.dtype)
    count = w.sum()
    inter = (_pearson_rows(ps, pt, w[:, None].expand_as(ps), eps) * w).sum() / count.clamp(min=1)
    intra = _pearson_rows(ps.T, pt.T, w[None, :].expand_as(ps.T), eps).mean()
    loss = temperature ** 2 * (beta * (1 - inter) + gamma * (1 - intra))
    return torch.where(count > 0, loss, torch.zeros_like(loss))


def standardize(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``(z - mean z) / std z`` along ``dim`` (unbiased std, as ``torch.std``); a constant row maps to 0."""
    mean = logits.mean(dim, keepdim=True)
    std = logits.std(dim, keepdim=True)
    ok = std > 0
    return torch.where(ok, (logits - mean) / torch.where(ok, std, torch.ones_like(std)), torch.zeros_like(logits))


@objective("logit_standardized_kd",
           paper=Paper("Logit Standardization in Knowledge Distillation", 2024, "2403.01427",
                       "Sun, Ren, Li, Wang, Cao"),
           example=lambda g, d: kd_example(g, d), properties={"nonnegative"}, module_name="LogitStandardizedKD",
           formula="ce_weight CE(z_s, y) + kd_weight T^2 KL(softmax(Z(z_t)/T) || softmax(Z(z_s)/T)),  "
                   "Z(z) = (z - mean z) / std z",
           domains={"temperature": POSITIVE, "ce_weight": NONNEGATIVE, "kd_weight": NONNEGATIVE},
           allow_neg_inf=(), **_KD)
def logit_standardized_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                          target: torch.Tensor | None = None, *, temperature: float = 2.0, ce_weight: float = 1.0,
                          kd_weight: float = 1.0, ignore_index: int = -100,
                          sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """KD on z-score-standardised logits: the student matches the teacher's logit relations, not their scale.

    .. math:: \\ell = w_{ce}\\,\\mathrm{CE}(z_s, y) + w_{kd}\\,T^2\\,
              \\mathrm{KL}\\big(\\pi(\\mathcal Z(z_t)/T)\\,\\|\\,\\pi(\\mathcal Z(z_s)/T)\\big),\\qquad
              \\mathcal Z(z) = \\frac{z - \\bar z}{\\sigma(z)}

    (``sigma`` the unbiased standard deviation over the classes, as the official ``normalize``; a
    constant row maps to 0). The CE term (on the raw student logits) only with ``target``. The authors'
    per-experiment weights vary (e.g. CE 0.1, KD 9 on CIFAR-100): losskit's defaults ``1, 1`` and
    ``T = 2`` are neutral choices, not theirs. ``-inf`` logits are refused (the standardisation of a
    masked row is undefined).

    Paper: Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", 2024,
    arXiv:2403.01427. Code: sunshangquan/logit-standardization-KD (``mdistiller/distillers/KD_ours.py``).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    zs = rows("student_logits", student_logits, valid)
    zt = rows("teacher_logits", teacher_logits, valid)
    per = kd_weight * temperature ** 2 * soft_divergence(standardize(zs), standardize(zt), temperature, KL)
    if target is not None and ce_weight:
        per = per + ce_weight * _cross_entropy(zs, target, ignore_index)[0]
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


@objective("gkd_loss", paper=Paper("On-Policy Distillation of Language Models: Learning from Self-Generated "
                                   "Mistakes", 2024, "2306.13649", "Agarwal, Vieillard, Zhou, Stanczyk, Ramos, "
                                   "Geist, Bachem"),
           example=lambda g, d: kd_example(g, d), properties={"nonnegative"}, module_name="GKDLoss",
           formula="JSD(beta) = beta KL(p_t || m) + (1 - beta) KL(p_s || m),  m = beta p_t + (1 - beta) p_s, "
                   "p = softmax(z / T); beta = 0: KL(p_t || p_s), beta = 1: KL(p_s || p_t)",
           domains={"beta": UNIT, "temperature": POSITIVE},
           allow_neg_inf=("student_logits", "teacher_logits"), **_KD)
def gkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None, *,
             beta: float = 0.5, temperature: float = 1.0, ignore_index: int = -100,
             sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """GKD's generalised Jensen-Shannon divergence between teacher and student token distributions.

    .. math:: \\mathrm{JSD}(\\beta) = \\beta\\,\\mathrm{KL}(p_t \\| m) + (1-\\beta)\\,\\mathrm{KL}(p_s \\| m),
              \\qquad m = \\beta p_t + (1-\\beta) p_s

    As TRL's ``GKDTrainer.generalized_jsd_loss``: ``beta = 0`` is the forward KL ``KL(p_t || p_s)`` and
    ``beta = 1`` the reverse ``KL(p_s || p_t)`` (the limits of ``JSD(beta)`` divided by ``beta`` /
    ``1 - beta``); in between it is :func:`losskit.generalized_js_divergence` with ``pi = beta``, ``p``
    the teacher (the same generator, :func:`~losskit.divergences.skew_js_generator`). Logits ``(N, V, *)``
    with the vocabulary on axis 1 (pass TRL's ``(B, T, V)`` as ``.transpose(1, 2)``); ``target`` ``(N, *)``
    masks positions equal to ``ignore_index`` (TRL's ``labels != -100``), and ``'mean'`` is over the
    counted tokens (TRL's ``'batchmean'`` with labels). No ``T^2`` factor (as TRL).

    Paper: Agarwal et al., "On-Policy Distillation of Language Models: Learning from Self-Generated
    Mistakes", 2024, arXiv:2306.13649. Code: huggingface/trl (``trl/experimental/gkd/gkd_trainer.py``).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    zs = rows("student_logits", student_logits, valid)
    zt = rows("teacher_logits", teacher_logits, valid)
    gen = KL if beta == 0 else REVERSE_KL if beta == 1 else skew_js_generator(beta)
    per = soft_divergence(zs, zt, temperature, gen)
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


DKDLoss = dkd_loss.Module
DISTLoss = dist_loss.Module
LogitStandardizedKD = logit_standardized_kd.Module
GKDLoss = gkd_loss.Module
