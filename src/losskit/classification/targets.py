"""Target builders: each returns class distributions ``t`` (rows in the simplex) that every loss accepts.

Every classification loss in losskit takes ``target`` as class indices or as a distribution over the
class dimension, so a target is built once, here, and consumed by any loss:

* :func:`one_hot`, :func:`smooth_labels` (``(1 - eps) t + eps / K``), :func:`mix_targets` (MixUp),
* :func:`hl_gauss_targets`, :func:`two_hot_targets` and :func:`expected_value` (regression as
  classification; Farebrother et al. 2024, arXiv:2403.03950),
* :func:`score_distribution` and :func:`thurstone_probability` (DeQA-Score; You et al. 2025,
  arXiv:2501.11561).

Value checks here (finite values, label ranges, non-negative spreads) obey
:func:`losskit.set_validation` like every objective's, and read no value of a meta tensor.
"""

from __future__ import annotations

import torch

from .._core import fail
from .._core.validate import check_finite, check_floating, check_labels, require

__all__ = [
    "one_hot",
    "smooth_labels",
    "mix_targets",
    "bin_edges",
    "bin_centers",
    "hl_gauss_targets",
    "two_hot_targets",
    "expected_value",
    "score_distribution",
    "thurstone_probability",
]


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices ``(N, *)`` -> distributions ``(N, *, K)``."""
    check_labels("target", target, num_classes)
    return torch.nn.functional.one_hot(target.long(), num_classes).to(dtype)


def _as_dist(target: torch.Tensor, num_classes: int | None, dtype=None) -> torch.Tensor:
    if target.is_floating_point():
        return target if dtype is None else target.to(dtype)
    dtype = dtype or torch.get_default_dtype()
    if num_classes is None:
        raise fail("num_classes", "the number of classes when target holds class indices", "None")
    return one_hot(target, num_classes, dtype)


def smooth_labels(target: torch.Tensor, epsilon: float = 0.1, num_classes: int | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Label smoothing ``(1 - eps) t + eps / K`` of indices (give ``num_classes``) or distributions ``(..., K)``.

    ``cross_entropy(z, smooth_labels(y, eps, K))`` equals ``cross_entropy(z, y, label_smoothing=eps)``.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise fail("epsilon", "a value in [0, 1]", repr(epsilon))
    t = _as_dist(target, num_classes, dtype)
    return (1 - epsilon) * t + epsilon / t.shape[-1]


def mix_targets(target: torch.Tensor, lam: float, perm: torch.Tensor | None = None, num_classes: int | None = None,
                dtype: torch.dtype | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """MixUp / CutMix targets ``lam t + (1 - lam) t[perm]`` (Zhang et al. 2018, arXiv:1710.09412).

    ``perm=None`` pairs each sample with the batch reversed (``t.flip(0)``), as timm's ``Mixup`` does;
    ``label_smoothing`` smooths ``t`` first (``(1 - eps) t + eps / K``: timm's on/off values
    ``1 - eps + eps/K`` and ``eps/K``), so ``mix_targets(y, lam, num_classes=K, label_smoothing=eps)`` is
    timm's ``mixup_target(y, K, lam, eps)``. For CutMix pass the area-corrected ``lam = 1 - box area / (H W)``
    (timm's ``correct_lam``). ``cross_entropy(z, mix_targets(...))`` is timm's ``SoftTargetCrossEntropy``.
    """
    if not 0.0 <= lam <= 1.0:
        raise fail("lam", "a value in [0, 1]", repr(lam))
    if not 0.0 <= label_smoothing <= 1.0:
        raise fail("label_smoothing", "a value in [0, 1]", repr(label_smoothing))
    t = _as_dist(target, num_classes, dtype)
    if label_smoothing:
        t = (1 - label_smoothing) * t + label_smoothing / t.shape[-1]
    if perm is None:
        return lam * t + (1 - lam) * t.flip(0)
    if perm.shape[:1] != t.shape[:1]:
        raise fail("perm", f"a permutation of the batch of {t.shape[0]}", f"shape {tuple(perm.shape)}")
    return lam * t + (1 - lam) * t[perm]


# ------------------------------------------------------------------------ regression as classification
def _check_support(v_min: float, v_max: float, num_bins: int) -> None:
    if not v_max > v_min:
        raise fail("v_max", f"a value above v_min={v_min}", repr(v_max))
    if int(num_bins) != num_bins or num_bins < 2:
        raise fail("num_bins", "an integer >= 2", repr(num_bins))


def bin_edges(v_min: float, v_max: float, num_bins: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """``num_bins + 1`` equally spaced edges on ``[v_min, v_max]`` (bin width ``zeta``)."""
    _check_support(v_min, v_max, num_bins)
    return torch.linspace(v_min, v_max, num_bins + 1, dtype=dtype, device=device)


def bin_centers(v_min: float, v_max: float, num_bins: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``num_bins`` bin midpoints ``c_i``."""
    e = bin_edges(v_min, v_max, num_bins, dtype, device)
    return (e[1:] + e[:-1]) / 2


def ndtr(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF ``Phi(x) = erfc(-x / sqrt 2) / 2``, accurate in the lower tail.

    ``torch.special.ndtr`` loses relative accuracy there (2% at x = -8 and 0 below -8.3 in float64, as
    of torch 2.13), which would zero HL-Gauss bins and DeQA masses that SciPy resolves.
    """
    return 0.5 * torch.special.erfc(-x * 0.7071067811865476)


def _normal_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Phi(b) - Phi(a)`` for ``a <= b`` without cancellation in either tail."""
    upper = a > 0
    return torch.where(upper, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))


def _values(y: torch.Tensor, name: str = "target") -> torch.Tensor:
    check_floating(name, y)
    return check_finite(name, y)


def hl_gauss_targets(y: torch.Tensor, *, v_min: float, v_max: float, num_bins: int,
                     sigma: float | None = None) -> torch.Tensor:
    """HL-Gauss targets: the mass of ``N(y, sigma^2)`` in each bin, renormalised to the support.

    ``t_i = [Phi((e_{i+1} - y)/sigma) - Phi((e_i - y)/sigma)] / [Phi((v_max - y)/sigma) - Phi((v_min - y)/sigma)]``;
    ``sigma`` defaults to ``0.75 * zeta`` (the paper's sigma / bin width). ``y`` is clipped to
    ``[v_min, v_max]`` first (stated, not silent: outside it the renormalisation would divide by ~0).
    Farebrother et al., "Stop Regressing: Training Value Functions via Classification for Scalable Deep
    RL", 2024, arXiv:2403.03950.
    """
    return _hl_gauss(_values(y), v_min=v_min, v_max=v_max, num_bins=num_bins, sigma=sigma)


def _hl_gauss(y: torch.Tensor, *, v_min: float, v_max: float, num_bins: int,
              sigma: float | None = None) -> torch.Tensor:
    """:func:`hl_gauss_targets` without the finiteness check of ``y`` (already checked by the caller)."""
    e = bin_edges(v_min, v_max, num_bins, dtype=y.dtype, device=y.device)
    zeta = (v_max - v_min) / num_bins
    sigma = 0.75 * zeta if sigma is None else sigma
    if not sigma > 0:
        raise fail("sigma", "a positive standard deviation", repr(sigma))
    y = y.clamp(v_min, v_max).unsqueeze(-1)
    u = (e - y) / sigma
    mass = _normal_mass(u[..., :-1], u[..., 1:])
    return mass / mass.sum(-1, keepdim=True)


def two_hot_targets(y: torch.Tensor, *, v_min: float, v_max: float, num_bins: int) -> torch.Tensor:
    """Two-hot targets: ``y`` split linearly between its two neighbouring bin centres (mean exactly ``y``).

    ``y`` is clipped to ``[c_0, c_{K-1}]`` (the centres' range), where the mean is representable.
    """
    return _two_hot(_values(y), v_min=v_min, v_max=v_max, num_bins=num_bins)


def _two_hot(y: torch.Tensor, *, v_min: float, v_max: float, num_bins: int) -> torch.Tensor:
    """:func:`two_hot_targets` without the finiteness check of ``y`` (already checked by the caller)."""
    c = bin_centers(v_min, v_max, num_bins, dtype=y.dtype, device=y.device)
    y = torch.clamp(y, c[0], c[-1])  # tensor bounds: no host read
    width = c[1] - c[0]
    pos = (y - c[0]) / width
    lo = pos.floor().clamp(0, num_bins - 2)
    frac = (pos - lo).clamp(0, 1)  # rounding can put pos a hair past the last centre
    lo = lo.long().unsqueeze(-1)
    t = torch.zeros(*y.shape, num_bins, dtype=y.dtype, device=y.device)
    t.scatter_(-1, lo, (1 - frac).unsqueeze(-1))
    t.scatter_add_(-1, lo + 1, frac.unsqueeze(-1))
    return t


def expected_value(logits: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """The regression prediction ``y_hat = sum_i softmax(z)_i c_i`` from class-last logits ``(..., K)``."""
    check_floating("logits", logits)
    if centers.shape[-1] != logits.shape[-1]:
        raise fail("centers", f"{logits.shape[-1]} values (one per logit)", f"shape {tuple(centers.shape)}")
    return (torch.softmax(logits, -1) * centers.to(logits.dtype)).sum(-1)


# ----------------------------------------------------------------------------------- DeQA-Score
def score_distribution(mean: torch.Tensor, std: torch.Tensor, *, num_levels: int = 5,
                       score_range: tuple[float, float] | None = None) -> torch.Tensor:
    """DeQA-Score soft labels over ``num_levels`` levels ``1..K`` from a mean opinion score and its spread.

    1. Rescale ``(mean, std)`` from ``score_range = (lo, hi)`` to the level scale ``[1, K]`` (skip if None).
    2. ``p_i = Phi((i + 0.5 - mu)/sigma) - Phi((i - 0.5 - mu)/sigma)``, renormalised to sum to one.
    3. Affine post-adjustment ``p' = alpha p + beta`` with ``sum p' = 1`` and ``sum_i i p'_i = mu``:
       ``alpha = (mu - c_bar)/(m - c_bar)``, ``beta = (1 - alpha)/K`` (``m`` the mean of step 2,
       ``c_bar`` the mid level; ``alpha = 1`` when ``m = c_bar``).
    4. Where step 3 leaves a negative entry (tiny ``sigma``: nearly all mass in one level), fall back to
       the two-hot split of ``mu`` between its neighbouring levels, whose mean is also exactly ``mu``.

    † The paper (You et al., "Teaching Large Language Models to Regress Accurate Image Quality Scores
    using Score Distribution", 2025, arXiv:2501.11561) describes the affine adjustment and the two-hot
    fall-back for small ``sigma``; this exact criterion (fall back iff the adjustment is not a
    distribution) is losskit's choice. The mean of the result equals ``mu`` in every case (tested).
    """
    mean = _values(torch.as_tensor(mean, dtype=torch.float64) if not isinstance(mean, torch.Tensor) else mean, "mean")
    std = _values(torch.as_tensor(std, dtype=mean.dtype) if not isinstance(std, torch.Tensor) else std, "std")
    if int(num_levels) != num_levels or num_levels < 2:
        raise fail("num_levels", "an integer >= 2", repr(num_levels))
    require("std", std, lambda: (std < 0).any(), "non-negative standard deviations",
            lambda: f"min {std.min().item():.4g}")
    k = num_levels
    if score_range is not None:
        lo, hi = score_range
        if not hi > lo:
            raise fail("score_range", "(lo, hi) with hi > lo", repr(score_range))
        mean = 1 + (k - 1) * (mean - lo) / (hi - lo)
        std = std * (k - 1) / (hi - lo)
    require("mean", mean, lambda: ((mean < 1) | (mean > k)).any(),
            f"scores inside the level range [1, {k}] (after rescaling)",
            lambda: f"range [{mean.min().item():.4g}, {mean.max().item():.4g}]")
    levels = torch.arange(1, k + 1, dtype=mean.dtype, device=mean.device)
    mu, sd = mean.unsqueeze(-1), std.unsqueeze(-1)
    tiny = sd <= 0
    sd_safe = torch.where(tiny, torch.ones_like(sd), sd)
    p = _normal_mass((levels - 0.5 - mu) / sd_safe, (levels + 0.5 - mu) / sd_safe)
    total = p.sum(-1, keepdim=True)
    ok = (total > 0) & ~tiny
    p = torch.where(ok, p / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(p))
    c_bar = (k + 1) / 2
    m = (p * levels).sum(-1, keepdim=True)
    off = (m - c_bar).abs() > 1e-12
    alpha = torch.where(off, (mu - c_bar) / torch.where(off, m - c_bar, torch.ones_like(m)), torch.ones_like(m))
    adj = alpha * p + (1 - alpha) / k
    two_hot = _two_hot(mean, v_min=0.5, v_max=k + 0.5, num_bins=k)
    use_adj = ok & (adj >= 0).all(-1, keepdim=True)
    return torch.where(use_adj, adj, two_hot)


def thurstone_probability(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor,
                          eps: float = 1e-8) -> torch.Tensor:
    """Thurstone case V: ``P(A > B) = Phi((mu_A - mu_B) / sqrt(sigma_A^2 + sigma_B^2 + eps))``."""
    return ndtr((mu_a - mu_b) / torch.sqrt(sigma_a ** 2 + sigma_b ** 2 + eps))

