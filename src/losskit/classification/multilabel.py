"""Decoupled softmax for multi-label / extreme classification (other positives leave the denominator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE
from .._core.validate import check_floating, check_labels, check_rows, require
from ._inputs import MULTILABEL, multilabel_example
from .margins import masked_logsumexp, softplus

__all__ = ["decoupled_softmax_loss", "DecoupledSoftmaxLoss"]

DECOUPLED_PAPER = Paper("Dual-Encoders for Extreme Multi-Label Classification", 2024, "2310.10636",
                        "Gupta, Lee, Jain, Varma, Dhillon")


def _positives(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if not isinstance(target, torch.Tensor):
        raise fail("target", "multi-hot targets (N, K) or class indices (N,)", type(target).__name__)
    if target.dim() == 1 and not target.is_floating_point() and target.dtype != torch.bool:
        if target.shape[0] != n:
            raise fail("target", f"class indices of shape ({n},)", f"shape {tuple(target.shape)}")
        check_labels("target", target, k)
        return F.one_hot(target.long(), k).bool()
    if tuple(target.shape) != (n, k):
        raise fail("target", f"multi-hot targets of shape ({n}, {k}) or class indices ({n},)",
                   f"shape {tuple(target.shape)}")
    if target.dtype == torch.bool:
        return target
    def other():
        return (target != 0) & (target != 1)

    require("target", target, lambda: other().any(), "multi-hot values in {0, 1}",
            lambda: f"{target[tuple(other().nonzero()[0].tolist())].item()} at position "
                    f"{tuple(other().nonzero()[0].tolist())}")
    return target != 0


@objective(
    "decoupled_softmax_loss", seed=True, family="classification", input_kind=MULTILABEL, example=multilabel_example,
    paper=DECOUPLED_PAPER, properties={"nonnegative", "convex", "shift_invariant", "permutation_equivariant"},
    formula="L(s, P) = -(1/|P|) sum_{l in P} log(e^{s_l} / (e^{s_l} + sum_{j not in P} e^{s_j})),  s = z / tau",
    module_name="DecoupledSoftmaxLoss", domains={"temperature": POSITIVE},
)
def decoupled_softmax_loss(logits: torch.Tensor, target: torch.Tensor, *, temperature: float = 1.0,
                           sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Decoupled softmax: each positive competes only with the negatives, never with other positives.

    .. math:: \\ell(s, P) = -\\frac{1}{|P|} \\sum_{l \\in P}
              \\log \\frac{e^{s_l}}{e^{s_l} + \\sum_{j \\notin P} e^{s_j}},\\qquad s = z / \\tau

    computed as ``mean_{l in P} softplus(LSE_{j not in P}(s_j) - s_l)``. With one positive per row it is
    the softmax cross-entropy (= InfoNCE over the row). Rows without positives contribute 0 and do not
    count in the mean; rows without negatives have loss 0. A fully masked row (every logit ``-inf``)
    raises unless it has no positives (it is then not counted). ``temperature > 0``. ``target``: multi-hot ``(N, K)`` (bool or
    0/1 floats) or class indices ``(N,)``. † The paper applies it to cosine scores of normalised
    dual-encoder embeddings with ``tau = 0.05``; here the input is logits and ``temperature`` defaults
    to 1 (pass ``temperature=0.05`` with cosine similarities).

    Paper: Gupta, Lee, Jain, Varma, Dhillon, "Dual-Encoders for Extreme Multi-Label Classification",
    2024, arXiv:2310.10636.
    """
    check_floating("logits", logits)
    if logits.dim() != 2:
        raise fail("logits", "shape (N, K)", f"shape {tuple(logits.shape)}")
    pos = _positives(logits, target)
    count = pos.sum(-1)
    has = count > 0
    check_rows("logits", logits, dim=-1, ignored=~has)
    s = logits / temperature
    neg_lse = masked_logsumexp(s, ~pos, dim=-1, keepdim=True)
    x = neg_lse - s
    ok = pos & torch.isfinite(x)
    per_pos = torch.where(ok, softplus(torch.where(ok, x, torch.zeros_like(x))), torch.zeros_like(x))
    per_pos = torch.where(pos & ~ok & (x > 0), torch.full_like(x, float("inf")), per_pos)  # a masked positive
    per = per_pos.sum(-1) / count.clamp(min=1).to(s.dtype)
    return finish(per, reduction, sample_weight=sample_weight, mask=has)


DecoupledSoftmaxLoss = decoupled_softmax_loss.Module
