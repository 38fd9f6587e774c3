"""Consistency training (Song & Dhariwal 2023, iCT) and its latent-space variant with the Cauchy metric
(Dao et al. 2025), with the iCT noise discretisation, lognormal level sampling and step curriculum."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, Choice, Maybe
from .._core.validate import require
from ._common import check_pair
from ._inputs import CONSISTENCY, consistency_example

__all__ = ["consistency_training_loss", "ConsistencyTrainingLoss", "latent_consistency_loss",
           "LatentConsistencyLoss", "karras_sigmas", "ict_num_steps", "ict_noise_probs", "sample_ict_indices",
           "consistency_scalings", "pseudo_huber_c"]

ICT_PAPER = Paper("Improved Techniques for Training Consistency Models", 2023, "2310.14189", "Song, Dhariwal")
LCT_PAPER = Paper("Improved Training Technique for Latent Consistency Models", 2025, "2502.01441",
                  "Dao, Doan, Liu, Le, Metaxas")
METRICS = ("pseudo_huber", "cauchy", "l2")
CONSISTENCY_WEIGHTINGS = ("ict", "uniform")


# ------------------------------------------------------------------------------------ schedules
def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *,
                  dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The ``n`` noise levels ``sigma_i = (sigma_min^(1/rho) + (i-1)/(n-1) (sigma_max^(1/rho) -
    sigma_min^(1/rho)))^rho``, increasing (Karras et al. 2022; iCT Section 3.5)."""
    if n < 2:
        raise fail("n", "at least 2 noise levels", repr(n))
    i = torch.arange(n, dtype=dtype, device=device) / (n - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + i * (hi - lo)) ** rho


def ict_num_steps(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """The iCT discretisation curriculum: ``N(k) = min(s0 2^floor(k / K'), s1) + 1`` with
    ``K' = floor(K / (log2 floor(s1 / s0) + 1))`` (iCT Eq. 7): the number of noise levels doubles
    ``log2(s1/s0)`` times over training."""
    k_prime = math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1))
    return int(min(s0 * 2 ** math.floor(step / max(k_prime, 1)), s1)) + 1


def ict_noise_probs(sigmas: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """The iCT lognormal distribution over the ``N - 1`` adjacent pairs ``(sigma_i, sigma_{i+1})``:
    ``p(i) ∝ erf((log sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf((log sigma_i - P_mean) / (sqrt 2 P_std))``
    (iCT Section 3.5, Eq. 9)."""
    z = (sigmas.log() - p_mean) / (math.sqrt(2.0) * p_std)
    p = torch.erf(z[1:]) - torch.erf(z[:-1])
    return p / p.sum()


def sample_ict_indices(n: int, sigmas: torch.Tensor, *, generator: torch.Generator | None = None,
                       p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """``n`` indices ``i`` (0-based) drawn from :func:`ict_noise_probs`: the pairs ``(sigmas[i], sigmas[i+1])``."""
    return torch.multinomial(ict_noise_probs(sigmas, p_mean, p_std), n, replacement=True, generator=generator)


def consistency_scalings(sigma: torch.Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002):
    """``(c_skip, c_out)`` of the consistency function ``f(x, sigma) = c_skip x + c_out F(x, sigma)``:
    ``c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)``, ``c_out = sigma_data (sigma -
    sigma_min) / sqrt(sigma_data^2 + sigma^2)``, so ``f(x, sigma_min) = x`` (the boundary condition)."""
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = sigma_data * (sigma - sigma_min) / torch.sqrt(sigma_data ** 2 + sigma ** 2)
    return c_skip, c_out


def pseudo_huber_c(dim: int) -> float:
    """iCT's pseudo-Huber constant ``c = 0.00054 sqrt(d)`` for samples of ``d`` entries."""
    return 0.00054 * math.sqrt(dim)


# ------------------------------------------------------------------------------------ objectives
def _consistency(pred, target, sigma, sigma_next, metric, c, weighting, sample_weight, reduction):
    check_pair("pred", pred, "target", target, "sigma", sigma)
    check_pair("pred", pred, "target", target, "sigma_next", sigma_next)
    require("sigma_next", sigma_next, lambda: (sigma_next <= sigma).any(), "noise levels above sigma's",
            lambda: "some sigma_next <= sigma")
    n = pred.shape[0]
    diff = (pred - target.detach()).reshape(n, -1)
    cc = pseudo_huber_c(diff.shape[1]) if c is None else float(c)
    sq = (diff * diff).sum(-1)
    if metric == "pseudo_huber":
        # sqrt(sq + c^2) - c without cancellation (sq << c^2); an overflowed sq stays +inf, without NaN
        big = torch.isinf(sq)
        safe = torch.where(big, torch.zeros_like(sq), sq)
        per = torch.where(big, sq, safe / (torch.sqrt(safe + cc * cc) + cc))
    elif metric == "cauchy":
        per = torch.log1p(sq / (2 * cc * cc))
    else:
        per = sq
    if weighting == "ict":
        per = per / (sigma_next - sigma)
    return finish(per, reduction, sample_weight=sample_weight)


_DOMAINS = {"metric": Choice(*METRICS), "c": Maybe(POSITIVE), "weighting": Choice(*CONSISTENCY_WEIGHTINGS)}


@objective(
    "consistency_training_loss", seed=True, family="generative", input_kind=CONSISTENCY,
    example=consistency_example, paper=ICT_PAPER, properties={"nonnegative"},
    formula="L = lambda(sigma_i) d(f(x + sigma_{i+1} z, sigma_{i+1}), sg f(x + sigma_i z, sigma_i)),  "
            "d(a, b) = sqrt(||a - b||^2 + c^2) - c,  c = 0.00054 sqrt(dim),  lambda = 1/(sigma_{i+1} - sigma_i)",
    domains=_DOMAINS,
)
def consistency_training_loss(pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor,
                              sigma_next: torch.Tensor, *, metric: str = "pseudo_huber", c: float | None = None,
                              weighting: str = "ict", sample_weight: torch.Tensor | None = None,
                              reduction: str = "mean") -> torch.Tensor:
    """Improved consistency training (iCT): the pseudo-Huber distance between the consistency function at
    adjacent noise levels, weighted by ``1/(sigma_{i+1} - sigma_i)``.

    .. math:: \\ell = \\lambda(\\sigma_i)\\, d\\big(f_\\theta(x + \\sigma_{i+1} z, \\sigma_{i+1}),\\;
              \\mathrm{sg}\\,f_{\\theta}(x + \\sigma_i z, \\sigma_i)\\big),\\quad
              d(a, b) = \\sqrt{\\|a - b\\|_2^2 + c^2} - c,\\quad \\lambda(\\sigma_i) = \\frac{1}{\\sigma_{i+1} - \\sigma_i}

    ``pred (N, ...)`` is the student ``f_theta(x + sigma_next z, sigma_next)``, ``target`` the same network
    at the lower level ``sigma`` on the same noise ``z`` (iCT drops the EMA teacher: the same weights, no
    gradient; the loss detaches ``target`` itself). ``sigma < sigma_next (N,)`` are adjacent levels of
    :func:`karras_sigmas` with ``N(k)`` levels from the curriculum :func:`ict_num_steps`, the pair drawn by
    :func:`sample_ict_indices` (the lognormal ``P_mean = -1.1``, ``P_std = 2``). The loss draws nothing:
    the caller samples ``z`` and the levels with its own generator, so the loss is deterministic given
    its inputs. The distance is over the whole sample (all non-batch entries), ``c = 0.00054 sqrt(d)``
    for ``d`` entries unless ``c`` is given. ``metric='l2'`` is the squared distance, ``'cauchy'`` the
    latent-space variant (:func:`latent_consistency_loss`); ``weighting='uniform'`` drops lambda.
    :func:`consistency_scalings` gives ``c_skip``, ``c_out`` of ``f = c_skip x + c_out F``.

    Paper: Song, Dhariwal, "Improved Techniques for Training Consistency Models", ICLR 2024,
    arXiv:2310.14189.
    """
    return _consistency(pred, target, sigma, sigma_next, metric, c, weighting, sample_weight, reduction)


@objective(
    "latent_consistency_loss", seed=True, family="generative", input_kind=CONSISTENCY,
    example=consistency_example, paper=LCT_PAPER, properties={"nonnegative"},
    formula="L = lambda(sigma_i) log(1 + ||f(x_{i+1}, sigma_{i+1}) - sg f(x_i, sigma_i)||^2 / (2 c^2)),  "
            "lambda = 1/(sigma_{i+1} - sigma_i)",
    domains=_DOMAINS,
)
def latent_consistency_loss(pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor,
                            sigma_next: torch.Tensor, *, metric: str = "cauchy", c: float | None = None,
                            weighting: str = "ict", sample_weight: torch.Tensor | None = None,
                            reduction: str = "mean") -> torch.Tensor:
    """Latent consistency training: iCT with the Cauchy distance, robust to the impulsive outliers of
    latent (autoencoder) spaces.

    .. math:: \\ell = \\lambda(\\sigma_i)\\,\\log\\Big(1 + \\frac{\\|f_\\theta(x_{i+1}, \\sigma_{i+1}) -
              \\mathrm{sg}\\,f_\\theta(x_i, \\sigma_i)\\|_2^2}{2c^2}\\Big)

    The inputs and the stop-gradient are those of :func:`consistency_training_loss`; only the default
    metric differs. The Cauchy distance grows logarithmically, so an outlier's gradient decays as
    ``1/||a - b||`` where the pseudo-Huber's stays bounded away from 0 (the paper's argument). ``c``
    defaults to iCT's ``0.00054 sqrt(d)``; the paper's adaptive scaling-c schedule, its early-step
    diffusion loss and OT coupling belong to the training loop (pass ``c=`` per step). The Cauchy form
    ``log(1 + r^2/(2 c^2))`` follows Barron's robust-loss family at alpha = 0 as the paper states; no
    authors' code is available to confirm the constant (the released repository holds only a README).

    Paper: Dao, Doan, Liu, Le, Metaxas, "Improved Training Technique for Latent Consistency Models",
    ICLR 2025, arXiv:2502.01441.
    """
    return _consistency(pred, target, sigma, sigma_next, metric, c, weighting, sample_weight, reduction)


ConsistencyTrainingLoss = consistency_training_loss.Module
LatentConsistencyLoss = latent_consistency_loss.Module
