"""Quantile regression: pinball loss, weighted interval score, monotone rearrangement.

References: NumPy's empirical quantiles (the pinball minimiser), a direct NumPy implementation of
Bracher et al.'s weighted interval score, SciPy's isotonic regression (PAV), and the rearrangement
results of Chernozhukov et al. (2010) / Fakoor et al. (2023): sorting or isotonic regression of crossing
quantiles never increases the pinball loss or the WIS.
"""

import numpy as np
import pytest
import scipy.optimize
import torch

import losskit
from losskit import LossInputError
from losskit.regression import rearrange_quantiles

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def _pinball_np(pred, y, taus):
    u = y[:, None] - pred
    return np.where(u >= 0, taus * u, (taus - 1) * u)


def test_pinball_closed_form():
    pred = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1.5], dtype=torch.float64)
    # rho_0.1(1.5) = 0.15, rho_0.5(0.5) = 0.25, rho_0.9(-0.5) = 0.05
    got = losskit.pinball_loss(pred, y, quantiles=(0.1, 0.5, 0.9))
    torch.testing.assert_close(got, torch.tensor((0.15 + 0.25 + 0.05) / 3, dtype=torch.float64))
    # tau = 0.5: half the absolute error
    a, b = torch.randn(20, 1, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    torch.testing.assert_close(losskit.pinball_loss(a, b), 0.5 * (a[:, 0] - b).abs().mean())


@pytest.mark.parametrize("tau", [0.1, 0.25, 0.5, 0.8, 0.95])
def test_pinball_minimiser_is_the_empirical_quantile(tau):
    rng = np.random.default_rng(3)
    y = rng.standard_gamma(2.0, size=203)
    yt = torch.tensor(y)

    def risk(c):
        c = torch.as_tensor(c, dtype=torch.float64).reshape(-1)
        pred = c[None, :].expand(len(y), -1).T.reshape(-1, 1)  # every candidate against every sample
        tgt = yt.repeat(len(c))
        return losskit.pinball_loss(pred, tgt, quantiles=(tau,), reduction="none").reshape(len(c), -1).mean(1)

    # the empirical risk is piecewise linear with kinks at the samples: its minimum is at a sample
    q = np.quantile(y, tau, method="inverted_cdf")
    r_all = risk(torch.tensor(np.sort(y)))
    assert risk(q).item() <= r_all.min().item() + 1e-12
    # and the first-order condition: moving off q in either direction does not decrease the risk
    for eps in (1e-4, -1e-4):
        assert risk(q + eps).item() >= risk(q).item() - 1e-12
    # a scalar minimiser of the (convex, piecewise-linear) risk lands in [q_lo, q_hi], the argmin interval
    res = scipy.optimize.minimize_scalar(lambda c: risk(c).item(), bounds=(y.min(), y.max()), method="bounded",
                                         options={"xatol": 1e-10})
    lo, hi = np.quantile(y, tau, method="lower"), np.quantile(y, tau, method="higher")
    assert lo - 1e-6 <= res.x <= hi + 1e-6


def _wis_direct(pred, y, levels):
    """Bracher et al. (2021), eq. (2), written out interval by interval."""
    levels = np.asarray(levels)
    q = len(levels)
    k = q // 2
    total = np.zeros(len(y))
    for i in range(k):
        alpha = 2 * levels[i]
        lo, up = pred[:, i], pred[:, q - 1 - i]
        score = (up - lo) + 2 / alpha * (lo - y) * (y < lo) + 2 / alpha * (y - up) * (y > up)
        total += alpha / 2 * score
    if q % 2:
        total += 0.5 * np.abs(y - pred[:, k])
        return total / (k + 0.5)
    return total / k


@pytest.mark.parametrize("levels", [LEVELS, (0.1, 0.5, 0.9), (0.2, 0.4, 0.6, 0.8), (0.5,)])
def test_wis_matches_direct_and_the_pinball_relation(levels):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(50, len(levels), generator=g, dtype=torch.float64).sort(1).values
    pred[::7] = pred[::7].flip(1)  # crossings too
    y = 1.3 * torch.randn(50, generator=g, dtype=torch.float64)
    got = losskit.weighted_interval_score(pred, y, quantiles=levels, reduction="none")
    np.testing.assert_allclose(got.numpy(), _wis_direct(pred.numpy(), y.numpy(), levels), rtol=1e-12, atol=1e-13)
    # WIS = 1/(K + 1/2) sum over the 2K+1 levels of rho_tau = 2 x the pinball loss averaged over the levels
    k = len(levels) // 2
    rho_sum = _pinball_np(pred.numpy(), y.numpy(), np.array(levels)).sum(1)
    denom = (k + 0.5) if len(levels) % 2 else k
    np.testing.assert_allclose(got.numpy(), rho_sum / denom, rtol=1e-12, atol=1e-13)
    pin = losskit.pinball_loss(pred, y, quantiles=levels, reduction="none")
    torch.testing.assert_close(got, 2 * pin, rtol=1e-12, atol=1e-13)


def test_wis_refuses_asymmetric_levels():
    with pytest.raises(LossInputError, match="^quantiles: expected symmetric"):
        losskit.weighted_interval_score(torch.zeros(3, 3), torch.zeros(3), quantiles=(0.1, 0.5, 0.8))


def test_isotonic_matches_scipy_pav():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 9, generator=g, dtype=torch.float64)
    x[:, 4:] -= 1.0  # violators
    got = rearrange_quantiles(x, "isotonic")
    want = np.stack([scipy.optimize.isotonic_regression(row).x for row in x.numpy()])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert (got.diff(dim=1) >= -1e-12).all()
    # already monotone rows are left alone
    s = x.sort(1).values
    torch.testing.assert_close(rearrange_quantiles(s, "isotonic"), s)
    torch.testing.assert_close(rearrange_quantiles(x, "sort"), s)


def test_isotonic_gradient_is_block_averaging():
    x = torch.tensor([[0.0, 2.0, 1.0, 3.0, 2.5, 2.6]], dtype=torch.float64, requires_grad=True)
    out = rearrange_quantiles(x, "isotonic")
    # blocks {0}, {1, 2}, {3, 4, 5}: out = [0, 1.5, 1.5, 2.7, 2.7, 2.7]
    torch.testing.assert_close(out.detach(), torch.tensor([[0.0, 1.5, 1.5, 2.7, 2.7, 2.7]], dtype=torch.float64))
    jac = torch.autograd.functional.jacobian(lambda z: rearrange_quantiles(z, "isotonic"), x.detach())[0, :, 0]
    want = torch.zeros(6, 6, dtype=torch.float64)
    want[0, 0] = 1
    want[1:3, 1:3] = 0.5
    want[3:, 3:] = 1 / 3
    torch.testing.assert_close(jac, want)
    torch.autograd.gradcheck(lambda z: rearrange_quantiles(z, "isotonic"), (x,))


@pytest.mark.parametrize("method", ["sort", "isotonic"])
def test_rearrangement_never_increases_the_loss(method):
    """Chernozhukov, Fernández-Val, Galichon (2010); Fakoor et al. (2023): for every target value."""
    g = torch.Generator().manual_seed(2)
    n = 400
    pred = torch.randn(n, len(LEVELS), generator=g, dtype=torch.float64)  # heavily crossing
    y = 1.5 * torch.randn(n, generator=g, dtype=torch.float64)
    raw = losskit.pinball_loss(pred, y, quantiles=LEVELS, reduction="none")
    fixed = losskit.pinball_loss(pred, y, quantiles=LEVELS, monotone=method, reduction="none")
    assert (fixed <= raw + 1e-12).all()
    assert (fixed < raw - 1e-6).any()  # and it does help somewhere
    wraw = losskit.weighted_interval_score(pred, y, quantiles=LEVELS, reduction="none")
    wfix = losskit.weighted_interval_score(pred, y, quantiles=LEVELS, monotone=method, reduction="none")
    assert (wfix <= wraw + 1e-12).all()
    torch.testing.assert_close(fixed, losskit.pinball_loss(rearrange_quantiles(pred, method), y, quantiles=LEVELS,
                                                           reduction="none"))


def test_quantile_inputs_are_checked():
    pred, y = torch.zeros(4, 3), torch.zeros(4)
    with pytest.raises(LossInputError, match="^quantiles: expected one level per column"):
        losskit.pinball_loss(pred, y, quantiles=(0.1, 0.9))
    with pytest.raises(LossInputError, match="^quantiles: expected strictly increasing"):
        losskit.pinball_loss(pred, y, quantiles=(0.1, 0.9, 0.5))
    with pytest.raises(LossInputError, match="^quantiles"):
        losskit.pinball_loss(pred, y, quantiles=(0.1, 0.5, 1.0))
    with pytest.raises(LossInputError, match="^monotone"):
        losskit.pinball_loss(pred, y, quantiles=(0.1, 0.5, 0.9), monotone="cummax")
    with pytest.raises(LossInputError, match="^target"):
        losskit.pinball_loss(pred, torch.zeros(4, 1), quantiles=(0.1, 0.5, 0.9))
