"""losskit's one exception type for bad input."""

from __future__ import annotations

__all__ = ["LossInputError", "fail", "warn"]


class LossInputError(ValueError):
    """Raised when an objective receives input it cannot give a correct answer for.

    The message always has the form ``<argument>: expected <what>, got <what came>`` so that the
    argument at fault is named first. It subclasses :class:`ValueError`, so code that already
    catches ``ValueError`` keeps working.
    """

    def __init__(self, argument: str, expected: str, got: str):
        self.argument = argument
        self.expected = expected
        self.got = got
        super().__init__(f"{argument}: expected {expected}, got {got}")


def fail(argument: str, expected: str, got: str) -> LossInputError:
    """Build (not raise) a :class:`LossInputError`; use as ``raise fail(...)``."""
    return LossInputError(argument, expected, got)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside losskit (the user's line), whatever the
    depth of the call inside (the registry's wrapper, a family's engine)."""
    import os
    import sys
    import warnings

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../losskit
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
