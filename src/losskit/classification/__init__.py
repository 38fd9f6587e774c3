"""Family A: classification surrogates."""

from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all

__all__ = list(_losses_all)
