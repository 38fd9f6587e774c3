"""Layer 4: GRPO-family surrogates, aggregation under accumulation and data parallelism, KL estimators, f-DPG."""

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError
from losskit.preference import fdpg, global_token_count, group_advantages, grpo, kl_estimate

B, T = 6, 7


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -(0.05 + 2 * torch.rand(B, T, generator=g, dtype=torch.float64))
    # log-probabilities are <= 0
    old = (lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=-0.01)
    ref = (lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=-0.01)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 1, 6, 3])
    mask = torch.arange(T)[None] < lengths[:, None]
    return lp, old, ref, adv, mask


def _reference(lp, old, ref, adv, mask, agg, beta=0.0, eps=0.2, eps_high=0.28, lmax=10, n_items=None):
    """Token losses written out per the GRPO / DAPO / Dr. GRPO papers (k3 in the loss), then aggregated."""
    r = torch.exp(lp - old)
    a = adv[:, None]
    tok = -torch.minimum(r * a, torch.clamp(r, 1 - eps, 1 + eps_high) * a)
    x = ref - lp
    tok = tok + beta * (torch.exp(x) - x - 1)
    m = mask.double()
    if agg == "grpo":
        return ((tok * m).sum(-1) / m.sum(-1)).mean()
    if agg == "bnpo":
        return (tok * m).sum() / m.sum()
    if agg == "dapo":
        return (tok * m).sum() / n_items
    return (tok * m).sum() / (lp.shape[0] * lmax)


@pytest.mark.parametrize("agg", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_grpo_matches_written_out_formula(agg):
    lp, old, ref, adv, mask = _batch()
    x = lp.clone().requires_grad_(True)
    y = lp.clone().requires_grad_(True)
    out = grpo(x, old, adv, mask, ref, beta=0.04, epsilon=0.2, epsilon_high=0.28, aggregation=agg,
               max_completion_length=10, num_items_in_batch=50 if agg == "dapo" else None)
    exp = _reference(y, old, ref, adv, mask, agg, beta=0.04, n_items=50)
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-14)
    out.backward()
    exp.backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-14)
    assert bool((x.grad[~mask] == 0).all())


def test_reductions_and_per_sequence_losses():
    lp, old, ref, adv, mask = _batch(1)
    for agg in ("grpo", "bnpo", "dr_grpo"):
        none = grpo(lp, old, adv, mask, aggregation=agg, reduction="none")
        assert none.shape == (B,)
        torch.testing.assert_close(none.mean(), grpo(lp, old, adv, mask, aggregation=agg))
        torch.testing.assert_close(none.sum(), grpo(lp, old, adv, mask, aggregation=agg, reduction="sum"))
    # grpo and dr_grpo are per-sequence: splitting the batch does not change a sequence's loss
    for agg in ("grpo", "dr_grpo"):
        whole = grpo(lp, old, adv, mask, aggregation=agg, reduction="none", max_completion_length=T)
        part = grpo(lp[:2], old[:2], adv[:2], mask[:2], aggregation=agg, reduction="none", max_completion_length=T)
        torch.testing.assert_close(part, whole[:2])


def _model_logps(theta, base, feats):
    """A shared 'model' whose per-token log-probs depend on the parameters theta (shape (T,))."""
    return base - F.softplus(theta)[None] * feats


def _shared():
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(T, generator=g, dtype=torch.float64)
    feats = torch.rand(B, T, generator=g, dtype=torch.float64)
    lp, old, ref, adv, mask = _batch(2)
    return theta, lp, feats, old, ref, adv, mask


def test_dapo_is_invariant_under_gradient_accumulation():
    theta0, base, feats, old, ref, adv, mask = _shared()
    kw = dict(beta=0.04, aggregation="dapo")
    theta = theta0.clone().requires_grad_(True)
    grpo(_model_logps(theta, base, feats), old, adv, mask, ref, **kw).backward()
    full = theta.grad.clone()
    theta = theta0.clone().requires_grad_(True)
    n = mask.sum()
    for idx in (slice(0, 1), slice(1, 4), slice(4, 6)):  # unequal micro-batches, unequal token counts
        loss = grpo(_model_logps(theta, base[idx], feats[idx]), old[idx], adv[idx], mask[idx], ref[idx],
                    num_items_in_batch=n, **kw)
        loss.backward()  # summed, no division by the number of micro-batches
    torch.testing.assert_close(theta.grad, full, rtol=1e-12, atol=1e-14)
    # the local token mean (bnpo) drifts when micro-batches hold different numbers of tokens
    theta = theta0.clone().requires_grad_(True)
    for idx in (slice(0, 1), slice(1, 4), slice(4, 6)):
        (grpo(_model_logps(theta, base[idx], feats[idx]), old[idx], adv[idx], mask[idx], ref[idx],
              beta=0.04, aggregation="bnpo") / 3).backward()
    assert not torch.allclose(theta.grad, full)


def _dist_worker(rank, world, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    theta0, base, feats, old, ref, adv, mask = _shared()
    idx = slice(0, 2) if rank == 0 else slice(2, 6)  # unequal shards
    theta = theta0.clone().requires_grad_(True)
    n = global_token_count(mask[idx])
    loss = grpo(_model_logps(theta, base[idx], feats[idx]), old[idx], adv[idx], mask[idx], ref[idx], beta=0.04,
                aggregation="dapo", num_items_in_batch=n, world_size=world)
    loss.backward()
    grad = theta.grad.clone()
    torch.distributed.all_reduce(grad)
    grad /= world  # what DistributedDataParallel does
    if rank == 0:
        torch.save({"grad": grad, "n": n}, out_file)
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_dapo_across_two_gloo_ranks_equals_whole_batch():
    theta0, base, feats, old, ref, adv, mask = _shared()
    theta = theta0.clone().requires_grad_(True)
    grpo(_model_logps(theta, base, feats), old, adv, mask, ref, beta=0.04, aggregation="dapo").backward()
    with tempfile.TemporaryDirectory() as d:
        init, out = os.path.join(d, "init"), os.path.join(d, "out.pt")
        torch.multiprocessing.spawn(_dist_worker, args=(2, init, out), nprocs=2, join=True)
        res = torch.load(out)
    assert res["n"].item() == mask.sum().item()
    torch.testing.assert_close(res["grad"], theta.grad, rtol=1e-12, atol=1e-14)


def test_dual_clip_bounds_negative_advantages():
    lp = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    old = torch.tensor([[-5.0, -0.1]], dtype=torch.float64)  # ratios e^5 and e^0.1
    adv = torch.tensor([-1.0], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    tok = grpo(lp, old, adv, mask, dual_clip=3.0, aggregation="dr_grpo", return_metrics=True)[1]["per_token_loss"]
    np.testing.assert_allclose(tok.numpy()[0], [3.0, np.exp(0.1)], rtol=1e-12)
    plain = grpo(lp, old, adv, mask, aggregation="dr_grpo", return_metrics=True)[1]["per_token_loss"]
    assert plain[0, 0].item() == pytest.approx(np.exp(5.0))
    with pytest.raises(LossInputError, match="^dual_clip:"):
        grpo(lp, old, adv, mask, dual_clip=0.5)


def test_gspo_sequence_ratio():
    lp, old, _, adv, mask = _batch(4)
    x = lp.clone().requires_grad_(True)
    out = grpo(x, old, adv, mask, importance="sequence", epsilon=3e-4, epsilon_high=4e-4, aggregation="grpo")
    y = lp.clone().requires_grad_(True)
    m = mask.double()
    s = torch.exp(((y - old) * m).sum(-1) / m.sum(-1))  # GSPO's sequence ratio, differentiated directly
    exp = (-torch.minimum(s * adv, torch.clamp(s, 1 - 3e-4, 1 + 4e-4) * adv)).mean()
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-14)
    out.backward()
    exp.backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-14)


def test_cispo_keeps_gradient_of_clipped_tokens():
    lp, old, _, adv, mask = _batch(5)
    x = lp.clone().requires_grad_(True)
    out, met = grpo(x, old, adv, mask, clip="cispo", epsilon_high=0.2, aggregation="dr_grpo",
                    max_completion_length=T, return_metrics=True)
    out.backward()
    w = torch.clamp(torch.exp(lp - old), max=1.2)
    expected = -(w * adv[:, None]) * mask / (B * T)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out, (-(w * adv[:, None]) * mask).sum() / (B * T))
    assert 0 < met["clip_fraction"].item() < 1


def test_kl_estimators_values_and_expected_gradients():
    ref = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    theta = torch.tensor([0.2, -0.3, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(theta, 0)
    p = lp.exp().detach()
    x = (ref.log() - lp).detach().numpy()
    np.testing.assert_allclose(kl_estimate(lp, ref.log(), "k1").detach().numpy(), -x, rtol=1e-12)
    np.testing.assert_allclose(kl_estimate(lp, ref.log(), "k2").detach().numpy(), x ** 2 / 2, rtol=1e-12)
    np.testing.assert_allclose(kl_estimate(lp, ref.log(), "k3").detach().numpy(), np.exp(x) - x - 1, rtol=1e-12)
    # E_pi[k1] = E_pi[k3] = KL(pi || ref)
    kl = (p * (lp - ref.log())).sum()
    for k in ("k1", "k3"):
        assert (p * kl_estimate(lp, ref.log(), k)).sum().item() == pytest.approx(kl.item(), rel=1e-12)
    pi = torch.softmax(theta, 0)
    (g_rev,) = torch.autograd.grad((pi * (pi.log() - ref.log())).sum(), theta)
    pi = torch.softmax(theta, 0)
    (g_fwd,) = torch.autograd.grad((ref * (ref.log() - pi.log())).sum(), theta)

    def expected_grad(k):
        lp = torch.log_softmax(theta, 0)
        return torch.autograd.grad((lp.exp().detach() * kl_estimate(lp, ref.log(), k)).sum(), theta)[0]

    torch.testing.assert_close(expected_grad("k1"), torch.zeros(4, dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(expected_grad("k2"), g_rev)
    torch.testing.assert_close(expected_grad("k3"), g_fwd)  # k3 in the loss: the forward KL's gradient


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    a = group_advantages(r, eps=0.0).numpy()
    rn = r.numpy()
    np.testing.assert_allclose(a, (rn - rn.mean(1, keepdims=True)) / rn.std(1, ddof=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(group_advantages(r.reshape(-1), 4, scale="none").numpy(),
                               (rn - rn.mean(1, keepdims=True)).reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(group_advantages(r, scale="batch", eps=0.0).numpy(),
                               (rn - rn.mean(1, keepdims=True)) / rn.std(ddof=1), rtol=1e-12)
    same = group_advantages(torch.ones(1, 4, dtype=torch.float64))
    assert bool((same == 0).all())
    with pytest.raises(LossInputError, match="^group_size:"):
        group_advantages(r.reshape(-1), 3)


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "js", "tv"])
def test_fdpg_surrogate_gradient_is_exact_df_gradient(div):
    k = 5
    theta = torch.tensor([0.3, -0.2, 0.8, 0.0, -0.5], dtype=torch.float64, requires_grad=True)
    log_p_unnorm = torch.tensor([0.5, 1.5, -0.3, 0.2, 1.0], dtype=torch.float64) + 3.0
    q = torch.full((k,), 1.0 / k, dtype=torch.float64)  # uniform proposal, one sample of each y: exact Z
    lp = torch.log_softmax(theta, 0)
    loss = fdpg(lp, q.log(), log_p_unnorm, divergence=div)
    (g_sur,) = torch.autograd.grad(loss, theta)
    p = torch.softmax(log_p_unnorm, 0)
    pi = torch.softmax(theta, 0)
    t = pi / p
    f = {"reverse_kl": lambda t: t * t.log(), "forward_kl": lambda t: -t.log(),
         "js": lambda t: 0.5 * (t * torch.log(2 * t / (1 + t)) + torch.log(2 / (1 + t))),
         "tv": lambda t: 0.5 * (t - 1).abs()}[div]
    (g_exact,) = torch.autograd.grad((p * f(t)).sum(), theta)
    torch.testing.assert_close(g_sur, g_exact, rtol=1e-10, atol=1e-12)


def test_grpo_half_precision_no_nan_where_float32_is_finite():
    lp, old, ref, adv, mask = (t.float() if t.is_floating_point() else t for t in _batch(6))
    for dt in (torch.float16, torch.bfloat16):
        x = lp.to(dt).requires_grad_(True)
        out = losskit.grpo(x, old.to(dt), adv.to(dt), mask, ref.to(dt), beta=0.04)
        assert out.dtype == torch.float32 and bool(torch.isfinite(out))
        out.backward()
        assert bool(torch.isfinite(x.grad).all())


# ------------------------------------------------------------------ bug fixes: domains, f', extremes
def _old_log_space_fprime(log_t, divergence):
    """The log-space f' that policy.py used to carry (a copy of the generators' f'), written out here (its JS
    used F.softplus, which returns x above 20: an error of e^{-20}; the exact softplus here)."""
    if divergence == "reverse_kl":
        return log_t + 1
    if divergence == "forward_kl":
        return -torch.exp(-log_t)
    if divergence == "js":
        return 0.5 * (log_t - torch.logaddexp(torch.zeros_like(log_t), log_t) + np.log(2.0))
    return 0.5 * torch.sign(log_t)


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "js", "tv"])
def test_fdpg_uses_the_divergence_generators_f_prime(div):
    from losskit.divergences.generators import get_generator
    from losskit.preference.policy import FDPG_DIVERGENCES, _fdpg_reward

    log_t = torch.cat([torch.linspace(-40, -1e-6, 301), torch.linspace(1e-6, 40, 301)]).double()
    gen = FDPG_DIVERGENCES[div]
    torch.testing.assert_close(gen.f_prime(log_t.exp()), _old_log_space_fprime(log_t, div), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_fdpg_reward(log_t, div), -_old_log_space_fprime(log_t, div), rtol=1e-12,
                               atol=1e-12)
    # f-DPG's 'reverse_kl' is KL(pi || p): the generators' 'kl' (their 'reverse_kl' is f-DPG's forward KL)
    assert gen is get_generator({"reverse_kl": "kl", "forward_kl": "reverse_kl"}.get(div, div))
    assert torch.isfinite(_fdpg_reward(torch.tensor([-1e30, 1e30, -800.0, 800.0]), div)).all()


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "js", "tv"])
def test_fdpg_is_finite_at_log_probs_of_magnitude_1e30(div):
    g = torch.Generator().manual_seed(7)
    lp = -(1 + 4 * torch.rand(3, 8, generator=g))
    x = (lp[0] - 1e30).requires_grad_(True)  # every importance weight underflows to 0 (was 0/0 = NaN)
    out = fdpg(x, lp[1], lp[2], divergence=div)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    half = lp[0].clone()
    half[:4] -= 1e30  # some weights 0, some not
    x = half.requires_grad_(True)
    out = fdpg(x, lp[1], lp[2], divergence=div)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


def test_policy_option_domains():
    lp, old, ref, adv, mask = _batch(8)
    for opts, arg in [(dict(beta=-0.1), "beta"), (dict(epsilon=0.0), "epsilon"), (dict(epsilon=1.0), "epsilon"),
                      (dict(epsilon_high=-0.2), "epsilon_high"), (dict(world_size=0), "world_size"),
                      (dict(max_completion_length=0), "max_completion_length"),
                      (dict(num_items_in_batch=-5), "num_items_in_batch"),
                      (dict(num_items_in_batch=torch.tensor(-5.0)), "num_items_in_batch")]:
        with pytest.raises(LossInputError, match=f"^{arg}:"):
            grpo(lp, old, adv, mask, ref, **opts)
    grpo(lp, old, adv, mask, ref, num_items_in_batch=mask.sum())  # an integer tensor count is fine
    ex = losskit.get("nash_mp").make_example(torch.float64)
    ex.call(losskit.nash_mp, beta=0.0)  # the unregularised game
    with pytest.raises(LossInputError, match="^eta:"):
        ex.call(losskit.nash_mp, eta=0.0)
    ex = losskit.get("disco").make_example(torch.float64)
    for opts, arg in [(dict(tau=0.0), "tau"), (dict(beta=-1.0), "beta"), (dict(delta=-1e-4), "delta")]:
        with pytest.raises(LossInputError, match=f"^{arg}:"):
            ex.call(losskit.disco, **opts)


def test_grpo_reads_no_masked_log_probabilities():
    lp, old, ref, adv, mask = _batch(9)
    junk = torch.where(mask, lp, torch.full_like(lp, 3.0))  # padding may hold anything finite
    torch.testing.assert_close(grpo(junk, old, adv, mask, ref, beta=0.04), grpo(lp, old, adv, mask, ref, beta=0.04))
