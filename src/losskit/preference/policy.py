"""Layer 4, policy-gradient surrogates: per-token ``-sg(weight) g(r_t) log pi`` with the aggregation explicit.

GRPO's family differs in three places, each a parameter here:

* the ratio: per token ``r_t = pi/pi_old`` or GSPO's sequence ratio ``s_i = exp(mean_t log r_t)``;
* the clip: PPO's ``min(r A, clip(r, 1-eps, 1+eps_high) A)``, dual-clip (bounded for A < 0), or CISPO's
  clipped, stopped importance weight times ``log pi``;
* the aggregation of token losses ``l_it`` into one number (the one most often wrong in practice):

  =========== =================================================== ===============================
  grpo        mean_i (sum_t l_it / |y_i|)                         per-sequence mean, then mean
  bnpo        sum_it l_it / (tokens in this batch)                local token mean
  dapo        sum_it l_it / (num_items_in_batch / world_size)     global token mean
  dr_grpo     sum_it l_it / (B * max_completion_length)            constant normaliser
  =========== =================================================== ===============================

  With ``aggregation='dapo'`` and ``num_items_in_batch`` = the completion tokens of the whole optimiser step
  (all micro-batches, all ranks; :func:`global_token_count`), summing micro-batch losses (no division by the
  number of accumulation steps) and averaging gradients over ranks (DDP) gives exactly the gradient of the
  global token mean, however the batch is split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, objective
from .._core.errors import fail
from .._core.validate import check_floating, describe
from ._inputs import POLICY_TOKENS, policy_example

__all__ = ["grpo", "GRPOLoss", "kl_estimate", "group_advantages", "global_token_count", "fdpg", "AGGREGATIONS",
           "KL_ESTIMATORS"]

FAMILY = "preference"
AGGREGATIONS = ("grpo", "bnpo", "dapo", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
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
    raise fail("aggregation", f"one of {AGGREGATIONS}", repr(aggregation))


@objective("grpo", family=FAMILY, input_kind=POLICY_TOKENS, example=policy_example, paper=GRPO_PAPER,
           per_sample=False, sample_weight=False, module_name="GRPOLoss",
           formula="l_t = -min(r_t A, clip(r_t, 1-eps, 1+eps_high) A) + beta k(log pi_ref - log pi),  "
                   "r_t = pi/pi_old; aggregated by grpo | bnpo | dapo | dr_grpo")
def grpo(logps, old_logps, advantages, mask, ref_logps=None, *, beta: float = 0.0, epsilon: float = 0.2,
         epsilon_high: float | None = None, dual_clip: float | None = None, importance: str = "token",
         clip: str = "ppo", kl_estimator: str = "k3", aggregation: str = "dapo",
         max_completion_length: int | None = None, num_items_in_batch=None, world_size: int = 1,
         reduction: str = "mean", return_metrics: bool = False):
    """The GRPO family of clipped policy-gradient surrogates with the aggregation as a parameter.

    .. math:: \\ell_{it} = -\\min\\big(r_{it}A_i,\\ \\mathrm{clip}(r_{it}, 1-\\varepsilon, 1+\\varepsilon_h)A_i\\big)
              + \\beta\\,k(\\log\\pi_{ref} - \\log\\pi)

    Args:
        logps, old_logps, ref_logps: ``(B, T)`` per-token log-probs under the policy, the sampling policy
            (detached; equal to ``logps.detach()`` on-policy) and the reference.
        advantages: ``(B,)`` or ``(B, T)`` (:func:`group_advantages`).
        mask: ``(B, T)`` completion mask; masked tokens are never read.
        epsilon, epsilon_high: the clip range ``[1 - eps, 1 + eps_high]`` (DAPO's clip-higher: eps_high > eps).
        dual_clip: c > 1 bounds the loss of negative advantages by ``-c A`` (dual-clip PPO).
        importance: ``'token'`` or ``'sequence'`` (GSPO: every token of sequence i uses
            ``s_i = exp(mean_t log(pi/pi_old))``, with the token's gradient; GSPO uses eps ~ 3e-4/4e-4).
        clip: ``'ppo'`` or ``'cispo'`` (``-sg(min(r, 1+eps_high)) A log pi``: the clipped weight is stopped,
            every token keeps a gradient).
        kl_estimator: ``'k1' | 'k2' | 'k3'`` (see :func:`kl_estimate` for their gradients); used if beta > 0.
        aggregation: see the module docstring; ``num_items_in_batch``, ``world_size`` for ``'dapo'``,
            ``max_completion_length`` for ``'dr_grpo'`` (default T).
        reduction: ``'none'``: per-sequence losses L_i whose mean is the aggregated loss; ``'sum'``: their sum;
            ``'mean'``: the aggregated loss.

    On-policy with group-normalised advantages the loss *value* is about 0 while its gradient is not (TRL
    issue 3452). ``return_metrics=True`` adds the per-token loss, the clipped fraction, the mean ratio and the
    mean KL. Paper: Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
    Models", 2024, arXiv:2402.03300 (GRPO); DAPO arXiv:2503.14476; Dr. GRPO arXiv:2503.20783; GSPO
    arXiv:2507.18071; CISPO arXiv:2506.13585.
    """
    check_floating("logps", logps)
    if logps.dim() != 2:
        raise fail("logps", "(B, T) per-token log-probs", describe(logps))
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps)):
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
    if aggregation not in AGGREGATIONS:
        raise fail("aggregation", f"one of {AGGREGATIONS}", repr(aggregation))
    if kl_estimator not in KL_ESTIMATORS:
        raise fail("kl_estimator", f"one of {KL_ESTIMATORS}", repr(kl_estimator))
    if clip not in ("ppo", "cispo"):
        raise fail("clip", "'ppo' or 'cispo'", repr(clip))
    if importance not in ("token", "sequence"):
        raise fail("importance", "'token' or 'sequence'", repr(importance))
    if dual_clip is not None and dual_clip <= 1:
        raise fail("dual_clip", "a constant c > 1", repr(dual_clip))
    mask = mask.bool()
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
    else:  # CISPO: stopped, clipped importance weight times log pi (value -w A, gradient -w A grad log pi)
        w = torch.clamp(ratio, max=1 + eps_high).detach()
        tok = -w * adv * torch.exp(lp - lp.detach())
        is_clipped = ratio > 1 + eps_high
    kl = None
    if beta != 0:
        if ref_logps is None:
            raise fail("ref_logps", "reference log-probs when beta != 0", "None")
        kl = kl_estimate(lp, torch.where(mask, ref_logps, zero), kl_estimator)
        tok = tok + beta * kl
    tok = torch.where(mask, tok, zero)
    per_seq = _aggregate(tok, mask, aggregation, max_completion_length, num_items_in_batch, world_size)
    out = per_seq if reduction == "none" else per_seq.sum() if reduction == "sum" else per_seq.mean()
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


def _fprime(log_t: torch.Tensor, divergence: str) -> torch.Tensor:
    if divergence == "reverse_kl":
        return log_t + 1
    if divergence == "forward_kl":
        return -torch.exp(-log_t)
    if divergence == "js":
        return 0.5 * (log_t - F.softplus(log_t) + torch.log(torch.tensor(2.0, dtype=log_t.dtype)))
    if divergence == "tv":
        return 0.5 * torch.sign(log_t)
    raise fail("divergence", "one of 'reverse_kl', 'forward_kl', 'js', 'tv'", repr(divergence))


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


@objective("fdpg", family=FAMILY, input_kind=SAMPLED, example=_fdpg_example, paper=FDPG_PAPER,
           per_sample=False, sample_weight=False, gradcheck=False,
           why_no_gradcheck="a stop-gradient surrogate: its gradient is -sg[w (R - b)] grad l by design (tests "
           "check the expected gradient against the exact D_f gradient on a tabular policy)",
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
    Paper: Go et al., "Aligning Language Models with Preferences through f-divergence Minimization", 2023,
    arXiv:2302.08215.
    """
    for name, x in (("policy_logps", policy_logps), ("proposal_logps", proposal_logps),
                    ("target_logps", target_logps)):
        check_floating(name, x)
        if x.dim() != 1 or x.shape != policy_logps.shape:
            raise fail(name, f"a (B,) tensor like policy_logps {tuple(policy_logps.shape)}", describe(x))
    lp = policy_logps
    with torch.no_grad():
        n = lp.shape[0]
        log_w = lp - proposal_logps
        log_z = torch.logsumexp(target_logps - proposal_logps, 0) - torch.log(torch.tensor(float(n), dtype=lp.dtype))
        r = -_fprime(lp - (target_logps - log_z), divergence)
        w = torch.exp(log_w)
        b = (w * r).sum() / w.sum() if baseline else 0.0
        weight = w * (r - b)
    loss = -weight * lp
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


GRPOLoss = grpo.Module
