"""Target-based surrogates (SSO) and the normalised LR+GD step.

**SSO** (Lavington et al. 2023). The expensive loss is a function of the model's outputs ("targets")
``z = f(theta)``: ``L(theta) = l(f(theta))``. One outer step computes the targets ``z_t`` and the gradient
``g_t = grad_z l(z_t)`` once, then runs an inner optimiser for ``inner_steps`` steps on the surrogate

    s_t(theta) = <g_t, f(theta) - z_t> + ||f(theta) - z_t||^2 / (2 eta)
               = ||f(theta) - (z_t - eta g_t)||^2 / (2 eta) + const,

a projected gradient step in target space: the model is moved towards the target ``z_t - eta g_t``.
The inner steps need only ``f``, not ``l`` (whose gradient may be costly: a simulator, a policy
rollout). For least squares with a linear model, ``f(theta) = X theta``, the surrogate's minimiser is the
least-squares fit to ``z_t - eta g_t``: the tests compare with that closed form.

**Normalised LR+GD** (Tyurin 2024): gradient descent whose step is divided by the current loss,
``theta <- theta - (gamma / L(theta)) grad L(theta)``, proposed for logistic regression on separable data
(where the loss goes to zero and plain GD's steps vanish).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

__all__ = ["SSO", "NormalizedGD"]


class SSO(Optimizer):
    """Stochastic surrogate optimisation: an outer step on targets, inner steps on the surrogate.

    Args:
        params: the model's parameters.
        eta: the target-space step size (the surrogate's ``1 / (2 eta)`` proximity weight).
        inner_steps: the number of inner-optimiser steps per outer step (m in the paper).
        inner: a factory ``params -> torch.optim.Optimizer`` for the inner loop, created afresh at
            every outer step (default: SGD with ``inner_lr``; ``torch.optim.LBFGS`` works too: the inner
            step is given a closure).
        inner_lr: the default inner SGD's learning rate.

    ``step(outputs_fn, loss_fn)``: ``outputs_fn()`` computes the targets ``f(theta)`` from the current
    parameters (a model's forward on the batch); ``loss_fn(z)`` the loss of targets ``z``. It returns the
    loss at the start of the step. ``state['surrogate']`` holds the last surrogate value.

    Paper: Lavington, Vaswani, Babanezhad, Schmidt, Le Roux, "Target-based Surrogates for Stochastic
    Optimization", ICML 2023, arXiv:2302.02607.
    """

    def __init__(self, params, eta: float = 1.0, inner_steps: int = 10,
                 inner: Callable[..., Optimizer] | None = None, inner_lr: float = 0.1):
        if not eta > 0 or inner_steps < 1 or not inner_lr > 0:
            raise ValueError(f"invalid eta={eta}, inner_steps={inner_steps} or inner_lr={inner_lr}")
        super().__init__(params, dict(eta=eta))
        self.inner_steps = int(inner_steps)
        self.inner = inner or (lambda ps: torch.optim.SGD(ps, lr=inner_lr))

    def surrogate(self, z: torch.Tensor, z_t: torch.Tensor, g_t: torch.Tensor, eta: float) -> torch.Tensor:
        """``<g_t, z - z_t> + ||z - z_t||^2 / (2 eta)``."""
        d = z - z_t
        return (g_t * d).sum() + d.pow(2).sum() / (2 * eta)

    def step(self, outputs_fn: Callable[[], torch.Tensor] | None = None,
             loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if outputs_fn is None or loss_fn is None:
            raise TypeError("SSO.step(outputs_fn, loss_fn): the targets' function and the loss of targets")
        eta = self.param_groups[0]["eta"]
        with torch.enable_grad():
            z_t = outputs_fn().detach().requires_grad_(True)
            loss = loss_fn(z_t)
            (g_t,) = torch.autograd.grad(loss, z_t)
        z_t, g_t = z_t.detach(), g_t.detach()
        params = [p for group in self.param_groups for p in group["params"]]
        inner = self.inner(params)

        def closure():
            inner.zero_grad()
            with torch.enable_grad():
                s = self.surrogate(outputs_fn(), z_t, g_t, eta)
                s.backward()
            return s

        for _ in range(self.inner_steps):
            s = inner.step(closure)
        self.state["surrogate"] = None if s is None else float(s.detach())
        return loss.detach()


class NormalizedGD(Optimizer):
    """Normalised LR+GD: ``theta <- theta - (lr / L(theta)) grad L(theta)``.

    ``step(closure)``: the closure returns the loss (after ``zero_grad`` and ``backward``, as for LBFGS);
    a loss <= 0 takes no step (a separated data set under the logistic loss never reaches 0 exactly).

    Paper: Tyurin, "From Logistic Regression to the Perceptron Algorithm: Exploring Gradient Descent
    with Large Step Sizes", 2024, arXiv:2412.08424.
    """

    def __init__(self, params, lr: float = 1.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise TypeError("NormalizedGD.step(closure): the step is scaled by the loss the closure returns")
        with torch.enable_grad():
            loss = closure()
        value = float(loss)
        if value <= 0:
            return loss
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] / value)
        return loss
