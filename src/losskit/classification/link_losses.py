"""Losses that change the link: Z-loss (z-normalisation), StableMax CE, Fenchel-Young sparsemax / entmax."""

from __future__ import annotations

import torch

from .._core import Paper, fail, objective
from .._core.domains import COUNT, POSITIVE, REAL, Real
from .._core.inputs import LOGITS_LABELS, logits_labels_example
from .._core.validate import check_floating, require
from ._inputs import FEATURES_PROTOTYPES, features_example
from ._targets import (
    ROWS_CHECKED,
    class_last,
    classwise_loss,
    reduce_classwise,
    resolve_targets,
    target_distribution,
)
from .links import _Entmax, log_stablemax, tsallis_omega, z_normalize
from .margins import guarded, margin_logsumexp, softplus

__all__ = ["spherical_z_loss", "SphericalZLoss", "stablemax_cross_entropy", "StableMaxCrossEntropyLoss",
           "sparsemax_loss", "SparsemaxLoss", "entmax_loss", "EntmaxLoss", "normalized_softmax_loss",
           "NormalizedSoftmaxLoss", "cosine_logits"]

ZLOSS_PAPER = Paper("The Z-loss: a shift and scale invariant classification loss belonging to the Spherical Family",
                    2016, "1604.08859", "de Brébisson, Vincent")
STABLEMAX_PAPER = Paper("Grokking at the Edge of Numerical Stability", 2025, "2501.04697",
                        "Prieto, Barsbey, Mediano, Birdal")
FY_PAPER = Paper("Learning with Fenchel-Young Losses", 2020, "1901.02324", "Blondel, Martins, Niculae")


@objective(
    "spherical_z_loss", seed=True, family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=ZLOSS_PAPER,
    properties={"nonnegative", "bounded", "calibrated", "shift_invariant", "scale_invariant",
                "permutation_equivariant"},
    formula="L(z, y) = (1/a) softplus(a (b - z~_y)),  z~ = (z - mean z) / std z",
    module_name="SphericalZLoss", domains={"a": POSITIVE, "b": REAL},
)
def spherical_z_loss(logits: torch.Tensor, target: torch.Tensor, *, a: float = 1.0, b: float = 1.0,
                     weight: torch.Tensor | None = None, ignore_index: int = -100, label_smoothing: float = 0.0,
                     sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """The Z-loss of the spherical family: a softplus of the z-normalised target logit.

    .. math:: \\ell(z, y) = \\frac1a \\log\\big(1 + e^{a (b - \\tilde z_y)}\\big),\\qquad
              \\tilde z = \\frac{z - \\mu(z)}{\\sigma(z)}

    with the population standard deviation over the classes. Invariant to shifting and to positive
    rescaling of the logits, and bounded (``|z~_k| <= sqrt(K - 1)``). Its gradient vanishes when the
    target is the single lowest logit and all others tie (``z~_y`` is then at its minimum): confidently
    wrong predictions of that shape are not corrected. Named apart from the PaLM logit regulariser (``losskit.logit_z_loss``).
    † The paper tunes ``a`` (sharpness) and ``b`` (location) per task and gives no universal default;
    losskit defaults to ``a = b = 1`` (``a > 0``, ``b`` any real). ``-inf`` logits are masked classes: they are left out of the mean
    and the std. When every logit is equal the normalised scores are 0.

    Paper: de Brébisson, Vincent, "The Z-loss: a shift and scale invariant classification loss belonging
    to the Spherical Family", 2016, arXiv:1604.08859.
    """
    return classwise_loss(logits, target, lambda z: -z_normalize(z),
                          lambda v: guarded(v, lambda u: softplus(a * (b + u)) / a), weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, sample_weight=sample_weight, reduction=reduction)


@objective(
    "stablemax_cross_entropy", seed=True, family="classification", unchecked=ROWS_CHECKED, input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=STABLEMAX_PAPER, properties={"nonnegative", "calibrated", "proper", "permutation_equivariant"},
    formula="L(z, y) = -log(s(z_y) / sum_j s(z_j)),  s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0)",
    module_name="StableMaxCrossEntropyLoss", link="stablemax",
)
def stablemax_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
                            ignore_index: int = -100, label_smoothing: float = 0.0,
                            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy through the StableMax link instead of softmax.

    .. math:: \\ell(z, y) = -\\log \\frac{s(z_y)}{\\sum_j s(z_j)},\\qquad
              s(x) = \\begin{cases} x + 1 & x \\ge 0 \\\\ 1/(1 - x) & x < 0 \\end{cases}

    ``s`` grows linearly, so confident predictions do not collapse to ``p = 1`` in floating point
    ("softmax collapse"): at float32 logits ``[100, 0, 0]`` softmax CE has loss and gradient exactly 0,
    StableMax CE does not. Not shift-invariant: StableMax is a different link, not a
    reparameterisation. As in the paper, float32 (and promoted half) inputs are computed in float64 and
    the loss is returned in float32 (except on MPS, which has no float64): near-zero losses, the
    grokking regime, keep their relative accuracy. ``log s(x) = sign(x) log1p(|x|)`` and a log-sum-exp
    are used, never ``log`` of a ratio. Proper: the link is a
    bijection onto the open simplex (up to scale), so the conditional risk is minimised at
    ``stablemax(z) = p``.

    Paper: Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", 2025,
    arXiv:2501.04697.
    """
    def score(z):
        if z.dtype == torch.float32 and z.device.type != "mps":
            return -log_stablemax(z.double())  # the paper's float64; returned in float32 below
        return -log_stablemax(z)

    out = classwise_loss(logits, target, score, weight=weight, ignore_index=ignore_index,
                         label_smoothing=label_smoothing, sample_weight=sample_weight, reduction=reduction)
    return out.to(logits.dtype) if logits.dtype == torch.float32 else out


# ----------------------------------------------------------------------------------- Fenchel-Young
class _FYLoss(torch.autograd.Function):
    """Value of the Fenchel-Young loss with its exact gradient ``pi(z) - t`` (no autograd through the solver)."""

    @staticmethod
    def forward(ctx, z, dist, alpha, n_iter):
        with torch.no_grad():
            p = torch.softmax(z, -1) if alpha == 1.0 else _Entmax.apply(z, alpha, n_iter)
            diff = p - dist
            inner = torch.where(diff != 0, z * diff, torch.zeros_like(z)).sum(-1)
            per = inner + tsallis_omega(dist, alpha) - tsallis_omega(p, alpha)
        ctx.save_for_backward(diff)
        return per

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved_tensors
        return g.unsqueeze(-1) * diff, None, None, None


def _fy(logits, target, alpha, n_iter, ignore_index, label_smoothing, sample_weight, reduction):
    t = resolve_targets(class_last(logits), target, ignore_index=ignore_index, label_smoothing=label_smoothing)
    z = t.logits  # ignored rows get zero gradient: a fully masked ignored row gives 0, not NaN
    dist = target_distribution(t, z.dtype)
    per = _FYLoss.apply(z, dist, float(alpha), n_iter)
    return reduce_classwise(per, t, reduction, None, sample_weight)


@objective(
    "sparsemax_loss", family="classification", input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=FY_PAPER,
    properties={"nonnegative", "convex", "calibrated", "proper", "shift_invariant", "permutation_equivariant"},
    formula="L(z, t) = <z, p - t> + (||t||^2 - ||p||^2) / 2,  p = sparsemax(z);  grad = p - t",
    module_name="SparsemaxLoss", link="sparsemax",
)
def sparsemax_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100,
                   label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """The sparsemax loss: the Fenchel-Young loss of the Gini entropy, whose link is sparsemax.

    .. math:: L(z, t) = \\Omega^*(z) - \\langle z, t\\rangle + \\Omega(t)
              = \\langle z, p - t\\rangle + \\tfrac12\\|t\\|^2 - \\tfrac12\\|p\\|^2,\\quad
              p = \\mathrm{sparsemax}(z),\\ \\nabla_z L = p - t

    Zero exactly when ``sparsemax(z) = t``. Targets are indices or distributions (label smoothing
    applies to ``t``); per-class ``weight`` has no meaning for a loss that is not linear in ``t`` and is
    not offered. The gradient ``p - t`` is returned directly (sparsemax computed exactly by sorting);
    ``-inf`` logits are masked classes and give no NaN; a fully masked row raises unless its target is
    ``ignore_index``. Computed on ``z - max z`` (shift invariance), so logits of magnitude 1e30 work.
    Equals the ``entmax`` package's ``sparsemax_loss`` (tested).

    Paper: Blondel, Martins, Niculae, "Learning with Fenchel-Young Losses", 2020, arXiv:1901.02324;
    sparsemax: Martins, Astudillo 2016, arXiv:1602.02068.
    """
    return _fy(logits, target, 2.0, 0, ignore_index, label_smoothing, sample_weight, reduction)


@objective(
    "entmax_loss", family="classification", input_kind=LOGITS_LABELS, example=logits_labels_example,
    paper=FY_PAPER,
    properties={"nonnegative", "convex", "calibrated", "proper", "shift_invariant", "permutation_equivariant"},
    formula="L(z, t) = <z, p - t> + Omega_a(t) - Omega_a(p),  Omega_a(p) = (sum p^a - 1)/(a(a-1)), "
            "p = entmax_a(z);  grad = p - t",
    module_name="EntmaxLoss", link="entmax15", domains={"alpha": Real(1.0, None), "n_iter": COUNT},
)
def entmax_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.5, n_iter: int = 50,
                ignore_index: int = -100, label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
    """The alpha-entmax loss: the Fenchel-Young loss of the Tsallis alpha-entropy.

    .. math:: L(z, t) = \\langle z, p - t\\rangle + \\Omega_\\alpha(t) - \\Omega_\\alpha(p),\\quad
              \\Omega_\\alpha(p) = \\frac{\\sum_k p_k^\\alpha - 1}{\\alpha(\\alpha - 1)},\\quad
              p = \\alpha\\text{-entmax}(z)

    ``alpha = 1``: softmax cross-entropy minus the target entropy (= CE for one-hot targets);
    ``alpha = 2``: :func:`sparsemax_loss`; default 1.5 (``alpha >= 1``). ``p`` is found by bisection
    (``n_iter >= 1`` halvings, computed in float32 for half inputs), and the gradient is ``p - t`` exactly; the loss
    value is first-order insensitive to the bisection error. No NaN at ``-inf`` logits or for
    float16/bfloat16 inputs (the ``entmax`` package's issues 9 and 30).

    Paper: Blondel, Martins, Niculae, "Learning with Fenchel-Young Losses", 2020, arXiv:1901.02324;
    entmax: Peters, Niculae, Martins, "Sparse Sequence-to-Sequence Models", 2019, arXiv:1905.05702.
    """
    return _fy(logits, target, alpha, n_iter, ignore_index, label_smoothing, sample_weight, reduction)


SphericalZLoss = spherical_z_loss.Module
StableMaxCrossEntropyLoss = stablemax_cross_entropy.Module
SparsemaxLoss = sparsemax_loss.Module
EntmaxLoss = entmax_loss.Module


# ------------------------------------------------------------------------- hyperspherical softmax
NORMFACE_PAPER = Paper("NormFace: L2 Hypersphere Embedding for Face Verification", 2017, "1704.06369",
                       "Wang, Xiang, Cheng, Yuille")


def cosine_logits(features: torch.Tensor, prototypes: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """``s cos(x_i, w_k)``: the hyperspherical link's logits ``(N, K)`` (features and prototypes normalised)."""
    xn = features / torch.linalg.vector_norm(features, dim=-1, keepdim=True)
    wn = prototypes / torch.linalg.vector_norm(prototypes, dim=-1, keepdim=True)
    return scale * xn @ wn.T


def _check_nonzero_rows(name: str, x: torch.Tensor) -> None:
    def zero():
        return torch.linalg.vector_norm(x, dim=-1) == 0

    require(name, x, lambda: zero().any(), "non-zero vectors (a direction on the sphere)",
            lambda: f"a zero vector at row {int(zero().nonzero()[0])}")


@objective(
    "normalized_softmax_loss", seed=True, family="classification", input_kind=FEATURES_PROTOTYPES, example=features_example,
    paper=NORMFACE_PAPER, properties={"nonnegative", "scale_invariant"},
    formula="L(x, W, y) = -log softmax(s cos(x, W))_y,  cos(x, w_k) = <x, w_k> / (||x|| ||w_k||)",
    module_name="NormalizedSoftmaxLoss", domains={"scale": POSITIVE},
)
def normalized_softmax_loss(features: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor, *,
                            scale: float = 16.0, weight: torch.Tensor | None = None, ignore_index: int = -100,
                            label_smoothing: float = 0.0, sample_weight: torch.Tensor | None = None,
                            reduction: str = "mean") -> torch.Tensor:
    """Hyperspherical (normalised) softmax: cross-entropy on scaled cosines between features and prototypes.

    .. math:: \\ell(x, W, y) = -\\log \\frac{e^{s \\cos\\theta_y}}{\\sum_k e^{s \\cos\\theta_k}},\\qquad
              \\cos\\theta_k = \\frac{\\langle x, w_k\\rangle}{\\|x\\|\\,\\|w_k\\|}

    Both features ``(N, d)`` and class prototypes ``(K, d)`` (the last layer's weights, a learnable
    parameter passed positionally so that a Module does not freeze it) are projected on the unit
    sphere; ``scale`` ``s`` sets the temperature (the paper learns or fixes it; losskit defaults to 16,
    within the range the paper finds necessary for the loss to reach low values). Invariant to the
    scale of ``features``. A zero vector has no direction and is rejected (no silent epsilon).
    Targets, ``weight``, ``ignore_index`` and ``label_smoothing`` as in :func:`cross_entropy`.

    Paper: Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding for Face Verification", 2017,
    arXiv:1704.06369.
    """
    check_floating("features", features)
    check_floating("prototypes", prototypes)
    if features.dim() != 2:
        raise fail("features", "shape (N, d)", f"shape {tuple(features.shape)}")
    if prototypes.dim() != 2 or prototypes.shape[1] != features.shape[1]:
        raise fail("prototypes", f"shape (K, {features.shape[1]})", f"shape {tuple(prototypes.shape)}")
    _check_nonzero_rows("features", features)
    _check_nonzero_rows("prototypes", prototypes)
    return classwise_loss(cosine_logits(features, prototypes, scale), target, margin_logsumexp, weight=weight,
                          ignore_index=ignore_index, label_smoothing=label_smoothing, sample_weight=sample_weight,
                          reduction=reduction)


NormalizedSoftmaxLoss = normalized_softmax_loss.Module
