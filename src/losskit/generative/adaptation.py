"""Few-shot adaptation of a pretrained diffusion model to a new domain: the directional distribution
consistency loss of the phasic content fusing diffusion model (Hu et al. 2023)."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating

__all__ = ["directional_distribution_consistency_loss", "DirectionalDistributionConsistencyLoss",
           "ddc_direction", "phasic_weight"]

DDC_PAPER = Paper("Phasic Content Fusing Diffusion Model with Directional Distribution Consistency for Few-Shot "
                  "Model Adaption", 2023, "2309.03729",
                  "Hu, Zhang, Liu, Yi, Kou, Zhu, Chen, Wang, Wang, Ma")


def ddc_direction(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """The cross-domain direction ``w = mean(E(target set)) - mean(E(source set))`` of the image encoder's
    features (``(n_s, D)`` and ``(n_t, D)`` → ``(D,)``), computed once before adaptation (detached)."""
    for name, x in (("source_features", source_features), ("target_features", target_features)):
        check_floating(name, x)
        if x.dim() != 2 or x.shape[0] == 0:
            raise fail(name, "a non-empty feature matrix (n, D)", f"shape {tuple(x.shape)}")
    if source_features.shape[1] != target_features.shape[1]:
        raise fail("target_features", f"{source_features.shape[1]} features per row",
                   f"{target_features.shape[1]}")
    return (target_features.mean(0) - source_features.mean(0)).detach()


def phasic_weight(t: torch.Tensor, num_steps: int = 1000, base: float = 20.0) -> torch.Tensor:
    """The phasic weight ``base^(t / num_steps)`` of the authors' code for the directional and style terms at
    diffusion step ``t`` (large ``t``: content and style; the diffusion loss takes ``base^0.9 - weight``)."""
    return base ** (t.to(torch.get_default_dtype() if not t.is_floating_point() else t.dtype) / num_steps)


def _example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    n, d = 6, 5
    src = torch.randn(n, d, generator=gen, dtype=torch.float64)
    direction = 0.5 * torch.randn(d, generator=gen, dtype=torch.float64)
    feat = src + direction + 0.2 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"features": feat.to(dtype), "source_features": src.to(dtype), "direction": direction.to(dtype)},
                   grad=("features",), batched=("features", "source_features"))


def _bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    nan = i["direction"].detach().clone()
    nan[0] = float("nan")
    return [
        BadInput("source_features of another shape", ex.replace({"source_features": i["source_features"][:, :-1]}),
                 "source_features"),
        BadInput("direction of another width", ex.replace({"direction": i["direction"][:-1]}), "direction"),
        BadInput("direction per sample", ex.replace({"direction": i["features"].detach()}), "direction"),
        BadInput("NaN direction", ex.replace({"direction": nan}), "direction"),
        BadInput("features without a batch axis", ex.replace({"features": i["features"][0]}), "features"),
        BadInput("integer features", ex.replace({"features": i["features"].round().long()}), "features"),
    ]


FEATURES_DIRECTION = InputKind(
    "features + direction", "encoder features (N, D) of the adapted model's generated images, features (N, D) of "
    "the source images they were generated from, the domain direction (D,)", bad_inputs=_bad,
    extreme=scale_input("features"))


@objective(
    "directional_distribution_consistency_loss", seed=True, family="generative", input_kind=FEATURES_DIRECTION,
    example=_example, paper=DDC_PAPER, properties={"nonnegative"},
    formula="l_i = (1/D) ||E(x_hat_i) - (sg E(x_i) + w)||^2,  w = mean E(target set) - mean E(source set)",
)
def directional_distribution_consistency_loss(features: torch.Tensor, source_features: torch.Tensor,
                                              direction: torch.Tensor, *, sample_weight: torch.Tensor | None = None,
                                              reduction: str = "mean") -> torch.Tensor:
    """Directional distribution consistency (DDC): the features of an adapted image should be its source
    image's features moved by the fixed cross-domain direction, so the generated distribution keeps the
    source distribution's shape and is only translated (no collapse onto the few target shots).

    .. math:: \\ell_i = \\frac1D\\big\\|E(\\hat x_i) - \\big(\\mathrm{sg}\\,E(x_i) + w\\big)\\big\\|_2^2,\\qquad
              w = \\frac1{n_t}\\sum_j E(y_j) - \\frac1{n_s}\\sum_k E(x_k)

    ``features (N, D)`` are the image encoder's features (the paper: CLIP ViT-B/32) of the images the adapted
    model generates from the source images (differentiable), ``source_features (N, D)`` those of the source
    images (detached by the loss), ``direction (D,)`` the direction ``w`` between the target and source
    feature centroids (:func:`ddc_direction`). The per-sample value is the mean over the ``D`` features
    (``MSELoss(reduction='none').mean(-1)`` of the authors' code). The authors weight it by the phasic weight
    ``20^(t/1000)`` of the diffusion step ``t`` (:func:`phasic_weight`) and average over the batch,
    ``(weight * loss).mean()``: ``reduction='none'`` then that, or ``sample_weight`` with ``'sum'`` divided by
    ``N`` (``'mean'`` with ``sample_weight`` divides by the weights' sum, the conventions' weighted mean).

    Paper: Hu, Zhang, Liu, Yi, Kou, Zhu, Chen, Wang, Wang, Ma, "Phasic Content Fusing Diffusion Model with
    Directional Distribution Consistency for Few-Shot Model Adaption", ICCV 2023, arXiv:2309.03729.
    """
    check_floating("features", features)
    check_floating("source_features", source_features)
    check_floating("direction", direction)
    if features.dim() != 2:
        raise fail("features", "a feature matrix (N, D)", f"shape {tuple(features.shape)}")
    if source_features.shape != features.shape:
        raise fail("source_features", f"the shape of features {tuple(features.shape)}",
                   f"shape {tuple(source_features.shape)}")
    if tuple(direction.shape) != (features.shape[1],):
        raise fail("direction", f"one direction of shape ({features.shape[1]},)", f"shape {tuple(direction.shape)}")
    goal = (source_features + direction).detach()
    per = (features - goal).square().mean(-1)
    return finish(per, reduction, sample_weight=sample_weight)


DirectionalDistributionConsistencyLoss = directional_distribution_consistency_loss.Module
