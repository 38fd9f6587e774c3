"""The generative family against closed forms on Gaussians, where the optimal fields are known.

The flow-matching and (l2) consistency losses of an affine model are quadratic in the Gaussian draws, so
their expectation depends on the first two moments only: averaging over a small point set with exactly
the right moments (x in {mu +- s}, noise in {+-1}) gives the exact expected loss, with no Monte Carlo
error. The optimal fields are then checked to 1e-12.
"""

import itertools
import math

import pytest
import torch

import losskit
from losskit.generative import paths as P
from losskit.generative.consistency import (
    consistency_scalings,
    ict_noise_probs,
    ict_num_steps,
    karras_sigmas,
    pseudo_huber_c,
    sample_ict_indices,
)

F64 = torch.float64


def _moment_points(mu: float, s: float):
    """Points (x0, x1) with E x0 = 0, Var x0 = 1, E x1 = mu, Var x1 = s^2, x0 and x1 uncorrelated."""
    pts = torch.tensor(list(itertools.product((-1.0, 1.0), (-1.0, 1.0))), dtype=F64)
    return pts[:, :1], mu + s * pts[:, 1:]


# ------------------------------------------------------------------------------------ flow matching
@pytest.mark.parametrize("path", sorted(P.PATHS))
@pytest.mark.parametrize("prediction", P.PREDICTIONS)
def test_flow_matching_is_zero_at_the_conditional_target(path, prediction):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 2, 3, generator=g, dtype=F64), torch.randn(5, 2, 3, generator=g, dtype=F64)
    t = torch.rand(5, generator=g, dtype=F64) * 0.9 + 0.05
    target = P.conditional_target(x0, x1, t, path, prediction)
    for w in P.WEIGHTINGS:
        out = losskit.flow_matching_loss(target, x0, x1, t, path=path, prediction=prediction, weighting=w,
                                         reduction="none")
        assert torch.equal(out, torch.zeros(5, dtype=F64))
    assert losskit.flow_matching_loss(target + 0.1, x0, x1, t, path=path, prediction=prediction) > 0


def test_cond_ot_target_is_x1_minus_x0():
    g = torch.Generator().manual_seed(1)
    x0, x1, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.rand(4, generator=g)
    torch.testing.assert_close(P.conditional_target(x0, x1, t), x1 - x0)
    torch.testing.assert_close(P.interpolate(x0, x1, t), t[:, None] * x1 + (1 - t[:, None]) * x0)


@pytest.mark.parametrize("path", sorted(P.PATHS))
def test_path_derivatives_are_the_time_derivatives(path):
    p = P.PATHS[path]
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    h = 1e-6
    for f, df in ((p.alpha, p.d_alpha), (p.sigma, p.d_sigma)):
        torch.testing.assert_close(df(t), (f(t + h) - f(t - h)) / (2 * h), rtol=1e-7, atol=1e-7)


def test_flow_matching_gradient_matches_a_finite_difference():
    """d loss / d theta of a small model (through the prediction) against central differences."""
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(16, 2, generator=g, dtype=F64), 2 + torch.randn(16, 2, generator=g, dtype=F64)
    t = torch.rand(16, generator=g, dtype=F64)
    theta = torch.randn(3, 2, generator=g, dtype=F64)

    def loss(th, path="cond_ot"):
        xt = P.interpolate(x0, x1, t, path)
        inp = torch.cat([xt, t[:, None]], 1)
        return losskit.flow_matching_loss(inp @ th, x0, x1, t, path=path, weighting="min_snr")

    for path in ("cond_ot", "cosine"):
        th = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(th, path), th)
        fd = torch.zeros_like(theta)
        for i in range(theta.numel()):
            e = torch.zeros_like(theta).view(-1)
            e[i] = 1e-6
            e = e.view_as(theta)
            fd.view(-1)[i] = (loss(theta + e, path) - loss(theta - e, path)) / 2e-6
        torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("path", ["cond_ot", "cosine", "vp"])
@pytest.mark.parametrize("prediction", P.PREDICTIONS)
def test_flow_matching_minimiser_is_the_gaussian_marginal_field(path, prediction):
    """Data N(mu, s^2), noise N(0, 1): at each t the optimal output is affine in x_t,
    E[target | x_t] = E target + Cov(target, x_t) / Var(x_t) (x_t - E x_t); the exact expected loss (moment
    points) has zero gradient there and its least-squares minimiser over affine fields is that map."""
    mu, s = 1.3, 0.6
    x0, x1 = _moment_points(mu, s)
    for tv in (0.1, 0.5, 0.85):
        t = torch.full((4,), tv, dtype=F64)
        a, sg, da, ds = (c[0].item() for c in P.PATHS[path].coefficients(t[:1]))
        coef = {"velocity": (da, ds), "data": (1.0, 0.0), "noise": (0.0, 1.0)}[prediction]
        mean_target = coef[0] * mu
        cov = coef[0] * a * s * s + coef[1] * sg
        var = a * a * s * s + sg * sg
        slope, icpt = cov / var, mean_target - cov / var * a * mu
        xt = P.interpolate(x0, x1, t, path)
        ab = torch.tensor([slope, icpt], dtype=F64, requires_grad=True)
        out = losskit.flow_matching_loss(ab[0] * xt + ab[1], x0, x1, t, path=path, prediction=prediction)
        (grad,) = torch.autograd.grad(out, ab)
        assert grad.abs().max() < 1e-12, (tv, grad)
        # and the least-squares fit of the conditional targets on x_t recovers the same map
        tgt = P.conditional_target(x0, x1, t, path, prediction)
        sol = torch.linalg.lstsq(torch.cat([xt, torch.ones_like(xt)], 1), tgt).solution
        torch.testing.assert_close(sol.flatten(), torch.tensor([slope, icpt], dtype=F64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["cond_ot", "cosine", "linear_vp", "vp"])
def test_convert_between_parameterisations(path):
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    t = 0.1 + 0.8 * torch.rand(6, generator=g, dtype=F64)
    xt = P.interpolate(x0, x1, t, path)
    outs = {p: P.conditional_target(x0, x1, t, path, p) for p in P.PREDICTIONS}
    for src, dst in itertools.permutations(P.PREDICTIONS, 2):
        torch.testing.assert_close(P.convert(outs[src], xt, t, path=path, source=src, target=dst), outs[dst],
                                   rtol=1e-10, atol=1e-10)


def test_weightings():
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    snr = (t / (1 - t)) ** 2
    torch.testing.assert_close(P.path_weight(t, "cond_ot", "snr"), snr)
    torch.testing.assert_close(P.path_weight(t, "cond_ot", "min_snr"), snr.clamp(max=5.0))
    x0, x1 = torch.zeros(3, 2, dtype=F64), torch.ones(3, 2, dtype=F64)
    pred = torch.zeros(3, 2, dtype=F64)
    plain = losskit.flow_matching_loss(pred, x0, x1, t, reduction="none")
    torch.testing.assert_close(losskit.flow_matching_loss(pred, x0, x1, t, weighting="snr", reduction="none"),
                               plain * snr)


def test_flow_matching_rejects_t_outside_unit_interval():
    x = torch.zeros(2, 3)
    with pytest.raises(losskit.LossInputError, match="^t:"):
        losskit.flow_matching_loss(x, x, x, torch.tensor([0.5, 1.5]))
    with pytest.raises(losskit.LossInputError, match="^path:"):
        losskit.flow_matching_loss(x, x, x, torch.tensor([0.5, 0.5]), path="ve")
    for opts in ({"path": "vp"}, {"path": "linear_vp"}, {"weighting": "snr"}):
        with pytest.raises(losskit.LossInputError, match="^t:"):
            losskit.flow_matching_loss(x, x, x, torch.tensor([0.5, 1.0]), **opts)
    assert torch.isfinite(losskit.flow_matching_loss(x, x, x, torch.tensor([0.0, 1.0]), weighting="min_snr"))


# ----------------------------------------------------------------------------- consistency training
def test_karras_sigmas_and_curriculum():
    s = karras_sigmas(11)
    assert s[0].item() == pytest.approx(0.002, rel=1e-12) and s[-1].item() == pytest.approx(80.0, rel=1e-12)
    assert (s.diff() > 0).all()
    # N(k): 11 levels at the start, doubling to s1 + 1 = 1281 (iCT Eq. 7, K = 400k)
    K = 400_000
    k_prime = math.floor(K / (math.log2(128) + 1))
    assert [ict_num_steps(k, K) for k in (0, k_prime - 1, k_prime, 2 * k_prime, K)] == [11, 11, 21, 41, 1281]
    assert ict_num_steps(10 * K, K) == 1281


def test_ict_noise_distribution_is_the_discretised_lognormal():
    from scipy.stats import norm

    s = karras_sigmas(1281)
    p = ict_noise_probs(s)
    cdf = norm.cdf((s.log().numpy() + 1.1) / 2.0)
    want = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    torch.testing.assert_close(p, torch.from_numpy(want), rtol=1e-9, atol=1e-12)
    i = sample_ict_indices(20000, s, generator=torch.Generator().manual_seed(0))
    assert i.min() >= 0 and i.max() <= 1279
    # the sampled log-levels follow N(-1.1, 2^2) truncated to [log 0.002, log 80]
    m = torch.tensor(norm.expect(lambda v: v, loc=-1.1, scale=2.0, lb=math.log(0.002), ub=math.log(80),
                                 conditional=True))
    assert abs(s[i].log().mean() - m) < 0.05


def test_consistency_scalings_boundary_condition():
    c_skip, c_out = consistency_scalings(torch.tensor([0.002, 1.0, 80.0], dtype=F64))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert 0 < c_skip[2] < 1e-4 and c_out[2] == pytest.approx(0.5 * (80 - 0.002) / math.sqrt(0.25 + 6400))


def test_pseudo_huber_and_cauchy_metrics():
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(5, 2, 8, generator=g, dtype=F64), torch.randn(5, 2, 8, generator=g, dtype=F64)
    sigma, sigma_next = torch.full((5,), 1.0, dtype=F64), torch.full((5,), 1.5, dtype=F64)
    sq = ((pred - target) ** 2).flatten(1).sum(1)
    c = pseudo_huber_c(16)
    assert c == pytest.approx(0.00054 * 4)
    out = losskit.consistency_training_loss(pred, target, sigma, sigma_next, reduction="none")
    torch.testing.assert_close(out, (torch.sqrt(sq + c * c) - c) / 0.5)
    cauchy = losskit.latent_consistency_loss(pred, target, sigma, sigma_next, c=0.3, weighting="uniform",
                                             reduction="none")
    torch.testing.assert_close(cauchy, torch.log1p(sq / (2 * 0.09)))
    # pseudo-Huber -> ||a - b|| as c -> 0 and ||a - b||^2 / (2c) as c -> inf
    tiny = losskit.consistency_training_loss(pred, target, sigma, sigma_next, c=1e-9, weighting="uniform",
                                             reduction="none")
    torch.testing.assert_close(tiny, sq.sqrt(), rtol=1e-8, atol=1e-8)
    big = losskit.consistency_training_loss(pred, target, sigma, sigma_next, c=1e6, weighting="uniform",
                                            reduction="none")
    torch.testing.assert_close(big, sq / 2e6, rtol=1e-6, atol=0)


def test_consistency_target_gets_no_gradient():
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    target = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    s = karras_sigmas(5)
    out = losskit.consistency_training_loss(pred, target, s[:4], s[1:])
    out.backward()
    assert target.grad is None and pred.grad is not None


def _ct_gradient(k: float, lo: float, hi: float, s: float = 0.7, sigma_min: float = 0.002) -> float:
    """d/dk at the given k of the exact expected l2 consistency loss (moment points) for the family
    f_k(y, sigma) = y sqrt((s^2 + sigma_min^2) / (s^2 + k sigma^2)); k = 1 is the PF-ODE's solution map
    for data N(0, s^2) (it sends the marginal N(0, s^2 + sigma^2) to N(0, s^2 + sigma_min^2) along the
    ODE's linear trajectories)."""
    z, x = _moment_points(0.0, s)
    kk = torch.tensor(k, dtype=F64, requires_grad=True)
    n = x.shape[0]
    sig, sig_next = torch.full((n,), lo, dtype=F64), torch.full((n,), hi, dtype=F64)

    def f(y, sg, kv):
        return y * torch.sqrt((s * s + sigma_min ** 2) / (s * s + kv * sg * sg))

    pred = f(x + hi * z, hi, kk)
    target = f(x + lo * z, lo, torch.tensor(k, dtype=F64))  # the stop-gradient copy
    out = losskit.consistency_training_loss(pred, target, sig, sig_next, metric="l2")  # iCT's 1/delta weight
    (g,) = torch.autograd.grad(out, kk)
    return g.item()


def test_consistency_training_gradient_vanishes_at_the_gaussian_solution():
    """iCT's estimator with the stop-gradient target and the 1/(sigma_{i+1} - sigma_i) weight: at the true
    consistency function the expected gradient is O(delta) (the one-step score estimate of the target is
    exact to first order), at a wrong one it tends to a nonzero constant: consistency training is
    consistent (Song et al. 2023, Theorem 2: CT = CD + o(delta)). Exact expectations, no sampling."""
    deltas = [0.1, 0.05, 0.025, 0.0125]
    right = [abs(_ct_gradient(1.0, 1.0, 1.0 + d)) for d in deltas]
    wrong = [abs(_ct_gradient(1.5, 1.0, 1.0 + d)) for d in deltas]
    for a, b in zip(right, right[1:]):
        assert 0.45 < b / a < 0.55  # halves with delta
    for a, b in zip(wrong, wrong[1:]):
        assert 0.95 < b / a < 1.15  # stays
    assert right[-1] < 0.05 * wrong[-1]


# ------------------------------------------------------------------------------------------ PFGM++
def test_pfgmpp_perturbation_radial_law():
    """||y - x||^2 / r^2 ~ BetaPrime(N/2, D/2) with r = sigma sqrt(D) (the authors' inverse-beta draw)."""
    from scipy.stats import betaprime, kstest

    N, D = 12, 64
    x = torch.zeros(4000, N, dtype=F64)
    sigma = torch.full((4000,), 0.8, dtype=F64)
    y = losskit.pfgmpp_perturbation(x, sigma, D, generator=torch.Generator().manual_seed(0))
    ratio = (y.square().sum(1) / (0.8 ** 2 * D)).numpy()
    assert kstest(ratio, betaprime(N / 2, D / 2).cdf).pvalue > 1e-3
    # second moment sigma^2 N D / (D - 2)
    assert y.square().sum(1).mean().item() == pytest.approx(0.64 * N * D / (D - 2), rel=0.03)


def test_pfgmpp_becomes_gaussian_as_D_grows():
    from scipy.stats import kstest

    x = torch.zeros(4000, 3, dtype=F64)
    y = losskit.pfgmpp_perturbation(x, torch.full((4000,), 2.0, dtype=F64), 10 ** 7,
                                    generator=torch.Generator().manual_seed(1))
    assert kstest((y / 2.0).flatten().numpy(), "norm").pvalue > 1e-3


def test_pfgmpp_loss_is_edm_weighted_mse():
    g = torch.Generator().manual_seed(6)
    d, x = torch.randn(5, 2, 3, generator=g, dtype=F64), torch.randn(5, 2, 3, generator=g, dtype=F64)
    sigma = torch.rand(5, generator=g, dtype=F64) + 0.1
    w = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(losskit.pfgmpp_loss(d, x, sigma, reduction="none"),
                               ((d - x) ** 2).flatten(1).mean(1) * w)
    # the EDM optimum on a Gaussian: E[x | x + sigma n] = x_noisy s^2 / (s^2 + sigma^2) minimises it
    s = 0.9
    z, xx = _moment_points(0.0, s)
    sig = torch.full((4,), 0.7, dtype=F64)
    k = torch.tensor(s * s / (s * s + 0.49), dtype=F64, requires_grad=True)
    out = losskit.pfgmpp_loss(k * (xx + 0.7 * z), xx, sig)
    (gk,) = torch.autograd.grad(out, k)
    assert abs(gk.item()) < 1e-12


# ------------------------------------------------------------------------------------------ f-distill
@pytest.mark.parametrize("divergence", ["reverse_kl", "kl", "js", "hellinger", "pearson", "neyman", "jeffreys"])
def test_f_distill_gradient_is_the_f_divergence_gradient(divergence):
    """Teacher p = N(mu_p, 1), student q = N(mu_q, 1) reparameterised as x = mu_q + z: the expected gradient
    of f_distill_loss in mu_q (true scores, true log ratio) equals d/dmu_q D_f(p || q) = d/dmu_q E_q f(p/q)
    from the divergences family's generator f, both by Gauss-Hermite quadrature (80 nodes)."""
    import numpy as np
    from numpy.polynomial.hermite_e import hermegauss

    from losskit.divergences.generators import get_generator

    nodes, weights = hermegauss(80)
    z = torch.from_numpy(nodes)[:, None]
    w = torch.from_numpy(weights / np.sqrt(2 * np.pi))
    mu_p = 0.7

    def log_ratio(x, mq):
        return 0.5 * ((x - mq) ** 2 - (x - mu_p) ** 2)

    def divergence_at(mq):
        x = mq + z
        return (w * get_generator(divergence).f(log_ratio(x, mq).exp().flatten())).sum()

    mq = torch.tensor(0.0, dtype=F64, requires_grad=True)
    x = mq + z
    loss = losskit.f_distill_loss(x, -(x - mu_p), -(x - mq), log_ratio(x, mq).flatten(), divergence=divergence,
                                  sample_weight=w, reduction="sum")
    (grad,) = torch.autograd.grad(loss, mq)
    with torch.no_grad():
        fd = (divergence_at(torch.tensor(1e-5, dtype=F64)) - divergence_at(torch.tensor(-1e-5, dtype=F64))) / 2e-5
    assert grad.item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)
    assert grad.item() < 0  # moving the student towards the teacher lowers the divergence


def test_f_distill_weights_reuse_the_generators():
    from losskit.divergences.generators import get_generator
    from losskit.generative import f_distill_weight

    s = torch.linspace(-3, 3, 13, dtype=F64)
    for name in ["reverse_kl", "kl", "js", "hellinger", "pearson", "neyman", "jeffreys"]:
        # the closed form against forward-mode differentiation of the generator's f' in log space
        torch.testing.assert_close(f_distill_weight(s, name), f_distill_weight(s, get_generator(name)),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_distill_weight(s, "reverse_kl"), torch.ones_like(s))
    torch.testing.assert_close(f_distill_weight(s, "kl"), s.exp())
    with pytest.raises(losskit.LossInputError, match="^divergence:"):
        losskit.f_distill_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2),
                               divergence="tv")


def test_f_distill_surrogate_value_and_gradient():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 5, generator=g, dtype=F64, requires_grad=True)
    real, fake = torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 5, generator=g, dtype=F64)
    lr = torch.randn(4, generator=g, dtype=F64)
    out = losskit.f_distill_loss(x, real, fake, lr, divergence="kl", reduction="none")
    h = lr.exp()[:, None]
    torch.testing.assert_close(out, 0.5 * ((h * (fake - real)) ** 2).sum(1))
    out.sum().backward()
    torch.testing.assert_close(x.grad, h * (fake - real))
    same = losskit.f_distill_loss(x, real, real, lr, reduction="none")
    assert torch.equal(same, torch.zeros(4, dtype=F64))
