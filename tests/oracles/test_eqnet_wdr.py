"""EQ-Net weight distribution regularisation (Xu et al., ICCV 2023, arXiv:2308.07650).

Oracle: the authors' code, xuke225/EQ-Net ``runner/criterion.py`` @ 86b9e417ec906fb87493fd1c00feb22574341285
(``KurtosisLossCalc``, ``SkewnessLossCalc``, ``KurtosisLoss(model)``, ``SkewnessLoss(model)``: the first
layer dropped, a mean over the rest) with the rates of ``configs/train-supernet-imagenet.yaml``
(kurt_rate 0.015, skew_rate 1.0); and SciPy's sample moments (which use the biased std: the
Bessel factor is checked explicitly).
"""

import numpy as np
import pytest
import scipy.stats
import torch
from oracle_meta import Oracle
from torch import nn

import losskit
from losskit.regularizers import model_weight_distribution_penalty

ORACLES = [
    Oracle("weight_distribution_penalty", "xuke225/EQ-Net",
           "runner/criterion.py (KurtosisLossCalc, SkewnessLossCalc, KurtosisLoss, SkewnessLoss)",
           "86b9e417ec906fb87493fd1c00feb22574341285", "1e-12",
           differences="rates of configs/train-supernet-imagenet.yaml (kurt_rate 0.015, skew_rate 1.0); gradients "
                       "1e-10; the sample moments are also checked against SciPy's"),
]



def ref_kurt_loss(w, target=1.8):  # KurtosisLossCalc.kurtosis_calc, k_mode='avg'
    m, s = torch.mean(w), torch.std(w)
    k = torch.mean(((w - m) / s) ** 4)
    return torch.mean((k - target) ** 2)


def ref_skew_loss(w, target=0.0):  # SkewnessLossCalc.skewness_calc, k_mode='avg'
    m, s = torch.mean(w), torch.std(w)
    sk = torch.mean(((w - m) / s) ** 3)
    return torch.mean((sk - target) ** 2)


def ref_model_wdr(model, kurt_rate=0.015, skew_rate=1.0):
    ws = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ks = [ref_kurt_loss(w) for w in ws][1:]  # del KurtosisList[0]
    ss = [ref_skew_loss(w) for w in ws][1:]
    return kurt_rate * sum(ks) / len(ks) + skew_rate * sum(ss) / len(ss)


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16, 10),
                        nn.Linear(10, 4)).double()
    with torch.no_grad():  # skewed, heavy-tailed weights so both terms are active
        for p in net.parameters():
            p.copy_(torch.randn_like(p).sinh() + 0.3 * torch.randn_like(p).abs())
    return net


def test_layer_term_matches_authors():
    w = torch.randn(64, 32, dtype=torch.float64).sinh()
    ref = 0.015 * ref_kurt_loss(w) + 1.0 * ref_skew_loss(w)
    torch.testing.assert_close(losskit.weight_distribution_penalty(w), ref, rtol=1e-12, atol=0)


def test_model_term_and_gradient_match_authors():
    net = _net()
    got = model_weight_distribution_penalty(net)
    ref = ref_model_wdr(net)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    params = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    g1 = torch.autograd.grad(got, params, allow_unused=True)
    g2 = torch.autograd.grad(ref, params, allow_unused=True)
    assert g1[0] is None and g2[0] is None  # the first layer is left out
    for a, b in zip(g1[1:], g2[1:]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    # a list of tensors works the same way; skip_first=False includes the stem
    torch.testing.assert_close(model_weight_distribution_penalty(params), ref, rtol=1e-12, atol=0)
    all_layers = torch.stack([losskit.weight_distribution_penalty(w) for w in params]).mean()
    torch.testing.assert_close(model_weight_distribution_penalty(net, skip_first=False), all_layers)


def test_moments_against_scipy():
    rng = np.random.default_rng(1)
    w = rng.gamma(2.0, size=500)
    n = w.size
    # SciPy: biased moments; the authors' (and losskit's) std is Bessel-corrected: z scales by sqrt((n-1)/n)
    c = np.sqrt((n - 1) / n)
    skew, kurt = scipy.stats.skew(w) * c ** 3, scipy.stats.kurtosis(w, fisher=False) * c ** 4
    got = losskit.weight_distribution_penalty(torch.tensor(w), kurtosis_weight=0.0, skewness_weight=1.0)
    assert abs(got.item() - skew ** 2) < 1e-10
    got = losskit.weight_distribution_penalty(torch.tensor(w), kurtosis_weight=1.0, skewness_weight=0.0)
    assert abs(got.item() - (kurt - 1.8) ** 2) < 1e-9


def test_uniform_symmetric_weights_are_near_zero_and_scale_free():
    # a symmetric uniform grid: skewness 0, kurtosis -> 1.8
    w = torch.linspace(-1, 1, 100001, dtype=torch.float64)
    assert losskit.weight_distribution_penalty(w).item() < 1e-9
    v = torch.randn(300, dtype=torch.float64).sinh()
    torch.testing.assert_close(losskit.weight_distribution_penalty(7.5 * v + 2.0), losskit.weight_distribution_penalty(v))


def test_minimising_moves_the_moments():
    torch.manual_seed(2)
    w = torch.randn(2000, dtype=torch.float64).sinh().requires_grad_()
    opt = torch.optim.Adam([w], lr=1e-2)
    start = losskit.weight_distribution_penalty(w, kurtosis_weight=1.0).item()
    for _ in range(200):
        opt.zero_grad()
        losskit.weight_distribution_penalty(w, kurtosis_weight=1.0).backward()
        opt.step()
    assert losskit.weight_distribution_penalty(w, kurtosis_weight=1.0).item() < 0.05 * start


def test_bad_inputs():
    with pytest.raises(losskit.LossInputError):
        model_weight_distribution_penalty([torch.randn(3)], skip_first=True)
