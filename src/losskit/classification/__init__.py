"""Family A: classification surrogates.

Shared pieces: :mod:`.margins` (margin vector, comp-sum core), :mod:`.links` (softmax, StableMax,
sparsemax/entmax, z-normalisation), :mod:`.targets` (target builders), ``_targets`` (targets x class
weights x reductions). Each objective is a few lines on top.
"""

from . import (
    adversarial_comp_sum,
    aggregate,
    binary,
    hyperbolic,
    link_losses,
    links,
    losses,
    margins,
    multilabel,
    multilabel_bce,
    regression,
    robust,
    segmentation,
    semi_supervised,
    targets,
    tempered,
)
from .adversarial_comp_sum import *  # noqa: F401,F403
from .aggregate import *  # noqa: F401,F403
from .binary import *  # noqa: F401,F403
from .hyperbolic import *  # noqa: F401,F403
from .link_losses import *  # noqa: F401,F403
from .links import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .multilabel import *  # noqa: F401,F403
from .multilabel_bce import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .robust import *  # noqa: F401,F403
from .segmentation import *  # noqa: F401,F403
from .semi_supervised import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403
from .tempered import *  # noqa: F401,F403

__all__ = sorted({*adversarial_comp_sum.__all__, *aggregate.__all__, *binary.__all__, *hyperbolic.__all__, *links.__all__,
                   *losses.__all__, *link_losses.__all__,
                  *multilabel.__all__, *multilabel_bce.__all__, *regression.__all__, *robust.__all__, *targets.__all__,
                  *segmentation.__all__, *semi_supervised.__all__, *tempered.__all__})
