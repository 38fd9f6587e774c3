"""Oracle tests (issues 18-19): SequenceMatch against IQ-Learn's loss; LUSPO and VESPO entries (TRL's code).

``_ref_iq_loss`` is a port of IQ-Learn's ``iq_loss`` (Div99/IQ-Learn ``iq_learn/iq.py`` @ 1f08bf34), the objective
SequenceMatch applies to an autoregressive model with Q = the logits and V = their log-sum-exp; losskit is called on
the same seeded float64 inputs (values and gradients). LUSPO and VESPO are compared with TRL's own
``GRPOTrainer._compute_loss`` in tests/test_preference_trl_losses.py (the installed trl, release v1.16.0).
"""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

IQ, IQ_C = "Div99/IQ-Learn", "1f08bf346b3a41059170a3b97077acbebb843309"
TRL = "huggingface/trl"

ORACLES = [
    Oracle("sequence_match", IQ, "iq_learn/iq.py (iq_loss)", IQ_C, "1e-12", source="peer",
           differences="the SequenceMatch authors' code was not found (GitHub and the code index searched for the "
                       "paper and its authors); IQ-Learn's iq_loss, which SequenceMatch applies to the logits (Q = "
                       "logit of the token taken, V = logsumexp, done after a sequence's last token), with "
                       "type='iq', loss='value' and div='chi' (chi2) or regularize=True (chi2_mixture, the paper's "
                       "SequenceMatch-chi^2): equal, values and gradients; IQ-Learn's policy states take a fresh "
                       "action (agent.sampleQ), here the token each sample was generated with"),
    Oracle("luspo", TRL, "trl/trainer/grpo_trainer.py (GRPOTrainer._compute_loss, loss_type='luspo')", "v1.16.0",
           "1e-12", source="peer",
           differences="the authors' verl core_algos.py (murphy4122/luspo) is not ported; TRL's own code (the "
                       "installed release, called in tests/test_preference_trl_losses.py) with "
                       "importance_sampling_level='sequence', beta 0 and 0.04: equal, values and gradients"),
    Oracle("vespo", TRL, "trl/trainer/grpo_trainer.py (GRPOTrainer.get_gamma_weights, _compute_loss, "
           "loss_type='vespo')", "v1.16.0", "relation", source="peer",
           differences="the authors' repository (FloyedShen/VESPO) is not ported; TRL's own code (called in "
                       "tests/test_preference_trl_losses.py): gradients equal (1e-12), vLLM token truncate/mask "
                       "correction included; values differ by the stated relation: TRL's token value is "
                       "-phi A log pi, losskit's -phi A (the surrogate at the sampled policy, as for CISPO)"),
]


def _ref_iq_loss(agent, current_Q, current_v, next_v, batch):
    # Div99/IQ-Learn iq_learn/iq.py @ 1f08bf34, iq_loss: the branches type='iq', loss='value', div='chi' and
    # regularize (grad_pen, smooth_expert, rl off), kept as in the original
    args = agent.args
    gamma = agent.gamma
    obs, next_obs, action, env_reward, done, is_expert = batch
    policy_Q = agent.sampleQ(obs)
    y = (1 - done) * gamma * next_v
    reward = (current_Q - y)[is_expert]
    phi_grad = 1
    loss = -(phi_grad * reward).mean()
    value_loss = (current_v - y).mean()
    loss += value_loss
    if args.method.div == "chi" or args.method.chi:
        y = (1 - done) * gamma * next_v
        reward = (current_Q - y)[is_expert]
        chi2_loss = 1 / (4 * args.method.alpha) * (reward ** 2).mean()
        loss += chi2_loss
    if args.method.regularize:
        y = (1 - done) * gamma * next_v
        reward = torch.cat([(current_Q - y)[is_expert], (policy_Q - y)[~is_expert]], dim=0)
        chi2_loss = 1 / (4 * args.method.alpha) * (reward ** 2).mean()
        loss += chi2_loss
    return loss


def _flat(logits, targets, mask):
    """IQ-Learn's transitions of LM sequences: Q(s_t, a_t), V(s_t), V(s_{t+1}), done."""
    q, v, v_next, done = [], [], [], []
    V = torch.logsumexp(logits, -1)
    for i in range(logits.shape[0]):
        idx = [t for t in range(logits.shape[1]) if mask[i, t]]
        for j, t in enumerate(idx):
            q.append(logits[i, t, targets[i, t]])
            v.append(V[i, t])
            last = j == len(idx) - 1
            v_next.append(V[i, t].new_zeros(()) if last else V[i, idx[j + 1]])
            done.append(1.0 if last else 0.0)
    return torch.stack(q), torch.stack(v), torch.stack(v_next), torch.tensor(done, dtype=logits.dtype)


def _reference(logits, targets, mask, s_logits, s_targets, s_mask, alpha, gamma, divergence):
    parts = [_flat(logits, targets, mask)]
    if s_logits is not None:
        parts.append(_flat(s_logits, s_targets, s_mask))
    q, v, v_next, done = (torch.cat([p[k] for p in parts])[:, None] for k in range(4))
    is_expert = torch.zeros(q.shape[0], 1, dtype=torch.bool)
    is_expert[:len(parts[0][0])] = True
    method = SimpleNamespace(div="chi" if divergence == "chi2" else "none", chi=False,
                             regularize=divergence == "chi2_mixture", alpha=alpha)
    agent = SimpleNamespace(args=SimpleNamespace(method=method), gamma=gamma, sampleQ=lambda obs: q)
    batch = (None, None, None, None, done, is_expert)
    return _ref_iq_loss(agent, q, v, v_next, batch)


def _inputs(seed, vocab=9):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(5, 6, vocab, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, (5, 6), generator=g)
    mask = torch.arange(6)[None] < torch.tensor([6, 2, 1, 5, 4])[:, None]
    s_logits = 3 * torch.randn(3, 6, vocab, generator=g, dtype=torch.float64)
    s_targets = torch.randint(0, vocab, (3, 6), generator=g)
    s_mask = torch.arange(6)[None] < torch.tensor([3, 6, 5])[:, None]
    return logits, targets, mask, s_logits, s_targets, s_mask


@pytest.mark.parametrize("divergence", ["chi2_mixture", "chi2"])
@pytest.mark.parametrize("samples", [True, False])
@pytest.mark.parametrize("alpha,gamma", [(0.5, 0.998), (0.1, 1.0), (2.0, 0.9)])
def test_sequence_match_matches_iq_learn(divergence, samples, alpha, gamma):
    for seed in range(3):
        lg, tg, m, slg, stg, sm = _inputs(seed)
        if not samples:
            slg = stg = sm = None
        x = lg.clone().requires_grad_(True)
        xs = slg.clone().requires_grad_(True) if samples else None
        ours = losskit.sequence_match(x, tg, m, xs, stg, sm, alpha=alpha, gamma=gamma, divergence=divergence)
        y = lg.clone().requires_grad_(True)
        ys = slg.clone().requires_grad_(True) if samples else None
        ref = _reference(y, tg, m, ys, stg, sm, alpha, gamma, divergence)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        wrt_ours, wrt_ref = ((x, xs), (y, ys)) if samples else ((x,), (y,))
        for a, b in zip(torch.autograd.grad(ours, wrt_ours), torch.autograd.grad(ref, wrt_ref)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_sequence_match_without_regulariser_is_mle(gamma):
    """On the data alone, -E[r] + E[V(s) - gamma V(s')] = E[V(s) - logit(a|s)]: the token-level NLL, any gamma."""
    lg, tg, m, *_ = _inputs(4)
    alpha = 0.7
    loss = losskit.sequence_match(lg, tg, m, alpha=alpha, gamma=gamma)
    V = torch.logsumexp(lg, -1)
    nxt = torch.cat([m[:, 1:], torch.zeros(m.shape[0], 1, dtype=torch.bool)], 1)
    v_next = torch.where(nxt, torch.cat([V[:, 1:], torch.zeros(m.shape[0], 1, dtype=lg.dtype)], 1), 0.0)
    r = lg.gather(-1, tg[..., None])[..., 0] - gamma * v_next
    nll = F.cross_entropy(lg[m], tg[m])
    torch.testing.assert_close(loss - (r[m] ** 2).mean() / (4 * alpha), nll, rtol=1e-12, atol=1e-12)


def test_sequence_match_reduction_none_averages_to_the_loss():
    lg, tg, m, slg, stg, sm = _inputs(5)
    per = losskit.sequence_match(lg, tg, m, slg, stg, sm, reduction="none")
    assert per.shape == (8,)
    torch.testing.assert_close(per.mean(), losskit.sequence_match(lg, tg, m, slg, stg, sm), rtol=1e-12, atol=1e-12)
    with pytest.raises(losskit.LossInputError, match="sample_mask"):
        losskit.sequence_match(lg, tg, m, slg, stg)
