"""Regularisers that are functions of a model's output distribution: a named term to add to any loss.

Each takes logits (or probabilities, for attention) with the class / key dimension last and returns
one term per sample, reduced like every losskit objective. Coefficients (``coefficient``, ``beta``,
``lam``) are >= 0 (a negative one would reward what the term penalises); a logit row whose every entry is
``-inf`` (fully masked, no distribution) raises :class:`~losskit.LossInputError` naming ``logits``.
"""

from __future__ import annotations

import math

import torch

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Maybe
from .._core.inputs import scale_input
from .._core.validate import check_floating, check_probabilities
from .._core.values import LOGIT_ROWS

__all__ = ["logit_z_loss", "confidence_penalty", "attention_entropy", "eata_entropy", "entropy",
           "LogitZLoss", "ConfidencePenalty", "AttentionEntropy", "EATAEntropy", "LOGITS", "logits_example"]


def logits_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    return Example({"logits": (2 * torch.randn(n, k, generator=gen, dtype=torch.float64)).to(dtype)},
                   grad=("logits",))


def _logits_bad(ex: Example) -> list[BadInput]:
    z = ex.inputs["logits"]
    return [BadInput("a scalar", ex.replace({"logits": z[0, 0]}), "logits"),
            BadInput("integer logits", ex.replace({"logits": z.round().long()}), "logits")]


LOGITS = InputKind("logits", "logits (N, ..., K), the class dimension last", bad_inputs=_logits_bad,
                   extreme=scale_input("logits"), values={"logits": LOGIT_ROWS})


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    check_floating("logits", logits)
    if logits.dim() < 1 or logits.dim() == 1 and logits.shape[0] < 1:
        raise fail("logits", "shape (N, ..., K)", f"shape {tuple(logits.shape)}")
    if logits.dim() < 2:
        raise fail("logits", "shape (N, ..., K) with a batch and a class dimension", f"shape {tuple(logits.shape)}")
    return logits  # values: LOGIT_ROWS, checked by the wrapper


def entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) along ``dim``; exact at -inf logits (0 log 0 = 0)."""
    logp = torch.log_softmax(logits, dim=dim)
    p = logp.exp()
    # zero the log where p = 0 *before* the product: where(p > 0, p * logp, 0) would back-propagate
    # 0 * (-inf) = NaN into masked (-inf) logits.
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(dim)


_REG = dict(family="regularizer", input_kind=LOGITS, example=logits_example)


@objective("logit_z_loss", paper=Paper("PaLM: Scaling Language Modeling with Pathways", 2022, "2204.02311",
                                       "Chowdhery et al."),
           properties={"nonnegative"}, formula="R(z) = coefficient * (log sum_k exp z_k)^2",
           module_name="LogitZLoss", domains={"coefficient": NONNEGATIVE}, **_REG)
def logit_z_loss(logits: torch.Tensor, *, coefficient: float = 1e-4, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """PaLM's auxiliary z-loss: keeps the softmax normaliser log Z close to 0.

    .. math:: R(z) = c\\,\\big(\\log \\textstyle\\sum_k e^{z_k}\\big)^2, \\qquad c = 10^{-4}

    ``coefficient >= 0``. Not to be confused with the spherical "Z-loss" classification loss
    (``spherical_z_loss``).

    Paper: Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", 2022, arXiv:2204.02311.
    """
    _check_logits(logits)
    return finish(coefficient * torch.logsumexp(logits, dim=-1).square(), reduction, sample_weight=sample_weight)


@objective("confidence_penalty", paper=Paper("Regularizing Neural Networks by Penalizing Confident Output "
                                             "Distributions", 2017, "1701.06548", "Pereyra et al."),
           properties={"shift_invariant"}, formula="R(z) = -beta * H(softmax(z))",
           module_name="ConfidencePenalty", domains={"beta": NONNEGATIVE}, **_REG)
def confidence_penalty(logits: torch.Tensor, *, beta: float = 0.1, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Confidence penalty: minus beta times the entropy of the prediction (add it to the loss).

    .. math:: R(z) = -\\beta\\, H(\\mathrm{softmax}(z)) = \\beta \\sum_k p_k \\log p_k

    ``beta >= 0`` (a negative beta would reward confident predictions: it is then entropy minimisation).
    A fully masked (all ``-inf``) row of ``logits`` raises.

    Paper: Pereyra, Tucker, Chorowski, Kaiser, Hinton, "Regularizing Neural Networks by Penalizing
    Confident Output Distributions", 2017, arXiv:1701.06548.
    """
    _check_logits(logits)
    return finish(-beta * entropy(logits), reduction, sample_weight=sample_weight)


def _attention_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    a = torch.softmax(2 * torch.randn(4, 3, 7, generator=gen, dtype=torch.float64), -1)
    return Example({"attention": a.to(dtype)}, grad=("attention",))


def _attention_bad(ex: Example) -> list[BadInput]:
    a = ex.inputs["attention"]
    return [BadInput("not normalised", ex.replace({"attention": a * 2}), "attention"),
            BadInput("negative", ex.replace({"attention": a - 0.5}), "attention")]


ATTENTION = InputKind("attention", "attention probabilities (N, ..., L) summing to one over the keys (last dim)",
                      bad_inputs=_attention_bad,
                      extreme=lambda ex: ex.replace({"attention": torch.softmax(
                          1e4 * ex.inputs["attention"].double(), -1).float()}))


@objective("attention_entropy", seed=True, family="regularizer", input_kind=ATTENTION, example=_attention_example,
           paper=Paper("AEM: Attention Entropy Maximization for Multiple Instance Learning based Whole Slide "
                       "Image Classification", 2024),
           formula="R(a) = lam * sum_i a_i log a_i  (negative entropy; averaged over heads/queries)",
           module_name="AttentionEntropy", half=True, domains={"lam": NONNEGATIVE})
def attention_entropy(attention: torch.Tensor, *, lam: float = 0.1, sample_weight: torch.Tensor | None = None,
                      reduction: str = "mean") -> torch.Tensor:
    """Attention entropy maximisation (AEM): a negative-entropy penalty on attention weights.

    .. math:: R(a) = \\lambda \\sum_i a_i \\log a_i

    ``attention`` has shape ``(N, ..., L)`` with the keys/instances last; the per-sample term averages
    over the middle dimensions (heads, queries). Minimising it spreads attention (``lam >= 0``). The paper's
    default λ = 0.1 is used (it is the method's one hyper-parameter). Zero weights are exact
    (0 log 0 = 0).

    Paper: "AEM: Attention Entropy Maximization for Multiple Instance Learning based Whole Slide Image
    Classification", 2024.
    """
    check_probabilities("attention", attention, dim=-1)
    if attention.dim() < 2:
        raise fail("attention", "shape (N, ..., L)", f"shape {tuple(attention.shape)}")
    safe = torch.where(attention > 0, attention, torch.ones_like(attention))
    neg_h = (attention * torch.log(safe)).sum(-1)
    per = neg_h.reshape(neg_h.shape[0], -1).mean(-1) if neg_h.dim() > 1 else neg_h
    return finish(lam * per, reduction, sample_weight=sample_weight)


@objective("eata_entropy", seed=True, paper=Paper("Efficient Test-Time Model Adaptation without Forgetting", 2022,
                                       "2204.02610", "Niu et al."),
           properties={"nonnegative", "shift_invariant"},
           formula="L(z) = S(z) H(z),  S = exp(-(H - E0)) 1[H < E0] (stop-gradient),  E0 = 0.4 ln K",
           module_name="EATAEntropy", domains={"e_margin": Maybe(POSITIVE)},
           gradcheck=False,  # the weight S(z) is a stop-gradient by design: autograd != finite differences
           **_REG)
def eata_entropy(logits: torch.Tensor, *, e_margin: float | None = None, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """EATA's sample-weighted entropy minimisation for test-time adaptation.

    .. math:: L(z) = S(z)\\, H(\\mathrm{softmax}(z)), \\quad
              S(z) = \\mathrm{sg}\\big[e^{-(H - E_0)}\\big]\\, \\mathbb 1[H < E_0], \\quad E_0 = 0.4 \\ln K

    Unreliable samples (entropy above the margin E0) get weight 0; the weight is not differentiated
    (as in the paper's code). ``'mean'`` averages over all samples, filtered ones counting as 0, so
    a batch's scale does not jump with the number of samples kept; the official code
    (mr-eggplant/EATA, ``eata.py``) averages over the *selected* samples only, i.e.
    ``loss(reduction='sum') / n_selected`` (tests/oracles/test_regularizer_oracles.py); pair it with
    :func:`fisher_penalty` for the anti-forgetting term. The redundancy filter (cosine similarity to
    a moving average of predictions) is left to the training loop: pass its result as
    ``sample_weight``. ``e_margin`` E0 > 0 (entropies are >= 0, so E0 <= 0 would keep no sample;
    default 0.4 ln K). A fully masked (all ``-inf``) row of ``logits`` raises.

    Paper: Niu et al., "Efficient Test-Time Model Adaptation without Forgetting", 2022, arXiv:2204.02610.
    """
    _check_logits(logits)
    k = logits.shape[-1]
    e0 = 0.4 * math.log(k) if e_margin is None else e_margin
    h = entropy(logits)
    hd = h.detach()
    s = torch.where(hd < e0, torch.exp(-(hd - e0)), torch.zeros_like(hd))
    return finish(s * h, reduction, sample_weight=sample_weight)


LogitZLoss = logit_z_loss.Module
ConfidencePenalty = confidence_penalty.Module
AttentionEntropy = attention_entropy.Module
EATAEntropy = eata_entropy.Module
