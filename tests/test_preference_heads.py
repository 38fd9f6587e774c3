"""Layer 3 heads: known values, identities, closed-form gradients, population optima, TRL formulas.

Reference formulas are written here independently in NumPy/SciPy (log_expit, expit), from the papers and
from TRL's documented loss types, never by calling losskit.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit

import losskit
from losskit import LossInputError

LOG2 = math.log(2)


def _pair(seed=0, n=7, lo=0.5, hi=6.0):
    g = torch.Generator().manual_seed(seed)
    return [-(lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)) for _ in range(4)]


ZERO = [torch.full((3,), -2.0, dtype=torch.float64)] * 4  # u_w = u_l = 0, margin 0


# ------------------------------------------------------------------------------------ known values
@pytest.mark.parametrize(("name", "value"), [
    ("dpo", LOG2), ("cdpo", LOG2), ("robust_dpo", LOG2), ("nca", 2 * LOG2), ("bco", 2 * LOG2),
    ("apo_zero", 1.0), ("apo_down", 1.0), ("discopop", 0.5 * LOG2 + 0.5), ("hinge_dpo", 1.0), ("mapl", LOG2),
    ("f_dpo", LOG2), ("ddo", 2 * LOG2), ("apo", LOG2),
])
def test_values_at_zero_margin(name, value):
    args = ZERO + ZERO[:2] if name == "apo" else ZERO
    out = getattr(losskit, name)(*args, reduction="none")
    np.testing.assert_allclose(out.numpy(), value, rtol=1e-12)


def test_ipo_minimiser_is_half_over_beta():
    for beta in (0.1, 0.5, 2.0):
        base = torch.full((1,), -20.0, dtype=torch.float64)  # log-probabilities are <= 0
        pc = base.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([pc], lr=1, max_iter=100, line_search_fn="strong_wolfe")

        def closure(pc=pc, beta=beta, opt=opt, base=base):
            opt.zero_grad()
            loss = losskit.ipo(pc, base, base, base, beta=beta)
            loss.backward()
            return loss

        opt.step(closure)
        assert (pc - base).item() == pytest.approx(1 / (2 * beta), rel=1e-8)


def test_dpo_gradient_closed_form():
    pc, pr, rc, rr = (t.clone().requires_grad_(True) for t in _pair(1))
    beta = 0.3
    losskit.dpo(pc, pr, rc, rr, beta=beta, reduction="sum").backward()
    m = ((pc - rc) - (pr - rr)).detach().numpy()
    np.testing.assert_allclose(pc.grad.numpy(), -beta * expit(-beta * m), rtol=1e-12)
    np.testing.assert_allclose(pr.grad.numpy(), beta * expit(-beta * m), rtol=1e-12)
    np.testing.assert_allclose(rc.grad.numpy(), beta * expit(-beta * m), rtol=1e-12)


# ------------------------------------------------------------------------------------------ identities
def test_identities():
    pc, pr, rc, rr = _pair(2)
    dpo = losskit.dpo(pc, pr, rc, rr, beta=0.2, reduction="none")
    torch.testing.assert_close(losskit.robust_dpo(pc, pr, rc, rr, beta=0.2, label_smoothing=0.0,
                                                  reduction="none"), dpo)
    torch.testing.assert_close(losskit.f_dpo(pc, pr, rc, rr, beta=0.2, divergence="reverse_kl",
                                             reduction="none"), dpo)
    torch.testing.assert_close(losskit.d2o(pc, pr, rc, rr, beta=0.2, alpha=0.2, reduction="none"), dpo)
    torch.testing.assert_close(losskit.d2o(pc[:, None], pr, rc[:, None], rr, beta=0.2, alpha=0.2,
                                           reduction="none"), dpo)
    torch.testing.assert_close(losskit.apo(pc, pr, rc, rr, pr, pc, beta=0.2, alpha=0.0, reduction="none"), dpo)
    torch.testing.assert_close(losskit.mapl(pc, pr, rc, rr, beta=0.2, reduction="none"), dpo)
    # CPL with lambda = gamma = 1 is reference-free DPO
    torch.testing.assert_close(losskit.cpl(pc, pr, beta=0.2, lam=1.0, reduction="none"),
                               losskit.dpo(pc, pr, beta=0.2, reduction="none"))
    # MNPO with rho = 1 is IPO (opponents ignored)
    opp = -torch.rand(7, 2, dtype=torch.float64) * 5  # log-probabilities (checked even when rho = 1 ignores them)
    torch.testing.assert_close(losskit.mnpo(pc, pr, rc, rr, opp, opp, beta=0.2, rho=1.0, reduction="none"),
                               losskit.ipo(pc, pr, rc, rr, beta=0.2, reduction="none"))
    # AlphaPO with alpha -> 0 is SimPO
    a, b = pc / 5, pr / 5
    torch.testing.assert_close(losskit.alphapo(a, b, alpha=1e-9, reduction="none"),
                               losskit.simpo(a, b, reduction="none"), rtol=1e-7, atol=1e-9)
    # cDPO is DPO with label smoothing
    torch.testing.assert_close(losskit.cdpo(pc, pr, rc, rr, label_smoothing=0.2, reduction="none"),
                               losskit.dpo(pc, pr, rc, rr, label_smoothing=0.2, reduction="none"))


def test_expected_robust_loss_over_flips_is_clean_dpo():
    pc, pr, rc, rr = _pair(3)
    for eps in (0.1, 0.3, 0.45):
        kept = losskit.robust_dpo(pc, pr, rc, rr, label_smoothing=eps, reduction="none")
        flipped = losskit.robust_dpo(pr, pc, rr, rc, label_smoothing=eps, reduction="none")
        torch.testing.assert_close((1 - eps) * kept + eps * flipped, losskit.dpo(pc, pr, rc, rr, reduction="none"))


def test_mnpo_is_ipo_against_geometric_mixture():
    pc, pr, rc, rr = _pair(4)
    g = torch.Generator().manual_seed(5)
    oc, orr = (-5 * torch.rand(7, 3, generator=g, dtype=torch.float64) for _ in range(2))
    lam = np.array([0.5, 0.3, 0.2])
    rho, eta = 0.4, 0.25
    h = ((pc - pr) - rho * (rc - rr)).numpy() - (1 - rho) * ((oc - orr).numpy() * lam).sum(-1)
    np.testing.assert_allclose(losskit.mnpo(pc, pr, rc, rr, oc, orr, beta=eta, rho=rho, weights=lam,
                                            reduction="none").numpy(), (h - 1 / (2 * eta)) ** 2, rtol=1e-12)


# ------------------------------------------------------------------------ TRL formulas, written here
def _np(*ts):
    return [t.numpy() for t in ts]


def test_against_independent_trl_formulas():
    pc, pr, rc, rr = _pair(6)
    c, r, c0, r0 = _np(pc, pr, rc, rr)
    beta, eps = 0.3, 0.15
    cr, rj = c - c0, r - r0
    z = beta * (cr - rj)
    expected = {
        "dpo": -log_expit(z),
        "cdpo": -(1 - eps) * log_expit(z) - eps * log_expit(-z),
        "robust_dpo": (-(1 - eps) * log_expit(z) + eps * log_expit(-z)) / (1 - 2 * eps),
        "hinge_dpo": np.maximum(0, 1 - z),
        "ipo": (cr - rj - 1 / (2 * beta)) ** 2,
        "exo": expit(z) * (log_expit(z) - np.log(1 - eps)) + expit(-z) * (log_expit(-z) - np.log(eps)),
        "nca": -log_expit(beta * cr) - 0.5 * log_expit(-beta * cr) - 0.5 * log_expit(-beta * rj),
        "bco": -log_expit(beta * cr - 0.2) - log_expit(-(beta * rj - 0.2)),
        "sppo_hard": (cr - 0.5 / beta) ** 2 + (rj + 0.5 / beta) ** 2,
        "apo_zero": 1 - expit(beta * cr) + expit(beta * rj),
        "apo_down": expit(beta * cr) + 1 - expit(beta * (cr - rj)),
        "discopop": (1 - expit(z / 0.05)) * -log_expit(z) + expit(z / 0.05) * np.exp(-z),
    }
    opts = {"cdpo": {"label_smoothing": eps}, "robust_dpo": {"label_smoothing": eps},
            "exo": {"label_smoothing": eps}, "bco": {"delta": 0.2}}
    for name, e in expected.items():
        out = getattr(losskit, name)(pc, pr, rc, rr, beta=beta, reduction="none", **opts.get(name, {}))
        np.testing.assert_allclose(out.numpy(), e, rtol=1e-10, err_msg=name)


def test_reference_free_heads_against_formulas():
    pc, pr, _, _ = _pair(7, lo=0.05, hi=1.5)  # length-normalised log-probs
    c, r = _np(pc, pr)
    log_odds = (c - np.log1p(-np.exp(c))) - (r - np.log1p(-np.exp(r)))
    np.testing.assert_allclose(losskit.orpo(pc, pr, beta=0.25, reduction="none").numpy(),
                               -c - 0.25 * log_expit(log_odds), rtol=1e-10)
    np.testing.assert_allclose(losskit.cpo(pc, pr, beta=0.25, alpha=0.5, reduction="none").numpy(),
                               -log_expit(0.25 * (c - r)) - 0.5 * c, rtol=1e-10)
    np.testing.assert_allclose(losskit.simpo(pc, pr, beta=2.5, gamma=1.25, reduction="none").numpy(),
                               -log_expit(2.5 * (c - r) - 1.25), rtol=1e-10)
    a = 0.3
    np.testing.assert_allclose(
        losskit.alphapo(pc, pr, beta=2.5, gamma=1.25, alpha=a, reduction="none").numpy(),
        -log_expit(-2.5 / a * (np.exp(-a * c) - np.exp(-a * r)) - 1.25), rtol=1e-10)
    with pytest.raises(LossInputError, match="^policy_chosen_logps:"):
        losskit.orpo(-pc, pr)


def test_f_dpo_divergences():
    pc, pr, rc, rr = _pair(8)
    tw, tl = np.exp((pc - rc).numpy()), np.exp((pr - rr).numpy())
    fp = {"forward_kl": lambda t: -1 / t, "js": lambda t: np.log(2 * t / (1 + t)),
          "alpha": lambda t: (1 - t ** -0.6) / 0.6}
    for div, f in fp.items():
        out = losskit.f_dpo(pc, pr, rc, rr, beta=0.4, divergence=div, alpha=0.6, reduction="none")
        np.testing.assert_allclose(out.numpy(), -log_expit(0.4 * (f(tw) - f(tl))), rtol=1e-10, err_msg=div)


def test_aot_sorted_margins():
    pc, pr, rc, rr = _pair(9)
    c, r, c0, r0 = _np(pc, pr, rc, rr)
    d = np.sort(c - r) - np.sort(c0 - r0)
    np.testing.assert_allclose(losskit.aot(pc, pr, rc, rr, beta=0.5, reduction="none").numpy(),
                               -log_expit(0.5 * d), rtol=1e-12)
    d = np.sort(c - c0) - np.sort(r - r0)
    np.testing.assert_allclose(losskit.aot(pc, pr, rc, rr, beta=0.5, paired=False, reduction="none").numpy(),
                               -log_expit(0.5 * d), rtol=1e-12)
    assert not losskit.get("aot").per_sample


def test_kto():
    pc, _, rc, _ = _pair(10)
    desirable = torch.tensor([True, False, True, True, False, False, True])
    u = (pc - rc).numpy()
    z0 = 0.3
    e = np.where(desirable.numpy(), 1.2 * (1 - expit(0.5 * (u - z0))), 0.7 * (1 - expit(0.5 * (z0 - u))))
    out = losskit.kto(pc, rc, desirable, beta=0.5, reference_point=z0, desirable_weight=1.2,
                      undesirable_weight=0.7, reduction="none")
    np.testing.assert_allclose(out.numpy(), e, rtol=1e-12)
    kl = losskit.preference.kto_reference_point(pc, rc)
    assert kl.item() == max(0.0, u.mean())


def test_metrics():
    pc, pr, rc, rr = _pair(11)
    loss, m = losskit.dpo(pc, pr, rc, rr, beta=0.2, return_metrics=True)
    torch.testing.assert_close(m["chosen_rewards"], 0.2 * (pc - rc))
    torch.testing.assert_close(m["margins"], 0.2 * ((pc - rc) - (pr - rr)))
    assert torch.equal(m["accuracies"], (m["margins"] > 0).double())
    assert loss.item() == losskit.dpo(pc, pr, rc, rr, beta=0.2).item()


def test_discopop_is_finite_where_exp_overflows():
    z = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], requires_grad=True)
    out = losskit.preference.margin_loss(z, "discopop")
    out.sum().backward()
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(z.grad).all())
    np.testing.assert_allclose(out[2].item(), 0.5 * LOG2 + 0.5, rtol=1e-6)


def test_missing_reference_is_an_error():
    pc, pr, rc, _ = _pair(12)
    with pytest.raises(LossInputError, match="^ref_rejected_logps:"):
        losskit.dpo(pc, pr, rc, None)
    with pytest.raises(LossInputError, match="^policy_rejected_logps:"):
        losskit.dpo(pc, pr[:, None], rc, rc)


# ------------------------------------------------------------------------------- population optima
def _minimise(loss_fn, k, steps=300):
    theta = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(torch.log_softmax(theta, 0))
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta, 0).detach()


def test_dpo_population_optimum_is_tilted_reference():
    k, beta = 4, 0.5
    ref = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    r = torch.tensor([1.0, -0.5, 0.3, 0.0], dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    pref = torch.sigmoid(r[i] - r[j])  # Bradley-Terry P(y_i > y_j)
    mu = torch.full((k * k,), 1.0 / k ** 2, dtype=torch.float64)

    def pop(logp):
        lr = ref.log()
        fwd = losskit.dpo(logp[i], logp[j], lr[i], lr[j], beta=beta, reduction="none")
        bwd = losskit.dpo(logp[j], logp[i], lr[j], lr[i], beta=beta, reduction="none")
        return (mu * (pref * fwd + (1 - pref) * bwd)).sum()

    pi = _minimise(pop, k)
    target = ref * torch.exp(r / beta)
    torch.testing.assert_close(pi, target / target.sum(), rtol=1e-6, atol=1e-8)


def test_ddo_population_optimum_is_data_distribution():
    p_data = torch.tensor([0.5, 0.1, 0.15, 0.25], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.3, 0.2], dtype=torch.float64)
    idx = torch.arange(4)

    def pop(logp):
        lr = ref.log()
        per = losskit.ddo(logp[idx], logp[idx], lr[idx], lr[idx], beta=1.0, alpha=1.0, reduction="none")
        # split the two expectations: the data term weighted by p_data, the sample term by pi_ref
        data = -torch.nn.functional.logsigmoid(logp - lr)
        sample = per - data
        return (p_data * data).sum() + (ref * sample).sum()

    torch.testing.assert_close(_minimise(pop, 4), p_data, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------ seeds, by hand
def test_d2o_against_formula():
    g = torch.Generator().manual_seed(13)
    pc, rc = (-5 * torch.rand(5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    pr, rr = (-5 * torch.rand(5, generator=g, dtype=torch.float64) for _ in range(2))
    u = (pc - rc).numpy().mean(-1)
    e = -log_expit(0.2 * u - 0.05 * (pr - rr).numpy())
    np.testing.assert_allclose(losskit.d2o(pc, pr, rc, rr, beta=0.2, alpha=0.05, reduction="none").numpy(), e,
                               rtol=1e-12)


def test_cpl_against_formula_with_discounting():
    g = torch.Generator().manual_seed(14)
    tok_w, tok_l = (-torch.rand(3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.ones(3, 5, dtype=torch.bool)
    sw = losskit.preference.sequence_scores(tok_w, mask, aggregation="discounted", gamma=0.9)
    sl = losskit.preference.sequence_scores(tok_l, mask, aggregation="discounted", gamma=0.9)
    disc = 0.9 ** np.arange(5)
    aw, al = (tok_w.numpy() * disc).sum(-1), (tok_l.numpy() * disc).sum(-1)
    e = -log_expit(0.5 * aw - 0.7 * 0.5 * al) - 0.1 * aw
    np.testing.assert_allclose(losskit.cpl(sw, sl, beta=0.5, lam=0.7, bc_weight=0.1, bc_data="chosen",
                                           reduction="none").numpy(), e, rtol=1e-12)
    # the official BC term (default bc_data='all'): the mean per-step NLL of both segments, S = 5 steps
    e_all = -log_expit(0.5 * aw - 0.7 * 0.5 * al) + 0.1 * -(aw + al) / 10
    np.testing.assert_allclose(losskit.cpl(sw, sl, beta=0.5, lam=0.7, bc_weight=0.1, segment_length=5,
                                           reduction="none").numpy(), e_all, rtol=1e-12)


def test_sparsepo_reduces_to_dpo_and_tdpo_terms():
    g = torch.Generator().manual_seed(15)
    cw, cl = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    kw, kl = (torch.rand(3, 4, generator=g, dtype=torch.float64) for _ in range(2))
    mw = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    ml = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = losskit.sparsepo(cw, cl, kw, kl, mw, ml, beta=0.3, reduction="none")
    sw, sl = (cw * mw).sum(-1).numpy(), (cl * ml).sum(-1).numpy()
    e = -log_expit(0.3 * (sw - sl) - 0.3 * ((kl * ml).sum(-1) - (kw * mw).sum(-1)).numpy())
    np.testing.assert_allclose(out.numpy(), e, rtol=1e-12)
    zero = torch.zeros_like(kw)
    # with zero KLs it is DPO on the summed log-ratios (as log-probs -20 + ratio against a reference at -20)
    shift = torch.full((3,), -20.0, dtype=torch.float64)
    torch.testing.assert_close(losskit.sparsepo(cw, cl, zero, zero, mw, ml, beta=0.3, reduction="none"),
                               losskit.dpo(shift + (cw * mw).sum(-1), shift + (cl * ml).sum(-1), shift, shift,
                                           beta=0.3, reduction="none"))
    rm = torch.rand(3, 4, generator=g, dtype=torch.float64)
    out = losskit.sparsepo(cw, cl, zero, zero, mw, ml, beta=0.3, chosen_reward_mask=rm, reduction="none")
    np.testing.assert_allclose(out.numpy(), -log_expit(0.3 * ((cw * rm * mw).sum(-1).numpy() - sl)), rtol=1e-12)


def test_egpo_and_extragradient_step():
    pc, pr, rc, rr = _pair(16)
    g = torch.Generator().manual_seed(17)
    p1, p2 = torch.rand(7, generator=g, dtype=torch.float64), torch.rand(7, generator=g, dtype=torch.float64)
    e = (((pc - rc) - (pr - rr)).numpy() - (p1 - p2).numpy() / 0.2) ** 2
    np.testing.assert_allclose(losskit.egpo(pc, pr, rc, rr, p1, p2, beta=0.2, reduction="none").numpy(), e,
                               rtol=1e-12)
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    start = theta.detach().clone()
    losskit.preference.extragradient_step([theta], lambda: 0.5 * theta @ a @ theta, lr=0.1)
    half = start - 0.1 * a @ start
    torch.testing.assert_close(theta.detach(), start - 0.1 * a @ half)


def test_disco_against_formula_and_constraint_gradient():
    g = torch.Generator().manual_seed(18)
    s = -torch.rand(3, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    out = losskit.disco(s, y, tau=10.0, reduction="none").numpy()
    sn = s.numpy()
    for i in (0, 2):
        pos, neg = sn[i][y[i].numpy()], sn[i][~y[i].numpy()]
        j = pos.mean() - 10 * np.log(np.mean(np.exp(neg / 10)))
        assert out[i] == pytest.approx(-j, rel=1e-12)
    assert out[1] == 0  # no negatives: no contrast
    mean = losskit.disco(s, y, tau=10.0)
    assert mean.item() == pytest.approx((out[0] + out[2]) / 2, rel=1e-12)
    ob = losskit.disco_b(s, y, reduction="none").numpy()
    assert ob[0] == pytest.approx(-(sn[0][y[0].numpy()].mean() - sn[0][~y[0].numpy()].mean()), rel=1e-12)
    kl = torch.tensor([0.5e-4, 3e-4, 2e-4], dtype=torch.float64, requires_grad=True)
    losskit.disco(s, y, kl, beta=1e3, delta=1e-4, reduction="sum").backward()
    expected = 1e3 * torch.relu(kl.detach() - 1e-4) * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(kl.grad, expected)


# ------------------------------------------------------------------------------------------ Nash-MP
def _rps_pref(pi, opp):
    """P(y > opp) for rock-paper-scissors with ties 1/2: a non-transitive preference."""
    m = torch.tensor([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]], dtype=torch.float64)
    return m @ opp


def test_nash_mp_expected_gradient_is_exact_and_prox_point():
    beta, eta = 0.1, 2.0
    ref = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    prev = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(theta, 0)
    pref = _rps_pref(None, prev)
    per = losskit.nash_mp(lp, pref, ref.log(), prev.log(), beta=beta, eta=eta, reduction="none")
    (g_sur,) = torch.autograd.grad((lp.exp().detach() * per).sum(), theta)
    pi = torch.softmax(theta, 0)
    j = -(pi * (pref - 0.5)).sum() + beta * (pi * (pi.log() - ref.log())).sum() + (pi * (pi.log() - prev.log())).sum() / eta
    (g_exact,) = torch.autograd.grad(j, theta)
    torch.testing.assert_close(g_sur, g_exact, rtol=1e-10, atol=1e-12)
    # the closed-form prox point  pi ~ (ref^beta prev^(1/eta) e^{P})^(1/(beta + 1/eta))  zeroes the gradient
    star = torch.exp((beta * ref.log() + prev.log() / eta + pref) / (beta + 1 / eta))
    star = (star / star.sum()).log().requires_grad_(True)
    per = losskit.nash_mp(star, pref, ref.log(), prev.log(), beta=beta, eta=eta, reduction="none")
    (g,) = torch.autograd.grad((star.exp().detach() * per).sum(), star)
    g = g - star.exp().detach() * g.sum()  # project onto the simplex's tangent (softmax chart)
    assert g.abs().max().item() < 1e-12


def test_nash_mirror_prox_converges_to_regularised_equilibrium_of_rps():
    beta, eta = 0.1, 1.0
    ref = torch.full((3,), 1 / 3, dtype=torch.float64)  # symmetric game, uniform reference: equilibrium uniform

    def prox(center, opp):
        pref = _rps_pref(None, opp)
        star = torch.exp((beta * ref.log() + center.log() / eta + pref) / (beta + 1 / eta))
        return star / star.sum()

    pi = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    for _ in range(300):
        half = prox(pi, pi)
        pi = prox(pi, half)
    torch.testing.assert_close(pi, ref, rtol=0, atol=1e-6)


def test_common_signature_and_reference_free_heads_refuse_references():
    pc, pr, rc, rr = _pair(19, lo=0.05, hi=1.5)
    for name in ("simpo", "alphapo", "orpo", "cpo", "cpl"):
        fn = getattr(losskit, name)
        torch.testing.assert_close(fn(pc, pr, None, None), fn(pc, pr))
        with pytest.raises(LossInputError, match="^ref_chosen_logps:"):
            fn(pc, pr, rc, rr)


@pytest.mark.parametrize("entry", losskit.objectives("preference"), ids=lambda e: e.name)
def test_half_precision_no_nan_where_float32_is_finite(entry):
    """At the input kind's extreme inputs, float16/bfloat16 give no NaN/inf where float32 is finite.

    (A gradient entry whose float32 value exceeds the half type's range, e.g. AlphaPO's e^{alpha |lbar|}
    at lbar = -150, cannot be represented in that type; it is excluded.)
    """
    ex = entry.input_kind.extreme(entry.make_example(torch.float32))
    ex = ex.replace({k: ex.inputs[k].detach().requires_grad_(True) for k in ex.grad})
    red = "none" if entry.per_sample else "mean"
    out32 = ex.call(entry.fn, reduction=red)
    assert bool(torch.isfinite(out32).all())
    out32.sum().backward()
    for dt in (torch.float16, torch.bfloat16):
        exh = ex.map_floats(lambda t, dt=dt: t.detach().to(dt))
        exh = exh.replace({k: exh.inputs[k].requires_grad_(True) for k in exh.grad})
        out = exh.call(entry.fn, reduction=red)
        assert bool(torch.isfinite(out).all()), (entry.name, dt)
        out.sum().backward()
        for k in exh.grad:
            representable = ex.inputs[k].grad.abs() < torch.finfo(dt).max / 2
            assert bool(torch.isfinite(exh.inputs[k].grad)[representable].all()), (entry.name, dt, k)


def test_logistic_heads_swap_identity():
    """-log sigma(z) + log sigma(-z) = -z: swapping chosen and rejected changes DPO by exactly beta m."""
    pc, pr, rc, rr = _pair(20)
    m = (pc - rc) - (pr - rr)
    for name in ("dpo", "mapl"):
        fn = getattr(losskit, name)
        diff = fn(pc, pr, rc, rr, beta=0.7, reduction="none") - fn(pr, pc, rr, rc, beta=0.7, reduction="none")
        torch.testing.assert_close(diff, -0.7 * m, rtol=1e-12, atol=1e-12)


def test_module_forms():
    pc, pr, rc, rr = _pair(21)
    torch.testing.assert_close(losskit.DPOLoss(beta=0.3)(pc, pr, rc, rr), losskit.dpo(pc, pr, rc, rr, beta=0.3))
    torch.testing.assert_close(losskit.IPOLoss(beta=0.3)(pc, pr, rc, rr), losskit.ipo(pc, pr, rc, rr, beta=0.3))
    assert isinstance(losskit.GRPOLoss(aggregation="grpo"), torch.nn.Module)


# ------------------------------------------------------------------ domains and input rules (bug fixes)
def _entries_with(option):
    return [e for e in losskit.objectives("preference") if option in e.options]


@pytest.mark.parametrize("entry", _entries_with("beta"), ids=lambda e: e.name)
def test_negative_beta_is_refused(entry):
    """beta < 0 trains toward the rejected answer (or rewards drifting from the reference): refused."""
    ex = entry.make_example(torch.float64)
    with pytest.raises(LossInputError, match="^beta:"):
        ex.call(entry.fn, beta=-1.0)


@pytest.mark.parametrize("name", ["ipo", "mnpo", "sppo_hard", "egpo"])
def test_zero_beta_is_a_domain_error_not_a_zero_division(name):
    ex = losskit.get(name).make_example(torch.float64)
    with pytest.raises(LossInputError, match="^beta:"):
        ex.call(losskit.get(name).fn, beta=0)


@pytest.mark.parametrize("name", ["dpo", "cdpo", "aot", "cpo", "simpo", "robust_dpo", "exo"])
@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7, 1.5])
def test_label_smoothing_is_a_flip_rate_below_one_half(name, eps):
    ex = losskit.get(name).make_example(torch.float64)
    with pytest.raises(LossInputError, match="^label_smoothing:"):
        ex.call(losskit.get(name).fn, label_smoothing=eps)


def test_exo_label_smoothing_is_open_at_zero():
    pc, pr, rc, rr = _pair(30)
    with pytest.raises(LossInputError, match="^label_smoothing:"):
        losskit.exo(pc, pr, rc, rr, label_smoothing=0.0)
    assert torch.isfinite(losskit.exo(pc, pr, rc, rr, label_smoothing=0.25)).all()


def test_option_domains_of_the_pairwise_heads():
    pc, pr, rc, rr = _pair(31)
    cases = [("kto", dict(reference_point=-0.1), "reference_point"), ("kto", dict(desirable_weight=-1.0),
             "desirable_weight"), ("apo", dict(alpha=1.0), "alpha"), ("mnpo", dict(rho=1.5), "rho"),
             ("cpl", dict(lam=-0.5), "lam"), ("simpo", dict(gamma=-1.0), "gamma"), ("f_dpo", dict(alpha=2.0), "alpha"),
             ("discopop", dict(tau=0.0), "tau"), ("aot", dict(paired="yes"), "paired")]
    for name, opts, arg in cases:
        entry = losskit.get(name)
        with pytest.raises(LossInputError, match=f"^{arg}:"):
            entry.make_example(torch.float64).call(entry.fn, **opts)
    oc, orr = (-torch.rand(7, 2, dtype=torch.float64) for _ in range(2))
    with pytest.raises(LossInputError, match="^weights:"):
        losskit.mnpo(pc, pr, rc, rr, oc, orr, rho=0.5, weights=[0.7, 0.7])
    with pytest.raises(LossInputError, match="^chosen_nll:"):
        losskit.cpo(pc, pr, chosen_nll=-torch.ones(7, dtype=torch.float64))


# Every argument below is a log-probability by definition; the objectives' other inputs (log-ratios,
# advantages, unnormalised targets, likelihoods that may be densities: DDO, CPL) are not sign-checked.
_POSITIVE_LOGP_CASES = [
    ("dpo", "policy_chosen_logps"), ("dpo", "ref_rejected_logps"), ("ipo", "policy_rejected_logps"),
    ("simpo", "policy_chosen_logps"), ("cpo", "policy_rejected_logps"), ("kto", "policy_logps"),
    ("kto", "ref_logps"), ("nash_mp", "policy_logps"), ("nash_mp", "prev_logps"), ("egpo", "ref_chosen_logps"),
    ("apo", "prev_chosen_logps"), ("mnpo", "opponent_chosen_logps"), ("d2o", "policy_chosen_logps"),
    ("aot", "policy_chosen_logps"), ("f_dpo", "ref_chosen_logps"), ("mapl", "policy_rejected_logps"),
    ("grpo", "logps"), ("grpo", "old_logps"), ("grpo", "ref_logps"), ("fdpg", "proposal_logps"),
]


@pytest.mark.parametrize(("name", "arg"), _POSITIVE_LOGP_CASES)
def test_positive_log_probabilities_are_refused(name, arg):
    entry = losskit.get(name)
    ex = entry.make_example(torch.float64)
    x = ex.inputs[arg].clone()
    x.view(-1)[0] = 0.5  # e.g. a logit or a probability passed for a log-probability
    with pytest.raises(LossInputError, match=f"^{arg}: expected log-probabilities <= 0"):
        ex.replace({arg: x}).call(entry.fn)
    with losskit.validation(False):  # a value check: off with validation
        ex.replace({arg: x}).call(entry.fn)
    x.view(-1)[0] = 0.0  # log-probability 0 (probability 1) is valid
    ex.replace({arg: x}).call(entry.fn)


def test_log_ratio_and_density_inputs_are_not_sign_checked():
    pc, pr, _, _ = _pair(32)
    for name in ("ddo", "cpl"):  # likelihoods of continuous data / actions: densities may exceed 1
        args = (-pc, -pr, pc, pr) if name == "ddo" else (-pc, -pr)
        assert torch.isfinite(getattr(losskit, name)(*args)).all()
    g = torch.Generator().manual_seed(33)
    s = torch.rand(3, 5, generator=g, dtype=torch.float64)  # DisCO's mean token ratios are positive
    y = torch.tensor([[1, 0, 1, 0, 0]] * 3, dtype=torch.bool)
    assert torch.isfinite(losskit.disco(s, y, tau=1.0))


@pytest.mark.parametrize(("name", "arg"), [("egpo", "chosen_preference"), ("egpo", "rejected_preference"),
                                           ("nash_mp", "preference")])
@pytest.mark.parametrize("value", [1.5, -0.2])
def test_preference_probabilities_outside_the_unit_interval_are_refused(name, arg, value):
    entry = losskit.get(name)
    ex = entry.make_example(torch.float64)
    x = ex.inputs[arg].clone()
    x[0] = value
    with pytest.raises(LossInputError, match=f"^{arg}:"):
        ex.replace({arg: x}).call(entry.fn)


def test_orpo_runs_on_meta_tensors_and_its_value_check_obeys_validation():
    ex = losskit.get("orpo").make_example(torch.float32)
    meta = {k: v.to("meta") for k, v in ex.inputs.items()}
    out = losskit.orpo(**meta, reduction="none")
    assert out.device.type == "meta" and out.shape == (6,)
    pc, pr = ex.inputs["policy_chosen_logps"].clone(), ex.inputs["policy_rejected_logps"]
    pc[0] = 0.0  # log P = 0: ORPO's odds are infinite
    with pytest.raises(LossInputError, match="^policy_chosen_logps:"):
        losskit.orpo(pc, pr)
    with losskit.validation(False):
        losskit.orpo(pc, pr)  # no check, no host read


def test_alphapo_and_f_dpo_stay_finite_where_the_reward_exponential_overflows():
    pc, pr = -torch.rand(4), -torch.rand(4)
    for k in ("chosen", "rejected"):
        a, b = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
        big_a, big_b = (a - 1e30, b) if k == "chosen" else (a, b - 1e30)
        out = losskit.alphapo(big_a, big_b, reduction="sum")
        out.backward()
        assert not torch.isnan(out) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all(), k
    # f-DPO's forward KL reward -e^{-u}: log-ratios of -100 (both) overflow e^{100} in float32 (was NaN)
    pc, pr = torch.full((3,), -150.0, requires_grad=True), torch.full((3,), -160.0, requires_grad=True)
    rc, rr = torch.full((3,), -50.0), torch.full((3,), -60.0)
    out = losskit.f_dpo(pc, pr, rc, rr, divergence="forward_kl")
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()
    # where nothing overflows the values are unchanged
    pc64, pr64, rc64, rr64 = _pair(34)
    tw, tl = np.exp((pc64 - rc64).numpy()), np.exp((pr64 - rr64).numpy())
    np.testing.assert_allclose(losskit.f_dpo(pc64, pr64, rc64, rr64, divergence="forward_kl", reduction="none"),
                               -log_expit(0.1 * (-1 / tw + 1 / tl)), rtol=1e-12)


def test_seeds_module_and_extragradient_step_keep_their_import_paths():
    from losskit.optim import extragradient_step
    from losskit.preference import seeds

    assert seeds.extragradient_step is extragradient_step is losskit.preference.extragradient_step
    for name in seeds.__all__:
        assert getattr(seeds, name) is getattr(losskit, name)
    assert losskit.ddo.__module__ == "losskit.preference.heads"
    assert losskit.sparsepo.__module__ == "losskit.preference.tokens"
    assert losskit.nash_mp.__module__ == "losskit.preference.policy"


def test_per_token_logps_given_to_a_pairwise_head_point_to_sequence_scores():
    tok = -torch.rand(4, 7, dtype=torch.float64)
    for head in (lambda t: losskit.dpo(t, t, t, t), lambda t: losskit.simpo(t, t)):
        with pytest.raises(losskit.LossInputError, match=r"losskit\.preference\.sequence_scores") as e:
            head(tok)
        assert "policy_chosen_logps" in str(e.value)
    with pytest.raises(losskit.LossInputError) as e:  # other shapes: no such hint
        losskit.dpo(tok[None], tok[None], tok[None], tok[None])
    assert "sequence_scores" not in str(e.value)
