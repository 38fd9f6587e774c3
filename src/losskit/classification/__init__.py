"""Family A: classification surrogates.

Shared pieces: :mod:`.margins` (margin vector, comp-sum core), :mod:`.links` (softmax, StableMax,
sparsemax/entmax, z-normalisation), :mod:`.targets` (target builders), ``_targets`` (targets x class
weights x reductions). Each objective is a few lines on top.
"""

from . import links, losses, margins, robust, targets
from .links import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .robust import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403

__all__ = sorted({*links.__all__, *losses.__all__, *robust.__all__, *targets.__all__})
