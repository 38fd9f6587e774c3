"""Feature distillation: the student matches the teacher's intermediate representations, not its logits.

* :func:`fitnet_loss` (FitNets' hint loss): squared error between a regressed student feature map and the
  teacher's; the regressor is a learnable layer that the Module form owns.
* :func:`attention_transfer` (AT): squared distance between L2-normalised spatial attention maps
  (channel-pooled ``|A|^p``), so student and teacher may have different channel counts.

Shapes: features ``(N, C, *spatial)`` from one layer pair (``(N, D)`` also for FitNets); for several
layer pairs sum the calls (both papers do). As in the rest of the family, gradients flow into
``teacher_features`` unless the caller detaches them (pass ``teacher_features.detach()`` for a frozen
teacher; the reference implementations compute the teacher under ``torch.no_grad()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Callable, Maybe
from .._core.validate import check_floating
from ._inputs import FEATURES, features_example

__all__ = ["fitnet_loss", "FitNetLoss", "attention_transfer", "AttentionTransferLoss", "attention_map"]

_FEAT = dict(family="distillation", input_kind=FEATURES)


def _check_features(student: torch.Tensor, teacher: torch.Tensor, min_dim: int, what: str) -> None:
    for name, x in (("student_features", student), ("teacher_features", teacher)):
        check_floating(name, x)
        if x.dim() < min_dim:
            raise fail(name, what, f"shape {tuple(x.shape)}")
    if teacher.shape[0] != student.shape[0]:
        raise fail("teacher_features", f"a batch of {student.shape[0]} (as student_features)",
                   f"shape {tuple(teacher.shape)}")


# -------------------------------------------------------------------------------------------- FitNets
@objective("fitnet_loss", paper=Paper("FitNets: Hints for Thin Deep Nets", 2015, "1412.6550",
                                      "Romero, Ballas, Kahou, Chassang, Gatta, Bengio"),
           example=features_example, properties={"nonnegative"}, module_name="FitNetLoss",
           formula="mean_j (r(f_s) - f_t)_j^2 over the feature entries j of each sample; r the regressor "
                   "(the identity when None)",
           domains={"regressor": Maybe(Callable("a callable (e.g. an nn.Module) mapping student features to "
                                                "the teacher's shape"))},
           **_FEAT)
def fitnet_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, *, regressor=None,
                sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """FitNets hint loss: squared error between the regressed student features (guided layer) and the
    teacher's hint layer.

    .. math:: \\ell_i = \\frac{1}{D} \\sum_{j=1}^{D} \\big(r(f_s)_{ij} - (f_t)_{ij}\\big)^2

    ``D`` the number of feature entries per sample (``C · H · W``). The paper writes
    ``½ ‖u_h − r(v_g)‖²`` (a sum); losskit takes the mean over the entries, as mdistiller's
    ``F.mse_loss``, so ``reduction='mean'`` is exactly ``F.mse_loss(r(f_s), f_t)`` (the paper's value is
    ``D / 2`` times the per-sample loss; the authors' Pylearn2 cost, ``adri-romsor/FitNets``
    ``costs/HintCost.py``, sums ``½ (·)²`` over the channel axis and averages over the batch and the
    positions: ``C / 2`` times losskit's ``'mean'``. Constant factors for a layer pair, absorbed in the
    loss weight; mdistiller's CIFAR weight is 100).

    **The regressor.** The student's guided layer is usually thinner than the teacher's hint layer, so a
    learnable regressor ``r`` maps it to the teacher's shape (the paper: a convolutional regressor;
    mdistiller's ``ConvReg``: a conv, BatchNorm and ReLU). Its parameters are trained with the student
    and the loss is their only training signal, so the loss object owns them:
    ``FitNetLoss(regressor=nn.Conv2d(C_s, C_t, 1))`` registers the regressor as a submodule (its
    parameters appear in ``.parameters()``, move with ``.to()`` and are saved in ``state_dict``; give them
    to the optimiser together with the student's). The functional form takes the same option: with
    ``regressor=None`` the student features must already have the teacher's shape (regressed by the
    caller), otherwise ``regressor(student_features)`` is computed first. This keeps losskit's rule that
    the Module is the functional with its options stored: the regressor is one option, a module.
    A regressor output of another shape than the teacher's raises :class:`~losskit.LossInputError`
    naming ``regressor``.

    Shapes: ``(N, C, *spatial)`` or ``(N, D)``. Paper: Romero, Ballas, Kahou, Chassang, Gatta, Bengio,
    "FitNets: Hints for Thin Deep Nets", ICLR 2015, arXiv:1412.6550. Code compared with:
    megvii-research/mdistiller (``mdistiller/distillers/FitNet.py``).
    """
    _check_features(student_features, teacher_features, 2,
                    "features (N, D) or (N, C, *spatial) with a feature axis")
    guided = student_features
    if regressor is not None:
        guided = regressor(student_features)
        if not isinstance(guided, torch.Tensor) or guided.shape != teacher_features.shape:
            got = f"shape {tuple(guided.shape)}" if isinstance(guided, torch.Tensor) else type(guided).__name__
            raise fail("regressor", f"an output of the teacher_features shape {tuple(teacher_features.shape)}",
                       got)
    elif guided.shape != teacher_features.shape:
        raise fail("teacher_features", f"the shape of student_features {tuple(student_features.shape)} (or pass "
                                       f"a regressor mapping the student features to the teacher's shape)",
                   f"shape {tuple(teacher_features.shape)}")
    per = (guided - teacher_features).pow(2).flatten(1).mean(1)
    return finish(per, reduction, sample_weight=sample_weight)


# ---------------------------------------------------------------------------------- attention transfer
def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """The AT attention map of features ``(N, C, *spatial)``: ``Q = mean_c |A_c|^p`` flattened to
    ``(N, prod(spatial))`` and L2-normalised per sample (``F.normalize``, norm clamped at ``eps``), as the
    official ``at(x)``. The features are first divided by ``max(max |A|, 1)`` per sample, which leaves the
    normalised map unchanged (it is scale-invariant; the ``eps`` clamp cannot act once the largest entry
    is 1) and keeps ``|A|^p`` finite for inputs of any magnitude."""
    dims = tuple(range(1, features.dim()))
    scale = features.detach().abs().amax(dim=dims, keepdim=True).clamp(min=1.0)
    x = features / scale
    q = (x.pow(2) if p == 2 else x.abs().pow(p)).mean(1)
    return F.normalize(q.reshape(q.shape[0], -1), p=2.0, dim=1, eps=eps)


@objective("attention_transfer",
           paper=Paper("Paying More Attention to Attention: Improving the Performance of Convolutional Neural "
                       "Networks via Attention Transfer", 2017, "1612.03928", "Zagoruyko, Komodakis"),
           example=lambda g, d: features_example(g, d, student_channels=3, teacher_channels=5),
           properties={"nonnegative"}, module_name="AttentionTransferLoss",
           formula="beta mean_j (Q_s / ||Q_s||_2 - Q_t / ||Q_t||_2)_j^2,  Q = mean_c |A_c|^p over the "
                   "channels, j the spatial positions",
           domains={"p": POSITIVE, "beta": NONNEGATIVE, "eps": POSITIVE}, **_FEAT)
def attention_transfer(student_features: torch.Tensor, teacher_features: torch.Tensor, *, p: float = 2.0,
                       beta: float = 1000.0, eps: float = 1e-12, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Attention transfer (activation-based): the student matches the teacher's normalised spatial
    attention maps.

    .. math:: \\ell_i = \\beta\\,\\frac{1}{HW} \\sum_{j} \\Big(\\frac{Q^s_{ij}}{\\lVert Q^s_i\\rVert_2}
              - \\frac{Q^t_{ij}}{\\lVert Q^t_i\\rVert_2}\\Big)^2, \\qquad
              Q_{ij} = \\frac1C \\sum_c |A_{icj}|^p

    (:func:`attention_map`, ``p = 2`` as the official code). Channel counts may differ; the spatial
    shapes must agree (the official code requires it; mdistiller average-pools the larger map to the
    smaller one, which the caller can do with ``F.adaptive_avg_pool2d``).

    Scale: the official ``at_loss(x, y) = (at(x) - at(y)).pow(2).mean()`` averages over the batch and the
    positions, and the training step adds ``beta · sum over layer pairs`` with ``beta = 1e3`` (the paper's
    ``β/2`` in front of a (non-squared) norm; its text: "β = 10^3 divided by the number of elements in
    the attention map and batch size"). losskit's per-sample loss is ``beta`` times the mean over the
    positions, so ``reduction='mean'`` is exactly ``beta · at_loss`` for one layer pair; sum the calls
    over the layer pairs. Default ``beta = 1000`` (the official CIFAR runs and mdistiller's weight).

    Paper: Zagoruyko, Komodakis, "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer", ICLR 2017, arXiv:1612.03928. Code:
    szagoruyko/attention-transfer (``utils.py``, ``at`` and ``at_loss``).
    """
    _check_features(student_features, teacher_features, 3,
                    "features (N, C, *spatial) with at least one spatial axis")
    if teacher_features.shape[2:] != student_features.shape[2:]:
        raise fail("teacher_features", f"the spatial shape of student_features {tuple(student_features.shape[2:])}",
                   f"shape {tuple(teacher_features.shape)}")
    qs = attention_map(student_features, p, eps)
    qt = attention_map(teacher_features, p, eps)
    per = beta * (qs - qt).pow(2).mean(1)
    return finish(per, reduction, sample_weight=sample_weight)


FitNetLoss = fitnet_loss.Module
AttentionTransferLoss = attention_transfer.Module
