"""Declared value domains of tensor inputs, checked together in one pass.

Every floating tensor argument of a registered objective has a :class:`Values`: what its entries may be.
The default is :data:`FINITE` (no NaN, no +-inf), or :data:`FINITE_OR_NEG_INF` for inputs named in the
objective's ``allow_neg_inf`` (logits that mask with ``-inf``). An input kind or an objective declares
more (``InputKind(values={"policy_chosen_logps": LOGPROB})``, ``@objective(..., values=...)``): log-
probabilities at most 0, probabilities in [0, 1], non-negative weights. The registry's wrapper checks
them all before the objective's code runs, so families do not re-check what is declared.

Cost. A check needs each input's minimum and maximum. On CPU with validation on (eager mode) all the
declared inputs of a call are reduced together: inputs sharing a domain are concatenated when small
(one ``cat`` and one ``aminmax`` instead of one per input), the extremes of every group are stacked and
read in one host transfer, and the bounds are compared in Python. Only when that test fails are the
inputs examined one by one, to name the argument and the first offending position. Elsewhere
(accelerators: ``torch._assert_async``, no host synchronisation; meta tensors, tracing, validation off:
nothing) each input goes through :func:`~losskit._core.validate.require`.
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
#: many elements (a copy of up to 1 MiB in float32 costs less than the dispatch of a reduction per input).
CAT_ELEMS = 1 << 18


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
    # the mode depends on the tensor only through its device and whether it has data
    same = all(x.device == x0.device and _has_data(x) == (mode is not None) for _, x, _ in pairs[1:])
    if same and mode is None:
        return
    if same and mode == "eager":
        if _all_hold(pairs):
            return
        for name, x, dom in pairs:  # something failed: find which, with its position
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
    """One reduction per group of inputs sharing a domain (concatenated while small), one host read."""
    dom0 = pairs[0][2]
    if len(pairs) == 1:
        mn, mx = torch.aminmax(dom0.reduce(pairs[0][1].detach()))
        return dom0.holds(mn.item(), mx.item())
    if all(dom is dom0 for _, _, dom in pairs):  # the common case: one group
        groups = [(dom0, [x for _, x, _ in pairs])]
    else:
        by: dict[int, tuple[Values, list[torch.Tensor]]] = {}
        for _, x, dom in pairs:
            by.setdefault(id(dom), (dom, []))[1].append(x)
        groups = list(by.values())
    doms, ext = [], []
    for dom, xs in groups:
        if len(xs) > 1 and sum(x.numel() for x in xs) <= CAT_ELEMS:
            xs = [torch.cat([_flat(dom.reduce(x.detach())) for x in xs])]
        else:
            xs = [dom.reduce(x.detach()) for x in xs]
        for x in xs:
            ext += torch.aminmax(x)
            doms.append(dom)
    if len(ext) == 2:
        return dom0.holds(ext[0].item(), ext[1].item())
    vals = torch.stack(ext).tolist()
    return all(dom.holds(vals[2 * i], vals[2 * i + 1]) for i, dom in enumerate(doms))
