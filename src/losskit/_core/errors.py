"""losskit's one exception type for bad input."""

from __future__ import annotations

__all__ = ["LossInputError", "fail"]


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
