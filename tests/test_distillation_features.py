"""Feature distillation (issue 19): fitnet_loss (the Module owns the regressor) and attention_transfer."""

import pytest
import torch
import torch.nn as nn

import losskit
from losskit import LossInputError


def _feats(n=4, cs=3, ct=5, hw=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, cs, hw, hw, generator=g, dtype=torch.float64),
            torch.randn(n, ct, hw, hw, generator=g, dtype=torch.float64))


# -------------------------------------------------------------------------------------------- FitNets
def test_fitnet_module_owns_the_regressor():
    reg = nn.Conv2d(3, 5, 1).double()
    m = losskit.FitNetLoss(regressor=reg)
    assert m.regressor is reg
    assert len(list(m.parameters())) == 2
    assert set(m.state_dict()) == {"regressor.weight", "regressor.bias"}
    fs, ft = _feats()
    torch.testing.assert_close(m(fs, ft), ((reg(fs) - ft) ** 2).mean())
    per = m(fs, ft, reduction="none")
    assert per.shape == (4,)
    torch.testing.assert_close(per, ((reg(fs) - ft) ** 2).flatten(1).mean(1))


def test_fitnet_training_the_regressor_lowers_the_loss():
    torch.manual_seed(0)
    fs, ft = _feats(n=8, seed=1)
    ft = ft.float()
    fs = fs.float()
    m = losskit.FitNetLoss(regressor=nn.Conv2d(3, 5, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    first = m(fs, ft).item()
    for _ in range(50):
        opt.zero_grad()
        m(fs, ft).backward()
        opt.step()
    assert m(fs, ft).item() < first


def test_fitnet_shape_errors_name_the_argument():
    fs, ft = _feats()
    with pytest.raises(LossInputError, match="^teacher_features:.*regressor"):
        losskit.fitnet_loss(fs, ft)
    with pytest.raises(LossInputError, match="^regressor:"):
        losskit.fitnet_loss(fs, ft, regressor=nn.Conv2d(3, 4, 1).double())
    with pytest.raises(LossInputError, match="^regressor:"):
        losskit.fitnet_loss(fs, ft, regressor="conv")
    with pytest.raises(LossInputError, match="^teacher_features:"):
        losskit.fitnet_loss(fs, ft[:-1], regressor=nn.Conv2d(3, 5, 1).double())


def test_fitnet_sample_weight_and_teacher_gradient():
    fs, ft = _feats(cs=5)
    ft.requires_grad_(True)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    none = losskit.fitnet_loss(fs, ft, reduction="none")
    torch.testing.assert_close(losskit.fitnet_loss(fs, ft, sample_weight=w), (w * none).sum() / w.sum())
    losskit.fitnet_loss(fs, ft).backward()
    assert ft.grad is not None  # the teacher is the caller's to detach


# -------------------------------------------------------------------------------- attention transfer
def test_attention_map_is_normalised_and_scale_invariant():
    fs, _ = _feats()
    q = losskit.attention_map(fs)
    assert q.shape == (4, 16)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(losskit.attention_map(1e3 * fs), q)
    torch.testing.assert_close(losskit.attention_map(fs), losskit.attention_map(-fs))


def test_attention_transfer_is_zero_for_proportional_maps_and_differs_in_channels():
    fs, ft = _feats()
    assert losskit.attention_transfer(fs, 3.0 * fs).abs().max() < 1e-12
    # the same attention map from a different number of channels
    twice = torch.cat([fs, fs], 1)
    assert losskit.attention_transfer(fs, twice).abs().max() < 1e-12
    assert losskit.attention_transfer(fs, ft) > 0


def test_attention_transfer_is_finite_for_huge_float32_features():
    fs, ft = _feats()
    fs = (fs * 1e30).float().requires_grad_(True)
    loss = losskit.attention_transfer(fs, ft.float())
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(fs.grad).all()
    torch.testing.assert_close(loss.double(), losskit.attention_transfer(fs.detach().double() / 1e30, ft),
                               rtol=1e-5, atol=1e-5)


def test_attention_transfer_shape_errors():
    fs, ft = _feats()
    with pytest.raises(LossInputError, match="^teacher_features:"):
        losskit.attention_transfer(fs, ft[..., :-1])
    with pytest.raises(LossInputError, match="^student_features:"):
        losskit.attention_transfer(fs.flatten(1), ft)
    with pytest.raises(LossInputError, match="^p:"):
        losskit.attention_transfer(fs, ft, p=0.0)
    with pytest.raises(LossInputError, match="^beta:"):
        losskit.attention_transfer(fs, ft, beta=-1.0)


def test_attention_transfer_module_and_beta_scaling():
    fs, ft = _feats()
    m = losskit.AttentionTransferLoss(beta=2.0)
    torch.testing.assert_close(m(fs, ft), 2.0 * losskit.attention_transfer(fs, ft, beta=1.0))
    assert list(m.parameters()) == []
