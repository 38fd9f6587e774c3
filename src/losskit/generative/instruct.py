"""The "Instruct" family of one-step / few-step distillation objectives: Uni-Instruct (the diffusion
expansion of an f-divergence, continuous diffusion) and DiDi-Instruct (the integral KL of masked discrete
diffusion, by policy gradient). The f-divergence weights come from the divergences family's generators
through :func:`~losskit.generative.f_distill_weight`."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT, FLAG, NONNEGATIVE, Maybe
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating
from .._core.values import Values
from ..divergences.generators import FGenerator, get_generator
from ._common import check_pair
from .distribution_matching import _SmoothGenerator, f_distill_weight

__all__ = ["uni_instruct_loss", "UniInstructLoss", "uni_instruct_weights", "didi_instruct_loss",
           "DiDiInstructLoss"]

UNI_PAPER = Paper("Uni-Instruct: One-step Diffusion Model through Unified Diffusion Divergence Instruction", 2025,
                  "2505.20755", "Wang, Bai, Zhang, Zhang, Luo, Sun")
DIDI_PAPER = Paper("Ultra-Fast Language Generation via Discrete Diffusion Divergence Instruct", 2025, "2509.25035",
                   "Zheng, Liu, Kong, Jiang, Hu, Luo, Deng, Lin")

#: generators whose h is affine in r (no Diff-Instruct correction)
_AFFINE = frozenset({"reverse_kl", "kl", "jeffreys"})

#: c(r) = -r^2 h''(r) for h(r) = r^2 f''(r) of the named generators, as functions of s = log r
_C = {
    "reverse_kl": lambda s: torch.zeros_like(s),                      # h = 1
    "kl": lambda s: torch.zeros_like(s),                              # h = r
    "jeffreys": lambda s: torch.zeros_like(s),                        # h = r + 1
    "js": lambda s: torch.sigmoid(s) ** 2 * torch.sigmoid(-s),        # h = r / (2 (1 + r)): r^2 / (1 + r)^3
    "hellinger": lambda s: (0.5 * s).exp() / 8,                       # h = sqrt(r) / 2
    "pearson": lambda s: -4 * (2 * s).exp(),                          # h = 2 r^2
    "neyman": lambda s: -4 * (-s).exp(),                              # h = 2 / r
}


def uni_instruct_weights(log_ratio: torch.Tensor, divergence: str | FGenerator = "reverse_kl"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uni-Instruct's two weights at ``r = exp(log_ratio)``: ``h(r) = r^2 f''(r)`` on the score-implicit-matching
    (SiD / SIM) term and ``c(r) = -r^2 h''(r)`` on the Diff-Instruct correction.

    ``c`` vanishes where ``h`` is affine in ``r`` (reverse KL, forward KL, Jeffreys and their mixtures, e.g. the
    paper's JKL ``0.4 KL + 0.6 RKL``). Named generators in closed form; a custom
    :class:`~losskit.divergences.FGenerator` with ``f_prime_log`` by forward-mode differentiation:
    with ``H(s) = h(e^s)``, ``r^2 h''(r) = H''(s) - H'(s)``.
    """
    s = log_ratio.detach()
    h = f_distill_weight(s, divergence)
    if isinstance(divergence, FGenerator):
        fpl = divergence.f_prime_log

        def H(u):  # h(e^u) = e^u d/du f'(e^u)
            return u.exp() * torch.func.jvp(fpl, (u,), (torch.ones_like(u),))[1]

        def dH(u):
            return torch.func.jvp(H, (u,), (torch.ones_like(u),))[1]

        d1, d2 = torch.func.jvp(dH, (s,), (torch.ones_like(s),))
        return h, -(d2 - d1)
    return h, _C[get_generator(divergence, "divergence").name](s)


# ------------------------------------------------------------------------------------ Uni-Instruct
def _uni_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    n, d = 6, 4
    x0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    real = 0.8 * x0 + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    fake = 0.8 * x0 + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    log_ratio = 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"x0": x0.to(dtype), "real_denoised": real.to(dtype), "fake_denoised": fake.to(dtype),
                    "log_ratio": log_ratio.to(dtype)}, grad=("x0",))


def _uni_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    nan = i["log_ratio"].detach().clone()
    nan[0] = float("nan")
    inf = i["fake_denoised"].detach().clone()
    inf[0, 0] = float("inf")
    return [
        BadInput("real_denoised of another shape", ex.replace({"real_denoised": i["real_denoised"][:, :-1]}),
                 "real_denoised"),
        BadInput("fake_denoised of another shape", ex.replace({"fake_denoised": i["fake_denoised"][:, :-1]}),
                 "fake_denoised"),
        BadInput("log_ratio of another batch size", ex.replace({"log_ratio": i["log_ratio"][:-1]}), "log_ratio"),
        BadInput("NaN log_ratio", ex.replace({"log_ratio": nan}), "log_ratio"),
        BadInput("+inf in fake_denoised", ex.replace({"fake_denoised": inf}), "fake_denoised"),
        BadInput("integer x0", ex.replace({"x0": i["x0"].round().long()}), "x0"),
    ]


UNI_INSTRUCT = InputKind(
    "generator output + denoisers", "the one-step generator's output x0 (N, ...), the teacher's and the fake "
    "(student-score) network's denoised predictions at x_t = x0 + sigma eps (same shape), log density ratios "
    "log p_t/q_t (N,)", bad_inputs=_uni_bad, extreme=scale_input("x0"))


@objective(
    "uni_instruct_loss", seed=True, family="generative", input_kind=UNI_INSTRUCT, example=_uni_example,
    paper=UNI_PAPER,
    formula="l = h(r) sum_j (D_p - D_q)_j ((D_p - x0)_j - alpha (D_p - D_q)_j) / sg(mean|x0 - D_p|) "
            "+ c(r) sum_j sg((D_p - D_q)_j ||D_p - D_q||) x0_j,  h = r^2 f''(r),  c = -r^2 h''(r),  r = exp(log_ratio)",
    domains={"divergence": _SmoothGenerator(), "alpha": NONNEGATIVE, "normalize": FLAG},
    gradcheck=False,
    skip_reasons={"gradcheck": "a surrogate: SiD's normaliser mean|x0 - D_p| and the f-weights are stop-gradient "
                               "constants, so the gradient in x0 is not the derivative of the value; "
                               "tests/test_generative_instruct.py gradchecks the denoiser inputs and compares "
                               "with the authors' code"},
)
def uni_instruct_loss(x0: torch.Tensor, real_denoised: torch.Tensor, fake_denoised: torch.Tensor,
                      log_ratio: torch.Tensor, *, divergence: str | FGenerator = "reverse_kl", alpha: float = 1.0,
                      normalize: bool = False, sample_weight: torch.Tensor | None = None,
                      reduction: str = "mean") -> torch.Tensor:
    """Uni-Instruct: the generator loss whose gradient minimises the diffusion expansion of an f-divergence
    between the teacher's and the one-step student's noisy marginals, a score-implicit-matching (SiD / SIM)
    term weighted by ``h(r)`` plus a Diff-Instruct correction weighted by ``c(r)``.

    .. math:: \\ell = h(r)\\,\\frac{\\langle D_p - D_q,\\; (D_p - x_0) - \\alpha (D_p - D_q)\\rangle}
              {\\mathrm{sg}\\,\\overline{|x_0 - D_p|}} \\;+\\; c(r)\\,\\big\\langle \\mathrm{sg}\\big[(D_p - D_q)
              \\,\\|D_p - D_q\\|\\big],\\; x_0\\big\\rangle,\\qquad h(r) = r^2 f''(r),\\; c(r) = -r^2 h''(r)

    ``x0 (N, ...)`` is the one-step generator's output ``G_theta(z)`` (the paper's ``x_0``, differentiable),
    ``real_denoised`` the teacher's denoiser ``D_p(x_t, sigma)`` and ``fake_denoised`` the fake-score network's
    ``D_q(x_t, sigma)`` at ``x_t = x0 + sigma eps``, both evaluated on the differentiable ``x_t`` (the fake
    network's parameters frozen for this step), ``log_ratio (N,)`` an estimate of ``log p_t(x_t) / q_t(x_t)``
    (a discriminator's logit; detached). The denominator ``mean |x0 - D_p|`` over each sample's entries is
    SiD's detached normaliser. ``divergence`` is a generator of :mod:`losskit.divergences`
    (:func:`uni_instruct_weights`): ``'reverse_kl'`` (default, ``h = 1``, ``c = 0``: SiD's loss with
    ``alpha``; ``alpha=1``, the default, is the form Uni-Instruct's code trains with, SiD's paper uses 1.2,
    and ``alpha=0.5`` is the one whose expected gradient, with the exact fake denoiser, is exactly
    ``sigma^4 / 2`` times that of the Fisher divergence ``E_q ||s_p - s_q||^2`` at the noise level: checked on
    Gaussians, where 1 and 1.2 are not), ``'kl'`` (forward
    KL, ``h = r``), ``'jeffreys'``; the paper's best, JKL ``0.4 KL + 0.6 RKL``, is an ``FGenerator`` with
    ``f_prime_log = lambda s: 0.4 (s + 1) - 0.6 exp(-s)``; ``'js'``, ``'pearson'`` (the paper's chi^2),
    ``'hellinger'``, ``'neyman'`` add the correction. ``normalize=True`` divides ``h`` (and ``c``) by the
    batch mean of ``h`` (the authors' code divides the forward-KL ratios by their batch sum; the normalised
    loss couples the batch). Weight noise levels with ``sample_weight``. The loss draws nothing.

    Where losskit differs from the authors' code (a-little-hoof/Uni_Instruct) on purpose: the norm in the
    correction is each sample's (the code takes the norm of the whole batch tensor, which couples the
    samples and grows with the batch); ``js`` is losskit's Jensen–Shannon generator, half the code's weights;
    the ratio is the caller's ``log_ratio`` (the code maps the GAN loss value ``l`` to ``-l / (1 - l)``);
    the GAN term is the training loop's. The value is a surrogate (not the divergence): its gradient is the
    one the authors' code trains with. For a non-constant ``h`` that gradient, with the ratio held fixed,
    is not the exact gradient of ``E_q[h(r) ||s_p - s_q||^2]`` at a fixed noise level (checked on
    Gaussians); losskit reproduces the authors' loss and claims no more than it.

    Paper: Wang, Bai, Zhang, Zhang, Luo, Sun, "Uni-Instruct: One-step Diffusion Model through Unified
    Diffusion Divergence Instruction", NeurIPS 2025, arXiv:2505.20755.
    """
    check_pair("x0", x0, "real_denoised", real_denoised, "log_ratio", log_ratio, ("fake_denoised", fake_denoised))
    n = x0.shape[0]
    h, c = uni_instruct_weights(log_ratio, divergence)
    if normalize:
        m = h.mean().clamp_min(torch.finfo(h.dtype).tiny)
        h, c = h / m, c / m
    diff = (real_denoised - fake_denoised).reshape(n, -1)
    wf = (x0 - real_denoised).detach().reshape(n, -1).abs().mean(-1).clamp_min(1e-5)
    sim = (diff * ((real_denoised - x0).reshape(n, -1) - alpha * diff)).sum(-1) / wf
    per = h * sim
    if isinstance(divergence, FGenerator) or get_generator(divergence, "divergence").name not in _AFFINE:
        d = diff.detach()
        di = (d * d.norm(dim=-1, keepdim=True) * x0.reshape(n, -1)).sum(-1)
        per = per + c * di
    return finish(per, reduction, sample_weight=sample_weight)


UniInstructLoss = uni_instruct_loss.Module


# ------------------------------------------------------------------------------------ DiDi-Instruct
def _didi_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    n = 8
    log_prob = -5.0 - 3.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    log_ratio = 0.7 * torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"log_prob": log_prob.to(dtype), "log_ratio": log_ratio.to(dtype)}, grad=("log_prob",))


def _didi_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    nan = i["log_ratio"].detach().clone()
    nan[0] = float("nan")
    pos = i["log_prob"].detach().clone()
    pos[0] = 1.0
    return [
        BadInput("log_ratio of another batch size", ex.replace({"log_ratio": i["log_ratio"][:-1]}), "log_ratio"),
        BadInput("log_prob with a feature axis", ex.replace({"log_prob": i["log_prob"][:, None]}), "log_prob"),
        BadInput("NaN log_ratio", ex.replace({"log_ratio": nan}), "log_ratio"),
        BadInput("positive log_prob", ex.replace({"log_prob": pos}), "log_prob"),
        BadInput("integer log_ratio", ex.replace({"log_ratio": i["log_ratio"].round().long()}), "log_ratio"),
    ]


_LOGPROB = Values(hi=1e-6, description="log-probabilities <= 0")


DIDI = InputKind("student log-likelihoods + density ratios", "the student's log-probabilities log p_nu(x) (N,) of "
                 "its own generated sequences (differentiable), the discriminator's log density ratios "
                 "log q_nu(z_t)/q_theta(z_t) (N,) at their corrupted states", bad_inputs=_didi_bad,
                 extreme=scale_input("log_ratio", 1e3), values={"log_prob": _LOGPROB})


def _group_normalize(r: torch.Tensor, group_size: int | None) -> torch.Tensor:
    n = r.shape[0]
    g = n if group_size is None else group_size
    if n % g:
        raise fail("group_size", f"a divisor of the batch size {n}", repr(group_size))
    rg = r.reshape(n // g, g)
    if g == 1:
        return torch.zeros_like(r)
    a = (rg - rg.mean(1, keepdim=True)) / (rg.std(1, keepdim=True) + 1e-8)
    return a.reshape(n)


@objective(
    "didi_instruct_loss", seed=True, family="generative", input_kind=DIDI, example=_didi_example, paper=DIDI_PAPER,
    per_sample=False, gradcheck=False,
    skip_reasons={"gradcheck": "a policy-gradient surrogate: the log ratios (rewards) are constants, so the "
                               "gradient is the score-function estimator, not the derivative of the value; "
                               "tests/test_generative_instruct.py checks it against the exact gradient of the "
                               "integral KL by enumeration"},
    formula="l_i = sg(A_i) log p_nu(x_i),  A = log_ratio (normalize=False) or A_i = -(R_i - mean_G R) / std_G R, "
            "R = -log_ratio (grouped reward normalisation)",
    domains={"normalize": FLAG, "group_size": Maybe(COUNT)},
)
def didi_instruct_loss(log_prob: torch.Tensor, log_ratio: torch.Tensor, *, normalize: bool = True,
                       group_size: int | None = 4, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """DiDi-Instruct: the policy-gradient surrogate of the integral KL divergence between a few-step
    student's and the teacher's masked-diffusion marginals.

    .. math:: \\mathcal D_{IKL} = \\int_0^1 \\omega(t)\\,\\mathrm{KL}\\big(q_\\nu(\\cdot, t)\\,\\|\\,q_\\theta(\\cdot, t)\\big)\\,dt,
              \\qquad \\nabla_\\nu \\mathcal D_{IKL} = \\mathbb E_{t,\\,x \\sim p_\\nu,\\, z_t \\sim Q_t(\\cdot|x)}
              \\Big[\\omega(t) \\log\\frac{q_\\nu(z_t, t)}{q_\\theta(z_t, t)}\\,\\nabla_\\nu \\log p_\\nu(x)\\Big]

    (the paper's score-function identity: the term from differentiating the log ratio itself has
    expectation 0). ``log_prob (N,)`` is the student's log-probability of the sequence ``x`` it generated
    (the sum of its sampling steps' log-probabilities, differentiable), ``log_ratio (N,)`` the
    discriminator's estimate of ``log q_nu(z_t, t) / q_theta(z_t, t)`` at ``z_t``, ``x`` masked to time ``t``
    (``omega(t)`` multiplied in by the caller; detached). With ``normalize=False`` the loss is
    ``sg(log_ratio) * log_prob``, whose gradient is exactly the estimator above. With ``normalize=True``
    (default, the paper's grouped reward normalisation) the reward ``R = -log_ratio`` is standardised within
    consecutive groups of ``group_size`` samples (the G samples drawn per prompt / noise, laid out group after
    group; default 4, the released config's ``num_samples_per_prompt``; ``None``: the whole batch is one group), ``A = (R - mean R) / (std R + 1e-8)``, and the loss is ``-sg(A) log_prob``
    (batch-coupled). ``sample_weight`` weights the samples (e.g. ``omega(t)`` where it is not folded in).

    Not built: the intermediate-state matching regulariser, the reward-guided ancestral sampler (inference)
    and the discriminator's own loss (a binary classifier of student vs teacher corrupted states, e.g.
    ``F.binary_cross_entropy_with_logits``). The released code (haoyangzheng-ai/didi-instruct) leaves the
    training step, the time sampler and the regulariser empty, so the weighting ``omega(t)`` and ``G`` are the
    caller's.

    Paper: Zheng, Liu, Kong, Jiang, Hu, Luo, Deng, Lin, "Ultra-Fast Language Generation via Discrete
    Diffusion Divergence Instruct", 2025, arXiv:2509.25035.
    """
    check_floating("log_prob", log_prob)
    check_floating("log_ratio", log_ratio)
    if log_prob.dim() != 1:
        raise fail("log_prob", "one value per sequence, shape (N,)", f"shape {tuple(log_prob.shape)}")
    if tuple(log_ratio.shape) != tuple(log_prob.shape):
        raise fail("log_ratio", f"the shape of log_prob {tuple(log_prob.shape)}", f"shape {tuple(log_ratio.shape)}")
    r = log_ratio.detach()
    adv = _group_normalize(r, group_size) if normalize else r  # -A, A the standardised reward -log_ratio
    return finish(adv * log_prob, reduction, sample_weight=sample_weight)


DiDiInstructLoss = didi_instruct_loss.Module
