"""Layer 4, RL building blocks (issue 19): advantage estimators, RLOO, REINFORCE++, PPO's policy and value losses,
the Bradley-Terry reward-model loss, Nash-MD and XPO. Checked against closed forms and their definitions; the
peer / authors' code comparisons are in tests/oracles/test_preference_oracles3.py."""

import math

import pytest
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError
from losskit.preference import (
    gae_advantages,
    group_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)

B, T = 6, 7


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -(0.05 + 2 * torch.rand(B, T, generator=g, dtype=torch.float64))
    old = (lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=-0.01)
    ref = (lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=-0.01)
    rewards = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.arange(T)[None] < torch.tensor([7, 2, 5, 1, 6, 3])[:, None]
    return lp, old, ref, rewards, mask


def _grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    f(x).backward()
    return x.grad


# ------------------------------------------------------------------------------------------- advantages
@pytest.mark.parametrize("n", [2, 3, 6])
def test_rloo_advantages_are_the_scaled_centred_rewards(n):
    r = torch.randn(12, dtype=torch.float64)
    a = rloo_advantages(r, n)
    g = r.reshape(-1, n)
    torch.testing.assert_close(a, (n / (n - 1) * (g - g.mean(-1, keepdim=True))).reshape(-1))
    for i in range(12):  # the definition: r_i minus the mean of its siblings
        grp = r[(i // n) * n:(i // n + 1) * n]
        torch.testing.assert_close(a[i], r[i] - (grp.sum() - r[i]) / (n - 1))
    torch.testing.assert_close(a.reshape(-1, n).sum(-1), torch.zeros(12 // n, dtype=torch.float64))
    # the group-centred advantages of GRPO without scaling are (n-1)/n of these
    torch.testing.assert_close(group_advantages(r, n, scale="none"), (n - 1) / n * a)


def test_rloo_advantages_refuse_single_samples_and_bad_groups():
    with pytest.raises(LossInputError, match="^group_size"):
        rloo_advantages(torch.randn(6), 1)
    with pytest.raises(LossInputError, match="^group_size"):
        rloo_advantages(torch.randn(6), 4)
    assert not rloo_advantages(torch.randn(4, 3, requires_grad=True)).requires_grad


def test_reinforce_pp_advantages_without_kl_are_the_whitened_reward_on_every_token():
    _, old, ref, r, mask = _batch(1)
    a = reinforce_pp_advantages(r, mask, normalize=False)
    torch.testing.assert_close(a, torch.where(mask, r[:, None], 0.0).expand(B, T))
    a = reinforce_pp_advantages(r, mask)
    vals = a[mask]
    torch.testing.assert_close(vals.mean(), torch.zeros((), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(vals.var(unbiased=False), torch.ones((), dtype=torch.float64))
    assert (a[~mask] == 0).all()


def test_reinforce_pp_advantages_put_the_kl_in_the_token_reward():
    _, old, ref, r, mask = _batch(2)
    beta, gamma = 0.1, 0.9
    a = reinforce_pp_advantages(r, mask, old, ref, beta=beta, gamma=gamma, normalize=False, kl_clip=None)
    for i in range(B):
        n = int(mask[i].sum())
        tok = [-beta * float(old[i, t] - ref[i, t]) for t in range(n)]
        tok[-1] += float(r[i])
        for t in range(n):
            want = sum(gamma ** (s - t) * tok[s] for s in range(t, n))
            assert math.isclose(float(a[i, t]), want, rel_tol=1e-12, abs_tol=1e-12)
    with pytest.raises(LossInputError, match="^ref_logps"):
        reinforce_pp_advantages(r, mask, old, None, beta=0.1)


def test_gae_with_lambda_one_is_return_minus_value():
    g = torch.Generator().manual_seed(3)
    r, v = torch.randn(2, B, T, generator=g, dtype=torch.float64).unbind()
    mask = torch.ones(B, T, dtype=torch.bool)
    adv, ret = gae_advantages(r, v, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.flip(torch.cumsum(torch.flip(r, (1,)), 1), (1,)))
    torch.testing.assert_close(adv, ret - v)
    adv0, _ = gae_advantages(r, v, mask, gamma=0.9, lam=0.0)  # lambda = 0: the one-step TD error
    nxt = torch.cat([v[:, 1:], torch.zeros(B, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(adv0, r + 0.9 * nxt - v)


# ------------------------------------------------------------------------------------------- objectives
def test_rloo_on_policy_gradient_is_reinforce_with_the_leave_one_out_baseline():
    lp, _, ref, r, mask = _batch(4)
    old = lp.detach()
    adv = rloo_advantages(r, 3)
    got = _grad(lambda x: losskit.rloo(x, old, r, mask, group_size=3), lp)
    want = _grad(lambda x: -(adv * torch.where(mask, x, 0.0).sum(-1)).mean(), lp)
    torch.testing.assert_close(got, want)
    assert losskit.rloo(lp, old, r, mask, group_size=3).abs() < 1e-12  # value: -mean A = 0
    with pytest.raises(LossInputError, match="^group_size"):
        losskit.rloo(lp, old, r, mask)
    with pytest.raises(LossInputError, match="^ref_logps"):
        losskit.rloo(lp, old, r, mask, group_size=3, beta=0.1)
    loss, m = losskit.rloo(lp, old, r, mask, ref, group_size=3, beta=0.1, return_metrics=True)
    kl = torch.where(mask, old - ref, 0.0).sum(-1)
    torch.testing.assert_close(m["advantages"], rloo_advantages(r - 0.1 * kl, 3))


def test_reinforce_pp_is_ppo_on_its_advantages():
    lp, old, ref, r, mask = _batch(5)
    adv = reinforce_pp_advantages(r, mask, old, ref, beta=0.05)
    torch.testing.assert_close(losskit.reinforce_pp(lp, old, r, mask, ref, beta=0.05),
                               losskit.ppo(lp, old, adv, mask))


def test_ppo_is_grpo_without_kl_with_the_token_mean():
    lp, old, ref, r, mask = _batch(6)
    adv = torch.randn(B, T, dtype=torch.float64)
    torch.testing.assert_close(losskit.ppo(lp, old, adv, mask),
                               losskit.grpo(lp, old, adv, mask, aggregation="bnpo"))
    m = mask.double()
    ratio = torch.exp(lp - old)
    tok = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    torch.testing.assert_close(losskit.ppo(lp, old, adv, mask), (tok * m).sum() / m.sum())
    assert isinstance(losskit.PPOLoss()(lp, old, adv, mask), torch.Tensor)


def test_ppo_value_loss_clips_the_value_step():
    g = torch.Generator().manual_seed(7)
    v, ret = torch.randn(2, B, T, generator=g, dtype=torch.float64).unbind()
    mask = torch.ones(B, T, dtype=torch.bool)
    torch.testing.assert_close(losskit.ppo_value_loss(v, v, ret, mask), 0.5 * F.mse_loss(v, ret))
    torch.testing.assert_close(losskit.ppo_value_loss(v, v + 5, ret, clip_range=None), 0.5 * F.mse_loss(v, ret))
    # far from the old value, on the side away from the return: the clipped error dominates, no gradient
    old = torch.zeros(4, dtype=torch.float64)
    ret1 = torch.full((4,), 1.0, dtype=torch.float64)
    v1 = torch.full((4,), -3.0, dtype=torch.float64)
    torch.testing.assert_close(losskit.ppo_value_loss(v1, old, ret1), torch.tensor(0.5 * 16, dtype=torch.float64))
    g1 = _grad(lambda x: losskit.ppo_value_loss(x, old, ret1), v1)
    assert (g1 != 0).all()  # the unclipped error is the larger one: it keeps its gradient
    v2 = torch.full((4,), 3.0, dtype=torch.float64)  # overshoot: clipped error 0.8^2 < unclipped 2^2
    torch.testing.assert_close(losskit.ppo_value_loss(v2, old, ret1), torch.tensor(0.5 * 4, dtype=torch.float64))
    seq = losskit.ppo_value_loss(v, v, ret, torch.arange(T)[None] < torch.tensor([7, 2, 5, 1, 6, 3])[:, None],
                                 aggregation="sequence", reduction="none")
    assert seq.shape == (B,)


def test_bradley_terry_identities():
    rc = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(losskit.bradley_terry(rc, rc, reduction="none"),
                               torch.full((3,), math.log(2), dtype=torch.float64))
    rr = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    m = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    torch.testing.assert_close(losskit.bradley_terry(rc, rr, m), F.softplus(-(rc - rr - m)).mean())
    # a shared shift of both rewards leaves the pairwise term unchanged; centring penalises it
    torch.testing.assert_close(losskit.bradley_terry(rc + 7, rr + 7), losskit.bradley_terry(rc, rr))
    assert losskit.bradley_terry(rc + 7, rr + 7, center_rewards_coefficient=0.01) > \
        losskit.bradley_terry(rc, rr, center_rewards_coefficient=0.01)
    loss, met = losskit.bradley_terry(rc, rr, return_metrics=True)
    torch.testing.assert_close(met["accuracies"], (rc > rr).double())


def test_nash_md_gradient():
    lp, _, ref, _, mask = _batch(8)
    p = torch.rand(B, dtype=torch.float64)
    beta = 0.3
    got = _grad(lambda x: losskit.nash_md(x, ref, p, mask, beta=beta), lp)
    want = torch.where(mask, beta * (lp - ref) - (p[:, None] - 0.5), 0.0) / B
    torch.testing.assert_close(got, want)


def test_xpo_with_alpha_zero_is_online_dpo():
    g = torch.Generator().manual_seed(9)
    pm, rm, pr, rr = (-3 * torch.rand(4, B, generator=g, dtype=torch.float64)).unbind()
    wins = torch.tensor([True, False, True, True, False, False])
    w_pol, w_ref = torch.where(wins, pm, pr), torch.where(wins, rm, rr)
    l_pol, l_ref = torch.where(wins, pr, pm), torch.where(wins, rr, rm)
    torch.testing.assert_close(losskit.xpo(pm, rm, pr, rr, wins, alpha=0.0),
                               losskit.dpo(w_pol, l_pol, w_ref, l_ref, beta=0.1))
    torch.testing.assert_close(losskit.xpo(pm, rm, pr, rr, wins, alpha=0.0, link="ipo"),
                               losskit.ipo(w_pol, l_pol, w_ref, l_ref, beta=0.1))
    torch.testing.assert_close(losskit.xpo(pm, rm, pr, rr, wins, alpha=0.5) - losskit.xpo(pm, rm, pr, rr, wins,
                                                                                              alpha=0.0),
                               0.5 * pr.mean())


# ------------------------------------------------------------------------- SAPO and GRPO's TRL options
def test_sapo_on_policy_gradient_is_the_policy_gradient():
    lp, _, ref, _, mask = _batch(10)
    adv = torch.randn(B, dtype=torch.float64)
    old = lp.detach()
    torch.testing.assert_close(_grad(lambda x: losskit.sapo(x, old, adv, mask), lp),
                               _grad(lambda x: losskit.grpo(x, old, adv, mask, aggregation="grpo"), lp))
    # off-policy the gate's slope 4 sigma(1 - sigma) < 1: the gradient shrinks smoothly instead of vanishing
    far = lp.detach() - 1.5
    g = _grad(lambda x: losskit.sapo(x, far, adv, mask), lp)
    assert (g[mask] != 0).all()


def test_grpo_sampling_weights_and_entropy_mask_are_identities_at_their_defaults():
    lp, old, ref, _, mask = _batch(11)
    adv = torch.randn(B, dtype=torch.float64)
    base = losskit.grpo(lp, old, adv, mask, ref, beta=0.04)
    torch.testing.assert_close(losskit.grpo(lp, old, adv, mask, ref, old, beta=0.04), base)
    ent = torch.rand(B, T, dtype=torch.float64)
    torch.testing.assert_close(losskit.grpo(lp, old, adv, mask, ref, entropies=ent, beta=0.04), base)
    with pytest.raises(LossInputError, match="^entropies"):
        losskit.grpo(lp, old, adv, mask, ref, beta=0.04, top_entropy_quantile=0.2)
    # q = 0.2 keeps the policy loss of about the top fifth of the tokens: the others contribute only the KL term
    kept = losskit.grpo(lp, old, adv, mask, None, entropies=ent, aggregation="bnpo", top_entropy_quantile=0.2,
                        return_metrics=True)[1]["per_token_loss"]
    assert 0 < (kept[mask] != 0).sum() <= 0.25 * mask.sum() + 1


# ------------------------------------------------------------------------------------------------ WPO, TPO
def test_wpo_weights_and_head():
    from losskit.preference import wpo_weights

    g = torch.Generator().manual_seed(12)
    logits = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (4, 5), generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2] = False
    p = logits.softmax(-1)
    ratio = p.gather(-1, labels[..., None]).squeeze(-1) / (p ** 2).sum(-1)
    want = torch.exp((torch.log(ratio) * mask).sum(-1) / mask.sum(-1).clamp_min(1))
    torch.testing.assert_close(wpo_weights(logits, labels, mask), want)
    torch.testing.assert_close(wpo_weights(logits, labels, mask, chunk_rows=3), want)
    assert wpo_weights(logits, labels, mask)[2] == 1  # an empty completion weighs 1
    # uniform weights 1: DPO
    pc, pr, rc, rr = (-3 * torch.rand(4, B, generator=g, dtype=torch.float64)).unbind()
    one = torch.ones(B, dtype=torch.float64)
    torch.testing.assert_close(losskit.wpo(pc, pr, rc, rr, one, one), losskit.dpo(pc, pr, rc, rr))
    w = torch.rand(B, generator=g, dtype=torch.float64)
    torch.testing.assert_close(losskit.wpo(pc, pr, rc, rr, w, one, reduction="none"),
                               w * losskit.dpo(pc, pr, rc, rr, reduction="none"))
    with pytest.raises(LossInputError, match="^chosen_weights"):
        losskit.wpo(pc, pr, rc, rr)


def test_tpo_links():
    g = torch.Generator().manual_seed(13)
    pc, pr = (-3 * torch.rand(2, B, generator=g, dtype=torch.float64)).unbind()
    nll = torch.rand(B, generator=g, dtype=torch.float64)
    torch.testing.assert_close(losskit.tpo(pc, pr, gold_nll=nll, beta=0.1, alpha=0.5),
                               losskit.cpo(pc, pr, beta=0.1, alpha=0.5, chosen_nll=nll))
    torch.testing.assert_close(losskit.tpo(pc, pr, alpha=0.0, link="tpo-l", beta=0.1, gamma=0.3),
                               losskit.simpo(pc, pr, beta=0.1, gamma=0.3))
    with pytest.raises(LossInputError, match="^gold_nll"):
        losskit.tpo(pc, pr)
    with pytest.raises(LossInputError, match="^ref_chosen_logps"):
        losskit.tpo(pc, pr, pc, pr, gold_nll=nll)
