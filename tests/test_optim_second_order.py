"""UBA schedule, M-FAC, SSO and normalised LR+GD: formulas at the phase boundaries, dense references,
closed forms."""

import math

import pytest
import torch

from losskit.optim import MFAC, SSO, UBA, NormalizedGD, SlidingFisherInverse, get_optimizer, uba_factor


# ------------------------------------------------------------------------------------------------ UBA
def _opt(lr=0.4, groups=1):
    ps = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)])


def _run(sched, steps):
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    return lrs


def _paper(t, start, length, peak, lo, phi):
    c = 1 + math.cos(math.pi * (t - start) / length)
    return lo + (peak - lo) * 2 * c / (2 * phi + (2 - phi) * c)


@pytest.mark.parametrize("phi", [0.5, 1.0, 2.0, 3.0])
def test_uba_matches_the_formula_at_phase_boundaries(phi):
    opt = _opt(0.4, groups=2)
    sched = UBA(opt, 30, phi=phi, min_lr=0.01, phases=[10, 20], peak_scale=[1.0, 0.5])
    lrs = _run(sched, 31)
    for gi, base in enumerate((0.4, 0.8)):
        # phase starts: the (scaled) peak
        assert lrs[0][gi] == pytest.approx(base)
        assert lrs[10][gi] == pytest.approx(0.5 * base)
        # phase middles: eta_min + (peak - eta_min) 2 / (2 + phi)
        assert lrs[5][gi] == pytest.approx(0.01 + (base - 0.01) * 2 / (2 + phi))
        assert lrs[20][gi] == pytest.approx(0.01 + (0.5 * base - 0.01) * 2 / (2 + phi))
        # the step before each phase end, every step, and after the budget
        assert lrs[9][gi] == pytest.approx(_paper(9, 0, 10, base, 0.01, phi))
        for t in range(30):
            start, length, peak = (0, 10, base) if t < 10 else (10, 20, 0.5 * base)
            assert lrs[t][gi] == pytest.approx(_paper(t, start, length, peak, 0.01, phi), rel=1e-12)
        assert lrs[30][gi] == pytest.approx(0.01)
    assert uba_factor(1.0, phi) == pytest.approx(0.0, abs=1e-15)


def test_uba_with_phi_2_is_cosine_annealing():
    a, b = _opt(0.3), _opt(0.3)
    ours = _run(UBA(a, 25, phi=2.0, min_lr=0.02), 25)
    torch_cos = _run(torch.optim.lr_scheduler.CosineAnnealingLR(b, T_max=25, eta_min=0.02), 25)
    for x, y in zip(ours, torch_cos):
        assert x[0] == pytest.approx(y[0], rel=1e-12)


def test_uba_smaller_phi_keeps_the_rate_higher():
    lr = {phi: _run(UBA(_opt(1.0), 20, phi=phi), 20) for phi in (0.5, 2.0, 4.0)}
    for t in range(1, 20):
        assert lr[0.5][t][0] > lr[2.0][t][0] > lr[4.0][t][0]


def test_uba_state_dict_round_trip_resumes_exactly():
    opt = _opt(0.5)
    sched = UBA(opt, 40, phi=0.8, min_lr=1e-3, phases=3)
    _run(sched, 17)
    state = sched.state_dict()
    assert "optimizer" not in state and state["phase_lengths"] == [14, 13, 13]
    opt2 = _opt(0.5)
    sched2 = UBA(opt2, 10, phi=3.0)  # other settings, all replaced by the load
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert sched2.phi == 0.8 and sched2.total_steps == 40 and sched2.last_epoch == 17
    assert sched2.get_last_lr() == sched.get_last_lr()
    rest1, rest2 = _run(sched, 25), _run(sched2, 25)
    assert rest1 == rest2


def test_uba_rejects_bad_settings():
    for kwargs in ({"phi": 0.0}, {"phi": -1.0}, {"phi": float("nan")}, {"phi": 1.0, "phases": [5, 4]},
                   {"phi": 1.0, "phases": 2, "peak_scale": [1.0]}, {"phi": 1.0, "min_lr": -1.0}):
        with pytest.raises(ValueError):
            UBA(_opt(), 10, **kwargs)
    with pytest.raises(ValueError):
        UBA(_opt(), 0, phi=1.0)


# ---------------------------------------------------------------------------------------------- M-FAC
@pytest.mark.parametrize(("m", "pushes"), [(4, 2), (4, 4), (5, 13)])
def test_mfac_ihvp_equals_the_dense_inverse(m, pushes):
    gen = torch.Generator().manual_seed(m + pushes)
    d, damp = 12, 0.05
    fisher = SlidingFisherInverse(d, m, damp, dtype=torch.float64)
    grads = [torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(pushes)]
    for g in grads:
        fisher.update(g)
    window = grads[-m:]
    dense = damp * torch.eye(d, dtype=torch.float64) + sum(torch.outer(g, g) for g in window) / m
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(dense, v)
    torch.testing.assert_close(fisher.mul(v), expected, rtol=0, atol=1e-8 * expected.abs().max().item())
    torch.testing.assert_close(fisher.dense(), dense, rtol=0, atol=1e-14)
    vs = torch.randn(d, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(fisher.mul(vs), torch.linalg.solve(dense, vs), rtol=1e-9, atol=1e-9)


def test_mfac_with_tiny_damping_in_float64_to_1e_8():
    gen = torch.Generator().manual_seed(3)
    d, m, damp = 30, 8, 1e-5
    fisher = SlidingFisherInverse(d, m, damp, dtype=torch.float64)
    grads = torch.randn(20, d, generator=gen, dtype=torch.float64)
    for g in grads:
        fisher.update(g)
    dense = damp * torch.eye(d, dtype=torch.float64) + grads[-m:].T @ grads[-m:] / m
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(dense, v)
    err = (fisher.mul(v) - expected).abs().max() / expected.abs().max()
    assert err < 1e-8


def test_mfac_step_is_lr_times_ihvp_with_weight_decay_and_momentum():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2, generator=gen, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, generator=gen, dtype=torch.float64))
    opt = MFAC([w, b], lr=0.1, momentum=0.5, weight_decay=0.01, ngrads=3, damp=0.1)
    ref = SlidingFisherInverse(10, 3, 0.1, dtype=torch.float64)
    v = torch.zeros(10, dtype=torch.float64)
    for _ in range(5):
        w.grad = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        b.grad = torch.randn(4, generator=gen, dtype=torch.float64)
        theta = torch.cat([w.detach().reshape(-1), b.detach()])
        g = torch.cat([w.grad.reshape(-1), b.grad]) + 0.01 * theta
        ref.update(g)
        v = 0.5 * v + 0.5 * ref.mul(g)
        opt.step()
        torch.testing.assert_close(torch.cat([w.detach().reshape(-1), b.detach()]), theta - 0.1 * v)


def test_mfac_trains_logistic_regression_on_minibatches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(8, generator=gen, dtype=torch.float64) > 0).to(torch.float64)
    w = torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))
    opt = MFAC([w], lr=0.03, ngrads=16, damp=1e-4)

    def full():
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y)

    start = full().item()
    for step in range(60):
        idx = torch.arange(32) + 32 * (step % 8)
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(x[idx] @ w, y[idx]).backward()
        opt.step()
    assert full().item() < 0.2 * start


# ------------------------------------------------------------------------------------------------ SSO
def _lsq(seed=0, n=30, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))
    return x, y, theta


@pytest.mark.parametrize("eta", [0.1, 1.0, 5.0])
def test_sso_step_is_the_closed_form_projection_on_least_squares(eta):
    x, y, theta = _lsq()
    opt = SSO([theta], eta=eta, inner_steps=5,
              inner=lambda ps: torch.optim.LBFGS(ps, lr=1, max_iter=50, tolerance_grad=1e-14,
                                                 tolerance_change=1e-16, history_size=20))
    for _ in range(3):
        z_t = (x @ theta).detach()
        g_t = z_t - y  # gradient of 0.5 ||z - y||^2
        target = z_t - eta * g_t
        expected = torch.linalg.lstsq(x, target).solution
        opt.step(lambda: x @ theta, lambda z: 0.5 * ((z - y) ** 2).sum())
        torch.testing.assert_close(theta.detach(), expected, rtol=1e-7, atol=1e-7)


def test_sso_with_one_inner_sgd_step_is_sgd():
    """One inner step from theta_t: grad of the surrogate at theta_t is grad L(theta_t)."""
    x, y, theta = _lsq(1)
    t0 = theta.detach().clone()
    opt = SSO([theta], eta=0.7, inner_steps=1, inner_lr=0.05)
    loss = opt.step(lambda: x @ theta, lambda z: 0.5 * ((z - y) ** 2).mean())
    grad = x.T @ (x @ t0 - y) / len(y)
    torch.testing.assert_close(theta.detach(), t0 - 0.05 * grad)
    assert loss.item() == pytest.approx(0.5 * ((x @ t0 - y) ** 2).mean().item())


def test_sso_converges_with_eta_one_to_least_squares():
    x, y, theta = _lsq(2)
    opt = SSO([theta], eta=1.0, inner_steps=200, inner_lr=0.02)
    for _ in range(10):
        opt.step(lambda: x @ theta, lambda z: 0.5 * ((z - y) ** 2).sum())
    torch.testing.assert_close(theta.detach(), torch.linalg.lstsq(x, y).solution, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        opt.step()


# ------------------------------------------------------------------------------------ normalised LR+GD
def test_normalized_gd_step_divides_by_the_loss():
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    opt = NormalizedGD([w], lr=3.0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-y * (x @ w)).mean()
        loss.backward()
        return loss

    w0 = w.detach().clone()
    loss0 = torch.nn.functional.softplus(-y * (x @ w0)).mean()
    grad0 = (x * (-y * torch.sigmoid(-y * (x @ w0)))[:, None]).mean(0)
    opt.step(closure)
    torch.testing.assert_close(w.detach(), w0 - 3.0 / loss0 * grad0)


def test_normalized_gd_separates_where_small_step_gd_is_slow():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=gen, dtype=torch.float64)
    y = torch.sign(x[:, 0] + 0.3 * x[:, 1])
    x = x + 0.2 * y[:, None] * torch.tensor([1.0, 0.3], dtype=torch.float64)  # a margin

    def run(opt_cls, lr, steps=30):
        w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        opt = opt_cls([w], lr=lr)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.softplus(-y * (x @ w)).mean()
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
        return (torch.sign(x @ w.detach()) == y).all().item(), closure().item()

    separated, loss = run(NormalizedGD, 1.0)
    assert separated and loss < 1e-2
    _, loss_gd = run(torch.optim.SGD, 1.0)
    assert loss < loss_gd


def test_registry_entries():
    assert get_optimizer("mfac").cls is MFAC and get_optimizer("mfac").paper.arxiv == "2107.03356"
    assert get_optimizer("uba").cls is UBA and issubclass(UBA, torch.optim.lr_scheduler.LRScheduler)
    assert get_optimizer("sso").cls is SSO and get_optimizer("normalized_lr_gd").cls is NormalizedGD


# ------------------------------------------------------------------------------------------- ParetoDA
def test_pareto_da_directions_align_with_the_preference_and_descend():
    from losskit.optim import pareto_da_weights

    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.5, 0.2, 1.0]], dtype=torch.float64)
    pref = torch.tensor([0.2, 1.0, -0.1], dtype=torch.float64)
    a_bal = pareto_da_weights(g, pref, val_loss=1.0)
    d = g.T @ a_bal
    assert a_bal.sum().item() == pytest.approx(1.0) and (a_bal >= 0).all()
    assert d @ pref >= max((row @ pref).item() for row in g) - 1e-9 or (g @ d >= -1e-9).all()
    assert (g @ d)[1] >= -1e-12  # the most aligned objective is not increased
    a_dom = pareto_da_weights(g, pref, val_loss=0.0)
    assert (g @ (g.T @ a_dom) >= -1e-9).all()  # a common descent direction for every objective
    with pytest.raises(ValueError):
        pareto_da_weights(g, pref[:2], val_loss=1.0)
