"""Compatibility module: the objectives that were first written here now live by their input form.

``losskit.preference.seeds`` used to hold the heads of the family's seed papers. They moved to:

* :mod:`losskit.preference.heads` (pairwise heads on sequence scores): ``ddo``, ``d2o``, ``cpl``, ``egpo``,
  ``mnpo``, ``apo``, ``mapl``;
* :mod:`losskit.preference.tokens` (token-level): ``sparsepo``;
* :mod:`losskit.preference.policy` (on-policy samples and groups): ``nash_mp``, ``disco``, ``disco_b``;
* :mod:`losskit.optim.extragradient`: ``extragradient_step`` (an optimiser step, not a loss).

This module only re-exports them, so ``from losskit.preference.seeds import dpo``-style imports of these names
keep working; import from the modules above in new code.
"""

from __future__ import annotations

from .heads import apo, cpl, d2o, ddo, egpo, mapl, mnpo
from .policy import disco, disco_b, nash_mp
from .tokens import sparsepo

__all__ = ["ddo", "d2o", "cpl", "sparsepo", "egpo", "nash_mp", "mnpo", "apo", "mapl",
           "disco", "disco_b"]


def __getattr__(name):
    if name == "extragradient_step":  # moved to losskit.optim; lazily, see losskit.preference.__getattr__
        import importlib

        return importlib.import_module("losskit.optim").extragradient_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
