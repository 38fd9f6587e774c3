"""Variational lower bounds on divergences and mutual information, from a user's critic.

A critic ``T`` scores samples; ``scores_p = T(samples of P)`` and ``scores_q = T(samples of Q)``. For
mutual information, P is the joint (paired ``(x_i, y_i)``) and Q the product of marginals (shuffled
pairs). Each function returns the **bound** (an estimate of the divergence, to be *maximised* over the
critic): train with ``loss = -bound``. Each bound is tight at a known optimal critic, which the tests
use: DV at ``T = log(p/q) + c``, NWJ at ``T = 1 + log(p/q)``, f-GAN at ``T = f'(p/q)``.

Batch statistics: one scalar per call (``reduction`` is accepted for the common signature; every value
gives the same scalar).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG, NONNEGATIVE
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, require
from .generators import GENERATOR_DOMAIN, FGenerator, get_generator

__all__ = ["dv_bound", "nwj_bound", "infonce_bound", "fgan_bound", "wpc_bound", "DVBound", "NWJBound",
           "InfoNCEBound", "FGANBound", "WPCBound"]


# ---------------------------------------------------------------------------------------- inputs
def scores_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, m: int = 9) -> Example:
    sp = torch.randn(n, generator=gen, dtype=torch.float64) + 0.5
    sq = torch.randn(m, generator=gen, dtype=torch.float64)
    return Example({"scores_p": sp.to(dtype), "scores_q": sq.to(dtype)}, grad=("scores_p", "scores_q"))


def _inf(x):
    x = x.clone()
    x.view(-1)[0] = float("inf")
    return x


def _scores_bad(ex: Example) -> list[BadInput]:
    sp, sq = ex.inputs["scores_p"], ex.inputs["scores_q"]
    out = [BadInput("+inf score", ex.replace({"scores_q": _inf(sq)}), "scores_q"),
           BadInput("integer scores", ex.replace({"scores_p": sp.round().long()}), "scores_p"),
           BadInput("empty scores_q", ex.replace({"scores_q": sq[:0]}), "scores_q")]
    if "generator" in ex.options:
        out.append(BadInput("unknown generator", ex.replace(options={"generator": "kll"}), "generator"))
    return out


CRITIC_SCORES = InputKind(
    "critic scores",
    "critic values on samples of P (any shape) and of Q (any shape)",
    bad_inputs=_scores_bad,
    extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
)


def matrix_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6) -> Example:
    s = torch.randn(n, n, generator=gen, dtype=torch.float64) + 2 * torch.eye(n, dtype=torch.float64)
    return Example({"scores": s.to(dtype)}, grad=("scores",))


def _matrix_bad(ex: Example) -> list[BadInput]:
    s = ex.inputs["scores"]
    return [BadInput("non-square scores", ex.replace({"scores": s[:, :-1]}), "scores"),
            BadInput("1-D scores", ex.replace({"scores": s[0]}), "scores"),
            BadInput("+inf score", ex.replace({"scores": _inf(s)}), "scores")]


SCORE_MATRIX = InputKind(
    "critic score matrix",
    "scores (N, N): scores[i, j] = T(x_i, y_j), positive pairs on the diagonal",
    bad_inputs=_matrix_bad,
    extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
)

_BOUND = dict(family="divergence", per_sample=False, sample_weight=False, allow_neg_inf=())
_NO_EXTREME = ("the bound contains E_Q exp(T - 1): critic values of 1e4 overflow it (the bound is below the "
               "float range), which the objective refuses with a LossInputError naming scores_q, so the "
               "finite-at-extremes check does not apply")


def _scores(sp, sq):
    check_floating("scores_p", sp)
    check_floating("scores_q", sq)
    if sq.numel() == 0:
        raise fail("scores_q", "at least one critic value on samples of Q", "an empty tensor")
    return sp.reshape(-1), sq.reshape(-1)


# ---------------------------------------------------------------------------------------- bounds
@objective("dv_bound", batch_scalar=True, input_kind=CRITIC_SCORES, example=scores_example, module_name="DVBound",
           formula="KL(P || Q) >= E_P T - log E_Q exp(T)",
           paper=Paper("Asymptotic evaluation of certain Markov process expectations for large time", 1983, None,
                       "Donsker, Varadhan"), **_BOUND)
def dv_bound(scores_p: torch.Tensor, scores_q: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Donsker–Varadhan lower bound on KL(P ‖ Q) (MINE's objective for mutual information).

    .. math:: \\mathrm{KL}(P\\,\\|\\,Q) \\ge \\mathbb E_P[T] - \\log \\mathbb E_Q[e^T]

    ``log E_Q e^T`` is a log-sum-exp minus ``log m``, stable for any critic values. Tight at
    ``T = log(dP/dQ) + c``. The gradient of the log-mean-exp over a minibatch is biased (MINE,
    Belghazi et al. 2018, arXiv:1801.04062, corrects it with a moving average; not done here).

    Paper: Asymptotic evaluation of certain Markov process expectations for large time (Donsker &
    Varadhan, 1983).
    """
    sp, sq = _scores(scores_p, scores_q)
    value = sp.mean() - (torch.logsumexp(sq, 0) - math.log(sq.numel()))
    return finish(value, reduction)


@objective("nwj_bound", batch_scalar=True, input_kind=CRITIC_SCORES, example=scores_example, module_name="NWJBound",
           formula="KL(P || Q) >= E_P T - E_Q exp(T - 1)", extreme=False,
           skip_reasons={"extreme": _NO_EXTREME},
           paper=Paper("Estimating divergence functionals and the likelihood ratio by convex risk minimization",
                       2008, "0809.0853", "Nguyen, Wainwright, Jordan"), **_BOUND)
def nwj_bound(scores_p: torch.Tensor, scores_q: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Nguyen–Wainwright–Jordan lower bound on KL(P ‖ Q) (the f-GAN KL bound, unbiased in minibatches).

    .. math:: \\mathrm{KL}(P\\,\\|\\,Q) \\ge \\mathbb E_P[T] - \\mathbb E_Q[e^{T-1}]

    Tight at ``T = 1 + log(dP/dQ)``; ≤ the DV bound for the same critic. Critic values whose
    ``E_Q e^{T-1}`` overflows the dtype (float32: ``T`` above about 89) raise
    :class:`~losskit.LossInputError` naming ``scores_q``: the bound would be ``-inf`` (a loss of
    ``+inf``), which no optimiser can use. (:func:`dv_bound` is finite for any critic values.)

    Paper: Estimating divergence functionals and the likelihood ratio by convex risk minimization
    (Nguyen, Wainwright & Jordan, 2008/2010, arXiv:0809.0853).
    """
    sp, sq = _scores(scores_p, scores_q)
    eq = torch.exp(sq - 1).mean()
    require("scores_q", eq, lambda: torch.isinf(eq),
            f"critic values T whose mean of exp(T - 1) fits in {eq.dtype} (the NWJ bound would be -inf)",
            lambda: f"max {sq.max().item():.4g}")
    return finish(sp.mean() - eq, reduction)


def _infonce(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[0]
    return math.log(n) + (scores.diagonal() - torch.logsumexp(scores, 1)).mean()


def _check_matrix(scores, name="scores"):
    check_floating(name, scores)
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise fail(name, "a square matrix (N, N) of critic scores T(x_i, y_j)", f"shape {tuple(scores.shape)}")


@objective("infonce_bound", batch_scalar=True, input_kind=SCORE_MATRIX, example=matrix_example, module_name="InfoNCEBound",
           formula="I(X; Y) >= log N + 1/N sum_i [T(x_i, y_i) - log sum_j exp T(x_i, y_j)]",
           paper=Paper("Representation Learning with Contrastive Predictive Coding", 2018, "1807.03748",
                       "van den Oord, Li, Vinyals"), **_BOUND)
def infonce_bound(scores: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """InfoNCE lower bound on mutual information from an (N, N) critic matrix (positives on the diagonal).

    .. math:: I(X; Y) \\ge \\log N + \\frac1N\\sum_i \\Big[T(x_i, y_i) - \\log\\sum_j e^{T(x_i, y_j)}\\Big]

    Never exceeds ``log N``. The contrastive *loss* on embeddings is ``losskit.info_nce`` (the
    representation family); this is the bound on a critic's scores.

    Paper: Representation Learning with Contrastive Predictive Coding (van den Oord et al., 2018,
    arXiv:1807.03748); the bound as stated in "On Variational Bounds of Mutual Information" (Poole et
    al., 2019, arXiv:1905.06922).
    """
    _check_matrix(scores)
    return finish(_infonce(scores), reduction)


def fgan_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    return scores_example(gen, dtype).replace(options={"generator": "js"})


@objective("fgan_bound", batch_scalar=True, input_kind=CRITIC_SCORES, example=fgan_example, module_name="FGANBound",
           formula="D_f(P || Q) >= E_P g(V) - E_Q f*(g(V))",
           paper=Paper("f-GAN: Training Generative Neural Samplers using Variational Divergence Minimization",
                       2016, "1606.00709", "Nowozin, Cseke, Tomioka"),
           domains={"generator": GENERATOR_DOMAIN, "activation": FLAG}, **_BOUND)
def fgan_bound(scores_p: torch.Tensor, scores_q: torch.Tensor, *, generator: str | FGenerator = "js",
               activation: bool = True, reduction: str = "mean") -> torch.Tensor:
    """The f-GAN variational lower bound on an f-divergence ``D_f(P ‖ Q)``.

    .. math:: D_f(P\\,\\|\\,Q) \\ge \\mathbb E_P[g_f(V)] - \\mathbb E_Q[f^*(g_f(V))]

    ``scores`` are raw critic outputs ``V``; with ``activation=True`` they pass through the
    generator's output activation ``g_f`` (onto the domain of the conjugate ``f*``; f-GAN Table 2),
    otherwise they are used as ``T`` directly: then ``scores_q`` must lie in the domain of ``f*`` where
    ``f*`` is finite (e.g. ``T < log 2 / 2`` for ``'js'``, ``T < 0`` for ``'reverse_kl'``), else
    :class:`~losskit.LossInputError` names it (the bound would be NaN or ``-inf``). Tight at
    ``T = f'(dP/dQ)``. ``generator`` as in :func:`f_divergence` (names or an ``FGenerator`` with
    ``conjugate`` and ``activation``). For ``'js'``, ``f*(g(v))`` is evaluated in closed form
    (softplus), so saturated critics stay finite.

    Paper: f-GAN: Training Generative Neural Samplers using Variational Divergence Minimization
    (Nowozin, Cseke & Tomioka, 2016, arXiv:1606.00709).
    """
    sp, sq = _scores(scores_p, scores_q)
    gen = get_generator(generator)
    if gen.conjugate is None or (activation and gen.activation is None):
        raise fail("generator", "an FGenerator with a conjugate (and an activation)", gen.name)
    if activation:
        value = gen.activation(sp).mean() - gen.conjugate_of_activation(sq).mean()
    else:
        cq = gen.conjugate(sq)
        lo, hi = gen.conjugate_domain
        require("scores_q", sq, lambda: ((sq < lo) | (sq > hi) | ~torch.isfinite(cq)).any(),
                f"critic values T where the conjugate f* of {gen.name!r} is finite (in [{lo:g}, {hi:g}]; "
                f"activation=False)", lambda: f"range [{sq.min().item():.4g}, {sq.max().item():.4g}]")
        value = sp.mean() - cq.mean()
    return finish(value, reduction)


# ------------------------------------------------------------------------------ Wasserstein (WPC)
def critic_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, dx: int = 3, dy: int = 4) -> Example:
    x = torch.randn(n, dx, generator=gen, dtype=torch.float64)
    y = torch.randn(n, dy, generator=gen, dtype=torch.float64)
    w = torch.randn(dx, dy, generator=gen, dtype=torch.float64)

    def critic(a, b):  # a smooth, non-separable-in-norm critic: tanh features, bilinear score
        return torch.tanh(a) @ w.to(a.dtype) @ torch.tanh(b).T

    return Example({"x": x.to(dtype), "y": y.to(dtype), "critic": critic}, grad=("x", "y"),
                   batched=("x", "y"))


def _critic_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    return [BadInput("batch mismatch", ex.replace({"y": y[:-1]}), "y"),
            BadInput("critic not callable", ex.replace({"critic": 3.0}), "critic"),
            BadInput("integer x", ex.replace({"x": x.round().long()}), "x"),
            BadInput("negative penalty weight", ex.replace(options={"penalty_weight": -1.0}), "penalty_weight")]


CRITIC_FN = InputKind(
    "paired samples + critic",
    "paired samples x (N, ...), y (N, ...) and a critic (x, y) -> (N, N) scores",
    bad_inputs=_critic_bad,
    extreme=None,
)


@objective("wpc_bound", seed=True, batch_scalar=True, input_kind=CRITIC_FN, example=critic_example, module_name="WPCBound",
           formula="InfoNCE(T) - lambda E_i max(0, ||grad_(x_i, y_i) T(x_i, y_i)|| - 1)^2",
           paper=Paper("Wasserstein Dependency Measure for Representation Learning", 2019, "1903.11780",
                       "Ozair, Lynch, Bengio, van den Oord, Levine, Sermanet"),
           compile=False, family="divergence", per_sample=False, sample_weight=False, allow_neg_inf=(),
           domains={"penalty_weight": NONNEGATIVE, "one_sided": FLAG},
           skip_reasons={"compile": "the penalty differentiates the critic inside the loss (autograd.grad with "
                                    "create_graph), which torch.compile does not trace"})
def wpc_bound(x: torch.Tensor, y: torch.Tensor, critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
              penalty_weight: float = 10.0, one_sided: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Wasserstein predictive coding: the InfoNCE bound with a gradient penalty keeping the critic 1-Lipschitz.

    .. math:: \\mathcal L = \\log N + \\frac1N\\sum_i\\Big[T(x_i,y_i) - \\log\\sum_j e^{T(x_i,y_j)}\\Big]
              - \\lambda\\,\\frac1N\\sum_i \\big(\\lVert\\nabla_{(x_i, y_i)} T(x_i, y_i)\\rVert - 1\\big)_+^2

    ``critic(x, y)`` returns the (N, N) matrix ``T(x_i, y_j)``; the penalty is on the gradient of each
    positive-pair score with respect to its own inputs (a row-wise critic's ``T(x_i, y_i)`` depends on
    ``x_i, y_i`` only, so one backward pass of ``Σ_i T(x_i, y_i)`` gives every per-pair gradient).
    ``one_sided=False`` penalises ``(‖∇‖ - 1)²`` (WGAN-GP's two-sided form). The value returned is the
    penalised bound: maximise it (``loss = -wpc_bound(...)``). † The paper enforces the Lipschitz
    constraint with "a gradient penalty"; where it is evaluated (positive pairs, here) and its
    one-sidedness are our choices.

    Paper: Wasserstein Dependency Measure for Representation Learning (Ozair et al., 2019,
    arXiv:1903.11780).
    """
    check_floating("x", x)
    check_floating("y", y)
    if not callable(critic):
        raise fail("critic", "a callable critic(x, y) -> (N, N) scores", repr(critic))
    if y.shape[:1] != x.shape[:1]:
        raise fail("y", f"a batch of {x.shape[0]} paired with x", f"shape {tuple(y.shape)}")
    xg = x if x.requires_grad else x.detach().requires_grad_(True)
    yg = y if y.requires_grad else y.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = critic(xg, yg)
        _check_matrix(scores, "critic")
        gx, gy = torch.autograd.grad(scores.diagonal().sum(), (xg, yg), create_graph=True)
    norm2 = gx.reshape(len(x), -1).pow(2).sum(1) + gy.reshape(len(y), -1).pow(2).sum(1)
    pos = norm2 > 0  # the norm's gradient at 0 is taken as 0 (no NaN from sqrt)
    norm = torch.where(pos, torch.sqrt(torch.where(pos, norm2, torch.ones_like(norm2))), torch.zeros_like(norm2))
    excess = torch.relu(norm - 1) if one_sided else norm - 1
    value = _infonce(scores) - penalty_weight * excess.pow(2).mean()
    return finish(value, reduction)


DVBound = dv_bound.Module
NWJBound = nwj_bound.Module
InfoNCEBound = infonce_bound.Module
FGANBound = fgan_bound.Module
WPCBound = wpc_bound.Module
