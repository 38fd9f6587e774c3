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

from .._core import fail, finish
from .._core.domains import COUNT, Choice, Either, Maybe, Real
from .._core.domains import Callable as CallableOption
from .._core.validate import check_floating, require
from ..ops.logsumexp import masked_logsumexp
from ..ops.pairwise import safe_sqrt, sq_dist

__all__ = ["MODES", "contrast", "check_int_labels", "masked_logsumexp", "embed", "check_temperature", "temperature_rows",
           "finish", "distance_matrix", "DISTANCES", "TEMPERATURE", "BLOCK_SIZE", "DISTANCE"]

MODES = ("all", "decoupled", "negatives")

#: A temperature: a positive float or a tensor of positive values (a learnable temperature), checked by the
#: registry wrapper without a host synchronisation.
TEMPERATURE = Real(0.0, None, lo_open=True, tensor=True)
#: Rows per block of the blocked (checkpointed) similarity computation, or None for one block.
BLOCK_SIZE = Maybe(COUNT)


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
    """A positive float, a positive 0-dim tensor, or (when ``n``) a positive tensor of shape (n,).

    A tensor's values are checked by :func:`~losskit._core.validate.require` (the validation mode: no host
    synchronisation on accelerators, nothing on meta tensors or while compiling); registered objectives
    declare :data:`TEMPERATURE`, which the wrapper checks the same way before the call.
    """
    if isinstance(tau, torch.Tensor):
        check_floating(name, tau)
        if tau.dim() != 0 and (n is None or tuple(tau.shape) != (n,)):
            allowed = "a scalar" + (f" or shape ({n},)" if n is not None else "")
            raise fail(name, f"a positive temperature tensor, {allowed}", f"shape {tuple(tau.shape)}")
        if tau.numel():
            require(name, tau, lambda: TEMPERATURE.tensor_bad(tau), "positive temperatures",
                    lambda: f"min {tau.min().item():.6g}")
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


# ``finish`` (imported above from losskit._core) is the reduction tail of every objective here; it is
# re-exported under this module's old name (its sample_weight and mask are keyword-only now).


# ------------------------------------------------------------------------------------- pairs core
def _euclidean(x, y):
    # differences, not the GEMM expansion: an exact zero on the diagonal of x vs x, and safe_sqrt gives a
    # zero (finite) gradient there (no sqrt'(0) = inf at coincident points)
    return safe_sqrt(sq_dist(x, y, expand=False))


def _squared_euclidean(x, y):
    return sq_dist(x, y, expand=False)


def _cosine(x, y):
    return 1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": _euclidean,
    "squared_euclidean": _squared_euclidean,
    "cosine": _cosine,
}

#: A distance option: a name in :data:`DISTANCES` or a callable ``(x (n, D), y (m, D)) -> (n, m)``.
DISTANCE = Either(Choice(*DISTANCES), CallableOption("a callable (x (n, D), y (m, D)) -> (n, m) distances"))


def distance_matrix(x: torch.Tensor, y: torch.Tensor, distance, names: tuple[str, str] | None = None) -> torch.Tensor:
    """Pairwise distances (n, m) under ``distance``: a name in :data:`DISTANCES` or a callable
    ``(x (n, D), y (m, D)) -> (n, m)``.

    With ``names`` (the arguments ``x`` and ``y`` come from), Euclidean distances whose squares overflow the
    dtype (float32 embeddings of magnitude ~1e19 and more) raise :class:`LossInputError` naming the input of
    larger magnitude, instead of giving ``inf - inf = NaN`` in the margins (a value check: it follows the
    validation mode).
    """
    if callable(distance):
        return distance(x, y)
    if distance not in DISTANCES:
        raise fail("distance", f"one of {sorted(DISTANCES)} or a callable", repr(distance))
    d = DISTANCES[distance](x, y)
    if names is not None and distance != "cosine" and d.numel():
        check_distances_fit(d, names, x, y)
    return d


def check_distances_fit(d: torch.Tensor, names: tuple[str, str], x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise, naming ``x`` or ``y`` (the one of larger magnitude), when the distances ``d`` overflowed."""
    expected = f"values whose squared distances fit in {d.dtype}"
    cache: dict[str, torch.Tensor] = {}

    def x_larger():  # 0-d bool tensors, computed once and only when a check runs
        if "x" not in cache:
            cache["x"] = (d.amax() == float("inf")) & (x.detach().abs().amax() >= y.detach().abs().amax())
            cache["y"] = (d.amax() == float("inf")) & ~cache["x"]
        return cache

    def got(t):
        return lambda: f"magnitudes up to {t.abs().max().item():.3g}"

    require(names[0], x, lambda: x_larger()["x"], expected, got(x))
    require(names[1], y, lambda: x_larger()["y"], expected, got(y))
