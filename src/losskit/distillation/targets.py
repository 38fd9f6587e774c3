"""Distillation target builders: a teacher's softened distribution and PS-KD's progressive targets.

The targets are class distributions, which every losskit classification loss accepts as ``target``
(``cross_entropy(z, teacher_targets(z_t, T))`` is the soft term of KD up to the teacher's entropy).
:func:`progressive_targets` is the one place PS-KD's targets are built: :func:`~.losses.ps_kd` and
:class:`~.losses.ProgressiveSelfKD` use it too.

(Moved here from ``losskit.classification.targets``; ``losskit.teacher_targets`` and
``losskit.progressive_targets`` are unchanged.)
"""

from __future__ import annotations

import torch

from .._core import fail
from .._core.domains import POSITIVE, UNIT, check_option
from .._core.validate import check_floating, check_labels

__all__ = ["teacher_targets", "progressive_targets"]


def teacher_targets(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """A teacher's distribution at temperature ``T > 0``: ``softmax(z_t / T)`` over the last dimension (detached)."""
    check_floating("teacher_logits", teacher_logits)
    check_option("temperature", temperature, POSITIVE)
    return torch.softmax(teacher_logits.detach() / temperature, -1)


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype, dim: int = -1) -> torch.Tensor:
    """Class indices ``(N, *)`` (already validated) -> one-hot distributions with the class axis at ``dim``."""
    t = torch.nn.functional.one_hot(target, num_classes).to(dtype)
    return t if dim in (-1, t.dim() - 1) else t.movedim(-1, dim)


def mix_progressive(target: torch.Tensor, previous: torch.Tensor, alpha) -> torch.Tensor:
    """``(1 - alpha) t + alpha p_prev`` with ``p_prev`` detached: PS-KD's target, the one formula.

    ``target`` and ``previous`` are distributions of the same shape; ``alpha`` is a number in [0, 1].
    """
    return (1 - alpha) * target + alpha * previous.detach()


def progressive_targets(target: torch.Tensor, previous: torch.Tensor, alpha: float,
                        num_classes: int | None = None) -> torch.Tensor:
    """Progressive self-distillation targets ``(1 - alpha) t + alpha p_prev`` (Kim et al. 2021, arXiv:2006.12000).

    ``target``: class indices ``(N, *)`` (give ``num_classes``) or distributions ``(N, *, K)``;
    ``previous`` holds the model's own predicted distribution from the last epoch (class axis last,
    no gradient flows into it); ``alpha`` in [0, 1]: ``alpha = 0`` gives the plain targets (so the loss
    is CE).
    """
    check_option("alpha", alpha, UNIT)
    check_floating("previous", previous)
    if target.is_floating_point():
        t = target.to(previous.dtype)
    else:
        if num_classes is None:
            raise fail("num_classes", "the number of classes when target holds class indices", "None")
        check_labels("target", target, num_classes)
        t = one_hot(target, num_classes, previous.dtype)
    if previous.shape != t.shape:
        raise fail("previous", f"distributions of shape {tuple(t.shape)}", f"shape {tuple(previous.shape)}")
    return mix_progressive(t, previous, alpha)
