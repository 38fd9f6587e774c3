"""Family B: divergences and information measures."""

from .categorical import *  # noqa: F401,F403
from .categorical import __all__ as _categorical_all

__all__ = list(_categorical_all)
