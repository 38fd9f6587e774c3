"""Pair-margin metric learning on one core: distance -> pairs -> hinge -> reducer.

:func:`pairs` builds, for local anchors against (gathered) candidates, the distance matrix under a
pluggable distance and the positive / negative pair masks (self excluded); the objectives here are
a hinge on margins of those pairs and a reducer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._core import Paper, check_reduction, fail, finish, objective
from .._core import distributed as D
from .._core.domains import FLAG, NONNEGATIVE, POSITIVE, Choice, Real
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, require
from ._inputs import FEATURES_LABELS, features_labels_example, scale_all
from .core import DISTANCE, check_int_labels, distance_matrix, embed, masked_logsumexp

__all__ = ["pairs", "Pairs", "triplet_margin", "contrastive_margin", "multi_similarity", "tcm", "proto_triplet",
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


def _masked_mean(v, mask):
    cnt = mask.sum(1)
    s = torch.where(mask, v, v.new_zeros(())).sum(1)
    return s / torch.where(cnt > 0, cnt, cnt.new_ones(())).to(v.dtype), cnt > 0


def _all_triplets_mean(d, pos, neg, margin):
    """mean_{p in P(a), n in N(a)} [d_ap - d_an + m]_+ per anchor in O(N M log M) time and O(N M)
    memory (never the N x M x M triplet tensor): with the anchor's negative distances sorted, a
    positive p beats the c_p negatives below t_p = d_ap + m, and its hinge sum is
    c_p t_p - (sum of those c_p distances), read from a cumulative sum."""
    inf = d.new_full((), float("inf"))
    sorted_neg = torch.sort(torch.where(neg, d, inf), dim=1).values  # negatives first, +inf after
    finite = torch.where(torch.isfinite(sorted_neg), sorted_neg, d.new_zeros(()))
    csum = torch.cat([d.new_zeros(d.shape[0], 1), torch.cumsum(finite, dim=1)], dim=1)
    thr = d + margin
    count = torch.searchsorted(sorted_neg.detach().contiguous(), thr.detach().contiguous())  # #{n: d_an < t}
    hinge = count.to(d.dtype) * thr - torch.gather(csum, 1, count)
    total = torch.where(pos, hinge, d.new_zeros(())).sum(1)
    n_trip = (pos.sum(1) * neg.sum(1)).to(d.dtype)
    return total / torch.where(n_trip > 0, n_trip, n_trip.new_ones(()))


@objective(
    "triplet_margin", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=FACENET, per_sample=False,
    properties={"nonnegative"}, module_name="TripletMarginLoss",
    domains={"margin": NONNEGATIVE, "distance": DISTANCE, "mining": Choice("all", "batch_hard"), "normalize": FLAG},
    formula="l_a = mean_{p in P(a), n in N(a)} [d(a, p) - d(a, n) + m]_+  (mining='all'); "
            "batch_hard: [max_p d(a, p) - min_n d(a, n) + m]_+",
)
def triplet_margin(embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.2,
                   distance="euclidean", mining: str = "all", normalize: bool = False, gather: bool = False,
                   group=None, sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Triplet margin loss over the batch's triplets, with a pluggable distance.

    .. math:: \\ell_a = \\operatorname{mean}_{p \\in P(a),\\, n \\in N(a)} [d(a,p) - d(a,n) + m]_+

    ``mining='all'``: every (positive, negative) of the anchor; ``'batch_hard'`` (Hermans et al.):
    the farthest positive and nearest negative only. ``distance``: ``'euclidean'``,
    ``'squared_euclidean'``, ``'cosine'`` (1 - cos) or a callable ``(x (n, D), y (m, D)) -> (n, m)``.
    Anchors without a positive or a negative are left out of the mean ('none' gives 0 there). ``margin``
    >= 0. Euclidean distances whose squares overflow the dtype raise (naming ``embeddings``).
    pytorch-metric-learning's ``TripletMarginLoss(margin, reducer=MeanReducer())`` with its default
    normalised L2 distance equals ``normalize=True`` when every anchor has as many triplets.

    Paper: Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", 2015, arXiv:1503.03832.
    """
    check_reduction(reduction)
    if mining not in ("all", "batch_hard"):
        raise fail("mining", "'all' or 'batch_hard'", repr(mining))
    pr = pairs(embeddings, labels, distance=distance, normalize=normalize, gather=gather, group=group)
    d = pr.dist
    has = pr.pos.any(1) & pr.neg.any(1)
    if mining == "all":
        loss = _all_triplets_mean(d, pr.pos, pr.neg, margin)
    else:
        far = torch.where(pr.pos, d, d.new_full((), float("-inf"))).amax(1)
        near = torch.where(pr.neg, d, d.new_full((), float("inf"))).amin(1)
        gap = torch.where(has, far - near, d.new_zeros(()))
        loss = torch.relu(gap + margin)
    loss = torch.where(has, loss, loss.new_zeros(()))
    return finish(loss, reduction, sample_weight=sample_weight, mask=has, gathered=gather, group=group)


@objective(
    "contrastive_margin", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=HADSELL, per_sample=False,
    properties={"nonnegative"}, module_name="ContrastiveMarginLoss",
    domains={"pos_margin": NONNEGATIVE, "neg_margin": NONNEGATIVE, "power": Real(1.0, None), "distance": DISTANCE,
             "normalize": FLAG},
    formula="l_a = mean_{p} [d(a, p) - m+]_+^q + mean_{n} [m- - d(a, n)]_+^q",
)
def contrastive_margin(embeddings: torch.Tensor, labels: torch.Tensor, *, pos_margin: float = 0.0,
                       neg_margin: float = 1.0, power: float = 2.0, distance="euclidean", normalize: bool = False,
                       gather: bool = False, group=None, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Contrastive (pair margin) loss: positives pulled within ``pos_margin``, negatives pushed past ``neg_margin``.

    .. math:: \\ell_a = \\operatorname{mean}_{p \\in P(a)} [d(a,p) - m^+]_+^q
              + \\operatorname{mean}_{n \\in N(a)} [m^- - d(a,n)]_+^q

    Hadsell et al.'s loss is ``q = 2, m+ = 0``; the distance is pluggable as in :func:`triplet_margin`.
    A term with no pair for the anchor is 0. Margins >= 0; ``power`` q >= 1 (q < 1 has an infinite
    gradient at the margin).

    Paper: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", 2006.
    """
    check_reduction(reduction)
    pr = pairs(embeddings, labels, distance=distance, normalize=normalize, gather=gather, group=group)
    pos, _ = _masked_mean(torch.relu(pr.dist - pos_margin).pow(power), pr.pos)
    neg, _ = _masked_mean(torch.relu(neg_margin - pr.dist).pow(power), pr.neg)
    return finish(pos + neg, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "multi_similarity", family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=MS, per_sample=False,
    properties={"nonnegative"}, module_name="MultiSimilarityLoss",
    domains={"alpha": POSITIVE, "beta": POSITIVE, "base": COSINE},
    formula="l_a = 1/alpha log(1 + sum_p e^{-alpha (S_ap - base)}) + 1/beta log(1 + sum_n e^{beta (S_an - base)})",
)
def multi_similarity(embeddings: torch.Tensor, labels: torch.Tensor, *, alpha: float = 2.0, beta: float = 50.0,
                     base: float = 0.5, gather: bool = False, group=None,
                     sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Multi-similarity loss: soft weighting of all positive and negative pairs by their cosine similarity.

    .. math:: \\ell_a = \\frac1\\alpha \\log\\Big(1 + \\sum_{p \\in P(a)} e^{-\\alpha (S_{ap} - \\lambda)}\\Big)
              + \\frac1\\beta \\log\\Big(1 + \\sum_{n \\in N(a)} e^{\\beta (S_{an} - \\lambda)}\\Big)

    S: cosine similarities; ``base`` is lambda, in [-1, 1]; ``alpha``, ``beta`` > 0 (a negative beta would
    reward similar negatives). Computed as ``softplus(logsumexp(...))`` (exact, no
    overflow at beta = 50). The paper's pair mining step is not part of the loss (mine beforehand
    if wanted); like pytorch-metric-learning's ``MultiSimilarityLoss`` (same defaults alpha = 2,
    beta = 50, base = 0.5) the mean is over all anchors. ``'none'`` returns (N,).

    Paper: Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", 2019, arXiv:1904.06627.
    """
    check_reduction(reduction)
    pr = pairs(embeddings, labels, distance="cosine", gather=gather, group=group)
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


TripletMarginLoss = triplet_margin.Module
ContrastiveMarginLoss = contrastive_margin.Module
MultiSimilarityLoss = multi_similarity.Module
TCMLoss = tcm.Module
ProtoTripletLoss = proto_triplet.Module
