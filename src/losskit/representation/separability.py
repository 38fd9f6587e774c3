"""Class-separability and mixup objectives of deep metric learning.

* :func:`icnn_loss` -- the ICNN loss of "SuSana Distancia is all you need" (Mendez-Ruiz et al. 2023): minus
  the log of the inter/intra-class nearest-neighbour score of a labelled batch.
* :func:`metrix` -- Metric Mix (Venkataramanan et al., ICLR 2022): a pair-based metric loss whose candidates
  include mixed examples carrying interpolated positivities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import Paper, check_reduction, fail, finish, objective
from .._core.domains import COUNT, FLAG, NONNEGATIVE, POSITIVE, REAL, Choice, Maybe
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating
from .._core.values import PROBABILITY
from ..ops.pairwise import safe_sqrt, sq_dist
from ._inputs import FEATURES_LABELS, features_labels_example
from .core import check_int_labels, embed, masked_logsumexp
from .metric import SUSANA

__all__ = ["icnn_loss", "ICNNLoss", "icnn_score", "metrix", "MetrixLoss", "METRIX_LOSSES"]

FAMILY = "representation"
METRIX = Paper("It Takes Two to Tango: Mixup for Deep Metric Learning", 2022, "2106.04990",
               "Venkataramanan, Psomas, Kijak, Amsaleg, Karantzalos, Avrithis")


def _embeddings_labels(embeddings, labels, name="embeddings"):
    check_floating(name, embeddings)
    if embeddings.dim() != 2:
        raise fail(name, "embeddings of shape (N, D)", f"shape {tuple(embeddings.shape)}")
    check_int_labels("labels", labels)
    check_batch("labels", labels, embeddings.shape[0], f"the batch of {name}")
    if labels.dim() != 1:
        raise fail("labels", f"integer labels of shape ({embeddings.shape[0]},)", f"shape {tuple(labels.shape)}")
    return embeddings, labels


def _rename(ex: Example) -> Example:
    return Example({"embeddings": ex.inputs["features"], "labels": ex.inputs["labels"]}, grad=("embeddings",))


# ---------------------------------------------------------------------------------------------- ICNN
def icnn_score(embeddings: torch.Tensor, labels: torch.Tensor, *, k: int = 4,
               neighbors: int | None = None) -> torch.Tensor:
    """The ICNN score in (0, 1] of a labelled batch (see :func:`icnn_loss`); 1 is perfectly separated."""
    x, labels = _embeddings_labels(embeddings, labels)
    n = x.shape[0]
    if n < 3:
        raise fail("embeddings", "a batch of at least 3 embeddings (the score uses k = min(k, N - 2) >= 1 "
                   "neighbours)", f"{n}")
    kk = n - 2 if k + 2 >= n else k
    m = kk + 1 if neighbors is None else min(neighbors, n - 1)
    kk = min(kk, m)
    # the score is scale-invariant (ratios of distances): computed on x / max|x| (a detached constant, so
    # value and gradient are exact), no squared distance overflows
    c = x.detach().abs().amax()
    x = x / torch.where(c > 0, c, c.new_ones(()))
    d = safe_sqrt(sq_dist(x, x, expand=False))
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    inf = d.new_full((), float("inf"))
    # the m nearest neighbours of every sample, itself excluded (the authors drop the first of m + 1)
    dist, idx = torch.where(eye, inf, d).topk(m, dim=1, largest=False)
    same = labels[idx] == labels.unsqueeze(1)  # (N, m)
    zero = dist.new_zeros(())
    # intra-class term: distances to the k nearest, over the nearest other-class neighbour among the m,
    # rescaled by max(1, the row's largest); 0 where no other-class neighbour is among the m
    nn_dc = torch.where(same, inf, dist).amin(1, keepdim=True)
    has_dc = torch.isfinite(nn_dc)
    dk, sk = dist[:, :kk], same[:, :kk]
    ok = has_dc & (nn_dc > 0)
    nd = torch.where(ok, dk / torch.where(ok, nn_dc, nn_dc.new_ones(())), zero)
    nd = nd / torch.clamp(nd.amax(1, keepdim=True), min=1.0)
    # an other-class neighbour at distance 0: the ratios are infinite and their rescaled values are
    # d / max_t d (the limit of the authors' d / (0 + eps) rescaled by its maximum)
    coincide = has_dc & (nn_dc == 0)
    rmax = dk.amax(1, keepdim=True)
    nd = torch.where(coincide, torch.where(rmax > 0, dk / torch.where(rmax > 0, rmax, rmax.new_ones(())), zero), nd)
    sc_cnt = sk.sum(1)
    sc_rows = sc_cnt > 0
    sc_mean = torch.where(sk, nd, zero).sum(1) / torch.clamp(sc_cnt, min=1).to(d.dtype)
    sc_lamb = 1 - sc_mean.sum() / torch.clamp(sc_rows.sum(), min=1).to(d.dtype)
    # inter-class term: other-class distances among the k nearest, over their batch maximum
    dck = torch.where(sk, zero, dk)
    dmax = dck.amax()
    dcn = dck / torch.where(dmax > 0, dmax, dmax.new_ones(()))
    dc_cnt = (~sk).sum(1)
    dc_mean = dcn.sum(1) / torch.clamp(dc_cnt, min=1).to(d.dtype)
    any_dc = dc_cnt.sum() > 0
    dc_lamb = torch.where(any_dc, dc_mean.sum() / torch.clamp((dc_cnt > 0).sum(), min=1).to(d.dtype),
                          d.new_ones(()))
    lamb = (sc_lamb + dc_lamb) / 2
    if kk + 2 < n:
        gamma = (sc_cnt.to(d.dtype) / kk).sum() / n
    else:
        gamma = d.new_ones(())
    return (lamb + gamma) / 2


@objective(
    "icnn_loss", seed=True, family=FAMILY, input_kind=FEATURES_LABELS,
    example=lambda g, d: _rename(features_labels_example(g, d)), paper=SUSANA, per_sample=False,
    batch_scalar=True, sample_weight=False, properties={"nonnegative"}, module_name="ICNNLoss",
    domains={"k": COUNT, "neighbors": Maybe(COUNT)},
    formula="L = -log((lambda + gamma) / 2), lambda = (lambda_sc + lambda_dc) / 2 over each sample's k "
            "nearest neighbours (intra-class distances relative to the nearest other class, inter-class "
            "distances relative to their maximum), gamma = mean fraction of same-class neighbours",
)
def icnn_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, k: int = 4, neighbors: int | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """ICNN loss: minus the log of the inter/intra-class nearest-neighbour (ICNN) score of the batch.

    For every sample i take its ``m`` nearest neighbours (``neighbors``; itself excluded, Euclidean
    distances ``d``), with ``m = min(neighbors, N - 1)`` (default ``k' + 1``) and ``k' = min(k, N - 2, m)``. Among them, ``SC_i`` are the
    same-class neighbours within the first ``k'`` and ``DC_i`` the other-class ones, ``d^dc_i`` the distance
    to the nearest other-class neighbour among the ``m``. Then

    .. math::
        \\hat d_{it} = \\frac{d_{it} / d^{dc}_i}{\\max(1, \\max_{t \\le k'} d_{it} / d^{dc}_i)},\\quad
        \\lambda_{sc} = 1 - \\operatorname{mean}_{i: SC_i \\ne \\emptyset}
            \\operatorname{mean}_{t \\in SC_i} \\hat d_{it},\\quad
        \\lambda_{dc} = \\operatorname{mean}_{i: DC_i \\ne \\emptyset}
            \\operatorname{mean}_{t \\in DC_i} \\frac{d_{it}}{\\max_{j, s \\in DC_j} d_{js}}

    (``\\hat d = 0`` for a sample with no other-class neighbour among the ``m``, ``d_it / max_t d_it`` for one
    whose nearest other-class neighbour coincides with it; ``lambda_dc = 1`` when no
    sample has one among its ``k'``), ``gamma = (1/N) sum_i |SC_i| / k'`` (1 when ``k' + 2 >= N``), and

    .. math:: \\mathcal L = -\\log \\tfrac12\\big(\\tfrac12(\\lambda_{sc} + \\lambda_{dc}) + \\gamma\\big).

    The score is in (0, 1]: same-class neighbours close relative to the nearest other class, other-class
    neighbours far, and many same-class neighbours. ``gamma`` counts neighbours and carries no gradient.
    The paper applies it to the support set, to the queries against the support, or (its "full" variant)
    to support and queries together; pass those embeddings and labels. Defaults as the authors' code
    (``k = 4``; their ``fullicnn`` passes ``neighbors = shot + query``). Their code adds ``1e-6`` under the
    square root and ``1e-7`` to denominators; losskit is exact (``tests/test_representation_separability.py``
    matches their ``modified_score`` to 1e-6). A batch-level loss: every ``reduction`` returns the value.
    Needs N >= 3 (the authors' code fails for ``neighbors >= N``; losskit clamps it like ``k``).

    Paper: Mendez-Ruiz, Gonzalez-Zapata et al., "SuSana Distancia is all you need: Enforcing class
    separability in metric learning via two novel distance-based loss functions for few-shot image
    classification", 2023, arXiv:2305.09062.
    """
    check_reduction(reduction)
    return -torch.log(icnn_score(embeddings, labels, k=k, neighbors=neighbors))


ICNNLoss = icnn_loss.Module


# --------------------------------------------------------------------------------------------- Metrix
#: The base losses :func:`metrix` generalises.
METRIX_LOSSES = ("multi_similarity", "contrastive")


def _mix_example(gen, dtype, n: int = 8, d: int = 4, k: int = 3, m: int = 6) -> Example:
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=gen)]
    centers = torch.randn(k, d, generator=gen, dtype=torch.float64)
    emb = centers[labels] + 0.8 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    i = torch.randint(0, n, (m,), generator=gen)
    j = torch.randint(0, n, (m,), generator=gen)
    lam = torch.rand(m, generator=gen, dtype=torch.float64)
    mixed = lam[:, None] * emb[i] + (1 - lam[:, None]) * emb[j] + 0.1 * torch.randn(m, d, generator=gen,
                                                                                    dtype=torch.float64)
    return Example({"embeddings": emb.to(dtype), "labels": labels, "mixed": mixed.to(dtype),
                    "mixed_labels": torch.stack([labels[i], labels[j]], 1), "lam": lam.to(dtype)},
                   grad=("embeddings", "mixed"), batched=("embeddings", "labels"))


def _mix_bad(ex: Example) -> list[BadInput]:
    e, y, mx, ml, lam = (ex.inputs[k] for k in ("embeddings", "labels", "mixed", "mixed_labels", "lam"))
    return [
        BadInput("labels of the wrong length", ex.replace({"labels": y[:-1]}), "labels"),
        BadInput("mixed of another width", ex.replace({"mixed": mx[:, :-1]}), "mixed"),
        BadInput("mixed labels of the wrong shape", ex.replace({"mixed_labels": ml[:, 0]}), "mixed_labels"),
        BadInput("lam of the wrong length", ex.replace({"lam": lam[:-1]}), "lam"),
        BadInput("lam above 1", ex.replace({"lam": lam + 2}), "lam"),
        BadInput("float labels", ex.replace({"labels": y.double()}), "labels"),
        BadInput("integer embeddings", ex.replace({"embeddings": e.round().long()}), "embeddings"),
    ]


def _mix_extreme(ex: Example) -> Example:
    big = {k: (ex.inputs[k].sign() * 1e4 + ex.inputs[k]).float() for k in ("embeddings", "mixed")}
    return ex.replace(big)


MIXED_PAIRS = InputKind("embeddings+labels+mixed", "embeddings (N, D) with labels (N,), and mixed embeddings "
                        "(M, D) of the label pairs mixed_labels (M, 2) with interpolation factors lam (M,)",
                        bad_inputs=_mix_bad, extreme=_mix_extreme, values={"lam": PROBABILITY})


def _side(weight, value, sigma_lse: bool, scale: float):
    """sigma(sum_j w_ij rho_j) per row: with ``sigma_lse``, (1/scale) log(1 + sum w e^{value}) (value = the
    exponent of rho), else the weighted sum of ``value``."""
    if sigma_lse:
        pos = weight > 0
        logw = torch.where(pos, weight, weight.new_ones(())).log()
        return F.softplus(masked_logsumexp(value + logw, pos)) / scale
    return (weight * value).sum(1)


@objective(
    "metrix", seed=True, family=FAMILY, input_kind=MIXED_PAIRS, example=_mix_example, paper=METRIX, per_sample=False,
    properties={"nonnegative"}, module_name="MetrixLoss",
    domains={"loss": Choice(*METRIX_LOSSES), "alpha": POSITIVE, "beta": POSITIVE, "base": REAL,
             "pos_margin": NONNEGATIVE, "neg_margin": NONNEGATIVE, "mix_weight": NONNEGATIVE, "normalize": FLAG},
    formula="l_a = s+(sum_p rho+(s_ap)) + s-(sum_n rho-(s_an)) + w [s+(sum_u v_au rho+(s_au)) + "
            "s-(sum_u (1 - v_au) rho-(s_au))],  v_au = lam_u [y_u1 = y_a] + (1 - lam_u) [y_u2 = y_a]",
)
def metrix(embeddings: torch.Tensor, labels: torch.Tensor, mixed: torch.Tensor, mixed_labels: torch.Tensor,
           lam: torch.Tensor, *, loss: str = "multi_similarity", alpha: float = 2.0, beta: float = 50.0,
           base: float = 0.5, pos_margin: float = 0.0, neg_margin: float = 0.5, mix_weight: float = 1.0,
           normalize: bool = True, sample_weight: torch.Tensor | None = None,
           reduction: str = "mean") -> torch.Tensor:
    """Metrix (Metric Mix): a pair-based metric loss on clean and mixed examples with interpolated labels.

    The paper writes a pair-based loss per anchor ``a`` as
    ``l(a) = sigma+(sum_{p in P(a)} rho+(s_ap)) + sigma-(sum_{n in N(a)} rho-(s_an))``
    and extends it to mixed examples ``u`` (inputs, features or embeddings mixed with factor ``lam_u`` from
    examples of labels ``y_u1, y_u2``), whose *positivity* for the anchor is the interpolated label
    ``v_au = lam_u [y_u1 = y_a] + (1 - lam_u) [y_u2 = y_a]``:

    .. math:: \\tilde\\ell(a) = \\sigma^+\\Big(\\sum_u v_{au}\\,\\rho^+(s_{au})\\Big)
              + \\sigma^-\\Big(\\sum_u (1 - v_{au})\\,\\rho^-(s_{au})\\Big),\\qquad
              \\ell_a = \\ell(a) + w\\,\\tilde\\ell(a)

    Anchors are the clean ``embeddings`` (N, D) with ``labels`` (N,); candidates of ``l`` the other clean
    embeddings, of ``l~`` the ``mixed`` (M, D) with ``mixed_labels`` (M, 2) and ``lam`` (M,) in [0, 1] (a
    mixed example of one class, ``y_u1 = y_u2``, is a plain positive or negative). ``mix_weight`` w >= 0.

    ``loss='multi_similarity'`` (the paper's main loss; cosine similarity ``s``): ``sigma+(x) = log(1 + x) /
    alpha``, ``rho+(s) = e^{-alpha (s - base)}``, ``sigma-(x) = log(1 + x) / beta``, ``rho-(s) =
    e^{beta (s - base)}`` (``alpha = 2, beta = 50, base = 0.5``: with ``mix_weight = 0`` this is
    :func:`multi_similarity` with ``miner=None``). ``loss='contrastive'``: ``sigma = identity`` on the
    Euclidean distance ``d`` of the (``normalize``: L2-normalised) embeddings, ``rho+ = [d - pos_margin]_+``,
    ``rho- = [neg_margin - d]_+`` (0 and 0.5 as the authors' contrastive setting). ``'none'`` returns (N,).

    Differences from the authors' code, on purpose: their multi-similarity variant adds the mixed sum
    (times 0.4) inside the clean term's logarithm and scales the clean positive sum by ``lam``, and its
    negative mixed mask is never filled (mixed negatives drop out); losskit follows the paper's equations
    (``l + w l~``, every mixed example on both sides by its positivity).

    Paper: Venkataramanan, Psomas, Kijak, Amsaleg, Karantzalos, Avrithis, "It Takes Two to Tango: Mixup for
    Deep Metric Learning", ICLR 2022, arXiv:2106.04990.
    """
    check_reduction(reduction)
    if loss not in METRIX_LOSSES:
        raise fail("loss", f"one of {METRIX_LOSSES}", repr(loss))
    x, labels = _embeddings_labels(embeddings, labels)
    check_floating("mixed", mixed)
    if mixed.dim() != 2 or mixed.shape[1] != x.shape[1]:
        raise fail("mixed", f"mixed embeddings of shape (M, {x.shape[1]})", f"shape {tuple(mixed.shape)}")
    m = mixed.shape[0]
    check_int_labels("mixed_labels", mixed_labels)
    if tuple(mixed_labels.shape) != (m, 2):
        raise fail("mixed_labels", f"the label pairs of the mixed embeddings, shape ({m}, 2)",
                   f"shape {tuple(mixed_labels.shape)}")
    check_floating("lam", lam)
    if tuple(lam.shape) != (m,):
        raise fail("lam", f"one interpolation factor per mixed embedding, shape ({m},)", f"shape {tuple(lam.shape)}")
    n = x.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    pos_c = ((labels.unsqueeze(1) == labels.unsqueeze(0)) & ~eye).to(x.dtype)
    neg_c = (labels.unsqueeze(1) != labels.unsqueeze(0)).to(x.dtype)
    lam = lam.to(x.dtype)
    v = (lam.unsqueeze(0) * (labels.unsqueeze(1) == mixed_labels[:, 0].unsqueeze(0)).to(x.dtype)
         + (1 - lam).unsqueeze(0) * (labels.unsqueeze(1) == mixed_labels[:, 1].unsqueeze(0)).to(x.dtype))
    if loss == "multi_similarity":
        a = embed("embeddings", x, True)
        u = embed("mixed", mixed, True)
        s_c, s_m = a @ a.T, a @ u.T

        def ell(s, wp, wn):
            return (_side(wp, -alpha * (s - base), True, alpha) + _side(wn, beta * (s - base), True, beta))
    else:
        a = embed("embeddings", x, normalize)
        u = embed("mixed", mixed.to(x.dtype), normalize)
        s_c, s_m = safe_sqrt(sq_dist(a, a, expand=False)), safe_sqrt(sq_dist(a, u, expand=False))

        def ell(d, wp, wn):
            return (_side(wp, torch.relu(d - pos_margin), False, 1.0)
                    + _side(wn, torch.relu(neg_margin - d), False, 1.0))
    per = ell(s_c, pos_c, neg_c)
    if m:
        per = per + mix_weight * ell(s_m, v, 1 - v)
    return finish(per, reduction, sample_weight=sample_weight)


MetrixLoss = metrix.Module
