"""The one abstraction of the generative family: a Gaussian probability path, a model prediction
parameterisation, and a weighting.

A **path** ``(alpha_t, sigma_t)`` joins noise ``x0 ~ N(0, I)`` to data ``x1``:

.. math:: x_t = \\alpha_t\\,x_1 + \\sigma_t\\,x_0, \\qquad
          u_t = \\dot\\alpha_t\\,x_1 + \\dot\\sigma_t\\,x_0 \\;\\text{(the conditional velocity)}

with ``t`` in [0, 1] and ``t = 1`` the data (the flow-matching convention of Lipman et al. 2023 and of
``facebookresearch/flow_matching``). Diffusion models are paths too: ``'vp'`` is the variance-preserving
SDE's path, ``'cosine'`` the cosine schedule. The noise-level form used by EDM, consistency models and
PFGM++ (``x_sigma = x + sigma z``) is the variance-exploding path with ``t`` the noise level ``sigma``
itself; those objectives take ``sigma`` directly.

A **prediction** names what the network outputs at ``x_t``: ``'velocity'`` (``u_t``), ``'data'`` (``x1``,
the denoiser) or ``'noise'`` (``x0``, epsilon). Each is an affine function of the others given ``x_t``
(:func:`convert`), so one network can be trained in one parameterisation and sampled in another.

A **weighting** ``w(t)`` multiplies the per-sample regression loss: ``'uniform'``, ``'snr'``
(``alpha_t^2 / sigma_t^2``) or ``'min_snr'`` (``min(snr, 5)``, Hang et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._core import fail

__all__ = ["GaussianPath", "PATHS", "PREDICTIONS", "WEIGHTINGS", "get_path", "interpolate",
           "conditional_target", "convert", "path_weight"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class GaussianPath:
    """``x_t = alpha(t) x1 + sigma(t) x0`` with the time derivatives ``d_alpha``, ``d_sigma``."""

    name: str
    alpha: Callable[[Tensor], Tensor]
    sigma: Callable[[Tensor], Tensor]
    d_alpha: Callable[[Tensor], Tensor]
    d_sigma: Callable[[Tensor], Tensor]
    description: str = ""

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)


def _vp(beta_min: float = 0.1, beta_max: float = 20.0) -> GaussianPath:
    b, B = beta_min, beta_max

    def T(t):
        return 0.5 * (1 - t) ** 2 * (B - b) + (1 - t) * b

    def dT(t):
        return -(1 - t) * (B - b) - b

    return GaussianPath(
        "vp", alpha=lambda t: torch.exp(-0.5 * T(t)), sigma=lambda t: torch.sqrt(-torch.expm1(-T(t))),
        d_alpha=lambda t: -0.5 * dT(t) * torch.exp(-0.5 * T(t)),
        d_sigma=lambda t: 0.5 * dT(t) * torch.exp(-T(t)) / torch.sqrt(-torch.expm1(-T(t))),
        description="variance preserving (Song et al. 2021), beta in [0.1, 20]; sigma_1 > 0")


#: the named paths (``path=`` of the objectives)
PATHS: dict[str, GaussianPath] = {
    "cond_ot": GaussianPath("cond_ot", alpha=lambda t: t, sigma=lambda t: 1 - t,
                            d_alpha=torch.ones_like, d_sigma=lambda t: -torch.ones_like(t),
                            description="alpha_t = t, sigma_t = 1 - t: conditional optimal transport, the "
                                        "kinetic-optimal Gaussian path as n/sqrt(d) -> 0 (Shaul et al. 2023)"),
    "cosine": GaussianPath("cosine", alpha=lambda t: torch.sin(math.pi / 2 * t),
                           sigma=lambda t: torch.cos(math.pi / 2 * t),
                           d_alpha=lambda t: math.pi / 2 * torch.cos(math.pi / 2 * t),
                           d_sigma=lambda t: -math.pi / 2 * torch.sin(math.pi / 2 * t),
                           description="alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2) (variance preserving)"),
    "linear_vp": GaussianPath("linear_vp", alpha=lambda t: t, sigma=lambda t: torch.sqrt(1 - t * t),
                              d_alpha=torch.ones_like, d_sigma=lambda t: -t / torch.sqrt(1 - t * t),
                              description="alpha_t = t, sigma_t = sqrt(1 - t^2); t < 1"),
    "vp": _vp(),
}

PREDICTIONS = ("velocity", "data", "noise")
WEIGHTINGS = ("uniform", "snr", "min_snr")
MIN_SNR_GAMMA = 5.0


def get_path(path: str | GaussianPath) -> GaussianPath:
    if isinstance(path, GaussianPath):
        return path
    try:
        return PATHS[path]
    except KeyError:
        raise fail("path", f"one of {sorted(PATHS)} or a GaussianPath", repr(path)) from None


def _col(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


def interpolate(x0: Tensor, x1: Tensor, t: Tensor, path: str | GaussianPath = "cond_ot") -> Tensor:
    """``x_t = alpha_t x1 + sigma_t x0`` (``t`` of shape ``(N,)``, broadcast over the other dims)."""
    a, s, _, _ = get_path(path).coefficients(t)
    return _col(a, x1) * x1 + _col(s, x0) * x0


def conditional_target(x0: Tensor, x1: Tensor, t: Tensor, path: str | GaussianPath = "cond_ot",
                       prediction: str = "velocity") -> Tensor:
    """What a network of the given ``prediction`` should output at ``x_t`` for this pair ``(x0, x1)``."""
    if prediction == "data":
        return x1
    if prediction == "noise":
        return x0
    if prediction == "velocity":
        _, _, da, ds = get_path(path).coefficients(t)
        return _col(da, x1) * x1 + _col(ds, x0) * x0
    raise fail("prediction", f"one of {PREDICTIONS}", repr(prediction))


def convert(output: Tensor, x_t: Tensor, t: Tensor, *, path: str | GaussianPath = "cond_ot",
            source: str = "velocity", target: str = "data") -> Tensor:
    """A network output in one parameterisation, re-expressed in another, given ``x_t``.

    Solves ``x_t = alpha x1 + sigma x0`` together with the output's own relation
    (``u = alpha' x1 + sigma' x0``, ``x1`` or ``x0``) for ``(x1, x0)``, then forms ``target``.
    """
    for name, v in (("source", source), ("target", target)):
        if v not in PREDICTIONS:
            raise fail(name, f"one of {PREDICTIONS}", repr(v))
    a, s, da, ds = (_col(c, x_t) for c in get_path(path).coefficients(t))
    if source == "data":
        x1, x0 = output, (x_t - a * output) / s
    elif source == "noise":
        x1, x0 = (x_t - s * output) / a, output
    else:  # velocity: [[a, s], [da, ds]] [x1, x0] = [x_t, u]
        det = a * ds - s * da
        x1 = (ds * x_t - s * output) / det
        x0 = (a * output - da * x_t) / det
    if target == "data":
        return x1
    if target == "noise":
        return x0
    return da * x1 + ds * x0


def path_weight(t: Tensor, path: str | GaussianPath, weighting: str) -> Tensor:
    """``w(t)``: 1, the signal-to-noise ratio ``alpha^2 / sigma^2`` or ``min(snr, 5)``."""
    if weighting == "uniform":
        return torch.ones_like(t)
    a, s, _, _ = get_path(path).coefficients(t)
    snr = (a / s) ** 2
    if weighting == "snr":
        return snr
    if weighting == "min_snr":
        return snr.clamp(max=MIN_SNR_GAMMA)
    raise fail("weighting", f"one of {WEIGHTINGS}", repr(weighting))
