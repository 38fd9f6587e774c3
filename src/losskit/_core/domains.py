"""Declared hyper-parameter domains: what values each option of an objective accepts.

Every keyword option of a registered objective has a :class:`Domain`: declared by the objective
(``@objective(..., domains={"beta": POSITIVE})``) or, for the options whose meaning is the same
everywhere (``reduction``, ``label_smoothing``, ``ignore_index``, ``sample_weight``, ...), taken from
:data:`COMMON`. The registry's wrapper validates every option passed to a call against its domain and
raises :class:`~losskit.LossInputError` naming the argument, the value and the domain; the conformance
suite generates invalid values from each declaration (:meth:`Domain.invalid`) and the valid boundaries
(:meth:`Domain.boundaries`), so no objective can forget a check.

Python numbers are checked on every call (a comparison of two Python numbers costs nothing and needs
no device); a tensor-valued option (a learnable temperature, say) is checked like a tensor input,
under :func:`losskit.set_validation` and without a host synchronisation on accelerators.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import fail

__all__ = [
    "Domain", "Real", "Integer", "Choice", "Flag", "Maybe", "Tensor", "Callable", "Anything", "Seq", "Either", "Dim",
    "POSITIVE", "NONNEGATIVE", "UNIT", "OPEN_UNIT", "HALF_OPEN_UNIT", "COUNT", "NONNEG_INT", "REAL", "FLAG",
    "TENSOR", "COMMON", "check_option",
]


class Domain:
    """A set of valid values for one option."""

    description: str = "a value"

    def contains(self, value: Any, arguments: Mapping[str, Any] | None = None) -> bool:  # pragma: no cover
        raise NotImplementedError

    #: whether a tensor value's entries are checked against the domain (see :meth:`tensor_bad`)
    tensor_values: bool = False

    def tensor_bad(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - only where tensor_values
        raise NotImplementedError

    def invalid(self) -> list[Any]:
        """Values outside the domain that a call must refuse (generated for the conformance suite)."""
        return []

    def boundaries(self) -> list[Any]:
        """Valid values at the domain's edges (a call must accept them and give a finite loss)."""
        return []

    def __repr__(self) -> str:
        return self.description


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


@dataclass(frozen=True, repr=False)
class Real(Domain):
    """A finite real number in an interval; ``tensor=True`` also admits a tensor of such values."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    tensor: bool = False

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.lo is None and self.hi is None:
            what = "a finite real number"
        else:
            lb = "(" if self.lo_open or self.lo is None else "["
            rb = ")" if self.hi_open or self.hi is None else "]"
            lo = "-inf" if self.lo is None else _fmt(self.lo)
            hi = "inf" if self.hi is None else _fmt(self.hi)
            what = f"a real number in {lb}{lo}, {hi}{rb}"
        return what + (" (or a tensor of them)" if self.tensor else "")

    @property
    def tensor_values(self) -> bool:  # type: ignore[override]
        return self.tensor

    def _ok(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def contains(self, value, arguments=None) -> bool:
        if isinstance(value, torch.Tensor):
            return self.tensor and value.is_floating_point()  # values: checked as a tensor input
        return _is_real(value) and self._ok(float(value))

    def tensor_bad(self, t: torch.Tensor) -> torch.Tensor:
        """A 0-d bool tensor, true when some entry of ``t`` is outside the interval (no host sync)."""
        bad = ~torch.isfinite(t)
        if self.lo is not None:
            bad = bad | ((t <= self.lo) if self.lo_open else (t < self.lo))
        if self.hi is not None:
            bad = bad | ((t >= self.hi) if self.hi_open else (t > self.hi))
        return bad.any()

    def invalid(self) -> list:
        out: list[Any] = [math.nan, "0.1"]
        if self.lo is not None:
            out.append(self.lo - 1.0)
            if self.lo_open:
                out.append(self.lo)
        if self.hi is not None:
            out.append(self.hi + 1.0)
            if self.hi_open:
                out.append(self.hi)
        if self.hi is None:
            out.append(math.inf)
        return out

    def boundaries(self) -> list:
        out = []
        if self.lo is not None and not self.lo_open:
            out.append(self.lo)
        if self.hi is not None and not self.hi_open:
            out.append(self.hi)
        return out


@dataclass(frozen=True, repr=False)
class Integer(Domain):
    """A whole number (``int``, not ``bool``) in ``[lo, hi]``."""

    lo: int | None = None
    hi: int | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.lo is None and self.hi is None:
            return "an integer"
        if self.hi is None:
            return f"an integer >= {self.lo}"
        if self.lo is None:
            return f"an integer <= {self.hi}"
        return f"an integer in [{self.lo}, {self.hi}]"

    def contains(self, value, arguments=None) -> bool:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return False
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def invalid(self) -> list:
        out: list[Any] = [1.5]
        if self.lo is not None:
            out.append(self.lo - 1)
        if self.hi is not None:
            out.append(self.hi + 1)
        return out

    def boundaries(self) -> list:
        return [v for v in (self.lo, self.hi) if v is not None]


@dataclass(frozen=True, repr=False)
class Choice(Domain):
    """One of a fixed set of values (names, usually)."""

    options: tuple

    def __init__(self, *options):
        object.__setattr__(self, "options", tuple(options))

    @property
    def description(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(repr(o) for o in self.options)

    def contains(self, value, arguments=None) -> bool:
        try:
            return any(value == o and type(value) is type(o) or value is o for o in self.options)
        except Exception:  # noqa: BLE001 - a tensor or an odd object is simply not an option
            return False

    def invalid(self) -> list:
        return ["no-such-option"]

    def boundaries(self) -> list:
        return list(self.options)


@dataclass(frozen=True, repr=False)
class Flag(Domain):
    """``True`` or ``False``."""

    description: str = "True or False"

    def contains(self, value, arguments=None) -> bool:
        return isinstance(value, bool) or (type(value).__name__ == "bool_")  # numpy.bool_

    def invalid(self) -> list:
        return ["yes"]

    def boundaries(self) -> list:
        return [True, False]


@dataclass(frozen=True, repr=False)
class Maybe(Domain):
    """``None`` or a value of ``inner``."""

    inner: Domain

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"None or {self.inner.description}"

    def contains(self, value, arguments=None) -> bool:
        return value is None or self.inner.contains(value, arguments)

    def invalid(self) -> list:
        return self.inner.invalid()

    def boundaries(self) -> list:
        return self.inner.boundaries()

    @property
    def tensor_values(self) -> bool:  # type: ignore[override]
        return self.inner.tensor_values

    def tensor_bad(self, t):
        return self.inner.tensor_bad(t)


@dataclass(frozen=True, repr=False)
class Tensor(Domain):
    """A tensor whose shape and values the objective checks against its inputs (weights, masks...)."""

    what: str = "a tensor"

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.what

    def contains(self, value, arguments=None) -> bool:
        return isinstance(value, torch.Tensor)

    def invalid(self) -> list:
        return ["not-a-tensor"]


@dataclass(frozen=True, repr=False)
class Callable(Domain):
    """A callable (a user cost, distance or head); ``what`` says what it must compute."""

    what: str = "a callable"

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.what

    def contains(self, value, arguments=None) -> bool:
        return callable(value) and not isinstance(value, torch.Tensor)

    def invalid(self) -> list:
        return ["not-a-callable"]


@dataclass(frozen=True, repr=False)
class Anything(Domain):
    """No constraint the core can check (a callable, a process group); ``why`` says what is expected."""

    why: str = "any value"

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.why

    def contains(self, value, arguments=None) -> bool:
        return True


@dataclass(frozen=True, repr=False)
class Seq(Domain):
    """A non-empty tuple or list whose every item is in ``inner``."""

    inner: Domain
    min_len: int = 1

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"a sequence of at least {self.min_len} values, each {self.inner.description}"

    def contains(self, value, arguments=None) -> bool:
        if not isinstance(value, (tuple, list)) or len(value) < self.min_len:
            return False
        return all(self.inner.contains(v, arguments) for v in value)

    def invalid(self) -> list:
        out: list[Any] = [()] if self.min_len > 0 else []
        out += [(v,) for v in self.inner.invalid() if not isinstance(v, str)]
        return out


@dataclass(frozen=True, repr=False)
class Either(Domain):
    """A value of any one of ``domains``."""

    domains: tuple

    def __init__(self, *domains: Domain):
        object.__setattr__(self, "domains", tuple(domains))

    @property
    def description(self) -> str:  # type: ignore[override]
        return " or ".join(d.description for d in self.domains)

    def contains(self, value, arguments=None) -> bool:
        return any(d.contains(value, arguments) for d in self.domains)

    def invalid(self) -> list:
        cand = [v for d in self.domains for v in d.invalid()]
        return [v for v in cand if not self.contains(v)]

    def boundaries(self) -> list:
        return [v for d in self.domains for v in d.boundaries()]

    @property
    def tensor_values(self) -> bool:  # type: ignore[override]
        return any(d.tensor_values for d in self.domains)

    def tensor_bad(self, t):
        for d in self.domains:
            if d.tensor_values and d.contains(t):
                return d.tensor_bad(t)
        return torch.zeros((), dtype=torch.bool, device=t.device)  # admitted by a domain that reads no value


@dataclass(frozen=True, repr=False)
class Dim(Domain):
    """A dimension index valid for the tensor argument ``of`` (negative indices count from the end)."""

    of: str = "input"

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"a dimension of {self.of}"

    def contains(self, value, arguments=None) -> bool:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return False
        x = (arguments or {}).get(self.of)
        if not isinstance(x, torch.Tensor):
            return True
        nd = max(x.dim(), 1)
        return -nd <= value < nd

    def invalid(self) -> list:
        return [64, -65, 1.5]


# ------------------------------------------------------------------------------- common domains
POSITIVE = Real(0.0, None, lo_open=True)
NONNEGATIVE = Real(0.0, None)
UNIT = Real(0.0, 1.0)
OPEN_UNIT = Real(0.0, 1.0, lo_open=True, hi_open=True)
HALF_OPEN_UNIT = Real(0.0, 1.0, hi_open=True)
REAL = Real()
COUNT = Integer(1)
NONNEG_INT = Integer(0)
FLAG = Flag()
TENSOR = Maybe(Tensor("a tensor"))


#: Options whose meaning is the same in every objective (torch.nn.functional's vocabulary). An
#: objective that uses one of these names for something else declares its own domain, which wins.
COMMON: dict[str, Domain] = {
    "reduction": Choice("mean", "sum", "none"),
    "sample_weight": Maybe(Tensor("a tensor of per-sample weights")),
    "weight": Maybe(Tensor("a tensor of per-class weights")),
    "ignore_index": Integer(),
    "label_smoothing": UNIT,
    "return_metrics": FLAG,
    "group": Anything("a torch.distributed process group or None"),
    "gather": FLAG,
    "generator": Maybe(Anything("a torch.Generator")),
}


def resolve(option_names: Iterable[str], declared: Mapping[str, Domain] | None) -> dict[str, Domain]:
    """The domain of each option: the declared one, else the common one (options without one are absent)."""
    declared = dict(declared or {})
    out = {}
    for name in option_names:
        d = declared.get(name, COMMON.get(name))
        if d is not None:
            out[name] = d
    return out


def check_option(name: str, value: Any, domain: Domain, arguments: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`LossInputError` unless ``value`` is in ``domain``."""
    if domain.contains(value, arguments):
        return
    shown = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else repr(value)
    raise fail(name, domain.description, shown)
