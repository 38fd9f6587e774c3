"""Tools for testing objectives: the conformance checks every registered objective must pass."""

from .conformance import CHECKS, check_conformance  # noqa: F401
