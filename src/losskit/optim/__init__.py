"""Family F (optimisers): Lion, Lion-K, ⊥Grad, the extragradient step; and the optimiser registry.

Optimisers are a registry kind of their own: :func:`list_optimizers` / :func:`get_optimizer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core import Paper
from .extragradient import extragradient_step
from .lion import K_GRADIENTS, Lion, LionK, huber_grad, lp_grad
from .orthograd import OrthoGrad, orthogonalize_gradients

__all__ = ["Lion", "LionK", "OrthoGrad", "orthogonalize_gradients", "K_GRADIENTS", "huber_grad", "lp_grad",
           "extragradient_step", "OptimizerEntry", "list_optimizers", "get_optimizer"]


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    cls: type
    paper: Paper
    summary: str


_OPTIMIZERS = {
    e.name: e for e in (
        OptimizerEntry("lion", Lion, Paper("Symbolic Discovery of Optimization Algorithms", 2023, "2302.06675",
                                           "Chen et al."), "sign of interpolated momentum"),
        OptimizerEntry("lion_k", LionK, Paper("Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts",
                                              2023, "2310.05898", "Chen, Liu, Liang, Liu"),
                       "Lion with sign replaced by grad K for a convex K"),
        OptimizerEntry("orthograd", OrthoGrad, Paper("Grokking at the Edge of Numerical Stability", 2025,
                                                     "2501.04697", "Prieto, Barsbey, Mediano, Birdal"),
                       "wrapper: gradient orthogonal to the weights, norm kept"),
    )
}


def list_optimizers() -> list[str]:
    """Names in the optimiser registry."""
    return sorted(_OPTIMIZERS)


def get_optimizer(name: str) -> OptimizerEntry:
    try:
        return _OPTIMIZERS[name]
    except KeyError:
        raise KeyError(f"no optimizer named {name!r}; known: {list_optimizers()}") from None
