"""Energy-based models: cooperative diffusion recovery likelihood (CDRL: the recovery-likelihood EBM loss and
its initializer's loss), and the compositional-optimisation negative log-likelihood of an unnormalised
model (a moving-average estimate of the partition function, kept in :class:`PartitionEstimate`).

``f`` is the model's unnormalised log-density (``p_theta(x) ∝ exp f_theta(x)``, i.e. ``f = -E`` for an
energy ``E``). Samplers (Langevin refinement, noise draws) stay with the caller.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG, Domain, Maybe, Real
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe

__all__ = ["cdrl_loss", "CDRLLoss", "cdrl_initializer_loss", "CDRLInitializerLoss", "PartitionEstimate",
           "compositional_nll", "CompositionalNLLLoss"]

CDRL_PAPER = Paper("Learning Energy-Based Models by Cooperative Diffusion Recovery Likelihood", 2024, "2309.05153",
                   "Zhu, Xie, Wu, Gao")
COMPOSITIONAL_PAPER = Paper("Learning Unnormalized Statistical Models via Compositional Optimization", 2023,
                            "2306.07485", "Jiang, Qin, Wu, Chen, Yang, Zhang")


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _vector(name: str, x: torch.Tensor, n: int | None = None) -> None:
    check_floating(name, x)
    if x.dim() != 1:
        raise fail(name, "one value per sample, shape (N,)", describe(x))
    if n is not None and x.shape[0] != n:
        raise fail(name, f"shape ({n},)", describe(x))


# ----------------------------------------------------------------------------------- CDRL: the EBM
def _cdrl_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7) -> Example:
    f_data = torch.randn(n, generator=gen, dtype=torch.float64)
    f_samples = f_data - 1.0 + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"f_data": f_data.to(dtype), "f_samples": f_samples.to(dtype)}, grad=("f_data", "f_samples"))


def _cdrl_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("f_samples of another batch size", ex.replace({"f_samples": i["f_samples"][:-1]}), "f_samples"),
        BadInput("f_data with a feature axis", ex.replace({"f_data": i["f_data"][:, None]}), "f_data"),
        BadInput("NaN f_samples", ex.replace({"f_samples": _with(i["f_samples"], float("nan"))}), "f_samples"),
        BadInput("integer f_data", ex.replace({"f_data": i["f_data"].round().long()}), "f_data"),
    ]


CDRL_KIND = InputKind("EBM log-densities at data and samples",
                      "f_theta at the (scaled) noisy data x_t (N,) and at the refined samples of p_theta(x_t | x_t+1) "
                      "(N,), one noise level per pair", bad_inputs=_cdrl_bad, extreme=scale_input("f_data"))


@objective(
    "cdrl_loss", seed=True, family="generative", input_kind=CDRL_KIND, example=_cdrl_example, paper=CDRL_PAPER,
    module_name="CDRLLoss",
    formula="L = f_theta(x_t^-, t) - f_theta(x_t, t),  x_t^- ~ p_theta(x_t | x_t+1) ∝ exp(f_theta(x_t, t) - "
            "||x_t+1 - x_t||^2 / (2 sigma_t+1^2)) (Langevin from the initializer)",
)
def cdrl_loss(f_data: torch.Tensor, f_samples: torch.Tensor, *, sample_weight: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """Recovery-likelihood loss of a conditional EBM at one noise level (CDRL / diffusion recovery likelihood).

    .. math:: \\ell = f_\\theta(\\tilde x^-_t, t) - f_\\theta(\\tilde x_t, t),\\qquad
              p_\\theta(x_t \\mid x_{t+1}) \\propto \\exp\\Big(f_\\theta(x_t, t)
              - \\frac{\\lVert x_{t+1} - \\sqrt{\\alpha_{t+1}}\\, x_t\\rVert^2}{2\\sigma_{t+1}^2}\\Big)

    The recovery likelihood ``log p_theta(x_t | x_t+1)`` of the noisy data ``x_t`` given its next, noisier
    version is the likelihood of an EBM whose normaliser depends on ``x_t+1``; its gradient is
    ``grad f(x_t) - E_{p_theta(. | x_t+1)} grad f`` (the quadratic term does not depend on ``theta``), and
    this loss is its negative with one sample per pair: ``f_data (N,)`` is ``f_theta`` at the scaled data
    ``sqrt(alpha_t+1) x_t``, ``f_samples (N,)`` at the scaled refined sample ``x_t^-``: the initializer's
    proposal refined by a few Langevin steps on ``p_theta(. | x_t+1)`` (detached before ``f`` is
    evaluated on it). The authors' code (AlvinZhuyx/CDRL) weights the noise levels by ``sigma_1 /
    sigma_t+1`` (their noise-variance reduction): pass it as ``sample_weight`` (losskit's weighted mean
    divides by the weights' sum, the authors' ``mean(w l)`` by ``N``: a constant factor per batch when the
    levels are drawn uniformly). Unbounded below by construction (a contrastive log-likelihood); the
    initializer is trained beside it with :func:`cdrl_initializer_loss`.

    Paper: Zhu, Xie, Wu, Gao, "Learning Energy-Based Models by Cooperative Diffusion Recovery Likelihood",
    ICLR 2024, arXiv:2309.05153 (the recovery likelihood: Gao et al., arXiv:2012.08125).
    """
    _vector("f_data", f_data)
    _vector("f_samples", f_samples, f_data.shape[0])
    return finish(f_samples - f_data, reduction, sample_weight=sample_weight)


CDRLLoss = cdrl_loss.Module


# --------------------------------------------------------------------------- CDRL: the initializer
def _init_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 3) -> Example:
    refined = torch.randn(n, d, generator=gen, dtype=torch.float64)
    init = refined + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"init": init.to(dtype), "refined": refined.to(dtype)}, grad=("init",))


def _init_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("refined of another shape", ex.replace({"refined": i["refined"][:, :-1]}), "refined"),
        BadInput("+inf in refined", ex.replace({"refined": _with(i["refined"], float("inf"))}), "refined"),
        BadInput("integer init", ex.replace({"init": i["init"].round().long()}), "init"),
    ]


INIT_KIND = InputKind("initializer proposal + refined sample",
                      "the initializer's proposal (N, ...) and the Langevin-refined sample of the same shape",
                      bad_inputs=_init_bad, extreme=scale_input("init"))


@objective(
    "cdrl_initializer_loss", seed=True, family="generative", input_kind=INIT_KIND, example=_init_example,
    paper=CDRL_PAPER, properties={"nonnegative"}, module_name="CDRLInitializerLoss",
    formula="L = ||sg(x_t^-) - q_phi(x_t+1)||^2 (sum over the entries of a sample)",
)
def cdrl_initializer_loss(init: torch.Tensor, refined: torch.Tensor, *, sample_weight: torch.Tensor | None = None,
                          reduction: str = "mean") -> torch.Tensor:
    """CDRL's initializer loss: the initializer learns from the difference between its proposals and their
    Langevin refinements (cooperative learning).

    .. math:: \\ell = \\big\\lVert \\mathrm{sg}(\\tilde x^-_t) - \\hat x^0_t \\big\\rVert^2

    ``init (N, ...)``: the initializer's proposal ``x_t^0 = q_phi(x_t+1)`` (its mean, plus the noise the
    authors add, which carries no gradient), ``refined``: the same proposal after the EBM's Langevin steps,
    treated as a constant (``sg``): the initializer moves toward where the EBM's MCMC took its samples,
    which is the maximum-likelihood step of a Gaussian initializer on the refined samples. Per sample, the
    sum over the entries, as the authors' ``p_loss`` (AlvinZhuyx/CDRL); both in the space the EBM scores
    (the authors rescale the refined sample by ``sqrt(alpha_t+1 / alpha_t)`` first).

    Paper: Zhu, Xie, Wu, Gao, "Learning Energy-Based Models by Cooperative Diffusion Recovery Likelihood",
    ICLR 2024, arXiv:2309.05153.
    """
    check_floating("init", init)
    check_floating("refined", refined)
    if init.dim() < 1:
        raise fail("init", "a batch of shape (N, ...)", "a scalar")
    if refined.shape != init.shape:
        raise fail("refined", f"the shape of init {tuple(init.shape)}", f"shape {tuple(refined.shape)}")
    per = (refined.detach().to(init.dtype) - init).reshape(init.shape[0], -1).square().sum(-1)
    return finish(per, reduction, sample_weight=sample_weight)


CDRLInitializerLoss = cdrl_initializer_loss.Module


# --------------------------------------------------------------------- compositional optimisation NLL
class PartitionEstimate(nn.Module):
    """The moving-average estimate ``u`` of the partition function ``Z_theta`` used by :func:`compositional_nll`.

    Buffers (saved with ``state_dict``): ``log_u`` (float64 scalar, ``log u``) and ``seen`` (whether ``u``
    has been set; the first step takes the minibatch estimate as is). ``gamma`` in ``(0, 1]`` is the weight of
    the new minibatch estimate: ``u <- (1 - gamma) u + gamma Z_hat`` (``gamma = 1``: no averaging).
    """

    def __init__(self, gamma: float = 0.9):
        super().__init__()
        if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0 < gamma <= 1):
            raise fail("gamma", "a moving-average weight in (0, 1]", repr(gamma))
        self.gamma = float(gamma)
        self.register_buffer("log_u", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def reset(self) -> None:
        self.log_u.zero_()
        self.seen.fill_(False)

    @torch.no_grad()
    def step(self, log_z_hat: torch.Tensor) -> torch.Tensor:
        """Mix a minibatch estimate ``log Z_hat`` into ``u`` and return the new ``log u`` (a 0-d tensor)."""
        g = log_z_hat.detach().to(self.log_u.dtype).reshape(())
        if self.gamma < 1.0:  # no host read of ``seen`` (torch.where): compiles, and no sync on accelerators
            mixed = torch.logaddexp(math.log1p(-self.gamma) + self.log_u, math.log(self.gamma) + g)
            new = torch.where(self.seen, mixed, g)
        else:
            new = g
        self.log_u.copy_(new)
        self.seen.fill_(True)
        return new.clone()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class _PartitionDomain(Domain):
    description = "a PartitionEstimate (the moving average of the partition function), or None"

    def contains(self, value, arguments=None) -> bool:
        return value is None or isinstance(value, PartitionEstimate)

    def invalid(self) -> list:
        return ["not-a-state", 0.5]


def _nll_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, m: int = 9) -> Example:
    f64 = torch.float64
    x = torch.randn(n, generator=gen, dtype=f64)
    y = 2.0 * torch.randn(m, generator=gen, dtype=f64)           # noise q = N(0, 2^2)
    log_q = -0.5 * (y / 2.0) ** 2 - math.log(2.0 * math.sqrt(2 * math.pi))

    def f(z):
        return -0.5 * (z - 0.3) ** 2 + 0.1

    state = PartitionEstimate(0.9).to(f64)
    state.step(torch.tensor(1.2, dtype=f64))
    return Example({"f_data": f(x).to(dtype), "f_noise": f(y).to(dtype), "noise_log_prob": log_q.to(dtype)},
                   options={"state": state, "update": False}, grad=("f_data", "f_noise"), batched=("f_data",))


def _nll_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("noise_log_prob of another length", ex.replace({"noise_log_prob": i["noise_log_prob"][:-1]}),
                 "noise_log_prob"),
        BadInput("f_data with a feature axis", ex.replace({"f_data": i["f_data"][:, None]}), "f_data"),
        BadInput("NaN f_noise", ex.replace({"f_noise": _with(i["f_noise"], float("nan"))}), "f_noise"),
        BadInput("empty noise batch", ex.replace({"f_noise": i["f_noise"][:0],
                                                  "noise_log_prob": i["noise_log_prob"][:0]}), "f_noise"),
        BadInput("not a state", ex.replace(options={"state": "not-a-state"}), "state"),
    ]


NLL_KIND = InputKind(
    "unnormalised log-densities at data and noise",
    "f_theta at the data (N,), f_theta at M noise samples x' ~ q (M,) and log q(x') (M,)",
    bad_inputs=_nll_bad, extreme=scale_input("f_data"))


@objective(
    "compositional_nll", seed=True, family="generative", input_kind=NLL_KIND, example=_nll_example,
    paper=COMPOSITIONAL_PAPER, module_name="CompositionalNLLLoss",
    domains={"state": _PartitionDomain(), "update": FLAG, "gamma": Maybe(Real(0.0, 1.0, lo_open=True))},
    formula="l_i = -f_theta(x_i) + log u + Z_hat / u - 1,  Z_hat = mean_j exp(f_theta(x'_j)) / q(x'_j),  "
            "u <- (1 - gamma) u + gamma sg(Z_hat);  grad = -grad f(x_i) + grad Z_hat / u",
)
def compositional_nll(f_data: torch.Tensor, f_noise: torch.Tensor, noise_log_prob: torch.Tensor, *,
                      state: PartitionEstimate | None = None, update: bool = True, gamma: float | None = None,
                      sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of an unnormalised model by stochastic compositional optimisation.

    .. math:: -\\log p_\\theta(x) = -f_\\theta(x) + \\log Z_\\theta,\\qquad
              Z_\\theta = \\mathbb E_{x' \\sim q}\\Big[\\frac{e^{f_\\theta(x')}}{q(x')}\\Big]

    ``log Z`` is a compositional function (``log`` of an expectation), so its minibatch plug-in is biased;
    the paper's algorithm tracks the inner function by a moving average ``u <- (1 - gamma) u + gamma
    Z_hat`` (``Z_hat = (1/M) sum_j exp(f(x'_j) - log q(x'_j))``, computed by a log-sum-exp) and steps along
    ``-grad f(x_i) + grad Z_hat / u``. The value returned per data point is
    ``-f(x_i) + log u + Z_hat / u - 1``, the first-order expansion of ``log Z_hat`` around ``u``: its
    gradient is exactly that estimator, and it equals the NLL estimate ``-f(x_i) + log Z_hat`` once ``u`` has
    caught up (``u = Z_hat``). ``f_data (N,)``: ``f_theta`` at the data; ``f_noise (M,)``: at noise samples
    ``x' ~ q``; ``noise_log_prob (M,)``: ``log q(x')`` (a density, any real value). ``state``: a
    :class:`PartitionEstimate` holding ``u`` (``update=False`` reads it without moving it; ``gamma``
    overrides the state's weight for this call); ``state=None``: no memory, ``u = Z_hat`` (the plug-in
    estimate). The module form keeps the state: ``CompositionalNLLLoss(state=PartitionEstimate(0.9))``.
    ``gamma = 0.9`` by default (the state's), the moving-average weight of the group's other
    compositional methods (SogCLR, iSogCLR); the paper's analysis lets it shrink with the step size. A
    noise ``q`` close to the data lowers the estimator's variance (the paper's rate depends on it).
    ``sample_weight`` weights the data points.

    Paper: Jiang, Qin, Wu, Chen, Yang, Zhang, "Learning Unnormalized Statistical Models via Compositional
    Optimization", ICML 2023, arXiv:2306.07485.
    """
    _vector("f_data", f_data)
    _vector("f_noise", f_noise)
    _vector("noise_log_prob", noise_log_prob, f_noise.shape[0])
    if f_noise.shape[0] == 0:
        raise fail("f_noise", "at least one noise sample", "an empty batch")
    if state is not None and not isinstance(state, PartitionEstimate):
        raise fail("state", _PartitionDomain.description, repr(type(state)))
    dt = torch.promote_types(f_data.dtype, f_noise.dtype)
    log_z_hat = torch.logsumexp(f_noise.to(dt) - noise_log_prob.to(dt), 0) - math.log(f_noise.shape[0])
    if state is None or f_data.is_meta or log_z_hat.is_meta:
        log_u = log_z_hat.detach()
    else:
        g = state.gamma if gamma is None else float(gamma)
        with torch.no_grad():
            if update:
                old, state.gamma = state.gamma, g
                try:
                    log_u = state.step(log_z_hat.to(state.log_u.device))
                finally:
                    state.gamma = old
            else:
                log_u = torch.where(state.seen, state.log_u, log_z_hat.detach().to(state.log_u.dtype))
        log_u = log_u.to(device=log_z_hat.device, dtype=dt)
    per = -f_data.to(dt) + log_u + torch.exp(log_z_hat - log_u) - 1
    return finish(per, reduction, sample_weight=sample_weight)


CompositionalNLLLoss = compositional_nll.Module
