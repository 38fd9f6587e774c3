"""Relative-entropy clustering objective (DEPICT): KL from a sharpened, balanced target to the soft assignments."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, check_rows
from .categorical import _kl_terms

__all__ = ["kl_clustering_loss", "clustering_target", "KLClusteringLoss"]


def clustering_target(log_p: torch.Tensor) -> torch.Tensor:
    """DEPICT's target, in log space: ``q_ik ∝ p_ik / sqrt(Σ_i p_ik)`` normalised over clusters k.

    A cluster no sample has any mass in (``Σ_i p_ik = 0``, only with ``-inf`` logits) gets ``q = 0``.
    """
    col = torch.logsumexp(log_p, 0, keepdim=True)
    empty = col == -math.inf
    s = log_p - 0.5 * torch.where(empty, torch.zeros_like(col), col)
    s = torch.where(empty.expand_as(s), torch.full_like(s, -math.inf), s)
    return s - torch.logsumexp(s, 1, keepdim=True)


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, k: int = 4) -> Example:
    z = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    # the full gradient (through the target too) is what finite differences see
    return Example({"logits": z.to(dtype)}, options={"detach_target": False}, grad=("logits",))


def _bad(ex: Example) -> list[BadInput]:
    z = ex.inputs["logits"]
    zi = z.clone()
    zi[0, 0] = float("inf")
    return [BadInput("1-D logits", ex.replace({"logits": z[0]}), "logits"),
            BadInput("+inf logit", ex.replace({"logits": zi}), "logits"),
            BadInput("integer logits", ex.replace({"logits": z.round().long()}), "logits")]


CLUSTER_LOGITS = InputKind("cluster logits", "soft cluster-assignment logits (N, K) of one batch",
                           bad_inputs=_bad, extreme=lambda ex: ex.map_floats(lambda t: (t.sign() * 1e4 + t).float()))


@objective("kl_clustering_loss", seed=True, family="divergence", input_kind=CLUSTER_LOGITS, example=_example,
           paper=Paper("Deep Clustering via Joint Convolutional Autoencoder Embedding and Relative Entropy "
                       "Minimization", 2017, "1704.06327", "Dizaji, Herandi, Deng, Cai, Huang"),
           properties={"nonnegative"}, per_sample=False, module_name="KLClusteringLoss",
           domains={"detach_target": FLAG}, unchecked=("logits",),  # logits: check_rows below
           formula="1/N sum_i KL(q_i || p_i),  q_ik ∝ p_ik / sqrt(sum_i' p_i'k),  p = softmax(z)")
def kl_clustering_loss(logits: torch.Tensor, *, detach_target: bool = True,
                       sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """DEPICT's clustering objective: KL from a balanced, sharpened target to the soft assignments.

    .. math:: q_{ik} = \\frac{p_{ik} / \\sqrt{\\sum_{i'} p_{i'k}}}{\\sum_{k'} p_{ik'} / \\sqrt{\\sum_{i'} p_{i'k'}}},
              \\qquad \\ell = \\frac1N \\sum_i \\mathrm{KL}(q_i\\,\\|\\,p_i),\\quad p_i = \\mathrm{softmax}(z_i)

    The target ``q`` divides by the square root of each cluster's batch frequency, which discourages
    empty and giant clusters. DEPICT treats ``q`` as a fixed auxiliary target at each step
    (``detach_target=True``, default); ``False`` differentiates through it as well. Batch-coupled (the
    target uses the whole batch); ``reduction='none'`` gives ``KL(q_i ‖ p_i)`` per sample. Computed in
    log space, so ``-inf`` logits are exact; a sample whose every logit is ``-inf`` (fully masked) raises
    :class:`~losskit.LossInputError` naming ``logits``.

    Paper: Deep Clustering via Joint Convolutional Autoencoder Embedding and Relative Entropy
    Minimization (Dizaji et al., ICCV 2017, arXiv:1704.06327).
    """
    check_floating("logits", logits)
    if logits.dim() != 2:
        raise fail("logits", "cluster logits of shape (N, K)", f"shape {tuple(logits.shape)}")
    check_rows("logits", logits, dim=1)
    log_p = torch.log_softmax(logits, 1)
    log_q = clustering_target(log_p)
    if detach_target:
        log_q = log_q.detach()
    per = _kl_terms(log_q, log_p).sum(1)
    return finish(per, reduction, sample_weight=sample_weight)


KLClusteringLoss = kl_clustering_loss.Module
