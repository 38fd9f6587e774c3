"""PFGM++ (Xu et al. 2023): the perturbation-based objective of Poisson flow generative models in
``N + D`` dimensions, with the heavy-tailed perturbation kernel that interpolates PFGM (D = 1) and
diffusion (D -> inf)."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE
from ._common import check_pair, col, per_sample_mean
from ._inputs import DENOISER, denoiser_example

__all__ = ["pfgmpp_loss", "PfgmppLoss", "pfgmpp_perturbation", "edm_weight"]

PFGMPP_PAPER = Paper("PFGM++: Unlocking the Potential of Physics-Inspired Generative Models", 2023, "2302.04265",
                     "Xu, Liu, Tian, Tong, Tegmark, Jaakkola")


def edm_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM's loss weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Karras et al. 2022)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def pfgmpp_perturbation(x: torch.Tensor, sigma: torch.Tensor, D: float, *,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw of the PFGM++ perturbation kernel ``p_r(y | x) ∝ 1/(||y - x||^2 + r^2)^((N+D)/2)`` with the
    aligned radius ``r = sigma sqrt(D)`` (Xu et al. 2023, Eq. 4 and Section 4), for ``x (B, ...)`` with
    ``N`` entries per sample and ``sigma (B,)``.

    The authors draw ``||y - x|| = r sqrt(b / (1 - b))``, ``b ~ Beta(N/2, D/2)``, times a uniform direction.
    With ``g ~ N(0, I_N)`` and ``h ~ N(0, I_D)``, ``b / (1 - b) = ||g||^2 / ||h||^2`` and ``g/||g||`` is uniform
    and independent of ``||g||``, so the draw is ``sigma sqrt(D) g / ||h||``: normal draws only (reproducible
    with ``generator``). As ``D -> inf``, ``sqrt(D) / ||h|| -> 1`` and the kernel becomes ``N(0, sigma^2 I)``
    (diffusion). ``D`` must exceed 2 for the kernel's second moment, ``sigma^2 N D / (D - 2)``.
    """
    if not D > 0:
        raise fail("D", "a positive number of augmented dimensions", repr(D))
    n = x.shape[0]
    g = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    d = int(D)
    if d == D and d <= 1 << 16:
        h2 = torch.randn(n, d, generator=generator, dtype=x.dtype, device=x.device).square().sum(-1)
    else:  # chi-square with D degrees of freedom: 2 Gamma(D/2), from a standard normal by Wilson-Hilferty
        z = torch.randn(n, generator=generator, dtype=x.dtype, device=x.device)
        k = 2.0 / (9.0 * D)
        h2 = D * (1 - k + z * math.sqrt(k)).clamp_min(1e-12) ** 3
    return col(sigma * torch.sqrt(D / h2), x) * g


@objective(
    "pfgmpp_loss", seed=True, family="generative", input_kind=DENOISER, example=denoiser_example,
    paper=PFGMPP_PAPER, properties={"nonnegative"},
    formula="L = lambda(sigma) mean_j (D_theta(y, sigma)_j - x_j)^2,  y = x + sigma sqrt(D) g / ||h||,  "
            "lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2",
    domains={"sigma_data": POSITIVE},
)
def pfgmpp_loss(denoised: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, *, sigma_data: float = 0.5,
                sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """PFGM++'s perturbation-based objective: denoise a draw of the ``N + D``-dimensional Poisson kernel.

    .. math:: \\ell = \\lambda(\\sigma)\\,\\frac{1}{N}\\big\\|D_\\theta(y, \\sigma) - x\\big\\|^2,\\qquad
              y = x + \\sigma\\sqrt{D}\\,\\frac{g}{\\|h\\|},\\; g \\sim \\mathcal N(0, I_N),\\; h \\sim \\mathcal N(0, I_D)

    ``denoised (B, ...)`` is the network's estimate of the clean ``x`` from ``y = x +`` :func:`pfgmpp_perturbation`
    ``(x, sigma, D)`` at the noise level ``sigma (B,)``, with ``r = sigma sqrt(D)`` (the paper's alignment
    with diffusion, so EDM's ``sigma`` schedule, ``lambda(sigma)`` and preconditioning carry over). The
    paper's unbiased objective (its Eq. 6 with the x-prediction of Section 4) replaces PFGM's large-batch
    field targets with the clean sample itself, as denoising score matching does. The loss draws
    nothing: the caller perturbs with its own generator (the kernel depends on ``D``, the loss does not),
    so it is deterministic given its inputs. Per sample, the mean over the ``N`` entries; ``sigma_data``
    defaults to EDM's 0.5. ``D -> inf`` is EDM's loss on Gaussian perturbations.

    Paper: Xu, Liu, Tian, Tong, Tegmark, Jaakkola, "PFGM++: Unlocking the Potential of Physics-Inspired
    Generative Models", ICML 2023, arXiv:2302.04265.
    """
    check_pair("denoised", denoised, "x", x, "sigma", sigma)
    per = per_sample_mean((denoised - x) ** 2) * edm_weight(sigma, sigma_data)
    return finish(per, reduction, sample_weight=sample_weight)


PfgmppLoss = pfgmpp_loss.Module
