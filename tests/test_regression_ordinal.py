"""Ordinal losses: cumulative logit NLL, proportional odds, PRESTO.

References: statsmodels' OrderedModel log-likelihood (proportional odds, logit link), a float64 brute
force of the class probabilities sigmoid(z_k) - sigmoid(z_{k-1}), mpmath at 50 digits where float64
differences lose precision, and PRESTO's structure (equal boundary coefficients = proportional odds).
"""

import numpy as np
import pytest
import torch

import losskit
from losskit import LossInputError
from losskit.regression import presto_penalty


def _nll_brute(z, y):
    z = np.asarray(z, dtype=float)
    n, k1 = z.shape
    cdf = np.concatenate([np.zeros((n, 1)), 1 / (1 + np.exp(-z)), np.ones((n, 1))], 1)
    p = cdf[np.arange(n), y + 1] - cdf[np.arange(n), y]
    return -np.log(p)


def test_cumulative_logit_matches_brute_force_and_sums_to_one():
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(30, 4, generator=g, dtype=torch.float64) + 0.05).cumsum(1) * 1.5 - 3
    y = torch.randint(0, 5, (30,), generator=g)
    got = losskit.cumulative_logit_loss(z, y, reduction="none")
    np.testing.assert_allclose(got.numpy(), _nll_brute(z.numpy(), y.numpy()), rtol=1e-12, atol=1e-14)
    total = sum(torch.exp(-losskit.cumulative_logit_loss(z, torch.full((30,), k), reduction="none"))
                for k in range(5))
    torch.testing.assert_close(total, torch.ones(30, dtype=torch.float64), rtol=1e-13, atol=1e-13)


def test_cumulative_logit_is_stable_where_the_difference_cancels():
    # both boundaries far in a tail: the naive sigmoid difference loses every digit in float64
    z = torch.tensor([[40.0, 40.5], [-60.0, -59.0], [3.0, 3.0 + 1e-9]], dtype=torch.float64)
    y = torch.tensor([1, 1, 1])
    got = losskit.cumulative_logit_loss(z, y, reduction="none")
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    for row, v in zip(z.tolist(), got.tolist()):
        a, b = (mpmath.mpf(x) for x in row)
        want = -mpmath.log(1 / (1 + mpmath.exp(-b)) - 1 / (1 + mpmath.exp(-a)))
        assert v == pytest.approx(float(want), rel=1e-9)
    # float32 too (computed in float32 end to end)
    got32 = losskit.cumulative_logit_loss(z[:2].float(), y[:2], reduction="none")
    torch.testing.assert_close(got32.double(), got[:2], rtol=1e-5, atol=1e-5)


def test_proportional_odds_matches_statsmodels_ordered_model():
    OrderedModel = pytest.importorskip("statsmodels.miscmodels.ordinal_model").OrderedModel  # the bench extra

    rng = np.random.default_rng(1)
    n, p, k = 120, 3, 5
    x = rng.standard_normal((n, p))
    y = np.clip(np.round(x @ [0.8, -0.5, 0.3] + rng.standard_normal(n) + 2), 0, k - 1).astype(int)
    model = OrderedModel(y, x, distr="logit")
    params = np.concatenate([[0.6, -0.4, 0.2], [-1.5, np.log(0.9), np.log(1.2), np.log(0.7)]])
    ll = model.loglike(params)
    cuts = model.transform_threshold_params(params)[1:-1]  # (-inf, theta_1..theta_{K-1}, +inf)
    scores = torch.tensor(x @ params[:p])
    got = losskit.proportional_odds_loss(scores, torch.tensor(cuts), torch.tensor(y))
    assert got.item() == pytest.approx(-ll / n, rel=1e-12)
    # the same model through cum_logits = theta - s
    z = torch.tensor(cuts)[None, :] - scores[:, None]
    torch.testing.assert_close(losskit.cumulative_logit_loss(z, torch.tensor(y)), got, rtol=1e-13, atol=1e-13)


def test_presto_with_equal_boundaries_is_proportional_odds():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    beta = torch.randn(3, generator=g, dtype=torch.float64)
    alpha = torch.tensor([-1.0, 0.3, 1.7], dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    coef = beta[:, None].expand(3, 3).contiguous()
    po = losskit.proportional_odds_loss(-(x @ beta), alpha, y)  # P(y <= k) = sigmoid(alpha_k + x beta)
    torch.testing.assert_close(losskit.presto_loss(x, coef, alpha, y, lam=0.0), po)
    # with equal columns only the first column's L1 remains in the penalty
    torch.testing.assert_close(losskit.presto_loss(x, coef, alpha, y, lam=0.3), po + 0.3 * beta.abs().sum())
    torch.testing.assert_close(losskit.presto_loss(x, coef, alpha, y, lam=0.3, penalize_first=False), po)


def test_presto_penalty_and_reductions():
    coef = torch.tensor([[1.0, 1.5, -0.5], [0.0, 0.0, 2.0]], dtype=torch.float64)
    # |1| + |0| + (|0.5| + |-2.0|) + (|0| + |2|)
    assert presto_penalty(coef).item() == pytest.approx(1.0 + 0.5 + 2.0 + 2.0)
    assert presto_penalty(coef, penalize_first=False).item() == pytest.approx(4.5)
    g = torch.Generator().manual_seed(3)
    x = 0.1 * torch.randn(10, 2, generator=g, dtype=torch.float64)
    bias = torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=g)
    nll = losskit.cumulative_logit_loss(bias + x @ coef, y, reduction="none")
    lam = 0.2
    got = losskit.presto_loss(x, coef, bias, y, lam=lam, reduction="none")
    torch.testing.assert_close(got, nll + lam * 5.5)
    torch.testing.assert_close(losskit.presto_loss(x, coef, bias, y, lam=lam), nll.mean() + lam * 5.5)
    # the penalty's subgradient: lam * sign of each difference (and of the first column)
    c = coef.clone().requires_grad_(True)
    losskit.presto_loss(torch.zeros(10, 2, dtype=torch.float64), c, bias, y, lam=lam).backward()
    # column 1: sign(beta_1) - sign(beta_2 - beta_1); middle: sign(d_2) - sign(d_3); last: sign(d_3); sign(0) = 0
    want = lam * torch.tensor([[1.0 - 1.0, 1.0 + 1.0, -1.0], [0.0 - 0.0, 0.0 - 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(c.grad, want)


def test_crossing_and_bad_labels_raise():
    z = torch.tensor([[0.0, -1.0]])
    with pytest.raises(LossInputError, match="^cum_logits: expected cumulative logits non-decreasing"):
        losskit.cumulative_logit_loss(z, torch.tensor([0]))
    with pytest.raises(LossInputError, match="^thresholds: expected strictly increasing"):
        losskit.proportional_odds_loss(torch.zeros(2), torch.tensor([0.0, 0.0]), torch.tensor([0, 1]))
    with pytest.raises(LossInputError, match=r"^target: expected class indices in \[0, 3\)"):
        losskit.cumulative_logit_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([3]))
    with pytest.raises(LossInputError, match="^coef"):  # boundaries crossing at x = 10
        losskit.presto_loss(torch.tensor([[10.0]]), torch.tensor([[1.0, -1.0]]), torch.tensor([0.0, 0.5]),
                            torch.tensor([1]), lam=0.1)
