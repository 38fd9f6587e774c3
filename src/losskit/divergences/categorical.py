"""Divergences between categorical distributions, computed in log space.

Each takes two distributions ``p`` and ``q`` over ``dim`` given as ``input_space='logits'`` (default;
normalised with ``log_softmax``), ``'log_probs'`` or ``'probs'``. Zero probabilities (``-inf``
logits) are exact: ``0 log 0 = 0``; a divergence that is infinite (``p > 0`` where ``q = 0`` for KL)
returns ``inf``, never NaN.
"""

from __future__ import annotations

import math

import torch

from .._core import fail, objective, reduce
from .._core.inputs import TWO_DISTRIBUTIONS, distributions_example
from .._core.validate import check_floating, check_probabilities, check_sample_weight

__all__ = ["log_probs", "kl_divergence", "reverse_kl_divergence", "js_divergence",
           "KLDivergence", "ReverseKLDivergence", "JSDivergence"]

INPUT_SPACES = ("logits", "log_probs", "probs")


def log_probs(x: torch.Tensor, input_space: str, dim: int, name: str) -> torch.Tensor:
    """Log-probabilities from logits / log-probabilities / probabilities, validated."""
    check_floating(name, x)
    if input_space == "logits":
        return torch.log_softmax(x, dim=dim)
    if input_space == "log_probs":
        if bool((x > 1e-6).any()):
            raise fail(name, "log-probabilities (<= 0)", f"max {x.max().item():.4g}")
        check_probabilities(name, x.exp(), dim=dim)
        return x
    if input_space == "probs":
        check_probabilities(name, x, dim=dim)
        return torch.log(x)
    raise fail("input_space", f"one of {INPUT_SPACES}", repr(input_space))


def _pair(p, q, input_space, dim):
    if input_space not in INPUT_SPACES:
        raise fail("input_space", f"one of {INPUT_SPACES}", repr(input_space))
    check_floating("p", p)
    check_floating("q", q)
    if p.shape != q.shape:
        raise fail("q", f"the shape of p {tuple(p.shape)}", f"shape {tuple(q.shape)}")
    if p.dim() == 0:
        raise fail("p", "a tensor with a class dimension", "a scalar")
    return log_probs(p, input_space, dim, "p"), log_probs(q, input_space, dim, "q")


def _kl_terms(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """p (log p - log q) with 0 log 0 = 0 and +inf where p > 0 = q. Gradient-safe at p = 0."""
    p = logp.exp()
    zero = logp == -float("inf")
    diff = torch.where(zero, torch.zeros_like(logp), logp - logq)
    return torch.where(zero, torch.zeros_like(p), p * diff)


def _finish(terms, dim, reduction, sample_weight):
    per = terms.sum(dim)
    return reduce(per, reduction, weight=check_sample_weight(sample_weight, per.shape))


_DIV = dict(family="divergence", input_kind=TWO_DISTRIBUTIONS, example=distributions_example,
            allow_neg_inf=("p", "q"))


@objective("kl_divergence", properties={"nonnegative", "divergence"},
           formula="KL(p || q) = sum_k p_k (log p_k - log q_k)", module_name="KLDivergence", **_DIV)
def kl_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Forward Kullback–Leibler divergence KL(p ‖ q), one value per distribution.

    .. math:: \\mathrm{KL}(p\\,\\|\\,q) = \\sum_k p_k (\\log p_k - \\log q_k)

    The direction is the name: the first argument is the distribution the expectation is taken
    under. (``torch.nn.functional.kl_div(input, target)`` computes KL(target ‖ input) and its
    ``'mean'`` averages over elements, not distributions; here ``'mean'`` averages over
    distributions, torch's ``'batchmean'``.)

    Paper: standard.
    """
    logp, logq = _pair(p, q, input_space, dim)
    return _finish(_kl_terms(logp, logq), dim, reduction, sample_weight)


@objective("reverse_kl_divergence", properties={"nonnegative", "divergence"},
           formula="KL(q || p) = sum_k q_k (log q_k - log p_k)", module_name="ReverseKLDivergence", **_DIV)
def reverse_kl_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                          sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Reverse Kullback–Leibler divergence KL(q ‖ p): :func:`kl_divergence` with the arguments swapped.

    With ``p`` the model and ``q`` the data (or teacher), this is the mode-seeking direction.

    Paper: standard.
    """
    logp, logq = _pair(p, q, input_space, dim)
    return _finish(_kl_terms(logq, logp), dim, reduction, sample_weight)


@objective("js_divergence", properties={"nonnegative", "divergence", "symmetric_divergence", "bounded"},
           formula="JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q)/2", module_name="JSDivergence",
           **_DIV)
def js_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Jensen–Shannon divergence (natural log, so 0 <= JS <= log 2).

    .. math:: \\mathrm{JS}(p, q) = \\tfrac12 \\mathrm{KL}(p\\,\\|\\,m) + \\tfrac12 \\mathrm{KL}(q\\,\\|\\,m),
              \\quad \\log m = \\mathrm{logaddexp}(\\log p, \\log q) - \\log 2

    The mixture is formed in log space, so disjoint supports give exactly log 2. SciPy's
    ``jensenshannon`` returns the square root of this value (the JS distance).

    Paper: standard (Lin, "Divergence measures based on the Shannon entropy", 1991).
    """
    logp, logq = _pair(p, q, input_space, dim)
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    terms = 0.5 * (_kl_terms(logp, logm) + _kl_terms(logq, logm))
    return _finish(terms, dim, reduction, sample_weight)


KLDivergence = kl_divergence.Module
ReverseKLDivergence = reverse_kl_divergence.Module
JSDivergence = js_divergence.Module
