"""The transport family's option domains, one constant per concept, shared by every objective and solver.

The cost exponent has ONE rule everywhere (:data:`EXPONENT`): ``p >= 1``. It is the range where
``||x - y||^p`` is convex, ``W_p`` is a metric, and the sorted (monotone) coupling that
:func:`wasserstein_1d` and :func:`sliced_wasserstein` compute is optimal; below 1 the gradient of the
cost is unbounded at near-coincident points, and ``p <= 0`` gives no transport cost at all.
"""

from __future__ import annotations

import torch

from .._core.domains import (
    COUNT,
    FLAG,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Choice,
    Domain,
    Integer,
    Maybe,
    Real,
    Tensor,
    check_option,
)
from .._core.domains import Callable as CallableOption
from .._core.validate import require

__all__ = ["EXPONENT", "EPS", "POSITIVE", "SOLVER", "DOMAINS", "domains", "check"]


#: the cost exponent of ``C_ij = ||x_i - y_j||^p`` (every objective and solver of the family)
EXPONENT = Real(1.0, None)
#: entropic regularisation, in cost units: a positive number, or a tensor of one per problem ``(B,)``
EPS = Real(0.0, None, lo_open=True, tensor=True)
WEIGHTS = Maybe(Tensor("non-negative point weights (B, n) / (B, m) (or (n,) / (m,) unbatched)"))

DOMAINS: dict[str, Domain] = {
    "a": WEIGHTS,
    "b": WEIGHTS,
    "p": EXPONENT,
    "eps": EPS,
    "cost": Maybe(CallableOption("a callable cost(x_block (B, r, d), y (B, m, d)) -> (B, r, m)")),
    "rho": Maybe(POSITIVE),                      # KL marginal relaxation; None = balanced
    "tol": POSITIVE,
    "max_iter": COUNT,
    "scaling": Maybe(OPEN_UNIT),                 # epsilon-scaling factor in (0, 1); None = no annealing
    "online": Maybe(FLAG),
    "differentiate": Choice("envelope", "unroll"),
    "method": Choice("auto", "sinkhorn", "newton", "multiscale"),
    "gamma": POSITIVE,                           # quadratic regularisation strength
    "k": COUNT,                                  # nonzeros per plan column
    "n_projections": COUNT,
    "projections": Maybe(Tensor("directions (L, d) (normalised here)")),
    "seed": Integer(),
    "normalize": FLAG,
    "ridge": NONNEGATIVE,                        # whitening ridge, relative to the mean variance
    "debias": FLAG,
    "fast": FLAG,                                # solve's accuracy preset (sinkhorn.FAST)
}

#: the Sinkhorn solver's options (:func:`~.sinkhorn.solve` and every entropic objective)
SOLVER = ("eps", "rho", "tol", "max_iter", "scaling", "differentiate", "method", "online")


def domains(*names: str) -> dict[str, Domain]:
    """The declared domains of ``names`` (for ``@objective(domains=...)``)."""
    return {n: DOMAINS[n] for n in names}


def check(name: str, value) -> None:
    """What the registry's wrapper does for one option, for the public solver functions (not registered):
    the domain, and for a tensor value its entries (a value check, under the validation mode)."""
    dom = DOMAINS[name]
    check_option(name, value, dom)
    if isinstance(value, torch.Tensor) and value.numel() and dom.tensor_values:
        require(name, value, lambda: dom.tensor_bad(value), dom.description,
                lambda: f"values in [{value.min().item():.6g}, {value.max().item():.6g}]")
