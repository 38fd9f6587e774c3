"""Quantisation-friendly weight regularisation: EQ-Net's weight distribution regularisation (WDR).

A weight tensor is easier to quantise to many bit-widths at once (an elastic, one-shot quantisation
supernet) when its distribution is symmetric and has light tails. WDR pulls each layer's weight skewness
towards 0 and its kurtosis towards 1.8 (the kurtosis of a uniform distribution, the shape a uniform
quantiser's grid fits best):

    R(w) = kurtosis_weight (Kurt(w) - 1.8)² + skewness_weight (Skew(w) - 0)²,
    Skew(w) = mean(((w - mean w) / std w)^3),  Kurt(w) = mean(((w - mean w) / std w)^4),

with ``std`` the unbiased (Bessel-corrected) standard deviation, as in the authors' code, and the
network's term the mean of ``R`` over its quantised layers. Defaults: the authors' ImageNet setting
(``kurt_rate`` 0.015, ``skew_rate`` 1.0; ``configs/train-supernet-imagenet.yaml``).

Paper: Xu, Han, Tian, Yang, Zhang, "EQ-Net: Elastic Quantization Neural Networks", ICCV 2023, arXiv:2308.07650.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, REAL, Real
from .._core.validate import check_floating

__all__ = ["weight_distribution_penalty", "WeightDistributionPenalty", "model_weight_distribution_penalty"]

EQNET = Paper("EQ-Net: Elastic Quantization Neural Networks", 2023, "2308.07650", "Xu, Han, Tian, Yang, Zhang")


def _example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    w = torch.randn(6, 5, 3, generator=gen, dtype=torch.float64).sinh()  # heavy-ish tails, some skew
    return Example({"weight": w.to(dtype)}, grad=("weight",))


def _bad(ex: Example) -> list[BadInput]:
    w = ex.inputs["weight"]
    return [BadInput("a single weight", ex.replace({"weight": w.reshape(-1)[:1]}), "weight"),
            BadInput("integer weights", ex.replace({"weight": w.round().long()}), "weight"),
            BadInput("+inf weight", ex.replace({"weight": w.clone().fill_(float("inf"))}), "weight")]


WEIGHT = InputKind("weight", "one layer's weight tensor, any shape, at least 2 entries", bad_inputs=_bad,
                   extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()))


@objective("weight_distribution_penalty", seed=True, family="regularizer", input_kind=WEIGHT, example=_example,
           paper=EQNET, per_sample=False, batch_scalar=True, sample_weight=False, allow_neg_inf=(),
           properties={"nonnegative"}, module_name="WeightDistributionPenalty",
           formula="R(w) = kurtosis_weight (Kurt(w) - kurtosis_target)^2 + skewness_weight (Skew(w) - skewness_target)^2, "
                   "standardised moments with the unbiased std",
           domains={"kurtosis_target": Real(0.0, None), "skewness_target": REAL,
                    "kurtosis_weight": NONNEGATIVE, "skewness_weight": NONNEGATIVE})
def weight_distribution_penalty(weight: torch.Tensor, *, kurtosis_target: float = 1.8, skewness_target: float = 0.0,
                                kurtosis_weight: float = 0.015, skewness_weight: float = 1.0,
                                reduction: str = "mean") -> torch.Tensor:
    """EQ-Net's weight distribution regularisation (WDR) of one layer's weights.

    .. math:: R(w) = \\lambda_k\\big(\\mathrm{Kurt}(w) - 1.8\\big)^2 + \\lambda_s\\big(\\mathrm{Skew}(w) - 0\\big)^2

    Standardised third and fourth moments over all entries of ``weight`` (any shape), with the unbiased
    standard deviation (``torch.std``), as the authors' ``SkewnessLossCalc``/``KurtosisLossCalc``.
    ``kurtosis_target`` 1.8 is the kurtosis of a uniform distribution; ``kurtosis_weight`` (their
    ``kurt_rate``, 0.015) and ``skewness_weight`` (``skew_rate``, 1.0) are the ImageNet setting. A network's
    term is the mean over its quantised layers: :func:`model_weight_distribution_penalty`. Constant
    weights (std 0) have no defined shape and give NaN. One value per tensor: ``reduction`` has no effect.

    Paper: Xu, Han, Tian, Yang, Zhang, "EQ-Net: Elastic Quantization Neural Networks", ICCV 2023,
    arXiv:2308.07650.
    """
    check_floating("weight", weight)
    if weight.numel() < 2:
        raise fail("weight", "a tensor with at least 2 entries", f"shape {tuple(weight.shape)}")
    w = weight.reshape(-1)
    scale = w.detach().abs().amax().clamp_min(torch.finfo(w.dtype).tiny)  # moments are scale-free
    w = w / scale
    z = (w - w.mean()) / w.std()
    skew = z.pow(3).mean()
    kurt = z.pow(4).mean()
    total = kurtosis_weight * (kurt - kurtosis_target) ** 2 + skewness_weight * (skew - skewness_target) ** 2
    return finish(total, reduction)


WeightDistributionPenalty = weight_distribution_penalty.Module


def model_weight_distribution_penalty(model: nn.Module | Iterable[torch.Tensor], *, skip_first: bool = True,
                                      **options) -> torch.Tensor:
    """The mean of :func:`weight_distribution_penalty` over a network's layers.

    ``model``: a module (its ``nn.Conv*`` and ``nn.Linear`` weights, in ``modules()`` order) or an
    iterable of weight tensors. ``skip_first=True`` leaves out the first layer, as the authors' code does
    (the stem stays at full precision); ``options`` go to :func:`weight_distribution_penalty`.
    """
    if isinstance(model, nn.Module):
        weights = [m.weight for m in model.modules()
                   if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight is not None]
    else:
        weights = list(model)
    if skip_first:
        weights = weights[1:]
    if not weights:
        raise fail("model", "at least one weight tensor (after skip_first)", "none")
    terms = [weight_distribution_penalty(w, **options) for w in weights]
    return torch.stack([t.to(terms[0].dtype) for t in terms]).mean()
