"""The adversarial family: the PGD helper's contract, and the reweighting objectives against closed forms
and direct loops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

import losskit
from losskit.adversarial import doubly_robust_at, dro_weights, logit_energy, pgd, srat, weat, weat_weights


def _model(seed=0, d=6, k=3, dropout=True):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(d, 16), torch.nn.ReLU()]
    if dropout:
        layers.append(torch.nn.Dropout(0.5))
    layers += [torch.nn.BatchNorm1d(16), torch.nn.Linear(16, k)]
    return torch.nn.Sequential(*layers).double()


def _data(seed=0, n=10, d=6, k=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


# --------------------------------------------------------------------------------------------- PGD
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_ball_and_the_box(norm, random_start):
    model, (x, y) = _model(), _data()
    eps = 0.1 if norm == "linf" else 0.3
    x_adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=7, norm=norm, random_start=random_start,
                generator=torch.Generator().manual_seed(1))
    delta = x_adv - x
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-12).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad


def test_pgd_raises_the_loss_and_l2_steps_have_length_alpha():
    model, (x, y) = _model(dropout=False), _data(n=12)
    model.eval()
    x_adv = pgd(model, x, y, eps=0.2, alpha=0.05, steps=10, random_start=False, clamp=None)
    clean = F.cross_entropy(model(x), y, reduction="none")
    adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (adv >= clean - 1e-12).all() and adv.mean() > clean.mean()
    one = pgd(model, x, y, eps=10.0, alpha=0.05, steps=1, norm="l2", random_start=False, clamp=None)
    torch.testing.assert_close((one - x).norm(dim=1), torch.full((12,), 0.05, dtype=torch.float64))


def test_pgd_restores_modes_and_leaks_no_gradient():
    model, (x, y) = _model(), _data()
    model.train()
    model[2].eval()  # a mixed state: dropout in eval, the rest in train
    before = {n: m.training for n, m in model.named_modules()}
    running = model[3].running_mean.clone()
    for p in model.parameters():
        p.grad = None
    pgd(model, x, y, eps=0.1, alpha=0.02, steps=3)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(model[3].running_mean, running)  # eval mode: no BN statistics update
    # a user's loss on outputs only (TRADES-style KL to the clean prediction), target omitted
    clean = torch.softmax(model.eval()(x), 1).detach()
    x_kl = pgd(model, x, None, loss_fn=lambda out: F.kl_div(F.log_softmax(out, 1), clean, reduction="sum"),
               eps=0.1, alpha=0.02, steps=3, generator=torch.Generator().manual_seed(0))
    assert (x_kl - x).abs().max() <= 0.1 + 1e-12


def test_pgd_is_seeded_and_validates():
    model, (x, y) = _model(), _data()
    a = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, generator=torch.Generator().manual_seed(5))
    b = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(pgd(model, x, y, eps=0.1, alpha=0.02, steps=0, random_start=False), x)
    with pytest.raises(ValueError):
        pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, norm="l1")
    with pytest.raises(ValueError):
        pgd(model, x, y, eps=-0.1, alpha=0.02, steps=2)


# ------------------------------------------------------------------------------- doubly robust AT
@pytest.mark.parametrize("tau", [0.3, 1.0, 4.0])
def test_doubly_robust_value_is_the_kl_regularised_maximum_over_the_simplex(tau):
    losses = torch.tensor([0.2, 1.5, 0.7, 2.4, 0.05], dtype=torch.float64)
    n = len(losses)
    l_np = losses.numpy()

    def neg(v):  # softmax parametrisation of the simplex
        w = np.exp(v - v.max())
        w /= w.sum()
        return -(w @ l_np - tau * (w * np.log(n * w + 1e-300)).sum())

    best = -minimize(neg, np.zeros(n), method="BFGS", options={"gtol": 1e-12}).fun
    assert doubly_robust_at(losses, tau=tau).item() == pytest.approx(best, abs=1e-8)
    w = dro_weights(losses, tau)
    assert w.sum().item() == pytest.approx(1.0)
    closed = (w * losses).sum() - tau * (w * torch.log(n * w)).sum()
    assert closed.item() == pytest.approx(best, abs=1e-8)


def test_doubly_robust_gradient_is_the_dro_weighted_gradient():
    torch.manual_seed(0)
    logits = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (7,))
    per = F.cross_entropy(logits, y, reduction="none")
    (g,) = torch.autograd.grad(doubly_robust_at(per, tau=0.5), logits)
    w = dro_weights(per, 0.5)
    (g_ref,) = torch.autograd.grad((w * F.cross_entropy(logits, y, reduction="none")).sum(), logits)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


def test_doubly_robust_limits_and_module():
    losses = torch.tensor([0.5, 3.0, 1.0], dtype=torch.float64)
    assert doubly_robust_at(losses, tau=1e4).item() == pytest.approx(losses.mean().item(), rel=1e-3)
    assert doubly_robust_at(losses, tau=1e-3).item() == pytest.approx(3.0 - 1e-3 * np.log(3), rel=1e-6)
    assert doubly_robust_at(losses, tau=5.0) >= losses.mean()
    assert losskit.DoublyRobustATLoss(tau=2.0)(losses) == doubly_robust_at(losses, tau=2.0)
    assert losskit.get("doubly_robust_at").family == "adversarial"


# ------------------------------------------------------------------------------------------- WEAT
def _weat_loop(nat, adv, y, beta, ce_on):
    out = []
    for i in range(nat.shape[0]):
        e = -torch.log(torch.exp(nat[i]).sum())
        w = 1.0 / torch.log(1 + torch.exp(e.abs()))
        p_nat, p_adv = torch.softmax(nat[i], 0), torch.softmax(adv[i], 0)
        kl = sum(p_nat[k] * torch.log(p_nat[k] / p_adv[k]) for k in range(nat.shape[1]))
        z = adv[i] if ce_on == "adv" else nat[i]
        ce = -torch.log_softmax(z, 0)[y[i]]
        out.append(w * (ce + beta * kl))
    return torch.stack(out)


@pytest.mark.parametrize("ce_on", ["adv", "nat"])
def test_weat_equals_a_direct_loop(ce_on):
    g = torch.Generator().manual_seed(2)
    nat = 2 * torch.randn(7, 4, generator=g, dtype=torch.float64)
    adv = nat + torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (7,), generator=g)
    ours = weat(nat, adv, y, beta=3.0, ce_on=ce_on, reduction="none")
    torch.testing.assert_close(ours, _weat_loop(nat, adv, y, 3.0, ce_on), rtol=1e-12, atol=1e-14)
    assert weat(nat, adv, y, beta=3.0, ce_on=ce_on).item() == pytest.approx(ours.mean().item())


def test_weat_weights_are_detached_and_low_for_high_energy_magnitude():
    nat = torch.tensor([[0.0, 0.0], [20.0, 0.0], [-20.0, -20.0]], dtype=torch.float64, requires_grad=True)
    w = weat_weights(nat)
    assert not w.requires_grad
    e = logit_energy(nat.detach())
    assert torch.argmin(w) == torch.argmax(e.abs())
    adv = nat.detach() + 0.5
    y = torch.tensor([0, 1, 0])
    loss = weat(nat, adv, y, beta=0.0, ce_on="nat", reduction="sum")
    (g,) = torch.autograd.grad(loss, nat)
    (g_ref,) = torch.autograd.grad((w * F.cross_entropy(nat, y, reduction="none")).sum(), nat)
    torch.testing.assert_close(g, g_ref)


# ------------------------------------------------------------------------------------------- SRAT
def _srat_loop(logits, y, h, cw, lam, margin):
    out = []
    n = len(y)
    for i in range(n):
        ce = -torch.log_softmax(logits[i], 0)[y[i]] * (1.0 if cw is None else cw[y[i]])
        pos = [torch.dist(h[i], h[j]) for j in range(n) if j != i and y[j] == y[i]]
        neg = [torch.dist(h[i], h[k]) for k in range(n) if y[k] != y[i]]
        sep = torch.relu(max(pos) - min(neg) + margin) if pos and neg else torch.zeros((), dtype=h.dtype)
        out.append(ce + lam * sep)
    return torch.stack(out)


@pytest.mark.parametrize(("lam", "margin", "weighted"), [(1.0, 1.0, True), (0.5, 0.2, False), (0.0, 1.0, True)])
def test_srat_equals_a_direct_loop(lam, margin, weighted):
    g = torch.Generator().manual_seed(4)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 3])  # class 3 has no positive: no separation term
    logits = torch.randn(9, 4, generator=g, dtype=torch.float64)
    h = torch.randn(9, 5, generator=g, dtype=torch.float64) + y[:, None]
    cw = torch.tensor([0.2, 1.0, 2.0, 3.0], dtype=torch.float64) if weighted else None
    ours = srat(logits, y, h, class_weight=cw, lam=lam, margin=margin, reduction="none")
    torch.testing.assert_close(ours, _srat_loop(logits, y, h, cw, lam, margin), rtol=1e-12, atol=1e-13)


def test_srat_separation_term_vanishes_for_separated_features():
    y = torch.tensor([0, 0, 1, 1])
    h = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]], dtype=torch.float64)
    logits = torch.zeros(4, 2, dtype=torch.float64)
    with_sep = srat(logits, y, h, lam=1.0, margin=1.0, reduction="none")
    torch.testing.assert_close(with_sep, torch.full((4,), np.log(2), dtype=torch.float64))


# ------------------------------------------------------------------------------------------ arena
def test_arena_adversarial_task_tiny():
    from losskit.arena import get_task

    t = get_task("adversarial")
    cfg = t.config({"epochs": 2, "eval_every": 1, "eval_steps": 3})
    names = {c.objective for c in t.candidates()}
    assert {"cross_entropy", "doubly_robust_at", "weat", "srat"} <= names
    for c in t.candidates()[::2]:
        res = t.run(c, 0, cfg)
        assert set(res.metrics) == {"robust_accuracy", "accuracy"}
        assert 0 <= res.metrics["robust_accuracy"] <= res.metrics["accuracy"] + 0.05 <= 1.05
        assert len(res.curve) == 2
