"""Declared value domains of tensor inputs, checked together in one pass.

Every floating tensor argument of a registered objective has a :class:`Values`: what its entries may be.
The default is :data:`FINITE` (no NaN, no +-inf), or :data:`FINITE_OR_NEG_INF` for inputs named in the
objective's ``allow_neg_inf`` (logits that mask with ``-inf``). An input kind or an objective declares
more (``InputKind(values={"policy_chosen_logps": LOGPROB})``, ``@objective(..., values=...)``): log-
probabilities at most 0, probabilities in [0, 1], non-negative weights. The registry's wrapper checks
them all before the objective's code runs, so families do not re-check what is declared.

Cost. A check needs each input's extremes, or only whether it is finite. On CPU with validation on (eager
mode) all the declared inputs of a call are checked together, with autograd off: inputs sharing a domain
are concatenated while small (one reduction instead of one per input), and each group takes the
cheapest reductions that decide its domain (a ``sum`` for finiteness, ``amax``/``amin`` for bounds,
one host read each); the bounds are compared in Python. Only when that test fails are the inputs
examined one by one, to name the argument and the first offending position. Elsewhere (accelerators:
``torch._assert_async``, no host synchronisation; meta tensors, tracing, validation off: nothing) each
input goes through :func:`~losskit._core.validate.require`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import validate as _validate
from .conventions import _has_data, validation_enabled
from .errors import fail

__all__ = ["Values", "FINITE", "FINITE_OR_NEG_INF", "LOGIT_ROWS", "LOGIT_ROWS_DIM1", "PROBABILITY", "UNIT_VALUES", "NONNEGATIVE_VALUES", "POSITIVE_VALUES", "check_values",
           "CAT_ELEMS"]

#: Inputs sharing a domain are concatenated for one reduction while their total size is at most this
#: many elements (below it a copy costs less than the dispatch of one reduction per input; above it the
#: copy costs more than the reductions it saves).
CAT_ELEMS = 1 << 15


@dataclass(frozen=True, eq=False)
class Values:
    """The entries a floating tensor input may hold: ``lo <= x <= hi``, never NaN or +inf, and -inf only
    when ``neg_inf`` (a masked entry). ``description`` is what an error message says was expected."""

    lo: float = -math.inf
    hi: float = math.inf
    neg_inf: bool = False
    description: str = "finite values"
    lo_open: bool = False  # ``lo < x`` instead of ``lo <= x`` (positive values)
    #: Logits along a class dimension: ``rows=dim`` reduces each row to its maximum first, so NaN and +inf
    #: still fail, ``-inf`` entries mask, and a row masked entirely (maximum ``-inf``) fails.
    rows: int | None = None

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """What the bounds apply to: ``x`` itself, or its row maxima for a ``rows`` domain."""
        if self.rows is None or not -x.dim() <= self.rows < x.dim():  # (a wrong shape is the family's error)
            return x
        return x.amax(self.rows)

    def holds(self, mn: float, mx: float) -> bool:
        """Whether a tensor with minimum ``mn`` and maximum ``mx`` (Python floats; NaN if any entry is NaN)
        is inside the domain. Comparisons with NaN are false, so NaN fails."""
        above = mn > self.lo if self.lo_open else mn >= self.lo
        return mx <= self.hi and mx < math.inf and above and (mn > -math.inf or self.neg_inf)

    def bad(self, x: torch.Tensor) -> torch.Tensor:
        """A 0-d bool tensor, true when ``x`` has an entry outside the domain (device-side)."""
        mn, mx = torch.aminmax(self.reduce(x.detach()))
        ok = (mx <= self.hi) & (mx < math.inf) & ((mn > self.lo) if self.lo_open else (mn >= self.lo))
        if not self.neg_inf:
            ok = ok & (mn > -math.inf)
        return ~ok

    def first_bad(self, x: torch.Tensor) -> str:
        """The first offending entry and its position (for the eager error message)."""
        x = x.detach()
        bad = torch.isnan(x) | (x == math.inf) | (x > self.hi) | ((x <= self.lo) if self.lo_open else (x < self.lo))
        if self.rows is not None and not bad.any():
            masked = (self.reduce(x) == -math.inf).nonzero()
            if len(masked):
                row = tuple(masked[0].tolist())
                return f"a fully masked row (every entry -inf) at {row[0] if len(row) == 1 else row}"
        elif not self.neg_inf:
            bad = bad | (x == -math.inf)
        idx = bad.nonzero()
        if len(idx) == 0:
            return f"values in [{x.min().item():.6g}, {x.max().item():.6g}]"
        pos = tuple(idx[0].tolist())
        where = str(pos[0]) if len(pos) == 1 else str(pos)
        return f"{x[pos].item():.6g} at position {where}" if pos else f"{x.item():.6g}"


FINITE = Values()
LOGIT_ROWS = Values(rows=-1, description="logits with no NaN or +inf (-inf masks a class; no fully masked row)")
LOGIT_ROWS_DIM1 = Values(rows=1, description="logits with no NaN or +inf (-inf masks a class; no fully masked "
                                           "row)")
FINITE_OR_NEG_INF = Values(neg_inf=True, description="finite values (or -inf to mask)")
PROBABILITY = Values(0.0, 1.0, description="probabilities in [0, 1]")
UNIT_VALUES = Values(0.0, 1.0, description="values in [0, 1]")
NONNEGATIVE_VALUES = Values(0.0, description="finite values >= 0")
POSITIVE_VALUES = Values(0.0, lo_open=True, description="finite values > 0")


def check_values(pairs: list[tuple[str, torch.Tensor, Values]]) -> None:
    """Check every ``(name, tensor, domain)``; raise :class:`LossInputError` naming the first argument out
    of its domain (by the validation mode; see the module docstring for what it costs)."""
    if not pairs:
        return
    if not validation_enabled():  # off, or tracing
        return
    x0 = pairs[0][1]
    mode = _validate.value_check_mode(x0)
    # the mode depends on the tensor only through its device and whether it has data; on CPU (the hot
    # case) ``is_cpu`` is the cheap test of "same device" (a device object costs 0.3 us to build)
    if x0.is_cpu:
        same = all(x.is_cpu and _has_data(x) == (mode is not None) for _, x, _ in pairs[1:])
    else:
        same = all(x.device == x0.device and _has_data(x) == (mode is not None) for _, x, _ in pairs[1:])
    if same and mode is None:
        return
    if same and mode == "eager":
        if _all_hold(pairs):
            return
        for name, x, dom in pairs:  # something failed (or a sum overflowed): find which, with its position
            mn, mx = torch.aminmax(dom.reduce(x.detach()))
            if not dom.holds(mn.item(), mx.item()):
                raise fail(name, dom.description, dom.first_bad(x))
        return
    for name, x, dom in pairs:
        _validate.require(name, x, lambda x=x, dom=dom: dom.bad(x), dom.description,
                          lambda x=x, dom=dom: dom.first_bad(x))


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 1 else x.reshape(-1)  # (reshape costs a microsecond even when it is a no-op)


def _all_hold(pairs) -> bool:
    """One reduction per group of inputs sharing a domain (concatenated while small), one host read each.

    A domain with no bounds but finiteness (:data:`FINITE`, and the row maxima of :data:`LOGIT_ROWS`) is
    tested by a sum: finite exactly when every entry is, unless it overflows, in which case the caller
    examines the inputs one by one and finds nothing (a false alarm costs time, never a wrong verdict).
    Runs with autograd off: no graph for the copies (``detach`` per input costs more)."""
    prev = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        return _groups_hold(pairs)
    finally:
        torch._C._set_grad_enabled(prev)


def _holds(dom: Values, x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is in ``dom``, with the fewest and cheapest reductions: ``amax`` and
    ``amin`` propagate NaN and see the bounds; a ``sum`` is finite exactly when every entry is (short of
    an overflow, which only sends the caller to the exact per-input check). ``aminmax`` is avoided: on
    CPU it runs at a third of ``amax``'s speed."""
    if dom.hi < math.inf:  # amax: NaN, +inf and the upper bound
        if not x.amax().item() <= dom.hi:
            return False
        if dom.lo > -math.inf:
            return (x.amin().item() > dom.lo) if dom.lo_open else (x.amin().item() >= dom.lo)
        return dom.neg_inf or x.sum().item() > -math.inf  # (+inf and NaN are excluded already)
    if dom.lo > -math.inf:  # amin: NaN, -inf and the lower bound; a sum for +inf
        mn = x.amin().item()
        if not ((mn > dom.lo) if dom.lo_open else (mn >= dom.lo)):
            return False
        return x.sum().item() < math.inf
    if dom.neg_inf:  # finite or -inf: the maximum must be below +inf (NaN fails the comparison)
        return x.amax().item() < math.inf
    return math.isfinite(x.sum().item())


def _groups_hold(pairs) -> bool:
    dom0 = pairs[0][2]
    if len(pairs) == 1:
        return _holds(dom0, dom0.reduce(pairs[0][1]))
    if all(dom is dom0 for _, _, dom in pairs):  # the common case: one group
        groups = [(dom0, [x for _, x, _ in pairs])]
    else:
        by: dict[int, tuple[Values, list[torch.Tensor]]] = {}
        for _, x, dom in pairs:
            by.setdefault(id(dom), (dom, []))[1].append(x)
        groups = list(by.values())
    for dom, xs in groups:
        if len(xs) > 1 and sum(x.numel() for x in xs) <= CAT_ELEMS:
            xs = [torch.cat([_flat(dom.reduce(x)) for x in xs])]
        else:
            xs = [dom.reduce(x) for x in xs]
        if not all(_holds(dom, x) for x in xs):
            return False
    return True
