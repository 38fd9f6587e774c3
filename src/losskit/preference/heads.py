"""Layer 3, heads on sequence scores: every pairwise head is a link function of one scaled margin.

A pairwise head forms ``u = s - s_ref`` for the chosen and rejected completions (reference-free heads
take ``u = s``), the scaled margin ``z = beta (u_w - lam u_l) - gamma`` and a link ``loss = l(z)``
(:func:`margin_loss`): logistic (DPO, cDPO), robust, hinge, squared-to-target (IPO), EXO, DiscoPOP.
Heads whose loss is not a function of the margin alone (NCA, BCO, SPPO, APO, KTO, ORPO, CPO) are written
on the same scores ``u_w, u_l``.

Every head takes ``(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
ref_rejected_logps=None, *, beta, ..., sample_weight=None, reduction='mean', return_metrics=False)`` on
``(B,)`` sequence scores (layer 2 makes them). ``return_metrics=True`` returns ``(loss, metrics)`` with
per-pair ``chosen_rewards = beta u_w``, ``rejected_rewards``, ``margins`` and ``accuracies`` (all detached).
Batch-coupled heads (AOT) are registered with ``per_sample=False``. The heads with extra inputs (anchors of
past iterates, opponents, preference probabilities, K self-samples: APO, MNPO, EGPO, D2O, DDO, CPL, MAPL)
live here too: they are pairwise heads on the same sequence scores.

Rules every head applies (declared domains, checked by the registry wrapper, and value checks that obey
:func:`losskit.set_validation`):

* ``beta > 0`` (a temperature or inverse regularisation strength: ``beta <= 0`` would train toward the
  rejected answer or divide by zero); label smoothing is a flip rate in ``[0, 1/2)`` (EXO: ``(0, 1/2)``);
* sequence scores called ``*_logps`` are log-probabilities of discrete sequences, so ``<= 0`` (up to
  :data:`~losskit.preference._inputs.LOGP_TOLERANCE`): a positive value (logits, probabilities or NLLs passed
  by mistake) raises :class:`~losskit.LossInputError` naming the argument. DDO and CPL are exempt (their
  likelihoods may be densities of continuous data or actions); preference probabilities lie in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, finish, objective
from .._core.domains import (
    COUNT,
    FLAG,
    HALF_OPEN_UNIT,
    NONNEGATIVE,
    POSITIVE,
    REAL,
    UNIT,
    Anything,
    Choice,
    Maybe,
    Real,
    Tensor,
)
from .._core.errors import fail
from .._core.validate import check_floating, check_nonnegative, describe, require
from .._core.values import FINITE, NONNEGATIVE_VALUES, PROBABILITY
from ._inputs import (
    LOGPROB_INPUTS,
    PAIR_MEAN_SCORES,
    PAIR_SCORES,
    check_logprobs,
    pair_example,
    sequence_input,
)
from .scores import _transform, geometric_anchor

__all__ = ["margin_loss", "LINKS", "pair_rewards", "dpo", "cdpo", "robust_dpo", "hinge_dpo", "ipo", "exo",
           "nca", "bco", "sppo_hard", "aot", "apo_zero", "apo_down", "discopop", "f_dpo", "kto", "orpo", "cpo",
           "simpo", "alphapo", "kto_reference_point", "ddo", "d2o", "cpl", "egpo", "mnpo", "apo", "mapl",
           "wpo", "tpo", "DPOLoss", "IPOLoss", "SimPOLoss", "ORPOLoss", "CPOLoss", "KTOLoss"]

FAMILY = "preference"
DPO_PAPER = Paper("Direct Preference Optimization: Your Language Model is Secretly a Reward Model", 2023,
                  "2305.18290", "Rafailov, Sharma, Mitchell, Ermon, Manning, Finn")
LINKS = ("logistic", "robust", "hinge", "squared", "exo", "discopop")

#: A label flip rate: below 1/2 (at 1/2 the pair carries no preference, above it trains toward the rejected).
FLIP_RATE = Real(0.0, 0.5, hi_open=True)
#: The options every pairwise head shares.
PAIR_DOMAINS = {"beta": POSITIVE}
NLL = Maybe(Tensor("a (B,) tensor of chosen NLLs (>= 0)"))
#: The options of the NLL term of ORPO, CPO and SimPO.
NLL_DOMAINS = {"nll_reduction": Choice("sequence", "token"),
               "chosen_lengths": Maybe(Tensor("a (B,) tensor of chosen token counts (>= 0, positive sum)"))}


# ------------------------------------------------------------------------------------- the abstraction
def margin_loss(z: torch.Tensor, link: str = "logistic", *, label_smoothing: float = 0.0, target: float = 0.0,
                tau: float = 0.05) -> torch.Tensor:
    """The link l(z) of a pairwise head at scaled margin z (per element, no reduction).

    * ``'logistic'``: ``-(1-eps) log sigma(z) - eps log sigma(-z)`` (DPO; eps > 0 is cDPO);
    * ``'robust'``: ``[-(1-eps) log sigma(z) + eps log sigma(-z)] / (1 - 2 eps)`` (unbiased under flips);
    * ``'hinge'``: ``relu(1 - z)``;
    * ``'squared'``: ``(z - target)^2`` (IPO);
    * ``'exo'``: ``sigma(z)[log sigma(z) - log(1-eps)] + sigma(-z)[log sigma(-z) - log eps]``;
    * ``'discopop'``: ``(1 - sigma(z/tau)) (-log sigma(z)) + sigma(z/tau) e^{-z}``, the exponential term
      formed as ``exp(-z - softplus(-z/tau))`` so that it stays finite when ``e^{-z}`` overflows.
    """
    eps = label_smoothing
    if link == "logistic":
        out = -F.logsigmoid(z)
        return out if eps == 0 else (1 - eps) * out - eps * F.logsigmoid(-z)
    if link == "robust":
        if not 0 <= eps < 0.5:
            raise fail("label_smoothing", "a flip rate in [0, 0.5)", repr(eps))
        return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    if link == "hinge":
        return torch.relu(1 - z)
    if link == "squared":
        return (z - target) ** 2
    if link == "exo":
        if not 0 < eps < 1:
            raise fail("label_smoothing", "EXO's epsilon in (0, 1)", repr(eps))
        return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
                + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))
    if link == "discopop":
        if tau <= 0:
            raise fail("tau", "a positive temperature", repr(tau))
        mod = torch.sigmoid(z / tau)
        return (1 - mod) * -F.logsigmoid(z) + torch.exp(-z - F.softplus(-z / tau))
    raise fail("link", f"one of {LINKS}", repr(link))


def _scores(name: str, x, n: int | None = None) -> torch.Tensor:
    return sequence_input(name, x, n)


def _pair(pc, pr, rc, rr):
    pc = _scores("policy_chosen_logps", pc)
    n = pc.shape[0]
    pr = _scores("policy_rejected_logps", pr, n)
    if (rc is None) != (rr is None):
        missing = "ref_rejected_logps" if rr is None else "ref_chosen_logps"
        raise fail(missing, "a tensor when the other reference score is given (or both None)", "None")
    if rc is None:
        return pc, pr
    return pc - _scores("ref_chosen_logps", rc, n), pr - _scores("ref_rejected_logps", rr, n)


def pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None):
    """Validated ``(u_w, u_l)``: policy minus reference scores, or the policy scores without a reference.

    Every argument is a ``(B,)`` tensor of sequence log-probabilities, so ``<= 0``: a positive value raises
    :class:`~losskit.LossInputError` naming it (a value check, see :func:`losskit.set_validation`).
    """
    for name, x in (("policy_chosen_logps", policy_chosen_logps), ("policy_rejected_logps", policy_rejected_logps),
                    ("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if isinstance(x, torch.Tensor):
            check_logprobs(name, x)
    return _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)


def _reference_free(ref_chosen_logps, ref_rejected_logps):
    """Reference-free heads take the reference slots of the common signature only to refuse them."""
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if x is not None:
            raise fail(name, "None (a reference-free head; subtract reference scores yourself if intended)",
                       describe(x))


def _finish(loss, reduction, sample_weight, return_metrics, chosen_rewards, rejected_rewards):
    """:func:`~losskit._core.finish`, plus the per-pair reward metrics when ``return_metrics``."""
    out = finish(loss, reduction, sample_weight=sample_weight)
    if not return_metrics:
        return out
    cr, rr = chosen_rewards.detach(), rejected_rewards.detach()
    return out, {"chosen_rewards": cr, "rejected_rewards": rr, "margins": cr - rr,
                 "accuracies": (cr > rr).to(cr.dtype)}


def _pairwise(pc, pr, rc, rr, *, beta, link, reduction, sample_weight, return_metrics, lam=1.0, gamma=0.0,
              **link_options):
    u_w, u_l = _pair(pc, pr, rc, rr)
    loss = margin_loss(beta * (u_w - lam * u_l) - gamma, link, **link_options)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


def _register(name, paper, formula, *, ref=True, mean=False, extras=None, options=None, chosen_shape=(),
              domains=None, **kw):
    kind = PAIR_MEAN_SCORES if mean else PAIR_SCORES
    return objective(name, family=FAMILY, input_kind=kind, paper=paper, formula=formula,
                     example=pair_example(ref=ref, mean=mean, extras=extras, options=options,
                                          chosen_shape=chosen_shape),
                     domains={**PAIR_DOMAINS, **(domains or {})}, **kw)


# ----------------------------------------------------------------------------------- logistic family
@_register("dpo", DPO_PAPER, "L = -log sigma(beta m),  m = (l_w - l_ref,w) - (l_l - l_ref,l)",
           module_name="DPOLoss", domains={"label_smoothing": FLIP_RATE})
def dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, label_smoothing: float = 0.0, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """Direct Preference Optimization: the logistic link of the log-ratio margin.

    .. math:: L = -\\log\\sigma(\\beta m),\\quad m = [\\ell(y_w) - \\ell_{ref}(y_w)] - [\\ell(y_l) - \\ell_{ref}(y_l)]

    ``beta > 0``; ``label_smoothing`` eps in ``[0, 1/2)`` gives conservative DPO (:func:`cdpo`). Without reference scores the margin is
    ``l_w - l_l`` (reference-free). ``dL/dl_w = -beta sigma(-beta m)``. Matches TRL's ``loss_type='sigmoid'``.

    Paper: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
    2023, arXiv:2305.18290.
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="logistic", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


CDPO_PAPER = Paper("A note on DPO with noisy preferences & relationship to IPO", 2023, None, "Mitchell")


@_register("cdpo", CDPO_PAPER, "L = -(1-eps) log sigma(beta m) - eps log sigma(-beta m)",
           domains={"label_smoothing": FLIP_RATE})
def cdpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
         beta: float = 0.1, label_smoothing: float = 0.1, sample_weight=None, reduction: str = "mean",
         return_metrics: bool = False):
    """Conservative DPO: DPO against labels flipped with probability eps (label smoothing of the pair).

    .. math:: L = -(1-\\varepsilon)\\log\\sigma(\\beta m) - \\varepsilon\\log\\sigma(-\\beta m)

    TRL's ``loss_type='sigmoid'`` with ``label_smoothing`` in TRL < 1.16 (TRL 1.16's ``sigmoid`` has none: there
    cDPO is ``(1-eps)`` sigmoid plus ``eps`` sigmoid with the pair swapped, tested in tests/test_integrations_trl.py).
    Paper: Mitchell, "A note on DPO with noisy preferences & relationship to IPO", 2023 (technical note).
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="logistic", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


ROBUST_PAPER = Paper("Provably Robust DPO: Aligning Language Models with Noisy Feedback", 2024, "2403.00409",
                     "Chowdhury, Kini, Natarajan")


@_register("robust_dpo", ROBUST_PAPER,
           "L = [-(1-eps) log sigma(beta m) + eps log sigma(-beta m)] / (1 - 2 eps)",
           domains={"label_smoothing": FLIP_RATE})
def robust_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
               beta: float = 0.1, label_smoothing: float = 0.1, sample_weight=None, reduction: str = "mean",
               return_metrics: bool = False):
    """Robust DPO (rDPO): an unbiased estimate of the clean DPO loss under labels flipped with rate eps.

    .. math:: L = \\frac{-(1-\\varepsilon)\\log\\sigma(\\beta m) + \\varepsilon\\log\\sigma(-\\beta m)}{1-2\\varepsilon}

    Averaged over flips (the pair kept with probability 1-eps, swapped with eps) it equals :func:`dpo`.
    TRL's ``loss_type='robust'``. Paper: Chowdhury, Kini, Natarajan, "Provably Robust DPO: Aligning Language
    Models with Noisy Feedback", 2024, arXiv:2403.00409.
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="robust", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


SLIC_PAPER = Paper("SLiC-HF: Sequence Likelihood Calibration with Human Feedback", 2023, "2305.10425",
                   "Zhao, Joshi, Liu, Khalman, Saleh, Liu")


@_register("hinge_dpo", SLIC_PAPER, "L = relu(1 - beta m)")
def hinge_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
              beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Hinge (SLiC) loss on the scaled log-ratio margin: ``relu(1 - beta m)``.

    TRL's ``loss_type='hinge'`` (its ``beta`` is 1/delta of the SLiC margin). Paper: Zhao et al., "SLiC-HF:
    Sequence Likelihood Calibration with Human Feedback", 2023, arXiv:2305.10425.
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="hinge", reduction=reduction, sample_weight=sample_weight,
                     return_metrics=return_metrics)


IPO_PAPER = Paper("A General Theoretical Paradigm to Understand Learning from Human Preferences", 2023,
                  "2310.12036", "Azar, Rowland, Piot, Guo, Calandriello, Valko, Munos")


@_register("ipo", IPO_PAPER, "L = (m - 1/(2 beta))^2", mean=True, module_name="IPOLoss")
def ipo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Identity Preference Optimisation: regress the log-ratio margin onto ``1/(2 beta)``.

    .. math:: L = \\left(m - \\frac{1}{2\\beta}\\right)^2

    ``beta`` is the paper's tau; the minimiser is ``m = 1/(2 beta)``. TRL's ``loss_type='ipo'`` feeds
    *length-averaged* log-probs (``aggregation='mean'`` in :func:`sequence_scores`); the paper uses sums.
    Paper: Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    2023, arXiv:2310.12036.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = margin_loss(u_w - u_l, "squared", target=1 / (2 * beta))
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


EXO_PAPER = Paper("Towards Efficient Exact Optimization of Language Model Alignment", 2024, "2402.00856",
                  "Ji, Lu, Niu, Ke, Wang, Huang")


@_register("exo", EXO_PAPER,
           "L = sigma(beta m)[log sigma(beta m) - log(1-eps)] + sigma(-beta m)[log sigma(-beta m) - log eps]",
           domains={"label_smoothing": Real(0.0, 0.5, lo_open=True, hi_open=True)})
def exo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, label_smoothing: float = 1e-3, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """EXO (pairwise): the reverse KL from the policy's pair preference to the smoothed label (eps, 1-eps).

    .. math:: L = \\sigma(\\beta m)\\,[\\log\\sigma(\\beta m) - \\log(1-\\varepsilon)]
              + \\sigma(-\\beta m)\\,[\\log\\sigma(-\\beta m) - \\log\\varepsilon]

    Non-negative, zero at ``sigma(beta m) = 1 - eps``; ``eps`` in ``(0, 1/2)`` (``log eps`` needs eps > 0; at 1/2
    the target carries no preference, above it prefers the rejected answer). TRL's ``loss_type='exo_pair'`` (eps = its
    ``label_smoothing``, 1e-3 by default). Paper: Ji et al., "Towards Efficient Exact Optimization of Language
    Model Alignment", 2024, arXiv:2402.00856 (eq. 16, K = 2).
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="exo", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


DISCOPOP_PAPER = Paper("Discovering Preference Optimization Algorithms with and for Large Language Models", 2024,
                       "2406.08414", "Chris Lu et al.")


@_register("discopop", DISCOPOP_PAPER,
           "L = (1 - sigma(beta m / tau)) (-log sigma(beta m)) + sigma(beta m / tau) exp(-beta m)",
           domains={"tau": POSITIVE})
def discopop(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
             beta: float = 0.05, tau: float = 0.05, sample_weight=None, reduction: str = "mean",
             return_metrics: bool = False):
    """DiscoPOP (log-ratio modulated loss): a sigmoid blend of the logistic and exponential losses.

    .. math:: L = (1 - \\sigma(z/\\tau))(-\\log\\sigma(z)) + \\sigma(z/\\tau)\\,e^{-z},\\quad z = \\beta m

    At m = 0 it is ``(log 2 + 1)/2``. ``tau = 0.05`` and ``beta = 0.05`` are the paper's. TRL's
    ``loss_type='discopop'``. Paper: Chris Lu et al., "Discovering Preference Optimization Algorithms with and
    for Large Language Models", 2024, arXiv:2406.08414.
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="discopop", tau=tau, reduction=reduction, sample_weight=sample_weight,
                     return_metrics=return_metrics)


FDPO_PAPER = Paper("Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse Divergence "
                   "Constraints", 2023, "2309.16240", "Wang, Jiang, Yang, Liu, Chen")


@_register("f_dpo", FDPO_PAPER, "L = -log sigma(beta [f'(e^{u_w}) - f'(e^{u_l})]),  u = l - l_ref",
           options={"divergence": "js"},
           domains={"divergence": Choice("reverse_kl", "forward_kl", "js", "alpha"), "alpha": UNIT})
def f_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
          beta: float = 0.1, divergence: str = "reverse_kl", alpha: float = 0.5, sample_weight=None,
          reduction: str = "mean", return_metrics: bool = False):
    """f-DPO: DPO under an f-divergence regulariser; the log-ratio u becomes ``f'(pi/pi_ref)``.

    .. math:: L = -\\log\\sigma\\big(\\beta f'(e^{u_w}) - \\beta f'(e^{u_l})\\big)

    ``divergence``: ``'reverse_kl'`` (f' = log t + 1, DPO), ``'forward_kl'`` (-1/t), ``'js'``
    (log(2t/(1+t))), ``'alpha'`` ((1 - t^{-alpha})/alpha, ``alpha`` in [0, 1]: 0 is the reverse-KL limit, the
    paper's range is (0, 1)); see :func:`transform_score` (exponentials that would overflow saturate, so far-out
    log-ratios give a finite loss and gradient). Rewards in the metrics are ``beta f'(e^u)``. Paper: Wang et al., "Beyond Reverse KL: Generalizing Direct Preference
    Optimization with Diverse Divergence Constraints", 2023, arXiv:2309.16240.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = _transform(u_w, divergence, alpha, beta), _transform(u_l, divergence, alpha, beta)
    loss = margin_loss(beta * (r_w - r_l))
    return _finish(loss, reduction, sample_weight, return_metrics, beta * r_w, beta * r_l)


# --------------------------------------------------------------------- non-margin heads on the same scores
NCA_PAPER = Paper("Noise Contrastive Alignment of Language Models with Explicit Rewards", 2024, "2402.05369",
                  "Chen, He, Yuan, Chen, Cai, Dong, Zhu")


@_register("nca", NCA_PAPER,
           "L = -log sigma(r_w) - 1/2 log sigma(-r_w) - 1/2 log sigma(-r_l),  r = beta (l - l_ref)")
def nca(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """NCA (pairwise): optimises absolute rewards, not only their difference; ``2 log 2`` at zero rewards.

    .. math:: L = -\\log\\sigma(r_w) - \\tfrac12\\log\\sigma(-r_w) - \\tfrac12\\log\\sigma(-r_l),\\quad
              r = \\beta(\\ell - \\ell_{ref})

    TRL's ``loss_type='nca_pair'``. Paper: Chen et al., "Noise Contrastive Alignment of Language Models with
    Explicit Rewards", 2024, arXiv:2402.05369.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * u_w, beta * u_l
    loss = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


BCO_PAPER = Paper("Binary Classifier Optimization for Large Language Model Alignment", 2024, "2404.04656",
                  "Jung, Han, Kim, Yang, Yoo")


@_register("bco", BCO_PAPER, "L = -log sigma(r_w - delta) - log sigma(-(r_l - delta)),  r = beta (l - l_ref)",
           domains={"delta": Real(tensor=True)})
def bco(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, delta: float | torch.Tensor = 0.0, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """BCO (pairwise): a binary classifier with logit ``r - delta`` on chosen (1) and rejected (0) rewards.

    .. math:: L = -\\log\\sigma(r_w - \\delta) - \\log\\sigma(-(r_l - \\delta)),\\quad r = \\beta(\\ell-\\ell_{ref})

    ``delta`` is the reward shift; the paper uses a running mean of past rewards, which is state outside the
    loss: pass it (a float or scalar tensor, detached). TRL 1.16's ``loss_type='bco_pair'`` has delta = 0. ``2 log 2`` at
    zero rewards and delta = 0. Paper: Jung et al., "Binary Classifier Optimization for Large Language Model
    Alignment", 2024, arXiv:2404.04656.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    d = delta.detach() if isinstance(delta, torch.Tensor) else delta
    r_w, r_l = beta * u_w, beta * u_l
    loss = -F.logsigmoid(r_w - d) - F.logsigmoid(-(r_l - d))
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


SPPO_PAPER = Paper("Self-Play Preference Optimization for Language Model Alignment", 2024, "2405.00675",
                   "Wu, Sun, Yuan, Ji, Yang, Gu")


@_register("sppo_hard", SPPO_PAPER, "L = (u_w - 1/(2 beta))^2 + (u_l + 1/(2 beta))^2")
def sppo_hard(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
              beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """SPPO with hard labels: each log-ratio regressed to +-1/(2 beta) (win probability 1 vs 0, minus 1/2).

    .. math:: L = \\left(u_w - \\frac{1}{2\\beta}\\right)^2 + \\left(u_l + \\frac{1}{2\\beta}\\right)^2

    TRL's ``loss_type='sppo_hard'``. Paper: Wu et al., "Self-Play Preference Optimization for Language Model
    Alignment", 2024, arXiv:2405.00675.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = (u_w - 0.5 / beta) ** 2 + (u_l + 0.5 / beta) ** 2
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


APO_ANCHORED_PAPER = Paper("Anchored Preference Optimization and Contrastive Revisions: Addressing "
                           "Underspecification in Alignment", 2024, "2408.06266", "D'Oosterlinck et al.")


@_register("apo_zero", APO_ANCHORED_PAPER, "L = (1 - sigma(r_w)) + sigma(r_l),  r = beta (l - l_ref)")
def apo_zero(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
             beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Anchored PO, APO-zero: push chosen likelihood up and rejected down (chosen better than the model).

    .. math:: L = 1 - \\sigma(r_w) + \\sigma(r_l),\\quad r = \\beta(\\ell - \\ell_{ref});\\ 1 \\text{ at } r = 0

    TRL's ``loss_type='apo_zero'``. Not :func:`~losskit.apo` (Accelerated PO). Paper: D'Oosterlinck et al.,
    "Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification in Alignment",
    2024, arXiv:2408.06266.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * u_w, beta * u_l
    loss = torch.sigmoid(-r_w) + torch.sigmoid(r_l)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


@_register("apo_down", APO_ANCHORED_PAPER, "L = sigma(r_w) + 1 - sigma(r_w - r_l),  r = beta (l - l_ref)")
def apo_down(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
             beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Anchored PO, APO-down: push both likelihoods down, rejected more (chosen worse than the model).

    .. math:: L = \\sigma(r_w) + 1 - \\sigma(r_w - r_l),\\quad r = \\beta(\\ell - \\ell_{ref})

    TRL's ``loss_type='apo_down'``. Paper: D'Oosterlinck et al., "Anchored Preference Optimization and
    Contrastive Revisions: Addressing Underspecification in Alignment", 2024, arXiv:2408.06266.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * u_w, beta * u_l
    loss = torch.sigmoid(r_w) + torch.sigmoid(r_l - r_w)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


AOT_PAPER = Paper("Distributional Preference Alignment of LLMs via Optimal Transport", 2024, "2406.05882",
                  "Melnyk, Mroueh, Belgodere, Rigotti, Nitsure, Yurochkin, Greenewald, Navratil, Ross")


@_register("aot", AOT_PAPER,
           "L_i = -(1-eps) log sigma(beta d_i) - eps log sigma(-beta d_i),  d = sort(a) - sort(b)",
           per_sample=False, sample_weight=False, domains={"label_smoothing": FLIP_RATE, "paired": FLAG})
def aot(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, label_smoothing: float = 0.0, paired: bool = True, reduction: str = "mean",
        return_metrics: bool = False):
    """Alignment via Optimal Transport: first-order stochastic dominance through sorted (quantile) margins.

    .. math:: L_i = \\ell\\big(\\beta\\,[\\mathrm{sort}(a)_i - \\mathrm{sort}(b)_i]\\big)

    with the cDPO link l. ``paired=True``: a = the policy's chosen-minus-rejected log-ratio ``l_w - l_l``,
    b = the reference's ``l_ref,w - l_ref,l`` (the policy's margin distribution must dominate the
    reference's); ``paired=False`` (unpaired data): a = ``u_w``, b = ``u_l`` (chosen rewards dominate
    rejected rewards, quantile by quantile). Batch-coupled: the i-th loss belongs to the i-th quantile, not
    to pair i (``reduction='none'`` returns losses in sorted order), so it has no sample weights.
    ``paired=True`` is TRL's ``loss_type='aot'``, ``paired=False`` its ``'aot_pair'``. Paper: Melnyk et al., "Distributional Preference Alignment
    of LLMs via Optimal Transport", 2024, arXiv:2406.05882.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if paired:
        a = policy_chosen_logps - policy_rejected_logps
        b = (ref_chosen_logps - ref_rejected_logps if ref_chosen_logps is not None else torch.zeros_like(a))
    else:
        a, b = u_w, u_l
    d = torch.sort(a, dim=0).values - torch.sort(b, dim=0).values
    loss = margin_loss(beta * d, "logistic", label_smoothing=label_smoothing)
    return _finish(loss, reduction, None, return_metrics, beta * u_w, beta * u_l)


# ------------------------------------------------------------------------------------ reference-free
ORPO_PAPER = Paper("ORPO: Monolithic Preference Optimization without Reference Model", 2024, "2403.07691",
                   "Hong, Lee, Thorne")


def _log_odds(name, lp):
    require(name, lp, lambda: lp.amax() >= 0, "length-normalised log-probabilities < 0",
            lambda: f"max {lp.max().item():.6g}")
    return lp - torch.log(-torch.expm1(lp))


def _nll(chosen_nll, n):
    """The optional (B,) chosen NLL of ORPO / CPO / SimPO: a negative log-likelihood, so >= 0."""
    return check_nonnegative("chosen_nll", _scores("chosen_nll", chosen_nll, n), "NLLs >= 0")


NLL_REDUCTIONS = ("sequence", "token")


def _nll_term(pc, chosen_nll, chosen_lengths, nll_reduction, *, mean_scores: bool):
    """Per-pair NLL of the chosen completions (ORPO, CPO, SimPO), whose mean over pairs is the batch's NLL.

    ``'sequence'``: ``chosen_nll`` as given (per pair), default ``-policy_chosen_logps`` (the token mean of
    each sequence for length-normalised scores, the sum for summed ones). ``'token'``: the token mean over
    every chosen token of the batch, ``sum_i NLL_i / sum_i n_i`` (TRL's ``nn.CrossEntropyLoss`` over the
    chosen labels, and the ORPO authors' ``outputs_pos.loss``), written per pair as ``B NLL_i / sum_j n_j``
    so that ``reduction='mean'`` gives it; ``chosen_nll`` is then each sequence's *summed* NLL, default
    ``-policy_chosen_logps * n_i`` (mean scores) or ``-policy_chosen_logps`` (summed scores), and
    ``chosen_lengths`` the ``n_i`` (required).
    """
    n = pc.shape[0]
    if nll_reduction == "sequence":
        return -pc if chosen_nll is None else _nll(chosen_nll, n)
    if nll_reduction != "token":
        raise fail("nll_reduction", f"one of {NLL_REDUCTIONS}", repr(nll_reduction))
    if chosen_lengths is None:
        raise fail("chosen_lengths", "a (B,) tensor of chosen token counts for nll_reduction='token'", "None")
    lengths = check_nonnegative("chosen_lengths", _scores("chosen_lengths", chosen_lengths.to(pc.dtype)
                                                          if isinstance(chosen_lengths, torch.Tensor)
                                                          else chosen_lengths, n), "token counts >= 0")
    total = lengths.sum()
    require("chosen_lengths", lengths, lambda: ~(total > 0), "token counts with a positive sum",
            lambda: f"sum {total.item():g}")
    if chosen_nll is None:
        seq = -pc * lengths if mean_scores else -pc
    else:
        seq = _nll(chosen_nll, n)
    return seq * (n / total)


@_register("orpo", ORPO_PAPER, "L = -lbar_w - beta log sigma(log odds(lbar_w) - log odds(lbar_l)),  "
           "odds(p) = p / (1 - p)", ref=False, mean=True, module_name="ORPOLoss",
           domains={"chosen_nll": NLL, "nll_weight": NONNEGATIVE, **NLL_DOMAINS})
def orpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
         ref_rejected_logps=None, *, beta: float = 0.1, chosen_nll=None,
         nll_weight: float = 1.0, nll_reduction: str = "sequence", chosen_lengths=None, sample_weight=None,
         reduction: str = "mean", return_metrics: bool = False):
    """ORPO: supervised NLL plus an odds-ratio preference term, no reference model.

    .. math:: L = \\mathrm{NLL}_w - \\beta\\log\\sigma\\Big(\\log\\frac{P_w}{1-P_w} - \\log\\frac{P_l}{1-P_l}\\Big),
              \\quad \\log P = \\bar\\ell \\text{ (length-normalised)}

    Scores must be length-normalised log-probs (``aggregation='mean'``), strictly negative; ``nll_weight=0``
    leaves the odds-ratio term alone. ``log(1 - P)`` is ``log(-expm1(log P))``. Rewards in the metrics are
    ``beta lbar``.

    The NLL term: ``nll_reduction='sequence'`` (default) is the mean over pairs of each sequence's NLL,
    ``chosen_nll`` or by default ``-policy_chosen_logps`` (the per-sequence token mean).
    ``nll_reduction='token'`` averages over every chosen token of the batch, as the authors' code
    (xfactlab/orpo ``src/orpo_trainer.py``: the model's ``outputs_pos.loss``) and TRL's ``ORPOTrainer``
    (``nn.CrossEntropyLoss`` over the chosen labels) do: pass ``chosen_lengths`` (B,) token counts and,
    where the NLL covers other tokens than the score (both count the prompt tokens in it by default),
    ``chosen_nll`` as each sequence's *summed* NLL; without ``chosen_nll`` it is ``-lbar_w n_w``. The two
    agree when every chosen completion has the same length. The default stays ``'sequence'`` because the
    head sees only per-sequence scores: a token mean needs the counts, which only the caller has (the
    paper's formula, eq. 6, is the per-sequence mean over the batch). Paper: Hong, Lee, Thorne, "ORPO:
    Monolithic Preference Optimization without Reference Model", 2024, arXiv:2403.07691.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)  # < 0 checked below
    ratio = _log_odds("policy_chosen_logps", pc) - _log_odds("policy_rejected_logps", pr)
    nll = _nll_term(pc, chosen_nll, chosen_lengths, nll_reduction, mean_scores=True)
    loss = nll_weight * nll - beta * F.logsigmoid(ratio)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


CPO_PAPER = Paper("Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine "
                  "Translation", 2024, "2401.08417", "Xu, Sharaf, Chen, Tan, Shen, Van Durme, Murray, Kim")


@_register("cpo", CPO_PAPER, "L = -log sigma(beta (l_w - l_l)) + alpha NLL_w", ref=False,
           module_name="CPOLoss",
           domains={"alpha": NONNEGATIVE, "chosen_nll": NLL, "label_smoothing": FLIP_RATE, **NLL_DOMAINS})
def cpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
        ref_rejected_logps=None, *, beta: float = 0.1, alpha: float = 1.0, chosen_nll=None,
        nll_reduction: str = "sequence", chosen_lengths=None, label_smoothing: float = 0.0, sample_weight=None,
        reduction: str = "mean", return_metrics: bool = False):
    """CPO: reference-free DPO plus a behaviour-cloning NLL on the chosen completion.

    .. math:: L = -\\log\\sigma(\\beta(\\ell_w - \\ell_l)) + \\alpha\\,\\mathrm{NLL}_w

    ``chosen_nll`` defaults to ``-policy_chosen_logps`` (the summed NLL of each chosen sequence).
    ``nll_reduction='token'`` with ``chosen_lengths`` (B,) token counts averages the NLL over every chosen
    token of the batch, as TRL's CPO trainer does (``chosen_nll`` is then each sequence's summed NLL,
    default ``-policy_chosen_logps``); see :func:`orpo`. Paper: Xu et al., "Contrastive Preference Optimization: Pushing the
    Boundaries of LLM Performance in Machine Translation", 2024, arXiv:2401.08417.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)
    nll = _nll_term(pc, chosen_nll, chosen_lengths, nll_reduction, mean_scores=False)
    loss = margin_loss(beta * (pc - pr), "logistic", label_smoothing=label_smoothing) + alpha * nll
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


SIMPO_PAPER = Paper("SimPO: Simple Preference Optimization with a Reference-Free Reward", 2024, "2405.14734",
                    "Meng, Xia, Chen")


@_register("simpo", SIMPO_PAPER, "L = -log sigma(beta (lbar_w - lbar_l) - gamma)", ref=False, mean=True,
           module_name="SimPOLoss",
           domains={"gamma": NONNEGATIVE, "label_smoothing": FLIP_RATE, "nll_weight": NONNEGATIVE,
                    "chosen_nll": NLL, **NLL_DOMAINS})
def simpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
          ref_rejected_logps=None, *, beta: float = 2.0, gamma: float = 1.0,
          label_smoothing: float = 0.0, nll_weight: float = 0.0, chosen_nll=None, nll_reduction: str = "sequence",
          chosen_lengths=None, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """SimPO: the length-normalised log-likelihood as reward, with a target margin gamma.

    .. math:: L = -\\log\\sigma\\big(\\beta(\\bar\\ell_w - \\bar\\ell_l) - \\gamma\\big)

    Feed length-averaged log-probs (``aggregation='mean'``). TRL's CPO trainer with ``loss_type='simpo'``
    takes ``gamma / beta`` (``simpo_gamma``... ``gamma_beta_ratio``) instead of gamma: gamma = beta x ratio,
    and adds ``cpo_alpha`` times the chosen NLL (``nll_weight`` here; 0 by default, as in the SimPO paper;
    TRL averages it over the batch's chosen tokens: ``nll_reduction='token'`` with ``chosen_lengths``, see
    :func:`orpo`). Paper: Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward", 2024,
    arXiv:2405.14734.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)
    loss = margin_loss(beta * (pc - pr) - gamma, "logistic", label_smoothing=label_smoothing)
    if nll_weight != 0:
        loss = loss + nll_weight * _nll_term(pc, chosen_nll, chosen_lengths, nll_reduction, mean_scores=True)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


ALPHAPO_PAPER = Paper("AlphaPO: Reward Shape Matters for LLM Alignment", 2025, "2501.03884", "Gupta et al.")


@_register("alphapo", ALPHAPO_PAPER, "L = -log sigma(beta (phi(lbar_w) - phi(lbar_l)) - gamma),  "
           "phi(s) = (1 - e^{-alpha s}) / alpha", ref=False, mean=True,
           domains={"gamma": NONNEGATIVE, "alpha": REAL})
def alphapo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
            ref_rejected_logps=None, *, beta: float = 2.0, gamma: float = 1.0,
            alpha: float = 0.25, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """AlphaPO: SimPO with the reward reshaped, ``r = (beta/alpha)(1 - pi(y)^{-alpha/|y|})``.

    .. math:: L = -\\log\\sigma\\big(\\beta[\\phi_\\alpha(\\bar\\ell_w) - \\phi_\\alpha(\\bar\\ell_l)] - \\gamma\\big),
              \\quad \\phi_\\alpha(s) = \\frac{1 - e^{-\\alpha s}}{\\alpha}

    ``alpha -> 0`` is :func:`simpo`; ``alpha`` may have either sign (the paper studies both), ``gamma >= 0``.
    ``e^{-alpha lbar}`` saturates where it would overflow (``alpha |lbar|`` of about 85 in float32 at the
    defaults, far beyond real log-probs): the loss stays finite and that score's gradient is 0. Paper: "AlphaPO: Reward Shape Matters for LLM Alignment", 2025,
    arXiv:2501.03884.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)
    r_w, r_l = _transform(pc, "alpha", alpha, beta), _transform(pr, "alpha", alpha, beta)
    loss = margin_loss(beta * (r_w - r_l) - gamma)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * r_w, beta * r_l)


# ------------------------------------------------------------ pairwise heads with extra inputs (ex seeds.py)
def _prob(gen, n):
    return torch.rand(n, generator=gen, dtype=torch.float64)


DDO_PAPER = Paper("Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly "
                  "a GAN Discriminator", 2025, "2503.01103", "Zheng, Chen, Wang, Zhang, Lin, Liu, Vahdat, Karras")


@_register("ddo", DDO_PAPER, "L = -log sigma(beta u(x)) - alpha log(1 - sigma(beta u(x'))),  x ~ data, x' ~ pi_ref",
           domains={"alpha": POSITIVE}, seed=True, values=dict.fromkeys(PAIR_SCORES.values, FINITE))
def ddo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 1.0,
        alpha: float = 1.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Direct Discriminative Optimization: the likelihood ratio to the reference as a GAN discriminator.

    .. math:: L = -\\log\\sigma(\\beta u(x)) - \\alpha\\log(1 - \\sigma(\\beta u(x'))),\\quad
              u = \\ell_\\theta - \\ell_{ref}

    "chosen" are data samples x, "rejected" are samples x' drawn from the reference model (unpaired: row i
    pairs one of each). ``log(1 - sigma(z)) = logsigmoid(-z)``. With ``alpha = beta = 1`` the population
    optimum over all distributions is ``pi_theta = p_data``; ``beta, alpha > 0``. The likelihoods may be
    log-densities of continuous data (diffusion models), so their sign is not checked. Paper: Zheng et al.,
    "Direct Discriminative Optimization: Your Likelihood-Based Visual Generative Model is Secretly a GAN
    Discriminator", 2025, arXiv:2503.01103.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -F.logsigmoid(beta * u_w) - alpha * F.logsigmoid(-beta * u_l)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


D2O_PAPER = Paper("Negating Negatives: Alignment without Human Positive Samples via Distributional Dispreference "
                  "Optimization", 2024, "2403.03419", "Duan, Yi, Zhang, Lu, Xie, Gu")


@_register("d2o", D2O_PAPER, "L = -log sigma((beta/K) sum_i u(y_i) - alpha u(y_l))", chosen_shape=(3,),
           domains={"alpha": POSITIVE}, seed=True)
def d2o(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
        alpha: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """D2O: distributional dispreference optimisation, K self-generated samples against a human negative.

    .. math:: L = -\\log\\sigma\\Big(\\frac{\\beta}{K}\\sum_{i\\le K} u(y_i) - \\alpha\\,u(y_l)\\Big),\\quad
              u = \\ell - \\ell_{ref}

    ``policy_chosen_logps`` / ``ref_chosen_logps``: ``(B, K)`` scores of the K self-samples (or ``(B,)``
    for K = 1); rejected: ``(B,)`` human negatives. K = 1 and ``alpha = beta`` is :func:`dpo`. The paper uses
    K = 11, alpha = beta = 0.1 (both > 0). Paper: Duan et al., "Negating Negatives: Alignment without Human
    Positive Samples via Distributional Dispreference Optimization", 2024, arXiv:2403.03419.
    """
    pc, rc = policy_chosen_logps, ref_chosen_logps
    check_floating("policy_chosen_logps", pc)
    if pc.dim() not in (1, 2):
        raise fail("policy_chosen_logps", "(B,) or (B, K) self-sample scores", describe(pc))
    if not isinstance(rc, torch.Tensor) or rc.shape != pc.shape:
        raise fail("ref_chosen_logps", f"the shape of policy_chosen_logps {tuple(pc.shape)}", describe(rc))
    check_floating("ref_chosen_logps", rc)
    pc2 = pc.reshape(pc.shape[0], -1)
    pos = (pc2 - rc.reshape(pc2.shape)).mean(-1)  # the mean self-sample log-ratio (not a log-prob)
    _, u_l = _pair(pos, policy_rejected_logps, torch.zeros_like(pos), ref_rejected_logps)
    loss = margin_loss(beta * pos - alpha * u_l)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pos, alpha * u_l)


CPL_PAPER = Paper("Contrastive Preference Learning: Learning from Human Feedback without RL", 2024, "2310.13639",
                  "Hejna, Rafailov, Sikchi, Finn, Niekum, Knox, Sadigh")


@_register("cpl", CPL_PAPER, "L = -log sigma(beta s+ - lam beta s-) + bc_weight BC,  s = sum_t gamma^t log pi,  "
           "BC = -(s+ + s-) / (2 S) (bc_data='all') or -s+ / S ('chosen')",
           ref=False, domains={"lam": NONNEGATIVE, "bc_weight": NONNEGATIVE, "bc_data": Choice("all", "chosen"),
                               "segment_length": Maybe(COUNT)}, seed=True,
           values=dict.fromkeys(PAIR_SCORES.values, FINITE))
def cpl(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
        ref_rejected_logps=None, *, beta: float = 0.1, lam: float = 0.5,
        bc_weight: float = 0.0, bc_data: str = "all", segment_length: int | None = None, sample_weight=None,
        reduction: str = "mean", return_metrics: bool = False):
    """Contrastive Preference Learning: regret-based preferences scored by discounted log-likelihoods.

    .. math:: L = -\\log\\sigma\\Big(\\alpha\\sum_t\\gamma^t\\log\\pi(a^+_t|s^+_t)
              - \\lambda\\,\\alpha\\sum_t\\gamma^t\\log\\pi(a^-_t|s^-_t)\\Big) + w_{bc}\\,\\mathrm{BC}

    ``beta`` is the paper's temperature alpha (> 0; 0.1 in the official configs); feed discounted scores
    (``aggregation='discounted'``, ``gamma``; the official code sums without discount, gamma = 1). ``lam`` is
    the conservative bias (``contrastive_bias`` in the official code, ``0 <= lam``): the default 0.5 is the
    value of the official CPL configs (jhejna/cpl ``configs/*/cpl.yaml``), which produced the paper's CPL
    results (the paper: lambda < 1 "conservative" CPL); ``lam = 1`` with gamma = 1 is reference-free DPO.

    ``bc_weight >= 0`` adds the optional behaviour-cloning term (``bc_coeff``; 1.0 with ``lam = 1`` in the
    official ``cpl_bc.yaml``), the negative mean log-likelihood per step, as the official code computes it
    (``bc_loss = (-lp).mean()`` over the (2B, S) per-step log-probs of both segments, ``bc_data='all'``, its
    default; ``'pos'`` there is ``bc_data='chosen'``, the chosen segments only). Per pair:
    ``BC = -(s+ + s-) / (2 S)`` (``'all'``) or ``-s+ / S`` (``'chosen'``), S = ``segment_length`` (the steps
    per segment; 64 in the official configs), so the mean over pairs is the official term. Without
    ``segment_length`` the term is per segment, not per step (S = 1: the summed log-likelihood, ``-s+`` for
    ``'chosen'``, this head's only form before this release). The paper's policies act in continuous
    spaces, so the scores may be log-densities: their sign is not checked. Paper: Hejna et al., "Contrastive
    Preference Learning: Learning from Human Feedback without RL", 2024, arXiv:2310.13639; official code
    jhejna/cpl ``research/algs/cpl.py``.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)
    loss = margin_loss(beta * (pc - lam * pr))
    if bc_weight != 0:
        steps = 1 if segment_length is None else segment_length
        bc = -(pc + pr) / (2 * steps) if bc_data == "all" else -pc / steps
        loss = loss + bc_weight * bc
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * lam * pr)


EGPO_PAPER = Paper("Extragradient Preference Optimization (EGPO): Beyond Last-Iterate Convergence for Nash "
                   "Learning from Human Feedback", 2025, "2503.08942", "Zhou, Li, Wang, Sun")


@_register("egpo", EGPO_PAPER, "L = ([u(y) - u(y')] - [P(y > y'') - P(y' > y'')] / beta)^2",
           extras={"chosen_preference": _prob, "rejected_preference": _prob}, seed=True,
           values={"chosen_preference": PROBABILITY, "rejected_preference": PROBABILITY})
def egpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_preference,
         rejected_preference, *, beta: float = 0.1, sample_weight=None, reduction: str = "mean",
         return_metrics: bool = False):
    """EGPO's online IPO loss: regress the log-ratio margin onto the preference-probability gap over beta.

    .. math:: L = \\Big([u(y) - u(y')] - \\frac{P(y \\succ y'') - P(y' \\succ y'')}{\\beta}\\Big)^2

    y, y' ("chosen"/"rejected": the two on-policy samples, in either order) and a third sample y'' from the
    opponent; ``*_preference`` are the preference model's ``P(y > y'')`` and ``P(y' > y'')``, probabilities in
    [0, 1]; ``beta > 0``. EGPO minimises it with an extragradient step:
    :func:`losskit.optim.extragradient_step`. Paper: Zhou et al., "Extragradient Preference Optimization
    (EGPO): Beyond Last-Iterate Convergence for Nash Learning from Human Feedback", 2025, arXiv:2503.08942.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    n = u_w.shape[0]
    pw = _scores("chosen_preference", chosen_preference, n)
    pl = _scores("rejected_preference", rejected_preference, n)
    loss = ((u_w - u_l) - (pw - pl) / beta) ** 2
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


MNPO_PAPER = Paper("Multiplayer Nash Preference Optimization", 2025, "2509.23102", "Wu et al.")


def _opp(gen, n, j=2):
    return -(0.5 + 5 * torch.rand(n, j, generator=gen, dtype=torch.float64))


def _opponent_weights(weights, j: int, like: torch.Tensor) -> torch.Tensor:
    """MNPO's lambda_j: J non-negative weights summing to 1 (uniform by default)."""
    if weights is None:
        return torch.full((j,), 1.0 / j, dtype=like.dtype, device=like.device)
    try:
        lam = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise fail("weights", f"{j} opponent weights (a sequence, array or tensor)", describe(weights)) from None
    if tuple(lam.shape) != (j,):
        raise fail("weights", f"{j} opponent weights, shape ({j},)", describe(lam))
    require("weights", lam, lambda: (lam.amin() < 0) | ((lam.sum() - 1).abs() > 1e-5) | ~torch.isfinite(lam).all(),
            "non-negative opponent weights summing to 1", lambda: repr(lam.tolist()))
    return lam


@_register("mnpo", MNPO_PAPER, "L = (h - 1/(2 beta))^2,  h = [l_w - l_l] - rho [lref_w - lref_l] "
           "- (1 - rho) sum_j lambda_j [lj_w - lj_l]",
           extras={"opponent_chosen_logps": _opp, "opponent_rejected_logps": _opp}, options={"rho": 0.5},
           domains={"rho": UNIT, "weights": Anything("None or J opponent weights lambda_j (a sequence, array or "
                                                     "tensor; non-negative, summing to 1)")}, seed=True)
def mnpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
         opponent_chosen_logps=None, opponent_rejected_logps=None, *, beta: float = 0.0075, rho: float = 1 / 3,
         weights=None, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """MNPO: IPO against a geometric mixture of the reference and J opponent policies.

    .. math:: L = \\Big(h - \\frac{1}{2\\beta}\\Big)^2,\\quad h = [\\ell_w - \\ell_l]
              - \\rho[\\ell^{ref}_w - \\ell^{ref}_l] - (1-\\rho)\\sum_j\\lambda_j[\\ell^{(j)}_w - \\ell^{(j)}_l]

    ``opponent_*_logps``: ``(B, J)`` scores under the opponents (past iterates); ``weights`` lambda_j
    (default uniform; non-negative, summing to 1: the geometric mixture's weights). ``rho`` in [0, 1];
    ``rho = 1`` is :func:`ipo` (``beta > 0`` is the paper's eta; the opponents are then not read). The
    anchor is :func:`~losskit.preference.geometric_anchor`. Equal to the authors' ``mnpo_loss``
    (smiles724/MNPO ``mnpo_scripts/mnpo_trainer.py``) with ``rho = ratio``, ``beta = eta`` and normalised
    weights. The defaults ``rho = 1/3``, ``beta = 0.0075`` are the official configs' ``ratio`` and ``eta``
    (the runs behind the paper's results), so the opponents' scores are required unless ``rho = 1``
    (before this release the defaults were ``rho = 1, beta = 0.1``: plain IPO). Paper: Wu et al.,
    "Multiplayer Nash Preference Optimization", 2025, arXiv:2509.23102.
    """
    pc = _scores("policy_chosen_logps", policy_chosen_logps)
    n = pc.shape[0]
    pr = _scores("policy_rejected_logps", policy_rejected_logps, n)
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if x is None:
            raise fail(name, "reference scores (MNPO's anchor includes the reference)", "None")
        _scores(name, x, n)
    logps, coefs = [ref_chosen_logps], [rho]
    logps_r = [ref_rejected_logps]
    if rho != 1:
        for name, o in (("opponent_chosen_logps", opponent_chosen_logps),
                        ("opponent_rejected_logps", opponent_rejected_logps)):
            if not isinstance(o, torch.Tensor) or o.dim() != 2 or o.shape[0] != n:
                raise fail(name, f"a (B={n}, J) tensor of the J opponents' (past iterates') scores: MNPO's anchor "
                                 f"mixes them in with weight 1 - rho = {1 - rho:.4g} (the default rho = 1/3 follows "
                                 "the official configs; rho=1.0 is IPO and needs no opponents)", describe(o))
            check_floating(name, o)
        j = opponent_chosen_logps.shape[1]
        if opponent_rejected_logps.shape[1] != j:
            raise fail("opponent_rejected_logps", f"{j} opponents", describe(opponent_rejected_logps))
        lam = _opponent_weights(weights, j, pc)
        for k in range(j):
            logps.append(opponent_chosen_logps[:, k])
            logps_r.append(opponent_rejected_logps[:, k])
            coefs.append((1 - rho) * lam[k])
    u_w = pc - geometric_anchor(logps, coefs)
    u_l = pr - geometric_anchor(logps_r, coefs)
    loss = margin_loss(u_w - u_l, "squared", target=1 / (2 * beta))
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


APO_PAPER = Paper("Accelerated Preference Optimization for Large Language Model Alignment", 2024, "2410.06293",
                  "He, Chen, Zhang, Gu")


@_register("apo", APO_PAPER, "DPO with l_ref = (1 + alpha) l_{t} - alpha l_{t-1}",
           extras={"prev_chosen_logps": lambda g, n: -(0.5 + 5 * torch.rand(n, generator=g, dtype=torch.float64)),
                   "prev_rejected_logps": lambda g, n: -(0.5 + 5 * torch.rand(n, generator=g, dtype=torch.float64))},
           domains={"alpha": HALF_OPEN_UNIT}, seed=True)
def apo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, prev_chosen_logps,
        prev_rejected_logps, *, beta: float = 0.1, alpha: float = 0.3, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """Accelerated Preference Optimization: iterative DPO against a Nesterov-extrapolated reference.

    .. math:: L = -\\log\\sigma(\\beta m),\\quad \\ell_{anchor} = (1+\\alpha)\\,\\ell_t - \\alpha\\,\\ell_{t-1}

    ``ref_*``: the latest iterate pi_t; ``prev_*``: the one before, pi_{t-1}. ``alpha = 0`` is iterative DPO
    (pi_t as the reference); ``alpha`` is a momentum in [0, 1). Not :func:`apo_zero` (Anchored PO). Paper: He
    et al., "Accelerated Preference Optimization for Large Language Model Alignment", 2024, arXiv:2410.06293.
    """
    pc = _scores("policy_chosen_logps", policy_chosen_logps)
    n = pc.shape[0]
    for name, x in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps), ("prev_chosen_logps", prev_chosen_logps),
                    ("prev_rejected_logps", prev_rejected_logps)):
        _scores(name, x, n)
    a_w = geometric_anchor([ref_chosen_logps, prev_chosen_logps], [1 + alpha, -alpha])
    a_l = geometric_anchor([ref_rejected_logps, prev_rejected_logps], [1 + alpha, -alpha])
    u_w, u_l = pc - a_w, policy_rejected_logps - a_l  # the extrapolated anchor is no log-prob
    return _finish(margin_loss(beta * (u_w - u_l)), reduction, sample_weight, return_metrics, beta * u_w,
                   beta * u_l)


MAPL_PAPER = Paper("Multi-level Aware Preference Learning: Enhancing RLHF for Complex Multi-Instruction Tasks",
                   2025, "2505.12845", "MAPL authors")


@_register("mapl", MAPL_PAPER, "L = -log sigma(beta [u(y | x_w) - u(y | x_l)])", seed=True)
def mapl(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
         beta: float = 0.1, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """MAPL's prompt-contrastive (inter-prompt) loss: one response scored under two prompts.

    .. math:: L = -\\log\\sigma\\big(\\beta[u(y\\mid x_w) - u(y\\mid x_l)]\\big)

    "chosen" scores are the response under the prompt it satisfies (x_w), "rejected" the same response under
    a perturbed prompt it does not (x_l). Combine with a response-contrastive head (:func:`dpo`) for the
    paper's multi-level objective. Paper: "Multi-level Aware Preference Learning: Enhancing RLHF for Complex
    Multi-Instruction Tasks", 2025, arXiv:2505.12845 (formula from the catalogue; not verified).
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return _finish(margin_loss(beta * (u_w - u_l)), reduction, sample_weight, return_metrics, beta * u_w,
                   beta * u_l)


# --------------------------------------------------------------------------------------- pointwise: KTO
# --------------------------------------------------------------------------------------- WPO and TPO
WPO_PAPER = Paper("WPO: Enhancing RLHF with Weighted Preference Optimization", 2024, "2406.11827",
                  "Zhou, Agrawal, Zhang, Cheng, Yu, Li, Zhang")


def _weight(gen, n):
    return 0.1 + 0.9 * torch.rand(n, generator=gen, dtype=torch.float64)


@_register("wpo", WPO_PAPER, "L = w(y_w) w(y_l) [-log sigma(beta m)],  w(y) = exp(mean_t log(pi(y_t) / sum_v pi(v)^2))",
           extras={"chosen_weights": _weight, "rejected_weights": _weight}, domains={"label_smoothing": FLIP_RATE},
           seed=True,
           values={"chosen_weights": NONNEGATIVE_VALUES, "rejected_weights": NONNEGATIVE_VALUES})
def wpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None,
        chosen_weights=None, rejected_weights=None, *, beta: float = 0.1, label_smoothing: float = 0.0,
        sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """Weighted Preference Optimization: DPO with each pair weighted by the policy's probability of both answers.

    .. math:: L = w(y_w)\\,w(y_l)\\,\\big[-\\log\\sigma(\\beta m)\\big],\\quad
              w(y) = \\exp\\Big(\\frac1{|y|}\\sum_t\\log\\frac{\\pi(y_t)}{\\sum_v\\pi(v)^2}\\Big)

    Off-policy preference data is reweighted toward what the current policy would sample: the weights come
    from the policy's logits (:func:`~losskit.preference.wpo_weights`, detached here whatever they carry),
    ``(B,)`` and ``>= 0``; both are required. The per-pair loss is the weighted DPO (cDPO with
    ``label_smoothing``) loss, and ``reduction='mean'`` is the plain mean of the weighted losses (not
    normalised by the weights), as TRL's ``DPOTrainer(use_weighting=True)``. Paper: Zhou et al., "WPO:
    Enhancing RLHF with Weighted Preference Optimization", 2024, arXiv:2406.11827.
    """
    u_w, u_l = _pair(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    n = u_w.shape[0]
    for name, w in (("chosen_weights", chosen_weights), ("rejected_weights", rejected_weights)):
        if w is None:
            raise fail(name, "a (B,) tensor of WPO weights (losskit.preference.wpo_weights)", "None")
        _scores(name, w, n)
    pair = (chosen_weights * rejected_weights).detach()
    loss = pair * margin_loss(beta * (u_w - u_l), "logistic", label_smoothing=label_smoothing)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


TPO_PAPER = Paper("Triple Preference Optimization: Achieving Better Alignment using a Single Step Optimization",
                  2024, "2405.16681", "Saeidi, Verma, RRV, Kumar, Baral")
TPO_LINKS = ("sigmoid", "hinge", "ipo", "tpo-l")


def _gold(gen, n):
    return 0.5 + 3 * torch.rand(n, generator=gen, dtype=torch.float64)


def _tpo_example(gen, dtype):
    ex = pair_example(ref=False, extras={"gold_nll": _gold})(gen, dtype)
    i = ex.inputs  # the reference slots stay None (a reference-free head), so the inputs are positional
    return Example({"policy_chosen_logps": i["policy_chosen_logps"], "policy_rejected_logps": i["policy_rejected_logps"],
                    "ref_chosen_logps": None, "ref_rejected_logps": None, "gold_nll": i["gold_nll"]}, ex.options,
                   grad=ex.grad, batched=("policy_chosen_logps", "policy_rejected_logps", "gold_nll"))


def _tpo_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({k: ex.inputs[k] * 2e3 for k in ("policy_chosen_logps", "policy_rejected_logps")})


TPO_SCORES = dataclasses.replace(PAIR_SCORES, name="pair scores and gold NLL",
                                 description="(B,) sequence scores of chosen and rejected completions, (B,) NLLs of "
                                             "gold completions", extreme=_tpo_extreme)


@objective("tpo", seed=True, family=FAMILY, input_kind=TPO_SCORES, paper=TPO_PAPER, example=_tpo_example,
           formula="L = l(beta (l_w - l_l)) + alpha NLL(y_gold)",
           domains={**PAIR_DOMAINS, "alpha": NONNEGATIVE, "link": Choice(*TPO_LINKS), "gamma": REAL,
                    "label_smoothing": FLIP_RATE,
                    "gold_lengths": Maybe(Tensor("a (B,) tensor of gold token counts (>= 0, positive sum)"))},
           values={"gold_nll": NONNEGATIVE_VALUES})
def tpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, gold_nll=None, *,
        beta: float = 0.01, alpha: float = 1.0, link: str = "sigmoid", gamma: float = 0.5,
        label_smoothing: float = 0.0, gold_lengths=None, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """Triple Preference Optimization: a reference-free preference term plus the NLL of a gold answer.

    .. math:: L = \\ell\\big(\\beta(\\ell_w - \\ell_l)\\big) + \\alpha\\,\\mathrm{NLL}(y_{gold})

    Each prompt has three answers: chosen, rejected and a gold (reference) one, which is imitated (the
    "reference" of TPO is this answer, not a reference model: the head is reference-free). ``link``:
    ``'sigmoid'`` ``-log sigma(beta d)`` (cDPO with ``label_smoothing``), ``'hinge'`` ``relu(1 - beta d)``,
    ``'ipo'`` ``(d - 1/(2 beta))^2``, ``'tpo-l'`` ``-log sigma(beta d - gamma)`` (TPO-L's target margin),
    ``d = l_w - l_l``; TRL's ``TPOTrainer`` feeds summed log-probs to ``'sigmoid'`` / ``'hinge'`` and
    length-normalised ones to ``'ipo'`` / ``'tpo-l'`` (pass scores aggregated accordingly). ``gold_nll``
    ``(B,)``: each gold answer's NLL, required when ``alpha > 0``: the per-sequence token mean, or, with
    ``gold_lengths`` (token counts), the summed NLL, averaged over every gold token of the batch (TRL's
    ``F.cross_entropy`` over the gold completion tokens; written per pair as ``B NLL_i / sum_j n_j``). TRL's
    defaults: ``beta = 0.01``, ``alpha = 1``, ``gamma = 0.5``. Paper: Saeidi et al., "Triple Preference
    Optimization: Achieving Better Alignment using a Single Step Optimization", 2024, arXiv:2405.16681.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = _pair(policy_chosen_logps, policy_rejected_logps, None, None)
    d = pc - pr
    if link == "sigmoid":
        loss = margin_loss(beta * d, "logistic", label_smoothing=label_smoothing)
    elif link == "hinge":
        loss = margin_loss(beta * d, "hinge")
    elif link == "ipo":
        loss = margin_loss(d, "squared", target=1 / (2 * beta))
    elif link == "tpo-l":
        loss = margin_loss(beta * d - gamma, "logistic", label_smoothing=label_smoothing)
    else:
        raise fail("link", f"one of {TPO_LINKS}", repr(link))
    if alpha != 0:
        n = pc.shape[0]
        if gold_nll is None:
            raise fail("gold_nll", "a (B,) tensor of the gold answers' NLLs when alpha != 0", "None")
        nll = _scores("gold_nll", gold_nll, n)
        if gold_lengths is not None:
            lengths = check_nonnegative("gold_lengths", _scores("gold_lengths", gold_lengths.to(pc.dtype)
                                                                if isinstance(gold_lengths, torch.Tensor)
                                                                else gold_lengths, n), "token counts >= 0")
            total = lengths.sum()
            require("gold_lengths", lengths, lambda: ~(total > 0), "token counts with a positive sum",
                    lambda: f"sum {total.item():g}")
            nll = nll * (n / total)
        loss = loss + alpha * nll
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


KTO_PAPER = Paper("KTO: Model Alignment as Prospect Theoretic Optimization", 2024, "2402.01306",
                  "Ethayarajh, Xu, Muennighoff, Jurafsky, Kiela")


def _kto_example(gen, dtype):
    ex = pair_example(extras={"desirable": lambda g, n: torch.rand(n, generator=g) < 0.5})(gen, dtype)
    i = ex.inputs
    return type(ex)({"policy_logps": i["policy_chosen_logps"], "ref_logps": i["ref_chosen_logps"],
                     "desirable": i["desirable"]}, {"reference_point": 0.05}, grad=("policy_logps", "ref_logps"))


def _kto_bad(ex):
    lp = ex.inputs["policy_logps"]
    return [BadInput("desirable of another length", ex.replace({"desirable": ex.inputs["desirable"][:-1]}),
                     "desirable"),
            BadInput("float desirable labels", ex.replace({"desirable": lp}), "desirable"),
            BadInput("reference of another length", ex.replace({"ref_logps": ex.inputs["ref_logps"][:-1]}),
                     "ref_logps")]


KTO_INPUTS = InputKind("unpaired scores", "(B,) policy and reference sequence scores with (B,) desirable flags",
                       bad_inputs=_kto_bad, extreme=PAIR_SCORES.extreme, values=LOGPROB_INPUTS)


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z0: ``max(0, mean(l - l_ref))`` over mismatched (prompt, completion) pairs, detached.

    Under data parallelism average the mean across ranks before passing it (TRL gathers it).
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp_min(0).detach()


@objective("kto", family=FAMILY, input_kind=KTO_INPUTS, example=_kto_example, paper=KTO_PAPER,
           formula="L = w_d (1 - sigma(beta (u - z0))) if desirable else w_u (1 - sigma(beta (z0 - u))),  "
                   "z0 = sg max(0, mean(l_KL - l_ref,KL)) over mismatched pairs unless given",
           module_name="KTOLoss",
           domains={"beta": POSITIVE, "reference_point": Maybe(Real(0.0, None, tensor=True)),
                    "desirable_weight": NONNEGATIVE, "undesirable_weight": NONNEGATIVE})
def kto(policy_logps, ref_logps, desirable, policy_kl_logps=None, ref_kl_logps=None, *, beta: float = 0.1,
        reference_point: float | torch.Tensor | None = None, desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """KTO: a prospect-theoretic value of each completion's implied reward against a reference point.

    .. math:: L = \\lambda_D(1 - \\sigma(\\beta(u - z_0)))\\ \\text{(desirable)},\\qquad
              \\lambda_U(1 - \\sigma(\\beta(z_0 - u)))\\ \\text{(undesirable)},\\quad u = \\ell - \\ell_{ref}

    Unpaired: one score per completion with a boolean ``desirable`` flag; the class weights are ``>= 0``.
    The reference point z0 (the paper's KL term): by default (``reference_point=None``) the batch estimate
    of the paper (sec. 4.1) and of both implementations, TRL's ``KTOTrainer`` and the authors' HALOs
    (``KTOTrainer.loss``), ``max(0, mean_j(l'_j - l'_ref,j))`` over ``policy_kl_logps`` / ``ref_kl_logps``,
    the (M,) scores of *mismatched* (prompt, completion) pairs of the batch (TRL pairs each prompt with
    another example's completion), detached (:func:`kto_reference_point`). ``reference_point`` (a number
    or scalar tensor ``>= 0``, detached) overrides it: ``0.0`` is the fixed reference point of earlier
    releases (TRL's ``apo_zero_unpaired``-style, no KL estimate) and a tensor lets you pass an estimate
    averaged over ranks (TRL gathers it; HALOs sums over ranks). Without either, the call raises: z0 has
    no silent default. Metrics: ``rewards = beta u``, the flags and ``reference_point``. Paper: Ethayarajh
    et al., "KTO: Model Alignment as Prospect Theoretic Optimization", 2024, arXiv:2402.01306.
    """
    u = _scores("policy_logps", policy_logps)
    n = u.shape[0]
    u = u - _scores("ref_logps", ref_logps, n)
    if not isinstance(desirable, torch.Tensor) or desirable.dtype != torch.bool or tuple(desirable.shape) != (n,):
        raise fail("desirable", f"a boolean tensor of shape ({n},)", describe(desirable))
    if (policy_kl_logps is None) != (ref_kl_logps is None):
        missing = "ref_kl_logps" if ref_kl_logps is None else "policy_kl_logps"
        raise fail(missing, "a tensor when the other KL score is given (or both None)", "None")
    if reference_point is not None:
        z0 = reference_point.detach() if isinstance(reference_point, torch.Tensor) else reference_point
    elif policy_kl_logps is not None:
        pk = _scores("policy_kl_logps", policy_kl_logps)
        z0 = kto_reference_point(pk, _scores("ref_kl_logps", ref_kl_logps, pk.shape[0]))
    else:
        raise fail("reference_point", "a reference point z0 >= 0, or policy_kl_logps and ref_kl_logps (the "
                   "scores of mismatched pairs) to estimate it from the batch as KTO does", "None")
    good = desirable_weight * torch.sigmoid(-beta * (u - z0))
    bad = undesirable_weight * torch.sigmoid(-beta * (z0 - u))
    loss = torch.where(desirable, good, bad)
    out = finish(loss, reduction, sample_weight=sample_weight)
    if not return_metrics:
        return out
    return out, {"rewards": (beta * u).detach(), "desirable": desirable,
                 "reference_point": torch.as_tensor(z0, dtype=u.dtype, device=u.device).detach()}


DPOLoss = dpo.Module
IPOLoss = ipo.Module
SimPOLoss = simpo.Module
ORPOLoss = orpo.Module
CPOLoss = cpo.Module
KTOLoss = kto.Module
