"""AdaMixUp: MixUp with a learned mixing policy and an intrusion discriminator against manifold intrusion.

Guo, Mao and Zhang read MixUp as out-of-manifold regularisation and identify *manifold intrusion*: a mixed
input that lies on the data manifold but carries a mixed label conflicts with the real label there. AdaMixUp
learns the mixing policy per pair: a policy-region generator outputs ``(alpha, Delta)`` and the mixing ratio
is drawn in ``[alpha, alpha + Delta]``; an intrusion discriminator ``phi`` is trained to tell original inputs
(positives) from mixed ones (negatives). Everything is trained jointly on

.. math:: \\mathcal L = \\underbrace{\\mathrm{CE}\\big(f(\\{\\tilde x, x\\}), \\{\\tilde t, t\\}\\big)}_{\\text{mixed +
          original inputs}} + \\underbrace{\\mathrm{BCE}\\big(\\phi(x) \\to 1,\\ \\phi(\\tilde x) \\to 0\\big)}_{
          \\text{intrusion loss}}

so the generator, whose ratios reach both terms through ``x~``, is pushed to mixes the discriminator can tell
from data (off the manifold). :func:`ada_mixup` builds the mixed batch from the generator's output (the
reparameterised ratio keeps the generator differentiable); :func:`intrusion_loss` is the discriminator's term;
the classification term is any losskit classification loss on the mixed targets (e.g. ``cross_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._core import fail, finish
from .._core.domains import Choice, check_option
from .._core.validate import check_floating

__all__ = ["AdaMixupBatch", "ada_mixup", "mixing_policy", "intrusion_loss"]


@dataclass
class AdaMixupBatch:
    """A mixed batch: ``inputs = lam * x1 + (1 - lam) * x2`` and ``target`` likewise, ``lam`` per pair
    (shape (N,), differentiable with respect to the policy logits), ``alpha``, ``delta`` the policy region."""

    inputs: torch.Tensor
    target: torch.Tensor
    lam: torch.Tensor
    alpha: torch.Tensor
    delta: torch.Tensor


def mixing_policy(policy_logits: torch.Tensor, *, uniform: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam, alpha, delta)`` from the policy generator's 3 logits per pair: ``(alpha, delta, _) =
    softmax(policy_logits)`` (the third entry is discarded, so ``alpha + delta <= 1``) and
    ``lam = alpha + u delta``, ``u ~ U(0, 1)`` (the reparameterisation trick of the authors' code; pass
    ``uniform`` (N,) to fix ``u``)."""
    check_floating("policy_logits", policy_logits)
    if policy_logits.dim() != 2 or policy_logits.shape[1] != 3:
        raise fail("policy_logits", "three logits per pair, shape (N, 3)", f"shape {tuple(policy_logits.shape)}")
    p = torch.softmax(policy_logits, dim=1)
    alpha, delta = p[:, 0], p[:, 1]
    if uniform is None:
        uniform = torch.rand(policy_logits.shape[0], generator=generator, dtype=p.dtype, device="cpu").to(p.device)
    elif uniform.shape != alpha.shape:
        raise fail("uniform", f"one draw per pair, shape ({alpha.shape[0]},)", f"shape {tuple(uniform.shape)}")
    return alpha + uniform.to(p) * delta, alpha, delta


def _as_dist(t: torch.Tensor, num_classes: int | None, dtype: torch.dtype) -> torch.Tensor:
    if t.is_floating_point():
        return t.to(dtype)
    if num_classes is None:
        raise fail("num_classes", "the number of classes when the targets are class indices", "None")
    return F.one_hot(t, num_classes).to(dtype)


def ada_mixup(x1: torch.Tensor, x2: torch.Tensor, target1: torch.Tensor, target2: torch.Tensor,
              policy_logits: torch.Tensor, *, num_classes: int | None = None, uniform: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> AdaMixupBatch:
    """Mix pairs ``(x1_i, x2_i)`` with the ratio the policy generator chose for that pair.

    ``policy_logits (N, 3)``: the generator's output for the pairs (the authors feed it a random combination
    of the two inputs and a copy of the classifier's trunk). Targets are class indices (give
    ``num_classes``) or distributions. Returns :class:`AdaMixupBatch`; ``lam`` carries the gradient back to
    the generator, and the targets are mixed with the same ``lam``.

    Paper: Guo, Mao, Zhang, "MixUp as Locally Linear Out-Of-Manifold Regularization", AAAI 2019,
    arXiv:1809.02499.
    """
    check_floating("x1", x1)
    if x2.shape != x1.shape:
        raise fail("x2", f"shape {tuple(x1.shape)} (as x1)", f"shape {tuple(x2.shape)}")
    n = x1.shape[0]
    for name, t in (("target1", target1), ("target2", target2)):
        if t.shape[:1] != (n,):
            raise fail(name, f"a batch of {n} (as x1)", f"shape {tuple(t.shape)}")
    if policy_logits.shape[:1] != (n,):
        raise fail("policy_logits", f"one row per pair ({n})", f"shape {tuple(policy_logits.shape)}")
    lam, alpha, delta = mixing_policy(policy_logits, uniform=uniform, generator=generator)
    lx = lam.to(x1.dtype).reshape((n,) + (1,) * (x1.dim() - 1))
    t1 = _as_dist(target1, num_classes, lam.dtype)
    t2 = _as_dist(target2, num_classes, lam.dtype)
    if t1.shape != t2.shape:
        raise fail("target2", f"shape {tuple(t1.shape)} (as target1)", f"shape {tuple(t2.shape)}")
    lt = lam.reshape((n,) + (1,) * (t1.dim() - 1))
    return AdaMixupBatch(lx * x1 + (1 - lx) * x2, lt * t1 + (1 - lt) * t2, lam, alpha, delta)


def intrusion_loss(original_logits: torch.Tensor, mixed_logits: torch.Tensor, *,
                   reduction: str = "mean") -> torch.Tensor:
    """The intrusion discriminator's loss: original inputs are class 1, mixed inputs class 0.

    .. math:: \\mathcal L_{intr} = \\frac{1}{N_o + N_m}\\Big(\\sum_{x \\in \\text{orig}} -\\log\\sigma(\\phi(x))
              + \\sum_{\\tilde x \\in \\text{mixed}} -\\log\\big(1 - \\sigma(\\phi(\\tilde x))\\big)\\Big)

    ``original_logits (N_o,)`` and ``mixed_logits (N_m,)``: the discriminator's logit of "original". A
    two-logit head ``(N, 2)`` (the authors' softmax over {mixed, original}) is accepted too and read as
    ``z_1 - z_0`` (the same loss). ``'mean'`` averages over the ``N_o + N_m`` examples (the authors'
    ``reduce_mean`` over the binary set), ``'sum'`` sums, ``'none'`` returns the ``N_o + N_m`` per-example
    losses (originals first).

    Paper: Guo, Mao, Zhang, "MixUp as Locally Linear Out-Of-Manifold Regularization", AAAI 2019,
    arXiv:1809.02499.
    """
    check_option("reduction", reduction, Choice("mean", "sum", "none"))

    def logit(name: str, z: torch.Tensor) -> torch.Tensor:
        check_floating(name, z)
        if z.dim() == 2 and z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        if z.dim() != 1:
            raise fail(name, "one logit per example (N,) or two-logit rows (N, 2)", f"shape {tuple(z.shape)}")
        return z

    zo, zm = logit("original_logits", original_logits), logit("mixed_logits", mixed_logits)
    per = torch.cat([-F.logsigmoid(zo), -F.logsigmoid(-zm)])
    return finish(per, reduction)
