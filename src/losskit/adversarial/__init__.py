"""Adversarial training: the PGD attack helper and instance-reweighted adversarial-training objectives
(doubly robust KL-DRO weights, WEAT's energy weights, SRAT's separable re-weighting) and robust
self-training with out-of-domain unlabeled data (Wasserstein-DRO with pseudo-labels)."""

from .attacks import *  # noqa: F401,F403
from .attacks import __all__ as _attacks
from .dro_self_training import *  # noqa: F401,F403
from .dro_self_training import __all__ as _dro_st
from .reweighting import *  # noqa: F401,F403
from .reweighting import __all__ as _reweighting

__all__ = [*_attacks, *_reweighting, *_dro_st]
