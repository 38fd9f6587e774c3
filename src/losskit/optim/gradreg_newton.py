"""Gradient-regularised Newton steps with exact or approximate Hessians.

One step, for the parameters ``x`` flattened into one vector, gradient ``g`` and a (possibly approximate)
curvature operator ``H`` (the exact Hessian, a Gauss-Newton or Fisher matrix, any positive semi-definite
approximation):

.. math:: x^+ = x - (H + \\lambda I)^{-1} g,\\qquad \\lambda = L^{1/(1+\\nu)}\\, \\|g\\|^{\\nu/(1+\\nu)}

The regulariser scales with the gradient norm: large far from a solution (a damped, gradient-like step),
vanishing near it (Newton's local rate). ``nu = 1`` (Lipschitz Hessian) gives ``lambda = sqrt(L ||g||)``, the
gradient-regularised Newton method of Mishchenko (2021) and Doikov & Nesterov (2021); ``nu`` in ``[0, 1]``
covers Hölder-continuous Hessians. The gradient-normalised smoothness analysis of Semenov, Jaggi and Doikov
(2025) gives these steps global rates with approximate Hessians as long as the approximation is good
relative to the gradient in a ball of radius ``||g|| / lambda`` (their gradient-normalised smoothness), which
is what the adaptive search below probes: ``L`` is doubled until the step decreases ``f`` by at least
``(1/4) <g, d>`` and halved after each accepted step (the usual universal-method line search).

``(H + lambda I) d = g`` is solved by conjugate gradients on Hessian-vector products (double backpropagation
through the closure's loss, or the user's ``hvp``), or densely (``solver='dense'``: ``n`` products build
``H``; for small problems and tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

__all__ = ["GradRegNewton"]

Vector = torch.Tensor


def _cg(apply: Callable[[Vector], Vector], b: Vector, iters: int, tol: float) -> Vector:
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.dot(r)
    stop = (tol * b.norm()) ** 2
    for _ in range(iters):
        if rs <= stop:
            break
        ap = apply(p)
        curv = p.dot(ap)
        if curv <= 0:  # not positive definite along p: stop with what we have (a descent direction)
            break
        a = rs / curv
        x = x + a * p
        r = r - a * ap
        rs_new = r.dot(r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


class GradRegNewton(Optimizer):
    """Gradient-regularised Newton with exact or approximate Hessians (all parameters as one vector).

    Args:
        params: the parameters (one or more groups; they are treated as one vector).
        L: the initial regularisation constant (a Hölder constant of the Hessian or its approximation); with
            ``adaptive=True`` it is only the starting guess.
        holder: ``nu`` in ``[0, 1]``; ``lambda = L^(1/(1+nu)) ||g||^(nu/(1+nu))``. 1 (default): Lipschitz
            Hessian, ``lambda = sqrt(L ||g||)``.
        adaptive: double ``L`` until ``f(x+) <= f(x) - <g, d>/4`` (at most ``max_backtracks`` times), halve it
            after every accepted step.
        solver: ``'cg'`` (conjugate gradients on Hessian-vector products, ``cg_iters``, relative
            tolerance ``cg_tol``) or ``'dense'`` (builds ``H`` from ``n`` products).
        min_lambda: a floor on ``lambda`` (keeps ``H + lambda I`` invertible for a singular approximation).

    ``step(closure, hvp=None)``: ``closure()`` must return the loss computed from the parameters with autograd
    enabled and must not call ``backward`` (the optimiser differentiates it, twice for exact Hessian-vector
    products). ``hvp(v) -> H v`` on the flattened vector replaces the exact Hessian by an approximation (a
    Gauss-Newton or Fisher product, a stale Hessian, a diagonal). Returns the loss before the step. The state
    keeps ``L``, the last ``lambda`` and the number of backtracks.

    Paper: Semenov, Jaggi, Doikov, "Gradient-Normalized Smoothness for Optimization with Approximate
    Hessians", 2025 (arXiv, June 2025); the step is the gradient-regularised Newton method of Mishchenko,
    "Regularized Newton Method with Global O(1/k^2) Convergence", 2021, arXiv:2112.02089, and Doikov &
    Nesterov, "Gradient Regularization of Newton Method with Bregman Distances", 2021, arXiv:2112.02952.
    Our reading: the paper's text was not available to us; the step and line search follow the gradient-
    regularised Newton method it analyses, checked in tests/test_misc2_optim.py against exact solves and rates.
    """

    def __init__(self, params, L: float = 1.0, *, holder: float = 1.0, adaptive: bool = True, solver: str = "cg",
                 cg_iters: int = 100, cg_tol: float = 1e-10, max_backtracks: int = 30, min_lambda: float = 0.0):
        if not L > 0:
            raise ValueError(f"L must be > 0, got {L}")
        if not 0.0 <= holder <= 1.0:
            raise ValueError(f"holder must be in [0, 1], got {holder}")
        if solver not in ("cg", "dense"):
            raise ValueError(f"solver must be 'cg' or 'dense', got {solver!r}")
        if cg_iters < 1 or max_backtracks < 0 or not min_lambda >= 0:
            raise ValueError("need cg_iters >= 1, max_backtracks >= 0, min_lambda >= 0")
        super().__init__(params, dict(L=L))
        self.holder, self.adaptive, self.solver = float(holder), bool(adaptive), solver
        self.cg_iters, self.cg_tol, self.max_backtracks, self.min_lambda = cg_iters, cg_tol, max_backtracks, min_lambda
        self.state["global"] = {"L": float(L), "lambda": None, "backtracks": 0, "steps": 0}

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _lambda(self, L: float, gnorm: float) -> float:
        nu = self.holder
        return max(L ** (1.0 / (1.0 + nu)) * gnorm ** (nu / (1.0 + nu)), self.min_lambda)

    def step(self, closure: Callable[[], torch.Tensor], hvp: Callable[[Vector], Vector] | None = None):  # type: ignore[override]
        if closure is None:
            raise ValueError("GradRegNewton needs a closure returning the loss (without calling backward)")
        params = self._params()
        exact = hvp is None

        def linearise():
            with torch.enable_grad():
                loss = closure()
                grads = torch.autograd.grad(loss, params, create_graph=exact)
            g = torch.cat([x.reshape(-1) for x in grads])
            if not exact:
                return loss, g, hvp

            def exact_hvp(v: Vector) -> Vector:  # the exact product by double backpropagation
                hv = torch.autograd.grad(g, params, grad_outputs=v.to(g.dtype), retain_graph=True)
                return torch.cat([x.reshape(-1) for x in hv]).detach()

            return loss, g, exact_hvp

        loss, g, product = linearise()
        gd = g.detach()

        dense = None
        if self.solver == "dense":
            eye = torch.eye(gd.numel(), dtype=gd.dtype, device=gd.device)
            dense = torch.stack([product(eye[i]) for i in range(gd.numel())], 1)
            dense = (dense + dense.T) / 2

        st = self.state["global"]
        L, gnorm, f0 = st["L"], float(gd.norm()), float(loss.detach())
        x0 = [p.detach().clone() for p in params]
        tries = 0
        while True:
            lam = self._lambda(L, gnorm)
            if dense is not None:
                eye = torch.eye(gd.numel(), dtype=gd.dtype, device=gd.device)
                d = torch.linalg.solve(dense + lam * eye, gd)
            else:
                d = _cg(lambda v, lam=lam, h=product: h(v) + lam * v, gd, self.cg_iters, self.cg_tol)
            with torch.no_grad():
                offset = 0
                for p, p0 in zip(params, x0):
                    n = p.numel()
                    p.copy_(p0 - d[offset:offset + n].view_as(p).to(p.dtype))
                    offset += n
            if not self.adaptive or tries >= self.max_backtracks or gnorm == 0.0:
                break
            with torch.no_grad():
                f1 = float(closure())
            if f1 <= f0 - 0.25 * float(gd.dot(d)):
                break
            L, tries = 2 * L, tries + 1
            with torch.no_grad():
                for p, p0 in zip(params, x0):
                    p.copy_(p0)
            if exact and dense is None:  # the double-backward graph saw the parameters we overwrote: rebuild it
                _, g, product = linearise()
        st.update(L=L / 2 if self.adaptive else L, backtracks=tries, steps=st["steps"] + 1)
        st["lambda"] = lam
        return loss.detach()
