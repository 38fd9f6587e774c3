"""Oracle tests (issue 17) for the seed objectives of the transport family."""

import math

import numpy as np
import pytest
import torch
from oracle_meta import Oracle

import losskit

GEOMLOSS_COMMIT = "00e493f36bd6cc8471526e59afc07193a1926e47"
OTT_COMMIT = "6aace50f673b877cc3394d0b53a24da0bbf11308"

ORACLES = [
    Oracle(objective="sinkhorn_divergence", repo="jeanfeydy/geomloss",
           path="src/geomloss/_legacy/sinkhorn_divergence.py, _legacy/sinkhorn_samples.py", commit=GEOMLOSS_COMMIT,
           agreement="relation",
           differences="GeomLoss's p = 2 cost is |x - y|^2 / 2 and eps = blur^p: "
                       "SamplesLoss('sinkhorn', p=2, blur) = 0.5 * losskit(p=2, eps=2 blur^2) (1e-10 once the "
                       "annealed loop has converged at the final eps; GeomLoss stops after one sweep per eps "
                       "and an extrapolation, losskit iterates to tol)."),
    Oracle(objective="monge_gap", repo="ott-jax/ott",
           path="src/ott/neural/methods/monge_gap.py, src/ott/solvers/linear/sinkhorn.py (ent_reg_cost)",
           commit=OTT_COMMIT, agreement="relation",
           differences="OTT subtracts ent_reg_cost = <a,f> + <b,g> - eps (H(a) + H(b)), losskit the dual value "
                       "OT_eps = <a,f> + <b,g>: ott = losskit + 2 eps H(a) (= 2 eps log n for uniform weights); "
                       "same gradients (to 1e-8: both solvers stop at a tolerance). OTT's default epsilon is relative (0.05 x mean cost), losskit's absolute."),
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- GeomLoss (Sinkhorn divergence)
# Port of jeanfeydy/geomloss @ 00e493f3: src/geomloss/_legacy/sinkhorn_divergence.py (log_weights,
# max_diameter, epsilon_schedule, scaling_parameters, sinkhorn_cost [balanced branch], sinkhorn_loop
# [balanced, no multiscale jumps]) and src/geomloss/_legacy/sinkhorn_samples.py (cost_routines[2],
# softmin_tensorized, sinkhorn_tensorized). The only change: ``extra`` repeats the final eps after the
# annealing schedule (sinkhorn_loop takes any eps_list) so that the loop converges.
def _squared_distances(x, y):
    return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)


def _cost_p2(x, y):
    return _squared_distances(x, y) / 2


def _softmin_tensorized(eps, C_xy, h_y):
    B = C_xy.shape[0]
    return -eps * (h_y.view(B, 1, -1) - C_xy / eps).logsumexp(2).view(B, -1)


def _log_weights(a):
    a_log = a.log()
    a_log[a <= 0] = -100000
    return a_log


def _max_diameter(x, y):
    mins = torch.stack((x.min(dim=0)[0], y.min(dim=0)[0])).min(dim=0)[0]
    maxs = torch.stack((x.max(dim=0)[0], y.max(dim=0)[0])).max(dim=0)[0]
    return (maxs - mins).norm().item()


def _epsilon_schedule(p, diameter, blur, scaling):
    return ([diameter ** p] + [np.exp(e) for e in np.arange(p * np.log(diameter), p * np.log(blur),
                                                            p * np.log(scaling))] + [blur ** p])


def _sinkhorn_loop(softmin, a_log, b_log, C_xx, C_yy, C_xy, C_yx, eps_list):
    eps = eps_list[0]
    g_ab = softmin(eps, C_yx, a_log)
    f_ba = softmin(eps, C_xy, b_log)
    f_aa = softmin(eps, C_xx, a_log)
    g_bb = softmin(eps, C_yy, b_log)
    for eps in eps_list:
        ft_ba = softmin(eps, C_xy, b_log + g_ab / eps)
        gt_ab = softmin(eps, C_yx, a_log + f_ba / eps)
        ft_aa = softmin(eps, C_xx, a_log + f_aa / eps)
        gt_bb = softmin(eps, C_yy, b_log + g_bb / eps)
        f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
        f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)
    # last extrapolation (the final, differentiable step)
    f_ba, g_ab = (softmin(eps, C_xy, (b_log + g_ab / eps).detach()),
                  softmin(eps, C_yx, (a_log + f_ba / eps).detach()))
    f_aa = softmin(eps, C_xx, (a_log + f_aa / eps).detach())
    g_bb = softmin(eps, C_yy, (b_log + g_bb / eps).detach())
    return f_aa, g_bb, g_ab, f_ba


def _ref_geomloss_sinkhorn(a, x, b, y, blur=0.05, scaling=0.5, extra=0, debias=True):
    """SamplesLoss('sinkhorn', p=2, blur, scaling, debias) on (B, N, D) point clouds, weights (B, N)."""
    p = 2
    with torch.no_grad():
        C_xy, C_yx = _cost_p2(x, y), _cost_p2(y, x)
        C_xx, C_yy = _cost_p2(x, x), _cost_p2(y, y)
        D = x.shape[-1]
        diameter = _max_diameter(x.view(-1, D), y.view(-1, D))
        eps_list = _epsilon_schedule(p, diameter, blur, scaling) + [blur ** p] * extra
        f_aa, g_bb, g_ab, f_ba = _sinkhorn_loop(_softmin_tensorized, _log_weights(a), _log_weights(b),
                                                C_xx, C_yy, C_xy, C_yx, eps_list)
    if debias:
        return (a * (f_ba - f_aa)).sum(1) + (b * (g_ab - g_bb)).sum(1)
    return (a * f_ba).sum(1) + (b * g_ab).sum(1)


def _clouds(n, m, d=2, seed=20, shift=0.8):
    g = _gen(seed)
    return (torch.randn(1, n, d, generator=g, dtype=torch.float64),
            torch.randn(1, m, d, generator=g, dtype=torch.float64) + shift)


@pytest.mark.parametrize("n,m,blur", [(7, 9, 0.3), (5, 5, 0.5), (1, 4, 0.4), (6, 1, 0.3), (8, 8, 1.0)])
def test_sinkhorn_divergence_relation_to_geomloss(n, m, blur):
    x, y = _clouds(n, m)
    a = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    b = torch.full((1, m), 1.0 / m, dtype=torch.float64)
    ref = _ref_geomloss_sinkhorn(a, x, b, y, blur=blur, extra=3000)
    got = losskit.sinkhorn_divergence(x, y, eps=2 * blur ** 2, p=2.0, tol=1e-13, max_iter=100000,
                                      reduction="none")
    torch.testing.assert_close(0.5 * got, ref, rtol=1e-10, atol=1e-12)
    # the plain GeomLoss call (no extra sweeps) is an approximation of the same value
    approx = _ref_geomloss_sinkhorn(a, x, b, y, blur=blur, scaling=0.9)
    torch.testing.assert_close(0.5 * got, approx, rtol=2e-2, atol=2e-3)


def test_sinkhorn_divergence_weighted_ties_and_identical_clouds():
    x, y = _clouds(6, 6, seed=21)
    a = torch.tensor([[0.1, 0.2, 0.3, 0.1, 0.2, 0.1]], dtype=torch.float64)
    b = torch.full((1, 6), 1 / 6, dtype=torch.float64)
    ref = _ref_geomloss_sinkhorn(a, x, b, y, blur=0.4, extra=3000)
    got = losskit.sinkhorn_divergence(x, y, a=a, b=b, eps=0.32, tol=1e-13, max_iter=100000, reduction="none")
    torch.testing.assert_close(0.5 * got, ref, rtol=1e-10, atol=1e-12)
    ref0 = _ref_geomloss_sinkhorn(b, x, b, x.clone(), blur=0.4, extra=3000)  # identical clouds: 0
    got0 = losskit.sinkhorn_divergence(x, x.clone(), eps=0.32, tol=1e-13, max_iter=100000, reduction="none")
    torch.testing.assert_close(got0, 2 * ref0, rtol=0, atol=1e-12)
    xt = torch.zeros(1, 4, 2, dtype=torch.float64)  # every point tied at the origin
    yt = torch.ones(1, 3, 2, dtype=torch.float64)
    ua, ub = torch.full((1, 4), 0.25, dtype=torch.float64), torch.full((1, 3), 1 / 3, dtype=torch.float64)
    reft = _ref_geomloss_sinkhorn(ua, xt, ub, yt, blur=0.5, extra=100)
    gott = losskit.sinkhorn_divergence(xt, yt, eps=0.5, tol=1e-13, reduction="none")
    torch.testing.assert_close(0.5 * gott, reft, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------- OTT (Monge gap)
# Port of ott-jax/ott @ 6aace50f: src/ott/neural/methods/monge_gap.py monge_gap_from_samples (default
# cost SqEuclidean = ||x - y||^2, scale_cost=1) and src/ott/solvers/linear/sinkhorn.py
# SinkhornOutput.ent_reg_cost (L351-370), with the lse-mode potential update of
# src/ott/geometry/geometry.py update_potential (L376-398), alternated to convergence (balanced problem, so
# reg_ot_cost = <a, f> + <b, g>).
def _ref_ott_sinkhorn(C, a, b, eps, iters=20000, tol=1e-14):
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iters):
        g_new = eps * b.log() - eps * torch.logsumexp((f[:, None] - C) / eps, dim=0)
        f_new = eps * a.log() - eps * torch.logsumexp((g_new[None, :] - C) / eps, dim=1)
        done = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item()) < tol
        f, g = f_new, g_new
        if done:
            break
    return f, g


def _entr(a):
    return torch.where(a > 0, -a * torch.log(torch.where(a > 0, a, torch.ones_like(a))), torch.zeros_like(a))


def _ref_monge_gap_from_samples(source, target, epsilon):
    C = ((source[:, None, :] - target[None, :, :]) ** 2).sum(-1)
    n, m = source.shape[0], target.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=source.dtype)
    b = torch.full((m,), 1.0 / m, dtype=source.dtype)
    gt_displacement_cost = torch.mean(((source - target) ** 2).sum(-1))
    f, g = _ref_ott_sinkhorn(C, a, b, epsilon)
    # compute_kl_reg_cost (sinkhorn.py L224-275), balanced: div_a = <a, f - eps log a>, div_b likewise,
    # plus eps (1 - total mass of the plan exp((f + g - C) / eps))
    total_sum = torch.exp((f[:, None] + g[None, :] - C) / epsilon).sum()
    reg_ot_cost = ((a * (f - epsilon * a.log())).sum() + (b * (g - epsilon * b.log())).sum()
                   + epsilon * (1 - total_sum))
    ent_reg_cost = reg_ot_cost - epsilon * (_entr(a).sum() + _entr(b).sum())
    return gt_displacement_cost - ent_reg_cost


@pytest.mark.parametrize("n,eps,kind", [(8, 0.5, "random"), (6, 0.25, "random"), (1, 0.3, "random"),
                                        (5, 0.4, "identity"), (7, 1.0, "rotation")])
def test_monge_gap_relation_to_ott(n, eps, kind):
    g = _gen(22)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    if kind == "random":
        y = torch.randn(n, 2, generator=g, dtype=torch.float64) + 0.5
    elif kind == "identity":
        y = x.clone()
    else:
        th = 1.2
        R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        y = x @ R.T
    ref = _ref_monge_gap_from_samples(x, y, eps)
    got = losskit.monge_gap(x, y, eps=eps, tol=1e-13, max_iter=100000)
    torch.testing.assert_close(got + 2 * eps * math.log(n), ref, rtol=1e-8, atol=1e-9)  # solver tolerance


def test_monge_gap_gradient_matches_ott_port():
    g = _gen(23)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = (torch.randn(6, 2, generator=g, dtype=torch.float64) + 0.3).requires_grad_(True)
    got = losskit.monge_gap(x, y, eps=0.5, tol=1e-13, max_iter=100000)
    (g1,) = torch.autograd.grad(got, y)
    # envelope theorem on the port: differentiate the cost at the converged (fixed) potentials' plan
    y2 = y.detach().clone().requires_grad_(True)
    C = ((x[:, None, :] - y2[None, :, :]) ** 2).sum(-1)
    a = torch.full((6,), 1 / 6, dtype=torch.float64)
    f, gg = _ref_ott_sinkhorn(C.detach(), a, a, 0.5)
    P = torch.exp((f[:, None] + gg[None, :] - C.detach()) / 0.5)  # OTT's plan from its potentials
    val = torch.mean(((x - y2) ** 2).sum(-1)) - (P * C).sum()
    (g2,) = torch.autograd.grad(val, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-11)
