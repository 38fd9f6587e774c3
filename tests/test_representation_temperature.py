"""iSogCLR (stateful, per-sample temperatures) and TempNet's DRO losses against float64 loops."""

import math

import numpy as np
import pytest
import torch
from helpers import randn64 as _rand
from helpers import unit_rows as _unit

import losskit
from losskit import LossInputError
from losskit.representation import ISogCLRState, TempNet


def ref_log_g(z1, z2, tau):
    """log mean_{z in S^-} exp((s(x, z) - s(x, x+)) / tau_i) for anchors (i, view), shape (N, 2)."""
    a, b = _unit(z1), _unit(z2)
    n = len(a)
    out = np.zeros((n, 2))
    for i in range(n):
        for v, (x, xp) in enumerate(((a[i], b[i]), (b[i], a[i]))):
            negs = [a[j] for j in range(n) if j != i] + [b[j] for j in range(n) if j != i]
            vals = [math.exp((x @ z - x @ xp) / tau[i]) for z in negs]
            out[i, v] = math.log(sum(vals) / len(vals))
    return out


def ref_log_gs(z1, z2, tau):
    """log mean_{z in S^-} exp(s(x, z) / tau_i) (the quantity iSogCLR's moving average tracks)."""
    a, b = _unit(z1), _unit(z2)
    return ref_log_g(z1, z2, tau) + (a * b).sum(1, keepdims=True) / np.asarray(tau)[:, None]


def test_tempnet_dro_matches_loops():
    z1, z2 = _rand(6, 4, seed=1), _rand(6, 4, seed=2)
    tau = torch.tensor([0.1, 0.2, 0.5, 0.05, 0.7, 0.3], dtype=torch.float64)
    got = losskit.tempnet_dro(z1, z2, tau, rho=0.3, negatives="all", reduction="none")
    ref = tau.numpy()[:, None] * (ref_log_g(z1.numpy(), z2.numpy(), tau.numpy()) + 0.3)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_isogclr_first_visit_equals_dro_loss_and_state_moves():
    z1, z2 = _rand(5, 3, seed=3), _rand(5, 3, seed=4)
    state = ISogCLRState(20, tau_init=0.4, dtype=torch.float64)
    index = torch.tensor([3, 17, 0, 9, 12])
    first = losskit.isogclr(z1, z2, index, state=state, rho=0.3, reduction="none")
    ref = losskit.tempnet_dro(z1, z2, torch.full((5,), 0.4, dtype=torch.float64), rho=0.3, negatives="all",
                               reduction="none")
    torch.testing.assert_close(first, ref, rtol=1e-12, atol=1e-12)
    lg1 = ref_log_gs(z1.numpy(), z2.numpy(), np.full(5, 0.4))
    np.testing.assert_allclose(state.log_u[index].numpy(), lg1, rtol=1e-12)
    assert not state.seen[1] and state.seen[index].all()
    # second visit with new embeddings: u <- (1 - gamma) u + gamma g
    y1, y2 = _rand(5, 3, seed=5), _rand(5, 3, seed=6)
    second = losskit.isogclr(y1, y2, index, state=state, rho=0.3, reduction="none")
    lg2 = ref_log_gs(y1.numpy(), y2.numpy(), np.full(5, 0.4))
    u = 0.1 * np.exp(lg1) + 0.9 * np.exp(lg2)
    np.testing.assert_allclose(state.log_u[index].numpy(), np.log(u), rtol=1e-12)
    s_pos = (_unit(y1.numpy()) * _unit(y2.numpy())).sum(1, keepdims=True)
    ref2 = 0.4 * (np.exp(lg2) / u - 1 + np.log(u) + 0.3) - s_pos
    np.testing.assert_allclose(second.detach().numpy(), ref2, rtol=1e-12, atol=1e-12)


def test_isogclr_gradient_is_the_papers_estimator():
    z1, z2 = _rand(4, 3, seed=7).requires_grad_(), _rand(4, 3, seed=8).requires_grad_()
    state = ISogCLRState(4, dtype=torch.float64)
    with torch.no_grad():
        state.tau.copy_(torch.tensor([0.1, 0.3, 0.5, 0.2], dtype=torch.float64))
        state.log_u.copy_(_rand(4, 2, seed=9))
        state.seen.fill_(True)
    idx = torch.arange(4)
    loss = losskit.isogclr(z1, z2, idx, state=state, update=False, reduction="sum")
    g1, g2, gt = torch.autograd.grad(loss, (z1, z2, state.tau))
    # independent estimator (the official code's): sum_i (1/u_i) E[exp(s/tau_i) grad s] - grad s+,
    # i.e. the gradient of sum_i tau_i g_i / u_i - s+ with g_i = mean exp(s / tau_i) (plain torch)
    a1, a2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    tau = state.tau.detach()
    n1, n2 = torch.nn.functional.normalize(a1, dim=1), torch.nn.functional.normalize(a2, dim=1)
    total = 0
    for i in range(4):
        for v, (x, xp) in enumerate(((n1[i], n2[i]), (n2[i], n1[i]))):
            negs = torch.cat([n1[torch.arange(4) != i], n2[torch.arange(4) != i]])
            g = torch.exp((negs @ x) / tau[i]).mean()
            total = total + tau[i] * g / state.log_u[i, v].exp() - x @ xp
    r1, r2 = torch.autograd.grad(total, (a1, a2))
    torch.testing.assert_close(g1, r1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, r2, rtol=1e-10, atol=1e-12)
    # tau gradient: the value is a genuine function of tau (u fixed): compare with central differences
    def value(t):
        with torch.no_grad():
            old = state.tau.clone()
            state.tau.copy_(t)
            out = losskit.isogclr(z1.detach(), z2.detach(), idx, state=state, update=False, reduction="sum")
            state.tau.copy_(old)
        return out.item()

    for i in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[i] = 1e-6
        fd = (value(state.tau.detach() + e) - value(state.tau.detach() - e)) / 2e-6
        assert gt[i].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_isogclr_state_dict_round_trip_and_module():
    z1, z2 = _rand(4, 3, seed=10), _rand(4, 3, seed=11)
    loss_mod = losskit.ISogCLRLoss(state=ISogCLRState(8))
    loss_mod(z1.float(), z2.float(), torch.tensor([0, 1, 2, 3]))
    sd = loss_mod.state_dict()
    assert {"state.tau", "state.log_u", "state.seen"} <= set(sd)
    fresh = losskit.ISogCLRLoss(state=ISogCLRState(8))
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.state.log_u, loss_mod.state.log_u)
    loss_mod.state.tau.data.fill_(5.0)
    loss_mod.state.project_()
    assert loss_mod.state.tau.max().item() == pytest.approx(0.7)


def test_isogclr_bad_index():
    z = _rand(3, 2)
    with pytest.raises(LossInputError, match="^index:"):
        losskit.isogclr(z, z, torch.tensor([0, 1, 9]), state=ISogCLRState(5))


def test_tempnet_lm_matches_loops():
    g = torch.Generator().manual_seed(12)
    logits = 2 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 1, 2])
    tau = torch.tensor([0.5, 1.0, 2.0, 0.3, 1.5], dtype=torch.float64)
    got = losskit.tempnet_lm(logits, target, tau, rho=2.0, reduction="none")
    ref = []
    for z, y, t in zip(logits.numpy(), target.numpy(), tau.numpy()):
        s = z / t
        ce = math.log(np.exp(s).sum()) - s[y]
        ref.append(t * ce + (2.0 - math.log(4)) * t)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_tempnet_output_range_and_training_step():
    torch.manual_seed(0)
    net = TempNet(4, 16, tau_min=0.05, tau_max=0.5).eval()
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    tau = net(z1)
    assert tau.shape == (8,) and (tau > 0.05).all() and (tau < 0.5).all()
    # hand computation of the architecture on one input (eval mode: no dropout)
    x = torch.nn.functional.normalize(z1[0], dim=0)
    h = net.proj[3](torch.sigmoid(net.proj[0](x)))
    a = torch.softmax(h / net.log_scale.exp(), 0)
    v = (net.out.weight[0] * (a - 1 / 16) * h).sum() + net.out.bias[0]
    assert tau[0].item() == pytest.approx(0.05 + 0.45 * torch.sigmoid(v).item(), rel=1e-6)
    net.train()
    tau = net(z1)
    loss = losskit.tempnet_dro(z1, z2, tau)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# --------------------------------------------------------------------- edges (trust at the edges)
# meta tensors: the conformance suite's `meta` check runs every objective on meta inputs


def test_tempnet_tau_check_follows_the_validation_mode():
    z1, z2 = _rand(4, 3, seed=80), _rand(4, 3, seed=81)
    tau = torch.tensor([0.1, -0.2, 0.3, 0.4], dtype=torch.float64)
    with pytest.raises(LossInputError, match="^tau: expected positive"):
        losskit.tempnet_dro(z1, z2, tau)
    with losskit.validation(False):
        losskit.tempnet_dro(z1, z2, tau)


def test_tempnet_lm_fully_masked_row_raises():
    logits = _rand(3, 4, seed=82)
    logits[1] = float("-inf")
    with pytest.raises(LossInputError, match="^logits:.*fully masked"):
        losskit.tempnet_lm(logits, torch.tensor([0, 1, 2]), torch.full((3,), 0.5, dtype=torch.float64))
    logits[1, 2] = 0.0  # a partly masked row is fine
    assert torch.isfinite(losskit.tempnet_lm(logits, torch.tensor([0, 2, 2]), torch.full((3,), 0.5,
                                                                                       dtype=torch.float64)))


@pytest.mark.parametrize("name,option,value", [("isogclr", "rho", -0.1), ("isogclr", "state", "s"),
                                               ("tempnet_dro", "rho", -1.0), ("tempnet_lm", "rho", float("inf"))])
def test_temperature_options_outside_their_domain_raise(name, option, value):
    entry = losskit.get(name)
    ex = entry.make_example(torch.float64)
    with pytest.raises(LossInputError, match=f"^{option}:"):
        ex.call(entry.fn, **{option: value})


def test_tempnet_compiles_without_graph_breaks():
    # the positivity check was bool((tau > 0).all()): a data-dependent branch under torch.compile
    import torch._dynamo

    entry = losskit.get("tempnet_lm")
    ex = entry.make_example(torch.float64)
    torch._dynamo.reset()
    out = torch.compile(entry.fn, backend="eager", fullgraph=True)(**ex.inputs, **ex.options)
    torch.testing.assert_close(out, ex.call(entry.fn), rtol=1e-10, atol=1e-12)
