"""Lion and Lion-K: sign-momentum optimisers and their generalisation to any convex K.

Lion (Chen et al. 2023) updates, for gradient g and momentum m,

    c = beta1 * m + (1 - beta1) * g
    theta <- theta - lr * (sign(c) + weight_decay * theta)
    m <- beta2 * m + (1 - beta2) * g

Lion-K (Chen, Liu, Liang, Liu 2023) replaces sign(c) by the gradient of a convex function K evaluated
at c. With decoupled weight decay lambda, the iterates solve the constrained / composite problem
min_x f(x) + (1/lambda) K*(lambda x); for K = ||.||_1 (Lion) that is the box ||x||_inf <= 1/lambda.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

__all__ = ["Lion", "LionK", "K_GRADIENTS", "huber_grad", "lp_grad"]


def _sign(c: torch.Tensor) -> torch.Tensor:
    return torch.sign(c)


def _l2(c: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(c)
    return torch.where(n > 0, c / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(c))


def lp_grad(p: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gradient of K(x) = ||x||_p (p > 1): sign(x) |x|^(p-1) / ||x||_p^(p-1), 0 at x = 0."""
    if p <= 1:
        raise ValueError(f"p: expected p > 1 (use 'l1' for p = 1), got {p}")

    def grad(c: torch.Tensor) -> torch.Tensor:
        n = torch.linalg.vector_norm(c, ord=p)
        safe = torch.where(n > 0, n, torch.ones_like(n))
        return torch.where(n > 0, torch.sign(c) * (c.abs() / safe).pow(p - 1), torch.zeros_like(c))

    return grad


def huber_grad(delta: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gradient of the elementwise Huber K (quadratic within delta, linear outside), scaled so that
    it saturates at +-1 like sign: clamp(x / delta, -1, 1). delta -> 0 recovers Lion."""
    if delta <= 0:
        raise ValueError(f"delta: expected a positive number, got {delta}")
    return lambda c: torch.clamp(c / delta, -1.0, 1.0)


#: The named K's of Lion-K: 'l1' (Lion), 'l2', 'huber'. ``('lp', p)`` and callables are also accepted.
K_GRADIENTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"l1": _sign, "l2": _l2, "huber": huber_grad(1.0)}


def _resolve_k(k) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """(gradient of K, whether it is elementwise so the foreach path applies)."""
    if callable(k):
        return k, False
    if isinstance(k, tuple) and len(k) == 2 and k[0] == "lp":
        return lp_grad(float(k[1])), False
    if isinstance(k, tuple) and len(k) == 2 and k[0] == "huber":
        return huber_grad(float(k[1])), True
    if k in K_GRADIENTS:
        return K_GRADIENTS[k], k in ("l1", "huber")
    raise ValueError(f"K: expected 'l1', 'l2', 'huber', ('lp', p), ('huber', delta) or a callable, got {k!r}")


class LionK(Optimizer):
    """Lion-K: ``theta <- theta - lr * (grad_K(beta1 m + (1-beta1) g) + weight_decay * theta)``.

    Args:
        params: parameters or parameter groups.
        lr: step size (Lion needs a 3-10x smaller lr than AdamW, with a larger weight decay).
        betas: (beta1, beta2): interpolation for the update direction, momentum decay.
        weight_decay: decoupled weight decay lambda (applied as theta *= 1 - lr * lambda).
        K: 'l1' (sign: Lion), 'l2' (c / ||c|| per parameter tensor), 'huber' / ('huber', delta),
            ('lp', p), or a callable returning grad K(c) for a tensor c.
        maximize: ascend instead of descend.
        foreach: use the multi-tensor path (elementwise K only; default: when every param is on one device).

    Paper: Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained Optimization: As Lyapunov
    Predicts", 2023, arXiv:2310.05898. With K = 'l1' this is Lion (arXiv:2302.06675).
    """

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, K="l1", *, maximize: bool = False, foreach: bool | None = None):
        if not lr > 0:
            raise ValueError(f"lr: expected a positive step size, got {lr}")
        if not (0 <= betas[0] <= 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas: expected beta1 in [0, 1] and beta2 in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: expected a non-negative number, got {weight_decay}")
        _resolve_k(K)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, K=K,
                                      maximize=maximize, foreach=foreach))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LionK does not support sparse gradients")
            if group["maximize"]:
                grads = [-g for g in grads]
            moms = []
            for p in params:
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                moms.append(st["exp_avg"])
            kgrad, elementwise = _resolve_k(group["K"])
            foreach = group["foreach"]
            if foreach is None:
                foreach = elementwise and len({p.device for p in params}) == 1
            (_step_foreach if foreach and elementwise else _step_single)(
                params, grads, moms, kgrad, group["lr"], *group["betas"], group["weight_decay"])
        return loss


def _step_single(params, grads, moms, kgrad, lr, beta1, beta2, wd):
    for p, g, m in zip(params, grads, moms):
        if wd:
            p.mul_(1 - lr * wd)
        c = m.mul(beta1).add_(g, alpha=1 - beta1)
        p.add_(kgrad(c), alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)


def _step_foreach(params, grads, moms, kgrad, lr, beta1, beta2, wd):
    if wd:
        torch._foreach_mul_(params, 1 - lr * wd)
    cs = torch._foreach_mul(moms, beta1)
    torch._foreach_add_(cs, grads, alpha=1 - beta1)
    torch._foreach_add_(params, [kgrad(c) for c in cs], alpha=-lr)
    torch._foreach_mul_(moms, beta2)
    torch._foreach_add_(moms, grads, alpha=1 - beta2)


class Lion(LionK):
    """Lion: EvoLved Sign Momentum. ``LionK`` with ``K='l1'`` (the update direction is sign(c)).

    Paper: Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023, arXiv:2302.06675.
    """

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, K="l1",
                         maximize=maximize, foreach=foreach)
