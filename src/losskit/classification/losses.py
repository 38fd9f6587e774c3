"""Cross-entropy and focal losses: expected scores of softmax / sigmoid links."""

from __future__ import annotations

import torch

from .._core import Paper, finish, objective
from .._core.domains import NONNEGATIVE, UNIT, Maybe
from .._core.inputs import BINARY_LOGITS, LOGITS_LABELS, binary_example, logits_labels_example
from .._core.validate import check_floating, check_same_shape
from ._targets import ROWS_CHECKED, classwise_loss
from .margins import guarded, margin_logsumexp, softplus

__all__ = ["cross_entropy", "CrossEntropyLoss", "focal", "FocalLoss", "binary_focal", "BinaryFocalLoss"]

FOCAL_PAPER = Paper("Focal Loss for Dense Object Detection", 2017, "1708.02002", "Lin, Goyal, Girshick, He, Dollár")


@objective(
    "cross_entropy", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    properties={"nonnegative", "convex", "calibrated", "proper", "shift_invariant", "permutation_equivariant"},
    formula="L(z, t) = -sum_k t_k w_k log softmax(z)_k,  t = (1-eps) onehot(y) + eps/K",
    module_name="CrossEntropyLoss",
)
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy between softmax(logits) and class indices or a target distribution.

    .. math:: \\ell(z, t) = -\\sum_k t_k\\, w_k \\log \\mathrm{softmax}(z)_k,
              \\qquad t = (1-\\varepsilon)\\,\\mathrm{onehot}(y) + \\varepsilon / K

    Same semantics as :func:`torch.nn.functional.cross_entropy` (class dimension 1, ``weight`` per
    class, ``ignore_index``, ``label_smoothing``; with class-index targets the mean divides by
    ``sum_i w[y_i]``, with probability targets by the number of samples), plus ``sample_weight`` and
    losskit's conventions: an all-ignored batch gives 0 rather than NaN, ignored positions never
    leak, half-precision inputs are computed and returned in float32.

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ...)`` unnormalised scores z.
        target: class indices ``(N, d1, ...)`` or class probabilities of the logits' shape.
        weight: per-class weights w, shape ``(K,)``.
        ignore_index: class-index value that is skipped.
        label_smoothing: eps in [0, 1].
        sample_weight: per-sample weights, shape ``(N,)`` or the per-sample loss shape.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'``.

    Paper: standard.
    """
    return classwise_loss(logits, target, margin_logsumexp, weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, sample_weight=sample_weight, reduction=reduction)


@objective(
    "focal", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=FOCAL_PAPER, properties={"nonnegative", "calibrated", "shift_invariant", "permutation_equivariant"},
    formula="L(z, y) = -alpha_y (1 - p_y)^gamma log p_y,  p = softmax(z)",
    module_name="FocalLoss", domains={"gamma": NONNEGATIVE},
)
def focal(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
          weight: torch.Tensor | None = None, ignore_index: int = -100, label_smoothing: float = 0.0,
          sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Multi-class focal loss: cross-entropy down-weighted on well-classified examples.

    .. math:: \\ell(z, t) = -\\sum_k t_k\\, \\alpha_k (1 - p_k)^{\\gamma} \\log p_k,\\qquad p = \\mathrm{softmax}(z)

    With class-index targets this is the paper's ``-alpha_y (1 - p_y)^gamma log p_y``; ``weight`` is the
    per-class alpha (the multi-class form of the paper's alpha-balancing); ``gamma=0`` is
    :func:`cross_entropy`. ``1 - p_k`` is computed as ``-expm1(log p_k)`` from the log-probabilities,
    exact for confident predictions; a ``-inf`` logit (masked class) and an exactly certain prediction
    give finite, NaN-free gradients (for any ``gamma >= 0``). Reductions follow :func:`cross_entropy`.
    Claims: classification-calibrated (Charoenphakdee et al. 2021, arXiv:2011.09172), not proper.

    Paper: Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", 2017,
    arXiv:1708.02002.
    """
    def modulate(s):  # s = -log p_k
        return s if gamma == 0 else guarded(s, lambda v: v * (-torch.expm1(-v)).pow(gamma), at_zero=True)

    return classwise_loss(logits, target, margin_logsumexp, modulate, weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, sample_weight=sample_weight, reduction=reduction)


@objective(
    "binary_focal", family="classification", input_kind=BINARY_LOGITS, example=binary_example,
    paper=FOCAL_PAPER, properties={"nonnegative"},
    formula="L(x, y) = -alpha_t (1 - p_t)^gamma log p_t,  p = sigmoid(x), p_t = p y + (1-p)(1-y)",
    module_name="BinaryFocalLoss", domains={"alpha": Maybe(UNIT), "gamma": NONNEGATIVE},
)
def binary_focal(logits: torch.Tensor, target: torch.Tensor, *, alpha: float | None = 0.25,
                 gamma: float = 2.0, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Sigmoid focal loss for binary / multi-label targets (RetinaNet's form).

    .. math:: \\ell(x, y) = \\alpha_t (1 - p_t)^{\\gamma}\\, \\mathrm{BCE}(x, y),\\quad
              p_t = p y + (1-p)(1-y),\\ \\alpha_t = \\alpha y + (1-\\alpha)(1-y)

    ``target`` has the logits' shape with values in [0, 1] (soft targets allowed). ``alpha`` in
    [0, 1]; ``alpha=None`` disables the balancing (torchvision's ``alpha < 0``); ``gamma >= 0``.
    Unlike torchvision's ``sigmoid_focal_loss`` the default reduction is ``'mean'`` like every losskit
    objective. The cross-entropy term is the
    stable ``softplus`` form; ``1 - p_t`` is formed from ``sigmoid(+-x)``, never as ``1 - sigmoid``.

    Not claimed calibrated with the default ``alpha=0.25``: the class weighting moves the Bayes
    threshold from ``P(y=1|x) = 1/2`` to ``1 - alpha = 0.75``, so the sign of the minimiser is not the
    Bayes classifier's. With ``alpha=None`` (or 0.5) the loss is symmetric in the label and calibrated.

    Paper: Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", 2017,
    arXiv:1708.02002.
    """
    check_floating("logits", logits)
    check_floating("target", target)
    check_same_shape("target", target, "logits", logits)
    # target in [0, 1]: declared by BINARY_LOGITS, checked by the wrapper
    target = target.to(logits.dtype)
    # BCE = y softplus(-x) + (1 - y) softplus(x), each term only where its weight is non-zero, so a -inf
    # logit with target 0 gives 0 (torch's binary_cross_entropy_with_logits gives NaN there).
    zero = logits.new_zeros(())
    ce = torch.where(target > 0, target * softplus(-logits), zero) + \
        torch.where(target < 1, (1 - target) * softplus(logits), zero)
    # 1 - p_t = y sigmoid(-x) + (1 - y) sigmoid(x), exact for both tails.
    one_minus_pt = target * torch.sigmoid(-logits) + (1 - target) * torch.sigmoid(logits)
    if gamma == 0:
        loss = ce
    else:  # (1 - p_t)^gamma with a zero-gradient guard where 1 - p_t underflows to 0 (gamma < 1)
        pos = one_minus_pt > 0
        loss = ce * torch.where(pos, torch.where(pos, one_minus_pt, 1.0).pow(gamma), 0.0)
    if alpha is not None:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return finish(loss, reduction, sample_weight=sample_weight)


CrossEntropyLoss = cross_entropy.Module
FocalLoss = focal.Module
BinaryFocalLoss = binary_focal.Module
