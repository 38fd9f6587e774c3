"""Compatibility module: the built-in tasks now live in :mod:`losskit.arena.tasks`, one module per task.

``losskit.arena.suite`` stays importable and re-exports what it exported before (the task classes,
``DEFAULT_SUITE`` and the helpers code and tests import from here); importing it registers the built-in
tasks, as it always did. New code should import from :mod:`losskit.arena.tasks` (or its modules).
"""

from __future__ import annotations

# ruff: noqa: F401  (re-exports)
from .tasks import DEFAULT_SUITE, Distillation, Imbalanced, NoisyLabels, Preference, Representation, Transport
from .tasks._common import entry_of as _entry
from .tasks._common import is_binary as _is_binary
from .tasks._common import kwonly as _kwonly
from .tasks.distillation import _Student, _teacher
from .tasks.imbalanced import _anyloss_claim, _binary_metrics, _f1
from .tasks.noisy_labels import _robust_claim
from .tasks.preference import _PREF_ALIASES, _nash, _nash_claim, _regularised_nash
from .tasks.representation import _augment, _probe

__all__ = ["NoisyLabels", "Imbalanced", "Distillation", "Representation", "Preference", "Transport"]

