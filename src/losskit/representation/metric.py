"""Pair-margin metric learning on one core: distance -> pairs -> (miner) -> hinge -> reducer.

:func:`pairs` builds, for local anchors against (gathered) candidates, the distance matrix under a
pluggable distance and the positive / negative pair masks (self excluded); a *pair miner* (optional)
keeps a subset of those pairs; the objectives here are a hinge on margins of the kept pairs and a reducer.

Pair miners
    A miner is a callable ``miner(dist, pos, neg) -> (pos, neg)``: from the (detached) distances
    ``dist`` (n, M) of the anchors to the candidates (lower = closer; for cosine losses ``1 - cos``)
    and the label-defined boolean masks, it returns the boolean masks of the pairs to keep. The losses
    keep ``pos & mined_pos`` and ``neg & mined_neg`` (a miner can only remove pairs) and never
    differentiate through the choice. :class:`MultiSimilarityMiner`, :class:`BatchHardMiner` and
    :class:`PairMarginMiner` are provided (as in pytorch-metric-learning); ``miner=`` of
    :func:`triplet_margin`, :func:`contrastive_margin` and :func:`multi_similarity` takes one of them,
    its name (default settings), or any callable of that signature (e.g. fixed masks:
    ``miner=lambda d, p, n: (p & P, n & N)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._core import Paper, check_reduction, fail, finish, objective
from .._core import distributed as D
from .._core.domains import COUNT, FLAG, NONNEGATIVE, POSITIVE, REAL, Choice, Domain, Either, Maybe, Real
from .._core.domains import Callable as CallableOption
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, require
from ._inputs import FEATURES_LABELS, features_labels_example, scale_all
from .core import DISTANCE, check_int_labels, distance_matrix, embed, masked_logsumexp

__all__ = ["pairs", "Pairs", "mine", "PairMiner", "MultiSimilarityMiner", "BatchHardMiner", "PairMarginMiner",
           "MINERS", "TRIPLET_MINING", "REDUCERS", "ThresholdReducer", "resolve_reducer", "reduce_terms", "reduce_masked", "triplet_margin", "contrastive_margin", "multi_similarity", "tcm", "proto_triplet",
           "circle_loss", "lifted_structure", "fast_ap", "CircleLoss", "LiftedStructureLoss", "FastAPLoss",
           "TripletMarginLoss", "ContrastiveMarginLoss", "MultiSimilarityLoss", "TCMLoss", "ProtoTripletLoss"]

FAMILY = "representation"
FACENET = Paper("FaceNet: A Unified Embedding for Face Recognition and Clustering", 2015, "1503.03832",
                "Schroff, Kalenichenko, Philbin")
HADSELL = Paper("Dimensionality Reduction by Learning an Invariant Mapping", 2006, None, "Hadsell, Chopra, LeCun")
MS = Paper("Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning", 2019, "1904.06627",
           "Wang, Han, Huang, Dong, Scott")
TCM = Paper("Threshold-Consistent Margin Loss for Open-World Deep Metric Learning", 2024, "2307.04047",
            "Zhang et al.")
SUSANA = Paper("SuSana Distancia is all you need: Enforcing class separability in metric learning via two "
               "novel distance-based loss functions for few-shot image classification", 2023, "2305.09062",
               "Mendez-Ruiz, Gonzalez-Zapata et al.")

#: a margin on distances (any real number)
REAL_MARGIN = REAL
#: a cosine-similarity threshold
COSINE = Real(-1.0, 1.0)


@dataclass
class Pairs:
    """Distances (n, M) of local anchors to candidates, positive and negative masks (self excluded)."""

    dist: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor


def _labels(labels, n):
    check_int_labels("labels", labels)
    check_batch("labels", labels, n, "the batch of embeddings")
    if labels.dim() != 1:
        raise fail("labels", f"integer labels of shape ({n},)", f"shape {tuple(labels.shape)}")
    return labels


def pairs(embeddings, labels, *, distance="euclidean", normalize=False, gather=False, group=None,
          name="embeddings") -> Pairs:
    """The pairs core: distances under ``distance`` (name or callable) and label-defined pair masks."""
    check_floating(name, embeddings)
    if embeddings.dim() != 2:
        raise fail(name, "embeddings of shape (N, D)", f"shape {tuple(embeddings.shape)}")
    labels = _labels(labels, embeddings.shape[0])
    x = embed(name, embeddings, normalize)
    c, offset = D.all_gather(x, group) if gather else (x, 0)
    lab_c = D.all_gather_nograd(labels, group) if gather else labels
    n, m = x.shape[0], c.shape[0]
    rows = torch.arange(n, device=x.device) + offset
    not_self = rows.unsqueeze(1) != torch.arange(m, device=x.device).unsqueeze(0)
    same = labels.unsqueeze(1) == lab_c.unsqueeze(0)
    return Pairs(distance_matrix(x, c, distance, names=(name, name)), same & not_self, ~same)


# ------------------------------------------------------------------------------------- pair miners
class PairMiner:
    """A pair miner: ``miner(dist, pos, neg) -> (pos, neg)`` boolean masks of the pairs to keep.

    ``dist`` (n, M): detached distances of the anchors to the candidates (lower = closer); ``pos``,
    ``neg``: the label-defined pair masks (self excluded). Subclasses implement :meth:`__call__`
    row-wise (each anchor on its own), so mining is the same with ``gather=True``.
    """

    def __call__(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _row_max(d, mask):
    return torch.where(mask, d, d.new_full((), float("-inf"))).amax(1, keepdim=True)


def _row_min(d, mask):
    return torch.where(mask, d, d.new_full((), float("inf"))).amin(1, keepdim=True)


class MultiSimilarityMiner(PairMiner):
    """Multi-Similarity pair mining (Wang et al. 2019, Sec. 3.3), with similarities ``S = 1 - dist``:
    a negative pair is kept if ``S_an + epsilon > min_p S_ap``, a positive pair if
    ``S_ap - epsilon < max_n S_an`` (strict, over the anchor's label-defined pairs). An anchor without
    a positive keeps no negative, one without a negative keeps no positive. ``epsilon`` >= 0
    (0.1 in the paper and the authors' code, and pytorch-metric-learning's ``MultiSimilarityMiner``).
    """

    def __init__(self, epsilon: float = 0.1):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise fail("epsilon", "a real number in [0, inf)", repr(epsilon))
        self.epsilon = float(epsilon)

    def __call__(self, dist, pos, neg):
        # in distances: S_an + eps > min_p S_ap  <=>  d_an - eps < max_p d_ap (and symmetrically)
        far_pos = _row_max(dist, pos)
        near_neg = _row_min(dist, neg)
        return pos & (dist + self.epsilon > near_neg), neg & (dist - self.epsilon < far_pos)


class BatchHardMiner(PairMiner):
    """Batch-hard mining (Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss for Person
    Re-Identification", arXiv:1703.07737): per anchor, the farthest positive and the nearest negative
    (all of them when tied). With :func:`triplet_margin` this is its ``mining='batch_hard'``; with
    pair losses, each anchor's hardest pair of each kind."""

    def __call__(self, dist, pos, neg):
        return pos & (dist == _row_max(dist, pos)), neg & (dist == _row_min(dist, neg))


class PairMarginMiner(PairMiner):
    """Pairs that violate a margin (pytorch-metric-learning's ``PairMarginMiner``): positives with
    ``dist > pos_margin``, negatives with ``dist < neg_margin``. Margins are real numbers (distances)."""

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8):
        for name, v in (("pos_margin", pos_margin), ("neg_margin", neg_margin)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise fail(name, "a real number", repr(v))
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)

    def __call__(self, dist, pos, neg):
        return pos & (dist > self.pos_margin), neg & (dist < self.neg_margin)


#: The miners ``miner=`` accepts by name (with their default settings).
MINERS = {"multi_similarity": MultiSimilarityMiner, "batch_hard": BatchHardMiner, "pair_margin": PairMarginMiner}

#: A ``miner=`` option: None (every pair), a name in :data:`MINERS`, or a callable (dist, pos, neg) -> (pos, neg).
MINER = Maybe(Either(Choice(*MINERS), CallableOption("a pair miner: a callable (dist, pos, neg) -> (pos, neg) masks")))


def mine(pr: Pairs, miner) -> Pairs:
    """The pairs ``pr`` kept by ``miner`` (None, a name in :data:`MINERS` or a callable); distances keep
    their gradient, the masks are chosen without one."""
    if miner is None:
        return pr
    if isinstance(miner, str):
        if miner not in MINERS:
            raise fail("miner", f"None, one of {sorted(MINERS)} or a callable (dist, pos, neg) -> (pos, neg)",
                       repr(miner))
        miner = MINERS[miner]()
    with torch.no_grad():
        out = miner(pr.dist.detach(), pr.pos, pr.neg)
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(m, torch.Tensor) for m in out)):
        raise fail("miner", "a callable returning a (pos, neg) pair of boolean masks", f"{type(out).__name__}")
    mp, mn = out
    for what, m in (("positive", mp), ("negative", mn)):
        if m.dtype != torch.bool or tuple(m.shape) != tuple(pr.dist.shape):
            raise fail("miner", f"a {what} mask of dtype bool and shape {tuple(pr.dist.shape)}",
                       f"{m.dtype} of shape {tuple(m.shape)}")
    return Pairs(pr.dist, pr.pos & mp, pr.neg & mn)


def _masked_mean(v, mask):
    cnt = mask.sum(1)
    s = torch.where(mask, v, v.new_zeros(())).sum(1)
    return s / torch.where(cnt > 0, cnt, cnt.new_ones(())).to(v.dtype), cnt > 0


# ------------------------------------------------------------------------------------------ reducers
@dataclass(frozen=True)
class ThresholdReducer:
    """A reducer over a loss's terms (its triplets or pairs): the mean of the terms strictly between ``low``
    and ``high`` (either bound may be None), 0 when no term is kept -- pytorch-metric-learning's
    ``ThresholdReducer(low, high)``. ``'nonzero'`` is ``ThresholdReducer(low=0)`` (PML's
    ``AvgNonZeroReducer``, the default of its triplet, contrastive, lifted-structure and circle losses) and
    ``'mean'`` is ``ThresholdReducer()`` (``MeanReducer``)."""

    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        for name in ("low", "high"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise fail(name, "None or a finite real number", repr(v))

    def keep(self, terms: torch.Tensor) -> torch.Tensor:
        """The boolean mask of the terms this reducer averages."""
        k = torch.ones_like(terms, dtype=torch.bool)
        if self.low is not None:
            k = k & (terms > self.low)
        if self.high is not None:
            k = k & (terms < self.high)
        return k


#: The reducers ``reducer=`` accepts by name.
REDUCERS = {"mean": ThresholdReducer(), "nonzero": ThresholdReducer(low=0.0)}


class _ReducerDomain(Domain):
    description = "None, 'mean', 'nonzero' or a ThresholdReducer(low, high)"

    def contains(self, value, arguments=None) -> bool:
        return value is None or isinstance(value, ThresholdReducer) or (isinstance(value, str) and value in REDUCERS)

    def invalid(self) -> list:
        return ["no-such-reducer", 0.5]

    def boundaries(self) -> list:
        return ["mean", "nonzero", ThresholdReducer(low=0.0, high=0.5)]


#: A ``reducer=`` option: None (per-anchor losses, then ``reduction``), a name in :data:`REDUCERS` or a
#: :class:`ThresholdReducer`.
REDUCER = _ReducerDomain()


def resolve_reducer(reducer) -> ThresholdReducer | None:
    """None, or the :class:`ThresholdReducer` a ``reducer=`` option names."""
    if reducer is None or isinstance(reducer, ThresholdReducer):
        return reducer
    if isinstance(reducer, str) and reducer in REDUCERS:
        return REDUCERS[reducer]
    raise fail("reducer", REDUCER.description, repr(reducer))


def reduce_terms(total: torch.Tensor, count: torch.Tensor, *, gather: bool = False, group=None) -> torch.Tensor:
    """The reducer's value ``total / count`` (0 when ``count`` is 0) from the sum of the kept terms ``total``
    (differentiable, 0-dim) and their number ``count`` (0-dim, no gradient). With ``gather`` the count is
    every rank's and the value is the whole batch's (each rank's gradient is its own terms')."""
    count = count.detach()
    if gather:
        count = D.global_sum(count, group)
    local = total / torch.where(count > 0, count, count.new_ones(()))
    return D.global_value(local, group) if gather else local


def reduce_masked(terms: torch.Tensor, mask: torch.Tensor, reducer: ThresholdReducer, *, gather: bool = False,
                  group=None) -> torch.Tensor:
    """``reducer`` over the entries of ``terms`` where ``mask`` holds."""
    keep = mask & reducer.keep(terms.detach())
    return reduce_terms(torch.where(keep, terms, terms.new_zeros(())).sum(), keep.sum().to(terms.dtype),
                        gather=gather, group=group)


def _check_reducer(reducer, reduction, sample_weight):
    red = resolve_reducer(reducer)
    if red is not None and (reduction != "mean" or sample_weight is not None):
        raise fail("reducer", "no reducer when reduction is not 'mean' or sample_weight is given (a reducer "
                   "averages terms over the whole batch: one value)",
                   f"reducer={reducer!r} with reduction={reduction!r}"
                   + (" and a sample_weight" if sample_weight is not None else ""))
    return red


def _all_triplets(d, pos, neg, margin, reducer: ThresholdReducer, window=(None, None)):
    """Per anchor, over its triplets (p in P(a), n in N(a)) with terms ``[d_ap - d_an + m]_+``: the sum and the
    number of the terms ``reducer`` keeps, in O(N M log M) time and O(N M) memory (never the N x M x M triplet
    tensor). ``window = (lo, hi)`` mines the triplets with ``d_ap + lo < d_an <= d_ap + hi`` (None: unbounded).

    With the anchor's negative distances sorted and t_p = d_ap + m, a term is positive iff ``d_an < t_p`` and
    lies in (L, H) iff ``t_p - H < d_an < t_p - L``: binary searches give the count c of the negatives in the
    intersection of that interval with the mining window, and a cumulative sum the total ``c t_p - sum d_an``;
    the zero terms (``d_an >= t_p``, in the window) are counted when ``L < 0 < H``."""
    inf = d.new_full((), float("inf"))
    sorted_neg = torch.sort(torch.where(neg, d, inf), dim=1).values  # negatives first, +inf after
    finite = torch.where(torch.isfinite(sorted_neg), sorted_neg, d.new_zeros(()))
    csum = torch.cat([d.new_zeros(d.shape[0], 1), torch.cumsum(finite, dim=1)], dim=1)
    thr = d + margin
    sd, td, dd = sorted_neg.detach().contiguous(), thr.detach().contiguous(), d.detach().contiguous()

    def lt(v):  # #{n: d_an < v}
        return torch.searchsorted(sd, v)

    def le(v):  # #{n: d_an <= v}
        return torch.searchsorted(sd, v, right=True)

    mine_lo, mine_hi = window
    low = 0.0 if reducer.low is None else max(reducer.low, 0.0)
    # the positive terms in the window: lower bounds (strict) t - H and d_ap + lo; upper t - L (strict), d_ap + hi
    lower = None if reducer.high is None else td - reducer.high
    if mine_lo is not None:
        lower = dd + mine_lo if lower is None else torch.maximum(lower, dd + mine_lo)
    lo = le(lower) if lower is not None else torch.zeros_like(lt(td))
    hi = lt(td - low)
    if mine_hi is not None:
        hi = torch.where(dd + mine_hi < td - low, le(dd + mine_hi), hi)
    hi = torch.maximum(hi, lo)
    count = hi - lo
    hinge = count.to(d.dtype) * thr - (torch.gather(csum, 1, hi) - torch.gather(csum, 1, lo))
    if (reducer.low is None or reducer.low < 0) and (reducer.high is None or reducer.high > 0):
        z_hi = le(dd + mine_hi) if mine_hi is not None else neg.sum(1, keepdim=True).expand_as(hi)
        z_lo = lt(td) if mine_lo is None else torch.where(td > dd + mine_lo, lt(td), le(dd + mine_lo))
        count = count + (z_hi - z_lo).clamp(min=0)  # the zero terms
    total = torch.where(pos, hinge, d.new_zeros(())).sum(1)
    kept = torch.where(pos, count, count.new_zeros(())).sum(1).to(d.dtype)
    return total, kept


#: ``mining=`` of :func:`triplet_margin`: the mined window of ``d_an - d_ap`` (lower exclusive, upper
#: inclusive), relative to the mining margin (``'hard'``: ``d_an <= d_ap``; ``'semihard'``:
#: ``d_ap < d_an <= d_ap + margin``, FaceNet's semi-hard negatives and pytorch-metric-learning's
#: ``TripletMarginMiner`` types).
TRIPLET_MINING = ("all", "batch_hard", "hard", "semihard")


@objective(
    "triplet_margin", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=FACENET, per_sample=False,
    properties={"nonnegative"}, module_name="TripletMarginLoss",
    domains={"margin": NONNEGATIVE, "distance": DISTANCE, "mining": Choice(*TRIPLET_MINING), "normalize": FLAG,
             "miner": MINER, "reducer": REDUCER, "mining_margin": Maybe(NONNEGATIVE)},
    formula="l_a = mean_{p in P(a), n in N(a)} [d(a, p) - d(a, n) + m]_+  (mining='all'); "
            "batch_hard: [max_p d(a, p) - min_n d(a, n) + m]_+",
)
def triplet_margin(embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.2,
                   distance="euclidean", mining: str = "all", mining_margin: float | None = None,
                   normalize: bool = False, miner=None, reducer: str | None = None, gather: bool = False, group=None, sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Triplet margin loss over the batch's triplets, with a pluggable distance.

    .. math:: \\ell_a = \\operatorname{mean}_{p \\in P(a),\\, n \\in N(a)} [d(a,p) - d(a,n) + m]_+

    ``mining='all'``: every (positive, negative) of the anchor; ``'batch_hard'`` (Hermans et al.):
    the farthest positive and nearest negative only; ``'semihard'``: the triplets with
    ``d(a,p) < d(a,n) <= d(a,p) + mining_margin`` (FaceNet's semi-hard negatives); ``'hard'``: those with
    ``d(a,n) <= d(a,p)``. ``mining_margin`` >= 0 (None: ``margin``). These two are pytorch-metric-learning's
    ``TripletMarginMiner(mining_margin, type_of_triplets)`` (tested with its miner and reducers); the
    per-anchor mean then runs over each anchor's mined triplets and anchors without one are left out. ``miner``: a pair miner (see the module docstring;
    None, the default, keeps every pair) applied before the triplets are formed: the triplets of an
    anchor are its kept positives times its kept negatives. ``distance``: ``'euclidean'``,
    ``'squared_euclidean'``, ``'cosine'`` (1 - cos) or a callable ``(x (n, D), y (m, D)) -> (n, m)``.
    Anchors without a positive or a negative are left out of the mean ('none' gives 0 there). ``margin``
    >= 0. Euclidean distances whose squares overflow the dtype raise (naming ``embeddings``).
    pytorch-metric-learning's ``TripletMarginLoss(margin, reducer=MeanReducer())`` with its default
    normalised L2 distance equals ``normalize=True`` when every anchor has as many triplets.

    ``reducer``: None (default) gives per-anchor means reduced by ``reduction``; ``'mean'`` the mean over
    every triplet of the batch, ``'nonzero'`` the mean over the triplets with a positive hinge (0 when
    none), pytorch-metric-learning's ``MeanReducer`` and default ``AvgNonZeroReducer``: its default
    ``TripletMarginLoss(margin)`` is ``triplet_margin(margin=margin, normalize=True, reducer='nonzero')``.
    A reducer gives one value for the batch (``reduction`` 'mean', no ``sample_weight``). With
    ``mining='batch_hard'`` the terms are the anchors' hardest triplets.

    Paper: Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", 2015, arXiv:1503.03832.
    """
    check_reduction(reduction)
    red = _check_reducer(reducer, reduction, sample_weight)
    if mining not in TRIPLET_MINING:
        raise fail("mining", f"one of {TRIPLET_MINING}", repr(mining))
    pr = mine(pairs(embeddings, labels, distance=distance, normalize=normalize, gather=gather, group=group), miner)
    d = pr.dist
    has = pr.pos.any(1) & pr.neg.any(1)
    if mining != "batch_hard":
        mm = margin if mining_margin is None else mining_margin
        window = {"all": (None, None), "hard": (None, 0.0), "semihard": (0.0, mm)}[mining]
        total, kept = _all_triplets(d, pr.pos, pr.neg, margin, red or REDUCERS["mean"], window)
        if red is not None:
            return reduce_terms(total.sum(), kept.sum(), gather=gather, group=group)
        has = kept > 0
        loss = total / torch.where(has, kept, kept.new_ones(()))
    else:
        far = torch.where(pr.pos, d, d.new_full((), float("-inf"))).amax(1)
        near = torch.where(pr.neg, d, d.new_full((), float("inf"))).amin(1)
        gap = torch.where(has, far - near, d.new_zeros(()))
        loss = torch.relu(gap + margin)
    loss = torch.where(has, loss, loss.new_zeros(()))
    if red is not None:
        return reduce_masked(loss, has, red, gather=gather, group=group)
    return finish(loss, reduction, sample_weight=sample_weight, mask=has, gathered=gather, group=group)


@objective(
    "contrastive_margin", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=HADSELL, per_sample=False,
    properties={"nonnegative"}, module_name="ContrastiveMarginLoss",
    domains={"pos_margin": NONNEGATIVE, "neg_margin": NONNEGATIVE, "power": Real(1.0, None), "distance": DISTANCE,
             "normalize": FLAG, "miner": MINER, "reducer": REDUCER},
    formula="l_a = mean_{p} [d(a, p) - m+]_+^q + mean_{n} [m- - d(a, n)]_+^q",
)
def contrastive_margin(embeddings: torch.Tensor, labels: torch.Tensor, *, pos_margin: float = 0.0,
                       neg_margin: float = 1.0, power: float = 2.0, distance="euclidean", normalize: bool = False,
                       miner=None, reducer: str | None = None, gather: bool = False, group=None,
                       sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Contrastive (pair margin) loss: positives pulled within ``pos_margin``, negatives pushed past ``neg_margin``.

    .. math:: \\ell_a = \\operatorname{mean}_{p \\in P(a)} [d(a,p) - m^+]_+^q
              + \\operatorname{mean}_{n \\in N(a)} [m^- - d(a,n)]_+^q

    Hadsell et al.'s loss is ``q = 2, m+ = 0``; the distance is pluggable as in :func:`triplet_margin`.
    A term with no pair for the anchor is 0. ``miner``: a pair miner (module docstring; None keeps every
    pair): the means run over the kept pairs. Margins >= 0; ``power`` q >= 1 (q < 1 has an infinite
    gradient at the margin).

    ``reducer``: None (default) gives the per-anchor losses above reduced by ``reduction``; ``'mean'`` /
    ``'nonzero'`` average the positive-pair terms over all (non-zero) positive pairs of the batch and the
    negative-pair terms likewise, and add the two, as pytorch-metric-learning's reducers do per sub-loss:
    its default ``ContrastiveLoss(pos_margin, neg_margin)`` is ``contrastive_margin(pos_margin=...,
    neg_margin=..., power=1, normalize=True, reducer='nonzero')``. One value for the batch.

    Paper: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", 2006.
    """
    check_reduction(reduction)
    red = _check_reducer(reducer, reduction, sample_weight)
    pr = mine(pairs(embeddings, labels, distance=distance, normalize=normalize, gather=gather, group=group), miner)
    pos_terms = torch.relu(pr.dist - pos_margin).pow(power)
    neg_terms = torch.relu(neg_margin - pr.dist).pow(power)
    if red is not None:
        return (reduce_masked(pos_terms, pr.pos, red, gather=gather, group=group)
                + reduce_masked(neg_terms, pr.neg, red, gather=gather, group=group))
    pos, _ = _masked_mean(pos_terms, pr.pos)
    neg, _ = _masked_mean(neg_terms, pr.neg)
    return finish(pos + neg, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "multi_similarity", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=MS, per_sample=False,
    properties={"nonnegative"}, module_name="MultiSimilarityLoss",
    domains={"alpha": POSITIVE, "beta": POSITIVE, "base": COSINE, "miner": MINER},
    formula="l_a = 1/alpha log(1 + sum_{p mined} e^{-alpha (S_ap - base)}) + 1/beta log(1 + sum_{n mined} e^{beta (S_an - base)}); "
            "mined: S_an + 0.1 > min_p S_ap, S_ap - 0.1 < max_n S_an",
)
def multi_similarity(embeddings: torch.Tensor, labels: torch.Tensor, *, alpha: float = 2.0, beta: float = 50.0,
                     base: float = 0.5, miner="multi_similarity", gather: bool = False, group=None,
                     sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Multi-similarity loss: soft weighting of all positive and negative pairs by their cosine similarity.

    .. math:: \\ell_a = \\frac1\\alpha \\log\\Big(1 + \\sum_{p \\in P(a)} e^{-\\alpha (S_{ap} - \\lambda)}\\Big)
              + \\frac1\\beta \\log\\Big(1 + \\sum_{n \\in N(a)} e^{\\beta (S_{an} - \\lambda)}\\Big)

    S: cosine similarities; ``base`` is lambda, in [-1, 1]; ``alpha``, ``beta`` > 0 (a negative beta would
    reward similar negatives). Computed as ``softplus(logsumexp(...))`` (exact, no overflow at beta = 50).

    The sums run over the *mined* pairs: by default the paper's own mining step (Sec. 3.3,
    :class:`MultiSimilarityMiner`, epsilon = 0.1: a negative is kept if ``S_an + 0.1 > min_p S_ap``, a
    positive if ``S_ap - 0.1 < max_n S_an``), which the paper's reported results and the authors' code
    (MalongTech/research-ms-loss, ``ret_benchmark/losses/multi_similarity_loss.py``) use. ``miner=None``
    sums over every pair: pytorch-metric-learning's ``MultiSimilarityLoss`` without a miner; any other pair miner (module docstring) can be passed. The mean is over
    all anchors, those left without pairs counting 0, as in both. The authors' code also drops
    positive pairs of similarity >= 1 - 1e-5 (it removes the anchor itself that way, so duplicates of
    the anchor go too; losskit removes the anchor by index only) and fails on an anchor without a
    positive or a negative (losskit gives it 0, as pytorch-metric-learning's miner + loss). Defaults
    alpha = 2, beta = 50, base = 0.5 as pytorch-metric-learning (the authors' config: beta = 40, base 0.5).
    ``'none'`` returns (N,).

    Paper: Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", 2019, arXiv:1904.06627.
    """
    check_reduction(reduction)
    pr = mine(pairs(embeddings, labels, distance="cosine", gather=gather, group=group), miner)
    s = 1 - pr.dist
    pos = torch.nn.functional.softplus(masked_logsumexp(-alpha * (s - base), pr.pos)) / alpha
    neg = torch.nn.functional.softplus(masked_logsumexp(beta * (s - base), pr.neg)) / beta
    return finish(pos + neg, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "tcm", seed=True, batch_scalar=True, family=FAMILY, input_kind=FEATURES_LABELS, example=lambda g, d: _rename(_tcm_example(g, d)),
    paper=TCM, per_sample=False, sample_weight=False, properties={"nonnegative"}, module_name="TCMLoss",
    domains={"lambda_plus": NONNEGATIVE, "lambda_minus": NONNEGATIVE, "margin_plus": COSINE, "margin_minus": COSINE},
    formula="L = l+ mean_{s+ <= m+}(m+ - s+) + l- mean_{s- >= m-}(s- - m-), s cosine similarities of pairs",
)
def tcm(embeddings: torch.Tensor, labels: torch.Tensor, *, lambda_plus: float = 1.0, lambda_minus: float = 1.0,
        margin_plus: float = 0.9, margin_minus: float = 0.5, gather: bool = False, group=None,
        reduction: str = "mean") -> torch.Tensor:
    """Threshold-consistent margin (TCM) regulariser: penalise hard positive and hard negative pairs.

    .. math:: \\mathcal L = \\lambda^+ \\frac{\\sum_{s^+ \\le m^+} (m^+ - s^+)}{|\\{s^+ \\le m^+\\}|}
              + \\lambda^- \\frac{\\sum_{s^- \\ge m^-} (s^- - m^-)}{|\\{s^- \\ge m^-\\}|}

    over the cosine similarities of all ordered positive pairs (i != j, same label) and negative pairs
    of the batch; an empty selection contributes 0. Margins are cosine thresholds in [-1, 1], the weights
    ``lambda_plus``, ``lambda_minus`` >= 0. It is an add-on: ``base_loss + tcm(...)``. A
    batch-level loss (every reduction returns the one value). Same convention as
    pytorch-metric-learning's ``ThresholdConsistentMarginLoss``.

    Paper: Zhang et al., "Threshold-Consistent Margin Loss for Open-World Deep Metric
    Learning", 2024, arXiv:2307.04047.
    """
    check_reduction(reduction)
    pr = pairs(embeddings, labels, distance="cosine", gather=gather, group=group)
    s = 1 - pr.dist
    sel_p = pr.pos & (s <= margin_plus)
    sel_n = pr.neg & (s >= margin_minus)
    num_p = torch.where(sel_p, margin_plus - s, s.new_zeros(())).sum()
    num_n = torch.where(sel_n, s - margin_minus, s.new_zeros(())).sum()
    cnt_p = D.global_sum(sel_p.sum().to(s.dtype), group) if gather else sel_p.sum().to(s.dtype)
    cnt_n = D.global_sum(sel_n.sum().to(s.dtype), group) if gather else sel_n.sum().to(s.dtype)
    local = lambda_plus * num_p / torch.where(cnt_p > 0, cnt_p, cnt_p.new_ones(())) \
        + lambda_minus * num_n / torch.where(cnt_n > 0, cnt_n, cnt_n.new_ones(()))
    return D.global_value(local, group) if gather else local


def _tcm_example(gen, dtype):
    ex = features_labels_example(gen, dtype)
    return ex


def _rename(ex: Example) -> Example:
    return Example({"embeddings": ex.inputs["features"], "labels": ex.inputs["labels"]}, grad=("embeddings",))


# --------------------------------------------------------------------------------- proto-triplet
def _episode_example(gen, dtype, ways: int = 3, shots: int = 2, queries: int = 7, d: int = 4) -> Example:
    centers = 2 * torch.randn(ways, d, generator=gen, dtype=torch.float64)
    s_lab = torch.arange(ways).repeat_interleave(shots)
    support = centers[s_lab] + torch.randn(ways * shots, d, generator=gen, dtype=torch.float64)
    q_lab = torch.randint(0, ways, (queries,), generator=gen)
    query = centers[q_lab] + torch.randn(queries, d, generator=gen, dtype=torch.float64)
    return Example({"query": query.to(dtype), "query_labels": q_lab, "support": support.to(dtype),
                    "support_labels": s_lab}, grad=("query", "support"), batched=("query", "query_labels"))


def _episode_bad(ex: Example) -> list[BadInput]:
    q, ql, s, sl = (ex.inputs[k] for k in ("query", "query_labels", "support", "support_labels"))
    return [
        BadInput("query label absent from the support", ex.replace({"query_labels": ql + 100}), "query_labels"),
        BadInput("query labels of the wrong length", ex.replace({"query_labels": ql[:-1]}), "query_labels"),
        BadInput("support of another width", ex.replace({"support": s[:, :-1]}), "support"),
        BadInput("support labels of the wrong length", ex.replace({"support_labels": sl[:-1]}), "support_labels"),
        BadInput("a single class in the support", ex.replace({"support_labels": torch.zeros_like(sl),
                                                              "query_labels": torch.zeros_like(ql)}), "support_labels"),
        BadInput("float labels", ex.replace({"query_labels": ql.double()}), "query_labels"),
    ]


EPISODE = InputKind("few-shot episode", "query (Q, D) + labels (Q,), support (S, D) + labels (S,)",
                    bad_inputs=_episode_bad, extreme=scale_all())


@objective(
    "proto_triplet", seed=True, family=FAMILY, input_kind=EPISODE, example=_episode_example, paper=SUSANA,
    properties={"nonnegative"}, module_name="ProtoTripletLoss", domains={"margin": NONNEGATIVE, "distance": DISTANCE},
    formula="l_q = [d(q, c_y) - min_{k != y} d(q, c_k) + m]_+,  c_k = mean of the support of class k (m = 0.5)",
)
def proto_triplet(query: torch.Tensor, query_labels: torch.Tensor, support: torch.Tensor,
                  support_labels: torch.Tensor, *, margin: float = 0.5, distance="euclidean",
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Proto-triplet loss for few-shot episodes: a query's own prototype must beat the nearest wrong one.

    .. math:: \\ell_q = [d(q, c_{y_q}) - d(q, c_{k^*}) + m]_+,\\qquad
              k^* = \\arg\\min_{k \\ne y_q} d(q, c_k),\\quad c_k = \\operatorname{mean}\\{s : y_s = k\\}

    Prototypes are the class means of the support embeddings (ProtoNets; pass precomputed prototypes
    as a support of one row per class); the positive is the query's class prototype, the negative
    the nearest other prototype. Defaults as the authors' code: Euclidean distance, m = 0.5 (their
    distance adds 1e-6 under the square root; ours is exact). ``distance`` is pluggable (names as in
    :func:`triplet_margin`). Per-query losses: ``'none'`` returns (Q,); 'mean' is their mean. ``margin`` >= 0.
    The support needs at least 2 classes and every query label must occur in it (value checks, under the
    validation mode); prototypes are formed per support sample, so shapes never depend on the labels'
    values (meta tensors and ``torch.compile(fullgraph=True)`` work).

    Paper: Mendez-Ruiz, Gonzalez-Zapata et al., "SuSana Distancia is all you need: Enforcing class separability in
    metric learning via two novel distance-based loss functions for few-shot image classification",
    2023, arXiv:2305.09062.
    """
    check_reduction(reduction)
    for name, x in (("query", query), ("support", support)):
        check_floating(name, x)
        if x.dim() != 2:
            raise fail(name, "embeddings of shape (N, D)", f"shape {tuple(x.shape)}")
    if support.shape[1] != query.shape[1]:
        raise fail("support", f"embeddings of width {query.shape[1]} like query", f"shape {tuple(support.shape)}")
    check_int_labels("support_labels", support_labels)
    check_batch("support_labels", support_labels, support.shape[0], "the support")
    check_int_labels("query_labels", query_labels)
    check_batch("query_labels", query_labels, query.shape[0], "the query")
    # Prototypes without torch.unique (whose output shape depends on the data: no meta tensors, no fullgraph
    # compile): each support sample s carries its class prototype c_{y_s} (duplicated within a class, (S, D)),
    # so distances are (Q, S) and a class is a set of identical columns.
    same = support_labels.unsqueeze(1) == support_labels.unsqueeze(0)  # (S, S)
    sf = same.to(support.dtype)
    protos = (sf @ support) / sf.sum(1, keepdim=True)
    match = query_labels.unsqueeze(1) == support_labels.unsqueeze(0)  # (Q, S)
    require("support_labels", support_labels, lambda: (support_labels == support_labels[0]).all(),
            "at least 2 classes in the support", lambda: "1 class")
    require("query_labels", query_labels, lambda: ~match.any(1).all(), "labels that occur in support_labels",
            lambda: (lambda b: f"{query_labels[b].item()} at position {b}")(int((~match.any(1)).nonzero()[0, 0])))
    d = distance_matrix(query, protos, distance, names=("query", "support"))  # (Q, S)
    # the own prototype's distance: the mean over its (identical) duplicate columns
    cnt = match.sum(1)
    d_pos = torch.where(match, d, d.new_zeros(())).sum(1) / torch.where(cnt > 0, cnt, cnt.new_ones(())).to(d.dtype)
    d_neg = torch.where(match, d.new_full((), float("inf")), d).amin(1)
    return finish(torch.relu(d_pos - d_neg + margin), reduction, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------- circle loss
CIRCLE = Paper("Circle Loss: A Unified Perspective of Pair Similarity Optimization", 2020, "2002.10857",
               "Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei")
LIFTED = Paper("Deep Metric Learning via Lifted Structured Feature Embedding", 2016, "1511.06452",
               "Oh Song, Xiang, Jegelka, Savarese")
FASTAP = Paper("Deep Metric Learning to Rank", 2019, None, "Cakir, He, Xia, Kulis, Sclaroff (CVPR 2019)")


@objective(
    "circle_loss", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=CIRCLE, per_sample=False,
    properties={"nonnegative"}, module_name="CircleLoss", gradcheck=False,
    domains={"m": Real(0.0, 1.0), "gamma": POSITIVE, "miner": MINER},
    formula="l_a = softplus(lse_p(-g [1 + m - s_ap]_+ (s_ap - 1 + m)) + lse_n(g [s_an + m]_+ (s_an - m))), "
            "s cosine, weights [.]_+ without gradient",
)
def circle_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, m: float = 0.4, gamma: float = 80.0, miner=None,
                gather: bool = False, group=None, sample_weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
    """Circle loss (pair-wise labels): each similarity is re-weighted by its distance from its optimum.

    .. math:: \\ell_a = \\log\\Big(1 + \\sum_{n} e^{\\gamma \\alpha_n (s_{an} - \\Delta_n)}
              \\sum_{p} e^{-\\gamma \\alpha_p (s_{ap} - \\Delta_p)}\\Big),\\quad
              \\alpha_p = [1 + m - s_{ap}]_+,\\ \\alpha_n = [s_{an} + m]_+,\\ \\Delta_p = 1 - m,\\ \\Delta_n = m

    s: cosine similarities; the weights alpha are constants in the gradient (the paper's and
    pytorch-metric-learning's ``detach``). ``m`` in [0, 1] the relaxation (0.4), ``gamma`` > 0 the scale (80),
    pytorch-metric-learning's defaults (the paper: m 0.25, gamma 256 for faces). Anchors without a positive or
    a negative are left out of the mean ('none' gives 0): PML's ``CircleLoss`` (its ``AvgNonZeroReducer``
    over anchors) gives the same value. ``miner``: a pair miner (module docstring). Computed as
    ``softplus(logsumexp + logsumexp)`` (no overflow at gamma = 256). ``'none'`` returns (N,).

    Paper: Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", 2020,
    arXiv:2002.10857.
    """
    check_reduction(reduction)
    pr = mine(pairs(embeddings, labels, distance="cosine", gather=gather, group=group), miner)
    s = 1 - pr.dist
    sd = s.detach()
    lp = -gamma * torch.relu(1 + m - sd) * (s - (1 - m))
    ln = gamma * torch.relu(sd + m) * (s - m)
    has = pr.pos.any(1) & pr.neg.any(1)
    z = masked_logsumexp(lp, pr.pos) + masked_logsumexp(ln, pr.neg)
    loss = torch.nn.functional.softplus(torch.where(has, z, z.new_zeros(())))
    loss = torch.where(has, loss, loss.new_zeros(()))
    return finish(loss, reduction, sample_weight=sample_weight, mask=has, gathered=gather, group=group)


# ---------------------------------------------------------------------------------- lifted structure
@objective(
    "lifted_structure", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=LIFTED, per_sample=False,
    batch_scalar=True, sample_weight=False, properties={"nonnegative"}, module_name="LiftedStructureLoss",
    domains={"neg_margin": REAL_MARGIN, "pos_margin": REAL_MARGIN, "distance": DISTANCE, "normalize": FLAG,
             "reducer": REDUCER},
    formula="L = 1/(2|P|) sum_{(i,j) in P} [log(sum_{k in N(i)} e^{a - d_ik} + sum_{l in N(j)} e^{a - d_jl}) "
            "+ d_ij - m+]_+^2",
)
def lifted_structure(embeddings: torch.Tensor, labels: torch.Tensor, *, neg_margin: float = 1.0,
                     pos_margin: float = 0.0, distance="euclidean", normalize: bool = False, reducer="mean",
                     reduction: str = "mean") -> torch.Tensor:
    """Lifted structured loss: every positive pair against all the negatives of both its ends.

    .. math:: J_{ij} = \\log\\Big(\\sum_{k \\in N(i)} e^{\\alpha - d_{ik}} + \\sum_{l \\in N(j)}
              e^{\\alpha - d_{jl}}\\Big) + d_{ij} - m^+,\\qquad
              \\mathcal L = \\frac{1}{2|P|} \\sum_{(i, j) \\in P} [J_{ij}]_+^2

    over the positive pairs P (unordered; computed over the ordered pairs, each term halved).
    ``neg_margin`` alpha (1), ``pos_margin`` m+ (0, an extension of pytorch-metric-learning). ``reducer``:
    ``'mean'`` (the paper: over every positive pair) or ``'nonzero'`` (over the pairs with ``J > 0``,
    pytorch-metric-learning's default): its ``LiftedStructureLoss(neg_margin, pos_margin)`` is
    ``lifted_structure(..., normalize=True, reducer='nonzero')``. ``distance`` pluggable as in
    :func:`triplet_margin` (Euclidean, the paper's). A batch-level loss (every reduction returns the one
    value); 0 without a positive pair or a negative.

    Paper: Oh Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature
    Embedding", 2016, arXiv:1511.06452.
    """
    check_reduction(reduction)
    red = resolve_reducer(reducer)
    if red is None:
        raise fail("reducer", "'mean', 'nonzero' or a ThresholdReducer (a batch-level loss)", "None")
    pr = pairs(embeddings, labels, distance=distance, normalize=normalize)
    d = pr.dist
    neg_lse = masked_logsumexp(neg_margin - d, pr.neg)  # (N,): -inf for an anchor without negatives
    both = torch.logaddexp(neg_lse.unsqueeze(1), neg_lse.unsqueeze(0))
    ok = pr.pos & torch.isfinite(both)
    j = torch.where(ok, both + d - pos_margin, d.new_zeros(()))
    return reduce_masked(torch.relu(j).pow(2) / 2, ok, red)


# -------------------------------------------------------------------------------------------- FastAP
@objective(
    "fast_ap", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=FASTAP, per_sample=False,
    properties={"nonnegative", "bounded"}, module_name="FastAPLoss", domains={"num_bins": COUNT},
    formula="l_a = 1 - 1/N+_a sum_b h+_b H+_b / H_b  (histograms of ||x_a - x||^2 over b bins of [0, 4], "
            "triangular kernel)",
)
def fast_ap(embeddings: torch.Tensor, labels: torch.Tensor, *, num_bins: int = 10,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """FastAP: one minus a differentiable average precision of each anchor's ranking, from distance histograms.

    .. math:: \\ell_a = 1 - \\frac{1}{N^+_a} \\sum_{b=0}^{B} \\frac{h^+_b H^+_b}{H_b},\\qquad
              h^\\pm_b = \\sum_{x \\in \\pm} \\delta_b(\\|\\hat a - \\hat x\\|^2)

    with ``delta_b(d) = [1 - |d - c_b| / Delta]_+`` the triangular kernel around the B + 1 bin centres
    ``c_b = 4 b / B`` (``Delta = 4 / B``) on the squared distances of the L2-normalised embeddings (in
    [0, 4]), ``H`` the cumulative histograms (``H+`` of positives, ``H`` of all) and ``N+`` the anchor's
    number of positives; bins with ``h+ H+ = 0`` or ``H = 0`` contribute 0. Anchors without a positive are
    left out of the mean ('none' gives 0 there). ``num_bins`` B >= 1 (10, as pytorch-metric-learning's
    ``FastAPLoss``, whose value this equals). In [0, 1]. ``'none'`` returns (N,).

    Paper: Cakir, He, Xia, Kulis, Sclaroff, "Deep Metric Learning to Rank", CVPR 2019 (no arXiv version).
    """
    check_reduction(reduction)
    pr = pairs(embeddings, labels, distance="squared_euclidean", normalize=True)
    d = pr.dist
    delta = 4.0 / num_bins
    centres = torch.linspace(0.0, 4.0, num_bins + 1, dtype=d.dtype, device=d.device).view(-1, 1, 1)
    pulse = torch.relu(1 - (d.unsqueeze(0) - centres).abs() / delta)  # (B + 1, N, N)
    pos_f, neg_f = pr.pos.to(d.dtype), pr.neg.to(d.dtype)
    h_pos = (pulse * pos_f).sum(2).T  # (N, B + 1)
    h_all = h_pos + (pulse * neg_f).sum(2).T
    prod = h_pos * torch.cumsum(h_pos, 1)
    tot = torch.cumsum(h_all, 1)
    safe = (prod > 0) & (tot > 0)
    ap = torch.where(safe, prod / torch.where(safe, tot, tot.new_ones(())), prod.new_zeros(())).sum(1)
    n_pos = pos_f.sum(1)
    has = n_pos > 0
    loss = torch.where(has, 1 - ap / torch.where(has, n_pos, n_pos.new_ones(())), ap.new_zeros(()))
    return finish(loss, reduction, sample_weight=sample_weight, mask=has)


TripletMarginLoss = triplet_margin.Module
ContrastiveMarginLoss = contrastive_margin.Module
MultiSimilarityLoss = multi_similarity.Module
TCMLoss = tcm.Module
ProtoTripletLoss = proto_triplet.Module
CircleLoss = circle_loss.Module
LiftedStructureLoss = lifted_structure.Module
FastAPLoss = fast_ap.Module
