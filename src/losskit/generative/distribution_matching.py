"""f-distill (Xu, Nie, Vahdat 2025): one-step generator distillation by f-divergence distribution matching.
The weighting function comes from the divergences family's f-divergence generators."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG
from ..divergences.generators import FGenerator, _GeneratorDomain, get_generator
from ._common import check_pair, col
from ._inputs import DISTRIBUTION_MATCHING, distribution_matching_example

__all__ = ["f_distill_loss", "FDistillLoss", "f_distill_weight"]

FDISTILL_PAPER = Paper("One-step Diffusion Models with f-Divergence Distribution Matching", 2025, "2502.15681",
                       "Xu, Nie, Vahdat")

#: h(r) = f''(r) r^2 in closed form in s = log r, for the named generators of losskit.divergences (whose
#: f' in log space is f_prime(name, s)): h(e^s) = e^s d/ds f'(e^s).
_H = {
    "reverse_kl": lambda s: torch.ones_like(s),                       # f' = -e^-s
    "kl": lambda s: s.exp(),                                          # f' = s + 1
    "js": lambda s: 0.5 * torch.sigmoid(s),                           # f' = (s - softplus(s) + log 2) / 2
    "hellinger": lambda s: 0.5 * (0.5 * s).exp(),                     # f' = 1 - e^(-s/2)
    "pearson": lambda s: 2 * (2 * s).exp(),                           # f' = 2 (e^s - 1)
    "neyman": lambda s: 2 * (-s).exp(),                               # f' = 1 - e^(-2s)
    "jeffreys": lambda s: s.exp() + 1,                                # f' = s + 1 - e^-s
}


class _SmoothGenerator(_GeneratorDomain):
    """A generator with a second derivative: tv (f'' = 0 almost everywhere) is refused."""

    def contains(self, value, arguments=None) -> bool:
        return super().contains(value, arguments) and not (
            isinstance(value, str) and get_generator(value).name == "tv")

    @property
    def description(self) -> str:  # type: ignore[override]
        return "an FGenerator with f_prime_log, or one of " + ", ".join(sorted(_H))

    def invalid(self) -> list:
        return ["no-such-generator", "tv", 3]

    def boundaries(self) -> list:
        return sorted(_H)


def f_distill_weight(log_ratio: torch.Tensor, divergence: str | FGenerator = "reverse_kl") -> torch.Tensor:
    """f-distill's weighting ``h(r) = f''(r) r^2`` at ``r = exp(log_ratio)``, ``r = p_teacher / q_student``.

    Named generators (those of :mod:`losskit.divergences`) in closed form: ``reverse_kl`` 1 (variational
    score distillation), ``kl`` (forward) ``r``, ``js`` ``r / (2 (1 + r))``... as ``sigmoid(log r) / 2``
    (losskit's ``js`` is half the f-GAN generator), ``hellinger`` ``sqrt(r) / 2``, ``pearson`` ``2 r^2``,
    ``neyman`` ``2 / r``, ``jeffreys`` ``r + 1``. A custom :class:`~losskit.divergences.FGenerator`:
    ``h(e^s) = e^s d/ds f'(e^s)`` by forward-mode differentiation of its ``f_prime_log``.
    """
    if isinstance(divergence, FGenerator):
        if divergence.f_prime_log is None:
            raise fail("divergence", "an FGenerator with f_prime_log", divergence.name)
        s = log_ratio.detach()
        _, d = torch.func.jvp(divergence.f_prime_log, (s,), (torch.ones_like(s),))
        return s.exp() * d
    name = get_generator(divergence, "divergence").name
    if name not in _H:
        raise fail("divergence", "a generator with a second derivative (" + ", ".join(sorted(_H)) + ")", repr(name))
    return _H[name](log_ratio)


@objective(
    "f_distill_loss", seed=True, family="generative", input_kind=DISTRIBUTION_MATCHING,
    example=distribution_matching_example, paper=FDISTILL_PAPER, properties={"nonnegative"},
    formula="L = 1/2 ||x_t - sg(x_t - h(r) (s_fake(x_t) - s_real(x_t)))||^2,  h(r) = f''(r) r^2,  "
            "r = p_t / q_t = exp(log_ratio);  grad_x L = h(r) (s_fake - s_real)",
    domains={"divergence": _SmoothGenerator(), "normalize": FLAG}, gradcheck=False,
    skip_reasons={"gradcheck": "a surrogate: its gradient is the f-divergence's (h (s_fake - s_real)), not the "
                               "derivative of its value (the scores are constants); tests/test_generative.py checks "
                               "the gradient against a quadrature of D_f"},
)
def f_distill_loss(x_t: torch.Tensor, real_score: torch.Tensor, fake_score: torch.Tensor, log_ratio: torch.Tensor, *,
                   divergence: str | FGenerator = "reverse_kl", normalize: bool = False,
                   sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """f-distill: move the student's diffused samples along the teacher–student score difference, weighted
    by ``h(r) = f''(r) r^2`` of the density ratio, the gradient of ``D_f(p_t || q_t)``.

    .. math:: \\nabla_\\theta D_f(p_t\\,\\|\\,q_{\\theta,t}) =
              \\mathbb E\\Big[h(r(x_t))\\,\\big(\\nabla\\log q_{\\theta,t}(x_t) - \\nabla\\log p_t(x_t)\\big)^\\top
              \\frac{\\partial x_t}{\\partial\\theta}\\Big],\\qquad h(r) = f''(r)\\,r^2,\\; r = p_t / q_{\\theta,t}

    ``x_t (N, ...)`` are the one-step generator's samples diffused to time ``t`` (``alpha_t G(z) +
    sigma_t eps``, differentiable in the generator's parameters), ``real_score`` the teacher's score at
    ``x_t``, ``fake_score`` the score of the student's distribution (an auxiliary network trained by
    denoising score matching on the student's samples), ``log_ratio (N,)`` an estimate of
    ``log p_t(x_t) / q_t(x_t)`` (the paper: the logit of a discriminator on the teacher's features). The
    scores and the ratio are treated as constants (detached): the loss is the surrogate
    ``1/2 ||x_t - sg(x_t - g)||^2`` with ``g = h (s_fake - s_real)``, whose gradient in ``x_t`` is exactly
    ``g`` and whose value ``1/2 ||g||^2`` is 0 when the student's diffused distribution matches the
    teacher's. ``divergence``: a generator of :mod:`losskit.divergences` (default ``'reverse_kl'``:
    ``h = 1``, variational score distillation / DMD; ``'kl'`` forward KL, ``'js'`` Jensen–Shannon, the
    paper's best, ``'hellinger'``, ``'pearson'``, ``'neyman'``, ``'jeffreys'``, or an ``FGenerator`` with
    ``f_prime_log``); :func:`f_distill_weight` gives ``h``. ``normalize=True`` divides ``h`` by its batch
    mean (the paper normalises the weights to tame their variance; its two-stage scheme is not
    reproduced, and the normalised loss couples the batch). Weight the noise levels with
    ``sample_weight``. The loss draws nothing; the caller's generator draws ``z``, ``t`` and ``eps``.

    Paper: Xu, Nie, Vahdat, "One-step Diffusion Models with f-Divergence Distribution Matching", 2025,
    arXiv:2502.15681.
    """
    check_pair("x_t", x_t, "real_score", real_score, "log_ratio", log_ratio, ("fake_score", fake_score))
    h = f_distill_weight(log_ratio.detach(), divergence)
    if normalize:
        h = h / h.mean().clamp_min(torch.finfo(h.dtype).tiny)
    g = col(h, x_t) * (fake_score - real_score).detach()
    per = 0.5 * (x_t - (x_t - g).detach()).reshape(x_t.shape[0], -1).square().sum(-1)
    return finish(per, reduction, sample_weight=sample_weight)


FDistillLoss = f_distill_loss.Module
