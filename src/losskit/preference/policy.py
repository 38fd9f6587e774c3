"""Layer 4, policy-gradient surrogates: per-token ``-sg(weight) g(r_t) log pi`` with the aggregation explicit.

GRPO's family differs in three places, each a parameter here:

* the ratio: per token ``r_t = pi/pi_old`` or GSPO's sequence ratio ``s_i = exp(mean_t log r_t)``;
* the clip: PPO's ``min(r A, clip(r, 1-eps, 1+eps_high) A)``, dual-clip (bounded for A < 0), CISPO's
  clipped, stopped importance weight times ``log pi``, or SAPO's soft gate ``(4/tau) sigmoid(tau (r - 1)) A``;
* the aggregation of token losses ``l_it`` into one number (the one most often wrong in practice):

  =========== =================================================== ===============================
  grpo        mean_i (sum_t l_it / |y_i|)                         per-sequence mean, then mean
  bnpo        sum_it l_it / (tokens in this batch)                local token mean
  dapo        sum_it l_it / (num_items_in_batch / world_size)     global token mean
  dr_grpo     sum_it l_it / (B * max_completion_length)            constant normaliser
  luspo       mean_i (sum_t l_it)                                  per-sequence sum, then mean
  =========== =================================================== ===============================

  With ``aggregation='dapo'`` and ``num_items_in_batch`` = the completion tokens of the whole optimiser step
  (all micro-batches, all ranks; :func:`global_token_count`), summing micro-batch losses (no division by the
  number of accumulation steps) and averaging gradients over ranks (DDP) gives exactly the gradient of the
  global token mean, however the batch is split.

The other on-policy objectives live here too: f-DPG (samples of a proposal), Nash-MP's self-play surrogate
(samples of the policy with their preferences) and DisCO (groups of sampled answers with correctness labels).
Log-probabilities of sampled tokens or sequences (``logps``, ``old_logps``, ``ref_logps``, ``policy_logps``,
``proposal_logps``, ...) are ``<= 0`` (a value check naming the argument); advantages, unnormalised targets
(f-DPG's ``target_logps``) and DisCO's scores (which may be ratios) are not log-probabilities and are not
sign-checked.
"""

from __future__ import annotations

import math

import torch

from .._core import BadInput, Example, InputKind, Paper, finish, objective
from .._core.domains import (
    COUNT,
    FLAG,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Anything,
    Choice,
    Maybe,
    Real,
)
from .._core.errors import fail, warn
from .._core.validate import check_floating, describe, require
from .._core.values import PROBABILITY
from ..divergences.generators import JS, KL, REVERSE_KL, TV, FGenerator
from ._inputs import (
    GROUP_SCORES,
    LOGPROB_INPUTS,
    POLICY_TOKENS,
    check_logprobs,
    group_example,
    policy_example,
    scale_logps,
    sequence_input,
)

__all__ = ["grpo", "GRPOLoss", "gspo", "GSPOLoss", "sapo", "SAPOLoss", "luspo", "LUSPOLoss", "vespo", "VESPOLoss",
           "vespo_weights", "kl_estimate", "group_advantages", "global_token_count", "fdpg", "nash_mp",
           "disco", "disco_b", "AGGREGATIONS", "KL_ESTIMATORS"]

FAMILY = "preference"
AGGREGATIONS = ("grpo", "bnpo", "dapo", "dr_grpo", "luspo")
KL_ESTIMATORS = ("k1", "k2", "k3")
CLIPS = ("ppo", "cispo", "sapo", "vespo")
SAMPLING_CORRECTIONS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
GRPO_PAPER = Paper("DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models", 2024,
                   "2402.03300", "Shao et al.")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimators of ``KL(pi || pi_ref)`` from samples of pi (Schulman's k1, k2, k3).

    With ``x = log pi_ref - log pi``: ``k1 = -x``, ``k2 = x^2 / 2``, ``k3 = e^x - x - 1`` (unbiased,
    non-negative). As *values* k1 and k3 are unbiased. As *losses* their gradients differ: ``E[grad k1] = 0``;
    ``E[grad k2] = grad KL(pi || pi_ref)`` (the reverse KL, what the penalty means); ``E[grad k3] =
    grad KL(pi_ref || pi)`` (the forward KL: k3 in the loss is a biased reverse-KL gradient, TRL issue 4967).
    Put k1 in the reward (:func:`group_advantages`) or k2 in the loss for the reverse KL's gradient.
    """
    x = ref_logps - logps
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x * x
    if estimator == "k3":
        return torch.expm1(x) - x
    raise fail("kl_estimator", f"one of {KL_ESTIMATORS}", repr(estimator))


def group_advantages(rewards: torch.Tensor, group_size: int | None = None, *, scale: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages ``A_i = (r_i - mean_group r) / (std + eps)``.

    ``rewards``: ``(G, n)`` or flat ``(G n,)`` with ``group_size = n`` (consecutive rows form a group).
    ``scale``: ``'group'`` (GRPO: the group's std, unbiased as ``torch.std``, TRL's choice), ``'batch'``
    (the whole batch's std: REINFORCE++-style / Lite PPO), ``'none'`` (Dr. GRPO: centring only). For a KL
    penalty in the reward subtract ``beta * (kl_estimate(..., 'k1') * mask).sum(-1)`` from the rewards first.
    """
    check_floating("rewards", rewards)
    flat = rewards.dim() == 1
    if flat:
        if group_size is None or group_size < 1 or rewards.shape[0] % group_size:
            raise fail("group_size", f"a divisor of the number of rewards {rewards.shape[0]}", repr(group_size))
        r = rewards.reshape(-1, group_size)
    elif rewards.dim() == 2:
        r = rewards
    else:
        raise fail("rewards", "(G, n) or (G n,) rewards", describe(rewards))
    a = r - r.mean(-1, keepdim=True)
    if scale == "group":
        a = a / (r.std(-1, keepdim=True) + eps) if r.shape[-1] > 1 else a
    elif scale == "batch":
        a = a / (r.std() + eps)
    elif scale != "none":
        raise fail("scale", "one of 'group', 'batch', 'none'", repr(scale))
    return a.reshape(rewards.shape)


def global_token_count(mask: torch.Tensor, group=None) -> torch.Tensor:
    """The completion tokens of ``mask`` summed over the ranks of a ``torch.distributed`` group (if any).

    Pass it (summed over the micro-batches of the step) as ``num_items_in_batch`` with ``world_size``.
    """
    n = mask.sum().to(torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n, group=group)
    return n


def _aggregate(tok, mask, aggregation, max_completion_length, num_items_in_batch, world_size):
    b = tok.shape[0]
    per_seq = tok.sum(-1)
    if aggregation == "grpo":
        return per_seq / mask.sum(-1).clamp_min(1).to(tok.dtype)
    if aggregation == "bnpo" or (aggregation == "dapo" and num_items_in_batch is None):
        return per_seq * b / mask.sum().clamp_min(1).to(tok.dtype)
    if aggregation == "dapo":
        n = torch.as_tensor(num_items_in_batch, dtype=tok.dtype, device=tok.device)
        return per_seq * b * world_size / n.clamp_min(1)
    if aggregation == "dr_grpo":
        return per_seq / float(max_completion_length or tok.shape[1])
    if aggregation == "luspo":
        return per_seq
    raise fail("aggregation", f"one of {AGGREGATIONS}", repr(aggregation))


def _token_count(num_items_in_batch):
    """``num_items_in_batch``: None, or a count of tokens >= 0 (a Python number or a one-element tensor)."""
    if num_items_in_batch is None:
        return
    if isinstance(num_items_in_batch, torch.Tensor):
        if num_items_in_batch.numel() != 1 or num_items_in_batch.dtype == torch.bool:
            raise fail("num_items_in_batch", "a token count (a number or one-element tensor)",
                       describe(num_items_in_batch))
        n = num_items_in_batch
        require("num_items_in_batch", n, lambda: ~(n >= 0).all(), "a token count >= 0",
                lambda: repr(n.reshape(-1)[0].item()))
        return
    if not isinstance(num_items_in_batch, (int, float)) or isinstance(num_items_in_batch, bool) \
            or not math.isfinite(num_items_in_batch) or num_items_in_batch < 0:
        raise fail("num_items_in_batch", "a token count >= 0 (a number or one-element tensor)",
                   repr(num_items_in_batch))


GRPO_DOMAINS = {
    "beta": NONNEGATIVE, "epsilon": OPEN_UNIT, "epsilon_high": Maybe(POSITIVE),
    "dual_clip": Maybe(Real(1.0, None, lo_open=True)), "importance": Choice("token", "sequence"),
    "clip": Choice(*CLIPS), "kl_estimator": Choice(*KL_ESTIMATORS), "aggregation": Choice(*AGGREGATIONS),
    "max_completion_length": Maybe(COUNT),
    "num_items_in_batch": Anything("None or the step's completion-token count >= 0 (a number or one-element "
                                   "tensor)"),
    "world_size": COUNT,
    "sapo_tau_pos": POSITIVE, "sapo_tau_neg": POSITIVE,
    "sampling_correction": Choice(*SAMPLING_CORRECTIONS), "sampling_clip_min": Maybe(NONNEGATIVE),
    "sampling_clip_max": Maybe(POSITIVE), "top_entropy_quantile": Real(0.0, 1.0, lo_open=True),
}
#: VESPO's Gamma kernel: the power k >= 0 and the decay lambda > 0, for A >= 0 and A < 0.
VESPO_DOMAINS = {"vespo_k_pos": NONNEGATIVE, "vespo_lambda_pos": POSITIVE, "vespo_k_neg": NONNEGATIVE,
                 "vespo_lambda_neg": POSITIVE}


@objective("grpo", seed=True, family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=GRPO_PAPER,
           per_sample=False, sample_weight=False, module_name="GRPOLoss", domains={**GRPO_DOMAINS, **VESPO_DOMAINS},
           formula="l_t = -min(r_t A, clip(r_t, 1-eps, 1+eps_high) A) + beta k(log pi_ref - log pi),  "
                   "r_t = pi/pi_old; aggregated by grpo | bnpo | dapo | dr_grpo")
def grpo(logps, old_logps, advantages, mask, ref_logps=None, sampling_logps=None, entropies=None, *, beta: float = 0.0, epsilon: float = 0.2,
         epsilon_high: float | None = None, dual_clip: float | None = None, importance: str = "token",
         clip: str = "ppo", kl_estimator: str = "k3", aggregation: str = "dapo",
         max_completion_length: int | None = None, num_items_in_batch=None, world_size: int = 1,
         sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05, sampling_correction: str = "token_truncate",
         sampling_clip_min: float | None = None, sampling_clip_max: float | None = 3.0,
         top_entropy_quantile: float = 1.0, vespo_k_pos: float = 2.0, vespo_lambda_pos: float = 3.0,
         vespo_k_neg: float = 3.0, vespo_lambda_neg: float = 2.0, reduction: str = "mean",
         return_metrics: bool = False):
    """The GRPO family of clipped policy-gradient surrogates with the aggregation as a parameter.

    .. math:: \\ell_{it} = -\\min\\big(r_{it}A_i,\\ \\mathrm{clip}(r_{it}, 1-\\varepsilon, 1+\\varepsilon_h)A_i\\big)
              + \\beta\\,k(\\log\\pi_{ref} - \\log\\pi)

    Args:
        logps, old_logps, ref_logps: ``(B, T)`` per-token log-probs under the policy, the sampling policy
            (detached; equal to ``logps.detach()`` on-policy) and the reference.
        advantages: ``(B,)`` or ``(B, T)`` (:func:`group_advantages`).
        mask: ``(B, T)`` completion mask; masked tokens are never read.
        epsilon, epsilon_high: the clip range ``[1 - eps, 1 + eps_high]``, eps in (0, 1), eps_high > 0 (DAPO's
            clip-higher: eps_high > eps).
        dual_clip: c > 1 bounds the loss of negative advantages by ``-c A`` (dual-clip PPO).
        beta: the KL coefficient, >= 0.
        importance: ``'token'`` or ``'sequence'`` (GSPO: every token of sequence i uses
            ``s_i = exp(mean_t log(pi/pi_old))``, with the token's gradient). GSPO also needs its clip range
            (3e-4 / 4e-4) and per-sequence averaging: use :func:`gspo`, which has them as defaults; ``grpo``
            warns (``UserWarning``) when ``'sequence'`` meets a token-sum aggregation or the default
            ``epsilon = 0.2`` (TRL's ``GRPOTrainer`` warns for the aggregation).
        clip: ``'ppo'`` or ``'cispo'`` (``-sg(min(r, 1+eps_high)) A log pi``: the clipped weight is stopped,
            every token keeps a gradient).
        kl_estimator: ``'k1' | 'k2' | 'k3'`` (see :func:`kl_estimate` for their gradients); used if beta > 0.
        aggregation: see the module docstring; ``num_items_in_batch``, ``world_size`` for ``'dapo'``,
            ``max_completion_length`` for ``'dr_grpo'`` (default T).
        clip ``'vespo'``: VESPO's stopped Gamma weight ``phi(w)`` of the sequence ratio times ``log pi``
            (:func:`vespo`, :func:`vespo_weights`; ``vespo_k_pos``, ``vespo_lambda_pos``, ``vespo_k_neg``,
            ``vespo_lambda_neg``).
        aggregation ``'luspo'``: each sequence's token losses summed (not averaged), then the mean over
            sequences (:func:`luspo`).
        clip ``'sapo'``: SAPO's soft gate ``-(4/tau) sigmoid(tau (r - 1)) A`` instead of the hard clip, with
            ``sapo_tau_pos`` for A > 0 and ``sapo_tau_neg`` otherwise (TRL's 1.0 / 1.05; :func:`sapo`).
        sampling_logps: ``(B, T)`` log-probs under the inference engine that sampled (vLLM); with them every
            token loss is multiplied by the detached weight ``pi_old / pi_sampler`` (TRL's
            ``vllm_importance_sampling_correction``): ``sampling_correction`` ``'token_truncate'`` (clamped to
            ``[sampling_clip_min, sampling_clip_max]``, TIS, TRL's default with max 3), ``'token_mask'`` (0
            outside), ``'sequence_truncate'`` / ``'sequence_mask'`` (one weight per sequence, the exp of the
            summed log-ratio). The KL term is not weighted.
        entropies, top_entropy_quantile: with q < 1 only the tokens whose entropy is at least the (1 - q)
            quantile of this batch's completion tokens keep their policy loss (TRL's ``top_entropy_quantile``;
            "Beyond the 80/20 rule", arXiv:2506.01939, trains on the top 20%); the others still count in the
            aggregation's denominators. TRL takes the quantile over every rank's tokens: here over the call's.
        reduction: ``'none'``: per-sequence losses L_i whose mean is the aggregated loss; ``'sum'``: their sum;
            ``'mean'``: the aggregated loss.

    On-policy with group-normalised advantages the loss *value* is about 0 while its gradient is not (TRL
    issue 3452). ``return_metrics=True`` adds the per-token loss, the clipped fraction, the mean ratio and the
    mean KL. Paper: Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
    Models", 2024, arXiv:2402.03300 (GRPO); DAPO arXiv:2503.14476; Dr. GRPO arXiv:2503.20783; GSPO
    arXiv:2507.18071; CISPO arXiv:2506.13585.
    """
    if importance == "sequence" and (aggregation not in ("grpo", "luspo")
                                     or (epsilon == 0.2 and epsilon_high is None)):
        warn(
            "grpo(importance='sequence') with token-level settings (aggregation="
            f"{aggregation!r}, epsilon={epsilon}, epsilon_high={epsilon_high}): GSPO (arXiv:2507.18071) averages "
            "per sequence (aggregation='grpo') and clips the sequence ratio at 3e-4 / 4e-4; a token-sum "
            "aggregation weights each sequence by its length. Use losskit.gspo for the paper's settings.")
    return _surrogate(logps, old_logps, advantages, mask, ref_logps, beta=beta, epsilon=epsilon,
                      epsilon_high=epsilon_high, dual_clip=dual_clip, importance=importance, clip=clip,
                      kl_estimator=kl_estimator, aggregation=aggregation, max_completion_length=max_completion_length,
                      num_items_in_batch=num_items_in_batch, world_size=world_size, reduction=reduction,
                      return_metrics=return_metrics, sampling_logps=sampling_logps, entropies=entropies,
                      sapo_tau_pos=sapo_tau_pos, sapo_tau_neg=sapo_tau_neg, sampling_correction=sampling_correction,
                      sampling_clip_min=sampling_clip_min, sampling_clip_max=sampling_clip_max,
                      top_entropy_quantile=top_entropy_quantile, vespo_k_pos=vespo_k_pos,
                      vespo_lambda_pos=vespo_lambda_pos, vespo_k_neg=vespo_k_neg, vespo_lambda_neg=vespo_lambda_neg)


GSPO_PAPER = Paper("Group Sequence Policy Optimization", 2025, "2507.18071", "Zheng et al.")


@objective("gspo", family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=GSPO_PAPER,
           per_sample=False, sample_weight=False, module_name="GSPOLoss", domains=GRPO_DOMAINS,
           formula="L = -mean_i min(s_i A_i, clip(s_i, 1-eps, 1+eps_high) A_i),  "
                   "s_i = exp(mean_t log(pi/pi_old)),  eps = 3e-4, eps_high = 4e-4")
def gspo(logps, old_logps, advantages, mask, ref_logps=None, sampling_logps=None, entropies=None, *, beta: float = 0.0, epsilon: float = 3e-4,
         epsilon_high: float | None = 4e-4, dual_clip: float | None = None, importance: str = "sequence",
         clip: str = "ppo", kl_estimator: str = "k3", aggregation: str = "grpo",
         max_completion_length: int | None = None, num_items_in_batch=None, world_size: int = 1,
         sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05, sampling_correction: str = "token_truncate",
         sampling_clip_min: float | None = None, sampling_clip_max: float | None = 3.0,
         top_entropy_quantile: float = 1.0, reduction: str = "mean", return_metrics: bool = False):
    """Group Sequence Policy Optimization: :func:`grpo` with the sequence-level ratio and GSPO's defaults.

    .. math:: L = -\\frac1G\\sum_i \\min\\big(s_iA_i,\\ \\mathrm{clip}(s_i, 1-\\varepsilon, 1+\\varepsilon_h)A_i\\big),
              \\quad s_i = \\Big(\\prod_t \\frac{\\pi(y_{it})}{\\pi_{old}(y_{it})}\\Big)^{1/|y_i|}

    The same computation as :func:`grpo` (one implementation), with the defaults of the GSPO paper:
    ``importance='sequence'`` (the geometric mean of the token ratios, one clip decision per sequence),
    ``epsilon = 3e-4`` left and ``epsilon_high = 4e-4`` right (sec. 5.1), ``aggregation='grpo'`` (per-sequence
    averaging: each sequence counts once, whatever its length), no KL term (``beta = 0``). Every token of
    sequence i carries ``s_i`` with the gradient of its own log-prob (GSPO-token's form, eq. 13), which for
    per-sequence advantages equals GSPO's gradient exactly. Matches TRL's ``GRPOTrainer`` with
    ``importance_sampling_level='sequence'``, ``loss_type='grpo'``, ``epsilon=3e-4``, ``epsilon_high=4e-4``,
    ``beta=0``. Options and inputs as :func:`grpo` (a token-sum aggregation with ``importance='sequence'``
    weights sequences by length, as TRL warns). Paper: Zheng et al., "Group Sequence Policy Optimization",
    2025, arXiv:2507.18071.
    """
    return _surrogate(logps, old_logps, advantages, mask, ref_logps, beta=beta, epsilon=epsilon,
                      epsilon_high=epsilon_high, dual_clip=dual_clip, importance=importance, clip=clip,
                      kl_estimator=kl_estimator, aggregation=aggregation, max_completion_length=max_completion_length,
                      num_items_in_batch=num_items_in_batch, world_size=world_size, reduction=reduction,
                      return_metrics=return_metrics, sampling_logps=sampling_logps, entropies=entropies,
                      sapo_tau_pos=sapo_tau_pos, sapo_tau_neg=sapo_tau_neg, sampling_correction=sampling_correction,
                      sampling_clip_min=sampling_clip_min, sampling_clip_max=sampling_clip_max,
                      top_entropy_quantile=top_entropy_quantile)


SAPO_PAPER = Paper("Soft Adaptive Policy Optimization", 2025, "2511.20347", "Gao et al.")


@objective("sapo", seed=True, family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=SAPO_PAPER,
           per_sample=False, sample_weight=False, module_name="SAPOLoss", domains=GRPO_DOMAINS,
           formula="l_t = -(4/tau) sigmoid(tau (r_t - 1)) A + beta k(log pi_ref - log pi),  tau = tau_pos if A > 0 "
                   "else tau_neg,  r_t = pi/pi_old; per-sequence token means, then their mean")
def sapo(logps, old_logps, advantages, mask, ref_logps=None, sampling_logps=None, entropies=None, *,
         beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float | None = None, dual_clip: float | None = None,
         importance: str = "token", clip: str = "sapo", kl_estimator: str = "k3", aggregation: str = "grpo",
         max_completion_length: int | None = None, num_items_in_batch=None, world_size: int = 1,
         sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05, sampling_correction: str = "token_truncate",
         sampling_clip_min: float | None = None, sampling_clip_max: float | None = 3.0,
         top_entropy_quantile: float = 1.0, reduction: str = "mean", return_metrics: bool = False):
    """Soft Adaptive Policy Optimization: :func:`grpo` with a smooth, temperature-controlled gate for the clip.

    .. math:: \\ell_{it} = -\\frac{4}{\\tau_i}\\,\\sigma\\big(\\tau_i(r_{it} - 1)\\big)A_i,\\quad
              \\tau_i = \\tau_{pos}\\ [A_i > 0],\\ \\tau_{neg}\\ \\text{otherwise}

    The gate's slope ``4 sigma (1 - sigma)`` is 1 at ``r = 1`` (on-policy, the plain policy gradient) and
    decays smoothly as the ratio leaves 1, where PPO's clip cuts the gradient off; a larger ``tau_neg``
    (1.05 > 1.0) damps negative-advantage tokens faster. The same computation as :func:`grpo` (one
    implementation) with ``clip='sapo'`` and TRL's defaults for ``loss_type='sapo'``: per-token ratios,
    per-sequence token means (``aggregation='grpo'``), ``sapo_tau_pos = 1.0``, ``sapo_tau_neg = 1.05``,
    no KL term. ``epsilon`` / ``epsilon_high`` / ``dual_clip`` apply only to ``clip='ppo'``; the other
    options as :func:`grpo`. Paper: Gao et al., "Soft Adaptive Policy Optimization", 2025, arXiv:2511.20347.
    """
    return _surrogate(logps, old_logps, advantages, mask, ref_logps, beta=beta, epsilon=epsilon,
                      epsilon_high=epsilon_high, dual_clip=dual_clip, importance=importance, clip=clip,
                      kl_estimator=kl_estimator, aggregation=aggregation, max_completion_length=max_completion_length,
                      num_items_in_batch=num_items_in_batch, world_size=world_size, reduction=reduction,
                      return_metrics=return_metrics, sampling_logps=sampling_logps, entropies=entropies,
                      sapo_tau_pos=sapo_tau_pos, sapo_tau_neg=sapo_tau_neg, sampling_correction=sampling_correction,
                      sampling_clip_min=sampling_clip_min, sampling_clip_max=sampling_clip_max,
                      top_entropy_quantile=top_entropy_quantile)


LUSPO_PAPER = Paper("Length-Unbiased Sequence Policy Optimization: Revealing and Controlling Response Length "
                    "Variation in RLVR", 2026, "2602.05261", "Liu, Yin, Shi, Yang, Zeng, Qiu")


@objective("luspo", family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=LUSPO_PAPER,
           per_sample=False, sample_weight=False, module_name="LUSPOLoss", domains=GRPO_DOMAINS,
           formula="L = -mean_i |y_i| min(s_i A_i, clip(s_i, 1-eps, 1+eps_high) A_i),  "
                   "s_i = exp(mean_t log(pi/pi_old))")
def luspo(logps, old_logps, advantages, mask, ref_logps=None, sampling_logps=None, entropies=None, *,
          beta: float = 0.0, epsilon: float = 3e-4, epsilon_high: float | None = 4e-4,
          dual_clip: float | None = None, importance: str = "sequence", clip: str = "ppo", kl_estimator: str = "k3",
          aggregation: str = "luspo", max_completion_length: int | None = None, num_items_in_batch=None,
          world_size: int = 1, sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05,
          sampling_correction: str = "token_truncate", sampling_clip_min: float | None = None,
          sampling_clip_max: float | None = 3.0, top_entropy_quantile: float = 1.0, reduction: str = "mean",
          return_metrics: bool = False):
    """Length-Unbiased Sequence Policy Optimization: GSPO with each sequence's loss scaled by its length.

    .. math:: L = -\\frac1G\\sum_i |y_i|\\,\\min\\big(s_iA_i,\\ \\mathrm{clip}(s_i, 1-\\varepsilon,
              1+\\varepsilon_h)A_i\\big),\\quad s_i = \\Big(\\prod_t \\frac{\\pi(y_{it})}{\\pi_{old}(y_{it})}\\Big)^{1/|y_i|}

    GSPO (:func:`gspo`) averages each sequence's (equal) token losses, so every sequence counts once whatever
    its length, and the gradient of one token of a long answer is smaller: the paper shows this pushes GSPO
    toward short answers (length collapse). LUSPO sums them (``aggregation='luspo'``: per-sequence token
    sums, then their mean over the batch), which weights sequence i by ``|y_i|``. The same computation as
    :func:`grpo` (one implementation) with ``importance='sequence'``, GSPO's clip range ``epsilon = 3e-4``,
    ``epsilon_high = 4e-4`` (the paper trains with GSPO's settings; TRL leaves ``epsilon`` to the user) and no
    KL term. Matches TRL's ``GRPOTrainer`` with ``loss_type='luspo'``, ``importance_sampling_level='sequence'``
    (value and gradient). Options as :func:`grpo`. Paper: Liu et al., "Length-Unbiased Sequence Policy
    Optimization: Revealing and Controlling Response Length Variation in RLVR", 2026, arXiv:2602.05261.
    """
    return _surrogate(logps, old_logps, advantages, mask, ref_logps, beta=beta, epsilon=epsilon,
                      epsilon_high=epsilon_high, dual_clip=dual_clip, importance=importance, clip=clip,
                      kl_estimator=kl_estimator, aggregation=aggregation, max_completion_length=max_completion_length,
                      num_items_in_batch=num_items_in_batch, world_size=world_size, reduction=reduction,
                      return_metrics=return_metrics, sampling_logps=sampling_logps, entropies=entropies,
                      sapo_tau_pos=sapo_tau_pos, sapo_tau_neg=sapo_tau_neg, sampling_correction=sampling_correction,
                      sampling_clip_min=sampling_clip_min, sampling_clip_max=sampling_clip_max,
                      top_entropy_quantile=top_entropy_quantile)


VESPO_PAPER = Paper("VESPO: Variational Sequence-Level Soft Policy Optimization for Stable Off-Policy LLM Training",
                    2026, "2602.10693", "Shen, Zhao, Cheng, Huang, Yu")


@objective("vespo", family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=VESPO_PAPER,
           per_sample=False, sample_weight=False, module_name="VESPOLoss", domains={**GRPO_DOMAINS, **VESPO_DOMAINS},
           gradcheck=False,
           skip_reasons={"gradcheck": "a stopped-weight surrogate: its gradient is -phi(w) A grad log pi with phi "
                                      "detached, not the derivative of its value (tests check it against TRL's)"},
           formula="l_t = -sg(phi(w_i)) A_i log pi_t,  phi(w) = e^lambda w^k e^(-lambda w),  "
                   "w_i = prod_t pi/pi_old; (k, lambda) = (k_pos, lambda_pos) if A >= 0 else (k_neg, lambda_neg)")
def vespo(logps, old_logps, advantages, mask, ref_logps=None, sampling_logps=None, entropies=None, *,
          beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float | None = None,
          dual_clip: float | None = None, importance: str = "token", clip: str = "vespo", kl_estimator: str = "k3",
          aggregation: str = "dapo", max_completion_length: int | None = None, num_items_in_batch=None,
          world_size: int = 1, sapo_tau_pos: float = 1.0, sapo_tau_neg: float = 1.05,
          sampling_correction: str = "token_truncate", sampling_clip_min: float | None = None,
          sampling_clip_max: float | None = 3.0, top_entropy_quantile: float = 1.0, vespo_k_pos: float = 2.0,
          vespo_lambda_pos: float = 3.0, vespo_k_neg: float = 3.0, vespo_lambda_neg: float = 2.0,
          reduction: str = "mean", return_metrics: bool = False):
    """Variational Sequence-Level Soft Policy Optimization: a smooth Gamma kernel of the sequence ratio.

    .. math:: \\ell_{it} = -\\mathrm{sg}\\big(\\phi(w_i)\\big)A_i\\,\\log\\pi(y_{it}),\\quad
              \\phi(w) = e^{\\lambda}\\,w^{k}e^{-\\lambda w},\\quad w_i = \\prod_t\\frac{\\pi(y_{it})}{\\pi_{old}(y_{it})}

    Instead of clipping, every token of sequence i is weighted by ``phi(w_i)``, a Gamma-shaped kernel of the
    whole sequence's importance ratio (no length normalisation), with ``phi(1) = 1`` (on-policy: the plain
    policy gradient), ``phi -> 0`` as ``w -> 0`` (power ``k``) and as ``w -> inf`` (decay ``lambda``). The
    kernel is asymmetric: ``(vespo_k_pos, vespo_lambda_pos) = (2, 3)`` for ``A >= 0`` and ``(3, 2)`` for
    ``A < 0`` (TRL's and the paper's defaults). phi is computed by :func:`vespo_weights` (log-space, TRL's
    clamps) and stopped; with ``sampling_logps`` the truncated or masked token weights ``pi_old / pi_sampler``
    (``sampling_correction`` ``'token_truncate'`` or ``'token_mask'``) enter w instead of multiplying the loss.
    Aggregation ``'dapo'`` (the global token mean, TRL's for ``loss_type='vespo'``). The per-token *value* is
    ``-phi A`` (the surrogate at the sampled policy, as losskit's CISPO), TRL's is ``-phi A log pi``: the
    gradients ``-phi A grad log pi`` are equal (tests check both against TRL's ``GRPOTrainer._compute_loss``).
    ``importance`` does not apply (w is always the product of the token ratios); ``epsilon``, ``epsilon_high``, ``dual_clip`` and the SAPO options
    are not used. Paper: Shen et al., "VESPO: Variational Sequence-Level Soft Policy Optimization for Stable
    Off-Policy LLM Training", 2026, arXiv:2602.10693.
    """
    return _surrogate(logps, old_logps, advantages, mask, ref_logps, beta=beta, epsilon=epsilon,
                      epsilon_high=epsilon_high, dual_clip=dual_clip, importance=importance, clip=clip,
                      kl_estimator=kl_estimator, aggregation=aggregation, max_completion_length=max_completion_length,
                      num_items_in_batch=num_items_in_batch, world_size=world_size, reduction=reduction,
                      return_metrics=return_metrics, sampling_logps=sampling_logps, entropies=entropies,
                      sapo_tau_pos=sapo_tau_pos, sapo_tau_neg=sapo_tau_neg, sampling_correction=sampling_correction,
                      sampling_clip_min=sampling_clip_min, sampling_clip_max=sampling_clip_max,
                      top_entropy_quantile=top_entropy_quantile, vespo_k_pos=vespo_k_pos,
                      vespo_lambda_pos=vespo_lambda_pos, vespo_k_neg=vespo_k_neg, vespo_lambda_neg=vespo_lambda_neg)


def _high_entropy_mask(entropies, mask, quantile):
    """Tokens whose entropy is at least the ``1 - quantile`` quantile of the completion tokens' (TRL)."""
    if entropies is None:
        raise fail("entropies", "(B, T) per-token entropies when top_entropy_quantile < 1", "None")
    ent = entropies.detach()
    local = ent[mask].to(torch.float32 if ent.dtype in (torch.float16, torch.bfloat16) else ent.dtype)
    if local.numel() == 0:
        return torch.zeros_like(mask)
    threshold = torch.quantile(local, 1 - quantile)
    return (torch.where(mask, ent, 0.0) >= threshold) & mask


_VESPO_LOG_MIN = math.log(1e-8)


def vespo_weights(log_ratio: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
                  sampling_weights: torch.Tensor | None = None, *, k_pos: float = 2.0, lambda_pos: float = 3.0,
                  k_neg: float = 3.0, lambda_neg: float = 2.0) -> torch.Tensor:
    """VESPO's sequence weights ``phi(w) = e^lambda w^k e^(-lambda w)`` (``phi(1) = 1``), detached.

    .. math:: \\log w_i = \\mathrm{clip}\\Big(\\sum_t \\mathrm{clip}(\\log r_{it}, -20, 20)
              + \\sum_t \\mathrm{clip}(\\log c_{it}, \\log 10^{-8}, 20),\\ \\log 10^{-8},\\ 20\\Big),\\quad
              \\phi = \\exp(\\lambda + k\\log w - \\lambda w)

    ``log_ratio``: ``(B, T)`` token log-ratios ``log pi - log pi_old`` (summed over ``mask``, not averaged: the
    sequence ratio); ``sampling_weights``: optional ``(B, T)`` token weights ``c = pi_old / pi_sampler``
    (already truncated or masked) folded into w; ``advantages`` ``(B,)``, ``(B, 1)`` or ``(B, T)``: ``k_pos``,
    ``lambda_pos`` where ``A >= 0``, ``k_neg``, ``lambda_neg`` otherwise. Both sums run over ``mask`` (TRL sums
    the sampling weights' logs over every position, whose padding weights are 1: equal unless the truncation range
    excludes 1). The clamps are TRL's
    (``GRPOTrainer.get_gamma_weights``, which follows the authors' code); non-finite phi become 0. Returns
    ``(B, 1)`` (or ``(B, T)`` for per-token advantages). Paper: Shen et al., "VESPO: Variational Sequence-Level
    Soft Policy Optimization for Stable Off-Policy LLM Training", 2026, arXiv:2602.10693.
    """
    with torch.no_grad():
        m = mask.bool()
        seq = torch.where(m, log_ratio.detach().clamp(-20.0, 20.0), 0.0).sum(-1, keepdim=True)
        if sampling_weights is not None:
            lw = torch.log(sampling_weights.detach().to(seq.dtype)).clamp(_VESPO_LOG_MIN, 20.0)
            seq = seq + torch.where(m, lw, 0.0).sum(-1, keepdim=True)
        log_w = seq.clamp(_VESPO_LOG_MIN, 20.0)
        a = advantages.detach()
        a = a[:, None] if a.dim() == 1 else a
        nonneg = a >= 0
        k = torch.where(nonneg, k_pos, k_neg).to(log_w.dtype)
        lam = torch.where(nonneg, lambda_pos, lambda_neg).to(log_w.dtype)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        return phi.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def _sampling_weight(old, sampling, mask, mode, lo, hi):
    """The truncated or masked importance weight ``pi_old / pi_sampler`` (per token or per sequence), detached."""
    diff = torch.where(mask, old - sampling, 0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    w = torch.exp(diff)
    if mode.endswith("truncate"):
        return w if lo is None and hi is None else torch.clamp(w, min=lo, max=hi)
    if mode.endswith("mask"):
        bad = (w < (-math.inf if lo is None else lo)) | (w > (math.inf if hi is None else hi))
        return w.masked_fill(bad, 0.0)
    raise fail("sampling_correction", f"one of {SAMPLING_CORRECTIONS}", repr(mode))


def _surrogate(logps, old_logps, advantages, mask, ref_logps, *, beta, epsilon, epsilon_high, dual_clip, importance,
               clip, kl_estimator, aggregation, max_completion_length, num_items_in_batch, world_size, reduction,
               return_metrics, sampling_logps=None, entropies=None, sapo_tau_pos=1.0, sapo_tau_neg=1.05,
               sampling_correction="token_truncate", sampling_clip_min=None, sampling_clip_max=3.0,
               top_entropy_quantile=1.0, vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0,
               vespo_lambda_neg=2.0, token_weights=None):
    """The clipped policy-gradient surrogate of :func:`grpo` and :func:`gspo` (one implementation)."""
    check_floating("logps", logps)
    if logps.dim() != 2:
        raise fail("logps", "(B, T) per-token log-probs", describe(logps))
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps), ("sampling_logps", sampling_logps),
                    ("entropies", entropies)):
        if x is not None:
            check_floating(name, x)
            if x.shape != logps.shape:
                raise fail(name, f"shape {tuple(logps.shape)}", f"shape {tuple(x.shape)}")
    if not isinstance(mask, torch.Tensor) or mask.shape != logps.shape:
        raise fail("mask", f"a (B, T) mask of shape {tuple(logps.shape)}", describe(mask))
    check_floating("advantages", advantages)
    if advantages.shape not in (logps.shape[:1], logps.shape):
        raise fail("advantages", f"shape {tuple(logps.shape[:1])} or {tuple(logps.shape)}",
                   f"shape {tuple(advantages.shape)}")
    _token_count(num_items_in_batch)
    mask = mask.bool()
    for name, x in (("logps", logps), ("old_logps", old_logps), ("ref_logps", ref_logps),
                    ("sampling_logps", sampling_logps)):
        if x is not None:
            check_logprobs(name, x, mask)  # masked positions are never read
    zero = logps.new_zeros(())
    lp = torch.where(mask, logps, zero)
    old = torch.where(mask, old_logps, zero).detach()
    adv = advantages if advantages.dim() == 2 else advantages[:, None]
    adv = adv.detach()
    log_ratio = lp - old
    if importance == "sequence":
        seq = (log_ratio.sum(-1) / mask.sum(-1).clamp_min(1).to(lp.dtype))[:, None]
        log_ratio = seq.detach() + lp - lp.detach()
    ratio = torch.exp(log_ratio)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if clip == "ppo":
        clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
        tok = -torch.minimum(ratio * adv, clipped * adv)
        if dual_clip is not None:
            tok = torch.where(adv < 0, torch.minimum(tok, -dual_clip * adv), tok)
        is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    elif clip == "cispo":  # stopped, clipped importance weight times log pi (value -w A, gradient -w A grad log pi)
        w = torch.clamp(ratio, max=1 + eps_high).detach()
        tok = -w * adv * torch.exp(lp - lp.detach())
        is_clipped = ratio > 1 + eps_high
    elif clip == "sapo":  # SAPO's soft gate (4 / tau) sigmoid(tau (r - 1)): slope 1 at r = 1, decaying off-policy
        tau = torch.where(adv > 0, sapo_tau_pos, sapo_tau_neg).to(ratio.dtype)
        tok = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
        is_clipped = torch.zeros_like(mask)
    elif clip == "vespo":  # VESPO's Gamma kernel of the sequence ratio, a stopped weight times log pi
        sw = None
        if sampling_logps is not None:
            if not sampling_correction.startswith("token"):
                raise fail("sampling_correction", "'token_truncate' or 'token_mask' with clip='vespo' (the token "
                                                  "weights enter VESPO's sequence weight)", repr(sampling_correction))
            sw = _sampling_weight(old, torch.where(mask, sampling_logps, zero).detach(), mask, sampling_correction,
                                  sampling_clip_min, sampling_clip_max)
        # VESPO forms its own sequence weight from the token log-ratios: ``importance`` does not apply
        phi = vespo_weights((lp - old).detach(), mask, adv, sw, k_pos=vespo_k_pos, lambda_pos=vespo_lambda_pos,
                            k_neg=vespo_k_neg, lambda_neg=vespo_lambda_neg).to(lp.dtype)
        tok = -phi * adv * torch.exp(lp - lp.detach())
        is_clipped = torch.zeros_like(mask)
    else:
        raise fail("clip", f"one of {CLIPS}", repr(clip))
    if top_entropy_quantile < 1:
        tok = tok * _high_entropy_mask(entropies, mask, top_entropy_quantile)
    if sampling_logps is not None and clip != "vespo":
        tok = tok * _sampling_weight(old, torch.where(mask, sampling_logps, zero).detach(), mask,
                                     sampling_correction, sampling_clip_min, sampling_clip_max).to(tok.dtype)
    kl = None
    if beta != 0:
        if ref_logps is None:
            raise fail("ref_logps", "reference log-probs when beta != 0", "None")
        kl = kl_estimate(lp, torch.where(mask, ref_logps, zero), kl_estimator)
        tok = tok + beta * kl
    tok = torch.where(mask, tok, zero)
    per_seq = _aggregate(tok, mask, aggregation, max_completion_length, num_items_in_batch, world_size)
    out = finish(per_seq, reduction)
    if not return_metrics:
        return out
    n = mask.sum().clamp_min(1)
    metrics = {"per_token_loss": tok.detach(), "clip_fraction": (is_clipped & mask).sum() / n,
               "ratio_mean": torch.where(mask, ratio, zero).sum().detach() / n}
    if kl is not None:
        metrics["kl_mean"] = torch.where(mask, kl, zero).sum().detach() / n
    return out, metrics


# ------------------------------------------------------------------------------------------------ f-DPG
FDPG_PAPER = Paper("Aligning Language Models with Preferences through f-divergence Minimization", 2023,
                   "2302.08215", "Go, Korbak, Kruszewski, Rozen, Ryu, Dymetman")


#: f-DPG's divergences ``D_f(pi || p)`` and their generators in :mod:`losskit.divergences.generators`. The
#: names follow the f-DPG paper, which calls ``KL(pi || p)`` (f = t log t) the *reverse* KL; the generators'
#: ``'kl'`` is the same f, their ``'reverse_kl'`` (f = -log t) is f-DPG's forward KL.
FDPG_DIVERGENCES: dict[str, FGenerator] = {"reverse_kl": KL, "forward_kl": REVERSE_KL, "js": JS, "tv": TV}

#: |log t| beyond which ``t = e^{log t}`` is not a normal float64: f' is evaluated at the clipped log-ratio.
_LOG_T_BOUND = 700.0


def _fdpg_reward(log_t: torch.Tensor, divergence: str) -> torch.Tensor:
    """``R = -f'(t)`` at ``t = e^{log t}``, by the generator's f' (no gradient), in float64 where the device has it.

    ``log t`` is clipped to ``[-700, 700]``, where ``e^{log t}`` is a normal float64 and f' is finite for every
    generator (the JS f' is ``inf - inf`` at ``t = inf``): exact for the log-ratios of real samples, finite for
    any input.
    """
    gen = FDPG_DIVERGENCES[divergence]
    wide = torch.float64 if log_t.device.type != "mps" else log_t.dtype
    t = torch.exp(log_t.to(wide).clamp(-_LOG_T_BOUND, _LOG_T_BOUND))
    return -gen.f_prime(t)


def _fdpg_example(gen, dtype, n=8):
    lp = -(1 + 4 * torch.rand(3, n, generator=gen, dtype=torch.float64))
    return Example({"policy_logps": lp[0].to(dtype), "proposal_logps": lp[1].to(dtype),
                    "target_logps": lp[2].to(dtype)}, {"divergence": "js"}, grad=("policy_logps",))


def _fdpg_bad(ex):
    return [BadInput("proposal of another length", ex.replace({"proposal_logps": ex.inputs["proposal_logps"][:-1]}),
                     "proposal_logps"),
            BadInput("unknown divergence", ex.replace(options={"divergence": "hellinger"}), "divergence")]


def _fdpg_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({"policy_logps": ex.inputs["policy_logps"] * 50,
                       "target_logps": ex.inputs["target_logps"] * 50})


SAMPLED = InputKind("sampled sequences", "(B,) log-probs of samples y ~ q under the policy, the proposal q and "
                    "the unnormalised target P", bad_inputs=_fdpg_bad, extreme=_fdpg_extreme)


@objective("fdpg", seed=True, family=FAMILY, input_kind=SAMPLED, example=_fdpg_example, paper=FDPG_PAPER,
           per_sample=False, sample_weight=False, gradcheck=False,
           domains={"divergence": Choice(*FDPG_DIVERGENCES), "baseline": FLAG},
           skip_reasons={"gradcheck": "a stop-gradient surrogate: its gradient is -sg[w (R - b)] grad l by design "
                                      "(tests check the expected gradient against the exact D_f gradient on a "
                                      "tabular policy)"},
           formula="L = -mean_i sg[w_i (R_i - b)] l(y_i),  w = pi/q, R = -f'(pi/p_hat), p_hat = P / Z_hat, "
                   "Z_hat = mean P/q")
def fdpg(policy_logps, proposal_logps, target_logps, *, divergence: str = "reverse_kl", baseline: bool = True,
         reduction: str = "mean"):
    """f-DPG: the importance-weighted policy-gradient surrogate of ``D_f(pi_theta || p)``, p = P/Z.

    .. math:: L = -\\frac1B\\sum_i \\mathrm{sg}\\big[w_i(R_i - b)\\big]\\,\\ell(y_i),\\quad
              w_i = \\frac{\\pi_\\theta(y_i)}{q(y_i)},\\ R_i = -f'\\Big(\\frac{\\pi_\\theta(y_i)}{\\hat p(y_i)}\\Big),\\
              \\hat p = \\frac{P}{\\hat Z},\\ \\hat Z = \\frac1B\\sum_i\\frac{P(y_i)}{q(y_i)}

    Samples ``y_i ~ q`` (the proposal, e.g. a past policy; ``q = pi_theta`` on-policy). ``target_logps`` is
    ``log P``, the unnormalised target (RLHF: ``log pi_ref + r / beta``). ``f'``: reverse KL ``log t + 1``,
    forward KL ``-1/t``, JS ``1/2 log(2t/(1+t))``, TV ``1/2 sign(t - 1)``. ``baseline``: b = the
    importance-weighted mean of R (a control variate: the gradient's expectation is unchanged), else 0. Its
    expected gradient is ``grad D_f(pi_theta || p)`` (exactly, with exact Z). Batch-coupled (Z_hat, b).
    The authors' code (naver/disco ``disco/tuners/losses/f_divergence.py``) agrees with ``baseline=False`` and
    its Z set to the batch estimate, except for ``'js'``, where its f' is ``log(2t/(1+t))``, twice this JS
    generator's (the loss and its gradient are half of theirs: a learning-rate factor); its baseline is a
    moving average of past rewards and its Z a running estimate, state kept outside the loss.
    Paper: Go et al., "Aligning Language Models with Preferences through f-divergence Minimization", 2023,
    arXiv:2302.08215.
    """
    for name, x in (("policy_logps", policy_logps), ("proposal_logps", proposal_logps),
                    ("target_logps", target_logps)):
        check_floating(name, x)
        if x.dim() != 1 or x.shape != policy_logps.shape:
            raise fail(name, f"a (B,) tensor like policy_logps {tuple(policy_logps.shape)}", describe(x))
    check_logprobs("policy_logps", policy_logps)
    check_logprobs("proposal_logps", proposal_logps)  # target_logps is log P, unnormalised: any sign
    lp = policy_logps
    with torch.no_grad():
        n = lp.shape[0]
        log_w = lp - proposal_logps
        log_z = torch.logsumexp(target_logps - proposal_logps, 0) - math.log(n)
        r = _fdpg_reward(lp - (target_logps - log_z), divergence)
        w = torch.exp(log_w.to(r.dtype))
        # The baseline is the self-normalised mean of R: softmax weights never divide 0 by 0 (all w underflow
        # for far-out log-probs), and R is finite, so a sample of weight 0 contributes exactly 0.
        b = (torch.softmax(log_w.to(r.dtype), 0) * r).sum() if baseline else 0.0
        weight = (w * (r - b)).to(lp.dtype)
    loss = -weight * lp
    return finish(loss, reduction)


# ---------------------------------------------------------------------------------------------- Nash-MP
NASHMP_PAPER = Paper("Accelerating Nash Learning from Human Feedback via Mirror Prox", 2025, "2505.19731",
                     "Tiapkin et al.")


def _nash_example(gen, dtype, n=6):
    lp = -(0.5 + 5 * torch.rand(3, n, generator=gen, dtype=torch.float64))
    pref = torch.rand(n, generator=gen, dtype=torch.float64)
    return Example({"policy_logps": lp[0].to(dtype), "preference": pref.to(dtype),
                    "ref_logps": lp[1].to(dtype), "prev_logps": lp[2].to(dtype)}, {"beta": 0.1, "eta": 2.0},
                   grad=("policy_logps",))


def _nash_bad(ex):
    return [BadInput("preference of another length", ex.replace({"preference": ex.inputs["preference"][:-1]}),
                     "preference"),
            BadInput("per-token log-probs", ex.replace({"policy_logps": ex.inputs["policy_logps"][:, None]}),
                     "policy_logps")]


ON_POLICY = InputKind("on-policy samples", "(B,) sequence log-probs of samples y ~ pi_theta with their "
                      "preferences and the anchors' log-probs", bad_inputs=_nash_bad, extreme=scale_logps(),
                      values={**LOGPROB_INPUTS, "preference": PROBABILITY})


def _sequence(name, x, n=None):
    return sequence_input(name, x, n, like="policy_logps")


@objective("nash_mp", seed=True, family=FAMILY, input_kind=ON_POLICY, example=_nash_example, paper=NASHMP_PAPER,
           gradcheck=False, skip_reasons={"gradcheck": "a score-function surrogate: its gradient is sg(w) grad l "
                                                       "by design, not the derivative of its value (tests check the "
                                                       "expected gradient on a tabular policy)"},
           domains={"beta": NONNEGATIVE, "eta": POSITIVE},
           formula="J = -E[(P(y > y') - 1/2)] + beta KL(pi || pi_ref) + (1/eta) KL(pi || pi_k); "
                   "grad = E[w grad log pi],  w = -(P - 1/2) + beta (l - l_ref) + (l - l_k)/eta")
def nash_mp(policy_logps, preference, ref_logps, prev_logps, *, beta: float = 0.1, eta: float = 1.0,
            sample_weight=None, reduction: str = "mean"):
    """Nash-MP's regularised self-play objective as a score-function surrogate (one mirror-prox step).

    .. math:: J(\\pi) = -\\mathbb{E}_{y\\sim\\pi}[P(y\\succ y') - \\tfrac12] + \\beta\\,\\mathrm{KL}(\\pi\\|\\pi_{ref})
              + \\tfrac1\\eta\\mathrm{KL}(\\pi\\|\\pi_k)

    For samples ``y ~ pi_theta`` with ``P(y > y')`` against the opponent (``pi_k`` or its half-step), each
    sample's loss has the value ``w = -(P - 1/2) + beta (l - l_ref) + (l - l_k)/eta`` (an estimate of J's
    integrand) and the gradient ``sg(w) grad l``, whose expectation is the exact gradient of J (the score
    function's mean is 0, so KL's "+1" is dropped). A mirror-prox step applies it twice: at pi_k for the half
    step, then at the half step's opponent. ``beta >= 0`` (0: the unregularised game), the step ``eta > 0``;
    ``preference`` is a probability in [0, 1] and the three ``*_logps`` are sequence log-probabilities
    (``<= 0``). Detail not verified against the paper's code. Paper: Tiapkin et al., "Accelerating Nash
    Learning from Human Feedback via Mirror Prox", 2025, arXiv:2505.19731.
    """
    lp = _sequence("policy_logps", policy_logps)
    n = lp.shape[0]
    p = _sequence("preference", preference, n)  # values: declared by ON_POLICY (probability, log-probs)
    ref = _sequence("ref_logps", ref_logps, n)
    prev = _sequence("prev_logps", prev_logps, n)
    w = (-(p - 0.5) + beta * (lp - ref) + (lp - prev) / eta).detach()
    loss = w + w * (lp - lp.detach())
    return finish(loss, reduction, sample_weight=sample_weight)


# --------------------------------------------------------------------------------------------- DisCO
DISCO_PAPER = Paper("DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization",
                    2025, "2505.12366", "Li, Lin, Li, Yang")


def _disco(logps, labels, kl, *, tau, beta, delta, balanced, reduction, sample_weight):
    s = logps
    check_floating("logps", s)
    if s.dim() != 2:
        raise fail("logps", "a (G, n) tensor: n answer scores per question", describe(s))
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.bool:
        raise fail("labels", "a boolean (G, n) tensor of correct answers", describe(labels))
    if labels.shape != s.shape:
        raise fail("labels", f"shape {tuple(s.shape)}", f"shape {tuple(labels.shape)}")
    pos, neg = labels, ~labels
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    valid = (n_pos > 0) & (n_neg > 0)
    zero = s.new_zeros(())
    mean_pos = torch.where(pos, s, zero).sum(-1) / n_pos.clamp_min(1)
    if balanced:
        neg_term = torch.where(neg, s, zero).sum(-1) / n_neg.clamp_min(1)
    else:
        neg_inf = s.new_full((), float("-inf"))
        lse = torch.logsumexp(torch.where(neg, s / tau, neg_inf), -1)
        neg_term = tau * (torch.where(valid, lse, zero) - torch.log(n_neg.clamp_min(1).to(s.dtype)))
    loss = -(mean_pos - neg_term)
    if kl is not None:
        check_floating("kl", kl)
        if kl.dim() > 1 or (kl.dim() == 1 and kl.shape[0] != s.shape[0]):
            raise fail("kl", f"a scalar or ({s.shape[0]},) KL estimate", describe(kl))
        loss = loss + (beta * torch.relu(kl - delta)).detach() * kl
    return finish(loss, reduction, sample_weight=sample_weight, mask=valid)


DISCO_DOMAINS = {"beta": NONNEGATIVE, "delta": NONNEGATIVE}


@objective("disco", seed=True, family=FAMILY, input_kind=GROUP_SCORES, example=group_example, paper=DISCO_PAPER,
           domains={"tau": POSITIVE, **DISCO_DOMAINS},
           formula="L = -(mean_{O+} s - tau log mean_{O-} e^{s/tau}) + sg(beta [KL - delta]_+) KL")
def disco(logps, labels, kl=None, *, tau: float = 10.0, beta: float = 1e3, delta: float = 1e-4,
          sample_weight=None, reduction: str = "mean"):
    """DisCO: a discriminative objective per question, positives' mean score against a soft max of negatives.

    .. math:: L = -\\Big(\\mathrm{mean}_{O^+} s - \\tau\\log\\mathrm{mean}_{O^-} e^{s/\\tau}\\Big)
              + \\mathrm{sg}(\\beta[\\widehat{KL} - \\delta]_+)\\,\\widehat{KL}

    ``logps``: ``(G, n)`` scores of n answers to G questions, the length-normalised log-likelihood
    (``tau = 10``) or the mean token ratio (``tau = 1``; a ratio, so the scores' sign is not checked);
    ``labels``: correctness. ``kl``: the KL estimate to the old policy, per question or a scalar; the
    constraint term's gradient is ``beta [KL - delta]_+ grad KL`` (the squared-hinge penalty; ``beta >= 0``,
    the budget ``delta >= 0``, ``tau > 0``). Questions whose answers are all correct or all wrong carry no
    contrast: their loss is 0 and they are left out of the mean (the authors' code, Optimization-AI/DisCO
    ``core_algos.py``, divides the valid questions' sum by all G questions instead: its loss is this one times
    n_valid / G, the constraint term apart; its negative term is written ``S / sg(S)``, value 1 with the
    gradient of ``log S``, so only gradients agree). :func:`disco_b` is the balanced (mean) form.
    Paper: Li et al., "DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization",
    2025, arXiv:2505.12366.
    """
    return _disco(logps, labels, kl, tau=tau, beta=beta, delta=delta, balanced=False, reduction=reduction,
                  sample_weight=sample_weight)


@objective("disco_b", seed=True, family=FAMILY, input_kind=GROUP_SCORES, example=group_example, paper=DISCO_PAPER,
           domains=DISCO_DOMAINS,
           formula="L = -(mean_{O+} s - mean_{O-} s) + sg(beta [KL - delta]_+) KL")
def disco_b(logps, labels, kl=None, *, beta: float = 1e3, delta: float = 1e-4, sample_weight=None,
            reduction: str = "mean"):
    """DisCO-b: DisCO with the balanced (plain mean) negative term.

    .. math:: L = -(\\mathrm{mean}_{O^+} s - \\mathrm{mean}_{O^-} s)
              + \\mathrm{sg}(\\beta[\\widehat{KL} - \\delta]_+)\\,\\widehat{KL}

    See :func:`disco`. Paper: Li et al., "DisCO: Reinforcing Large Reasoning Models with Discriminative
    Constrained Optimization", 2025, arXiv:2505.12366.
    """
    return _disco(logps, labels, kl, tau=1.0, beta=beta, delta=delta, balanced=True, reduction=reduction,
                  sample_weight=sample_weight)


GRPOLoss = grpo.Module
GSPOLoss = gspo.Module
SAPOLoss = sapo.Module
LUSPOLoss = luspo.Module
VESPOLoss = vespo.Module
