"""Oracle tests for the seed objectives of the regression family (quantile, survival, ordinal, proximal
matching, Cauchy–Schwarz information bottleneck)."""

import numpy as np
import pytest
import torch
from oracle_meta import Oracle

import losskit

QA_COMMIT = "bc7b068fcf825a4b109f7006546b3ee863475cd7"  # amazon-science/quantile-aggregation

ORACLES = [
    Oracle(objective="pinball_loss", repo="amazon-science/quantile-aggregation", path="util/metric.py (pinball_loss)",
           commit=QA_COMMIT, agreement="1e-12",
           differences="the official pinball_loss is the mean over samples and levels: losskit's 'mean'."),
    Oracle(objective="weighted_interval_score", repo="amazon-science/quantile-aggregation",
           path="util/metric.py (mean_interval_score, pinball_loss_np)", commit=QA_COMMIT, agreement="relation",
           differences="the official code reports the per-interval mean interval scores IS_alpha (and the pinball "
                       "loss per level), not their weighted sum: losskit's WIS = 1/(K + 1/2) (1/2 mean|y - m| + "
                       "sum_k alpha_k/2 IS_k) from them, and = 2 x mean(pinball_loss_np), asserted to 1e-12."),
]


# ---------------------------------------------------------------------------------------- quantile
# Port of amazon-science/quantile-aggregation @ bc7b068f, util/metric.py: pinball_loss (torch) and
# pinball_loss_np, mean_interval_score (NumPy), verbatim but for names.
def _ref_pinball_loss(predict_data, target_data, quantiles):
    error_data = target_data.reshape(-1, 1) - predict_data
    loss_data = torch.max(quantiles * error_data, (quantiles - 1) * error_data)
    return loss_data.mean()


def _ref_pinball_loss_np(predict_data, target_data, quantiles, mean=False):
    error_data = target_data.reshape(-1, 1) - predict_data
    loss_data = np.maximum(quantiles * error_data, (quantiles - 1) * error_data)
    if mean:
        return loss_data.mean()
    else:
        return loss_data.mean(0)


def _ref_mean_interval_score(y_target, y_quantile, quantile_list):
    interval_score_list = []
    num_quantiles = len(quantile_list)
    for i in range(num_quantiles // 2):
        lower_quantile = quantile_list[i]
        upper_quantile = quantile_list[-(i + 1)]
        y_lower = y_quantile[:, quantile_list == lower_quantile]
        y_upper = y_quantile[:, quantile_list == upper_quantile]
        below_lower = (y_lower > y_target).astype('float')
        above_upper = (y_upper < y_target).astype('float')
        interval_score = (y_upper - y_lower)
        interval_score += (1.0 / lower_quantile) * (y_lower - y_target) * below_lower
        interval_score += (1.0 / lower_quantile) * (y_target - y_upper) * above_upper
        interval_score = interval_score.mean()
        interval_score_list.append(interval_score)
    return interval_score_list


QUANTILE_LIST = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_pinball_loss_matches_quantile_aggregation(scale):
    g = torch.Generator().manual_seed(0)
    pred = scale * torch.randn(64, len(QUANTILE_LIST), generator=g, dtype=torch.float64)
    y = scale * torch.randn(64, generator=g, dtype=torch.float64)
    pred[3] = y[3]  # exact hits (u = 0)
    p1, p2 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    got = losskit.pinball_loss(p1, y, quantiles=tuple(QUANTILE_LIST))
    ref = _ref_pinball_loss(p2, y, torch.tensor(QUANTILE_LIST))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-12, atol=1e-15)


def test_wis_from_quantile_aggregation_interval_scores():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(80, len(QUANTILE_LIST), generator=g, dtype=torch.float64).sort(1).values
    y = 1.2 * torch.randn(80, generator=g, dtype=torch.float64)
    got = losskit.weighted_interval_score(pred, y, quantiles=tuple(QUANTILE_LIST)).item()
    yn, pn = y.numpy().reshape(-1, 1), pred.numpy()
    scores = _ref_mean_interval_score(yn, pn, QUANTILE_LIST)
    k = len(QUANTILE_LIST) // 2
    alphas = 2 * QUANTILE_LIST[:k]
    median = np.abs(yn[:, 0] - pn[:, k]).mean()
    wis = (0.5 * median + sum(a / 2 * s for a, s in zip(alphas, scores))) / (k + 0.5)
    assert got == pytest.approx(wis, rel=1e-12, abs=1e-13)
    assert got == pytest.approx(2 * _ref_pinball_loss_np(pn, yn[:, 0], QUANTILE_LIST, mean=True), rel=1e-12)
