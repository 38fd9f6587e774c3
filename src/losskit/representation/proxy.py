"""Proxy and margin-softmax objectives: embeddings scored against one (or K) learnable proxy per class.

Input kind: ``embeddings`` (N, D), integer ``labels`` (N,) in [0, C) and ``proxies`` (C, D) -- the class
weight matrix (rows = classes, as ``nn.Linear(D, C).weight``), or (C K, D) for sub-centres (row
``c K + k`` is sub-centre k of class c). The proxies are an *input*, not state: the Module forms hold no
parameter, so keep the proxies in your model (``nn.Parameter(torch.randn(C, D))``) and pass them in; their
gradient flows like the embeddings'. (pytorch-metric-learning's losses own their weight ``W`` (D, C):
``W = proxies.T`` gives the same value.)

Margin-softmax core
    ArcFace, CosFace, SubCenter-ArcFace, SphereFace and large-margin softmax are one form, a cross-entropy
    over scaled cosine logits whose target entry is replaced by a margin function of its cosine:
    ``l_i = CE(s * [cos_ij if j != y_i else psi(cos_iy)], y_i)`` (:func:`margin_softmax`), with an optional
    per-entry magnitude (``|x_i|`` for SphereFace, ``|x_i| |w_j|`` for L-Softmax) in place of ``s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._core import Paper, check_reduction, fail, finish, objective
from .._core.domains import COUNT, FLAG, NONNEGATIVE, POSITIVE, Choice, Integer, Real
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, require
from ..ops.pairwise import safe_sqrt, sq_dist
from ._inputs import scale_all
from .core import check_int_labels, masked_logsumexp

__all__ = ["PROXIES", "proxies_example", "check_proxies", "margin_softmax", "arcface", "cosface",
           "subcenter_arcface", "sphereface", "large_margin_softmax", "proxy_nca", "proxy_anchor", "soft_triple",
           "ArcFaceLoss", "CosFaceLoss", "SubCenterArcFaceLoss", "SphereFaceLoss", "LargeMarginSoftmaxLoss",
           "ProxyNCALoss", "ProxyAnchorLoss", "SoftTripleLoss"]

FAMILY = "representation"
ARCFACE = Paper("ArcFace: Additive Angular Margin Loss for Deep Face Recognition", 2019, "1801.07698",
                "Deng, Guo, Xue, Zafeiriou")
COSFACE = Paper("CosFace: Large Margin Cosine Loss for Deep Face Recognition", 2018, "1801.09414",
                "Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu")
SUBCENTER = Paper("Sub-center ArcFace: Boosting Face Recognition by Large-scale Noisy Web Faces", 2020, None,
                  "Deng, Guo, Liu, Gong, Zafeiriou (ECCV 2020)")
SPHEREFACE = Paper("SphereFace: Deep Hypersphere Embedding for Face Recognition", 2017, "1704.08063",
                   "Liu, Wen, Yu, Li, Raj, Song")
LSOFTMAX = Paper("Large-Margin Softmax Loss for Convolutional Neural Networks", 2016, "1612.02295",
                 "Liu, Wen, Yu, Yang")
PROXYNCA = Paper("No Fuss Distance Metric Learning using Proxies", 2017, "1703.07464",
                 "Movshovitz-Attias, Toshev, Leung, Ioffe, Singh")
PROXYANCHOR = Paper("Proxy Anchor Loss for Deep Metric Learning", 2020, "2003.13911", "Kim, Kim, Cho, Kwak")


# ------------------------------------------------------------------------------------- input kind
def proxies_example(gen, dtype, n: int = 8, d: int = 4, c: int = 3, k: int = 1) -> Example:
    labels = (torch.arange(n) % c)[torch.randperm(n, generator=gen)]
    proxies = torch.randn(c * k, d, generator=gen, dtype=torch.float64)
    centers = proxies.reshape(c, k, d)[:, 0]
    emb = 0.8 * centers[labels] + torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"embeddings": emb.to(dtype), "labels": labels, "proxies": proxies.to(dtype)},
                   grad=("embeddings", "proxies"), batched=("embeddings", "labels"))


def _proxies_bad(ex: Example) -> list[BadInput]:
    x, y, p = ex.inputs["embeddings"], ex.inputs["labels"], ex.inputs["proxies"]
    return [
        BadInput("labels of the wrong length", ex.replace({"labels": y[:-1]}), "labels"),
        BadInput("float labels", ex.replace({"labels": y.to(torch.float64)}), "labels"),
        BadInput("a label with no proxy", ex.replace({"labels": y + 1000}), "labels"),
        BadInput("a negative label", ex.replace({"labels": y - 1000}), "labels"),
        BadInput("proxies of another width", ex.replace({"proxies": p[:, :-1]}), "proxies"),
        BadInput("no feature dimension", ex.replace({"embeddings": x[:, 0]}), "embeddings"),
        BadInput("integer embeddings", ex.replace({"embeddings": x.round().long()}), "embeddings"),
    ]


PROXIES = InputKind("embeddings+labels+proxies",
                    "embeddings (N, D), integer labels (N,) in [0, C) and class proxies (C, D) (C K rows with "
                    "K sub-centres)", bad_inputs=_proxies_bad, extreme=scale_all())


def check_proxies(embeddings, labels, proxies, sub_centers: int = 1) -> int:
    """Shapes and label range of a proxy-loss call; returns the number of classes C."""
    check_floating("embeddings", embeddings)
    if embeddings.dim() != 2:
        raise fail("embeddings", "embeddings of shape (N, D)", f"shape {tuple(embeddings.shape)}")
    check_floating("proxies", proxies)
    if proxies.dim() != 2 or proxies.shape[1] != embeddings.shape[1]:
        raise fail("proxies", f"proxies of shape (C, {embeddings.shape[1]})", f"shape {tuple(proxies.shape)}")
    if proxies.shape[0] % sub_centers or proxies.shape[0] == 0:
        raise fail("proxies", f"C * sub_centers = C * {sub_centers} rows", f"{proxies.shape[0]} rows")
    c = proxies.shape[0] // sub_centers
    check_int_labels("labels", labels)
    check_batch("labels", labels, embeddings.shape[0], "the batch of embeddings")
    if labels.dim() != 1:
        raise fail("labels", f"integer labels of shape ({embeddings.shape[0]},)", f"shape {tuple(labels.shape)}")
    require("labels", labels, lambda: ((labels < 0) | (labels >= c)).any(), f"class indices in [0, {c})",
            lambda: f"values in [{labels.min().item()}, {labels.max().item()}]")
    return c


def _scaled(x):
    """``(x / s, s)`` with ``s`` the row's largest magnitude (1 for a zero row): norms of rows whose squares
    overflow (magnitudes ~1e19 and more in float32) are ``s |x / s|``, finite."""
    s = x.detach().abs().amax(-1, keepdim=True)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return x / s, s


def _unit(x):
    """Rows of ``x`` normalised (``F.normalize``, computed from the rescaled rows: no overflow to 0)."""
    return F.normalize(_scaled(x)[0], dim=-1)


def _norm(x):
    xs, s = _scaled(x)
    return xs.norm(dim=-1) * s[..., 0]


def _cosines(embeddings, proxies, sub_centers: int = 1):
    cos = _unit(embeddings) @ _unit(proxies).T
    if sub_centers > 1:
        cos = cos.reshape(cos.shape[0], -1, sub_centers).amax(-1)
    return cos


# ------------------------------------------------------------------------------ margin-softmax core
def margin_softmax(cos: torch.Tensor, labels: torch.Tensor, psi: Callable[[torch.Tensor], torch.Tensor],
                   scale) -> torch.Tensor:
    """Per-sample ``CE(scale * l, y)`` with ``l_ij = cos_ij`` for ``j != y_i`` and ``l_iy = psi(cos_iy)``.

    ``scale``: a float, or a tensor broadcasting to ``cos`` (per-entry magnitudes, SphereFace's ``|x_i|``,
    L-Softmax's ``|x_i| |w_j|``)."""
    onehot = F.one_hot(labels, cos.shape[1]).bool()
    cos_y = cos.gather(1, labels[:, None])
    logits = torch.where(onehot, psi(cos_y), cos) * scale
    return F.cross_entropy(logits, labels, reduction="none")


def _arc_psi(margin: float):
    cm, sm = math.cos(margin), math.sin(margin)

    def psi(c):
        # cos(theta + m) = c cos m - sin(theta) sin m; past theta = pi - m it would rise again, so there the
        # monotone continuation cos(theta) - m sin(m) (ArcFace's official code and PML)
        arc = c * cm - safe_sqrt(1 - c * c) * sm
        return torch.where(c >= -cm, arc, c - margin * sm)

    return psi


def _chebyshev(c, m: int):
    """cos(m theta) as a polynomial of c = cos(theta) (T_m(c), no square root: finite gradients at |c| = 1)."""
    t0, t1 = torch.ones_like(c), c
    if m == 0:
        return t0
    for _ in range(m - 1):
        t0, t1 = t1, 2 * c * t1 - t0
    return t1


def _lsoftmax_psi(margin: int):
    def psi(c):
        # psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi / m, (k + 1) pi / m] (k chosen without a
        # gradient); monotone decreasing in theta, equal to cos(theta) at m = 1
        with torch.no_grad():
            k = torch.floor(torch.acos(c.clamp(-1, 1)) * margin / math.pi).clamp(max=margin - 1)
        sign = 1 - 2 * torch.remainder(k, 2)
        return sign * _chebyshev(c, margin) - 2 * k

    return psi


def _proxy_example(k: int = 1):
    return lambda g, d: proxies_example(g, d, k=k)


@objective(
    "arcface", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=ARCFACE,
    properties={"nonnegative"}, module_name="ArcFaceLoss",
    domains={"margin": Real(0.0, math.pi / 2), "scale": POSITIVE},
    formula="l_i = -log [e^{s cos(theta_y + m)} / (e^{s cos(theta_y + m)} + sum_{j != y} e^{s cos theta_j})]",
)
def arcface(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, margin: float = 0.5,
            scale: float = 64.0, sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """ArcFace (additive angular margin): the target class's angle is increased by ``margin`` before the softmax.

    .. math:: \\ell_i = -\\log \\frac{e^{s \\cos(\\theta_{y_i} + m)}}{e^{s \\cos(\\theta_{y_i} + m)}
              + \\sum_{j \\ne y_i} e^{s \\cos \\theta_j}}

    with ``theta_j`` the angle between the embedding and proxy j. Where ``theta_y > pi - m`` the target
    logit is ``cos theta_y - m sin m`` instead (monotone, as the authors' code and pytorch-metric-learning).
    ``margin`` m in radians, in [0, pi/2] (0.5 as the paper; pytorch-metric-learning's ``ArcFaceLoss`` takes
    degrees, 28.6 = 0.499 rad); ``scale`` s > 0 (64). PML's ``ArcFaceLoss(C, D, margin=deg, scale)`` with
    ``W = proxies.T`` equals ``arcface(..., margin=radians(deg))`` ('mean').
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    2019, arXiv:1801.07698.
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies)
    per = margin_softmax(_cosines(embeddings, proxies), labels, _arc_psi(margin), scale)
    return finish(per, reduction, sample_weight=sample_weight)


@objective(
    "cosface", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=COSFACE,
    properties={"nonnegative"}, module_name="CosFaceLoss", domains={"margin": NONNEGATIVE, "scale": POSITIVE},
    formula="l_i = -log [e^{s (cos theta_y - m)} / (e^{s (cos theta_y - m)} + sum_{j != y} e^{s cos theta_j})]",
)
def cosface(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, margin: float = 0.35,
            scale: float = 64.0, sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """CosFace (large margin cosine loss, also AM-Softmax): ``margin`` subtracted from the target cosine.

    .. math:: \\ell_i = -\\log \\frac{e^{s (\\cos\\theta_{y_i} - m)}}{e^{s (\\cos\\theta_{y_i} - m)}
              + \\sum_{j \\ne y_i} e^{s \\cos \\theta_j}}

    ``margin`` m >= 0 (0.35), ``scale`` s > 0 (64), as the paper and pytorch-metric-learning's
    ``CosFaceLoss`` (equal with ``W = proxies.T``).
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", 2018, arXiv:1801.09414.
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies)
    per = margin_softmax(_cosines(embeddings, proxies), labels, lambda c: c - margin, scale)
    return finish(per, reduction, sample_weight=sample_weight)


@objective(
    "subcenter_arcface", family=FAMILY, input_kind=PROXIES, example=_proxy_example(3), paper=SUBCENTER,
    properties={"nonnegative"}, module_name="SubCenterArcFaceLoss",
    domains={"margin": Real(0.0, math.pi / 2), "scale": POSITIVE, "sub_centers": COUNT},
    formula="ArcFace on cos theta_j = max_k cos(x, w_jk), K sub-centres per class",
)
def subcenter_arcface(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *,
                      margin: float = 0.5, scale: float = 64.0, sub_centers: int = 3,
                      sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Sub-center ArcFace: K proxies per class, each class scored by its closest sub-centre, then ArcFace.

    .. math:: \\cos\\theta_j = \\max_{k} \\cos(x, w_{jk}),\\qquad \\ell_i = \\text{ArcFace}(\\cos\\theta, y_i)

    ``proxies`` (C K, D): row ``c K + k`` is sub-centre k of class c (``sub_centers`` K >= 1; K = 1 is
    :func:`arcface`). Same layout, defaults (K = 3, s = 64) and value as pytorch-metric-learning's
    ``SubCenterArcFaceLoss`` with ``W = proxies.T`` (its margin in degrees). Labels in [0, C).
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by Large-scale
    Noisy Web Faces", ECCV 2020 (no arXiv version).
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies, sub_centers)
    per = margin_softmax(_cosines(embeddings, proxies, sub_centers), labels, _arc_psi(margin), scale)
    return finish(per, reduction, sample_weight=sample_weight)


MARGIN_M = Integer(1, None)


@objective(
    "large_margin_softmax", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=LSOFTMAX,
    properties={"nonnegative"}, module_name="LargeMarginSoftmaxLoss",
    domains={"margin": MARGIN_M, "scale": POSITIVE},
    formula="l_i = CE(s |x| |w_j| [cos theta_j, j != y; psi(theta_y)]), psi = (-1)^k cos(m theta) - 2k",
)
def large_margin_softmax(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, margin: int = 4,
                         scale: float = 1.0, sample_weight: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """Large-margin softmax (L-Softmax): the target angle multiplied by an integer ``margin`` m.

    .. math:: \\ell_i = -\\log \\frac{e^{s |x_i| |w_{y_i}| \\psi(\\theta_{y_i})}}{e^{s |x_i| |w_{y_i}|
              \\psi(\\theta_{y_i})} + \\sum_{j \\ne y_i} e^{s |x_i| |w_j| \\cos \\theta_j}},\\quad
              \\psi(\\theta) = (-1)^k \\cos(m\\theta) - 2k,\\ \\theta \\in [\\tfrac{k\\pi}{m}, \\tfrac{(k+1)\\pi}{m}]

    Logits keep the magnitudes ``|x_i| |w_j|`` (times ``scale`` s > 0, 1 as the paper); ``cos(m theta)`` is
    the Chebyshev polynomial of ``cos theta`` (the paper's Eq. 7, exact). ``margin`` m >= 1 an integer (4;
    m = 1 is the softmax of ``x W^T`` times s). pytorch-metric-learning's ``LargeMarginSoftmaxLoss`` with
    ``W = proxies.T`` gives the same value.
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Liu, Wen, Yu, Yang, "Large-Margin Softmax Loss for Convolutional Neural Networks", 2016,
    arXiv:1612.02295.
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies)
    mag = _norm(embeddings).unsqueeze(1) * _norm(proxies).unsqueeze(0)
    per = margin_softmax(_cosines(embeddings, proxies), labels, _lsoftmax_psi(margin), mag * scale)
    return finish(per, reduction, sample_weight=sample_weight)


@objective(
    "sphereface", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=SPHEREFACE,
    properties={"nonnegative"}, module_name="SphereFaceLoss", domains={"margin": MARGIN_M, "scale": POSITIVE},
    formula="l_i = CE(s |x| [cos theta_j, j != y; psi(theta_y)]), psi = (-1)^k cos(m theta) - 2k",
)
def sphereface(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, margin: int = 4,
               scale: float = 1.0, sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """SphereFace (A-Softmax): L-Softmax with normalised proxies, logits ``s |x_i| psi(theta)``.

    .. math:: \\ell_i = -\\log \\frac{e^{s |x_i| \\psi(\\theta_{y_i})}}{e^{s |x_i| \\psi(\\theta_{y_i})}
              + \\sum_{j \\ne y_i} e^{s |x_i| \\cos \\theta_j}}

    ``psi`` as :func:`large_margin_softmax`; ``margin`` m >= 1 an integer (4), ``scale`` s > 0 (1). The
    paper's training anneals with a softmax term (``lambda``); that schedule is left to the user (mix with
    ``cross_entropy``). pytorch-metric-learning's ``SphereFaceLoss`` with ``W = proxies.T`` gives the same value.
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Liu, Wen, Yu, Li, Raj, Song, "SphereFace: Deep Hypersphere Embedding for Face Recognition", 2017,
    arXiv:1704.08063.
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies)
    mag = _norm(embeddings).unsqueeze(1)
    per = margin_softmax(_cosines(embeddings, proxies), labels, _lsoftmax_psi(margin), mag * scale)
    return finish(per, reduction, sample_weight=sample_weight)


# --------------------------------------------------------------------------------------- proxy NCA
@objective(
    "proxy_nca", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=PROXYNCA,
    properties={"nonnegative"}, module_name="ProxyNCALoss",
    domains={"scale": POSITIVE, "denominator": Choice("all", "negatives"), "normalize": FLAG},
    formula="l_i = -log [e^{-s d(x_i, p_y)} / sum_{j in D} e^{-s d(x_i, p_j)}],  d squared Euclidean of unit vectors",
)
def proxy_nca(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, scale: float = 1.0,
              denominator: str = "all", normalize: bool = True, sample_weight: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """Proxy-NCA: NCA against one proxy per class, a softmax over negative squared distances.

    .. math:: \\ell_i = -\\log \\frac{e^{-s \\|\\hat x_i - \\hat p_{y_i}\\|^2}}{\\sum_{j \\in \\mathcal D}
              e^{-s \\|\\hat x_i - \\hat p_j\\|^2}}

    ``normalize=True`` (default) L2-normalises embeddings and proxies (the paper, and
    pytorch-metric-learning). ``denominator='all'`` sums over every proxy (pytorch-metric-learning's
    ``ProxyNCALoss``: equal with ``softmax_scale = scale``); ``'negatives'`` over the other classes' proxies
    only, as the paper's Eq. (the loss can then be negative). ``scale`` s > 0 (1). PML drops samples whose
    positive-proxy softmax underflows to exactly 0; losskit keeps their (large, finite) loss.
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D): the class weights, an input
    (the Module holds none; keep them as an ``nn.Parameter`` of your model). Cosines of the L2-normalised
    rows. ``'none'`` returns (N,).

    Paper: Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric Learning using
    Proxies", 2017, arXiv:1703.07464.
    """
    check_reduction(reduction)
    if denominator not in ("all", "negatives"):
        raise fail("denominator", "'all' or 'negatives'", repr(denominator))
    check_proxies(embeddings, labels, proxies)
    x = _unit(embeddings) if normalize else embeddings
    p = _unit(proxies) if normalize else proxies
    logits = -scale * sq_dist(x, p, expand=False)
    onehot = F.one_hot(labels, p.shape[0]).bool()
    pos = logits.gather(1, labels[:, None])[:, 0]
    den = masked_logsumexp(logits, ~onehot) if denominator == "negatives" else torch.logsumexp(logits, 1)
    return finish(den - pos, reduction, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------ proxy anchor
@objective(
    "proxy_anchor", family=FAMILY, input_kind=PROXIES, example=_proxy_example(), paper=PROXYANCHOR,
    per_sample=False, batch_scalar=True, sample_weight=False, properties={"nonnegative"},
    module_name="ProxyAnchorLoss", domains={"margin": NONNEGATIVE, "alpha": POSITIVE},
    formula="L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} e^{-a(s(x,p) - d)}) "
            "+ 1/|P| sum_p log(1 + sum_{x in X_p-} e^{a(s(x,p) + d)})",
)
def proxy_anchor(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *, margin: float = 0.1,
                 alpha: float = 32.0, reduction: str = "mean") -> torch.Tensor:
    """Proxy-Anchor loss: each proxy is an anchor pulling the batch's samples of its class, pushing the rest.

    .. math:: \\mathcal L = \\frac{1}{|P^+|} \\sum_{p \\in P^+} \\log\\Big(1 + \\sum_{x \\in X_p^+}
              e^{-\\alpha (s(x, p) - \\delta)}\\Big) + \\frac{1}{|P|} \\sum_{p \\in P} \\log\\Big(1 +
              \\sum_{x \\in X_p^-} e^{\\alpha (s(x, p) + \\delta)}\\Big)

    s: cosine similarity; ``P+`` the proxies with a sample of their class in the batch; ``margin`` delta >= 0
    (0.1), ``alpha`` > 0 (32), as the paper and pytorch-metric-learning's ``ProxyAnchorLoss`` (equal with its
    ``proxies`` set to ours). Computed as ``softplus(logsumexp(...))`` (no overflow at alpha = 32). A
    batch-level loss (every reduction returns the one value). ``embeddings`` (N, D), ``labels`` (N,) in
    [0, C), ``proxies`` (C, D), an input (the Module holds none).

    Paper: Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", 2020, arXiv:2003.13911.
    """
    check_reduction(reduction)
    c = check_proxies(embeddings, labels, proxies)
    s = _cosines(embeddings, proxies)  # (N, C)
    onehot = F.one_hot(labels, c).bool()
    pos = F.softplus(masked_logsumexp(-alpha * (s - margin), onehot, dim=0))  # (C,), 0 without positives
    neg = F.softplus(masked_logsumexp(alpha * (s + margin), ~onehot, dim=0))
    n_pos = onehot.any(0).sum().to(s.dtype)
    return pos.sum() / torch.where(n_pos > 0, n_pos, n_pos.new_ones(())) + neg.sum() / c


# ------------------------------------------------------------------------------------------ SoftTriple
SOFTTRIPLE = Paper("SoftTriple Loss: Deep Metric Learning Without Triplet Sampling", 2019, "1909.05235",
                   "Qian, Shang, Sun, Hu, Li, Jin")


@objective(
    "soft_triple", family=FAMILY, input_kind=PROXIES, example=_proxy_example(10), paper=SOFTTRIPLE,
    properties={"nonnegative"}, module_name="SoftTripleLoss",
    domains={"centers_per_class": COUNT, "la": POSITIVE, "gamma": POSITIVE, "margin": NONNEGATIVE},
    formula="l_i = CE(la (S - delta 1_y), y),  S_c = sum_k softmax_k(cos(x, w_ck) / gamma) cos(x, w_ck)",
)
def soft_triple(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, *,
                centers_per_class: int = 10, la: float = 20.0, gamma: float = 0.1, margin: float = 0.01,
                sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """SoftTriple: a softmax loss over K centres per class, each class scored by a soft maximum of its centres.

    .. math:: \\mathcal S_{i,c} = \\sum_k \\frac{e^{s_{i,ck}/\\gamma}}{\\sum_{k'} e^{s_{i,ck'}/\\gamma}}\\, s_{i,ck},
              \\qquad \\ell_i = -\\log \\frac{e^{\\lambda (\\mathcal S_{i,y_i} - \\delta)}}{e^{\\lambda
              (\\mathcal S_{i,y_i} - \\delta)} + \\sum_{c \\ne y_i} e^{\\lambda \\mathcal S_{i,c}}}

    s: cosine similarities to the centres; ``proxies`` (C K, D), row ``c K + k`` centre k of class c
    (``centers_per_class`` K >= 1, 10). ``la`` lambda > 0 (20), ``gamma`` > 0 (0.1), ``margin`` delta >= 0
    (0.01): the paper's and pytorch-metric-learning's ``SoftTripleLoss`` defaults (equal with its ``fc`` set to
    ``proxies.T``). The paper's regulariser merging similar centres (``tau``) is not included, as in PML.
    ``embeddings`` (N, D), ``labels`` (N,) in [0, C); the centres are an input (the Module holds none).
    ``'none'`` returns (N,).

    Paper: Qian, Shang, Sun, Hu, Li, Jin, "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling",
    2019, arXiv:1909.05235.
    """
    check_reduction(reduction)
    check_proxies(embeddings, labels, proxies, centers_per_class)
    s = (_unit(embeddings) @ _unit(proxies).T).reshape(embeddings.shape[0], -1, centers_per_class)
    score = (torch.softmax(s / gamma, -1) * s).sum(-1)  # (N, C)
    per = margin_softmax(score, labels, lambda c: c - margin, la)
    return finish(per, reduction, sample_weight=sample_weight)


ArcFaceLoss = arcface.Module
CosFaceLoss = cosface.Module
SubCenterArcFaceLoss = subcenter_arcface.Module
LargeMarginSoftmaxLoss = large_margin_softmax.Module
SphereFaceLoss = sphereface.Module
ProxyNCALoss = proxy_nca.Module
ProxyAnchorLoss = proxy_anchor.Module
SoftTripleLoss = soft_triple.Module
