"""OVOR's virtual outlier regularisation (Huang, Chen, Hsu, ICLR 2024, arXiv:2402.04129).

Oracle: the authors' code, jpmorganchase/ovor ``learners/ood.py`` @ 8623f978c077169ecc158eb836f7adf3be804fef
(``NPOS.loss``) with the defaults of ``configs/common.yaml`` (lmda 0.1, thres_id -15, thres_ood -3),
ported below; and the energy margins' closed form.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

ORACLES = [
    Oracle("virtual_outlier_regularization", "jpmorganchase/ovor", "learners/ood.py (NPOS.loss)",
           "8623f978c077169ecc158eb836f7adf3be804fef", "1e-12",
           differences="defaults of configs/common.yaml (lmda 0.1, thres_id -15, thres_ood -3); gradients 1e-10"),
]



def npos_loss(id_logits, ood_logits, lmda=0.1, thres_id=-15.0, thres_ood=-3.0, huber=True):  # NPOS.loss
    crit = torch.nn.HuberLoss() if huber else torch.nn.MSELoss()
    id_score = -torch.logsumexp(id_logits, dim=1)
    ood_score = -torch.logsumexp(ood_logits, dim=1)
    id_dist = F.relu(id_score - thres_id)
    ood_dist = F.relu(thres_ood - ood_score)
    return lmda * (crit(id_dist, torch.zeros_like(id_dist)) + crit(ood_dist, torch.zeros_like(ood_dist)))


def _logits(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = 5 + 5 * torch.randn(40, 10, generator=g, dtype=torch.float64)   # energies straddling -15
    b = -1 + 3 * torch.randn(25, 10, generator=g, dtype=torch.float64)  # energies straddling -3
    return a, b


@pytest.mark.parametrize("penalty,huber", [("huber", True), ("square", False)])
def test_matches_authors(penalty, huber):
    a, b = _logits()
    a1, b1, a2, b2 = (t.clone().requires_grad_() for t in (a, b, a, b))
    got = losskit.virtual_outlier_regularization(a1, b1, penalty=penalty)
    ref = npos_loss(a2, b2, huber=huber)
    assert ref.item() > 0.1
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    for x, y in zip(torch.autograd.grad(got, (a1, b1)), torch.autograd.grad(ref, (a2, b2))):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-15)


def test_energy_margins_closed_form():
    k = 4
    # uniform logits c: energy = -c - log k
    z_id = torch.full((1, k), 10.0, dtype=torch.float64)  # E = -10 - log 4 = -11.39 > -15: d = 3.61 (linear)
    z_ood = torch.full((1, k), 0.5, dtype=torch.float64)  # E = -0.5 - log 4 = -1.886 > -3: no penalty
    d = -10 - math.log(k) + 15
    got = losskit.virtual_outlier_regularization(z_id, z_ood, lam=1.0)
    assert abs(got.item() - (d - 0.5)) < 1e-12
    z_ood = torch.full((1, k), 2.5, dtype=torch.float64)  # E = -3.886 < -3: d = 0.886 (quadratic)
    dd = 3 - 2.5 - math.log(k)
    got = losskit.virtual_outlier_regularization(z_id, z_ood, lam=1.0)
    assert abs(got.item() - (d - 0.5) - 0.5 * dd ** 2) < 1e-12
    # both inside their margins: zero, with zero gradient
    z = torch.full((1, k), 20.0, dtype=torch.float64, requires_grad=True)
    o = torch.full((1, k), -5.0, dtype=torch.float64, requires_grad=True)
    r = losskit.virtual_outlier_regularization(z, o)
    r.backward()
    assert r.item() == 0 and z.grad.abs().max() == 0 and o.grad.abs().max() == 0


def test_minimising_separates_energies():
    a, b = _logits(seed=1)
    before = ((-torch.logsumexp(a, 1) > -15).sum() + (-torch.logsumexp(b, 1) < -3).sum()).item()
    assert before > 20
    a.requires_grad_()
    b.requires_grad_()
    opt = torch.optim.SGD([a, b], lr=10.0)
    for _ in range(300):
        opt.zero_grad()
        losskit.virtual_outlier_regularization(a, b, lam=1.0).backward()
        opt.step()
    # every energy ends within 0.5 of its side of the margin (the Huber penalty is quadratic there)
    assert (-torch.logsumexp(a, 1) <= -15 + 0.5).all() and (-torch.logsumexp(b, 1) >= -3 - 0.5).all()
