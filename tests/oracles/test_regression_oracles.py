"""Oracle tests for the seed objectives of the regression family (quantile, survival, ordinal, proximal
matching, Cauchy–Schwarz information bottleneck)."""

import numpy as np
import pytest
import torch
from oracle_meta import Oracle

import losskit

QA_COMMIT = "bc7b068fcf825a4b109f7006546b3ee863475cd7"  # amazon-science/quantile-aggregation
BIOFUSION_COMMIT = "17229d94cf949c771e9aa7a4f968139a9795f99b"  # raktim-mondol/BioFusionNet
PRESTO_COMMIT = "9462b3f096ab0fc15e77fd29b247821cdacc5c92"  # gregfaletto/presto
LPN_COMMIT = "8e8ae6ba1a627beea022875c5217670b48e90eee"  # ZhenghanFang/learned-proximal-networks
CSIB_COMMIT = "1789cd50eec0e578a21ab3de271abfdaab9b4fc8"  # SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck

ORACLES = [
    Oracle(objective="pinball_loss", repo="amazon-science/quantile-aggregation", path="util/metric.py (pinball_loss)",
           commit=QA_COMMIT, agreement="1e-12",
           differences="the official pinball_loss is the mean over samples and levels: losskit's 'mean'."),
    Oracle(objective="weighted_interval_score", repo="amazon-science/quantile-aggregation",
           path="util/metric.py (mean_interval_score, pinball_loss_np)", commit=QA_COMMIT, agreement="relation",
           differences="the official code reports the per-interval mean interval scores IS_alpha (and the pinball "
                       "loss per level), not their weighted sum: losskit's WIS = 1/(K + 1/2) (1/2 mean|y - m| + "
                       "sum_k alpha_k/2 IS_k) from them, and = 2 x mean(pinball_loss_np), asserted to 1e-12."),
    Oracle(objective="cox_ph_loss", repo="raktim-mondol/BioFusionNet", path="loss_function.py (loss_fn)",
           commit=BIOFUSION_COMMIT, agreement="relation",
           differences="the official loss_fn builds the risk sets by sorting on the predicted risk (descending), "
                       "not on the survival time (it takes no times); losskit sorts on time as the partial "
                       "likelihood defines. When the risk order equals the time order (no ties) the two are the "
                       "same: loss_fn(risk, event, w) = cox_ph_loss(risk, time, event, weight=(1, w_event)) with "
                       "w = w_event on events and 1 on the censored (train_loop.py), asserted to 1e-12 with "
                       "gradients. Breslow, tie-free; Efron and ties are checked against statsmodels PHReg and "
                       "lifelines in tests/test_regression_survival.py."),
    Oracle(objective="presto_loss", repo="gregfaletto/presto",
           path="presto_func.R (predictPrestoProbs, getParamEstsMod), ported from R to NumPy",
           commit=PRESTO_COMMIT, agreement="1e-12",
           differences="the authors fit PRESTO with a modified ordinalNet (cumulative logit, lasso alpha = 1) on "
                       "psi, Beta[, k] = Beta[, k-1] + psi_k: the objective -(1/n) sum log p_hat[y] + lambda sum "
                       "|psi| with p_hat from predictPrestoProbs. ordinalNet standardizes the covariates before "
                       "penalising; the test passes standardized features, where the two coincide."),
    Oracle(objective="proximal_matching_loss", repo="ZhenghanFang/learned-proximal-networks",
           path="lpn/utils/utils.py (exp_func, ExpDiracSrgt, get_loss_hparams_and_lr)", commit=LPN_COMMIT,
           agreement="1e-12",
           differences="the first author's repository of the paper (the project page's code; "
                       "Sulam-Group/learned-proximal-networks is not in the index). The official loss takes the "
                       "square root of the "
                       "squared distance and squares it again, whose gradient is NaN at an exact match; "
                       "losskit uses the squared distance directly (gradient 0 there)."),
    Oracle(objective="cs_ib_loss", repo="SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck",
           path="loss_cs.py (GaussianMatrix, CS_Div, CS_QMI, CS_QMI_normalized); CS_IB_Housing.py (train)",
           commit=CSIB_COMMIT, agreement="relation",
           differences="the official code takes base-2 logarithms, divides the prediction term by sum_i K_ji^2 "
                       "where Proposition 1 has (sum_i K_ji)^2, and trains with the normalized CS-QMI; losskit "
                       "defaults to the paper (natural logs, (sum_i K_ji)^2, I_CS). With compression='normalized', "
                       "denominator='authors': CS_Div + beta CS_QMI_normalized = cs_ib_loss(beta ln 2) / ln 2; "
                       "CS_QMI = I_CS / ln 2 (Proposition 2 exactly), asserted to 1e-10 with gradients."),
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


# ---------------------------------------------------------------------------------------- survival
# Port of raktim-mondol/BioFusionNet @ 17229d94, loss_function.py: loss_fn, verbatim but for the name.
def _ref_biofusion_loss_fn(risks, events, weights, device):
    risks = risks.to(device)
    events = events.to(device)
    weights = weights.to(device)

    events = events.view(-1)
    risks = risks.view(-1)
    weights = weights.view(-1)

    total_weighted_events = torch.sum(weights * events)

    # Sort by risk score
    order = torch.argsort(risks, descending=True)
    risks = risks[order]
    events = events[order]
    weights = weights[order]

    # Calculate the risk set for each time
    hazard_ratio = torch.exp(risks)
    weighted_cumulative_hazard = torch.cumsum(weights * hazard_ratio, dim=0)
    log_risk = torch.log(weighted_cumulative_hazard)
    uncensored_likelihood = weights * (risks - log_risk)

    # Only consider uncensored events
    censored_likelihood = uncensored_likelihood * events
    neg_likelihood = -torch.sum(censored_likelihood) / total_weighted_events

    return neg_likelihood


@pytest.mark.parametrize("event_weight", [1.0, 3.0, 0.25])
def test_cox_matches_biofusionnet_when_risk_order_is_time_order(event_weight):
    g = torch.Generator().manual_seed(4)
    n = 50
    risk = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    time = torch.argsort(torch.argsort(risk)).to(torch.float64) * 0.7 + 1.0  # same order as the risk, no ties
    event = torch.rand(n, generator=g) < 0.4
    weights = torch.ones(n, dtype=torch.float64)
    weights[event] = event_weight  # train_loop.py
    r1, r2 = risk.clone().requires_grad_(True), risk.clone().requires_grad_(True)
    got = losskit.cox_ph_loss(r1, time, event, weight=torch.tensor([1.0, event_weight], dtype=torch.float64))
    ref = _ref_biofusion_loss_fn(r2, event.to(torch.float64), weights, "cpu")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(r1.grad, r2.grad, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------- ordinal
# Port of gregfaletto/presto @ 9462b3f0, presto_func.R: predictPrestoProbs (class probabilities from
# alpha_hat (K-1,) and Beta_hat (p, K-1)) and the psi parametrisation of getParamEstsMod
# (Beta[, 1] = psi_1, Beta[, k] = Beta[, k-1] + psi_k), from R to NumPy line by line.
def _plogis(v):
    return 1 / (1 + np.exp(-v))


def _ref_predict_presto_probs(alpha_hat, Beta_hat, X_test):
    K = len(alpha_hat) + 1
    p = Beta_hat.shape[0]
    assert K >= 3 and Beta_hat.shape == (p, K - 1)
    n = X_test.shape[0]
    p_hat = np.full((n, K), np.nan)
    p_hat[:, 0] = _plogis(alpha_hat[0] + X_test @ Beta_hat[:, 0])
    for k in range(2, K):  # R: for(k in 2:(K - 1)), 1-based columns
        p_hat[:, k - 1] = _plogis(alpha_hat[k - 1] + X_test @ Beta_hat[:, k - 1]) - \
            _plogis(alpha_hat[k - 2] + X_test @ Beta_hat[:, k - 2])
    p_hat[:, K - 1] = 1 - _plogis(alpha_hat[K - 2] + X_test @ Beta_hat[:, K - 2])
    assert np.all(p_hat >= 0) and np.all(p_hat <= 1)
    return p_hat


def _ref_psi(Beta_hat):
    psi = [Beta_hat[:, 0]]
    for k in range(1, Beta_hat.shape[1]):
        psi.append(Beta_hat[:, k] - Beta_hat[:, k - 1])
    return np.concatenate(psi)


@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0])
def test_presto_matches_the_authors_objective(lam):
    rng = np.random.default_rng(6)
    n, p, k = 200, 4, 5
    x = rng.standard_normal((n, p))
    x = (x - x.mean(0)) / x.std(0)  # ordinalNet standardizes before penalising
    beta0 = rng.standard_normal(p) * 0.5
    Beta = beta0[:, None] + np.cumsum(0.1 * rng.standard_normal((p, k - 1)) * (rng.random((p, k - 1)) < 0.4), 1)
    alpha = np.array([-2.5, -0.5, 1.0, 3.0])
    probs = _ref_predict_presto_probs(alpha, Beta, x)
    y = np.array([rng.choice(k, p=row / row.sum()) for row in probs])
    ref = -np.mean(np.log(probs[np.arange(n), y])) + lam * np.abs(_ref_psi(Beta)).sum()
    got = losskit.presto_loss(torch.tensor(x), torch.tensor(Beta), torch.tensor(alpha), torch.tensor(y), lam=lam)
    assert got.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)


# -------------------------------------------------------------------------------- proximal matching
# Port of ZhenghanFang/learned-proximal-networks @ 8e8ae6ba, lpn/utils/utils.py: exp_func, ExpDiracSrgt
# and the gamma ("sigma") schedule of get_loss_hparams_and_lr (with lpn/train.py's sigma_min default).
def _ref_exp_func(x, sigma):
    return -torch.exp(-((x / sigma) ** 2)) + 1


def _ref_exp_dirac_srgt(input, target, sigma):
    bsize = input.shape[0]
    dist = (input - target).pow(2).reshape(bsize, -1).sum(1).sqrt()
    return _ref_exp_func(dist, sigma).mean()


def _ref_gamma(global_step, num_steps, num_steps_pretrain, num_stages, sigma_min):
    num_steps = num_steps - num_steps_pretrain
    step = global_step - num_steps_pretrain
    num_steps_per_stage = num_steps // num_stages
    stage = step // num_steps_per_stage
    if stage >= num_stages:
        stage = num_stages - 1
    return sigma_min * (2 ** (num_stages - 1 - stage))


@pytest.mark.parametrize("scale", [0.05, 1.0, 10.0])
def test_proximal_matching_matches_lpn(scale):
    from losskit.regression import proximal_matching_gamma

    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    out = x + scale * torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    sigma_min = 0.08 * np.sqrt(8 * 8 * 1)  # lpn/train.py default
    for step in (20000, 25000, 31000, 39999):  # after the 20000 L1 pretraining steps of 40000
        sigma = _ref_gamma(step, 40000, 20000, 4, sigma_min)
        assert proximal_matching_gamma(step - 20000, 20000, dim=64) == pytest.approx(sigma, rel=1e-15)
        o1, o2 = out.clone().requires_grad_(True), out.clone().requires_grad_(True)
        got = losskit.proximal_matching_loss(o1, x, gamma=sigma)
        ref = _ref_exp_dirac_srgt(o2, x, sigma)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
        got.backward()
        ref.backward()
        torch.testing.assert_close(o1.grad, o2.grad, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(losskit.proximal_matching_loss(out, x), _ref_exp_dirac_srgt(out, x, sigma_min),
                               rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------- CS-IB
# Port of SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck @ 1789cd50, loss_cs.py: GaussianMatrix, CS_Div,
# CS_QMI (the sigma-given branch), CS_QMI_normalized, verbatim but for names; the training loss of
# CS_IB_Housing.py's train(): CS_div + beta * IXZ with sigma = 1.
def _ref_gaussian_matrix(X, Y, sigma):
    size1 = X.size()
    size2 = Y.size()
    G = (X * X).sum(-1)
    H = (Y * Y).sum(-1)
    Q = G.unsqueeze(-1).repeat(1, size2[0])
    R = H.unsqueeze(-1).T.repeat(size1[0], 1)
    H = Q + R - 2 * X @ (Y.T)
    H = torch.clamp(torch.exp(-H / 2 / sigma**2), min=0)
    return H


def _ref_cs_div(x, y1, y2, sigma):
    K = _ref_gaussian_matrix(x, x, sigma)
    L1 = _ref_gaussian_matrix(y1, y1, sigma)
    L2 = _ref_gaussian_matrix(y2, y2, sigma)
    L21 = _ref_gaussian_matrix(y2, y1, sigma)
    H1 = K * L1
    self_term1 = (H1.sum(-1) / (K**2).sum(-1)).sum(0)
    H2 = K * L2
    self_term2 = (H2.sum(-1) / (K**2).sum(-1)).sum(0)
    H3 = K * L21
    cross_term = (H3.sum(-1) / (K**2).sum(-1)).sum(0)
    return -2 * torch.log2(cross_term) + torch.log2(self_term1) + torch.log2(self_term2)


def _ref_cs_qmi(x, y, sigma):
    N = x.shape[0]
    Kx = _ref_gaussian_matrix(x, x, sigma)
    Ky = _ref_gaussian_matrix(y, y, sigma)
    self_term1 = torch.trace(Kx @ Ky.T) / (N**2)
    self_term2 = (torch.sum(Kx) * torch.sum(Ky)) / (N**4)
    term_a = torch.ones(1, N).to(x.device, x.dtype)
    term_b = torch.ones(N, 1).to(x.device, x.dtype)
    cross_term = (term_a @ Kx.T @ Ky @ term_b) / (N**3)
    return -2 * torch.log2(cross_term) + torch.log2(self_term1) + torch.log2(self_term2)


def _ref_cs_qmi_normalized(x, y, sigma):
    QMI = _ref_cs_qmi(x, y, sigma)
    var1 = torch.sqrt(_ref_cs_qmi(x, x, sigma))
    var2 = torch.sqrt(_ref_cs_qmi(y, y, sigma))
    return QMI / (var1 * var2)


@pytest.mark.parametrize("beta", [0.0, 0.01, 0.5])
def test_cs_ib_matches_the_authors_training_loss(beta):
    import math

    g = torch.Generator().manual_seed(8)
    n = 32
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)  # standardized inputs, as get_california_housing
    t = torch.tanh(x @ torch.randn(8, 5, generator=g, dtype=torch.float64)) * 2
    y = x[:, :3].sum(1, keepdim=True) / 2 + 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    yh = y + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    h1, h2 = yh.clone().requires_grad_(True), yh.clone().requires_grad_(True)
    t1, t2 = t.clone().requires_grad_(True), t.clone().requires_grad_(True)
    got = losskit.cs_ib_loss(h1, y, x, t1, beta=beta * math.log(2), sigma=1.0, compression="normalized",
                             denominator="authors") / math.log(2)
    ref = _ref_cs_div(x, y, h2, sigma=1) + beta * _ref_cs_qmi_normalized(x, t2, sigma=1)
    torch.testing.assert_close(got, ref.reshape(()), rtol=1e-10, atol=1e-12)
    (got + 0 * t1.sum()).backward()
    (ref.reshape(()) + 0 * t2.sum()).backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(t1.grad, t2.grad, rtol=1e-8, atol=1e-12)
    # Proposition 2 as the authors compute it (no normalisation): CS_QMI = I_CS / ln 2
    from losskit.regression import cs_quadratic_mutual_information

    torch.testing.assert_close(cs_quadratic_mutual_information(x, t) / math.log(2), _ref_cs_qmi(x, t, 1.0).reshape(()),
                               rtol=1e-10, atol=1e-12)
