"""Proximal matching: closed forms, the default width, the schedule, and the paper's property that the
minimiser of the expected loss tends to the mode as gamma -> 0 (the mean for a wide gamma)."""

import math

import numpy as np
import pytest
import scipy.optimize
import torch

import losskit
from losskit.regression import proximal_matching_gamma


def test_closed_form_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    gamma = 1.7
    got = losskit.proximal_matching_loss(x, y, gamma=gamma, reduction="none")
    d2 = ((x - y) ** 2).sum((1, 2))
    torch.testing.assert_close(got, 1 - torch.exp(-d2 / gamma**2))
    (gr,) = torch.autograd.grad(got.sum(), x)
    want = 2 * (x - y) / gamma**2 * torch.exp(-d2 / gamma**2)[:, None, None]
    torch.testing.assert_close(gr, want.detach())
    # default width: 0.08 sqrt(n), n = 6 entries per sample
    g0 = 0.08 * math.sqrt(6)
    torch.testing.assert_close(losskit.proximal_matching_loss(x, y, reduction="none"),
                               1 - torch.exp(-d2 / g0**2))
    # exact match: 0 with zero gradient; far away: -> 1 with a vanishing gradient
    assert losskit.proximal_matching_loss(y, y, gamma=1.0).item() == 0.0
    far = losskit.proximal_matching_loss(y + 100, y, gamma=1.0, reduction="none")
    assert torch.all(far == 1.0)


@pytest.mark.parametrize("probs,mode", [((0.3, 0.45, 0.25), 1.0), ((0.4, 0.35, 0.25), 0.0)])
def test_minimiser_tends_to_the_mode(probs, mode):
    support = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    p = torch.tensor(probs, dtype=torch.float64)

    def argmin(gamma):
        def risk(c):
            pred = torch.full((3, 1), float(c), dtype=torch.float64)
            return losskit.proximal_matching_loss(pred, support[:, None], gamma=gamma, sample_weight=p,
                                                  reduction="sum").item()

        grid = np.linspace(-1, 4, 5001)
        c0 = grid[np.argmin([risk(c) for c in grid])]
        return scipy.optimize.minimize_scalar(risk, bounds=(c0 - 1e-3, c0 + 1e-3), method="bounded",
                                              options={"xatol": 1e-12}).x

    mean = float((p * support).sum())
    errs = [abs(argmin(gm) - mode) for gm in (0.5, 0.2, 0.05)]
    assert errs[-1] < 1e-6 and errs[0] >= errs[1] >= errs[2]  # approaches the mode as gamma shrinks
    assert abs(argmin(30.0) - mean) < 1e-2  # a wide kernel behaves as the squared error: the mean


def test_gamma_schedule():
    # 4 stages over 400 steps: gamma_min * 8, 4, 2, 1, gamma_min = 0.08 sqrt(784)
    gmin = 0.08 * 28
    got = [proximal_matching_gamma(s, 400, dim=784) for s in (0, 99, 100, 250, 399, 1000)]
    assert got == pytest.approx([8 * gmin, 8 * gmin, 4 * gmin, 2 * gmin, gmin, gmin])
    assert proximal_matching_gamma(0, 10, dim=3, num_stages=2, gamma_min=0.5) == 1.0
