"""Cox partial likelihood (Breslow / Efron ties, BioFusionNet's class weights).

References: statsmodels' PHReg log-likelihood at given coefficients (both tie rules), lifelines'
CoxPHFitter log-likelihood at its fitted coefficients (Efron), and a float64 brute force written from the
definition (risk sets as explicit loops, weights as R's coxph applies them).
"""

import math

import numpy as np
import pytest
import torch

import losskit
from losskit import LossInputError


def _brute(risk, time, event, w=None, ties="breslow"):
    risk, time, event = (np.asarray(v, dtype=float) for v in (risk, time, event))
    n = len(risk)
    w = np.ones(n) if w is None else np.asarray(w, dtype=float)
    total, count = 0.0, 0.0
    for tt in np.unique(time[event == 1]):
        dead = [i for i in range(n) if time[i] == tt and event[i] == 1]
        at_risk = [j for j in range(n) if time[j] >= tt]
        s = sum(w[j] * math.exp(risk[j]) for j in at_risk)
        dmass = sum(w[i] * math.exp(risk[i]) for i in dead)
        wbar = sum(w[i] for i in dead) / len(dead)
        for l, i in enumerate(dead):
            total += w[i] * risk[i]
            count += w[i]
            if ties == "breslow":
                total -= w[i] * math.log(s)
            else:
                total -= wbar * math.log(s - l / len(dead) * dmass)
    return -total / count if count else 0.0


def _data(n=40, seed=0, tie_levels=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    time = torch.randint(1, tie_levels + 1, (n,), generator=g).to(torch.float64)
    event = torch.rand(n, generator=g) < 0.6
    return x, time, event


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_matches_statsmodels_phreg(ties):
    PHReg = pytest.importorskip("statsmodels.duration.hazard_regression").PHReg  # the bench extra

    x, time, event = _data()
    beta = np.array([0.7, -1.2])
    model = PHReg(time.numpy(), x.numpy(), status=event.numpy().astype(float), ties=ties)
    ll = model.loglike(beta)
    risk = x @ torch.tensor(beta)
    got = losskit.cox_ph_loss(risk, time, event, ties=ties)
    assert got.item() == pytest.approx(-ll / event.sum().item(), rel=1e-12, abs=1e-12)
    assert got.item() == pytest.approx(_brute(risk, time, event, ties=ties), rel=1e-12)


def test_matches_lifelines_fitted_loglik():
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    x, time, event = _data(n=60, seed=1)
    df = pd.DataFrame({"x0": x[:, 0].numpy(), "x1": x[:, 1].numpy(), "T": time.numpy(), "E": event.numpy()})
    cph = lifelines.CoxPHFitter().fit(df, duration_col="T", event_col="E")  # Efron ties
    beta = torch.tensor(cph.params_[["x0", "x1"]].to_numpy())
    got = losskit.cox_ph_loss(x @ beta, time, event, ties="efron")
    assert got.item() == pytest.approx(-cph.log_likelihood_ / event.sum().item(), rel=1e-9)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_weighted_matches_brute_force_and_gradient(ties):
    x, time, event = _data(n=30, seed=2, tie_levels=5)
    risk = (x @ torch.tensor([1.0, -0.5], dtype=torch.float64)).requires_grad_(True)
    weight = torch.tensor([1.0, 3.5], dtype=torch.float64)
    got = losskit.cox_ph_loss(risk, time, event, weight=weight, ties=ties)
    w = weight[event.long()].numpy()
    assert got.item() == pytest.approx(_brute(risk.detach(), time, event, w, ties), rel=1e-12)
    (g,) = torch.autograd.grad(got, risk)
    eps = 1e-6
    num = torch.zeros_like(g)
    for i in range(len(risk)):
        d = torch.zeros_like(risk)
        d[i] = eps
        num[i] = (_brute(risk.detach() + d, time, event, w, ties) - _brute(risk.detach() - d, time, event, w, ties)) / (
            2 * eps)
    torch.testing.assert_close(g, num, rtol=1e-6, atol=1e-8)


def test_without_ties_the_rules_agree_and_invariances_hold():
    g = torch.Generator().manual_seed(3)
    risk = torch.randn(25, generator=g, dtype=torch.float64)
    time = torch.randperm(25, generator=g).to(torch.float64) + 0.5
    event = torch.rand(25, generator=g) < 0.5
    br = losskit.cox_ph_loss(risk, time, event)
    torch.testing.assert_close(br, losskit.cox_ph_loss(risk, time, event, ties="efron"))
    torch.testing.assert_close(br, losskit.cox_ph_loss(risk + 7.3, time, event))  # shift invariance
    perm = torch.randperm(25, generator=g)
    torch.testing.assert_close(br, losskit.cox_ph_loss(risk[perm], time[perm], event[perm]))
    torch.testing.assert_close(br, losskit.cox_ph_loss(risk, time, event.long()))
    # only the order of the times matters
    torch.testing.assert_close(br, losskit.cox_ph_loss(risk, time ** 3, event))
    # uniform class weights c shift the loss by +log c (every risk set is c times heavier): same gradient
    torch.testing.assert_close(br + math.log(2.0),
                               losskit.cox_ph_loss(risk, time, event, weight=torch.tensor([2.0, 2.0]).double()))


def test_edges():
    risk = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    time = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    none = losskit.cox_ph_loss(risk, time, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()
    assert (risk.grad == 0).all()
    # the last event alone in its risk set: log-likelihood 0
    assert losskit.cox_ph_loss(risk, time, torch.tensor([False, False, True])).item() == pytest.approx(0.0, abs=1e-15)
    # huge scores stay finite (log-sum-exp) and equal the limit
    big = torch.tensor([-1e4, 0.0, 1e4], dtype=torch.float32)
    v = losskit.cox_ph_loss(big, time.float(), torch.tensor([True, True, True]), ties="efron")
    assert torch.isfinite(v) and v.item() == pytest.approx(1e4, rel=1e-6)  # (2e4 + 1e4 + 0) / 3
    with pytest.raises(LossInputError, match="^event: expected event indicators"):
        losskit.cox_ph_loss(risk, time, torch.tensor([0, 2, 1]))
    with pytest.raises(LossInputError, match="^time"):
        losskit.cox_ph_loss(risk, -time, torch.tensor([0, 1, 1]))
    with pytest.raises(LossInputError, match="^ties"):
        losskit.cox_ph_loss(risk, time, torch.tensor([0, 1, 1]), ties="exact")
