"""Bi-tempered logistic loss (tempered softmax link, tempered log score) and AugMix's JSD consistency loss."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT, NONNEGATIVE, Real
from .._core.inputs import LOGITS_LABELS, logits_labels_example, scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, check_rows
from ._targets import ROWS_CHECKED, class_last, resolve_targets, target_distribution

__all__ = ["log_t", "exp_t", "tempered_softmax", "bi_tempered_logistic_loss", "BiTemperedLogisticLoss",
           "augmix_jsd", "AugMixJSDLoss"]

BITEMPERED_PAPER = Paper("Robust Bi-Tempered Logistic Loss Based on Bregman Divergences", 2019, "1906.03361",
                         "Amid, Warmuth, Anil, Koren")
AUGMIX_PAPER = Paper("AugMix: A Simple Data Processing Method to Improve Robustness and Uncertainty", 2020,
                     "1912.02781", "Hendrycks, Mu, Cubuk, Zoph, Gilmer, Lakshminarayanan")


def log_t(u: torch.Tensor, t: float) -> torch.Tensor:
    """The tempered logarithm ``(u^{1-t} - 1) / (1 - t)`` (``log u`` at ``t = 1``)."""
    return torch.log(u) if t == 1 else (u.pow(1 - t) - 1) / (1 - t)


def exp_t(u: torch.Tensor, t: float) -> torch.Tensor:
    """The tempered exponential ``[1 + (1 - t) u]_+^{1/(1-t)}`` (``exp u`` at ``t = 1``)."""
    return torch.exp(u) if t == 1 else torch.relu(1 + (1 - t) * u).pow(1 / (1 - t))


def tempered_softmax(logits: torch.Tensor, t: float, num_iters: int = 5, dim: int = -1) -> torch.Tensor:
    """``exp_t(z - lambda_t(z))`` with ``lambda_t`` the normaliser making the entries sum to one (``t >= 1``).

    ``t = 1`` is the softmax. For ``t > 1`` the normaliser is the fixed-point iteration of the authors' code
    (``compute_normalization``): ``a <- (z - max z) * (sum_k exp_t(a_k))^{1-t}``, ``num_iters`` times, then
    ``lambda = -log_t(1 / sum_k exp_t(a_k)) + max z``. It converges geometrically; with the authors' 5
    iterations the result sums to one within about 1e-3 on logits of unit scale (more iterations, closer).
    """
    if t < 1:
        raise fail("t", "a temperature >= 1 (t < 1 needs a bisection normaliser, not implemented)", repr(t))
    z = logits.movedim(dim, -1)
    if t == 1:
        p = torch.softmax(z, -1)
    else:
        p = exp_t(z - _normaliser(z, t, num_iters), t)
    return p.movedim(-1, dim)


def _normaliser(z: torch.Tensor, t: float, num_iters: int) -> torch.Tensor:
    mu = z.amax(-1, keepdim=True)
    a0 = z - mu
    a = a0
    for _ in range(num_iters):
        a = a0 * exp_t(a, t).sum(-1, keepdim=True).pow(1 - t)
    partition = exp_t(a, t).sum(-1, keepdim=True)
    return -log_t(1 / partition, t) + mu


@objective(
    "bi_tempered_logistic_loss", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS,
    example=logits_labels_example, paper=BITEMPERED_PAPER, properties={"permutation_equivariant"},
    formula="L = sum_k [t_k (log_t1 t_k - log_t1 p_k) - (t_k^{2-t1} - p_k^{2-t1}) / (2 - t1)],  "
            "p = exp_t2(z - lambda_t2(z))",
    module_name="BiTemperedLogisticLoss",
    domains={"t1": Real(0.0, 1.0), "t2": Real(1.0, None), "num_iters": COUNT},
)
def bi_tempered_logistic_loss(logits: torch.Tensor, target: torch.Tensor, *, t1: float = 0.8, t2: float = 1.2,
                              num_iters: int = 5, ignore_index: int = -100, label_smoothing: float = 0.0,
                              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Bi-tempered logistic loss: a tempered log score (bounded for ``t1 < 1``) of a heavy-tailed tempered softmax.

    .. math:: \\ell(z, t) = \\sum_k \\Big[t_k\\big(\\log_{t_1} t_k - \\log_{t_1} p_k\\big)
              - \\tfrac{1}{2 - t_1}\\big(t_k^{2-t_1} - p_k^{2-t_1}\\big)\\Big],\\qquad
              p = \\exp_{t_2}\\big(z - \\lambda_{t_2}(z)\\big)

    ``t1`` in [0, 1] (``t1 < 1`` bounds the loss), ``t2 >= 1`` (``t2 > 1`` gives the link heavy tails);
    ``t1 = t2 = 1`` is cross-entropy minus the target's entropy. The normaliser ``lambda`` is the authors'
    fixed-point iteration, ``num_iters`` steps (their default 5; see :func:`tempered_softmax`): the value
    matches theirs at the same ``num_iters``. The gradient is autograd's through the iterations; the
    authors' custom gradient (which assumes an exactly normalised ``p``) agrees with it as ``num_iters``
    grows (1e-9 at 40 iterations). ``t2 < 1`` (the authors' later bisection) is not implemented.
    Targets: class indices (with ``ignore_index``) or distributions. † ``label_smoothing`` is torch's
    ``(1 - eps) t + eps/K``; the authors' code smooths as ``(1 - K eps/(K-1)) t + eps/(K-1)`` (their
    ``eps`` is ``eps (K-1)/K`` here). The authors add 1e-10 to the targets inside ``log_t``; losskit uses
    ``0 log_t 0 = 0`` (a difference of about 1e-10).

    Paper: Amid, Warmuth, Anil, Koren, "Robust Bi-Tempered Logistic Loss Based on Bregman Divergences",
    2019, arXiv:1906.03361. Code: google/bi-tempered-loss (``tensorflow/loss.py``).
    """
    t = resolve_targets(class_last(logits), target, ignore_index=ignore_index, label_smoothing=label_smoothing)
    z = t.logits
    if t.mask is not None:  # ignored rows: any finite row (a fully masked one would make the normaliser NaN)
        z = torch.where(t.mask[..., None], z, torch.zeros_like(z))
    p = tempered_softmax(z, t2, num_iters)
    y = target_distribution(t, p.dtype)
    b = 2 - t1
    zero = p.new_zeros(())
    ylogy = torch.where(y > 0, y * log_t(torch.where(y > 0, y, torch.ones_like(y)), t1), zero)
    p_safe = torch.where(p > 0, p, torch.ones_like(p))
    # y log_t p: where p = 0 and y = 0 the term is 0; where p = 0 and y > 0 it is y log_t(0) (finite for t1 < 1)
    ylogp = torch.where(y > 0, y * torch.where(p > 0, log_t(p_safe, t1), log_t(p.new_zeros(()), t1)), zero)
    per = (ylogy - ylogp - (y.pow(b) - p.pow(b)) / b).sum(-1)
    return finish(per, reduction, sample_weight=sample_weight, mask=t.mask)


# ------------------------------------------------------------------------------------------ AugMix
def views_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    z = [2 * torch.randn(n, k, generator=gen, dtype=torch.float64) for _ in range(3)]
    y = torch.randint(0, k, (n,), generator=gen)
    return Example({"logits": z[0].to(dtype), "logits_aug1": z[1].to(dtype), "logits_aug2": z[2].to(dtype),
                    "target": y}, grad=("logits", "logits_aug1", "logits_aug2"))


def _views_bad(ex: Example) -> list[BadInput]:
    z, a, y = ex.inputs["logits"], ex.inputs["logits_aug1"], ex.inputs["target"]
    inf = a.clone()
    inf[0, 1] = float("inf")
    return [
        BadInput("a view of another shape", ex.replace({"logits_aug1": a[:, :-1]}), "logits_aug1"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(y, z.shape[1] + 2)}), "target"),
        BadInput("target batch mismatch", ex.replace({"target": y[:-1]}), "target"),
        BadInput("+inf logit in a view", ex.replace({"logits_aug1": inf}), "logits_aug1"),
        BadInput("integer logits", ex.replace({"logits": z.round().long()}), "logits"),
    ]


AUGMIX_VIEWS = InputKind("three views' logits+labels",
                         "logits (N, K, *) of the clean input and of two augmentations, class indices (N, *) or None",
                         bad_inputs=_views_bad, extreme=scale_input("logits"))


@objective(
    "augmix_jsd", family="classification", input_kind=AUGMIX_VIEWS, example=views_example, paper=AUGMIX_PAPER,
    properties={"nonnegative"}, module_name="AugMixJSDLoss",
    allow_neg_inf=("logits", "logits_aug1", "logits_aug2"),
    formula="L = CE(z, y) + lam JS(p, p1, p2),  JS = (1/3) sum_v KL(p_v || M),  M = (p + p1 + p2) / 3",
    domains={"lam": NONNEGATIVE},
)
def augmix_jsd(logits: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor,
               target: torch.Tensor | None = None, *, lam: float = 12.0, ignore_index: int = -100,
               sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """AugMix's loss: cross-entropy on the clean input plus the Jensen-Shannon consistency of three views.

    .. math:: \\ell = \\mathrm{CE}(z, y) + \\lambda\\,\\tfrac13 \\sum_{v \\in \\{0,1,2\\}}
              \\mathrm{KL}(p_v \\,\\|\\, M),\\qquad M = \\tfrac13 (p_0 + p_1 + p_2),\\ p_v = \\mathrm{softmax}(z_v)

    ``logits`` of the clean image, ``logits_aug1`` / ``logits_aug2`` of two AugMix chains (class axis 1,
    as ``cross_entropy``); ``target`` class indices or ``None`` (the consistency term alone, e.g. on
    unlabelled data). ``lam >= 0``, 12 as the authors. ``log M`` is formed in log space (a
    log-sum-exp of the three log-probabilities). † The authors clamp ``M`` to ``[1e-7, 1]`` before the
    log ("to avoid exploding KL divergence"); losskit does not, so the two differ only on classes where
    all three views put less than 1e-7 mass (by less than ``lam * 1e-7`` per such class and sample).

    Paper: Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness and
    Uncertainty", 2020, arXiv:1912.02781. Code: google-research/augmix (``cifar.py``, ``train``).
    """
    check_floating("logits", logits)
    if logits.dim() < 2:
        raise fail("logits", "logits (N, K, *) with a class dimension", f"shape {tuple(logits.shape)}")
    for name, v in (("logits_aug1", logits_aug1), ("logits_aug2", logits_aug2)):
        check_floating(name, v)
        if v.shape != logits.shape:
            raise fail(name, f"the shape of logits {tuple(logits.shape)}", f"shape {tuple(v.shape)}")
    z = class_last(logits)
    if target is not None:
        t = resolve_targets(z, target, ignore_index=ignore_index)
        valid = t.mask
    else:
        t, valid = None, None
    views = []
    for name, v in (("logits", logits), ("logits_aug1", logits_aug1), ("logits_aug2", logits_aug2)):
        vl = class_last(v, name)
        check_rows(name, vl, dim=-1, ignored=None if valid is None else ~valid)
        if valid is not None:
            vl = torch.where(valid[..., None], vl, torch.zeros_like(vl))
        views.append(torch.log_softmax(vl, -1))
    log_m = torch.logsumexp(torch.stack(views), 0) - math.log(3)
    zero = log_m.new_zeros(())
    js = sum(torch.where(lp > -math.inf, lp.exp() * (lp - log_m), zero).sum(-1) for lp in views) / 3
    per = lam * js if lam else torch.zeros_like(js)
    if t is not None:
        ce = -views[0].gather(-1, t.index[..., None])[..., 0]
        per = per + ce
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


BiTemperedLogisticLoss = bi_tempered_logistic_loss.Module
AugMixJSDLoss = augmix_jsd.Module
