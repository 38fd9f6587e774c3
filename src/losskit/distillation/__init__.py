"""Family D: knowledge distillation (KD, BD-KD, dual-head KD, DHO, PS-KD, ground-truth-weighted self-KD)."""

from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all

__all__ = list(_losses_all)
