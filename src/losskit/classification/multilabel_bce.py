"""Elementwise sigmoid losses for multi-label classification: timm's BCE and the asymmetric loss (ASL).

Both take logits ``(N, K)`` (or any shape) and targets of the same shape with values in [0, 1], or, for
``(N, K)`` logits, class indices ``(N,)`` (one positive per row, as timm's ``BinaryCrossEntropy``). The
loss is elementwise, one value per logit: ``reduction='mean'`` averages over every element (as
``torch.nn.functional.binary_cross_entropy_with_logits``), ``'sum'`` adds them, ``'none'`` returns the
logits' shape.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import HALF_OPEN_UNIT, NONNEGATIVE, TENSOR, UNIT, Maybe, Real
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_class_weight, check_floating, check_labels
from .._core.values import UNIT_VALUES
from ._inputs import MULTILABEL, multilabel_example
from .margins import softplus
from .multilabel import _positives

__all__ = ["binary_cross_entropy", "BinaryCrossEntropyLoss", "asymmetric_loss", "AsymmetricLoss"]

ASL_PAPER = Paper("Asymmetric Loss For Multi-Label Classification", 2021, "2009.14119",
                  "Ridnik, Ben-Baruch, Zamir, Noy, Friedman, Protter, Zelnik-Manor")


def multilabel_soft_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = (torch.rand(n, k, generator=gen) < 0.4).to(torch.float64)
    target[0] = torch.rand(k, generator=gen, dtype=torch.float64)  # one row of soft targets
    return Example({"logits": logits.to(dtype), "target": target.to(dtype)}, grad=("logits",))


def _soft_bad(ex: Example) -> list[BadInput]:
    logits, target = ex.inputs["logits"], ex.inputs["target"]
    inf = logits.clone()
    inf.view(-1)[0] = float("inf")
    return [
        BadInput("target outside [0, 1]", ex.replace({"target": target + 2}), "target"),
        BadInput("target of another shape", ex.replace({"target": target[:, :-1]}), "target"),
        BadInput("class indices out of range", ex.replace({"target": torch.full((logits.shape[0],), 99)}), "target"),
        BadInput("+inf logit", ex.replace({"logits": inf}), "logits"),
        BadInput("integer logits", ex.replace({"logits": logits.round().long()}), "logits"),
    ]


MULTILABEL_SOFT = InputKind("logits+multi-label targets",
                            "logits (N, K) and targets in [0, 1] of the same shape, or class indices (N,)",
                            bad_inputs=_soft_bad, extreme=scale_input("logits"), values={"target": UNIT_VALUES})


def multilabel_targets(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Targets of the logits' shape: dense targets as given, class indices ``(N,)`` one-hot over the last
    dimension; then ``t (1 - eps) + eps / K`` (timm's on/off values ``1 - eps + eps/K`` and ``eps/K``)."""
    check_floating("logits", logits)
    if not isinstance(target, torch.Tensor):
        raise fail("target", "a tensor of targets in [0, 1] or class indices", type(target).__name__)
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise fail("target", f"targets of the logits' shape {tuple(logits.shape)} or class indices",
                       f"shape {tuple(target.shape)}")
        t = target.to(logits.dtype)
    else:
        if logits.dim() != 2 or tuple(target.shape) != (logits.shape[0],):
            raise fail("target", f"class indices of shape ({logits.shape[0]},) for logits (N, K), or targets of "
                                 f"the logits' shape", f"{target.dtype} of shape {tuple(target.shape)}")
        check_labels("target", target, logits.shape[-1])
        t = torch.nn.functional.one_hot(target.long(), logits.shape[-1]).to(logits.dtype)
    if label_smoothing:
        t = t * (1 - label_smoothing) + label_smoothing / logits.shape[-1]
    return t


def _power(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """``base ** gamma`` for ``base >= 0`` with ``0 ** 0 = 1`` and a zero (not inf/NaN) gradient at 0."""
    if gamma == 0:
        return torch.ones_like(base)
    pos = base > 0
    return torch.where(pos, torch.where(pos, base, torch.ones_like(base)).pow(gamma), torch.zeros_like(base))


def _bce(logits: torch.Tensor, t: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """``-[pw t log s(x) + (1 - t) log(1 - s(x))]``, each term only where its weight is non-zero."""
    zero = logits.new_zeros(())
    pos = t if pos_weight is None else t * pos_weight
    return torch.where(t > 0, pos * softplus(-logits), zero) + torch.where(t < 1, (1 - t) * softplus(logits), zero)


@objective(
    "binary_cross_entropy", family="classification", input_kind=MULTILABEL_SOFT, example=multilabel_soft_example,
    properties={"nonnegative", "convex"}, module_name="BinaryCrossEntropyLoss",
    formula="L = -w_k [pw_k t_k log sigmoid(x_k) + (1 - t_k) log sigmoid(-x_k)],  t = (1 - eps) y + eps/K, "
            "then t <- [t > threshold] if a threshold is set",
    domains={"pos_weight": TENSOR, "target_threshold": Maybe(UNIT), "label_smoothing": HALF_OPEN_UNIT},
)
def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
                         pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                         target_threshold: float | None = None, sample_weight: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """Multi-label binary cross-entropy with ``pos_weight``, label smoothing and a target threshold.

    .. math:: \\ell_{ik} = -w_k\\big[p_k\\, t_{ik} \\log \\sigma(x_{ik}) + (1 - t_{ik}) \\log \\sigma(-x_{ik})\\big],
              \\qquad t = (1-\\varepsilon)\\, y + \\varepsilon / K

    timm's ``BinaryCrossEntropy`` as a losskit objective: class-index targets ``(N,)`` become one-hot rows
    with timm's smoothed on/off values ``1 - eps + eps/K`` / ``eps/K``; then, if ``target_threshold`` is
    set, ``t <- 1[t > threshold]`` (timm's use with mixup/cutmix targets). ``weight`` ``(K,)`` per class
    and ``pos_weight`` ``(K,)`` (the positive term's weight) are torch's. Elementwise: ``'mean'`` is the
    mean over all ``N x K`` entries (torch's and timm's). The log-sigmoids are the stable ``softplus``
    forms, and a ``-inf`` logit with target 0 gives 0 (torch gives NaN there).
    † timm smooths only class-index targets (dense targets are taken to be smoothed upstream) and its
    default smoothing is 0.1; losskit smooths both kinds and defaults to 0 (torch's default).

    Paper: standard. Reference: huggingface/pytorch-image-models, ``timm/loss/binary_cross_entropy.py``.
    """
    t = multilabel_targets(logits, target, label_smoothing)
    if target_threshold is not None:
        t = (t > target_threshold).to(t.dtype)
    k = logits.shape[-1]
    pw = check_class_weight(pos_weight, k, "pos_weight")
    w = check_class_weight(weight, k, "weight")
    loss = _bce(logits, t, None if pw is None else pw.to(logits.dtype))
    if w is not None:
        loss = loss * w.to(logits.dtype)
    return finish(loss, reduction, sample_weight=sample_weight)


@objective(
    "asymmetric_loss", family="classification", input_kind=MULTILABEL, example=multilabel_example,
    paper=ASL_PAPER, properties={"nonnegative"}, module_name="AsymmetricLoss",
    formula="L = -y (1 - p)^gamma_pos log p - (1 - y) p_m^gamma_neg log(1 - p_m),  p = sigmoid(x), "
            "p_m = max(p - clip, 0)",
    domains={"gamma_pos": NONNEGATIVE, "gamma_neg": NONNEGATIVE, "clip": Real(0.0, 1.0, hi_open=True)},
)
def asymmetric_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                    clip: float = 0.05, sample_weight: torch.Tensor | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """Asymmetric loss (ASL) for multi-label classification: focusing and probability shifting on negatives.

    .. math:: \\ell = -y\\,(1-p)^{\\gamma_+} \\log p \\;-\\; (1-y)\\, p_m^{\\gamma_-} \\log(1 - p_m),
              \\qquad p = \\sigma(x),\\ p_m = \\max(p - m, 0)

    ``clip`` is the paper's probability margin ``m``: it shifts the probability of a negative down by ``m``
    (a negative with ``p <= m`` is discarded entirely: loss and gradient 0), as the official code's
    ``xs_neg = (1 - p + clip).clamp(max=1)``; it is not a clamp of the logits. Defaults
    ``gamma_neg=4, gamma_pos=1, clip=0.05`` (the official ``AsymmetricLoss``). Gradients flow through the
    focusing weights (the official default). Elementwise: the official module returns the sum over every
    entry, i.e. ``reduction='sum'`` here. Targets: multi-hot ``(N, K)`` (bool or 0/1) or class indices
    ``(N,)``; soft targets are refused (the official code mixes the two focusing exponents for them).
    † ``log p`` is the exact log-sigmoid ``-softplus(-x)``; the official code computes
    ``log(max(p, 1e-8))``, so the two differ only for a positive with ``x < -18.4`` (at ``x = -30``:
    18.42 official, 30 here).

    Paper: Ridnik et al., "Asymmetric Loss For Multi-Label Classification", 2021, arXiv:2009.14119.
    Code: Alibaba-MIIL/ASL (``src/loss_functions/losses.py``, ``AsymmetricLoss``).
    """
    check_floating("logits", logits)
    if logits.dim() != 2:
        raise fail("logits", "shape (N, K)", f"shape {tuple(logits.shape)}")
    t = _positives(logits, target).to(logits.dtype)
    zero = logits.new_zeros(())
    pos_term = softplus(-logits) * _power(torch.sigmoid(-logits), gamma_pos)  # -log p (1 - p)^g+
    if clip > 0:
        p_m = torch.clamp(torch.sigmoid(logits) - clip, min=0.0)  # the paper's shifted probability
        neg_log = -torch.log1p(-p_m)  # -log(1 - p_m) = -log(min(1 - p + m, 1))
    else:
        p_m = torch.sigmoid(logits)
        neg_log = softplus(logits)
    neg_term = neg_log * _power(p_m, gamma_neg)
    loss = torch.where(t > 0, t * pos_term, zero) + torch.where(t < 1, (1 - t) * neg_term, zero)
    return finish(loss, reduction, sample_weight=sample_weight)


BinaryCrossEntropyLoss = binary_cross_entropy.Module
AsymmetricLoss = asymmetric_loss.Module
