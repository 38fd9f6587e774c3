"""Weight compander: bounds, slope at zero, exact initialisation, learnable hyper-parameters, removal."""

import math

import pytest
import torch

import losskit
from losskit.regularizers import WeightCompander, remove_weight_compander, weight_compander


def test_map_is_alpha_arctan_beta_w_with_its_bound_and_slope():
    wc = WeightCompander(alpha=0.5, beta=3.0).double()
    w = torch.linspace(-1e3, 1e3, 10001, dtype=torch.float64)
    out = wc(w)
    ref = torch.tensor([0.5 * math.atan(3.0 * v) for v in w.tolist()], dtype=torch.float64)
    torch.testing.assert_close(out, ref, rtol=1e-7, atol=0)  # alpha, beta stored as float32 logs
    assert out.abs().max() < 0.5 * math.pi / 2 and wc.bound == pytest.approx(0.5 * math.pi / 2)
    # expansion near zero: the slope at 0 is alpha * beta (> 1), measured by a central difference
    h = 1e-6
    slope = (wc(torch.tensor(h, dtype=torch.float64)) - wc(torch.tensor(-h, dtype=torch.float64))) / (2 * h)
    assert float(slope) == pytest.approx(1.5, rel=1e-6)


def test_registration_keeps_effective_weights_and_training_uses_the_raw_tensor():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    before = layer.weight.detach().clone()
    weight_compander(layer, alpha=1.0, beta=2.0)
    torch.testing.assert_close(layer.weight, before, rtol=1e-6, atol=1e-6)
    raw = layer.parametrizations.weight.original
    torch.testing.assert_close(raw, torch.tan(before / 1.0) / 2.0)
    x = torch.randn(16, 8)
    layer(x).pow(2).sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    # a huge raw weight still gives a bounded effective weight
    with torch.no_grad():
        raw.fill_(1e6)
    assert layer.weight.abs().max() < math.pi / 2
    remove_weight_compander(layer)
    assert not hasattr(layer, "parametrizations") and layer.weight.abs().max() < math.pi / 2


def test_learnable_hyperparameters_receive_gradients_and_train():
    torch.manual_seed(0)
    layer = weight_compander(torch.nn.Linear(5, 1), alpha=0.5, beta=1.0, learnable=True)
    wc = layer.parametrizations.weight[0]
    assert {n for n, _ in layer.named_parameters()} >= {"parametrizations.weight.0.log_alpha",
                                                         "parametrizations.weight.0.log_beta"}
    x = torch.randn(64, 5)
    y = x @ torch.full((5,), 1.2) + 0.1  # needs |w| = 1.2 > the initial bound 0.5*pi/2 = 0.785
    opt = torch.optim.Adam(layer.parameters(), lr=3e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = (layer(x).squeeze(-1) - y).pow(2).mean()
        loss.backward()
        opt.step()
    assert wc.bound > 1.2 and loss.item() < 1e-2


def test_bad_arguments_raise_named_errors():
    with pytest.raises(losskit.LossInputError, match="alpha"):
        WeightCompander(alpha=0.0)
    with pytest.raises(losskit.LossInputError, match="beta"):
        WeightCompander(beta=float("nan"))
    layer = torch.nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    with pytest.raises(losskit.LossInputError, match="weight: expected .*alpha"):
        weight_compander(layer, alpha=1.0)
    with pytest.raises(losskit.LossInputError, match="name"):
        weight_compander(torch.nn.Linear(2, 2), "nope")
