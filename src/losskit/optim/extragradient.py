"""The extragradient step (mirror prox with Euclidean geometry), for games such as EGPO's preference game."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["extragradient_step"]


def extragradient_step(params: Iterable[torch.Tensor], loss_fn: Callable[[], torch.Tensor], lr: float) -> None:
    """One extragradient (mirror-prox with Euclidean geometry) step, in place.

    ``theta_half = theta - lr * grad L(theta)``; ``theta <- theta - lr * grad L(theta_half)``. ``loss_fn()``
    recomputes the loss at the current parameters (for EGPO, :func:`losskit.egpo`: resample or rescore at the
    half step). For a bilinear game this converges where plain gradient descent-ascent cycles.
    """
    params = [p for p in params]
    start = [p.detach().clone() for p in params]
    grads = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)
    grads = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, s, g in zip(params, start, grads):
            p.copy_(s - lr * g)
