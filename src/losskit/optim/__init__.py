"""Family F (optimisers): Lion, Lion-K, ⊥Grad, the extragradient step, M-FAC, gradient-regularised Newton, SSO, normalised LR+GD,
the UBA learning-rate schedule, ParetoDA's
gradient-combination weights; and the optimiser registry.

Optimisers are a registry kind of their own: :func:`list_optimizers` / :func:`get_optimizer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core import Paper
from .extragradient import extragradient_step
from .gradreg_newton import GradRegNewton
from .lion import K_GRADIENTS, Lion, LionK, huber_grad, lp_grad
from .mfac import MFAC, SlidingFisherInverse
from .orthograd import OrthoGrad, orthogonalize_gradients
from .pareto import pareto_da_weights
from .surrogate import SSO, NormalizedGD
from .uba import UBA, uba_factor

__all__ = ["Lion", "LionK", "OrthoGrad", "orthogonalize_gradients", "K_GRADIENTS", "huber_grad", "lp_grad",
           "extragradient_step", "GradRegNewton", "MFAC", "SlidingFisherInverse", "SSO", "NormalizedGD", "UBA", "uba_factor", "pareto_da_weights",
           "OptimizerEntry", "list_optimizers", "get_optimizer"]


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
        OptimizerEntry("mfac", MFAC, Paper("M-FAC: Efficient Matrix-Free Approximations of Second-Order Information",
                                           2021, "2107.03356", "Frantar, Kurtic, Alistarh"),
                       "preconditioned SGD: inverse empirical Fisher over a sliding window of gradients"),
        OptimizerEntry("gradreg_newton", GradRegNewton,
                       Paper("Gradient-Normalized Smoothness for Optimization with Approximate Hessians", 2025,
                             "2506.13710", "Semenov, Jaggi, Doikov"),
                       "Newton step with exact or approximate Hessian, regularised by ||grad|| / gamma (adaptive gamma)"),
        OptimizerEntry("sso", SSO, Paper("Target-based Surrogates for Stochastic Optimization", 2023, "2302.02607",
                                         "Lavington, Vaswani, Babanezhad, Schmidt, Le Roux"),
                       "wrapper: inner steps on a target-space surrogate per (expensive) loss gradient"),
        OptimizerEntry("normalized_lr_gd", NormalizedGD,
                       Paper("From Logistic Regression to the Perceptron Algorithm: Exploring Gradient Descent "
                             "with Large Step Sizes", 2024, "2412.08424", "Tyurin"),
                       "gradient step divided by the current loss"),
        OptimizerEntry("uba", UBA, Paper("Stepsize anything: A unified learning rate schedule for budgeted-iteration "
                                         "training", 2025, "2505.24452", "Tang, Dong, Zeng, Zhou, Lin"),
                       "learning-rate schedule (an LRScheduler) for a fixed iteration budget"),
        OptimizerEntry("pareto_da", pareto_da_weights,
                       Paper("Pareto Domain Adaptation", 2021, "2112.04137",
                             "Lv, Liang, Gong, Li, Liu, Li, Liu, Wang"),
                       "a function: gradient-combination weights (an LP) steered by a held-out target gradient"),
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
