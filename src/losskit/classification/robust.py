"""Comp-sum, noise-robust and label-distributionally-robust losses: transforms of the margin log-sum-exp.

Each loss here is a scalar transform of ``s_y = log sum_k e^{d_k}`` (see :mod:`.margins`) evaluated for
every candidate label, then :func:`~losskit.classification._targets.classwise_loss` applies targets
(indices or distributions), label smoothing, class weights, ignore_index and the reduction.
"""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, objective
from .._core.domains import COUNT, HALF_OPEN_UNIT, NONNEGATIVE, POSITIVE, Choice, Maybe, Real
from .._core.inputs import LOGITS_LABELS, logits_labels_example
from ._targets import ROWS_CHECKED, class_last, classwise_loss, reduce_classwise, resolve_targets
from .margins import comp_sum_transform, ldr_transform, log_rival_mass, margin_logsumexp, margin_vector

__all__ = ["comp_sum", "CompSumLoss", "gce", "GCELoss", "mae", "MAELoss", "sce", "SCELoss", "poly_loss",
           "PolyLoss", "ldr_kl", "LDRKLLoss", "aldr_kl", "ALDRKLLoss", "normalize_logits"]

COMP_SUM_PAPER = Paper("Cross-Entropy Loss Functions: Theoretical Analysis and Applications", 2023, "2304.07288",
                       "Mao, Mohri, Zhong")
GCE_PAPER = Paper("Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels", 2018,
                  "1805.07836", "Zhang, Sabuncu")
SCE_PAPER = Paper("Symmetric Cross Entropy for Robust Learning with Noisy Labels", 2019, "1908.06112",
                  "Wang, Ma, Chen, Luo, Yi, Bailey")
MAE_PAPER = Paper("Robust Loss Functions under Label Noise for Deep Neural Networks", 2017, "1712.09482",
                  "Ghosh, Kumar, Sastry")
POLY_PAPER = Paper("PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions", 2022,
                   "2204.12511", "Leng, Xu, Mao, Qiao, Gao, Zhou, Ye, Zeng, Yu, Gupta, Liu, Zhao, Chen")
LDR_PAPER = Paper("Label Distributionally Robust Losses for Multi-class Classification: Consistency, "
                  "Robustness and Adaptivity", 2023, "2112.14869", "Zhu, Ying, Yang")

_MARGIN_PROPS = {"shift_invariant", "permutation_equivariant"}


def _example_with(**options):
    def make(gen, dtype):
        ex = logits_labels_example(gen, dtype)
        return ex.replace(options=options)

    return make


def _classwise(transform, logits, target, weight, ignore_index, label_smoothing, sample_weight, reduction,
               base=margin_logsumexp):
    return classwise_loss(logits, target, base, transform, weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, sample_weight=sample_weight, reduction=reduction)


# -------------------------------------------------------------------------------------- comp-sum
@objective(
    "comp_sum", seed=True, family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=_example_with(tau=1.5),
    paper=COMP_SUM_PAPER, properties={"nonnegative", "calibrated"} | _MARGIN_PROPS,
    formula="L_tau(z, y) = Phi_tau(sum_{k!=y} e^{z_k - z_y}),  Phi_tau(u) = ((1+u)^{1-tau} - 1)/(1-tau), "
            "Phi_1 = log(1+u)",
    module_name="CompSumLoss", domains={"tau": NONNEGATIVE},
)
def comp_sum(logits: torch.Tensor, target: torch.Tensor, *, tau: float = 1.0, weight: torch.Tensor | None = None,
             ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """The comp-sum family of Mao, Mohri and Zhong: one parameter from sum-exp through CE and GCE to MAE.

    .. math:: \\ell_\\tau(z, y) = \\Phi_\\tau\\Big(\\sum_{k \\ne y} e^{z_k - z_y}\\Big),\\quad
              \\Phi_\\tau(u) = \\frac{(1+u)^{1-\\tau} - 1}{1 - \\tau},\\ \\Phi_1(u) = \\log(1 + u)

    ``tau=0``: sum-exponential loss; ``tau=1``: cross-entropy; ``tau in (1, 2)``: generalised CE with
    ``q = tau - 1``; ``tau=2``: MAE ``1 - p_y``. With ``1 + u = 1/p_y`` it is computed as
    ``expm1((1-tau) s) / (1-tau)``, ``s = -log_softmax(z)_y``, never through ``p_y``. ``tau >= 0``.
    Every ``tau >= 0`` is Bayes-consistent (the paper's H-consistency bounds); convex only for
    ``tau <= 1``. The adversarial variant (the paper's smooth adversarial comp-sum) is not included.

    Paper: Mao, Mohri, Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and Applications",
    2023, arXiv:2304.07288.
    """
    return _classwise(lambda s: comp_sum_transform(s, tau), logits, target, weight,
                      ignore_index, label_smoothing, sample_weight, reduction)


@objective(
    "gce", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=GCE_PAPER, properties={"nonnegative", "bounded", "calibrated"} | _MARGIN_PROPS,
    formula="L(z, y) = (1 - p_y^q) / q,  p = softmax(z)  (= comp_sum with tau = 1 + q)",
    module_name="GCELoss", domains={"q": Real(0.0, 1.0, lo_open=True)},
)
def gce(logits: torch.Tensor, target: torch.Tensor, *, q: float = 0.7, weight: torch.Tensor | None = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
        reduction: str = "mean") -> torch.Tensor:
    """Generalised cross-entropy ``(1 - p_y^q) / q``: CE as ``q -> 0``, MAE at ``q = 1``.

    .. math:: \\ell(z, y) = \\frac{1 - p_y^{\\,q}}{q}

    Computed as :func:`comp_sum` with ``tau = 1 + q``. Bounded by ``1/q``; not symmetric for
    ``q < 1`` (so not noise-tolerant in the strict sense). ``q in (0, 1]``, default 0.7.

    Paper: Zhang, Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
    Labels", 2018, arXiv:1805.07836.
    """
    return _classwise(lambda s: comp_sum_transform(s, 1.0 + q), logits, target, weight,
                      ignore_index, label_smoothing, sample_weight, reduction)


@objective(
    "mae", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=MAE_PAPER, properties={"nonnegative", "bounded", "symmetric", "calibrated"} | _MARGIN_PROPS,
    formula="L(z, y) = 1 - p_y = ||onehot(y) - p||_1 / 2,  p = softmax(z)  (= comp_sum with tau = 2)",
    module_name="MAELoss",
)
def mae(logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
        reduction: str = "mean") -> torch.Tensor:
    """Mean absolute error between softmax probabilities and the label, ``1 - p_y``.

    .. math:: \\ell(z, y) = 1 - p_y,\\qquad \\sum_k \\ell(z, k) = K - 1

    Symmetric (the sum over labels is constant, hence tolerant to symmetric label noise) and bounded;
    not convex. Computed as :func:`comp_sum` with ``tau = 2``: ``-expm1(log_softmax(z)_y)``. The paper's
    ``||e_y - p||_1 = 2 (1 - p_y)``; losskit drops the factor 2 (so that MAE = comp-sum at tau=2).

    Paper: Ghosh, Kumar, Sastry, "Robust Loss Functions under Label Noise for Deep Neural Networks",
    2017, arXiv:1712.09482.
    """
    return _classwise(lambda s: comp_sum_transform(s, 2.0), logits, target, weight,
                      ignore_index, label_smoothing, sample_weight, reduction)


@objective(
    "sce", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=SCE_PAPER, properties={"nonnegative", "calibrated"} | _MARGIN_PROPS,
    formula="L = alpha CE + beta RCE,  RCE(z, y) = -A sum_{k!=y} p_k = -A (1 - p_y),  A = log(1e-4); "
            "p_min: p_k -> max(p_k, p_min) in RCE",
    module_name="SCELoss",
    domains={"alpha": NONNEGATIVE, "beta": NONNEGATIVE, "A": Real(None, 0.0, hi_open=True),
             "p_min": Maybe(HALF_OPEN_UNIT)},
)
def sce(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.1, beta: float = 1.0,
        A: float = math.log(1e-4), p_min: float | None = None, weight: torch.Tensor | None = None,
        ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
        reduction: str = "mean") -> torch.Tensor:
    """Symmetric cross-entropy: CE plus the reverse cross-entropy ``-sum_k p_k log t_k``.

    .. math:: \\ell = \\alpha\\, \\mathrm{CE} + \\beta\\, \\mathrm{RCE},\\qquad
              \\mathrm{RCE}(z, y) = -\\sum_k p_k \\log e_{y,k} = -A \\sum_{k \\ne y} p_k = -A (1 - p_y)

    with ``log 0`` replaced by ``A``. † ``A = log(1e-4) ~ -9.21`` by default: the authors' code
    (HanxunH/SCELoss-Reproduce, ``loss.py``, which clamps the one-hot label to ``[1e-4, 1]`` before the
    log) and so the value their reported results were trained with; the paper's text says ``A = -4``
    (pass ``A=-4.0`` for it; at the defaults the two differ by a factor ~0.54 in the RCE term).
    ``p_min``: the authors' code also clamps the predicted probabilities to ``[1e-7, 1]`` in the RCE
    term; ``p_min=1e-7`` reproduces it exactly (RCE ``= -A sum_{k != y} max(p_k, p_min)``). The
    default ``None`` does not clamp: the clamp changes a per-sample value by at most
    ``beta |A| (K - 1) p_min`` (8.3e-6 for CIFAR-10 at the defaults) and the gradient by less, so the
    reported results do not depend on it, while it would make the loss of a perfect prediction
    non-zero and, where it binds, zero the gradient of the clamped classes.
    Defaults ``alpha=0.1, beta=1`` (the paper's CIFAR-10 setting); ``alpha, beta >= 0`` (a negative
    weight would reward the error it measures), ``A < 0`` and ``p_min`` in ``[0, 1)``. Soft targets
    enter linearly (the expectation of the per-label loss), i.e. RCE becomes ``-A (1 - sum_k t_k p_k)``,
    not ``-sum_k p_k clip(log t_k)``.

    Paper: Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy
    Labels", 2019, arXiv:1908.06112. Code: HanxunH/SCELoss-Reproduce (``loss.py``, ``SCELoss``).
    """
    if p_min is None:
        def score(s):
            return alpha * s + beta * (-A) * (-torch.expm1(-s))

        return _classwise(score, logits, target, weight, ignore_index, label_smoothing, sample_weight, reduction)
    return _classwise(None, logits, target, weight, ignore_index, label_smoothing, sample_weight, reduction,
                      base=_clamped_sce_base(alpha, beta, A, p_min))


def _clamped_sce_base(alpha: float, beta: float, A: float, p_min: float):
    """Per-class SCE scores with the RCE's probabilities clamped below at ``p_min`` (the ``p_min`` option)."""
    def parts(z):
        lp = torch.log_softmax(z, -1)
        return lp, torch.clamp(lp.exp(), min=p_min)  # the documented p_min option: max(p_k, p_min)

    def base(z):  # every candidate label (soft targets, smoothing): sum_{k != j} q_k = sum_k q_k - q_j
        lp, q = parts(z)
        return alpha * (-lp) + beta * (-A) * (q.sum(-1, keepdim=True) - q)

    def at(z, index):  # the labels only: the rival sum formed directly, without cancellation
        lp, q = parts(z)
        idx = index.unsqueeze(-1)
        rival = q.scatter(-1, idx, 0.0).sum(-1)
        return alpha * (-lp.gather(-1, idx).squeeze(-1)) + beta * (-A) * rival

    base.at = at  # type: ignore[attr-defined]  # read by classwise_loss
    return base


@objective(
    "poly_loss", family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=POLY_PAPER, properties={"nonnegative", "calibrated"} | _MARGIN_PROPS,
    formula="L(z, y) = -log p_y + epsilon (1 - p_y)  (Poly-1)",
    module_name="PolyLoss", domains={"epsilon": Real(-1.0, None)},
)
def poly_loss(logits: torch.Tensor, target: torch.Tensor, *, epsilon: float = 1.0,
              weight: torch.Tensor | None = None, ignore_index: int = -100, label_smoothing: float = 0.0,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Poly-1: cross-entropy plus ``epsilon`` times the first polynomial term ``1 - p_y``.

    .. math:: \\ell(z, y) = -\\log p_y + \\varepsilon (1 - p_y)

    ``epsilon >= -1`` keeps the loss non-negative (``-log p >= 1 - p``). With soft targets / label
    smoothing the ``1 - p_y`` term becomes ``1 - sum_k t_k p_k`` (the paper's form for smoothed labels).

    Paper: Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions",
    2022, arXiv:2204.12511.
    """
    def score(s):
        return s + epsilon * (-torch.expm1(-s))

    return _classwise(score, logits, target, weight, ignore_index, label_smoothing, sample_weight, reduction)


# ------------------------------------------------------------------------------------------ LDR
def normalize_logits(logits: torch.Tensor, kind: str = "softplus") -> torch.Tensor:
    """The LDR official code's logit normalisations (``-inf`` entries stay masked, the mean is over the rest).

    ``"softplus"``: ``softplus(z) / mean_k softplus(z)`` (``LDRLoss_V1``, and ``ALDRLoss_V1`` with
    ``softplus=True``); ``"l1"``: ``z / mean_k |z_k|`` (``ALDRLoss_V1``'s default). A row whose mean is 0
    (all-zero logits under ``"l1"``) maps to zeros with zero gradient (``0/0 := 0``).
    """
    finite = torch.isfinite(logits)
    zf = torch.where(finite, logits, torch.zeros_like(logits))
    v = torch.nn.functional.softplus(zf) if kind == "softplus" else zf
    mag = (v if kind == "softplus" else v.abs()) * finite
    n = finite.sum(-1, keepdim=True).clamp(min=1).to(v.dtype)
    mean = mag.sum(-1, keepdim=True) / n
    ok = mean > 0
    out = torch.where(ok, v / torch.where(ok, mean, torch.ones_like(mean)), torch.zeros_like(v))
    return torch.where(finite, out, logits)


def _normalization(normalize) -> str | None:
    """The ``normalize`` option of ldr_kl / aldr_kl as a kind: ``True`` is the LDR code's ``"softplus"``."""
    if normalize is False:
        return None
    return "softplus" if normalize is True else normalize


_NORMALIZE = Choice(False, True, "softplus", "l1")


@objective(
    "ldr_kl", seed=True, family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=LDR_PAPER, properties={"calibrated", "permutation_equivariant"},
    formula="L(z, y) = lam log((1/K) sum_k exp(d_k / lam)),  d_k = z_k - z_y + c [k != y], on the logits "
            "softplus(z) / mean_k softplus(z) (normalize=True, the default) or z (normalize=False)",
    module_name="LDRKLLoss", domains={"lam": POSITIVE, "c": NONNEGATIVE, "normalize": _NORMALIZE},
)
def ldr_kl(logits: torch.Tensor, target: torch.Tensor, *, lam: float = 10.0, c: float = 0.1,
           normalize: bool | str = True, weight: torch.Tensor | None = None, ignore_index: int = -100,
           label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
           reduction: str = "mean") -> torch.Tensor:
    """Label-distributionally-robust loss with a KL ball: the worst case over label distributions.

    .. math:: \\ell(z, y) = \\max_{q \\in \\Delta} \\sum_k q_k d_k - \\lambda\\, \\mathrm{KL}(q \\| U)
              = \\lambda \\log \\frac1K \\sum_k e^{d_k / \\lambda},\\qquad
              d_k = z_k - z_y + c\\,[k \\ne y]

    ``lam -> 0``: Crammer-Singer hinge ``max(0, max_{k != y} z_k - z_y + c)``; ``lam -> inf``: the mean
    margin ``(1/K) sum_{k != y} (z_k - z_y + c)`` (Weston-Watkins-like); ``lam = 1, c = 0``:
    ``CE - log K`` (so it can be negative: not claimed non-negative). Defaults ``lam=10, c=0.1``;
    ``lam > 0`` and the margin ``c >= 0`` (a negative margin accepts wrong predictions in the hinge limit).
    Computed as ``lam softplus(c/lam + log u) - lam log K`` with the rival mass
    ``u = sum_{k != y} e^{(z_k - z_y)/lam}`` formed in log space (accurate also as ``lam -> 0``).

    † ``normalize=True`` (the default, also spelled ``"softplus"``) first maps the logits to
    ``softplus(z) / mean_k softplus(z)``, as the authors' code always does (``LDRLoss_V1`` in
    Optimization-AI/ICML2023_LDR, ``loss.py``: the loss their reported results were trained with);
    ``"l1"`` maps them to ``z / mean_k |z_k|`` (their ``ALDRLoss_V1`` default); ``normalize=False`` is the
    paper's formula on the raw logits, the only form that is convex and shift-invariant (the
    normalised loss is neither; at ``lam=10, c=0.1`` the two can differ by a large factor: 2.2 relative on
    N(0, 1) logits with K = 10).
    Masked (``-inf``) logits stay masked and the normalising mean runs over the others (the authors'
    code has no masking).

    Paper: Zhu, Ying, Yang, "Label Distributionally Robust Losses for Multi-class Classification:
    Consistency, Robustness and Adaptivity", 2023, arXiv:2112.14869. Code: Optimization-AI/ICML2023_LDR
    (``loss.py``, ``LDRLoss_V1``).
    """
    kind = _normalization(normalize)

    def rival(z):
        return log_rival_mass(normalize_logits(z, kind) if kind else z, lam)

    k = class_last(logits).shape[-1]
    return _classwise(lambda v: ldr_transform(v, lam, c, k), logits, target, weight, ignore_index, label_smoothing,
                      sample_weight, reduction, base=rival)


def _kl_to_uniform(q_logits: torch.Tensor) -> torch.Tensor:
    logq = torch.log_softmax(q_logits, -1)
    q = logq.exp()
    plogp = torch.where(q > 0, q * logq, torch.zeros_like(q)).sum(-1, keepdim=True)
    return plogp + math.log(q_logits.shape[-1])


@objective(
    "aldr_kl", seed=True, family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=LDR_PAPER, properties={"permutation_equivariant"},
    formula="L(z, y) = max_{lam in [lam0(1-1/alpha), lam0]} lam log((1/K) sum_k e^{d_k/lam}) "
            "- (alpha log K / (2 lam0)) (lam - lam0)^2,  d on the logits z / mean_k |z_k| (normalize='l1', the "
            "default), softplus(z) / mean_k softplus(z) (True) or z (False)",
    module_name="ALDRKLLoss",
    domains={"lam0": POSITIVE, "c": NONNEGATIVE, "alpha": Real(1.0, None, lo_open=True), "normalize": _NORMALIZE,
             "n_iter": COUNT},
)
def aldr_kl(logits: torch.Tensor, target: torch.Tensor, *, lam0: float = 10.0, c: float = 0.1, alpha: float = 2.0,
            normalize: bool | str = "l1", n_iter: int = 50, ignore_index: int = -100,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Adaptive LDR-KL: each sample picks its own robustness temperature ``lam_i``.

    .. math:: \\ell(z, y) = \\max_{\\lambda} \\Big[\\lambda \\log \\frac1K \\sum_k e^{d_k/\\lambda}
              - \\frac{\\alpha \\log K}{2 \\lambda_0} (\\lambda - \\lambda_0)^2\\Big]

    The stationarity condition is the paper's update ``lam = lam0 (1 - KL(q || U) / (alpha log K))``
    with ``q = softmax(d / lam)`` the worst-case label distribution. † The authors' code applies that
    update once per visit and stores ``lam_i`` per sample index (stateful); losskit solves the
    one-dimensional problem to convergence per call (bisection on the derivative over
    ``[lam0 (1 - 1/alpha), lam0]``, where it changes sign; ``alpha > 1``), so the loss is stateless and
    its gradient, with ``lam_i`` held fixed, is exact (envelope theorem): the value the authors' update
    reaches when a sample is visited until ``lam_i`` settles. ``q`` uses the margins ``d`` including
    ``c`` (the DRO formulation; the authors' update forms ``q`` from the logits without ``c``, and adds
    1e-5 to it before the log, so with ``c > 0`` their fixed point differs slightly).
    Class-index targets only (``lam_i`` is defined per label).
    Defaults ``lam0=10, c=0.1, alpha=2`` (``lam0 > 0``, ``c >= 0``, ``alpha > 1``, ``n_iter >= 1``
    bisection steps). † ``normalize="l1"`` (the default) maps the logits to ``z / mean_k |z_k|`` first,
    as ``ALDRLoss_V1`` in the authors' code does in every reported experiment but CIFAR-100, where it
    runs with ``softplus=True`` (``normalize=True``: ``softplus(z) / mean_k softplus(z)``, as in
    :func:`ldr_kl`); ``normalize=False`` is the paper's formula on the raw logits, which is convex in
    the logits (a pointwise maximum over ``lam`` of functions convex in ``z``) and shift-invariant.

    Paper: Zhu, Ying, Yang, "Label Distributionally Robust Losses for Multi-class Classification:
    Consistency, Robustness and Adaptivity", 2023, arXiv:2112.14869. Code: Optimization-AI/ICML2023_LDR
    (``loss.py``, ``ALDRLoss_V1``; ``experiment.py`` for the settings).
    """
    t = resolve_targets(class_last(logits), target, ignore_index=ignore_index)
    z = t.logits  # ignored rows get zero gradient: a fully masked ignored row gives 0, not NaN
    if t.index is None:
        raise fail("target", "class indices (ALDR-KL adapts lambda per labelled sample)",
                   f"probabilities of shape {tuple(target.shape)}")
    kind = _normalization(normalize)
    if kind:
        z = normalize_logits(z, kind)
    k = z.shape[-1]
    d = margin_vector(z, t.index, c)
    a = alpha * math.log(k) / lam0
    with torch.no_grad():
        dd = d.detach()
        lo = torch.full(dd.shape[:-1] + (1,), lam0 * (1 - 1 / alpha), dtype=dd.dtype, device=dd.device)
        hi = torch.full_like(lo, lam0)
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            deriv = -_kl_to_uniform(dd / mid) - a * (mid - lam0)
            lo = torch.where(deriv > 0, mid, lo)
            hi = torch.where(deriv > 0, hi, mid)
        lam = (lo + hi) / 2
    per = lam * (torch.logsumexp(d / lam, -1, keepdim=True) - math.log(k)) - a / 2 * (lam - lam0) ** 2
    return reduce_classwise(per.squeeze(-1), t, reduction, None, sample_weight)


CompSumLoss = comp_sum.Module
GCELoss = gce.Module
MAELoss = mae.Module
SCELoss = sce.Module
PolyLoss = poly_loss.Module
LDRKLLoss = ldr_kl.Module
ALDRKLLoss = aldr_kl.Module
