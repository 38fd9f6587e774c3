"""Targets for class-probability losses: class indices or distributions, in one representation.

Every classification loss accepts ``target`` as class indices ``(N, *)`` (with ``ignore_index``) or as
a distribution ``(N, K, *)`` over the class dimension 1, and ``label_smoothing`` on top. The losses are
written as an expected score ``sum_k t_k w_k s_k`` (``w`` the class weights, ``s_k`` the per-class
score, e.g. ``-log p_k`` for cross-entropy); :func:`expected_score` evaluates it and
:func:`reduce_classwise` applies ``torch.nn.functional.cross_entropy``'s weighting rules (through
:func:`losskit._core.finish` with ``denominator=w[y]``).

Fully masked rows (every logit ``-inf``): :func:`resolve_targets` raises :class:`LossInputError` naming the
logits unless the row's target is ``ignore_index``; an ignored row contributes an exact 0 (the reduction's
``torch.where``) and :attr:`Targets.logits` zeroes its gradient where it enters the logits, so no NaN can
leak from it into a value or a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._core import fail, finish
from .._core.conventions import has_values
from .._core.validate import (
    check_class_weight,
    check_floating,
    check_labels,
    check_probabilities,
    check_rows,
    value_check_mode,
)

#: ``unchecked=`` for objectives whose logits go through :func:`resolve_targets`: its row check
#: (:func:`~losskit._core.validate.check_rows`) covers NaN and +inf too, in the same single pass.
ROWS_CHECKED = ("logits",)


@dataclass
class Targets:
    """Resolved targets. Exactly one of ``index`` / ``dist`` is set; ``mask`` marks counted samples."""

    index: torch.Tensor | None  # (N, *) long, ignored entries replaced by 0
    dist: torch.Tensor | None   # (N, *, K) probabilities
    mask: torch.Tensor | None   # (N, *) bool, None if nothing is ignored
    num_classes: int
    smoothing: float
    logits: torch.Tensor | None = None  # (N, *, K) class-last logits; ignored rows get zero gradient


def built_distribution(logits_last: torch.Tensor, dist: torch.Tensor) -> Targets:
    """Targets that losskit built itself (a distribution per row by construction, e.g. HL-Gauss bins):
    resolved without re-checking them. The caller's logits must have been checked (declared
    ``LOGIT_ROWS``: no NaN/+inf, no row masked entirely)."""
    return Targets(None, dist, None, logits_last.shape[-1], 0.0, logits_last)


def class_last(logits: torch.Tensor, name: str = "logits") -> torch.Tensor:
    """(N, K, *) -> (N, *, K), checking there is a class dimension."""
    check_floating(name, logits)
    if logits.dim() < 2:
        raise fail(name, "shape (N, K) or (N, K, d1, ...) with the classes on dim 1",
                   f"shape {tuple(logits.shape)}")
    return logits.movedim(1, -1) if logits.dim() > 2 else logits


def resolve_targets(logits_last: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100,
                    label_smoothing: float = 0.0, name: str = "target", logits_name: str = "logits",
                    defer_rows: bool = False) -> Targets:
    """Validate ``target`` against class-last logits ``(N, *, K)`` and resolve it.

    Also checks the logits' rows (:func:`~losskit._core.validate.check_rows`): a fully masked row (every
    entry ``-inf``) raises unless its target is ``ignore_index``. ``Targets.logits`` holds the logits to
    compute with: ignored rows get zero gradient, so that nothing non-finite there reaches a gradient
    (their values are replaced by exact zeros in :func:`losskit._core.finish`). ``label_smoothing`` is
    validated by its declared domain (the registry wrapper). ``defer_rows=True`` (class-index targets on
    CPU): the caller checks the rows from its per-sample losses instead (:func:`classwise_loss`).
    """
    k = logits_last.shape[-1]
    if not isinstance(target, torch.Tensor):
        raise fail(name, "a tensor of class indices or class probabilities", type(target).__name__)
    if target.is_floating_point():
        dist = target.movedim(1, -1) if target.dim() > 2 else target
        if dist.shape != logits_last.shape:
            raise fail(name, f"class indices of shape {tuple(logits_last.shape[:-1])} or probabilities of "
                             f"the logits' shape", f"a {target.dtype} tensor of shape {tuple(target.shape)}")
        check_probabilities(name, dist, dim=-1)
        check_rows(logits_name, logits_last, dim=-1)
        return Targets(None, dist, None, k, label_smoothing, logits_last)
    if tuple(target.shape) != tuple(logits_last.shape[:-1]):
        raise fail(name, f"class indices of shape {tuple(logits_last.shape[:-1])}",
                   f"shape {tuple(target.shape)}")
    check_labels(name, target, k, ignore_index)
    mask = target != ignore_index
    if defer_rows:
        index = torch.where(mask, target, torch.zeros_like(target)).long()
        return Targets(index, None, mask, k, label_smoothing, logits_last)
    grad = logits_last.requires_grad and torch.is_grad_enabled()
    # One amax pass over the logits serves both the row check and, on CPU, the gradient guard below.
    cpu_eager = logits_last.device.type == "cpu" and has_values(logits_last)
    rowmax = logits_last.amax(-1) if (cpu_eager and (grad or value_check_mode(logits_last))) else None
    check_rows(logits_name, logits_last, dim=-1, ignored=~mask, rowmax=rowmax)
    index = torch.where(mask, target, torch.zeros_like(target)).long()
    z = _KeptRowsGrad.apply(logits_last, mask) if grad and _guard(rowmax, mask) else logits_last
    return Targets(index, None, mask, k, label_smoothing, z)


def _guard(rowmax: torch.Tensor | None, keep: torch.Tensor) -> bool:
    """Whether the gradient of ignored rows must be zeroed explicitly (:class:`_KeptRowsGrad`).

    With the row maxima at hand (CPU, eager: reading them costs no synchronisation) only when some ignored
    row is fully masked, which spares a ``torch.where`` over the whole gradient; elsewhere (accelerators,
    tracing, meta) always. The result is the same either way: this is a cost decision only.
    """
    if rowmax is None:
        return True
    # NaN, +inf or a fully masked ignored row: each makes log-softmax's backward form 0 * NaN there
    return bool((~torch.isfinite(rowmax) & ~keep).any())


class _KeptRowsGrad(torch.autograd.Function):
    """The identity on the logits (a view, no copy) whose backward zeroes the gradient of ignored rows.

    An ignored row's per-sample value is replaced by an exact 0 in the reduction (``finish``'s
    ``torch.where``); if that row is fully masked, the softmax backward still forms ``0 * NaN`` there.
    This zeroes it where it enters the logits: one ``torch.where`` over the gradient, no copy of the
    logits in the forward pass (a forward ``torch.where`` would cost a copy of the logits).
    """

    generate_vmap_rule = True  # usable inside torch.func transforms (vmap, grad)

    @staticmethod
    def forward(logits, keep):
        return logits.view_as(logits)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep.unsqueeze(-1), grad, grad.new_zeros(())), None


def expected_score(score: torch.Tensor, t: Targets, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_k t_k w_k s_k`` per sample, with label smoothing ``t <- (1-eps) t + eps/K``.

    ``score`` is ``(N, *, K)``. For index targets without smoothing only the target column is read.
    """
    ws = score if class_weight is None else score * class_weight
    eps = t.smoothing
    if t.dist is not None:
        dist = t.dist if eps == 0 else (1 - eps) * t.dist + eps / t.num_classes
        # 0 * inf must be 0 here: a zero target probability ignores that class's score.
        return torch.where(dist > 0, dist * ws, ws.new_zeros(())).sum(-1)
    picked = ws.gather(-1, t.index.unsqueeze(-1)).squeeze(-1)
    if eps == 0:
        return picked
    return (1 - eps) * picked + (eps / t.num_classes) * ws.sum(-1)


def reduce_classwise(loss: torch.Tensor, t: Targets, reduction: str, class_weight: torch.Tensor | None,
                     sample_weight: torch.Tensor | None) -> torch.Tensor:
    """Reduce with torch's rule: index targets divide the mean by ``sum_i w[y_i]``, soft targets by N.

    ``loss`` already carries the class weights inside the expected score.
    """
    denominator = class_weight[t.index] if class_weight is not None and t.index is not None else None
    return finish(loss, reduction, sample_weight=sample_weight, mask=t.mask, denominator=denominator)


def check_class_weights(weight, k):
    return check_class_weight(weight, k, "weight")


def classwise_loss(logits: torch.Tensor, target: torch.Tensor, base_fn, transform=None, *, weight=None,
                   ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight=None,
                   reduction: str = "mean") -> torch.Tensor:
    """The shared body of every per-class-score loss: ``sum_k t_k w_k s_k(z)``, reduced with torch's rules.

    ``s_k = transform(base_fn(z))_k`` is the loss class ``k`` would incur as the label: ``base_fn`` maps
    class-last logits ``(N, *, K)`` to a per-class quantity (``-log p_k``, the rival mass, ...) and
    ``transform`` (elementwise, optional) to the score. For class-index targets without smoothing only
    the target column is transformed (``O(N)`` transcendental work, not ``O(NK)``). Targets are indices
    (with ``ignore_index``) or distributions; ``label_smoothing`` and class ``weight`` are applied here,
    once, for every loss built on it.
    """
    zl = class_last(logits)
    at = getattr(base_fn, "at", None)  # a base that can evaluate at the labels only
    # The label-only log-sum-exp path on CPU checks the logits' rows from its per-sample values (below)
    fast = (at is not None and getattr(base_fn, "lse", False) and label_smoothing == 0 and isinstance(target, torch.Tensor)
            and not target.is_floating_point() and zl.device.type == "cpu" and has_values(zl))
    if isinstance(target, Targets):  # already resolved (built_distribution)
        t = target
    else:
        t = resolve_targets(zl, target, ignore_index=ignore_index, label_smoothing=label_smoothing,
                            defer_rows=fast)
    z = t.logits
    w = check_class_weights(weight, t.num_classes)
    if fast:
        per = _lse_at_checked(at, z, t)
        if transform is not None:
            per = transform(per)
        if w is not None:
            per = per * w[t.index]
    elif t.index is not None and t.smoothing == 0:
        per = at(z, t.index) if at is not None else base_fn(z).gather(-1, t.index.unsqueeze(-1)).squeeze(-1)
        if transform is not None:
            per = transform(per)
        if w is not None:
            per = per * w[t.index]
    else:
        base = base_fn(z)
        per = expected_score(base if transform is None else transform(base), t, w)
    return reduce_classwise(per, t, reduction, w, sample_weight)


def _lse_at_checked(at, z: torch.Tensor, t: Targets) -> torch.Tensor:
    """``-log softmax(z)_y`` per sample, with the row check done from those values (CPU, eager).

    A NaN or ``+inf`` anywhere in a row, or a row masked entirely, makes the row's log-sum-exp (so its
    value) non-finite; a finite row gives a finite value or ``+inf`` (the target's logit is ``-inf``:
    probability zero, a true value). So one look at the ``N`` values replaces the pass over the ``N x K``
    logits, and only when one is not finite are the rows examined (:func:`check_rows` raises for a
    counted row; an ignored row then gets zero gradient, recomputed through :class:`_KeptRowsGrad`).
    """
    per = at(z, t.index)
    bad = ~torch.isfinite(per)
    if not bool(bad.any()):  # a CPU read: no synchronisation
        return per
    check_rows("logits", z, dim=-1, ignored=~t.mask)
    if z.requires_grad and torch.is_grad_enabled() and bool((bad & ~t.mask).any()):
        per = at(_KeptRowsGrad.apply(z, t.mask), t.index)
    return per


def target_distribution(t: Targets, dtype: torch.dtype) -> torch.Tensor:
    """The resolved target as a distribution ``(N, *, K)`` (one-hot for indices), label smoothing applied.

    For losses that are not linear in the target (Fenchel-Young losses), which need ``t`` itself.
    """
    if t.dist is not None:
        dist = t.dist.to(dtype)
    else:
        dist = torch.nn.functional.one_hot(t.index, t.num_classes).to(dtype)
    if t.smoothing:
        dist = (1 - t.smoothing) * dist + t.smoothing / t.num_classes
    return dist
