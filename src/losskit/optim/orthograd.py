"""⊥Grad: keep only the gradient component orthogonal to the weights, for any optimiser.

For each parameter tensor w with gradient g (both flattened),

    g_perp = g - (<w, g> / (<w, w> + eps)) w,        g <- g_perp * ||g|| / (||g_perp|| + eps)

so the step cannot simply scale the weights up (the "naive loss minimisation" direction that drives
softmax collapse), while the gradient norm is kept.

Paper: Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", 2025,
arXiv:2501.04697.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

__all__ = ["orthogonalize_gradients", "OrthoGrad"]


@torch.no_grad()
def orthogonalize_gradients(params, eps: float = 1e-30) -> None:
    """Replace each ``p.grad`` by its component orthogonal to ``p``, rescaled to the original norm."""
    for p in params:
        if p.grad is None:
            continue
        w, g = p.reshape(-1), p.grad.reshape(-1)
        proj = torch.dot(w, g) / (torch.dot(w, w) + eps)
        g_perp = g - proj * w
        scale = torch.linalg.vector_norm(g) / (torch.linalg.vector_norm(g_perp) + eps)
        p.grad.copy_((g_perp * scale).view_as(p.grad))


class OrthoGrad:
    """Wrap any optimiser so that :func:`orthogonalize_gradients` runs before each ``step``.

    ``OrthoGrad(torch.optim.SGD(model.parameters(), lr=0.1))`` behaves like the inner optimiser
    (``zero_grad``, ``state_dict``, ``param_groups`` pass through).
    """

    def __init__(self, optimizer: Optimizer, eps: float = 1e-30):
        self.optimizer = optimizer
        self.eps = eps

    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        else:
            loss = None
        for group in self.optimizer.param_groups:
            orthogonalize_gradients(group["params"], self.eps)
        self.optimizer.step()
        return loss

    def __getattr__(self, name):
        return getattr(self.optimizer, name)
