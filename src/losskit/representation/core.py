"""The two cores of the representation family.

Contrastive core
    A contrastive loss is (similarities, positive weights, a denominator set, a temperature, a
    denominator mode). :func:`contrast` takes anchors ``a`` (n, D), candidates ``c`` (M, D) and, per
    block of anchor rows, a positive-weight matrix ``W`` (b, M) >= 0 and a denominator mask
    ``D`` (b, M); logits are ``l_ij = <a_i, c_j> / tau_i``. With ``w~ = W / sum_j W`` (rows with no
    positive are flagged and left out of means), the per-row loss in each mode is

    * ``'all'`` (InfoNCE, NT-Xent, SupCon, CLIP, CWCL):
      ``-sum_j w~_ij l_ij + log sum_{j in D_i} exp(l_ij)``;
    * ``'decoupled'`` (other positives out of the denominator: each positive competes only with the
      negatives ``N_i = D_i \\ {W > 0}``):
      ``sum_j w~_ij [-l_ij + log(exp(l_ij) + sum_{k in N_i} exp(l_ik))]``; with one positive per row
      this is exactly ``'all'``;
    * ``'negatives'`` (Yeh et al.'s DCL: the positive leaves the denominator too):
      ``-sum_j w~_ij l_ij + log sum_{k in N_i} exp(l_ik)`` (rows without a negative are flagged like
      rows without a positive);
    * ``'pooled'`` returns the per-row pieces ``(log sum_j W_ij exp(l_ij), log sum_{j in D_i} exp(l_ij))``
      for objectives that pool rows (MV-InfoNCE, MV-DHEL pool the rows of one instance's views).

    ``tau`` is a float, a 0-dim tensor (learnable), or one temperature per anchor row (iSogCLR,
    TempNet). ``block_size`` computes the rows in blocks under activation checkpointing, so neither
    the forward nor the backward ever holds more than ``block_size x M`` logits (the N x N
    similarity matrix of N = 32k embeddings is never formed).

Pairs core
    Pair-margin losses (triplet, margin, proto-triplet) are (distance, pairs, hinge, reducer):
    :func:`distance_matrix` with a pluggable distance, then a hinge on margins, then a reducer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .._core import distributed as D
from .._core import fail, reduce
from .._core.validate import check_floating, check_sample_weight
from ..ops.logsumexp import masked_logsumexp

__all__ = ["MODES", "contrast", "check_int_labels", "masked_logsumexp", "embed", "check_temperature", "temperature_rows",
           "finish", "distance_matrix", "DISTANCES"]

MODES = ("all", "decoupled", "negatives")


def embed(name: str, x: torch.Tensor, normalize: bool, dim: int = -1) -> torch.Tensor:
    """Check an embedding tensor; L2-normalise it along ``dim`` (cosine similarity) when asked."""
    check_floating(name, x)
    if x.dim() < 2:
        raise fail(name, "embeddings with a batch and a feature dimension", f"shape {tuple(x.shape)}")
    return F.normalize(x, dim=dim) if normalize else x


def check_int_labels(name: str, labels) -> torch.Tensor:
    """Integer labels (any values: only equality matters)."""
    from .._core.validate import check_tensor

    check_tensor(name, labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise fail(name, "integer labels", f"a {labels.dtype} tensor of shape {tuple(labels.shape)}")
    return labels


def check_temperature(tau, n: int | None = None, name: str = "temperature"):
    """A positive float, a positive 0-dim tensor, or (when ``n``) a positive tensor of shape (n,)."""
    if isinstance(tau, torch.Tensor):
        check_floating(name, tau)
        if tau.dim() != 0 and (n is None or tuple(tau.shape) != (n,)):
            allowed = "a scalar" + (f" or shape ({n},)" if n is not None else "")
            raise fail(name, f"a positive temperature tensor, {allowed}", f"shape {tuple(tau.shape)}")
        if not bool((tau > 0).all()) and not torch.compiler.is_compiling():
            raise fail(name, "positive temperatures", f"min {tau.min().item():.6g}")
        return tau
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise fail(name, "a positive temperature", repr(tau))
    return float(tau)


def temperature_rows(tau, rows: int, ref: torch.Tensor) -> torch.Tensor:
    """The temperature as a (rows, 1) column (broadcast from a scalar, or per row)."""
    if isinstance(tau, torch.Tensor):
        t = tau.to(ref.dtype)
        return t.reshape(-1, 1) if t.dim() else t.reshape(1, 1).expand(rows, 1)
    return ref.new_full((rows, 1), tau)


def _rows(a, c, tau_col, r0, r1, positives, den_mask, mode):
    logits = (a @ c.T) / tau_col
    W = positives(r0, r1).to(logits.dtype)
    den = den_mask(r0, r1)
    wsum = W.sum(1)
    has_pos = wsum > 0
    if mode == "pooled":
        # log sum_j W_ij exp(l_ij): entries with W = 0 are masked out (never log 0)
        logw = torch.where(W > 0, W, W.new_ones(())).log()
        pos_lse = masked_logsumexp(logits + logw, W > 0)
        return pos_lse, masked_logsumexp(logits, den), has_pos
    wn = W / torch.where(has_pos, wsum, wsum.new_ones(())).unsqueeze(1)
    pos = (wn * logits).sum(1)
    if mode == "all":
        return masked_logsumexp(logits, den | (W > 0)) - pos, has_pos
    neg = den & (W == 0)
    neg_lse = masked_logsumexp(logits, neg)
    if mode == "negatives":
        # an anchor without negatives has no defined loss (log 0): flagged and left out like one
        # without positives, with an exact 0 (never -inf) in its place
        ok = has_pos & neg.any(1)
        return torch.where(ok, neg_lse - pos, pos.new_zeros(())), ok
    # decoupled: log(e^l + e^neg_lse) - l = softplus(neg_lse - l), exact and finite for every entry
    sp = F.softplus(torch.where(W > 0, neg_lse.unsqueeze(1) - logits, logits.new_zeros(())))
    return (wn * sp).sum(1), has_pos


def contrast(a: torch.Tensor, c: torch.Tensor, *, tau, positives: Callable[[int, int], torch.Tensor],
             den_mask: Callable[[int, int], torch.Tensor], mode: str = "all",
             block_size: int | None = None, group_rows: int = 1):
    """Per-row contrastive terms (see the module docstring). Returns ``(loss, has_pos)`` or, with
    ``mode='pooled'``, ``(pos_lse, den_lse, has_pos)``; each of length ``n = a.shape[0]``.

    ``positives(r0, r1)`` and ``den_mask(r0, r1)`` give the (r1 - r0, M) blocks for anchor rows
    ``r0:r1``. ``group_rows``: blocks hold whole groups of this many rows (the views of one instance).
    """
    if mode not in MODES + ("pooled",):
        raise fail("denominator", f"one of {MODES}", repr(mode))
    n = a.shape[0]
    tau_col = temperature_rows(tau, n, a)
    if block_size is None or block_size >= n:
        return _rows(a, c, tau_col, 0, n, positives, den_mask, mode)
    if block_size < 1:
        raise fail("block_size", "a positive number of rows or None", repr(block_size))
    step = max(group_rows, (block_size // group_rows) * group_rows)
    outs = []
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)

        def f(ab, cc, tb, r0=r0, r1=r1):
            return _rows(ab, cc, tb, r0, r1, positives, den_mask, mode)

        if torch.is_grad_enabled() and (a.requires_grad or c.requires_grad or tau_col.requires_grad):
            outs.append(checkpoint(f, a[r0:r1], c, tau_col[r0:r1], use_reentrant=False))
        else:
            outs.append(f(a[r0:r1], c, tau_col[r0:r1]))
    return tuple(torch.cat(parts) for parts in zip(*outs))


def finish(loss: torch.Tensor, reduction: str, sample_weight=None, mask=None, *, gathered: bool = False,
           group=None) -> torch.Tensor:
    """Weights, mask and reduction of per-anchor losses; with ``gathered`` the 'sum' and 'mean' are
    over the anchors of every rank (value all-reduced, gradient through the local terms)."""
    w = check_sample_weight(sample_weight, loss.shape)
    if mask is not None and mask.shape != loss.shape:
        mask = mask.reshape(mask.shape + (1,) * (loss.dim() - mask.dim()))
    if not gathered or not D.is_distributed(group) or reduction == "none":
        return reduce(loss, reduction, weight=w, mask=mask)
    local_sum = reduce(loss, "sum", weight=w, mask=mask)
    if reduction == "sum":
        return D.global_value(local_sum, group)
    if w is not None:
        wf = w.to(loss.dtype).expand_as(loss)
        denom = torch.where(mask.expand_as(loss), wf, wf.new_zeros(())).sum() if mask is not None else wf.sum()
    elif mask is not None:
        denom = mask.expand_as(loss).sum().to(loss.dtype)
    else:
        denom = loss.new_tensor(float(loss.numel()))
    denom = D.global_sum(denom.detach(), group)
    denom = torch.where(denom == 0, denom.new_ones(()), denom)
    return D.global_value(local_sum / denom, group)


# ------------------------------------------------------------------------------------- pairs core
def _euclidean(x, y):
    # exact zero on the diagonal of x vs x, and a finite gradient there (no sqrt(0) on coincident points)
    d2 = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)
    pos = d2 > 0
    return torch.where(pos, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), d2.new_zeros(()))


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": _euclidean,
    "squared_euclidean": lambda x, y: (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1),
    "cosine": lambda x, y: 1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T,
}


def distance_matrix(x: torch.Tensor, y: torch.Tensor, distance) -> torch.Tensor:
    """Pairwise distances (n, m) under ``distance``: a name in :data:`DISTANCES` or a callable
    ``(x (n, D), y (m, D)) -> (n, m)``."""
    if callable(distance):
        return distance(x, y)
    if distance not in DISTANCES:
        raise fail("distance", f"one of {sorted(DISTANCES)} or a callable", repr(distance))
    return DISTANCES[distance](x, y)
