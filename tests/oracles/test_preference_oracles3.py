"""Oracle tests (issue 19): RL objectives and reward-model losses against TRL and the REINFORCE++ authors' OpenRLHF.

Each ``_ref_*`` function is a port of the cited lines (repository, file, commit), kept as close to the original as
float64 allows (distributed gathers and logging dropped); losskit is called on the same seeded float64 inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit
from losskit.preference import gae_advantages, reinforce_pp_advantages, rloo_advantages

TRL, TRL_C = "huggingface/trl", "f2cd57710ae345ea6428ae95363267fcf38a3dc8"
ORLHF, ORLHF_C = "OpenRLHF/OpenRLHF", "3c3be6234e0cb353e76bb8019947db9dfe99fca7"

ORACLES = [
    Oracle("bradley_terry", TRL, "trl/trainer/reward_trainer.py (RewardTrainer.compute_loss)", TRL_C, "1e-12",
           source="peer",
           differences="the pairwise loss predates released code (InstructGPT); TRL's RewardTrainer, margins and "
                       "center_rewards_coefficient included: equal (values and gradients)"),
    Oracle("rloo", TRL, "trl/trainer/rloo_trainer.py (_generate_and_score_completions, _compute_loss)", TRL_C,
           "1e-12", source="peer",
           differences="Cohere published no code for arXiv:2402.14740; TRL's RLOOTrainer (KL in the reward, "
                       "leave-one-out baseline, normalize_advantages, sequence-ratio clip): equal; TRL's NaN "
                       "(unscorable) rewards are handled by rloo_advantages (tested equal too)"),
    Oracle("reinforce_pp", ORLHF, "openrlhf/trainer/ppo_utils/experience_maker.py (compute_advantages_and_returns), "
           "openrlhf/models/utils.py (compute_approx_kl, compute_reward), openrlhf/models/loss.py (PolicyLoss)",
           ORLHF_C, "1e-12",
           differences="the author's OpenRLHF (reinforce and reinforce_baseline estimators, k1/k2/k3 KL in the "
                       "reward clamped to +-10, token-level loss): equal; OpenRLHF clamps the policy log-ratio to "
                       "[-20, 20] (only ratios beyond e^20 differ) and leaves whitened advantages nonzero at padding "
                       "(never read)"),
    Oracle("ppo", TRL, "trl/experimental/ppo/ppo_trainer.py (PPOTrainer.train: pg_loss)", TRL_C, "1e-12",
           source="peer",
           differences="OpenAI's lm-human-preferences (TensorFlow 1) is not ported; TRL's PPOTrainer policy loss "
                       "(masked_mean of the clipped surrogate): equal"),
    Oracle("ppo_value_loss", TRL, "trl/experimental/ppo/ppo_trainer.py (PPOTrainer.train: vf_loss)", TRL_C, "1e-12",
           source="peer",
           differences="TRL's PPOTrainer value loss (0.5 masked_mean of max(unclipped, clipped)): equal; also "
                       "equal to OpenRLHF's ValueLoss (token level); gae_advantages equals OpenRLHF's "
                       "get_advantages_and_returns and TRL's loop on masked rewards"),
    Oracle("nash_md", TRL, "trl/experimental/nash_md/nash_md_trainer.py (NashMDTrainer._compute_losses)", TRL_C,
           "1e-12", source="peer",
           differences="the Nash-MD authors (Google DeepMind) released no code; TRL's NashMDTrainer loss (padding "
                       "filled with 0): equal (values and gradients)"),
    Oracle("sapo", TRL, "trl/trainer/grpo_trainer.py (GRPOTrainer._compute_loss, loss_type='sapo')", TRL_C, "1e-12",
           source="peer",
           differences="the SAPO authors (Qwen) released no code with arXiv:2511.20347; TRL's sapo branch with its "
                       "temperatures 1.0 / 1.05 and grpo aggregation: equal; also grpo's sampling_correction (TRL's "
                       "vllm_importance_sampling_correction, the four modes) and top_entropy_quantile "
                       "(get_high_entropy_mask, one process) equal TRL's"),
    Oracle("wpo", TRL, "trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, use_weighting=True)", TRL_C, "1e-12",
           source="peer",
           differences="the authors' release is not ported (TRL is the reference); TRL's use_weighting (eq. 2, sampled "
                       "alignment) with the sigmoid loss, weights from wpo_weights: equal (values and gradients)"),
    Oracle("tpo", TRL, "trl/experimental/tpo/tpo_trainer.py (TPOTrainer._compute_loss)", TRL_C, "1e-12",
           source="peer",
           differences="the authors' release is not ported (TRL is the reference); TRL's TPOTrainer (sigmoid, hinge, ipo, "
                       "tpo-l; the gold NLL averaged over the batch's gold tokens with gold_lengths): equal"),
    Oracle("xpo", TRL, "trl/experimental/xpo/xpo_trainer.py (XPOTrainer._compute_losses)", TRL_C, "1e-12",
           source="peer",
           differences="no official code with arXiv:2405.21046; TRL's XPOTrainer loss (sigmoid and ipo): equal"),
]


def _close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    f(x).sum().backward()
    return x.grad


def _policy_batch(seed, b=6, t=7, spread=0.3, empty_row=False):
    g = torch.Generator().manual_seed(seed)
    lp = -(0.05 + 2 * torch.rand(b, t, generator=g, dtype=torch.float64))
    old = (lp + spread * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=-1e-3)
    ref = (lp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=-1e-3)
    rewards = torch.randn(b, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    if empty_row:
        lengths[0] = 0
    mask = (torch.arange(t)[None] < lengths[:, None]).to(torch.float64)
    return lp, old, ref, rewards, mask


# ----------------------------------------------------------------------------------------- Bradley-Terry
def _ref_trl_reward(rewards_chosen, rewards_rejected, margin, center_rewards_coefficient):
    # huggingface/trl trl/trainer/reward_trainer.py @ f2cd5771, RewardTrainer.compute_loss (lines 749-756)
    if margin is not None:
        loss = -torch.nn.functional.logsigmoid(rewards_chosen - rewards_rejected - margin).mean()
    else:
        loss = -torch.nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()
    if center_rewards_coefficient is not None:
        loss += center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
    return loss


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
@pytest.mark.parametrize("margin", [False, True])
@pytest.mark.parametrize("coef", [None, 0.01])
def test_bradley_terry_matches_trl(scale, margin, coef):
    g = torch.Generator().manual_seed(5)
    rc, rr = (scale * torch.randn(2, 9, generator=g, dtype=torch.float64)).unbind()
    m = torch.rand(9, generator=g, dtype=torch.float64) if margin else None
    _close(losskit.bradley_terry(rc, rr, m, center_rewards_coefficient=coef), _ref_trl_reward(rc, rr, m, coef))
    _close(_grad(lambda x: losskit.bradley_terry(x, rr, m, center_rewards_coefficient=coef), rc),
           _grad(lambda x: _ref_trl_reward(x, rr, m, coef), rc))
    _close(_grad(lambda x: losskit.bradley_terry(rc, x, m, center_rewards_coefficient=coef), rr),
           _grad(lambda x: _ref_trl_reward(rc, x, m, coef), rr))


# --------------------------------------------------------------------------------------------------- RLOO
def _nanstd(tensor):
    # huggingface/trl trl/trainer/utils.py @ f2cd5771, nanstd (lines 857-881), dim=None
    mean = torch.nanmean(tensor, dim=None, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=None, keepdim=True)
    # the count in the tensor's dtype: TRL's int / int division is float32, 2e-8 off in float64
    count = torch.sum(~torch.isnan(tensor), dim=None, keepdim=True).to(tensor.dtype)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction
    return torch.sqrt(variance).squeeze()


def _ref_trl_rloo_advantages(rewards, old_per_token_logps, ref_per_token_logps, completion_mask, beta,
                             num_generations, normalize_advantages):
    # huggingface/trl trl/trainer/rloo_trainer.py @ f2cd5771, _generate_and_score_completions (lines 1527-1561)
    rewards = rewards.clone()
    if beta != 0.0:
        per_token_kl = old_per_token_logps - ref_per_token_logps
        kl = (per_token_kl * completion_mask).sum(-1)
        rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = baselines.view(-1)
    advantages = rewards - baselines
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (_nanstd(advantages) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def _ref_trl_rloo_loss(per_token_logps, old_per_token_logps, completion_mask, advantages, epsilon_low,
                       epsilon_high):
    # huggingface/trl trl/trainer/rloo_trainer.py @ f2cd5771, _compute_loss (lines 1686-1695); old_logps is the
    # masked sum of the sampler's per-token log-probs (line 1467)
    logps = (per_token_logps * completion_mask).sum(1)
    old_logps = (old_per_token_logps * completion_mask).sum(1)
    log_ratio = logps - old_logps
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_sequence_loss1 = coef_1 * advantages
    per_sequence_loss2 = coef_2 * advantages
    per_sequence_loss = -torch.min(per_sequence_loss1, per_sequence_loss2)
    return per_sequence_loss.mean()


@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("beta", [0.0, 0.05])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("case", ["plain", "empty_row", "far_off_policy"])
def test_rloo_matches_trl(n, beta, normalize, case):
    lp, old, ref, rewards, mask = _policy_batch(21 + n, b=6, spread=2.0 if case == "far_off_policy" else 0.3,
                                                empty_row=case == "empty_row")
    adv = _ref_trl_rloo_advantages(rewards, old, ref, mask, beta, n, normalize)

    def trl(x):
        return _ref_trl_rloo_loss(x, old, mask, adv, 0.2, 0.28)

    def ours(x):
        return losskit.rloo(x, old, rewards, mask.bool(), ref, group_size=n, beta=beta, epsilon_high=0.28,
                            normalize_advantages=normalize)

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))


def test_rloo_advantages_match_trl_with_unscorable_samples():
    g = torch.Generator().manual_seed(3)
    r = torch.randn(12, generator=g, dtype=torch.float64)
    r[1] = float("nan")  # one unscorable sample
    r[6], r[7], r[8] = float("nan"), float("nan"), 0.3  # a group with one scorable sample: advantage 0
    zeros = torch.zeros(12, 2, dtype=torch.float64)
    for normalize in (False, True):
        ref = _ref_trl_rloo_advantages(r, zeros, zeros, zeros, 0.0, 3, normalize)
        _close(rloo_advantages(r, 3, normalize=normalize), ref)
        _close(rloo_advantages(r.reshape(4, 3), normalize=normalize).reshape(-1), ref)


# --------------------------------------------------------------------------------------------- REINFORCE++
def _ref_orlhf_kl(log_probs, log_probs_base, kl_estimator):
    # OpenRLHF/OpenRLHF openrlhf/models/utils.py @ 3c3be623, compute_approx_kl (lines 64-95)
    log_ratio = log_probs - log_probs_base  # .float() dropped: float64 throughout
    if kl_estimator == "k2":
        log_ratio = log_ratio**2 / 2.0
    elif kl_estimator == "k3":
        log_ratio = (-log_ratio).exp() - 1 + log_ratio
    return log_ratio.clamp(min=-10, max=10)


def _ref_orlhf_advantages(rewards, kl, action_mask, kl_coef, gamma, estimator, n_samples_per_prompt):
    # OpenRLHF/OpenRLHF openrlhf/trainer/ppo_utils/experience_maker.py @ 3c3be623, compute_advantages_and_returns
    # (lines 238-330; one experience, no length penalties), with compute_reward (openrlhf/models/utils.py lines
    # 98-126) and get_cumulative_returns (lines 380-411)
    rewards = rewards.reshape(-1, n_samples_per_prompt)
    if estimator == "reinforce_baseline":
        rewards = rewards - rewards.mean(-1, keepdim=True)
    r = rewards.reshape(-1)
    kl_reward = -kl_coef * kl
    eos_indices = action_mask.size(1) - 1 - action_mask.long().fliplr().argmax(dim=1, keepdim=True)
    last_reward = torch.zeros_like(kl).scatter_(dim=1, index=eos_indices, src=r.unsqueeze(1).to(kl.dtype))
    reward = last_reward + kl_reward
    response_length = reward.size(1)
    returns = torch.zeros_like(reward)
    cumulative_return = torch.zeros(reward.size(0), dtype=reward.dtype)
    reward = action_mask * reward
    for t in reversed(range(response_length)):
        cumulative_return = reward[:, t] + gamma * cumulative_return
        returns[:, t] = cumulative_return
    advantages = returns.clone()
    all_advantages = advantages.flatten()
    all_action_masks = action_mask.flatten()
    num_actions = all_action_masks.sum()
    mean = (all_advantages * all_action_masks).sum() / num_actions
    var = ((all_advantages - mean).pow(2) * all_action_masks).sum() / num_actions
    rstd = var.clamp(min=1e-8).rsqrt()
    return (advantages - mean) * rstd


def _ref_orlhf_policy_loss(log_probs, old_log_probs, advantages, action_mask, clip_eps_low, clip_eps_high):
    # OpenRLHF/OpenRLHF openrlhf/models/loss.py @ 3c3be623, PolicyLoss.forward (lines 166-186, 220-227; ppo, no
    # dual clip, no vLLM correction) and aggregate_loss (token_level_loss, masked_mean)
    raw_policy_log_ratio = log_probs - old_log_probs
    policy_log_ratio = raw_policy_log_ratio.clamp(min=-20.0, max=20.0)
    ratio = policy_log_ratio.exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - clip_eps_low, 1 + clip_eps_high) * advantages
    loss = -torch.min(surr1, surr2)
    return (loss * action_mask).sum() / action_mask.sum()


@pytest.mark.parametrize("estimator,n", [("reinforce", 1), ("reinforce_baseline", 3)])
@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("case", ["plain", "far_reference"])
def test_reinforce_pp_matches_openrlhf(estimator, n, kl_estimator, gamma, case):
    lp, old, ref, rewards, mask = _policy_batch(31, b=6)
    if case == "far_reference":
        ref = ref - 15.0 * torch.rand(ref.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    beta = 0.05
    kl = _ref_orlhf_kl(old, ref, kl_estimator)
    adv = _ref_orlhf_advantages(rewards, kl, mask, beta, gamma, estimator, n)
    ours_adv = reinforce_pp_advantages(rewards, mask.bool(), old, ref, beta=beta, kl_estimator=kl_estimator,
                                       gamma=gamma, group_size=n if n > 1 else None)
    _close(ours_adv, torch.where(mask.bool(), adv, 0.0))

    def theirs(x):
        return _ref_orlhf_policy_loss(x, old, adv, mask, 0.2, 0.28)

    def ours(x):
        return losskit.reinforce_pp(x, old, rewards, mask.bool(), ref, beta=beta, kl_estimator=kl_estimator,
                                    gamma=gamma, group_size=n if n > 1 else None, epsilon_high=0.28)

    _close(ours(lp), theirs(lp))
    _close(_grad(ours, lp), _grad(theirs, lp))


# -------------------------------------------------------------------------------------------------- PPO
def _masked_mean(values, mask):
    # huggingface/trl trl/experimental/ppo/ppo_trainer.py @ f2cd5771, masked_mean (lines 237-242), axis=None
    return (values * mask).sum() / mask.sum()


def _ref_trl_pg_loss(new_logprobs, mb_logprobs, mb_advantage, mask, cliprange):
    # huggingface/trl trl/experimental/ppo/ppo_trainer.py @ f2cd5771, PPOTrainer.train (lines 841-846)
    logprobs_diff = new_logprobs - mb_logprobs
    ratio = torch.exp(logprobs_diff)
    pg_losses = -mb_advantage * ratio
    pg_losses2 = -mb_advantage * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    return _masked_mean(pg_loss_max, mask)


def _ref_trl_vf_loss(vpred, mb_values, mb_return, mask, cliprange_value):
    # huggingface/trl trl/experimental/ppo/ppo_trainer.py @ f2cd5771, PPOTrainer.train (lines 829-837)
    vpredclipped = torch.clamp(vpred, mb_values - cliprange_value, mb_values + cliprange_value)
    vf_losses1 = torch.square(vpred - mb_return)
    vf_losses2 = torch.square(vpredclipped - mb_return)
    vf_loss_max = torch.max(vf_losses1, vf_losses2)
    return 0.5 * _masked_mean(vf_loss_max, mask)


def _ref_trl_gae(rewards, values, gamma, lam):
    # huggingface/trl trl/experimental/ppo/ppo_trainer.py @ f2cd5771, PPOTrainer.train (lines 786-796), on rewards
    # and values that are 0 at padding (TRL fills values there with 0; its token rewards are 0 beyond the end)
    lastgaelam = 0
    advantages_reversed = []
    gen_length = rewards.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + values
    return advantages, returns


def _ref_orlhf_value_loss(values, old_values, returns, action_mask, clip_eps):
    # OpenRLHF/OpenRLHF openrlhf/models/loss.py @ 3c3be623, ValueLoss.forward (lines 243-265), token level
    values_clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    surr1 = (values_clipped - returns) ** 2
    surr2 = (values - returns) ** 2
    loss = torch.max(surr1, surr2)
    return 0.5 * ((loss * action_mask).sum() / action_mask.sum())


@pytest.mark.parametrize("case", ["plain", "empty_row", "far_off_policy"])
@pytest.mark.parametrize("adv_shape", ["token", "sequence"])
def test_ppo_matches_trl(case, adv_shape):
    lp, old, _, _, mask = _policy_batch(41, spread=2.0 if case == "far_off_policy" else 0.3,
                                        empty_row=case == "empty_row")
    g = torch.Generator().manual_seed(8)
    adv = torch.randn(lp.shape if adv_shape == "token" else lp.shape[:1], generator=g, dtype=torch.float64)
    a2 = adv if adv.dim() == 2 else adv[:, None]

    def trl(x):
        return _ref_trl_pg_loss(x, old, a2, mask, 0.2)

    def ours(x):
        return losskit.ppo(x, old, adv, mask.bool())

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))


@pytest.mark.parametrize("scale", [1.0, 100.0])
@pytest.mark.parametrize("clip", [0.2, 1.0])
def test_ppo_value_loss_matches_trl_and_openrlhf(scale, clip):
    g = torch.Generator().manual_seed(9)
    v, old, ret = (scale * torch.randn(3, 5, 8, generator=g, dtype=torch.float64)).unbind()
    old = v + 0.3 * (old / scale)
    mask = (torch.arange(8)[None] < torch.tensor([8, 3, 1, 5, 6])[:, None]).to(torch.float64)

    def ours(x):
        return losskit.ppo_value_loss(x, old, ret, mask.bool(), clip_range=clip)

    for ref in (lambda x: _ref_trl_vf_loss(x, old, ret, mask, clip),
                lambda x: _ref_orlhf_value_loss(x, old, ret, mask, clip)):
        _close(ours(v), ref(v))
        _close(_grad(ours, v), _grad(ref, v))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_trl(gamma, lam):
    g = torch.Generator().manual_seed(10)
    r, v = torch.randn(2, 5, 8, generator=g, dtype=torch.float64).unbind()
    mask = torch.arange(8)[None] < torch.tensor([8, 3, 1, 5, 6])[:, None]
    adv, ret = gae_advantages(r, v, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = _ref_trl_gae(torch.where(mask, r, 0.0), torch.where(mask, v, 0.0), gamma, lam)
    _close(adv, ref_adv)
    _close(ret, ref_ret)


# ----------------------------------------------------------------------------------------- Nash-MD, XPO
def _ref_trl_nash_md(model_logprobs_model_data, ref_logprobs_model_data, probability, model_padding_mask, beta):
    # huggingface/trl trl/experimental/nash_md/nash_md_trainer.py @ f2cd5771, _compute_logprobs (lines 360-363:
    # padding filled with 0) and _compute_losses (lines 373-385)
    model_logprobs_model_data = model_logprobs_model_data.masked_fill(model_padding_mask, 0.0)
    ref_logprobs_model_data = ref_logprobs_model_data.masked_fill(model_padding_mask, 0.0)
    score = (probability - 0.5) * model_logprobs_model_data.sum(1)
    with torch.no_grad():
        log_ratio = model_logprobs_model_data - ref_logprobs_model_data
    kl_div_loss = (log_ratio * model_logprobs_model_data).sum(1)
    loss = beta * kl_div_loss - score
    return loss.mean()


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("case", ["plain", "empty_row"])
def test_nash_md_matches_trl(beta, case):
    lp, _, ref, _, mask = _policy_batch(51, empty_row=case == "empty_row")
    p = torch.rand(lp.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pad = mask == 0

    def trl(x):
        return _ref_trl_nash_md(x, ref, p, pad, beta)

    def ours(x):
        return losskit.nash_md(x, ref, p, mask.bool(), beta=beta)

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))


def _ref_trl_xpo(model_logprobs_model_data_sum, model_logprobs_ref_data_sum, ref_logprobs_ref_data_sum,
                 ref_logprobs_model_data_sum, chosen_mask, beta, alpha, loss_type):
    # huggingface/trl trl/experimental/xpo/xpo_trainer.py @ f2cd5771, XPOTrainer._compute_losses (lines 319-341),
    # on the token sums of lines 314-317
    chosen_model_logprobs = torch.where(chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum)
    chosen_ref_logprobs = torch.where(chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum)
    chosen_log_ratios = chosen_model_logprobs - chosen_ref_logprobs
    rejected_model_logprobs = torch.where(~chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum)
    rejected_ref_logprobs = torch.where(~chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum)
    rejected_log_ratios = rejected_model_logprobs - rejected_ref_logprobs
    logits = chosen_log_ratios - rejected_log_ratios
    if loss_type == "sigmoid":
        dpo_losses = -F.logsigmoid(beta * logits)
    else:
        dpo_losses = (logits - 1 / (2 * beta)) ** 2
    xpo_losses = alpha * model_logprobs_ref_data_sum
    return (dpo_losses + xpo_losses).mean()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("alpha", [1e-5, 0.5])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_xpo_matches_trl(loss_type, alpha, scale):
    g = torch.Generator().manual_seed(61)
    pm, pr, rr, rm = (-scale * torch.rand(4, 9, generator=g, dtype=torch.float64)).unbind()
    wins = torch.rand(9, generator=g) < 0.5
    beta = 0.1

    def trl(a, b):
        return _ref_trl_xpo(a, b, rr, rm, wins, beta, alpha, loss_type)

    def ours(a, b):
        return losskit.xpo(a, rm, b, rr, wins, beta=beta, alpha=alpha, link=loss_type)

    _close(ours(pm, pr), trl(pm, pr))
    for i in range(2):
        xs = [pm.clone().requires_grad_(True), pr.clone().requires_grad_(True)]
        ys = [pm.clone().requires_grad_(True), pr.clone().requires_grad_(True)]
        ours(*xs).backward()
        trl(*ys).backward()
        _close(xs[i].grad, ys[i].grad)


# ------------------------------------------------------------- SAPO, vLLM importance sampling, entropy masking
def _ref_trl_high_entropy_mask(entropies, mask, threshold):
    # huggingface/trl trl/trainer/grpo_trainer.py @ f2cd5771, GRPOTrainer.get_high_entropy_mask (lines 1413-1432),
    # one process (the gather and its padding are the identity)
    local = entropies[mask.bool()]  # .float() dropped: float64 throughout
    if local.numel() == 0:
        return torch.zeros_like(entropies, dtype=torch.bool)
    entropy_threshold = torch.quantile(local, threshold)
    masked_entropies = entropies * mask.float()
    entropy_mask = masked_entropies >= entropy_threshold
    return entropy_mask & mask.bool()


def _ref_trl_is_ratio(old_per_token_logps, sampling_per_token_logps, mask, mode, clip_min, clip_max):
    # huggingface/trl trl/trainer/grpo_trainer.py @ f2cd5771, _generate_and_score_completions (lines 2579-2620)
    per_token_logps_diff = (old_per_token_logps - sampling_per_token_logps) * mask
    if mode in ["sequence_mask", "sequence_truncate"]:
        logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)
    else:
        logps_diff = per_token_logps_diff
    ratio = torch.exp(logps_diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    min_val = clip_min if clip_min is not None else -float("inf")
    max_val = clip_max if clip_max is not None else float("inf")
    return ratio.masked_fill((ratio < min_val) | (ratio > max_val), value=0.0)


def _ref_trl_grpo_loss(per_token_logps, old_per_token_logps, advantages, mask, ref_per_token_logps, *, beta,
                       loss_type, epsilon_low=0.2, epsilon_high=0.2, tau_pos=1.0, tau_neg=1.05, entropies=None,
                       top_entropy_quantile=1.0, importance_sampling_ratio=None):
    # huggingface/trl trl/trainer/grpo_trainer.py @ f2cd5771, GRPOTrainer._compute_loss (lines 3020-3133):
    # token-level importance, the grpo / bnpo / sapo branches, entropy mask, vLLM importance-sampling weight, k3 KL
    entropy_mask = (_ref_trl_high_entropy_mask(entropies, mask, 1 - top_entropy_quantile)
                    if top_entropy_quantile < 1.0 else None)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    if beta != 0.0:
        per_token_kl = (torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps)
                        - 1)
    if loss_type == "sapo":
        temperatures = torch.where(advantages > 0, tau_pos, tau_neg)
        soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
        per_token_loss = -soft_coef_1 * advantages
    else:
        coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask
    if importance_sampling_ratio is not None:
        per_token_loss = per_token_loss * importance_sampling_ratio
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type in ["grpo", "sapo"]:
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)  # bnpo


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("case", ["plain", "empty_row", "far_off_policy"])
def test_sapo_matches_trl(beta, case):
    lp, old, ref, _, mask = _policy_batch(71, spread=2.0 if case == "far_off_policy" else 0.3,
                                          empty_row=case == "empty_row")
    adv = torch.randn(lp.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def trl(x):
        return _ref_trl_grpo_loss(x, old, adv, mask, ref, beta=beta, loss_type="sapo")

    def ours(x):
        return losskit.sapo(x, old, adv, mask.bool(), ref, beta=beta)

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))
    _close(losskit.grpo(lp, old, adv, mask.bool(), ref, beta=beta, clip="sapo", aggregation="grpo"), trl(lp))


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("clip_min,clip_max", [(None, 3.0), (0.5, 1.5), (None, None)])
@pytest.mark.parametrize("loss_type", ["grpo", "sapo", "bnpo"])
def test_grpo_sampling_correction_matches_trl(mode, clip_min, clip_max, loss_type):
    if clip_min is None and clip_max is None and mode.endswith("truncate"):
        pytest.skip("TRL's torch.clamp raises without bounds (losskit: no truncation)")
    lp, old, ref, _, mask = _policy_batch(72)
    g = torch.Generator().manual_seed(5)
    sampling = (old + 0.4 * torch.randn(old.shape, generator=g, dtype=torch.float64)).clamp(max=-1e-3)
    adv = torch.randn(lp.shape[0], generator=g, dtype=torch.float64)
    w = _ref_trl_is_ratio(old, sampling, mask, mode, clip_min, clip_max)

    def trl(x):
        return _ref_trl_grpo_loss(x, old, adv, mask, ref, beta=0.04, loss_type=loss_type, importance_sampling_ratio=w)

    def ours(x):
        return losskit.grpo(x, old, adv, mask.bool(), ref, sampling, beta=0.04,
                            aggregation="grpo" if loss_type == "sapo" else loss_type,
                            clip="sapo" if loss_type == "sapo" else "ppo", sampling_correction=mode,
                            sampling_clip_min=clip_min, sampling_clip_max=clip_max)

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))


@pytest.mark.parametrize("q", [0.2, 0.5, 0.99])
@pytest.mark.parametrize("case", ["plain", "empty_row"])
def test_grpo_top_entropy_mask_matches_trl(q, case):
    lp, old, ref, _, mask = _policy_batch(73, empty_row=case == "empty_row")
    g = torch.Generator().manual_seed(6)
    ent = 3 * torch.rand(lp.shape, generator=g, dtype=torch.float64)
    adv = torch.randn(lp.shape[0], generator=g, dtype=torch.float64)

    def trl(x):
        return _ref_trl_grpo_loss(x, old, adv, mask, ref, beta=0.04, loss_type="grpo", entropies=ent,
                                  top_entropy_quantile=q)

    def ours(x):
        return losskit.grpo(x, old, adv, mask.bool(), ref, entropies=ent, beta=0.04, aggregation="grpo",
                            top_entropy_quantile=q)

    _close(ours(lp), trl(lp))
    _close(_grad(ours, lp), _grad(trl, lp))


# ------------------------------------------------------------------------------------------------ WPO, TPO
def _selective_log_softmax(logits, index):
    return torch.gather(logits.log_softmax(-1), dim=-1, index=index.unsqueeze(-1)).squeeze(-1)


def _ref_trl_wpo(shift_logits, shift_labels, shift_completion_mask, ref_shift_logits, beta):
    # huggingface/trl trl/trainer/dpo_trainer.py @ f2cd5771, DPOTrainer._compute_loss: per-token log-probs and
    # sums (lines 1347-1362, 1385-1398, reverse KL), the sigmoid loss (lines 1434-1435) and use_weighting
    # (lines 1565-1578); the batch is [chosen, rejected]
    per_token_logps = _selective_log_softmax(shift_logits, shift_labels)
    per_token_logps[shift_completion_mask == 0] = 0.0
    chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)
    ref_per_token_logps = _selective_log_softmax(ref_shift_logits, shift_labels)
    ref_per_token_logps[shift_completion_mask == 0] = 0.0
    ref_chosen_logps, ref_rejected_logps = ref_per_token_logps.sum(dim=1).chunk(2, dim=0)
    delta_score = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    per_sequence_loss = -F.logsigmoid(beta * delta_score)
    completion_lengths = shift_completion_mask.sum(dim=1).clamp_min(1)
    with torch.no_grad():
        lse1 = torch.logsumexp(shift_logits, dim=-1)
        lse2 = torch.logsumexp(2.0 * shift_logits, dim=-1)
        log_denom = lse2 - 2.0 * lse1
        aligned_logps = (per_token_logps - log_denom) * shift_completion_mask
    mean_logps = aligned_logps.sum(dim=1) / completion_lengths
    weights = torch.exp(mean_logps)
    chosen_weights, rejected_weights = weights.chunk(2, dim=0)
    per_sequence_loss *= chosen_weights * rejected_weights
    return per_sequence_loss.mean()


@pytest.mark.parametrize("scale", [1.0, 5.0])
@pytest.mark.parametrize("empty", [False, True])
def test_wpo_matches_trl(scale, empty):
    g = torch.Generator().manual_seed(81)
    b, t, v = 4, 6, 9
    logits = scale * torch.randn(2 * b, t, v, generator=g, dtype=torch.float64)
    ref_logits = scale * torch.randn(2 * b, t, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (2 * b, t), generator=g)
    mask = (torch.arange(t)[None] < torch.randint(1, t + 1, (2 * b,), generator=g)[:, None]).long()
    if empty:
        mask[0] = 0
    from losskit.preference import sequence_scores, token_logprobs, wpo_weights

    def ours(z):
        lp = sequence_scores(token_logprobs(z, labels, mask.bool()).logps, mask.bool())
        with torch.no_grad():
            ref = sequence_scores(token_logprobs(ref_logits, labels, mask.bool()).logps, mask.bool())
        w = wpo_weights(z, labels, mask.bool(), chunk_rows=5)
        pc, pr = lp.chunk(2)
        rc, rr = ref.chunk(2)
        wc, wr = w.chunk(2)
        return losskit.wpo(pc, pr, rc, rr, wc, wr, beta=0.1)

    def trl(z):
        return _ref_trl_wpo(z, labels, mask, ref_logits, 0.1)

    _close(ours(logits), trl(logits))
    _close(_grad(ours, logits), _grad(trl, logits))


def _ref_trl_tpo(chosen_logps, rejected_logps, ref_logits, ref_labels, ref_mask, beta, loss_type, label_smoothing,
                 tpo_l_gamma, tpo_alpha):
    # huggingface/trl trl/experimental/tpo/tpo_trainer.py @ f2cd5771, TPOTrainer._compute_loss (lines 661-702), on
    # the per-sequence scores of lines 643-659 (summed, or length-normalised for ipo / tpo-l: passed in)
    delta_score = chosen_logps - rejected_logps
    if loss_type == "sigmoid":
        per_sequence_loss = (-F.logsigmoid(beta * delta_score) * (1 - label_smoothing)
                             - F.logsigmoid(-beta * delta_score) * label_smoothing)
    elif loss_type == "hinge":
        per_sequence_loss = torch.relu(1 - beta * delta_score)
    elif loss_type == "ipo":
        per_sequence_loss = (delta_score - 1 / (2 * beta)) ** 2
    else:  # tpo-l
        gamma_logratios = tpo_l_gamma / beta
        shifted_delta = delta_score - gamma_logratios
        per_sequence_loss = (-F.logsigmoid(beta * shifted_delta) * (1 - label_smoothing)
                             - F.logsigmoid(-beta * shifted_delta) * label_smoothing)
    loss = per_sequence_loss.mean()
    ref_mask = ref_mask.bool()
    nll_loss = F.cross_entropy(ref_logits[ref_mask], ref_labels[ref_mask])
    return loss + tpo_alpha * nll_loss


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "tpo-l"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_tpo_matches_trl(loss_type, label_smoothing):
    if loss_type in ("hinge", "ipo") and label_smoothing:
        pytest.skip("label smoothing applies to the logistic links only")
    g = torch.Generator().manual_seed(82)
    b, t, v = 5, 6, 7
    pc, pr = (-3 * torch.rand(2, b, generator=g, dtype=torch.float64)).unbind()
    ref_logits = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    ref_labels = torch.randint(0, v, (b, t), generator=g)
    ref_mask = torch.arange(t)[None] < torch.randint(1, t + 1, (b,), generator=g)[:, None]
    from losskit.preference import token_logprobs

    def nll(z):
        return -(token_logprobs(z, ref_labels, ref_mask).logps.sum(-1))

    beta, alpha = 0.5, 0.7

    def ours(x, z):
        return losskit.tpo(x, pr, gold_nll=nll(z), gold_lengths=ref_mask.sum(-1), beta=beta, alpha=alpha,
                           link=loss_type, gamma=0.5, label_smoothing=label_smoothing)

    def trl(x, z):
        return _ref_trl_tpo(x, pr, z, ref_labels, ref_mask, beta, loss_type, label_smoothing, 0.5, alpha)

    _close(ours(pc, ref_logits), trl(pc, ref_logits))
    _close(_grad(lambda x: ours(x, ref_logits), pc), _grad(lambda x: trl(x, ref_logits), pc))
    _close(_grad(lambda z: ours(pc, z), ref_logits), _grad(lambda z: trl(pc, z), ref_logits))
