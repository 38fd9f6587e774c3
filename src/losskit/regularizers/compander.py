"""Weight compander: a bounded, zero-repelling reparameterisation of each weight.

Weight Compander: A Simple Weight Reparameterization for Regularization (Cakaj, Mehnert, Yang, 2023,
arXiv:2306.16993). Each weight w is used through an elementwise non-linear map φ that *compresses* large
weights (|φ(w)| is bounded, so no single weight dominates) and *expands* small ones (φ'(0) > 1, so
weights near zero are pushed away from it and keep participating). The paper also learns φ's
hyper-parameters during training.

Choice (the catalogue marks this row †): the paper's exact φ was not available to us, so losskit uses

    φ(w) = α · arctan(β · w),   α > 0, β > 0,

which has both properties the paper asks for: |φ(w)| < α·π/2 for every w (compression), and
φ'(0) = α·β, so with α·β > 1 small weights are expanded. Defaults α = 1, β = 2 (bound π/2 ≈ 1.57,
slope 2 at zero). ``learnable=True`` makes log α and log β parameters of the parametrisation, trained
with the model. Registration uses :mod:`torch.nn.utils.parametrize`; the stored raw tensor is initialised
with φ⁻¹ so that the layer's effective weights are unchanged at registration.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._core.errors import fail

__all__ = ["WeightCompander", "weight_compander", "remove_weight_compander"]


class WeightCompander(nn.Module):
    """The parametrisation φ(w) = α·arctan(β·w) (see the module docstring for the choice of φ).

    Args:
        alpha: output scale α > 0; |φ(w)| < α·π/2.
        beta: input scale β > 0; φ'(0) = α·β (> 1 expands small weights).
        learnable: train α and β (through their logarithms) with the model.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 2.0, learnable: bool = False):
        super().__init__()
        for name, v in (("alpha", alpha), ("beta", beta)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise fail(name, "a finite number > 0", repr(v))
        log_a = torch.tensor(math.log(alpha))
        log_b = torch.tensor(math.log(beta))
        if learnable:
            self.log_alpha = nn.Parameter(log_a)
            self.log_beta = nn.Parameter(log_b)
        else:
            self.register_buffer("log_alpha", log_a)
            self.register_buffer("log_beta", log_b)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    @property
    def bound(self) -> float:
        """sup |φ(w)| = α·π/2."""
        return float(self.alpha.detach()) * math.pi / 2

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        a, b = self.alpha.to(w.dtype), self.beta.to(w.dtype)
        return a * torch.atan(b * w)

    def right_inverse(self, w_eff: torch.Tensor) -> torch.Tensor:
        """φ⁻¹(v) = tan(v/α)/β, defined for |v| < α·π/2; larger weights raise instead of being clipped."""
        a, b = self.alpha.to(w_eff.dtype), self.beta.to(w_eff.dtype)
        ratio = w_eff / a
        worst = float(ratio.abs().max()) if ratio.numel() else 0.0
        if not worst < math.pi / 2:
            raise fail(
                "weight",
                f"|w| < alpha*pi/2 = {self.bound:.4g} so that the compander can represent it",
                f"max |w| = {worst * float(a):.4g}; choose a larger alpha",
            )
        return torch.tan(ratio) / b


def weight_compander(module: nn.Module, name: str = "weight", *, alpha: float = 1.0, beta: float = 2.0,
                     learnable: bool = False) -> nn.Module:
    """Reparameterise ``module.<name>`` through the weight compander, in place; returns ``module``.

    The effective weight is unchanged at registration (the raw tensor is set to φ⁻¹(w)); from then on the
    optimiser updates the raw tensor ``module.parametrizations.<name>.original``. Use
    :func:`remove_weight_compander` to bake the effective weight back into a plain parameter.
    """
    if not isinstance(getattr(module, name, None), torch.Tensor):
        raise fail("name", f"the name of a tensor attribute of {type(module).__name__}", repr(name))
    parametrize.register_parametrization(module, name, WeightCompander(alpha, beta, learnable))
    return module


def remove_weight_compander(module: nn.Module, name: str = "weight") -> nn.Module:
    """Remove the parametrisation, keeping the current effective weight φ(w) as a plain parameter."""
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return module
