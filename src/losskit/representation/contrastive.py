"""Contrastive objectives, each a few lines on :func:`losskit.representation.core.contrast`.

Every objective here takes ``gather=False``: with ``gather=True`` under an initialised
``torch.distributed`` process group the candidates (negatives) come from every rank and the loss
and gradients equal those of one process holding the whole batch (see
:mod:`losskit.representation.distributed` for the DDP gradient-scaling convention).
"""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core import distributed as D
from .._core.conventions import promote
from .._core.domains import FLAG, Choice, Maybe, Real, Tensor
from .._core.registry import Example
from .._core.validate import check_batch, check_finite, check_floating, check_nonnegative
from ._inputs import FEATURES_LABELS, PAIR, VIEWS, features_labels_example, pair_example, views_example
from .core import BLOCK_SIZE, TEMPERATURE, check_int_labels, check_temperature, contrast, embed

__all__ = ["info_nce", "n_pairs", "NPairsLoss", "nt_xent", "supcon", "clip_loss", "cwcl", "dcl", "mv_infonce", "mv_dhel",
           "InfoNCELoss", "NTXentLoss", "SupConLoss", "CLIPLoss", "CWCLLoss", "DCLLoss", "MVInfoNCELoss",
           "MVDHELLoss"]

FAMILY = "representation"
CPC = Paper("Representation Learning with Contrastive Predictive Coding", 2018, "1807.03748", "van den Oord, Li, Vinyals")
SIMCLR = Paper("A Simple Framework for Contrastive Learning of Visual Representations", 2020, "2002.05709",
               "Chen, Kornblith, Norouzi, Hinton")
SUPCON = Paper("Supervised Contrastive Learning", 2020, "2004.11362", "Khosla et al.")
CLIP = Paper("Learning Transferable Visual Models From Natural Language Supervision", 2021, "2103.00020",
             "Radford et al.")
CWCL = Paper("Cross-Modal Transfer with Continuously Weighted Contrastive Loss", 2023, "2309.14580",
             "Srinivasa et al.")
DCL = Paper("Decoupled Contrastive Learning", 2022, "2110.06848", "Yeh, Hong, Hsu, Liu, Chen, LeCun")
MULTIVIEW = Paper("A Principled Framework for Multi-View Contrastive Learning", 2025, "2507.06979",
                  "Koromilas, Georgiou, Bouritsas, Giannakopoulos, Nicolaou, Panagakis")


# ------------------------------------------------------------------------------------- helpers
def _pair(z1, z2, names=("z1", "z2")):
    check_floating(names[0], z1)
    check_floating(names[1], z2)
    if z1.dim() != 2:
        raise fail(names[0], "embeddings of shape (N, D)", f"shape {tuple(z1.shape)}")
    if z2.dim() != 2 or z2.shape != z1.shape:
        raise fail(names[1], f"embeddings of the shape of {names[0]} {tuple(z1.shape)}", f"shape {tuple(z2.shape)}")


def _views(views, name="views") -> torch.Tensor:
    if isinstance(views, (list, tuple)):
        if len(views) < 2:
            raise fail(name, "at least 2 views", f"{len(views)}")
        for i, v in enumerate(views):
            check_floating(f"{name}[{i}]", v)
            if v.shape != views[0].shape or v.dim() != 2:
                raise fail(f"{name}[{i}]", f"shape {tuple(views[0].shape)} (N, D) like {name}[0]",
                           f"shape {tuple(v.shape)}")
        for i, v in enumerate(views):
            check_finite(f"{name}[{i}]", v)
        views = torch.stack([promote(v) for v in views], 1)
    check_floating(name, views)
    if views.dim() != 3 or views.shape[1] < 2:
        raise fail(name, "(N, V, D) embeddings with V >= 2 views", f"shape {tuple(views.shape)}")
    return views


def _index_positive(offset: int, cand_ids: torch.Tensor):
    def positives(r0, r1):
        rows = torch.arange(r0, r1, device=cand_ids.device) + offset
        return rows.unsqueeze(1) == cand_ids.unsqueeze(0)
    return positives


def _everything(m: int, device):
    def den(r0, r1):
        return torch.ones(r1 - r0, m, dtype=torch.bool, device=device)
    return den


def _directional(anchors, candidates, tau, *, gather, group, block_size, weights=None, extra=None):
    """Per-anchor InfoNCE of local ``anchors`` against (gathered) ``candidates`` (plus ``extra``
    negatives); row i's positive is candidate i of this rank (or the soft weights row ``weights(r0, r1)``)."""
    cands, offset = D.all_gather(candidates, group) if gather else (candidates, 0)
    if extra is not None:
        cands = torch.cat([cands, extra])
    m = cands.shape[0]
    ids = torch.arange(m, device=cands.device)
    pos = weights(offset) if weights is not None else _index_positive(offset, ids)
    loss, _ = contrast(anchors, cands, tau=tau, positives=pos, den_mask=_everything(m, cands.device),
                       mode="all", block_size=block_size)
    return loss


def _instance_views(x, labels, *, gather, group):
    """Flatten (n, V, D) sample-major and gather; returns anchors, candidates, per-row metadata."""
    n, v, d = x.shape
    xg, offset = D.all_gather(x, group) if gather else (x, 0)
    big_n = xg.shape[0]
    dev = x.device
    inst_c = torch.arange(big_n, device=dev).repeat_interleave(v)
    view_c = torch.arange(v, device=dev).repeat(big_n)
    if labels is not None:
        lab_c = (D.all_gather_nograd(labels, group) if gather else labels).repeat_interleave(v)
    else:
        lab_c = inst_c
    return x.reshape(n * v, d), xg.reshape(big_n * v, d), offset * v, inst_c, view_c, lab_c


def _supcon_rows(x, labels, tau, mode, *, gather, group, block_size):
    """SupCon rows over (n, V, D) features: positives share a label (an instance without labels),
    the anchor itself is never a candidate. Returns ((n, V) loss, (n, V) has-positive)."""
    n, v, _ = x.shape
    a, c, row0, inst_c, view_c, lab_c = _instance_views(x, labels, gather=gather, group=group)
    dev = a.device
    cidx = torch.arange(c.shape[0], device=dev)

    def not_self(r0, r1):
        return (torch.arange(r0, r1, device=dev) + row0).unsqueeze(1) != cidx.unsqueeze(0)

    def positives(r0, r1):
        rows = torch.arange(r0, r1, device=dev) + row0
        return (lab_c[rows].unsqueeze(1) == lab_c.unsqueeze(0)) & not_self(r0, r1)

    loss, has_pos = contrast(a, c, tau=tau, positives=positives, den_mask=not_self, mode=mode,
                             block_size=block_size, group_rows=v)
    return loss.reshape(n, v), has_pos.reshape(n, v)


def _labels(labels, n):
    if labels is None:
        return None
    check_int_labels("labels", labels)
    check_batch("labels", labels, n, "the batch of features")
    if labels.dim() != 1:
        raise fail("labels", f"integer labels of shape ({n},)", f"shape {tuple(labels.shape)}")
    return labels


# ------------------------------------------------------------------------------------ objectives
@objective(
    "info_nce", family=FAMILY, input_kind=PAIR, example=pair_example, paper=CPC, per_sample=False,
    properties={"nonnegative"}, module_name="InfoNCELoss",
    domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE, "negatives": Maybe(Tensor("extra negatives of shape (K, D)"))},
    formula="l_i = -log softmax_j(<z1_i, z2_j> / tau)_i  (cosine similarities with normalize=True)",
)
def info_nce(z1: torch.Tensor, z2: torch.Tensor, *, temperature=0.1, negatives: torch.Tensor | None = None,
             normalize: bool = True, gather: bool = False, group=None, block_size: int | None = None,
             sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """InfoNCE: each ``z1_i`` must pick its positive ``z2_i`` among all ``z2_j`` (one direction).

    .. math:: \\ell_i = -\\log \\frac{\\exp(\\langle z^1_i, z^2_i\\rangle/\\tau)}
              {\\sum_j \\exp(\\langle z^1_i, z^2_j\\rangle/\\tau)}

    The negatives of ``z1_i`` are the other rows of ``z2`` (of every rank with ``gather=True``) and
    the rows of ``negatives`` (K, D), extra negatives shared by all anchors such as a MoCo queue
    (never gathered: a queue is usually identical on every rank).
    ``normalize=True`` makes the similarities cosines. ``temperature`` tau: a float or a (learnable)
    0-dim tensor, > 0 (a tensor is checked under the validation mode, without a host synchronisation).
    ``block_size`` (>= 1) computes the N x N similarities in row blocks with checkpointing.
    ``'none'`` returns the (N,) per-anchor losses (batch-coupled: each depends on the whole batch).

    Paper: van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
    2018, arXiv:1807.03748.
    """
    _pair(z1, z2)
    tau = check_temperature(temperature)
    a, c = embed("z1", z1, normalize), embed("z2", z2, normalize)
    extra = None
    if negatives is not None:
        check_floating("negatives", negatives)
        if negatives.dim() != 2 or negatives.shape[1] != z1.shape[1]:
            raise fail("negatives", f"extra negatives of shape (K, {z1.shape[1]})", f"shape {tuple(negatives.shape)}")
        extra = embed("negatives", negatives.to(a.dtype), normalize)  # in the compute dtype of z1, z2
    loss = _directional(a, c, tau, gather=gather, group=group, block_size=block_size, extra=extra)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


def _npairs_example(ex: Example) -> Example:
    return Example({"anchors": ex.inputs["z1"], "positives": ex.inputs["z2"]}, grad=("anchors", "positives"))


NPAIRS = Paper("Improved Deep Metric Learning with Multi-class N-pair Loss Objective", 2016, None, "Sohn (NeurIPS 2016)")


@objective(
    "n_pairs", family=FAMILY, input_kind=PAIR, example=lambda g, d: _npairs_example(pair_example(g, d)), paper=NPAIRS, per_sample=False,
    properties={"nonnegative"}, module_name="NPairsLoss",
    domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE},
    formula="l_i = log(1 + sum_{j != i} exp(<a_i, p_j> - <a_i, p_i>)) = -log softmax_j(<a_i, p_j>)_i",
)
def n_pairs(anchors: torch.Tensor, positives: torch.Tensor, *, temperature=1.0, normalize: bool = False,
            gather: bool = False, group=None, block_size: int | None = None,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Multi-class N-pair loss: N (anchor, positive) pairs of N distinct classes, each anchor picking its
    positive among the N positives by inner product.

    .. math:: \\ell_i = \\log\\Big(1 + \\sum_{j \\ne i} e^{\\langle a_i, p_j\\rangle - \\langle a_i, p_i\\rangle}\\Big)

    Row i of ``anchors`` and ``positives`` (N, D) share a class, distinct rows have distinct classes. This is
    :func:`info_nce` on raw inner products (``normalize=False``, ``temperature`` 1, the paper's); the options
    are info_nce's. pytorch-metric-learning's ``NPairsLoss`` on ``cat([anchors, positives])`` with labels
    ``cat([arange N, arange N])`` normalises the embeddings (its default distance): it equals
    ``n_pairs(..., normalize=True)``. The paper's L2 penalty on the embeddings is left to the
    user (add ``lam * (anchors.square().sum(1) + positives.square().sum(1)).mean()``). ``'none'`` returns (N,).

    Paper: Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
    """
    _pair(anchors, positives, ("anchors", "positives"))
    tau = check_temperature(temperature)
    a, c = embed("anchors", anchors, normalize), embed("positives", positives, normalize)
    loss = _directional(a, c, tau, gather=gather, group=group, block_size=block_size)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "nt_xent", family=FAMILY, input_kind=PAIR, example=pair_example, paper=SIMCLR, per_sample=False,
    properties={"nonnegative"}, module_name="NTXentLoss", domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE},
    formula="l_i^(v) = -log [exp(s(z_i^v, z_i^v')/tau) / sum_{(j,u) != (i,v)} exp(s(z_i^v, z_j^u)/tau)]",
)
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature=0.1, normalize: bool = True,
            gather: bool = False, group=None, block_size: int | None = None,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """NT-Xent (SimCLR): each of the 2N views picks its partner among the other 2N - 1 views.

    .. math:: \\ell_i^{(v)} = -\\log \\frac{\\exp(s(z_i^v, z_i^{\\bar v})/\\tau)}
              {\\sum_{(j,u) \\ne (i,v)} \\exp(s(z_i^v, z_j^u)/\\tau)}

    ``'none'`` returns shape (N, 2): the losses of the anchors ``z1_i`` and ``z2_i``; ``'mean'`` is
    SimCLR's average over the 2N anchors. pytorch-metric-learning's ``NTXentLoss`` on
    ``cat([z1, z2])`` with labels ``cat([arange(N), arange(N)])`` gives the same value.

    Paper: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", 2020, arXiv:2002.05709.
    """
    _pair(z1, z2)
    tau = check_temperature(temperature)
    x = embed("z1", torch.stack([z1, z2], 1), normalize)
    loss, _ = _supcon_rows(x, None, tau, "all", gather=gather, group=group, block_size=block_size)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "supcon", family=FAMILY, input_kind=FEATURES_LABELS, example=features_labels_example, paper=SUPCON,
    per_sample=False, properties={"nonnegative"}, module_name="SupConLoss",
    domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE, "denominator": Choice("all", "decoupled", "negatives"),
             "no_positive": Choice("skip", "zero")},
    formula="l_a = -1/|P(a)| sum_{p in P(a)} log [exp(s_ap/tau) / sum_{k != a} exp(s_ak/tau)]",
)
def supcon(features: torch.Tensor, labels: torch.Tensor | None = None, *, temperature=0.1,
           denominator: str = "all", no_positive: str = "skip", normalize: bool = True, gather: bool = False, group=None,
           block_size: int | None = None, sample_weight: torch.Tensor | None = None,
           reduction: str = "mean") -> torch.Tensor:
    """Supervised contrastive loss (SupCon, the paper's L_out): every anchor pulls all same-label samples.

    .. math:: \\ell_a = -\\frac{1}{|P(a)|} \\sum_{p \\in P(a)} \\log
              \\frac{\\exp(s_{ap}/\\tau)}{\\sum_{k \\ne a} \\exp(s_{ak}/\\tau)}

    ``features``: (N, D), or (N, V, D) with V views per sample (all N V rows are anchors).
    ``labels``: (N,) integers; ``None`` makes the views of one sample its only positives (SimCLR).
    Anchors without any positive: ``no_positive='skip'`` (default) leaves them out of the 'mean' (as
    pytorch-metric-learning's ``SupConLoss``); ``'zero'`` counts them as 0 in the mean over all anchors,
    as the authors' code does since Dec 2023 (HobbitLong/SupContrast ``losses.py``, commit 72fd989:
    before it they gave NaN). Their 'none' loss is 0 either way. The paper's setting (V >= 2 views)
    gives every anchor a positive (its other views), where both agree; so the default stays 'skip'.
    ``denominator``: ``'all'`` (the paper), ``'decoupled'`` (each positive competes only with the
    negatives -- other positives leave the denominator; with one positive per anchor this equals
    ``'all'``), ``'negatives'`` (the positive leaves too, as in DCL). The paper's extra factor
    ``tau / base_tau`` is omitted (base_tau = tau, as in pytorch-metric-learning's ``SupConLoss``).
    ``'none'`` returns (N,) or (N, V).

    Paper: Khosla et al., "Supervised Contrastive Learning", 2020, arXiv:2004.11362.
    """
    check_floating("features", features)
    if features.dim() not in (2, 3):
        raise fail("features", "(N, D) or (N, V, D) embeddings", f"shape {tuple(features.shape)}")
    labels = _labels(labels, features.shape[0])
    tau = check_temperature(temperature)
    x = embed("features", features if features.dim() == 3 else features.unsqueeze(1), normalize)
    if features.dim() == 2 and labels is None:
        raise fail("labels", "labels (N,) for (N, D) features (or (N, V, D) multi-view features)", "None")
    if no_positive not in ("skip", "zero"):
        raise fail("no_positive", "'skip' or 'zero'", repr(no_positive))
    loss, has_pos = _supcon_rows(x, labels, tau, denominator, gather=gather, group=group,
                                 block_size=block_size)
    if features.dim() == 2:
        loss, has_pos = loss[:, 0], has_pos[:, 0]
    if no_positive == "zero":
        loss = torch.where(has_pos, loss, loss.new_zeros(()))
        return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)
    return finish(loss, reduction, sample_weight=sample_weight, mask=has_pos, gathered=gather, group=group)


@objective(
    "dcl", family=FAMILY, input_kind=PAIR, example=pair_example, paper=DCL, per_sample=False,
    module_name="DCLLoss", domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE, "denominator": Choice("negatives", "decoupled")},
    formula="l_i^(v) = -s(z_i^v, z_i^v')/tau + log sum_{negatives k} exp(s(z_i^v, z_k)/tau)",
)
def dcl(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor | None = None, *, temperature=0.1,
        denominator: str = "negatives", normalize: bool = True, gather: bool = False, group=None,
        block_size: int | None = None, sample_weight: torch.Tensor | None = None,
        reduction: str = "mean") -> torch.Tensor:
    """Decoupled contrastive loss: positives are taken out of the InfoNCE denominator.

    .. math:: \\ell_i^{(v)} = -\\frac{s(z_i^v, z_i^{\\bar v})}{\\tau}
              + \\log \\sum_{k \\in N(i)} \\exp(s(z_i^v, z_k)/\\tau)

    over the 2N views of ``(z1, z2)`` as in :func:`nt_xent`; the negatives N(i) are the views of
    other samples (of other labels when ``labels`` (N,) are given, whose same-label samples are extra
    positives). ``denominator='negatives'`` (default) is DCL of the paper (the positive itself leaves
    the denominator, so the loss can be negative); ``'decoupled'`` keeps each positive in its own
    denominator and removes only the *other* positives (with one positive per anchor it is
    :func:`nt_xent`). ``'none'`` returns (N, 2).

    Paper: Yeh, Hong, Hsu, Liu, Chen, LeCun, "Decoupled Contrastive Learning", 2022, arXiv:2110.06848.
    """
    _pair(z1, z2)
    labels = _labels(labels, z1.shape[0])
    if denominator not in ("negatives", "decoupled"):
        raise fail("denominator", "'negatives' or 'decoupled'", repr(denominator))
    tau = check_temperature(temperature)
    x = embed("z1", torch.stack([z1, z2], 1), normalize)
    loss, has_pos = _supcon_rows(x, labels, tau, denominator, gather=gather, group=group, block_size=block_size)
    return finish(loss, reduction, sample_weight=sample_weight, mask=has_pos, gathered=gather, group=group)


@objective(
    "clip_loss", family=FAMILY, input_kind=PAIR, example=pair_example, paper=CLIP, per_sample=False,
    properties={"nonnegative"}, module_name="CLIPLoss",
    domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE, "logit_scale": Maybe(Real(tensor=True))},
    formula="l_i = (CE(s_i. / tau, i) + CE(s_.i / tau, i)) / 2,  s_ij = <x_i, y_j> (cosine)",
)
def clip_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature=0.07, logit_scale=None,
              normalize: bool = True, gather: bool = False, group=None, block_size: int | None = None,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Symmetric CLIP loss: image-to-text and text-to-image InfoNCE, averaged.

    .. math:: \\ell_i = \\tfrac12 \\left[-\\log \\mathrm{softmax}_j(s_{ij}/\\tau)_i
              - \\log \\mathrm{softmax}_j(s_{ji}/\\tau)_i\\right]

    ``z1``: image embeddings (N, D), ``z2``: text embeddings (N, D). ``logit_scale`` (CLIP's learnable
    log inverse temperature, a 0-dim tensor) overrides ``temperature``: tau = exp(-logit_scale).
    ``'none'`` returns the (N,) per-pair averages.

    Paper: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    2021, arXiv:2103.00020.
    """
    _pair(z1, z2)
    if logit_scale is not None:
        if isinstance(logit_scale, torch.Tensor):
            if logit_scale.numel() != 1:
                raise fail("logit_scale", "a 0-dim tensor (one log inverse temperature)",
                           f"shape {tuple(logit_scale.shape)}")
            tau = torch.exp(-logit_scale.reshape(()))
        else:
            # any real is a valid log inverse temperature; clamp the exponent so math.exp cannot overflow
            tau = math.exp(min(max(-float(logit_scale), -700.0), 700.0))
    else:
        tau = check_temperature(temperature)
    a, b = embed("z1", z1, normalize), embed("z2", z2, normalize)
    kw = dict(gather=gather, group=group, block_size=block_size)
    loss = 0.5 * (_directional(a, b, tau, **kw) + _directional(b, a, tau, **kw))
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "cwcl", seed=True, family=FAMILY, input_kind=PAIR, example=lambda g, d: _cwcl_example(g, d), paper=CWCL,
    per_sample=False, properties={"nonnegative"}, module_name="CWCLLoss",
    domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE, "symmetric": FLAG,
             "weights": Maybe(Tensor("non-negative soft-positive weights of shape (N, N)"))},
    formula="l_i = -(sum_j w_ij)^-1 sum_j w_ij log softmax_j(<p_i, q_j>/tau), w_ij = (1 + <q_i, q_j>)/2; "
            "symmetrised",
)
def cwcl(p: torch.Tensor, q: torch.Tensor, *, temperature=0.07, weights: torch.Tensor | None = None,
         symmetric: bool = True, normalize: bool = True, gather: bool = False, group=None,
         block_size: int | None = None, sample_weight: torch.Tensor | None = None,
         reduction: str = "mean") -> torch.Tensor:
    """Continuously weighted contrastive loss (CWCL): soft positives weighted by intra-modal similarity.

    .. math:: \\ell_i^{p \\to q} = -\\frac{1}{\\sum_j w_{ij}} \\sum_j w_{ij}
              \\log \\frac{\\exp(\\langle p_i, q_j\\rangle/\\tau)}{\\sum_k \\exp(\\langle p_i, q_k\\rangle/\\tau)},
              \\qquad w_{ij} = \\frac{1 + \\langle q_i, q_j\\rangle}{2}

    ``q`` is the frozen (pre-trained) modality: the weights are computed from normalised, detached
    ``q``. ``symmetric=True`` averages the p->q and q->p directions with the same weights (the paper
    trains both directions; the average keeps the scale of :func:`clip_loss`). ``weights`` (N, N) >= 0
    overrides w (e.g. the identity, which turns CWCL into :func:`info_nce` / :func:`clip_loss`; not
    with ``gather``). tau: the paper learns it; pass a 0-dim tensor to learn it.

    Paper: Srinivasa et al., "Cross-Modal Transfer with Continuously Weighted Contrastive Loss", 2023,
    arXiv:2309.14580.
    """
    _pair(p, q, ("p", "q"))
    tau = check_temperature(temperature)
    a, b = embed("p", p, normalize), embed("q", q, normalize)
    if weights is not None:
        if gather:
            raise fail("weights", "None with gather=True (weights come from q)", "a tensor")
        check_floating("weights", weights)
        n = p.shape[0]
        if tuple(weights.shape) != (n, n):
            raise fail("weights", f"shape ({n}, {n})", f"shape {tuple(weights.shape)}")
        check_nonnegative("weights", weights, "non-negative weights")

        def wfn(offset, w=weights):
            return lambda r0, r1: w[r0:r1]

        def wfn_t(offset, w=weights):
            return lambda r0, r1: w.T[r0:r1]
    else:
        qn = torch.nn.functional.normalize(q.detach(), dim=-1)
        qall = D.all_gather_nograd(qn, group) if gather else qn

        def wfn(offset):
            return lambda r0, r1: (1 + qn[r0:r1] @ qall.T) / 2

        wfn_t = wfn
    kw = dict(gather=gather, group=group, block_size=block_size)
    loss = _directional(a, b, tau, weights=wfn, **kw)
    if symmetric:
        loss = 0.5 * (loss + _directional(b, a, tau, weights=wfn_t, **kw))
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


def _cwcl_example(gen, dtype):
    ex = pair_example(gen, dtype)
    return Example({"p": ex.inputs["z1"], "q": ex.inputs["z2"]}, grad=("p",))


def _multiview(views, tau, mode, *, gather, group, block_size, normalize):
    x = embed("views", _views(views), normalize)
    n, v, _ = x.shape
    if mode == "dhel" and n < 2 and not gather:
        raise fail("views", "at least 2 instances (uniformity is against the other instances)", f"shape {tuple(x.shape)}")
    a, c, row0, inst_c, view_c, _ = _instance_views(x, None, gather=gather, group=group)
    dev = a.device
    cidx = torch.arange(c.shape[0], device=dev)

    def rows(r0, r1):
        return torch.arange(r0, r1, device=dev) + row0

    def positives(r0, r1):
        r = rows(r0, r1)
        return (inst_c[r].unsqueeze(1) == inst_c.unsqueeze(0)) & (r.unsqueeze(1) != cidx.unsqueeze(0))

    if mode == "infonce":
        def den(r0, r1):
            return rows(r0, r1).unsqueeze(1) != cidx.unsqueeze(0)
    else:
        def den(r0, r1):
            r = rows(r0, r1)
            return (view_c[r].unsqueeze(1) == view_c.unsqueeze(0)) & (inst_c[r].unsqueeze(1) != inst_c.unsqueeze(0))

    pos_lse, den_lse, _ = contrast(a, c, tau=tau, positives=positives, den_mask=den, mode="pooled",
                                   block_size=block_size, group_rows=v)
    pos_lse, den_lse = pos_lse.reshape(n, v), den_lse.reshape(n, v)
    if mode == "infonce":
        return torch.logsumexp(den_lse, 1) - torch.logsumexp(pos_lse, 1)
    # sum over unordered pairs l < m is half the sum over ordered pairs l != m
    return den_lse.sum(1) - (torch.logsumexp(pos_lse, 1) - math.log(2.0))


@objective(
    "mv_infonce", seed=True, family=FAMILY, input_kind=VIEWS, example=views_example, paper=MULTIVIEW, per_sample=False,
    properties={"nonnegative"}, module_name="MVInfoNCELoss", domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE},
    formula="l_i = -log [sum_{l != m} e^{z_i^l.z_i^m/tau} / sum_l sum_{(j,m) != (i,l)} e^{z_i^l.z_j^m/tau}]",
)
def mv_infonce(views, *, temperature=0.2, normalize: bool = True, gather: bool = False, group=None,
               block_size: int | None = None, sample_weight: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """MV-InfoNCE: one InfoNCE term per instance over all its V views at once.

    .. math:: \\ell_i = -\\log \\frac{\\sum_{l \\ne m} e^{z_i^l \\cdot z_i^m/\\tau}}
              {\\sum_l \\sum_{(j,m) \\ne (i,l)} e^{z_i^l \\cdot z_j^m/\\tau}}

    ``views``: (N, V, D) or a list of V tensors (N, D), V >= 2. The numerator sums ordered pairs of
    distinct views; the denominator pools every view of the instance against every other row. With
    V = 2 this is *not* :func:`nt_xent` (one pooled log-ratio per instance instead of the mean of two).
    ``'none'`` returns (N,).

    Paper: Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", 2025,
    arXiv:2507.06979.
    """
    tau = check_temperature(temperature)
    loss = _multiview(views, tau, "infonce", gather=gather, group=group, block_size=block_size, normalize=normalize)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


@objective(
    "mv_dhel", seed=True, family=FAMILY, input_kind=VIEWS, example=views_example, paper=MULTIVIEW, per_sample=False,
    module_name="MVDHELLoss", domains={"temperature": TEMPERATURE, "normalize": FLAG, "block_size": BLOCK_SIZE},
    formula="l_i = -log sum_{l<m} e^{z_i^l.z_i^m/tau} + sum_l log sum_{j != i} e^{z_i^l.z_j^l/tau}",
)
def mv_dhel(views, *, temperature=0.2, normalize: bool = True, gather: bool = False, group=None,
            block_size: int | None = None, sample_weight: torch.Tensor | None = None,
            reduction: str = "mean") -> torch.Tensor:
    """MV-DHEL: multi-view decoupled hyperspherical energy loss (alignment and uniformity decoupled).

    .. math:: \\ell_i = -\\log \\sum_{l < m} e^{z_i^l \\cdot z_i^m/\\tau}
              + \\sum_l \\log \\sum_{j \\ne i} e^{z_i^l \\cdot z_j^l/\\tau}

    Alignment pools all view pairs of instance i; uniformity is computed within each view, against
    the other instances only. With V = 2 it is DHEL with the uniformity term of both views (the
    authors' two-view loss). Checked against the authors' published definitions of both losses.
    ``views``: (N, V, D) or a list of V (N, D) tensors. ``'none'`` returns (N,).

    Paper: Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", 2025,
    arXiv:2507.06979.
    """
    tau = check_temperature(temperature)
    loss = _multiview(views, tau, "dhel", gather=gather, group=group, block_size=block_size, normalize=normalize)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


InfoNCELoss = info_nce.Module
NPairsLoss = n_pairs.Module
NTXentLoss = nt_xent.Module
SupConLoss = supcon.Module
CLIPLoss = clip_loss.Module
CWCLLoss = cwcl.Module
DCLLoss = dcl.Module
MVInfoNCELoss = mv_infonce.Module
MVDHELLoss = mv_dhel.Module
