"""Energy Confusion (ECAML, Chen & Deng, AAAI 2019): a regulariser that *confuses* a metric by pulling
the embeddings of different classes together, trained adversarially against the metric loss."""

from __future__ import annotations

import torch

from .._core import Paper, check_reduction, fail, objective
from .._core.domains import TENSOR
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, require
from ._inputs import features_labels_example, scale_all

__all__ = ["energy_confusion", "EnergyConfusionLoss"]

PAPER = Paper("Energy Confused Adversarial Metric Learning for Zero-Shot Image Retrieval and Clustering", 2019,
              "1901.07169", "Chen, Deng")


def _example(gen, dtype) -> Example:
    ex = features_labels_example(gen, dtype)
    return Example({"embeddings": ex.inputs["features"], "labels": ex.inputs["labels"]}, grad=("embeddings",))


def _bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["embeddings"], ex.inputs["labels"]
    return [
        BadInput("labels of the wrong length", ex.replace({"labels": y[:-1]}), "labels"),
        BadInput("float labels", ex.replace({"labels": y.to(torch.float64)}), "labels"),
        BadInput("no feature dimension", ex.replace({"embeddings": x[:, 0]}), "embeddings"),
        BadInput("integer embeddings", ex.replace({"embeddings": x.round().long()}), "embeddings"),
        BadInput("a single class", ex.replace({"labels": torch.zeros_like(y)}), "labels"),
        BadInput("pair_mask of the wrong shape", ex.replace(options={"pair_mask": torch.ones(2, 2, dtype=torch.bool)}),
                 "pair_mask"),
    ]


EMBEDDINGS_LABELS = InputKind("embeddings+labels", "embeddings (N, D) and integer class labels (N,), two classes or more",
                              bad_inputs=_bad, extreme=scale_all())


@objective(
    "energy_confusion", batch_scalar=True, family="representation", input_kind=EMBEDDINGS_LABELS, example=_example,
    paper=PAPER, per_sample=False, sample_weight=False, module_name="EnergyConfusionLoss",
    domains={"pair_mask": TENSOR},
    formula="L = log sum_{i<j in P} ||f_i - f_j||^2 / (2 w_ij),  P = pairs of different classes (or pair_mask), "
            "w_ij = #different-class (or #same-class) pairs i<j of the batch",
)
def energy_confusion(embeddings: torch.Tensor, labels: torch.Tensor, *, pair_mask: torch.Tensor | None = None,
                     reduction: str = "mean") -> torch.Tensor:
    """Energy Confusion term of ECAML: the log of the (normalised) energy between classes.

    .. math:: \\mathcal L_{EC} = \\log E,\\qquad E = \\sum_{i<j,\\ (i,j) \\in P}
              \\frac{\\lVert f_i - f_j \\rVert^2}{2\\, w_{ij}}

    ``w_ij`` is the number of pairs ``i < j`` of the batch with different labels (for a same-label pair
    in ``P``: the number of same-label pairs). ``P`` defaults to every different-class pair, so ``E`` is
    half the mean squared distance between embeddings of different classes, the energy the term
    *minimises*: it pulls classes together, "confusing" the metric, and is weighed against the metric
    loss (the paper's adversarial game). As in the authors' Caffe layer the loss is ``log E``
    (``EnergyConfusionLossLayer``'s backward divides by ``E``), so its gradient is scale-free.

    **How the official recipe uses it.** The term is computed on a second copy of the embedding layer
    sharing its weights, fed with the backbone features *detached* (Caffe ``propagate_down: 0``): only
    the metric layer receives the confusion gradient. Loss weight 0.13 with the BIER metric loss (their
    Cars196 ``train_confusion.prototxt``). The Caffe layer scores a random subset of pairs (10 partners
    per anchor, ``random_num``) but still divides by the *total* pair counts; pass that subset as
    ``pair_mask`` ``(N, N)`` bool (upper triangle read) to reproduce it — losskit then counts same-label
    pairs in the mask as the layer does. Without a mask every different-class pair is used (the
    deterministic form of the same estimator, up to the constant the subsampling adds inside the log).

    Raises if the batch has a single class (no different-class pair) or the selected energy is empty.
    A batch-level loss: every reduction returns the one value. ``E = 0`` (identical embeddings) gives
    ``-inf``.

    Paper: Chen, Deng, "Energy Confused Adversarial Metric Learning for Zero-Shot Image Retrieval and
    Clustering", AAAI 2019, arXiv:1901.07169.
    """
    check_reduction(reduction)
    check_floating("embeddings", embeddings)
    if embeddings.dim() != 2:
        raise fail("embeddings", "embeddings of shape (N, D)", f"shape {tuple(embeddings.shape)}")
    n = embeddings.shape[0]
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or tuple(labels.shape) != (n,):
        raise fail("labels", f"integer class labels of shape ({n},)", f"{labels.dtype} tensor of shape {tuple(labels.shape)}")
    upper = torch.ones(n, n, dtype=torch.bool, device=embeddings.device).triu(1)
    same = labels[:, None] == labels[None, :]
    n_neg = (upper & ~same).sum()
    n_pos = (upper & same).sum()
    if pair_mask is None:
        sel = upper & ~same
    else:
        if pair_mask.dtype != torch.bool or tuple(pair_mask.shape) != (n, n):
            raise fail("pair_mask", f"a bool mask of shape ({n}, {n})",
                       f"{pair_mask.dtype} tensor of shape {tuple(pair_mask.shape)}")
        sel = upper & pair_mask.to(embeddings.device)
    require("labels", labels, lambda: n_neg == 0, "at least two classes (a pair of different classes to confuse)",
            lambda: "a single class")
    if pair_mask is not None:
        require("pair_mask", pair_mask, lambda: ~sel.any(), "at least one pair i < j selected", lambda: "no pair")
    w = torch.where(same, n_pos.clamp_min(1), n_neg.clamp_min(1)).to(embeddings.dtype)
    d2 = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    zero = embeddings.new_zeros(())
    energy = torch.where(sel, d2 / (2 * w), zero).sum()
    return energy.log()


EnergyConfusionLoss = energy_confusion.Module
