"""The built-in arena tasks, one module each; importing this package registers them.

Each task is a :class:`~losskit.arena.task.Task` (data, model, metrics, candidates, baseline) in its own
module; the training loop and data helpers they share live in :mod:`losskit.arena._train`, the registry
rules they feed inputs by in :mod:`._common`. The list below is explicit (no directory scan): a new
built-in task is a new module plus one line here. :mod:`losskit.arena` imports this package, so the
built-in tasks are registered whenever the arena is; the task registry (:mod:`losskit.arena.task`) does
not import them.
"""

from __future__ import annotations

from ..task import register_task
from .adversarial import Adversarial
from .distillation import Distillation
from .generative import Generative
from .imbalanced import Imbalanced
from .noisy_labels import NoisyLabels
from .preference import Preference
from .representation import Representation
from .transport import Transport

__all__ = ["BUILTIN", "DEFAULT_SUITE", "NoisyLabels", "Imbalanced", "Distillation", "Representation",
           "Preference", "Transport", "Adversarial", "Generative"]

#: The built-in tasks, in the order ``losskit arena list`` shows them.
BUILTIN: tuple[type, ...] = (NoisyLabels, Imbalanced, Distillation, Representation, Preference, Transport,
                             Adversarial, Generative)

#: The tasks ``losskit arena`` (no task named) runs, with their quick candidates and settings.
DEFAULT_SUITE: tuple[str, ...] = ("noisy_labels", "imbalanced", "distillation", "representation",
                                  "preference", "transport", "generative")

for _cls in BUILTIN:
    register_task(_cls())
del _cls
