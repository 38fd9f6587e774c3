"""What the built-in tasks share beyond the training loop (:mod:`losskit.arena._train`): resolving a
candidate's registry entry and reading the registry metadata the tasks feed inputs by.

Tasks never compare objective names: what an objective needs is read from its registry entry (family,
input kind, the parameters of its function). The rules that read it live here.
"""

from __future__ import annotations

import inspect

from ..task import Candidate, Unavailable

__all__ = ["entry_of", "is_binary", "kwonly", "option_default"]


def entry_of(c: Candidate):
    """The registry entry of ``c``; :class:`Unavailable` if it (or what it requires) is not registered."""
    missing = c.missing()
    if missing:
        raise Unavailable(f"not registered: {', '.join(missing)}")
    return c.entry()


def is_binary(entry) -> bool:
    """A binary objective (one logit per example and a 0/1 target), read from its input kind."""
    return "binary" in entry.input_kind.name


def kwonly(fn) -> set[str]:
    """The keyword-only option names of ``fn``."""
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


def option_default(fn, name: str):
    """The default value of ``fn``'s parameter ``name``."""
    return inspect.signature(fn).parameters[name].default
