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
Batch-coupled heads (AOT) are registered with ``per_sample=False``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._core import BadInput, InputKind, Paper, objective, reduce
from .._core.errors import fail
from .._core.validate import check_floating, check_sample_weight, describe
from ._inputs import PAIR_MEAN_SCORES, PAIR_SCORES, pair_example
from .scores import transform_score

__all__ = ["margin_loss", "LINKS", "pair_rewards", "dpo", "cdpo", "robust_dpo", "hinge_dpo", "ipo", "exo",
           "nca", "bco", "sppo_hard", "aot", "apo_zero", "apo_down", "discopop", "f_dpo", "kto", "orpo", "cpo",
           "simpo", "alphapo", "kto_reference_point", "DPOLoss", "IPOLoss", "SimPOLoss", "ORPOLoss", "CPOLoss",
           "KTOLoss"]

FAMILY = "preference"
DPO_PAPER = Paper("Direct Preference Optimization: Your Language Model is Secretly a Reward Model", 2023,
                  "2305.18290", "Rafailov, Sharma, Mitchell, Ermon, Manning, Finn")
LINKS = ("logistic", "robust", "hinge", "squared", "exo", "discopop")


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
    check_floating(name, x)
    if x.dim() != 1:
        raise fail(name, "a (B,) tensor of sequence scores (aggregate per-token log-probs first)", describe(x))
    if n is not None and x.shape[0] != n:
        raise fail(name, f"a batch of {n} (as policy_chosen_logps)", f"shape {tuple(x.shape)}")
    return x


def pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None):
    """Validated ``(u_w, u_l)``: policy minus reference scores, or the policy scores without a reference."""
    pc = _scores("policy_chosen_logps", policy_chosen_logps)
    n = pc.shape[0]
    pr = _scores("policy_rejected_logps", policy_rejected_logps, n)
    if (ref_chosen_logps is None) != (ref_rejected_logps is None):
        missing = "ref_rejected_logps" if ref_rejected_logps is None else "ref_chosen_logps"
        raise fail(missing, "a tensor when the other reference score is given (or both None)", "None")
    if ref_chosen_logps is None:
        return pc, pr
    return pc - _scores("ref_chosen_logps", ref_chosen_logps, n), pr - _scores("ref_rejected_logps",
                                                                               ref_rejected_logps, n)


def _reference_free(ref_chosen_logps, ref_rejected_logps):
    """Reference-free heads take the reference slots of the common signature only to refuse them."""
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        if x is not None:
            raise fail(name, "None (a reference-free head; subtract reference scores yourself if intended)",
                       describe(x))


def _finish(loss, reduction, sample_weight, return_metrics, chosen_rewards, rejected_rewards):
    out = reduce(loss, reduction, weight=check_sample_weight(sample_weight, loss.shape))
    if not return_metrics:
        return out
    cr, rr = chosen_rewards.detach(), rejected_rewards.detach()
    return out, {"chosen_rewards": cr, "rejected_rewards": rr, "margins": cr - rr,
                 "accuracies": (cr > rr).to(cr.dtype)}


def _pairwise(pc, pr, rc, rr, *, beta, link, reduction, sample_weight, return_metrics, lam=1.0, gamma=0.0,
              **link_options):
    u_w, u_l = pair_rewards(pc, pr, rc, rr)
    loss = margin_loss(beta * (u_w - lam * u_l) - gamma, link, **link_options)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


def _register(name, paper, formula, *, ref=True, mean=False, extras=None, options=None, **kw):
    kind = PAIR_MEAN_SCORES if mean else PAIR_SCORES
    return objective(name, family=FAMILY, input_kind=kind, paper=paper, formula=formula,
                     example=pair_example(ref=ref, mean=mean, extras=extras, options=options), **kw)


# ----------------------------------------------------------------------------------- logistic family
@_register("dpo", DPO_PAPER, "L = -log sigma(beta m),  m = (l_w - l_ref,w) - (l_l - l_ref,l)",
           module_name="DPOLoss")
def dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, label_smoothing: float = 0.0, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """Direct Preference Optimization: the logistic link of the log-ratio margin.

    .. math:: L = -\\log\\sigma(\\beta m),\\quad m = [\\ell(y_w) - \\ell_{ref}(y_w)] - [\\ell(y_l) - \\ell_{ref}(y_l)]

    ``label_smoothing`` eps > 0 gives conservative DPO (:func:`cdpo`). Without reference scores the margin is
    ``l_w - l_l`` (reference-free). ``dL/dl_w = -beta sigma(-beta m)``. Matches TRL's ``loss_type='sigmoid'``.

    Paper: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
    2023, arXiv:2305.18290.
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="logistic", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


CDPO_PAPER = Paper("A note on DPO with noisy preferences & relationship to IPO", 2023, None, "Mitchell")


@_register("cdpo", CDPO_PAPER, "L = -(1-eps) log sigma(beta m) - eps log sigma(-beta m)")
def cdpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
         beta: float = 0.1, label_smoothing: float = 0.1, sample_weight=None, reduction: str = "mean",
         return_metrics: bool = False):
    """Conservative DPO: DPO against labels flipped with probability eps (label smoothing of the pair).

    .. math:: L = -(1-\\varepsilon)\\log\\sigma(\\beta m) - \\varepsilon\\log\\sigma(-\\beta m)

    TRL's ``loss_type='sigmoid'`` with ``label_smoothing``.
    Paper: Mitchell, "A note on DPO with noisy preferences & relationship to IPO", 2023 (technical note).
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="logistic", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


ROBUST_PAPER = Paper("Provably Robust DPO: Aligning Language Models with Noisy Feedback", 2024, "2403.00409",
                     "Chowdhury, Kini, Natarajan")


@_register("robust_dpo", ROBUST_PAPER,
           "L = [-(1-eps) log sigma(beta m) + eps log sigma(-beta m)] / (1 - 2 eps)")
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = margin_loss(u_w - u_l, "squared", target=1 / (2 * beta))
    return _finish(loss, reduction, sample_weight, return_metrics, beta * u_w, beta * u_l)


EXO_PAPER = Paper("Towards Efficient Exact Optimization of Language Model Alignment", 2024, "2402.00856",
                  "Ji, Lu, Niu, Ke, Wang, Huang")


@_register("exo", EXO_PAPER,
           "L = sigma(beta m)[log sigma(beta m) - log(1-eps)] + sigma(-beta m)[log sigma(-beta m) - log eps]")
def exo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, label_smoothing: float = 1e-3, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """EXO (pairwise): the reverse KL from the policy's pair preference to the smoothed label (eps, 1-eps).

    .. math:: L = \\sigma(\\beta m)\\,[\\log\\sigma(\\beta m) - \\log(1-\\varepsilon)]
              + \\sigma(-\\beta m)\\,[\\log\\sigma(-\\beta m) - \\log\\varepsilon]

    Non-negative, zero at ``sigma(beta m) = 1 - eps``. TRL's ``loss_type='exo_pair'`` (eps = its
    ``label_smoothing``, 1e-3 by default). Paper: Ji et al., "Towards Efficient Exact Optimization of Language
    Model Alignment", 2024, arXiv:2402.00856 (eq. 16, K = 2).
    """
    return _pairwise(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                     beta=beta, link="exo", label_smoothing=label_smoothing, reduction=reduction,
                     sample_weight=sample_weight, return_metrics=return_metrics)


DISCOPOP_PAPER = Paper("Discovering Preference Optimization Algorithms with and for Large Language Models", 2024,
                       "2406.08414", "Chris Lu et al.")


@_register("discopop", DISCOPOP_PAPER,
           "L = (1 - sigma(beta m / tau)) (-log sigma(beta m)) + sigma(beta m / tau) exp(-beta m)")
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
           options={"divergence": "js"})
def f_dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
          beta: float = 0.1, divergence: str = "reverse_kl", alpha: float = 0.5, sample_weight=None,
          reduction: str = "mean", return_metrics: bool = False):
    """f-DPO: DPO under an f-divergence regulariser; the log-ratio u becomes ``f'(pi/pi_ref)``.

    .. math:: L = -\\log\\sigma\\big(\\beta f'(e^{u_w}) - \\beta f'(e^{u_l})\\big)

    ``divergence``: ``'reverse_kl'`` (f' = log t + 1, DPO), ``'forward_kl'`` (-1/t), ``'js'``
    (log(2t/(1+t))), ``'alpha'`` ((1 - t^{-alpha})/alpha); see :func:`transform_score`. Rewards in the
    metrics are ``beta f'(e^u)``. Paper: Wang et al., "Beyond Reverse KL: Generalizing Direct Preference
    Optimization with Diverse Divergence Constraints", 2023, arXiv:2309.16240.
    """
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if divergence not in ("reverse_kl", "forward_kl", "js", "alpha"):
        raise fail("divergence", "one of 'reverse_kl', 'forward_kl', 'js', 'alpha'", repr(divergence))
    r_w, r_l = transform_score(u_w, divergence, alpha=alpha), transform_score(u_l, divergence, alpha=alpha)
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * u_w, beta * u_l
    loss = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


BCO_PAPER = Paper("Binary Classifier Optimization for Large Language Model Alignment", 2024, "2404.04656",
                  "Jung, Han, Kim, Yang, Yoo")


@_register("bco", BCO_PAPER, "L = -log sigma(r_w - delta) - log sigma(-(r_l - delta)),  r = beta (l - l_ref)")
def bco(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, *,
        beta: float = 0.1, delta: float | torch.Tensor = 0.0, sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """BCO (pairwise): a binary classifier with logit ``r - delta`` on chosen (1) and rejected (0) rewards.

    .. math:: L = -\\log\\sigma(r_w - \\delta) - \\log\\sigma(-(r_l - \\delta)),\\quad r = \\beta(\\ell-\\ell_{ref})

    ``delta`` is the reward shift; the paper and TRL (``loss_type='bco_pair'``) use a running mean of past
    rewards, which is state outside the loss: pass it (a float or scalar tensor, detached). ``2 log 2`` at
    zero rewards and delta = 0. Paper: Jung et al., "Binary Classifier Optimization for Large Language Model
    Alignment", 2024, arXiv:2404.04656.
    """
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    r_w, r_l = beta * u_w, beta * u_l
    loss = torch.sigmoid(r_w) + torch.sigmoid(r_l - r_w)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


AOT_PAPER = Paper("Distributional Preference Alignment of LLMs via Optimal Transport", 2024, "2406.05882",
                  "Melnyk, Mroueh, Belgodere, Rigotti, Nitsure, Yurochkin, Greenewald, Navratil, Ross")


@_register("aot", AOT_PAPER,
           "L_i = -(1-eps) log sigma(beta d_i) - eps log sigma(-beta d_i),  d = sort(a) - sort(b)",
           per_sample=False, sample_weight=False)
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
    u_w, u_l = pair_rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
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
    if bool((lp >= 0).any()):
        raise fail(name, "length-normalised log-probabilities < 0", f"max {lp.max().item():.6g}")
    return lp - torch.log(-torch.expm1(lp))


@_register("orpo", ORPO_PAPER, "L = -lbar_w - beta log sigma(log odds(lbar_w) - log odds(lbar_l)),  "
           "odds(p) = p / (1 - p)", ref=False, mean=True, module_name="ORPOLoss")
def orpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
         ref_rejected_logps=None, *, beta: float = 0.1, chosen_nll=None,
         nll_weight: float = 1.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """ORPO: supervised NLL plus an odds-ratio preference term, no reference model.

    .. math:: L = \\mathrm{NLL}_w - \\beta\\log\\sigma\\Big(\\log\\frac{P_w}{1-P_w} - \\log\\frac{P_l}{1-P_l}\\Big),
              \\quad \\log P = \\bar\\ell \\text{ (length-normalised)}

    Scores must be length-normalised log-probs (``aggregation='mean'``), strictly negative. ``chosen_nll``
    defaults to ``-policy_chosen_logps`` (per-sequence token-mean NLL; TRL averages the NLL over all chosen
    tokens of the batch instead); ``nll_weight=0`` leaves the odds-ratio term alone. ``log(1 - P)`` is
    ``log(-expm1(log P))``. Rewards in the metrics are ``beta lbar``. Paper: Hong, Lee, Thorne, "ORPO:
    Monolithic Preference Optimization without Reference Model", 2024, arXiv:2403.07691.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = pair_rewards(policy_chosen_logps, policy_rejected_logps)
    ratio = _log_odds("policy_chosen_logps", pc) - _log_odds("policy_rejected_logps", pr)
    nll = -pc if chosen_nll is None else _scores("chosen_nll", chosen_nll, pc.shape[0])
    loss = nll_weight * nll - beta * F.logsigmoid(ratio)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


CPO_PAPER = Paper("Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine "
                  "Translation", 2024, "2401.08417", "Xu, Sharaf, Chen, Tan, Shen, Van Durme, Murray, Kim")


@_register("cpo", CPO_PAPER, "L = -log sigma(beta (l_w - l_l)) + alpha NLL_w", ref=False,
           module_name="CPOLoss")
def cpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
        ref_rejected_logps=None, *, beta: float = 0.1, alpha: float = 1.0, chosen_nll=None,
        label_smoothing: float = 0.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """CPO: reference-free DPO plus a behaviour-cloning NLL on the chosen completion.

    .. math:: L = -\\log\\sigma(\\beta(\\ell_w - \\ell_l)) + \\alpha\\,\\mathrm{NLL}_w

    ``chosen_nll`` defaults to ``-policy_chosen_logps`` (TRL's CPO trainer uses the token-mean NLL of the
    batch's chosen tokens: pass it). Paper: Xu et al., "Contrastive Preference Optimization: Pushing the
    Boundaries of LLM Performance in Machine Translation", 2024, arXiv:2401.08417.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = pair_rewards(policy_chosen_logps, policy_rejected_logps)
    nll = -pc if chosen_nll is None else _scores("chosen_nll", chosen_nll, pc.shape[0])
    loss = margin_loss(beta * (pc - pr), "logistic", label_smoothing=label_smoothing) + alpha * nll
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


SIMPO_PAPER = Paper("SimPO: Simple Preference Optimization with a Reference-Free Reward", 2024, "2405.14734",
                    "Meng, Xia, Chen")


@_register("simpo", SIMPO_PAPER, "L = -log sigma(beta (lbar_w - lbar_l) - gamma)", ref=False, mean=True,
           module_name="SimPOLoss")
def simpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
          ref_rejected_logps=None, *, beta: float = 2.0, gamma: float = 1.0,
          label_smoothing: float = 0.0, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """SimPO: the length-normalised log-likelihood as reward, with a target margin gamma.

    .. math:: L = -\\log\\sigma\\big(\\beta(\\bar\\ell_w - \\bar\\ell_l) - \\gamma\\big)

    Feed length-averaged log-probs (``aggregation='mean'``). TRL's CPO trainer with ``loss_type='simpo'``
    takes ``gamma / beta`` (``simpo_gamma``... ``gamma_beta_ratio``) instead of gamma: gamma = beta x ratio.
    Paper: Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward", 2024,
    arXiv:2405.14734.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = pair_rewards(policy_chosen_logps, policy_rejected_logps)
    loss = margin_loss(beta * (pc - pr) - gamma, "logistic", label_smoothing=label_smoothing)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * pc, beta * pr)


ALPHAPO_PAPER = Paper("AlphaPO: Reward Shape Matters for LLM Alignment", 2025, "2501.03884", "Gupta et al.")


@_register("alphapo", ALPHAPO_PAPER, "L = -log sigma(beta (phi(lbar_w) - phi(lbar_l)) - gamma),  "
           "phi(s) = (1 - e^{-alpha s}) / alpha", ref=False, mean=True)
def alphapo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
            ref_rejected_logps=None, *, beta: float = 2.0, gamma: float = 1.0,
            alpha: float = 0.25, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """AlphaPO: SimPO with the reward reshaped, ``r = (beta/alpha)(1 - pi(y)^{-alpha/|y|})``.

    .. math:: L = -\\log\\sigma\\big(\\beta[\\phi_\\alpha(\\bar\\ell_w) - \\phi_\\alpha(\\bar\\ell_l)] - \\gamma\\big),
              \\quad \\phi_\\alpha(s) = \\frac{1 - e^{-\\alpha s}}{\\alpha}

    ``alpha -> 0`` is :func:`simpo`. Paper: "AlphaPO: Reward Shape Matters for LLM Alignment", 2025,
    arXiv:2501.03884.
    """
    _reference_free(ref_chosen_logps, ref_rejected_logps)
    pc, pr = pair_rewards(policy_chosen_logps, policy_rejected_logps)
    r_w, r_l = transform_score(pc, "alpha", alpha=alpha), transform_score(pr, "alpha", alpha=alpha)
    loss = margin_loss(beta * (r_w - r_l) - gamma)
    return _finish(loss, reduction, sample_weight, return_metrics, beta * r_w, beta * r_l)


# --------------------------------------------------------------------------------------- pointwise: KTO
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
                       bad_inputs=_kto_bad, extreme=PAIR_SCORES.extreme)


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z0: ``max(0, mean(l - l_ref))`` over mismatched (prompt, completion) pairs, detached.

    Under data parallelism average the mean across ranks before passing it (TRL gathers it).
    """
    return (policy_kl_logps - ref_kl_logps).mean().clamp_min(0).detach()


@objective("kto", family=FAMILY, input_kind=KTO_INPUTS, example=_kto_example, paper=KTO_PAPER,
           formula="L = w_d (1 - sigma(beta (u - z0))) if desirable else w_u (1 - sigma(beta (z0 - u)))",
           module_name="KTOLoss")
def kto(policy_logps, ref_logps, desirable, *, beta: float = 0.1, reference_point: float | torch.Tensor = 0.0,
        desirable_weight: float = 1.0, undesirable_weight: float = 1.0, sample_weight=None,
        reduction: str = "mean", return_metrics: bool = False):
    """KTO: a prospect-theoretic value of each completion's implied reward against a reference point.

    .. math:: L = \\lambda_D(1 - \\sigma(\\beta(u - z_0)))\\ \\text{(desirable)},\\qquad
              \\lambda_U(1 - \\sigma(\\beta(z_0 - u)))\\ \\text{(undesirable)},\\quad u = \\ell - \\ell_{ref}

    Unpaired: one score per completion with a boolean ``desirable`` flag. ``reference_point`` z0 is the
    (detached) KL estimate, see :func:`kto_reference_point`. Metrics: ``rewards = beta u`` and the flags.
    TRL's ``KTOTrainer`` (``loss_type='kto'``). Paper: Ethayarajh et al., "KTO: Model Alignment as Prospect
    Theoretic Optimization", 2024, arXiv:2402.01306.
    """
    u = _scores("policy_logps", policy_logps)
    n = u.shape[0]
    u = u - _scores("ref_logps", ref_logps, n)
    if not isinstance(desirable, torch.Tensor) or desirable.dtype != torch.bool or tuple(desirable.shape) != (n,):
        raise fail("desirable", f"a boolean tensor of shape ({n},)", describe(desirable))
    z0 = reference_point.detach() if isinstance(reference_point, torch.Tensor) else reference_point
    good = desirable_weight * torch.sigmoid(-beta * (u - z0))
    bad = undesirable_weight * torch.sigmoid(-beta * (z0 - u))
    loss = torch.where(desirable, good, bad)
    out = reduce(loss, reduction, weight=check_sample_weight(sample_weight, loss.shape))
    if not return_metrics:
        return out
    return out, {"rewards": (beta * u).detach(), "desirable": desirable}


DPOLoss = dpo.Module
IPOLoss = ipo.Module
SimPOLoss = simpo.Module
ORPOLoss = orpo.Module
CPOLoss = cpo.Module
KTOLoss = kto.Module
