"""Learning from aggregate responses: bag-level, instance-level and interpolating losses (squared loss)."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import UNIT
from .._core.validate import check_floating, require
from ._inputs import BAGS, bags_example

__all__ = ["bag_loss", "BagLoss", "instance_loss", "InstanceLoss", "interpolating_loss", "InterpolatingLoss",
           "aggregate_response_loss"]

AGGREGATE_PAPER = Paper("Learning from Aggregate responses: Instance Level versus Bag Level Loss Functions", 2024,
                        "2401.11081", "Javanmard, Chen, Mirrokni, Badanidiyuru, Fu")


def aggregate_response_loss(predictions: torch.Tensor, bag_response: torch.Tensor, mask: torch.Tensor | None = None,
                            *, rho: float) -> torch.Tensor:
    """Per-bag ``(y_B - f_bar_B)^2 + rho * mean_{i in B} (f_i - f_bar_B)^2``: the one formula behind all three.

    ``rho = 0`` is the bag-level loss, ``rho = 1`` the instance-level loss
    ``mean_{i in B} (y_B - f_i)^2`` (the bias-variance identity), ``rho in (0, 1)`` interpolates.
    A squared error that overflows the dtype (e.g. float32 predictions of 1e30) raises
    :class:`LossInputError` naming ``predictions`` rather than returning ``inf``.
    """
    check_floating("predictions", predictions)
    check_floating("bag_response", bag_response)
    if predictions.dim() != 2:
        raise fail("predictions", "shape (B, k): bags of instance predictions", f"shape {tuple(predictions.shape)}")
    b = predictions.shape[0]
    if tuple(bag_response.shape) != (b,):
        raise fail("bag_response", f"one response per bag, shape ({b},)", f"shape {tuple(bag_response.shape)}")
    if mask is None:
        mask = torch.ones_like(predictions, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor) or mask.shape != predictions.shape:
        raise fail("mask", f"a bool tensor of shape {tuple(predictions.shape)}",
                   f"shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__)
    mask = mask.bool()
    size = mask.sum(-1)
    require("mask", mask, lambda: (size == 0).any(), "at least one instance in every bag",
            lambda: f"an empty bag at position {int((size == 0).nonzero()[0])}")
    if not 0 <= rho <= 1:
        raise fail("rho", "a value in [0, 1]", repr(rho))
    f = torch.where(mask, predictions, torch.zeros_like(predictions))
    k = size.clamp(min=1).to(f.dtype)
    fbar = f.sum(-1) / k
    per = (bag_response.to(f.dtype) - fbar) ** 2
    if rho:  # a Python number: rho = 0 adds nothing (and no 0 * inf)
        within = torch.where(mask, (f - fbar.unsqueeze(-1)) ** 2, torch.zeros_like(f)).sum(-1) / k
        per = per + rho * within
    require("predictions", per, lambda: (~torch.isfinite(per)).any(),
            f"predictions and bag responses whose squared errors fit in {per.dtype}",
            lambda: f"an overflowing squared error in bag {int((~torch.isfinite(per)).nonzero()[0])}")
    return per


_DOC_TAIL = """

    ``predictions`` ``(B, k)``: the model's outputs ``f(x_i)`` for the ``k`` instances of each bag;
    ``mask`` ``(B, k)`` marks real instances when bags have different sizes; ``bag_response`` ``(B,)``
    the bag's aggregate (mean) response. Per-bag losses; ``'mean'`` averages over bags. Squared loss
    (the paper's analysed case). Identity (tested): ``instance = bag + within-bag variance``, i.e.
    ``k * instance = k * bag + sum_i (f_i - f_bar)^2``.

    Paper: Javanmard, Chen, Mirrokni, Badanidiyuru, Fu, "Learning from Aggregate responses: Instance
    Level versus Bag Level Loss Functions", 2024, arXiv:2401.11081 (ICLR 2024).
    """


def _register(name, rho_fixed, module_name, summary, formula, seed=False):
    def fn_bag(predictions: torch.Tensor, bag_response: torch.Tensor, mask: torch.Tensor | None = None, *,
               sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        per = aggregate_response_loss(predictions, bag_response, mask, rho=rho_fixed)
        return finish(per, reduction, sample_weight=sample_weight)

    fn_bag.__name__ = fn_bag.__qualname__ = name
    fn_bag.__doc__ = summary + _DOC_TAIL
    return objective(name, family="classification", input_kind=BAGS, example=bags_example, paper=AGGREGATE_PAPER,
                     properties={"nonnegative", "convex"}, formula=formula, module_name=module_name, seed=seed)(fn_bag)


bag_loss = _register(
    "bag_loss", 0.0, "BagLoss",
    "Bag-level loss: the squared error between the bag response and the mean prediction of the bag.\n\n"
    "    .. math:: \\ell_B = (\\bar y_B - \\bar f_B)^2,\\qquad \\bar f_B = \\tfrac1k \\sum_{i \\in B} f(x_i)",
    "L_B = (y_B - mean_{i in B} f_i)^2", seed=True)
instance_loss = _register(
    "instance_loss", 1.0, "InstanceLoss",
    "Instance-level loss: every instance is regressed on its bag's response.\n\n"
    "    .. math:: \\ell_B = \\tfrac1k \\sum_{i \\in B} (\\bar y_B - f(x_i))^2",
    "L_B = mean_{i in B} (y_B - f_i)^2 = bag + within-bag variance", seed=True)


@objective("interpolating_loss", seed=True, family="classification", input_kind=BAGS, example=bags_example,
           paper=AGGREGATE_PAPER, properties={"nonnegative", "convex"}, module_name="InterpolatingLoss",
           formula="L_B = (y_B - f_bar_B)^2 + rho mean_{i in B} (f_i - f_bar_B)^2", domains={"rho": UNIT})
def interpolating_loss(predictions: torch.Tensor, bag_response: torch.Tensor, mask: torch.Tensor | None = None, *,
                       rho: float = 0.5, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Interpolating loss: the bag-level loss plus ``rho`` times the within-bag variance of the predictions.

    .. math:: \\ell_B = (\\bar y_B - \\bar f_B)^2 + \\rho\\, \\tfrac1k \\sum_{i \\in B} (f(x_i) - \\bar f_B)^2
              = (1 - \\rho)\\, \\ell^{bag}_B + \\rho\\, \\ell^{inst}_B

    ``rho = 0``: :func:`bag_loss`; ``rho = 1``: :func:`instance_loss`; the paper's interpolating
    estimator tunes ``rho`` in ``[0, 1]`` to trade the bag loss's unbiasedness for the instance loss's
    lower variance (default 0.5; ``rho`` in ``[0, 1]``).

    ``predictions`` ``(B, k)``, ``mask`` ``(B, k)`` for ragged bags, ``bag_response`` ``(B,)``.

    Paper: Javanmard, Chen, Mirrokni, Badanidiyuru, Fu, "Learning from Aggregate responses: Instance
    Level versus Bag Level Loss Functions", 2024, arXiv:2401.11081 (ICLR 2024).
    """
    per = aggregate_response_loss(predictions, bag_response, mask, rho=rho)
    return finish(per, reduction, sample_weight=sample_weight)


BagLoss = bag_loss.Module
InstanceLoss = instance_loss.Module
InterpolatingLoss = interpolating_loss.Module
