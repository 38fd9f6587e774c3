"""FedLD's margin-control local objective for federated learning under data heterogeneity.

FedLD (Zeng, Guo, Wang, Wang, Zhou, Qu 2024) decomposes the global loss into a local loss, a distribution
shift loss and an aggregation loss. Each client reduces the distribution shift term by training on
cross-entropy plus a *margin control* penalty on the squared norm of its softmax output,

    L(z, y) = CE(z, y) + lam * log(1 + ||softmax(z)||²),

which discourages over-confident (peaked, ||p|| -> 1) local predictions, the ones that drift furthest
from the global model under label skew. The server side of FedLD (aggregating client gradients along
their principal directions, by SVD) is an aggregation rule, not a training objective, and is not part of
losskit.

Paper: Zeng, Guo, Wang, Wang, Zhou, Qu, "Tackling Data Heterogeneity in Federated Learning via Loss
Decomposition", 2024, arXiv:2408.12300.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, Choice
from .._core.inputs import LOGITS_LABELS, logits_labels_example
from .._core.validate import check_floating, check_labels
from .._core.values import LOGIT_ROWS

__all__ = ["margin_control_loss", "MarginControlLoss"]

FEDLD = Paper("Tackling Data Heterogeneity in Federated Learning via Loss Decomposition", 2024, "2408.12300",
              "Zeng, Guo, Wang, Wang, Zhou, Qu")


@objective("margin_control_loss", seed=True, family="regularizer", input_kind=LOGITS_LABELS,
           example=logits_labels_example, paper=FEDLD, properties={"nonnegative", "shift_invariant"},
           module_name="MarginControlLoss",
           formula="L(z, y) = -log softmax(z)_y + lam log(1 + ||softmax(z)||_2^2)  (norm='batch': the squared "
                   "Frobenius norm of the batch's softmax matrix, one term per batch)",
           domains={"lam": NONNEGATIVE, "norm": Choice("sample", "batch")}, values={"logits": LOGIT_ROWS})
def margin_control_loss(logits: torch.Tensor, target: torch.Tensor, *, lam: float = 0.03, norm: str = "sample",
                        sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """FedLD's local training loss: cross-entropy plus the margin-control penalty.

    .. math:: L(z, y) = -\\log \\mathrm{softmax}(z)_y + \\lambda \\log\\big(1 + \\lVert \\mathrm{softmax}(z)\\rVert_2^2\\big)

    ``logits (N, K)``, ``target (N,)`` class indices. ``lam`` (λ, the authors' ``margin_loss_penalty``)
    defaults to their 0.03. ``norm='sample'`` (default) applies the penalty to each sample's probability
    vector, so it does not depend on the batch size; ``norm='batch'`` reproduces the authors' code
    (Zeng-Shuang/FedLD ``methods/fedld.py``, ``MarginalLogLoss``): ``mean CE + λ log(1 + ||P||_F²)`` with
    ``P`` the batch's (N, K) softmax matrix, one penalty per batch, which grows like ``log N`` with the
    batch size (it needs ``reduction='mean'`` and no ``sample_weight``). The server-side principal-gradient
    aggregation of FedLD is not an objective and is not provided.

    Paper: Zeng, Guo, Wang, Wang, Zhou, Qu, "Tackling Data Heterogeneity in Federated Learning via Loss
    Decomposition", 2024, arXiv:2408.12300.
    """
    check_floating("logits", logits)
    if logits.dim() != 2:
        raise fail("logits", "shape (N, K)", f"shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise fail("target", f"class indices of shape ({logits.shape[0]},)", f"shape {tuple(target.shape)}")
    check_labels("target", target, logits.shape[1])
    logp = torch.log_softmax(logits, -1)
    ce = -logp.gather(-1, target.long()[:, None])[:, 0]
    p = logp.exp()
    if norm == "sample":
        return finish(ce + lam * torch.log1p(p.square().sum(-1)), reduction, sample_weight=sample_weight)
    if reduction != "mean" or sample_weight is not None:
        raise fail("norm", "'sample' for reduction other than 'mean' or with sample_weight (the batch norm "
                   "couples the samples)", f"'batch' with reduction={reduction!r}")
    return finish(ce, "mean") + lam * torch.log1p(p.square().sum())


MarginControlLoss = margin_control_loss.Module
