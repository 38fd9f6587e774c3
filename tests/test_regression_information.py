"""CS-IB: the conditional CS divergence (prediction) and CS quadratic mutual information (compression)
estimators against a float64 NumPy implementation written from the paper's Propositions 1 and 2 with
explicit Gram matrices (no log-space), plus the divergence and independence properties."""

import numpy as np
import pytest
import torch

import losskit
from losskit.regression import conditional_cs_divergence, cs_quadratic_mutual_information


def _gram(a, b, sigma):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma**2))


def _d_direct(yh, y, x, sigma, denominator="paper"):
    K, L1, L2, L21 = _gram(x, x, sigma), _gram(y, y, sigma), _gram(yh, yh, sigma), _gram(yh, y, sigma)
    den = K.sum(1) ** 2 if denominator == "paper" else (K**2).sum(1)

    def term(L):
        return np.log(((K * L).sum(1) / den).sum())

    return term(L1) + term(L2) - 2 * term(L21)


def _i_direct(x, t, sigma):
    K, Q = _gram(x, x, sigma), _gram(t, t, sigma)
    n = len(x)
    one = np.ones(n)
    return (np.log(np.trace(K @ Q) / n**2) + np.log(one @ K @ one * (one @ Q @ one) / n**4)
            - 2 * np.log(one @ K @ Q @ one / n**3))


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    t = np.tanh(x[:, :3] @ rng.standard_normal((3, 3))) + 0.1 * rng.standard_normal((n, 3))
    y = x.sum(1) / 2 + 0.3 * rng.standard_normal(n)
    yh = y + 0.4 * rng.standard_normal(n)
    return yh, y, x, t


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("denominator", ["paper", "authors"])
def test_prediction_term_matches_direct(sigma, denominator):
    yh, y, x, t = _data()
    got = conditional_cs_divergence(torch.tensor(yh), torch.tensor(y), torch.tensor(x), sigma=sigma,
                                    denominator=denominator)
    assert got.item() == pytest.approx(_d_direct(yh, y, x, sigma, denominator), rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_compression_term_matches_direct(sigma):
    yh, y, x, t = _data(seed=1)
    got = cs_quadratic_mutual_information(torch.tensor(x), torch.tensor(t), sigma=sigma)
    want = _i_direct(x, t, sigma)
    assert got.item() == pytest.approx(want, rel=1e-11, abs=1e-12)
    assert got.item() >= 0
    norm = cs_quadratic_mutual_information(torch.tensor(x), torch.tensor(t), sigma=sigma, normalized=True)
    assert norm.item() == pytest.approx(want / np.sqrt(_i_direct(x, x, sigma) * _i_direct(t, t, sigma)), rel=1e-11)


@pytest.mark.parametrize("compression", ["qmi", "normalized"])
def test_cs_ib_is_prediction_plus_beta_compression(compression):
    yh, y, x, t = (torch.tensor(v) for v in _data(seed=2))
    d = conditional_cs_divergence(yh, y, x)
    i = cs_quadratic_mutual_information(x, t, normalized=compression == "normalized")
    for beta in (0.0, 0.01, 1.0):
        got = losskit.cs_ib_loss(yh, y, x, t, beta=beta, compression=compression)
        torch.testing.assert_close(got, d + beta * i, rtol=1e-12, atol=1e-12)
    # (N, 1) targets are the same as (N,)
    torch.testing.assert_close(losskit.cs_ib_loss(yh[:, None], y[:, None], x, t), losskit.cs_ib_loss(yh, y, x, t))


def test_divergence_and_independence_properties():
    yh, y, x, t = (torch.tensor(v) for v in _data(n=200, seed=3))
    # perfect predictions: D_CS(p || p) = 0 exactly
    assert conditional_cs_divergence(y, y, x).item() == pytest.approx(0.0, abs=1e-12)
    assert conditional_cs_divergence(yh, y, x).item() > 0.0
    # a representation that is a function of x carries more CS-QMI than the same values shuffled (independent
    # of x, same marginal); the plug-in estimate of the latter shrinks with N
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(0))
    assert cs_quadratic_mutual_information(x, t).item() > 5 * cs_quadratic_mutual_information(x, t[perm]).item()
    # a shifted prediction pays more the larger the shift (the plug-in estimate itself may dip slightly below
    # 0 for other perturbations at finite N: it is not a divergence estimate with a guaranteed sign)
    vals = [conditional_cs_divergence(y + s, y, x).item() for s in (0.0, 0.2, 0.5, 1.0, 2.0)]
    assert vals[0] == pytest.approx(0.0, abs=1e-12) and all(a < b for a, b in zip(vals, vals[1:]))


def test_far_apart_samples_stay_finite():
    yh, y, x, t = (torch.tensor(v) for v in _data(n=10, seed=4))
    v = losskit.cs_ib_loss(yh * 1e3, y, x * 1e3, t * 1e3, beta=0.1)
    assert torch.isfinite(v)  # every kernel sum is a log-sum-exp: no log 0
