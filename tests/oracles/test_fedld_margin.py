"""FedLD margin-control local loss (Zeng et al. 2024, arXiv:2408.12300).

Oracle: the authors' ``MarginalLogLoss`` (Zeng-Shuang/FedLD ``methods/fedld.py`` @
52b27f388c8472c20d824af7470d0033e4f1c4f0; λ = ``margin_loss_penalty`` 0.03 from ``options.py``), ported
below, for ``norm='batch'``; the per-sample form against a direct float64 formula and its properties.
"""

import pytest
import torch
from oracle_meta import Oracle
from torch import nn

import losskit

ORACLES = [
    Oracle("margin_control_loss", "Zeng-Shuang/FedLD", "methods/fedld.py (MarginalLogLoss)",
           "52b27f388c8472c20d824af7470d0033e4f1c4f0", "1e-13",
           differences="the port is norm='batch' (1e-13, gradients 1e-12); the per-sample form is checked against a "
                       "direct float64 formula (1e-13)"),
]



class MarginalLogLoss(nn.Module):  # port of the authors' class
    def __init__(self, lambda_value):
        super().__init__()
        self.lambda_value = lambda_value

    def forward(self, output, target):
        log_loss = nn.CrossEntropyLoss()(output, target)
        softmax_output = torch.softmax(output, dim=1)
        magnitude = torch.norm(softmax_output, p=2)
        return log_loss + self.lambda_value * torch.log(1 + magnitude ** 2)


@pytest.mark.parametrize("lam", [0.03, 0.5])
def test_batch_norm_matches_authors(lam):
    torch.manual_seed(0)
    z = (3 * torch.randn(16, 7, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 7, (16,))
    got = losskit.margin_control_loss(z, y, lam=lam, norm="batch")
    ref = MarginalLogLoss(lam)(z, y)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    g1, = torch.autograd.grad(got, z)
    g2, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-15)


def test_sample_norm_formula_and_batch_size_independence():
    torch.manual_seed(1)
    z = 2 * torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    p = torch.softmax(z, 1)
    ref = -torch.log(p[torch.arange(9), y]) + 0.03 * torch.log(1 + (p ** 2).sum(1))
    torch.testing.assert_close(losskit.margin_control_loss(z, y, reduction="none"), ref, rtol=1e-13, atol=0)
    # duplicating the batch leaves the per-sample mean unchanged, but not the authors' batch form
    z2, y2 = torch.cat([z, z]), torch.cat([y, y])
    torch.testing.assert_close(losskit.margin_control_loss(z2, y2), losskit.margin_control_loss(z, y))
    assert losskit.margin_control_loss(z2, y2, norm="batch", lam=1.0) > losskit.margin_control_loss(
        z, y, norm="batch", lam=1.0) + 0.1


def test_penalty_range_and_lam_zero_is_cross_entropy():
    z = torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, 6, (5,))
    torch.testing.assert_close(losskit.margin_control_loss(z, y, lam=0.0),
                               torch.nn.functional.cross_entropy(z, y))
    # the penalty lies in [log(1 + 1/K), log 2]: uniform prediction at the bottom, one-hot at the top
    k = 6
    uni = losskit.margin_control_loss(torch.zeros(1, k), torch.tensor([0]), lam=1.0) - torch.log(torch.tensor(k * 1.0))
    assert abs(uni.item() - torch.log1p(torch.tensor(1.0 / k)).item()) < 1e-6
    peak = torch.tensor([[50.0, 0, 0, 0, 0, 0]])
    assert abs(losskit.margin_control_loss(peak, torch.tensor([0]), lam=1.0).item() - torch.log(torch.tensor(2.0)).item()) < 1e-6


def test_batch_norm_refuses_per_sample_reductions():
    z, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    with pytest.raises(losskit.LossInputError, match="norm"):
        losskit.margin_control_loss(z, y, norm="batch", reduction="none")
