"""Gradient-regularised Newton steps with exact or approximate Hessians, with the gradient-normalised step size.

One step, for the parameters ``x`` flattened into one vector, gradient ``g`` and a (possibly approximate)
curvature matrix ``H`` (the exact Hessian, a Gauss-Newton or Fisher matrix, any positive semi-definite
approximation), is Algorithm 1 of Semenov, Jaggi and Doikov (2025):

.. math:: x^+ = x - \\Big(H + \\frac{\\|g\\|}{\\gamma} I\\Big)^{-1} g

``gamma`` is the second-order step size (``||x+ - x|| <= gamma``); its ideal value is the *gradient-normalised
smoothness* ``gamma(x)``, the radius of the ball around ``x`` in which ``grad f(x + h) ~ g + H h`` holds to a
relative error ``||g|| ||h|| / gamma``. It is found by the paper's adaptive search: a trial step is accepted when
``f(x) - f(x+) >= ||grad f(x+)||^2 / (8 lambda)``, ``lambda = ||g|| / gamma``, and ``gamma`` doubles; otherwise
``gamma`` halves and the step is recomputed. One rule adapts to Hölder-continuous Hessians, quasi-self-concordance
and the Hessian approximation's error at once (with a Lipschitz Hessian ``gamma(x) >= sqrt(2 ||g|| / L)``, the
``sqrt(L ||g||)`` regulariser of Mishchenko 2021 and Doikov & Nesterov 2021).

``(H + lambda I) d = g`` is solved by conjugate gradients on Hessian-vector products (double backpropagation
through the closure's loss, or the user's ``hvp``) or densely (``solver='dense'``: ``n`` products build ``H``
and a direct solve; for small problems).
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
    """Gradient-regularised Newton with exact or approximate Hessians and the gradient-normalised step size
    (all parameters as one vector): ``x <- x - (H + ||g|| / gamma I)^{-1} g``, ``gamma`` by adaptive search.

    Args:
        params: the parameters (one or more groups; they are treated as one vector).
        gamma: the initial step size ``gamma_0`` (the authors' default 1); with ``adaptive=False`` it stays fixed.
        adaptive: the paper's search: accept when ``f(x) - f(x+) >= ||grad f(x+)||^2 / (8 lambda)`` and double
            ``gamma``, else halve it and retry (at most ``max_search`` trials; after them the last trial is taken,
            as in the authors' code). Each trial costs one loss and gradient evaluation.
        gamma_min: the floor applied when ``gamma`` doubles (authors: 1e-9); ``eps``: ``lambda = ||g|| /
            (gamma + eps)`` (authors: 1e-8).
        solver: ``'cg'`` (conjugate gradients on Hessian-vector products, ``cg_iters``, relative tolerance
            ``cg_tol``) or ``'dense'`` (builds ``H`` from ``n`` products).

    ``step(closure, hvp=None)``: ``closure()`` must return the loss computed from the parameters with autograd
    enabled and must not call ``backward`` (the optimiser differentiates it, twice for exact Hessian-vector
    products). ``hvp(v) -> H v`` on the flattened vector replaces the exact Hessian by an approximation (a
    Gauss-Newton or Fisher product, a stale Hessian, a diagonal); it is evaluated at the step's starting point.
    Returns the loss before the step. ``state['global']`` keeps ``gamma``, the last ``lambda`` and the number of
    search trials.

    Paper: Semenov, Jaggi, Doikov, "Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    ICLR 2026, arXiv:2506.13710 (authors' code: epfml/grad-norm-smooth, ``src/methods.py``,
    ``grad_norm_smooth``; tests/test_misc2_optim.py compares the iterates with a port of it).
    """

    def __init__(self, params, gamma: float = 1.0, *, adaptive: bool = True, solver: str = "cg",
                 cg_iters: int = 100, cg_tol: float = 1e-10, max_search: int = 40, gamma_min: float = 1e-9,
                 eps: float = 1e-8):
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if solver not in ("cg", "dense"):
            raise ValueError(f"solver must be 'cg' or 'dense', got {solver!r}")
        if cg_iters < 1 or max_search < 1 or not gamma_min >= 0 or not eps >= 0:
            raise ValueError("need cg_iters >= 1, max_search >= 1, gamma_min >= 0, eps >= 0")
        super().__init__(params, dict(gamma=gamma))
        self.adaptive, self.solver = bool(adaptive), solver
        self.cg_iters, self.cg_tol, self.max_search = cg_iters, cg_tol, max_search
        self.gamma_min, self.eps = gamma_min, eps
        self.state["global"] = {"gamma": float(gamma), "lambda": None, "trials": 0, "steps": 0}

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def step(self, closure: Callable[[], torch.Tensor], hvp: Callable[[Vector], Vector] | None = None):  # type: ignore[override]
        if closure is None:
            raise ValueError("GradRegNewton needs a closure returning the loss (without calling backward)")
        params = self._params()
        exact = hvp is None

        def linearise(create_graph: bool):
            with torch.enable_grad():
                loss = closure()
                grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            return loss, torch.cat([x.reshape(-1) for x in grads])

        def exact_product(g: Vector) -> Callable[[Vector], Vector]:
            def product(v: Vector) -> Vector:  # the exact Hessian-vector product by double backpropagation
                hv = torch.autograd.grad(g, params, grad_outputs=v.to(g.dtype), retain_graph=True)
                return torch.cat([x.reshape(-1) for x in hv]).detach()

            return product

        def place(vec: Vector) -> None:
            with torch.no_grad():
                offset = 0
                for p in params:
                    n = p.numel()
                    p.copy_(vec[offset:offset + n].view_as(p).to(p.dtype))
                    offset += n

        loss, g = linearise(create_graph=exact)
        product = exact_product(g) if exact else hvp
        gd = g.detach()
        st = self.state["global"]
        gnorm, f0 = float(gd.norm()), float(loss.detach())
        if gnorm == 0.0:
            st.update(trials=0, steps=st["steps"] + 1)
            st["lambda"] = 0.0
            return loss.detach()
        x0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()

        dense = None
        if self.solver == "dense":
            eye = torch.eye(gd.numel(), dtype=gd.dtype, device=gd.device)
            dense = torch.stack([product(eye[i]) for i in range(gd.numel())], 1)
            dense = (dense + dense.T) / 2

        gamma = st["gamma"]
        trials = 0
        for i in range(self.max_search + 1):
            if i == self.max_search:
                break  # the last trial's step is taken (authors' code)
            lam = gnorm / (gamma + self.eps)
            if dense is not None:
                eye = torch.eye(gd.numel(), dtype=gd.dtype, device=gd.device)
                d = torch.linalg.solve(dense + lam * eye, gd)
            else:
                d = _cg(lambda v, lam=lam, h=product: h(v) + lam * v, gd, self.cg_iters, self.cg_tol)
            trials += 1
            if not self.adaptive:
                break
            place(x0 - d)
            f_new, g_new = linearise(create_graph=False)
            place(x0)
            if f0 - float(f_new.detach()) >= float(g_new.detach().square().sum()) / (8 * lam):
                gamma = max(2.0 * gamma, self.gamma_min)
                break
            gamma *= 0.5
            if exact and dense is None:  # the double-backward graph saw the parameters we overwrote: rebuild it
                _, g = linearise(create_graph=True)
                product = exact_product(g)
        place(x0 - d)
        st.update(gamma=gamma, trials=trials, steps=st["steps"] + 1)
        st["lambda"] = lam
        return loss.detach()
