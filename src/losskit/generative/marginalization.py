"""Marginalization models (Liu, Ramadge, Adams 2024): the marginalisation self-consistency loss that trains a
network of *all* marginals ``log p_theta(x_S)`` of discrete data to agree with the chain rule through a
conditional network ``p_phi(x_d | x_S)``.

The loss reads the three log-probabilities of one step of a random ordering; drawing the ordering and the
step, and masking the unseen variables, is the caller's (the network sees ``x_S`` with the rest masked).
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe
from .._core.values import Values

__all__ = ["mam_consistency_loss", "MaMConsistencyLoss", "MAM_STEP"]

MAM_PAPER = Paper("Generative Marginalization Models", 2024, "2310.12920", "Liu, Ramadge, Adams")

LOG_PROB = Values(hi=0.0, description="log-probabilities <= 0")


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 7) -> Example:
    f64 = torch.float64
    prefix = -4.0 * torch.rand(n, generator=gen, dtype=f64)
    cond = torch.log_softmax(torch.randn(n, 4, generator=gen, dtype=f64), -1)[:, 0]
    marginal = prefix + cond + 0.3 * torch.randn(n, generator=gen, dtype=f64)
    ins = {"logp_marginal": marginal, "logp_prefix": prefix, "logp_conditional": cond}
    return Example({k: v.to(dtype) for k, v in ins.items()}, grad=tuple(ins))


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("logp_prefix of another batch size", ex.replace({"logp_prefix": i["logp_prefix"][:-1]}),
                 "logp_prefix"),
        BadInput("logp_marginal with a feature axis", ex.replace({"logp_marginal": i["logp_marginal"][:, None]}),
                 "logp_marginal"),
        BadInput("positive logp_conditional", ex.replace({"logp_conditional": _with(i["logp_conditional"], 0.5)}),
                 "logp_conditional"),
        BadInput("NaN logp_marginal", ex.replace({"logp_marginal": _with(i["logp_marginal"], float("nan"))}),
                 "logp_marginal"),
        BadInput("integer logp_prefix", ex.replace({"logp_prefix": i["logp_prefix"].round().long()}), "logp_prefix"),
    ]


MAM_STEP = InputKind(
    "marginalisation step",
    "log p_theta(x_{sigma(<=d)}) (N,), log p_theta(x_{sigma(<d)}) (N,) from the marginal network and "
    "log p_phi(x_{sigma(d)} | x_{sigma(<d)}) (N,) from the conditional network",
    bad_inputs=_bad, extreme=scale_input("logp_marginal"), values={"logp_conditional": LOG_PROB})


@objective(
    "mam_consistency_loss", seed=True, family="generative", input_kind=MAM_STEP, example=_example,
    paper=MAM_PAPER, properties={"nonnegative"}, module_name="MaMConsistencyLoss",
    formula="L = D (log p_theta(x_{sigma(<=d)}) - log p_theta(x_{sigma(<d)}) - log p_phi(x_{sigma(d)} | "
            "x_{sigma(<d)}))^2,  d ~ U{1..D}, sigma a random ordering",
    domains={"num_variables": COUNT},
)
def mam_consistency_loss(logp_marginal: torch.Tensor, logp_prefix: torch.Tensor, logp_conditional: torch.Tensor, *,
                         num_variables: int = 1, sample_weight: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """Marginalisation self-consistency of a marginalization model (MaM), one step of a random ordering.

    .. math:: \\ell = D\\,\\Big(\\log p_\\theta(x_{\\sigma(\\le d)}) - \\log p_\\theta(x_{\\sigma(<d)})
              - \\log p_\\phi\\big(x_{\\sigma(d)} \\mid x_{\\sigma(<d)}\\big)\\Big)^2

    A MaM has a network for the marginal of *any* subset of the ``D`` discrete variables,
    ``log p_theta(x_S)`` (the unseen variables masked), and a conditional network ``p_phi(x_d | x_S)``.
    They must satisfy the chain rule, ``p_theta(x_S, x_d) = p_theta(x_S) p_phi(x_d | x_S)``, along every
    ordering ``sigma``: the squared violation at a uniformly drawn step ``d`` of a random ordering is the
    self-consistency loss, and ``D`` times it (``num_variables``) estimates the sum over the ordering's
    ``D`` steps, as the authors' code weights it (``cfg.L * mb_loss``; default 1, the plain mean).
    ``logp_marginal (N,)``: ``log p_theta(x_{sigma(<=d)})``; ``logp_prefix (N,)``:
    ``log p_theta(x_{sigma(<d)})``; ``logp_conditional (N,)``: ``log p_phi(x_{sigma(d)} | x_{sigma(<d)})``
    (a log-softmax entry, <= 0). Gradients reach all three (the authors back-propagate into both networks
    through all terms). The paper's full objective adds, for maximum likelihood, the conditionals' own
    likelihood (training ``p_phi`` as an any-order autoregressive model), and always pins the empty
    marginal, ``(log p_theta(x_{empty}) - 0)^2``; for energy-based training it adds a KL term to the
    target ``exp(-E(x)) / Z``. Those are one line each around this loss.

    Paper: Liu, Ramadge, Adams, "Generative Marginalization Models", ICML 2024, arXiv:2310.12920.
    """
    for name, x in (("logp_marginal", logp_marginal), ("logp_prefix", logp_prefix),
                    ("logp_conditional", logp_conditional)):
        check_floating(name, x)
        if x.dim() != 1:
            raise fail(name, "one log-probability per sample, shape (N,)", describe(x))
    n = logp_marginal.shape[0]
    for name, x in (("logp_prefix", logp_prefix), ("logp_conditional", logp_conditional)):
        if x.shape[0] != n:
            raise fail(name, f"shape ({n},), the batch of logp_marginal", describe(x))
    per = num_variables * (logp_marginal - logp_prefix - logp_conditional).square()
    return finish(per, reduction, sample_weight=sample_weight)


MaMConsistencyLoss = mam_consistency_loss.Module
