"""Layer 4, RL building blocks beside the GRPO family (:mod:`.policy`).

* advantage estimators, public helpers: RLOO's leave-one-out baseline (:func:`rloo_advantages`), REINFORCE++'s
  token returns with the KL penalty in the reward and global batch normalisation
  (:func:`reinforce_pp_advantages`), GAE (:func:`gae_advantages`); GRPO's group normalisation is
  :func:`~losskit.preference.group_advantages`;
* objectives that take rewards and form their advantages themselves: ``rloo`` (TRL's ``RLOOTrainer``: sequence
  ratio, clipped) and ``reinforce_pp`` (per-token PPO clip on REINFORCE++ advantages);
* PPO: the clipped policy surrogate ``ppo`` (the GRPO family's computation with PPO's token mean) and the
  clipped value loss ``ppo_value_loss``;
* the reward model's loss ``bradley_terry`` (TRL's ``RewardTrainer``: margin and reward centring);
* TRL's online preference objectives on samples of the policy: ``nash_md`` and ``xpo``.

Advantages never carry a gradient (they are computed under ``torch.no_grad`` from detached inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, finish, objective
from .._core.domains import COUNT, FLAG, NONNEGATIVE, OPEN_UNIT, POSITIVE, Choice, Integer, Maybe, Real
from .._core.errors import fail
from .._core.validate import check_floating, describe
from .._core.values import PROBABILITY
from ._inputs import LOGPROB, check_logprobs, policy_example, sequence_input
from .policy import GRPO_DOMAINS, KL_ESTIMATORS, _surrogate, kl_estimate

__all__ = ["rloo_advantages", "reinforce_pp_advantages", "gae_advantages", "rloo", "reinforce_pp", "ppo",
           "ppo_value_loss", "bradley_terry", "nash_md", "xpo", "RLOOLoss", "PPOLoss", "PPOValueLoss",
           "BradleyTerryLoss"]

FAMILY = "preference"


# ------------------------------------------------------------------------------------ advantage estimators
def _grouped(rewards: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``(G, n)`` view of ``(G, n)`` or flat ``(G n,)`` rewards (consecutive rows form a group)."""
    check_floating("rewards", rewards)
    if rewards.dim() == 2:
        return rewards
    if rewards.dim() != 1:
        raise fail("rewards", "(G, n) or (G n,) rewards", describe(rewards))
    if group_size is None or isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 \
            or rewards.shape[0] % group_size:
        raise fail("group_size", f"a divisor of the number of rewards {rewards.shape[0]}", repr(group_size))
    return rewards.reshape(-1, group_size)


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """The unbiased std of the non-NaN entries (NaN for fewer than two), TRL's ``nanstd``."""
    mean = torch.nanmean(x)
    count = (~torch.isnan(x)).sum()
    var = torch.nanmean((x - mean) ** 2) * count / (count - 1)
    return torch.where(count > 1, var, torch.full_like(var, float("nan"))).sqrt()


def rloo_advantages(rewards: torch.Tensor, group_size: int | None = None, *, normalize: bool = False,
                    eps: float = 1e-4) -> torch.Tensor:
    """REINFORCE Leave-One-Out advantages ``A_i = r_i - mean_{j != i} r_j`` within each prompt's group.

    .. math:: A_i = r_i - \\frac{1}{n-1}\\sum_{j\\ne i} r_j = \\frac{n}{n-1}\\,(r_i - \\bar r)

    ``rewards``: ``(G, n)`` or flat ``(G n,)`` with ``group_size = n`` (the n samples of a prompt are
    consecutive). For a KL penalty in the reward (RLOO's and TRL's choice) subtract
    ``beta * ((old_logps - ref_logps) * mask).sum(-1)`` first. NaN rewards mark unscorable samples (TRL): they
    are left out of their siblings' baselines (the divisor is the scorable count - 1) and get advantage 0, as
    does a sample with no scorable sibling. ``normalize``: then ``(A - mean A) / (std A + eps)`` over the batch
    (unbiased std, TRL's ``normalize_advantages``). The result is detached, with the rewards' shape.
    Paper: Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs", 2024, arXiv:2402.14740.
    """
    with torch.no_grad():
        r = _grouped(rewards.detach(), group_size)
        if r.shape[-1] < 2:
            raise fail("group_size", "at least 2 samples per prompt (the leave-one-out baseline needs a sibling)",
                       repr(r.shape[-1]))
        count = (~torch.isnan(r)).sum(-1, keepdim=True).to(r.dtype)
        total = torch.nansum(r, -1, keepdim=True)
        adv = r - (total - r) / (count - 1)
        if normalize:
            adv = (adv - torch.nanmean(adv)) / (_nanstd(adv) + eps)
        return torch.nan_to_num(adv, nan=0.0, posinf=0.0, neginf=0.0).reshape(rewards.shape)


def _check_mask(mask, shape, name="mask"):
    if not isinstance(mask, torch.Tensor) or mask.shape != shape:
        raise fail(name, f"a (B, T) mask of shape {tuple(shape)}", describe(mask))
    return mask.bool()


def _reverse_cumsum(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s-t) x_s`` along the last dimension."""
    if gamma == 1.0:
        return torch.flip(torch.cumsum(torch.flip(x, (-1,)), -1), (-1,))
    out = torch.empty_like(x)
    acc = x.new_zeros(x.shape[:-1])
    for t in range(x.shape[-1] - 1, -1, -1):
        acc = x[..., t] + gamma * acc
        out[..., t] = acc
    return out


def _masked_whiten(x, mask, eps=1e-8):
    n = mask.sum().clamp_min(1).to(x.dtype)
    mean = torch.where(mask, x, 0.0).sum() / n
    var = torch.where(mask, (x - mean) ** 2, 0.0).sum() / n
    return (x - mean) * var.clamp_min(eps).rsqrt()


def reinforce_pp_advantages(rewards: torch.Tensor, mask: torch.Tensor, old_logps: torch.Tensor | None = None,
                            ref_logps: torch.Tensor | None = None, *, beta: float = 0.0, kl_estimator: str = "k1",
                            gamma: float = 1.0, group_size: int | None = None, normalize: bool = True,
                            kl_clip: float | None = 10.0) -> torch.Tensor:
    """REINFORCE++ per-token advantages: returns of a token-level KL-penalised reward, normalised over the batch.

    .. math:: r_t = -\\beta\\,\\mathrm{KL}_t + [t = T_i]\\,R_i,\\quad G_t = \\sum_{s\\ge t}\\gamma^{s-t} r_s,\\quad
              A_t = \\frac{G_t - \\mathrm{mean}(G)}{\\mathrm{std}(G)}

    ``rewards``: ``(B,)`` sequence rewards, placed on each completion's last token (``mask``: ``(B, T)``).
    ``KL_t = kl_estimate(old_logps, ref_logps, kl_estimator)`` per token (``'k1'``, the log-ratio, by default:
    in the reward its expected gradient is the reverse KL's), clipped to ``[-kl_clip, kl_clip]`` as the
    authors' OpenRLHF; needs ``old_logps`` (the sampler's) and ``ref_logps`` when ``beta > 0``. ``gamma``:
    the discount (1 in the paper). ``group_size``: subtract each prompt's mean reward first (REINFORCE++ with
    baseline, for several samples per prompt). ``normalize``: whiten over every completion token of the batch
    (mean and biased variance, ``var >= 1e-8``) -- the "global batch normalisation" of the paper; pass the
    whole optimiser batch, not a micro-batch. Masked positions get 0. Detached, ``(B, T)``.
    Paper: Hu, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models", 2025,
    arXiv:2501.03262.
    """
    with torch.no_grad():
        check_floating("rewards", rewards)
        if rewards.dim() != 1:
            raise fail("rewards", "a (B,) tensor of sequence rewards", describe(rewards))
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
            raise fail("mask", f"a (B, T) mask with B = {rewards.shape[0]}", describe(mask))
        m = mask.bool()
        r = rewards.detach()
        if group_size is not None:
            g = _grouped(r, group_size)
            r = (g - g.mean(-1, keepdim=True)).reshape(-1)
        tok = torch.zeros(m.shape, dtype=r.dtype, device=r.device)
        if beta != 0:
            if old_logps is None or ref_logps is None:
                raise fail("ref_logps" if ref_logps is None else "old_logps",
                           "the sampler's and the reference's (B, T) log-probs when beta != 0", "None")
            for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps)):
                check_floating(name, x)
                if x.shape != m.shape:
                    raise fail(name, f"shape {tuple(m.shape)}", f"shape {tuple(x.shape)}")
            kl = kl_estimate(old_logps.detach().to(r.dtype), ref_logps.detach().to(r.dtype), kl_estimator)
            if kl_clip is not None:
                kl = kl.clamp(-kl_clip, kl_clip)
            tok = -beta * torch.where(m, kl, 0.0)
        has = m.any(-1)
        last = m.shape[1] - 1 - m.long().flip(-1).argmax(-1)
        tok = tok.scatter_add(1, last[:, None], torch.where(has, r, 0.0)[:, None])
        ret = torch.where(m, _reverse_cumsum(tok, gamma), 0.0)
        if normalize:
            ret = torch.where(m, _masked_whiten(ret, m), 0.0)
        return ret


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: ``(advantages, returns)`` of ``(B, T)`` token rewards and values.

    .. math:: \\delta_t = r_t + \\gamma V_{t+1} - V_t,\\quad A_t = \\sum_{s\\ge t}(\\gamma\\lambda)^{s-t}\\delta_s,
              \\quad R_t = A_t + V_t

    Rewards and values are masked (0 outside ``mask``) first, as OpenRLHF's ``get_advantages_and_returns``;
    TRL's ``PPOTrainer`` runs the same recursion (``gamma = 1``, ``lam = 0.95`` by default) and then whitens
    the advantages (:func:`reinforce_pp_advantages`' ``normalize`` does it for returns). The returns are the
    value loss' targets (:func:`ppo_value_loss`). Detached. Paper: Schulman et al., "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation", 2016, arXiv:1506.02438.
    """
    with torch.no_grad():
        check_floating("rewards", rewards)
        check_floating("values", values)
        if rewards.dim() != 2 or values.shape != rewards.shape:
            raise fail("values", f"(B, T) values of the rewards' shape {tuple(rewards.shape)}", describe(values))
        m = _check_mask(mask, rewards.shape)
        r = torch.where(m, rewards.detach(), 0.0)
        v = torch.where(m, values.detach(), 0.0)
        nxt = torch.cat([v[:, 1:], v.new_zeros(v.shape[0], 1)], 1)
        delta = r + gamma * nxt - v
        adv = _reverse_cumsum(delta, gamma * lam)
        return adv, adv + v


# -------------------------------------------------------------------------------- objectives on rewards
RLOO_PAPER = Paper("Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in "
                   "LLMs", 2024, "2402.14740", "Ahmadian et al.")
REINFORCE_PP_PAPER = Paper("REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models", 2025,
                           "2501.03262", "Hu")


def _rewards_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    ex = policy_example(gen, dtype)
    rewards = torch.randn(ex.inputs["logps"].shape[0], generator=gen, dtype=torch.float64).to(dtype)
    inputs = {"logps": ex.inputs["logps"], "old_logps": ex.inputs["old_logps"], "rewards": rewards,
              "mask": ex.inputs["mask"], "ref_logps": ex.inputs["ref_logps"]}
    return Example(inputs, {"beta": 0.04, "group_size": 3}, grad=("logps",))


def _rewards_extreme(ex: Example) -> Example:
    ex = ex.map_floats(lambda t: t.float())
    lp = ex.inputs["logps"] * 5e3
    return ex.replace({"logps": lp, "old_logps": lp + 0.01 * torch.sin(lp), "ref_logps": lp - 0.5,
                       "rewards": ex.inputs["rewards"] * 1e4})


def _rewards_bad(ex: Example) -> list[BadInput]:
    lp, m, r = ex.inputs["logps"], ex.inputs["mask"], ex.inputs["rewards"]
    return [BadInput("old log-probs of another shape", ex.replace({"old_logps": lp[:, :-1]}), "old_logps"),
            BadInput("mask of another shape", ex.replace({"mask": m[:-1]}), "mask"),
            BadInput("rewards of another batch size", ex.replace({"rewards": r[:-1]}), "rewards"),
            BadInput("per-token rewards", ex.replace({"rewards": lp}), "rewards"),
            BadInput("a group size that does not divide the batch", ex.replace(options={"group_size": 4}),
                     "group_size")]


POLICY_REWARDS = InputKind(
    "policy rewards",
    "(B, T) per-token log-probs under the policy, the sampler (old) and the reference, (B,) sequence rewards, mask",
    bad_inputs=_rewards_bad,
    extreme=_rewards_extreme,
)


def _check_tokens(logps, mask, **others):
    """Shapes and log-prob values of (B, T) token inputs (masked positions are never read); the bool mask."""
    check_floating("logps", logps)
    if logps.dim() != 2:
        raise fail("logps", "(B, T) per-token log-probs", describe(logps))
    for name, x in others.items():
        if x is not None:
            check_floating(name, x)
            if x.shape != logps.shape:
                raise fail(name, f"shape {tuple(logps.shape)}", f"shape {tuple(x.shape)}")
    m = _check_mask(mask, logps.shape)
    check_logprobs("logps", logps, m)
    for name, x in others.items():
        if x is not None:
            check_logprobs(name, x, m)
    return m


def _sequence_rewards(rewards, b):
    check_floating("rewards", rewards)
    if rewards.dim() != 1 or rewards.shape[0] != b:
        raise fail("rewards", f"a ({b},) tensor of sequence rewards", describe(rewards))
    return rewards


@objective("rloo", seed=True, family=FAMILY, input_kind=POLICY_REWARDS, example=_rewards_example, paper=RLOO_PAPER,
           per_sample=False, sample_weight=False, module_name="RLOOLoss",
           domains={"group_size": Maybe(Integer(2)), "beta": NONNEGATIVE, "epsilon": OPEN_UNIT,
                    "epsilon_high": Maybe(POSITIVE), "normalize_advantages": FLAG},
           formula="L = -mean_i min(s_i A_i, clip(s_i, 1-eps, 1+eps_high) A_i),  s_i = exp(sum_t log(pi/pi_old)), "
                   "A_i = R_i - mean_{j != i} R_j,  R = r - beta sum_t (log pi_old - log pi_ref)")
def rloo(logps, old_logps, rewards, mask, ref_logps=None, *, group_size: int | None = None, beta: float = 0.0,
         epsilon: float = 0.2, epsilon_high: float | None = None, normalize_advantages: bool = False,
         reduction: str = "mean", return_metrics: bool = False):
    """RLOO: REINFORCE with the leave-one-out baseline, on the sequence ratio with PPO's clip (TRL's RLOOTrainer).

    .. math:: L = -\\frac1B\\sum_i\\min\\big(s_iA_i,\\ \\mathrm{clip}(s_i, 1-\\varepsilon, 1+\\varepsilon_h)A_i\\big),
              \\quad s_i = \\exp\\sum_t(\\log\\pi - \\log\\pi_{old})_{it},
              \\quad A_i = R_i - \\frac{1}{n-1}\\sum_{j\\ne i}R_j

    ``rewards``: ``(B,)``, the ``group_size`` samples of a prompt consecutive (required: the baseline is over
    them). ``beta > 0`` puts a KL penalty in the reward, ``R = r - beta sum_t (log pi_old - log pi_ref)`` (k1 of
    the sampler, detached; RLOO's and TRL's choice, not a loss term). Advantages by :func:`rloo_advantages`
    (``normalize_advantages`` whitens them over the batch); the loss is one clipped term per sequence on the
    ratio of sequence probabilities, averaged over sequences. On-policy (``old_logps = logps.detach()``) its
    gradient is the paper's ``-mean_i A_i grad log pi(y_i)``. ``reduction='none'``: the per-sequence terms.
    ``return_metrics=True`` adds the advantages and the clipped fraction. TRL's unscorable (NaN) rewards: use
    :func:`rloo_advantages` and :func:`ppo` / :func:`grpo`. Paper: Ahmadian et al., "Back to Basics: Revisiting
    REINFORCE Style Optimization for Learning from Human Feedback in LLMs", 2024, arXiv:2402.14740.
    """
    m = _check_tokens(logps, mask, old_logps=old_logps, ref_logps=ref_logps)
    r = _sequence_rewards(rewards, logps.shape[0])
    with torch.no_grad():
        if beta != 0:
            if ref_logps is None:
                raise fail("ref_logps", "reference log-probs when beta != 0", "None")
            r = r - beta * torch.where(m, old_logps - ref_logps, 0.0).sum(-1)
        if group_size is None:
            raise fail("group_size", "the number of samples per prompt (consecutive rewards), >= 2", "None")
        adv = rloo_advantages(r, group_size, normalize=normalize_advantages).to(logps.dtype)
    log_ratio = torch.where(m, logps - old_logps.detach(), 0.0).sum(-1)
    ratio = torch.exp(log_ratio)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    out = finish(loss, reduction)
    if not return_metrics:
        return out
    is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    return out, {"advantages": adv, "clip_fraction": is_clipped.to(logps.dtype).mean().detach()}


PPO_DOMAINS = {k: GRPO_DOMAINS[k] for k in ("epsilon", "epsilon_high", "dual_clip", "aggregation",
                                            "max_completion_length", "num_items_in_batch", "world_size")}


@objective("reinforce_pp", seed=True, family=FAMILY, input_kind=POLICY_REWARDS, example=_rewards_example,
           paper=REINFORCE_PP_PAPER, per_sample=False, sample_weight=False,
           domains={**PPO_DOMAINS, "beta": NONNEGATIVE, "kl_estimator": Choice(*KL_ESTIMATORS),
                    "gamma": Real(0.0, 1.0), "group_size": Maybe(COUNT)},
           formula="l_t = -min(r_t A_t, clip(r_t, 1-eps, 1+eps_high) A_t),  A = whiten_batch(G),  "
                   "G_t = sum_{s>=t} gamma^(s-t) (-beta KL_s + [s = T] R)")
def reinforce_pp(logps, old_logps, rewards, mask, ref_logps=None, *, beta: float = 0.0, kl_estimator: str = "k1",
                 gamma: float = 1.0, group_size: int | None = None, epsilon: float = 0.2,
                 epsilon_high: float | None = None, dual_clip: float | None = None, aggregation: str = "bnpo",
                 max_completion_length: int | None = None, num_items_in_batch=None, world_size: int = 1,
                 reduction: str = "mean", return_metrics: bool = False):
    """REINFORCE++: PPO's token clip on globally normalised returns of a KL-penalised token reward.

    .. math:: \\ell_{it} = -\\min\\big(r_{it}A_{it},\\ \\mathrm{clip}(r_{it}, 1-\\varepsilon, 1+\\varepsilon_h)A_{it}\\big),
              \\quad A = \\frac{G - \\mathrm{mean}\\,G}{\\mathrm{std}\\,G},
              \\quad G_{it} = \\sum_{s\\ge t}\\gamma^{s-t}\\big(-\\beta\\mathrm{KL}_{is} + [s = T_i]R_i\\big)

    The advantages come from :func:`reinforce_pp_advantages` (the KL in the reward, from the sampler's
    ``old_logps`` against ``ref_logps``, k1 by default; ``group_size`` for the baseline variant; whitening over
    every token of this call's batch: pass the whole batch). The surrogate is :func:`grpo`'s token-level PPO
    clip without a KL term, aggregated as the authors' OpenRLHF (``aggregation='bnpo'``, the token mean;
    ``'dapo'`` with ``num_items_in_batch`` for the global one). OpenRLHF also clamps the log-ratio to
    ``[-20, 20]``, which matters only for ratios beyond e^20. ``return_metrics`` as :func:`grpo`, plus the
    advantages. Paper: Hu, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models",
    2025, arXiv:2501.03262.
    """
    m = _check_tokens(logps, mask, old_logps=old_logps, ref_logps=ref_logps)
    _sequence_rewards(rewards, logps.shape[0])
    adv = reinforce_pp_advantages(rewards, m, old_logps, ref_logps, beta=beta, kl_estimator=kl_estimator,
                                  gamma=gamma, group_size=group_size).to(logps.dtype)
    out = _surrogate(logps, old_logps, adv, m, None, beta=0.0, epsilon=epsilon, epsilon_high=epsilon_high,
                     dual_clip=dual_clip, importance="token", clip="ppo", kl_estimator="k3", aggregation=aggregation,
                     max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch,
                     world_size=world_size, reduction=reduction, return_metrics=return_metrics)
    if return_metrics:
        out[1]["advantages"] = adv
    return out


# ------------------------------------------------------------------------------------------------- PPO
PPO_PAPER = Paper("Proximal Policy Optimization Algorithms", 2017, "1707.06347",
                  "Schulman, Wolski, Dhariwal, Radford, Klimov")


def _ppo_example(gen, dtype):
    ex = policy_example(gen, dtype)
    adv = torch.randn(ex.inputs["logps"].shape, generator=gen, dtype=torch.float64).to(dtype)
    return Example({"logps": ex.inputs["logps"], "old_logps": ex.inputs["old_logps"], "advantages": adv,
                    "mask": ex.inputs["mask"]}, {}, grad=("logps",))


def _ppo_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    lp = ex.inputs["logps"] * 5e3
    return ex.replace({"logps": lp, "old_logps": lp + 0.01 * torch.sin(lp), "advantages": ex.inputs["advantages"] * 1e4})


def _ppo_bad(ex):
    lp, m = ex.inputs["logps"], ex.inputs["mask"]
    return [BadInput("old log-probs of another shape", ex.replace({"old_logps": lp[:, :-1]}), "old_logps"),
            BadInput("mask of another shape", ex.replace({"mask": m[:-1]}), "mask"),
            BadInput("advantages of another shape", ex.replace({"advantages": ex.inputs["advantages"][:, :-1]}),
                     "advantages"),
            BadInput("unknown aggregation", ex.replace(options={"aggregation": "token_mean"}), "aggregation")]


PPO_TOKENS = InputKind("ppo tokens", "(B, T) per-token log-probs under the policy and the sampler (old), (B, T) or "
                       "(B,) advantages, mask", bad_inputs=_ppo_bad, extreme=_ppo_extreme)


@objective("ppo", seed=True, family=FAMILY, input_kind=PPO_TOKENS, example=_ppo_example, paper=PPO_PAPER,
           per_sample=False, sample_weight=False, module_name="PPOLoss", domains=PPO_DOMAINS,
           formula="L = sum_it m_it max(-r_it A_it, -clip(r_it, 1-eps, 1+eps_high) A_it) / sum_it m_it,  "
                   "r = pi/pi_old")
def ppo(logps, old_logps, advantages, mask, *, epsilon: float = 0.2, epsilon_high: float | None = None,
        dual_clip: float | None = None, aggregation: str = "bnpo", max_completion_length: int | None = None,
        num_items_in_batch=None, world_size: int = 1, reduction: str = "mean", return_metrics: bool = False):
    """PPO's clipped policy surrogate on token log-probs, averaged over the batch's tokens.

    .. math:: L = \\frac{\\sum_{it} m_{it}\\max\\big(-r_{it}A_{it},\\ -\\mathrm{clip}(r_{it}, 1-\\varepsilon,
              1+\\varepsilon_h)A_{it}\\big)}{\\sum_{it} m_{it}},\\quad r = \\pi/\\pi_{old}

    The computation of :func:`grpo` (one implementation) without its KL term, with TRL's ``PPOTrainer``
    aggregation (``masked_mean`` over the batch's completion tokens: ``aggregation='bnpo'``). ``advantages``:
    ``(B, T)`` (GAE: :func:`gae_advantages`, whitened) or ``(B,)``; ``epsilon`` is TRL's ``cliprange``
    (0.2), ``epsilon_high`` the clip-higher bound, ``dual_clip`` c > 1 bounds negative-advantage losses by
    ``-c A``. Add :func:`ppo_value_loss` times ``vf_coef`` for TRL's total loss. ``reduction='none'``:
    per-sequence terms whose mean is the loss. Paper: Schulman et al., "Proximal Policy Optimization
    Algorithms", 2017, arXiv:1707.06347.
    """
    return _surrogate(logps, old_logps, advantages, mask, None, beta=0.0, epsilon=epsilon, epsilon_high=epsilon_high,
                      dual_clip=dual_clip, importance="token", clip="ppo", kl_estimator="k3", aggregation=aggregation,
                      max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch,
                      world_size=world_size, reduction=reduction, return_metrics=return_metrics)


def _value_example(gen, dtype, b=6, t=5):
    v = torch.randn(b, t, generator=gen, dtype=torch.float64)
    old = v + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    ret = v + torch.randn(b, t, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])[:b]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return Example({"values": v.to(dtype), "old_values": old.to(dtype), "returns": ret.to(dtype), "mask": mask},
                   {"clip_range": 0.2}, grad=("values",))


def _value_bad(ex):
    v, m = ex.inputs["values"], ex.inputs["mask"]
    return [BadInput("old values of another shape", ex.replace({"old_values": v[:, :-1]}), "old_values"),
            BadInput("returns of another shape", ex.replace({"returns": v[:-1]}), "returns"),
            BadInput("mask of another shape", ex.replace({"mask": m[:, :-1]}), "mask")]


VALUE_TOKENS = InputKind("value tokens", "(B, T) or (B,) value predictions, the values at sampling time and the "
                         "returns, optional mask", bad_inputs=_value_bad,
                         extreme=lambda ex: ex.map_floats(lambda t: t.float() * 1e4))


@objective("ppo_value_loss", seed=True, family=FAMILY, input_kind=VALUE_TOKENS, example=_value_example,
           paper=PPO_PAPER, per_sample=False, sample_weight=False, module_name="PPOValueLoss",
           domains={"clip_range": Maybe(POSITIVE), "aggregation": Choice("token", "sequence")},
           formula="L = 1/2 mean_t max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)")
def ppo_value_loss(values, old_values, returns, mask=None, *, clip_range: float | None = 0.2,
                   aggregation: str = "token", reduction: str = "mean"):
    """PPO's clipped value loss: the larger of the unclipped and the clipped squared error, halved.

    .. math:: L = \\frac12\\,\\mathrm{mean}_t\\max\\big((V_t - R_t)^2,\\
              (\\mathrm{clip}(V_t, V^{old}_t - c, V^{old}_t + c) - R_t)^2\\big)

    ``values`` (with gradient), ``old_values`` (the critic at sampling time) and ``returns`` (the targets,
    e.g. :func:`gae_advantages`' second output): ``(B, T)`` per token or ``(B,)``; ``mask`` marks the
    tokens that count. ``clip_range`` c > 0 (TRL's ``cliprange_value``, 0.2; ``None``: the plain halved
    squared error). ``aggregation``: ``'token'`` (TRL's ``PPOTrainer`` and OpenAI baselines: the mean over
    every masked token of the batch) or ``'sequence'`` (per-sequence token means, then their mean).
    ``reduction='none'``: per-sequence terms whose mean is the loss. Paper: Schulman et al., "Proximal Policy
    Optimization Algorithms", 2017, arXiv:1707.06347 (the value clip is OpenAI baselines' ``ppo2``).
    """
    check_floating("values", values)
    if values.dim() not in (1, 2):
        raise fail("values", "(B, T) or (B,) value predictions", describe(values))
    for name, x in (("old_values", old_values), ("returns", returns)):
        check_floating(name, x)
        if x.shape != values.shape:
            raise fail(name, f"shape {tuple(values.shape)}", f"shape {tuple(x.shape)}")
    if mask is None:
        m = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    else:
        if not isinstance(mask, torch.Tensor) or mask.shape != values.shape:
            raise fail("mask", f"a mask of shape {tuple(values.shape)}", describe(mask))
        m = mask.bool()
    v, old, ret = values, old_values.detach(), returns.detach()
    if v.dim() == 1:
        v, old, ret, m = v[:, None], old[:, None], ret[:, None], m[:, None]
    tok = (v - ret) ** 2
    if clip_range is not None:
        vc = torch.clamp(v, old - clip_range, old + clip_range)
        tok = torch.maximum(tok, (vc - ret) ** 2)
    tok = torch.where(m, 0.5 * tok, 0.0)
    per_seq = tok.sum(-1)
    if aggregation == "token":
        per_seq = per_seq * per_seq.shape[0] / m.sum().clamp_min(1).to(tok.dtype)
    elif aggregation == "sequence":
        per_seq = per_seq / m.sum(-1).clamp_min(1).to(tok.dtype)
    else:
        raise fail("aggregation", "one of 'token', 'sequence'", repr(aggregation))
    return finish(per_seq, reduction)


# ---------------------------------------------------------------------------------------- reward models
BT_PAPER = Paper("Training language models to follow instructions with human feedback", 2022, "2203.02155",
                 "Ouyang et al.")


def _bt_example(gen, dtype, n=6):
    r = torch.randn(3, n, generator=gen, dtype=torch.float64)
    return Example({"chosen_rewards": r[0].to(dtype), "rejected_rewards": r[1].to(dtype),
                    "margin": r[2].abs().to(dtype)}, {"center_rewards_coefficient": 0.01},
                   grad=("chosen_rewards", "rejected_rewards"))


def _bt_bad(ex):
    c, r = ex.inputs["chosen_rewards"], ex.inputs["rejected_rewards"]
    return [BadInput("rejected rewards of another batch size", ex.replace({"rejected_rewards": r[:-1]}),
                     "rejected_rewards"),
            BadInput("per-token rewards", ex.replace({"chosen_rewards": c[:, None].expand(-1, 3).clone()}),
                     "chosen_rewards"),
            BadInput("margins of another batch size", ex.replace({"margin": ex.inputs["margin"][:-1]}), "margin")]


REWARD_PAIRS = InputKind("reward pairs", "(B,) scalar rewards of chosen and rejected completions (a reward model's "
                         "outputs), optional (B,) margins", bad_inputs=_bt_bad,
                         extreme=lambda ex: ex.map_floats(lambda t: t.float() * 1e4))


@objective("bradley_terry", seed=True, family=FAMILY, input_kind=REWARD_PAIRS, example=_bt_example, paper=BT_PAPER,
           module_name="BradleyTerryLoss", properties=("nonnegative",),
           domains={"center_rewards_coefficient": Maybe(NONNEGATIVE)},
           formula="L = -log sigma(r_c - r_r - margin) + c (r_c + r_r)^2")
def bradley_terry(chosen_rewards, rejected_rewards, margin=None, *, center_rewards_coefficient: float | None = None,
                  sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """The Bradley--Terry reward-model loss, with an optional margin and TRL's reward-centring term.

    .. math:: L = -\\log\\sigma(r_c - r_r - m) + c\\,(r_c + r_r)^2

    ``chosen_rewards``, ``rejected_rewards``: ``(B,)`` scalar outputs of the reward model (any sign: not
    log-probabilities). ``margin``: ``(B,)`` (or a scalar tensor) required preference strengths ``m``
    (Llama 2's margin); the chosen reward must exceed the rejected one by it. ``center_rewards_coefficient``
    c >= 0 (TRL's ``RewardConfig``, 0.01 in Eisenstein et al. 2023) pulls the rewards toward zero mean; per
    pair the term is ``c (r_c + r_r)^2``, whose mean is TRL's ``c mean((r_c + r_r)^2)``. Matches TRL's
    ``RewardTrainer.compute_loss``. ``return_metrics=True`` adds the margins ``r_c - r_r`` and accuracies.
    Paper: Ouyang et al., "Training language models to follow instructions with human feedback", 2022,
    arXiv:2203.02155 (the pairwise loss of Bradley & Terry, 1952); Touvron et al. 2023, arXiv:2307.09288
    (margin); Eisenstein et al. 2023, arXiv:2312.09244 (centring).
    """
    rc = sequence_input("chosen_rewards", chosen_rewards)
    n = rc.shape[0]
    rr = sequence_input("rejected_rewards", rejected_rewards, n, like="chosen_rewards")
    z = rc - rr
    if margin is not None:
        check_floating("margin", margin)
        if margin.dim() > 1 or (margin.dim() == 1 and margin.shape[0] != n):
            raise fail("margin", f"a ({n},) tensor of margins or a scalar tensor", describe(margin))
        z = z - margin
    loss = -F.logsigmoid(z)
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * (rc + rr) ** 2
    out = finish(loss, reduction, sample_weight=sample_weight)
    if not return_metrics:
        return out
    d = (rc - rr).detach()
    return out, {"margins": d, "accuracies": (d > 0).to(d.dtype)}


# --------------------------------------------------------------------------------------- Nash-MD and XPO
NASH_MD_PAPER = Paper("Nash Learning from Human Feedback", 2023, "2312.00886", "Munos et al.")
XPO_PAPER = Paper("Exploratory Preference Optimization: Harnessing Implicit Q*-Approximation for Sample-Efficient "
                  "RLHF", 2024, "2405.21046", "Xie et al.")


def _nash_md_example(gen, dtype, b=6, t=5):
    ex = policy_example(gen, dtype, b, t)
    pref = torch.rand(b, generator=gen, dtype=torch.float64).to(dtype)
    return Example({"policy_logps": ex.inputs["logps"], "ref_logps": ex.inputs["ref_logps"], "preference": pref,
                    "mask": ex.inputs["mask"]}, {"beta": 0.1}, grad=("policy_logps",))


def _nash_md_bad(ex):
    lp, m = ex.inputs["policy_logps"], ex.inputs["mask"]
    return [BadInput("reference log-probs of another shape", ex.replace({"ref_logps": lp[:, :-1]}), "ref_logps"),
            BadInput("mask of another shape", ex.replace({"mask": m[:-1]}), "mask"),
            BadInput("preference of another length", ex.replace({"preference": ex.inputs["preference"][:-1]}),
                     "preference"),
            BadInput("sequence log-probs", ex.replace({"policy_logps": lp.sum(-1)}), "policy_logps")]


def _nash_md_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({"policy_logps": ex.inputs["policy_logps"] * 2e3, "ref_logps": ex.inputs["ref_logps"] * 2e3})


SELF_PLAY_TOKENS = InputKind("self-play tokens", "(B, T) per-token log-probs of samples of the policy under the policy "
                             "and the reference, (B,) preferences against an opponent, mask",
                             bad_inputs=_nash_md_bad, extreme=_nash_md_extreme, values={"preference": PROBABILITY})


@objective("nash_md", seed=True, family=FAMILY, input_kind=SELF_PLAY_TOKENS, example=_nash_md_example,
           paper=NASH_MD_PAPER, gradcheck=False, domains={"beta": NONNEGATIVE},
           skip_reasons={"gradcheck": "a score-function surrogate: the KL term's log-ratio is stopped, so its gradient "
                                      "is not the derivative of its value (tests check it against TRL's)"},
           formula="L = beta sum_t sg(l_t - l_ref,t) l_t - (P(y > y') - 1/2) sum_t l_t")
def nash_md(policy_logps, ref_logps, preference, mask, *, beta: float = 0.1, sample_weight=None,
            reduction: str = "mean"):
    """Nash-MD's policy loss as TRL's ``NashMDTrainer``: a REINFORCE score against the mixture plus a KL term.

    .. math:: L = \\beta\\sum_t \\mathrm{sg}(\\ell_t - \\ell^{ref}_t)\\,\\ell_t
              - \\big(P(y\\succ y') - \\tfrac12\\big)\\sum_t \\ell_t

    ``policy_logps``, ``ref_logps``: ``(B, T)`` per-token log-probs of ``y ~ pi`` under the policy and the
    reference (masked positions, ``mask`` False, are never read); ``preference``: ``(B,)`` probability that
    ``y`` beats the opponent ``y'`` sampled from the geometric mixture of pi and pi_ref (TRL: ``sigmoid`` of
    the reward difference, or a judge), 1/2 being the control variate. The KL term is the REINFORCE estimator
    of ``KL(pi || pi_ref)``'s gradient with per-token log-ratios, as TRL computes it; ``beta >= 0`` (TRL's
    0.1). The mixture's sampling (``mixture_coef``) happens outside the loss. Paper: Munos et al., "Nash
    Learning from Human Feedback", 2023, arXiv:2312.00886. :func:`nash_mp` is the mirror-prox variant.
    """
    check_floating("policy_logps", policy_logps)
    if policy_logps.dim() != 2:
        raise fail("policy_logps", "(B, T) per-token log-probs", describe(policy_logps))
    check_floating("ref_logps", ref_logps)
    if ref_logps.shape != policy_logps.shape:
        raise fail("ref_logps", f"shape {tuple(policy_logps.shape)}", f"shape {tuple(ref_logps.shape)}")
    m = _check_mask(mask, policy_logps.shape)
    check_logprobs("policy_logps", policy_logps, m)
    check_logprobs("ref_logps", ref_logps, m)
    p = sequence_input("preference", preference, policy_logps.shape[0], like="policy_logps")
    lp = torch.where(m, policy_logps, 0.0)
    ref = torch.where(m, ref_logps, 0.0)
    score = (p.detach() - 0.5) * lp.sum(-1)
    kl = ((lp - ref).detach() * lp).sum(-1)
    return finish(beta * kl - score, reduction, sample_weight=sample_weight)


def _xpo_example(gen, dtype, n=6):
    lp = -(0.5 + 5 * torch.rand(4, n, generator=gen, dtype=torch.float64))
    wins = torch.rand(n, generator=gen) < 0.5
    wins[0], wins[1] = True, False
    return Example({"policy_logps": lp[0].to(dtype), "ref_logps": lp[1].to(dtype),
                    "policy_ref_sample_logps": lp[2].to(dtype), "ref_ref_sample_logps": lp[3].to(dtype),
                    "policy_sample_wins": wins}, {"beta": 0.1, "alpha": 0.01},
                   grad=("policy_logps", "policy_ref_sample_logps"))


def _xpo_bad(ex):
    lp, w = ex.inputs["policy_logps"], ex.inputs["policy_sample_wins"]
    return [BadInput("reference-sample log-probs of another length",
                     ex.replace({"policy_ref_sample_logps": ex.inputs["policy_ref_sample_logps"][:-1]}),
                     "policy_ref_sample_logps"),
            BadInput("float outcomes", ex.replace({"policy_sample_wins": w.to(lp.dtype)}), "policy_sample_wins"),
            BadInput("per-token log-probs", ex.replace({"policy_logps": lp[:, None].expand(-1, 3).clone()}),
                     "policy_logps"),
            BadInput("unknown link", ex.replace(options={"link": "hinge"}), "link")]


XPO_NAMES = ("policy_logps", "ref_logps", "policy_ref_sample_logps", "ref_ref_sample_logps")
XPO_SCORES = InputKind("exploratory pairs", "(B,) sequence log-probs of a policy sample and a reference sample under "
                       "the policy and the reference, (B,) booleans: the policy's sample won",
                       bad_inputs=_xpo_bad, extreme=lambda ex: ex.map_floats(lambda t: t.float() * 2e3),
                       values=dict.fromkeys(XPO_NAMES, LOGPROB))


@objective("xpo", seed=True, family=FAMILY, input_kind=XPO_SCORES, example=_xpo_example, paper=XPO_PAPER,
           domains={"beta": POSITIVE, "alpha": NONNEGATIVE, "link": Choice("sigmoid", "ipo")},
           formula="L = -log sigma(beta m) + alpha l(y_ref),  m = (l - l_ref)(y_w) - (l - l_ref)(y_l), "
                   "{y_w, y_l} = {y ~ pi, y_ref ~ pi_ref}")
def xpo(policy_logps, ref_logps, policy_ref_sample_logps, ref_ref_sample_logps, policy_sample_wins, *,
        beta: float = 0.1, alpha: float = 1e-5, link: str = "sigmoid", sample_weight=None, reduction: str = "mean",
        return_metrics: bool = False):
    """XPO: online DPO between a policy sample and a reference sample, plus an exploration bonus.

    .. math:: L = \\ell_{link}\\big(m\\big) + \\alpha\\,\\log\\pi(y_{ref}),\\quad
              m = [\\ell - \\ell_{ref}](y_w) - [\\ell - \\ell_{ref}](y_l)

    Per prompt, ``y ~ pi`` and ``y_ref ~ pi_ref`` are judged; ``policy_sample_wins`` (bool ``(B,)``) says
    whether y won. ``policy_logps`` / ``ref_logps``: y's sequence log-probs under pi and pi_ref;
    ``policy_ref_sample_logps`` / ``ref_ref_sample_logps``: y_ref's. The DPO link on the winner-minus-loser
    log-ratio margin (``'sigmoid'``: ``-log sigma(beta m)``; ``'ipo'``: ``(m - 1/(2 beta))^2``) plus
    ``alpha log pi(y_ref)``, the optimism term: minimising it lowers the policy's likelihood of the reference's
    samples, which drives exploration. ``beta > 0``, ``alpha >= 0`` (TRL's 1e-5). Matches TRL's
    ``XPOTrainer._compute_losses``. ``return_metrics=True`` adds the DPO and XPO terms. Paper: Xie et al.,
    "Exploratory Preference Optimization: Harnessing Implicit Q*-Approximation for Sample-Efficient RLHF",
    2024, arXiv:2405.21046.
    """
    lp = sequence_input("policy_logps", policy_logps)
    n = lp.shape[0]
    ref = sequence_input("ref_logps", ref_logps, n, like="policy_logps")
    lp_y = sequence_input("policy_ref_sample_logps", policy_ref_sample_logps, n, like="policy_logps")
    ref_y = sequence_input("ref_ref_sample_logps", ref_ref_sample_logps, n, like="policy_logps")
    w = policy_sample_wins
    if not isinstance(w, torch.Tensor) or w.dtype != torch.bool or w.shape != lp.shape:
        raise fail("policy_sample_wins", f"a boolean ({n},) tensor", describe(w))
    u_pol, u_ref = lp - ref, lp_y - ref_y
    z = torch.where(w, u_pol, u_ref) - torch.where(w, u_ref, u_pol)
    if link == "sigmoid":
        dpo = -F.logsigmoid(beta * z)
    elif link == "ipo":
        dpo = (z - 1 / (2 * beta)) ** 2
    else:
        raise fail("link", "one of 'sigmoid', 'ipo'", repr(link))
    bonus = alpha * lp_y
    out = finish(dpo + bonus, reduction, sample_weight=sample_weight)
    if not return_metrics:
        return out
    return out, {"dpo_losses": dpo.detach(), "xpo_losses": bonus.detach(), "margins": z.detach()}


RLOOLoss = rloo.Module
PPOLoss = ppo.Module
PPOValueLoss = ppo_value_loss.Module
BradleyTerryLoss = bradley_terry.Module
