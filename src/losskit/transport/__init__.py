"""Optimal transport: log-domain Sinkhorn (batched, online memory, envelope gradients), Sinkhorn
divergence, unbalanced OT, exact 1-D / sliced / small exact OT, and the seed papers' OT objectives.

The one abstraction is :func:`solve` (points) / :func:`solve_matrix` (a cost matrix), returning an
:class:`OTResult` (value, potentials, marginal error, iterations, lazy plan); every objective here is a
few lines on top of it. See ``docs/transport.md``.
"""

from ._inputs import TWO_SAMPLES, TWO_SAMPLES_1D
from .costs import Cost, pairwise_cost
from .exact import exact_ot, exact_plan, sliced_wasserstein, wasserstein_1d
from .losses import monge_gap, self_transport, sinkhorn, sinkhorn_divergence
from .quadratic import quadratic_ot, solve_quadratic, solve_sparse, sparse_ot
from .sinkhorn import OTResult, solve, solve_matrix

Sinkhorn = sinkhorn.Module
SinkhornDivergence = sinkhorn_divergence.Module
Wasserstein1d = wasserstein_1d.Module
SlicedWasserstein = sliced_wasserstein.Module
ExactOt = exact_ot.Module
MongeGap = monge_gap.Module
QuadraticOt = quadratic_ot.Module
SparseOt = sparse_ot.Module

# Star-exported into ``losskit``: the registered objectives and their modules. The solver API
# (solve, solve_matrix, OTResult, Cost, exact_plan, self_transport, input kinds) lives in losskit.transport.
__all__ = [
    "sinkhorn", "Sinkhorn", "sinkhorn_divergence", "SinkhornDivergence", "wasserstein_1d", "Wasserstein1d",
    "sliced_wasserstein", "SlicedWasserstein", "exact_ot", "ExactOt", "monge_gap", "MongeGap",
    "quadratic_ot", "QuadraticOt", "sparse_ot", "SparseOt",
]

# TAROT-style data selection (selection.py): appended here, apart from the imports above.
from .selection import SelectionResult, ot_select, whiten, whitened_features, whitened_ot  # noqa: E402

WhitenedOt = whitened_ot.Module
__all__ += ["whitened_ot", "WhitenedOt"]

# Issue 19: the Gaussian closed form, the unbalanced Sinkhorn divergence, (fused) Gromov-Wasserstein,
# partial OT (gaussian.py, losses.py, gromov.py, partial.py).
from .gaussian import bures_wasserstein, gaussian_w2, weighted_moments  # noqa: E402
from .losses import unbalanced_sinkhorn_divergence  # noqa: E402

BuresWasserstein = bures_wasserstein.Module
UnbalancedSinkhornDivergence = unbalanced_sinkhorn_divergence.Module
__all__ += ["bures_wasserstein", "BuresWasserstein", "unbalanced_sinkhorn_divergence", "UnbalancedSinkhornDivergence"]

from .gromov import GWResult, fused_gromov_wasserstein, gromov_wasserstein, solve_gromov  # noqa: E402

GromovWasserstein = gromov_wasserstein.Module
FusedGromovWasserstein = fused_gromov_wasserstein.Module
__all__ += ["gromov_wasserstein", "GromovWasserstein", "fused_gromov_wasserstein", "FusedGromovWasserstein"]

from .partial import entropic_partial_ot, partial_ot, partial_plan  # noqa: E402

PartialOt = partial_ot.Module
EntropicPartialOt = entropic_partial_ot.Module
__all__ += ["partial_ot", "PartialOt", "entropic_partial_ot", "EntropicPartialOt"]

# Barycenters: solvers (beside solve / exact_plan) and the barycentric objective (issue 19).
from .barycenter import CLOUD_AND_TARGETS, barycenter, barycenter_loss, free_support_barycenter  # noqa: E402

BarycenterLoss = barycenter_loss.Module
__all__ += ["barycenter_loss", "BarycenterLoss"]

# Issue 23: multiscale truncated Sinkhorn for large low-dimensional clouds (solve(..., method="multiscale")).
from .multiscale import MultiscaleResult, solve_multiscale  # noqa: E402
