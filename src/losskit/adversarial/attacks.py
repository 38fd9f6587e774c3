"""The PGD attack (projected gradient ascent on the loss inside an L-inf or L2 ball), the helper every
adversarial-training objective of this family is fed by.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018, arXiv:1706.06083.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["pgd"]


def _ce_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="sum")


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).reshape((-1,) + (1,) * (x.dim() - 1))


def pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
        loss_fn: Callable[..., torch.Tensor] | None = None, eps: float, alpha: float, steps: int,
        norm: str = "linf", random_start: bool = True, clamp: tuple[float, float] | None = (0.0, 1.0),
        eval_mode: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial inputs by projected gradient ascent: ``x_adv`` maximising ``loss_fn(model(x_adv), target)``
    with ``||x_adv - x|| <= eps`` (per sample) and, if ``clamp``, ``x_adv`` inside the data range.

    * ``norm='linf'``: ``x <- Proj(x + alpha sign(grad))``, the projection clipping to ``[x0 - eps, x0 + eps]``;
      ``norm='l2'``: ``x <- Proj(x + alpha grad / ||grad||)``, the projection rescaling ``delta`` to norm <= eps.
    * ``random_start``: start from a uniform point of the ball (L-inf: uniform per coordinate; L2: a
      uniform direction and radius ``eps U^(1/d)``), else from ``x``.
    * ``loss_fn(outputs, target)`` (``target`` omitted when ``None``; default: summed cross-entropy) must
      return a scalar; a sum over samples keeps each sample's step independent of the batch size.
    * ``eval_mode=True`` runs the attack in eval mode (batch-norm statistics and dropout frozen) and then
      puts every submodule back in the mode it had (``model.training`` per module).
    * The parameters' ``.grad`` are left untouched (the gradient is taken with respect to the input only)
      and the result is detached: no gradient leaks into the model.

    Returns the adversarial inputs, detached, of ``x``'s shape and dtype.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not eps >= 0 or not alpha >= 0 or steps < 0:
        raise ValueError(f"need eps >= 0, alpha >= 0, steps >= 0; got eps={eps}, alpha={alpha}, steps={steps}")
    loss_fn = loss_fn or _ce_sum
    modes = [(m, m.training) for m in model.modules()]
    if eval_mode:
        model.eval()
    x0 = x.detach()
    try:
        if random_start and eps > 0:
            if norm == "linf":
                u = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
                delta = (2 * u - 1) * eps
            else:
                d = x0[0].numel()
                z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
                r = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device) ** (1.0 / d)
                delta = z / _per_sample_norm(z) * (eps * r).reshape((-1,) + (1,) * (x0.dim() - 1))
            x_adv = x0 + delta
        else:
            x_adv = x0.clone()
        if clamp is not None:
            x_adv = x_adv.clamp(*clamp)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model(x_adv)
                loss = loss_fn(out) if target is None else loss_fn(out, target)
                (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if norm == "linf":
                    x_adv = x_adv + alpha * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x0 - eps), x0 + eps)
                else:
                    x_adv = x_adv + alpha * grad / _per_sample_norm(grad)
                    delta = x_adv - x0
                    delta = delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)
                    x_adv = x0 + delta
                if clamp is not None:
                    x_adv = x_adv.clamp(*clamp)
    finally:
        for m, mode in modes:
            m.training = mode
    return x_adv.detach()
