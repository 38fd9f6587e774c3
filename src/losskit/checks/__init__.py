"""``losskit check``: what a loss guarantees, verified numerically, with the evidence.

>>> import losskit
>>> report = losskit.check("cross_entropy")            # a registered objective: checks its claims too
>>> report["calibrated"].holds, report.ok
(True, True)

A user's own loss is any callable ``fn(logits, target, **options)`` returning per-sample losses (it may
take ``reduction=``; a scalar-returning one is called sample by sample)::

    report = losskit.check(my_loss, properties=["calibrated", "convex"])

The checks (all in float64 on K = 4 classes unless stated; see :mod:`losskit.checks._properties`,
the dict :data:`PROPERTY_CHECKS`):

calibrated     the conditional risk ``sum_k p_k L(z, k)``, minimised over z by L-BFGS for random p
               (including near ties), has ``argmax z* = argmax p`` (binary: ``sign x* = sign(eta - 1/2)``)
proper         the same minimiser satisfies ``softmax(z*) = p`` (or the loss's own ``link``)
symmetric      ``sum_k L(z, k)`` is constant in z (robust to symmetric label noise)
bounded        ``sup L`` levels off as inputs grow to magnitude 1e4
nonnegative    ``min L >= 0`` over random and extreme inputs
convex         midpoint inequality along random lines and a PSD Hessian at random points
shift/scale    ``L(z + c) = L(z)`` / ``L(a z) = L(z)``
permutation_equivariant  relabelling classes (logits and labels together) leaves L unchanged
divergence     for two distributions: ``D(p, q) > 0`` for p != q and ``D(p, p) = 0``
symmetric_divergence  ``D(p, q) = D(q, p)``
gradient_on_errors  |grad L| does not vanish when the true class is behind by a large margin
lipschitz      |grad L| stays bounded as the inputs grow to magnitude 1e4
no_softmax_collapse  float32 loss and gradient stay nonzero at margin 100 (CE collapses; StableMax not)
finite_extreme finite loss and gradient at magnitude 1e4 and with -inf masks; reports |grad| at margins
finite_half    finite loss and gradient in float16 and bfloat16

Supported input kinds: ``multiclass`` (logits (N, K), class indices), ``binary`` (logits (N,), targets in
{0, 1}), ``distributions`` (p, q as logits), ``logits`` (a regulariser of logits alone).

Layout: :mod:`losskit.checks.api` is the Python API (:func:`check`), :mod:`losskit.checks.cli` the command
line (:func:`main`); the probes, property checks, links and report types live in the private modules and
are re-exported here.
"""

from __future__ import annotations

import warnings

from ._links import LINKS
from ._probes import KINDS, LossOutputError, Probe
from ._properties import PROPERTY_CHECKS, conditional_risk_minimiser
from ._report import FAIL, PASS, SKIP, Report, Verdict
from .api import INPUT_KINDS, check, load_callable
from .cli import main

__all__ = ["check", "main", "Report", "Verdict", "PROPERTY_CHECKS", "KINDS", "LINKS", "INPUT_KINDS", "Probe",
           "load_callable", "conditional_risk_minimiser", "PASS", "FAIL", "SKIP", "LossOutputError"]


def __getattr__(name: str):
    if name == "CHECKS":  # the old name, easily confused with losskit.testing.conformance.CHECKS
        warnings.warn("losskit.checks.CHECKS is deprecated; use losskit.checks.PROPERTY_CHECKS",
                      DeprecationWarning, stacklevel=2)
        return PROPERTY_CHECKS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
