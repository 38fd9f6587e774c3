"""MixUp and manifold mixup: mix inputs (or hidden states) and their targets with one λ ~ Beta(α, α).

The mixed targets are class distributions, which every losskit classification loss accepts as
``target``; so ``cross_entropy(model(x_mix), t_mix)`` is the MixUp objective
``λ CE(y_i) + (1-λ) CE(y_j)`` (cross-entropy is linear in the target).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._core import fail

__all__ = ["MixupBatch", "mixup", "mix_hidden"]


@dataclass
class MixupBatch:
    """A mixed batch: ``inputs = lam * x + (1 - lam) * x[perm]``, ``target`` likewise (class distributions)."""

    inputs: torch.Tensor
    target: torch.Tensor
    lam: float
    perm: torch.Tensor


def _one_hot(y: torch.Tensor, num_classes: int | None, dtype: torch.dtype) -> torch.Tensor:
    if y.is_floating_point():
        return y.to(dtype)
    if num_classes is None:
        raise fail("num_classes", "the number of classes when target holds class indices", "None")
    return torch.nn.functional.one_hot(y, num_classes).to(dtype)


def mixup(x: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.2, num_classes: int | None = None,
          lam: float | None = None, generator: torch.Generator | None = None) -> MixupBatch:
    """MixUp (Zhang et al. 2018): ``x~ = λ x_i + (1-λ) x_j``, ``t~ = λ t_i + (1-λ) t_j``, λ ~ Beta(α, α).

    ``target`` is class indices (give ``num_classes``) or distributions. Pass ``lam`` to fix λ.
    The paper this regulariser view comes from: Guo, Mao, Zhang, "MixUp as Locally Linear
    Out-Of-Manifold Regularization", 2019, arXiv:1809.02499.
    """
    if x.shape[0] != target.shape[0]:
        raise fail("target", f"a batch of {x.shape[0]} (as x)", f"shape {tuple(target.shape)}")
    if alpha <= 0 and lam is None:
        raise fail("alpha", "a positive Beta concentration", repr(alpha))
    if lam is None:
        a = torch.tensor(float(alpha))
        lam = float(torch.distributions.Beta(a, a).sample()) if generator is None else float(
            _beta_with_generator(alpha, generator))
    if not 0.0 <= lam <= 1.0:
        raise fail("lam", "a value in [0, 1]", repr(lam))
    perm = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
    t = _one_hot(target, num_classes, x.dtype if x.is_floating_point() else torch.float32)
    return MixupBatch(lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm], lam, perm)


def _beta_with_generator(alpha: float, generator: torch.Generator) -> torch.Tensor:
    # Beta(a, a) = G1 / (G1 + G2) with Gamma(a) draws; torch's Gamma sampler takes no generator, so use
    # the inverse-CDF of SciPy on a uniform drawn from the generator (reproducible per generator).
    from scipy.stats import beta

    u = torch.rand((), generator=generator).item()
    return torch.tensor(beta.ppf(u, alpha, alpha))


def mix_hidden(h: torch.Tensor, batch: MixupBatch) -> torch.Tensor:
    """Manifold mixup: mix a hidden representation with the same λ and permutation as ``batch``.

    Run the network on the clean inputs up to a randomly chosen layer, apply ``mix_hidden`` there, and
    train on ``batch.target`` (Verma et al., "Manifold Mixup", 2019, arXiv:1806.05236).
    """
    if h.shape[0] != batch.perm.shape[0]:
        raise fail("h", f"a batch of {batch.perm.shape[0]}", f"shape {tuple(h.shape)}")
    return batch.lam * h + (1 - batch.lam) * h[batch.perm]
