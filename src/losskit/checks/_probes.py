"""Probes: a loss seen the way the property checks need it, one small class per input kind.

A probe turns a registered objective or a user's callable into ``probe.loss(x, aux) -> (N,)`` per-sample
losses in float64, where ``x`` is the score input the properties are about (logits) and ``aux`` the rest
(class labels, binary targets, the second distribution, or nothing). It also knows how to draw inputs
of its kind and how to transform them (shift, scale, permute classes, mask a class, push to the worst
case), so that every property check is written once, for every kind.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import torch

from .._core.errors import LossInputError

__all__ = ["Probe", "MulticlassProbe", "BinaryProbe", "DistributionsProbe", "LogitsProbe", "KINDS",
           "ExampleProbe", "per_sample", "whole_batch", "example_evaluate", "LossOutputError"]

Tensor = torch.Tensor


class LossOutputError(LossInputError):
    """The loss under check returned something the checker cannot read as per-sample losses.

    ``str(e)``: ``loss: expected a per-sample loss of shape (N,) or a scalar, got ...``; raised by
    :func:`losskit.check` before any property is run.
    """

    def __init__(self, got: str):
        super().__init__("loss", "a per-sample loss of shape (N,) or a scalar (the batch's loss, then the loss "
                                 "is called one sample at a time)", got)


def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _brief(x, i: int, limit: int = 6) -> str:
    """Sample ``i`` of an input, briefly: ``[1.2, -0.3, ...]`` or the value."""
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}={_brief(v, i, 3)}" for k, v in x.items() if isinstance(v, Tensor)) + "}"
    if not isinstance(x, Tensor):
        return repr(x)
    row = x[i] if x.dim() and i < x.shape[0] else x
    vals = row.detach().reshape(-1).tolist()
    text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals[:limit])
    return (f"[{text}{', ...' if len(vals) > limit else ''}]" if row.dim() else text)


def per_sample(fn: Callable, options: dict, takes_aux: bool) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``(x, aux) -> (N,)``: call ``fn`` so that it returns one loss per sample.

    ``reduction='none'`` is passed when ``fn`` takes a ``reduction`` argument; otherwise a function that
    returns a scalar is called one sample at a time (slower, still correct).
    """
    try:
        params = inspect.signature(fn).parameters
        has_reduction = "reduction" in params
    except (TypeError, ValueError):
        has_reduction = False
    opts = {**({"reduction": "none"} if has_reduction else {}), **options}
    state: dict[str, bool] = {}

    def call(x, aux):
        return fn(x, aux, **opts) if takes_aux else fn(x, **opts)

    def refuse(out: Tensor, x: Tensor, n: int) -> LossOutputError:
        return LossOutputError(f"a tensor of shape {_shape(out)} for N = {n} samples (input of shape {_shape(x)})")

    def evaluate(x: Tensor, aux: Tensor | None) -> Tensor:
        n = x.shape[0]
        if not state.get("rowwise"):
            out = torch.as_tensor(call(x, aux))
            if out.dim() == 1 and out.shape[0] == n:
                return out
            if out.numel() == 1 and out.dim() <= 1:
                if n == 1:
                    return out.reshape(1)
                state["rowwise"] = True  # the batch's loss: call the loss one sample at a time
            else:
                raise refuse(out, x, n)
        rows = []
        for i in range(n):
            out = torch.as_tensor(call(x[i:i + 1], None if aux is None else aux[i:i + 1]))
            if out.numel() != 1 or out.dim() > 1:
                raise refuse(out, x[i:i + 1], 1)
            rows.append(out.reshape(()))
        return torch.stack(rows)

    return evaluate


def whole_batch(fn: Callable, options: dict, takes_aux: bool) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``(x, aux) -> (1,)``: a batch-coupled objective's value for the whole batch."""

    def evaluate(x: Tensor, aux: Tensor | None) -> Tensor:
        out = fn(x, aux, **options) if takes_aux else fn(x, **options)
        return torch.as_tensor(out).reshape(-1).sum().reshape(1)

    return evaluate


class Probe:
    """Base class. ``x`` has the sample dimension first; ``aux`` is ``None`` or has it first too.

    ``batch_coupled``: ``loss`` returns one value for the whole batch (checks that need per-sample
    losses, such as the conditional risk, do not apply).
    """

    batch_coupled = False
    row_hessian = True  # the Hessian check may evaluate the loss on single samples

    kind = "?"
    description = ""
    #: outcomes of the conditional risk (class labels / binary targets); None when there are none
    has_outcomes = False
    shift_meaningful = True

    def __init__(self, evaluate: Callable, k: int = 4, link: Callable | None = None):
        self.evaluate = evaluate
        self.k = k
        self._link = link
        #: while a property check runs: where the loss (or its gradient) was non-finite, in words
        self.non_finite: list[str] | None = None

    # ------------------------------------------------------------------ evaluation
    def loss(self, x: Tensor, aux: Tensor | None) -> Tensor:
        out = self.evaluate(x, aux)
        if not isinstance(out, Tensor):
            out = torch.as_tensor(out)
        out = out.reshape(-1)
        if self.non_finite is not None:
            bad = ~torch.isfinite(out.detach())
            if bad.any():
                i = int(bad.nonzero()[0])
                self._note(f"loss {out[i].item():g} at x = {_brief(x, i)}"
                           + ("" if aux is None or self.kind == "example" else f", aux = {_brief(aux, i, 4)}")
                           + (f" ({int(bad.sum())} of {out.numel()} values non-finite)" if out.numel() > 1 else ""))
        return out

    def note_grad(self, g: Tensor, x: Tensor, what: str = "gradient") -> None:
        """Record a non-finite gradient ``g`` of the loss at ``x`` (entries where ``x`` itself is +-inf, a
        masked class, are exempt)."""
        if self.non_finite is None:
            return
        bad = ~torch.isfinite(g) & torch.isfinite(x.detach())
        if bad.any():
            i = int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0]) if bad.dim() else 0
            self._note(f"{what} {g[bad][0].item():g} at x = {_brief(x, i)}")

    def _note(self, text: str) -> None:
        if len(self.non_finite) < 3 and text not in self.non_finite:
            self.non_finite.append(text)

    @contextlib.contextmanager
    def tracking(self):
        """Record non-finite evaluations (see :attr:`non_finite`) for the duration: yields the list."""
        before, self.non_finite = self.non_finite, []
        try:
            yield self.non_finite
        finally:
            self.non_finite = before

    @contextlib.contextmanager
    def untracked(self):
        """Evaluations that are not evidence (an optimiser's trial points, informational numbers)."""
        before, self.non_finite = self.non_finite, None
        try:
            yield
        finally:
            self.non_finite = before

    def cast(self, aux: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        return aux.to(dtype) if aux is not None and aux.is_floating_point() else aux

    # ------------------------------------------------------------------ inputs
    def random(self, gen: torch.Generator, n: int, scale: float = 2.0) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def worst(self, gen: torch.Generator, n: int, s: float) -> tuple[Tensor, Tensor | None]:
        """Inputs of magnitude ``s`` that push the loss up (the wrong class confidently predicted)."""
        raise NotImplementedError

    def shifted(self, x, aux, c: Tensor):
        return x + c.reshape(-1, *([1] * (x.dim() - 1))), aux

    def scaled(self, x, aux, a: float):
        return a * x, aux

    def permuted(self, x, aux, gen: torch.Generator):
        perm = torch.randperm(x.shape[-1], generator=gen)
        return x[..., perm], aux

    def masked(self, x, aux):
        """One class of each sample masked with -inf (a class the target does not need); None if n/a."""
        x = x.clone()
        x[:, -1] = -float("inf")
        return x, aux

    def margin_points(self, m: float):
        """(x, aux) with the right class ahead by ``m`` and behind by ``m``; None if n/a."""
        return None


class _OutcomeProbe(Probe):
    """Kinds whose second argument is an outcome (a label): the conditional risk is defined."""

    has_outcomes = True

    def outcomes(self) -> Tensor:
        raise NotImplementedError

    def rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every sample of ``x`` paired with every outcome: (x repeated, outcomes tiled)."""
        ys = self.outcomes()
        j = len(ys)
        return x.repeat_interleave(j, dim=0), ys.repeat(x.shape[0])

    def risk_table(self, x: Tensor) -> Tensor:
        """``L[m, j] = L(x_m, outcome_j)``, shape (M, J)."""
        xr, yr = self.rows(x)
        return self.loss(xr, yr.to(x.dtype) if yr.is_floating_point() else yr).reshape(x.shape[0], -1)

    def decision(self, x: Tensor) -> Tensor:
        """(M, J) scores whose argmax is the predicted outcome."""
        raise NotImplementedError

    def link(self, x: Tensor) -> Tensor:
        """(M, J) predicted distribution over the outcomes (for properness)."""
        raise NotImplementedError


class MulticlassProbe(_OutcomeProbe):
    kind = "multiclass"
    description = "logits (N, K) and class indices (N,)"

    def outcomes(self):
        return torch.arange(self.k)

    def random(self, gen, n, scale=2.0):
        x = scale * torch.randn(n, self.k, generator=gen, dtype=torch.float64)
        return x, torch.randint(0, self.k, (n,), generator=gen)

    def worst(self, gen, n, s):
        x, y = self.random(gen, n, 1.0)
        x = x + s * (1 - 2 * torch.nn.functional.one_hot(y, self.k).double())
        return x, y

    def permuted(self, x, aux, gen):
        perm = torch.randperm(self.k, generator=gen)
        inv = torch.argsort(perm)
        return x[:, perm], inv[aux]

    def masked(self, x, aux):
        x = x.clone()
        other = (aux + 1) % self.k
        x[torch.arange(x.shape[0]), other] = -float("inf")
        return x, aux

    def margin_points(self, m):
        y = torch.arange(self.k).repeat(2)
        x = torch.nn.functional.one_hot(y, self.k).double() * m
        return x, y

    def decision(self, x):
        return x

    def link(self, x):
        return torch.softmax(x, -1) if self._link is None else self._link(x)


class BinaryProbe(_OutcomeProbe):
    kind = "binary"
    description = "logits (N,) and targets in {0, 1} (N,)"
    shift_meaningful = False

    def outcomes(self):
        return torch.tensor([0.0, 1.0], dtype=torch.float64)

    def random(self, gen, n, scale=2.0):
        x = scale * torch.randn(n, generator=gen, dtype=torch.float64)
        return x, (torch.rand(n, generator=gen) < 0.5).double()

    def worst(self, gen, n, s):
        x, y = self.random(gen, n, 1.0)
        return x - s * (2 * y - 1), y

    def permuted(self, x, aux, gen):
        return -x, 1 - aux

    def masked(self, x, aux):
        return None

    def margin_points(self, m):
        y = torch.tensor([0.0, 1.0], dtype=torch.float64)
        return m * (2 * y - 1), y

    def decision(self, x):
        return torch.stack([-x, x], -1)

    def link(self, x):
        p = torch.sigmoid(x) if self._link is None else self._link(x)
        return torch.stack([1 - p, p], -1)


class DistributionsProbe(Probe):
    kind = "distributions"
    description = "two distributions p, q (N, K) given as logits"

    def random(self, gen, n, scale=2.0):
        p = scale * torch.randn(n, self.k, generator=gen, dtype=torch.float64)
        return p, scale * torch.randn(n, self.k, generator=gen, dtype=torch.float64)

    def worst(self, gen, n, s):
        i = torch.randint(0, self.k, (n,), generator=gen)
        j = (i + 1 + torch.randint(0, self.k - 1, (n,), generator=gen)) % self.k
        eye = torch.eye(self.k, dtype=torch.float64)
        return s * eye[i], s * eye[j]

    def shifted(self, x, aux, c):
        c = c.reshape(-1, 1)
        return x + c, aux - 0.5 * c

    def scaled(self, x, aux, a):
        return a * x, a * aux

    def permuted(self, x, aux, gen):
        perm = torch.randperm(self.k, generator=gen)
        return x[:, perm], aux[:, perm]

    def masked(self, x, aux):
        x, aux = x.clone(), aux.clone()
        x[:, -1] = -float("inf")
        aux[:, -1] = -float("inf")
        return x, aux


class LogitsProbe(Probe):
    kind = "logits"
    description = "logits (N, K) alone (a regulariser)"

    def random(self, gen, n, scale=2.0):
        return scale * torch.randn(n, self.k, generator=gen, dtype=torch.float64), None

    def worst(self, gen, n, s):
        x = torch.randn(n, self.k, generator=gen, dtype=torch.float64)
        return s * x / x.norm(dim=1, keepdim=True), None


class ExampleProbe(Probe):
    """Any other input kind, through the registry's example generator: ``x`` is the example's first
    differentiable input (random values of its shape), ``aux`` the example's other inputs, unchanged.

    Only the kind-free checks apply (values, invariances along the last dimension, convexity along
    random lines, gradients, finiteness).
    """

    kind = "example"
    description = "the registry's example inputs"
    row_hessian = False

    def __init__(self, evaluate: Callable, entry, seed: int = 0, relabel: str | None = None, **_):
        super().__init__(evaluate, k=0)
        self.relabel = relabel  # an input of class indices into x's last dimension (permuted with it)
        ex = entry.make_example(torch.float64, seed)
        floats = [k for k, v in ex.inputs.items() if isinstance(v, Tensor) and v.is_floating_point()]
        self.name = ex.grad[0] if ex.grad else floats[0]
        self.example = ex
        self.options = dict(ex.options)  # the example's options (required arguments, e.g. bin edges)
        self.description = f"{entry.input_kind.name}, varying {self.name!r} of the example inputs"

    def random(self, gen, n, scale=2.0):
        x0 = self.example.inputs[self.name]
        rest = {k: v for k, v in self.example.inputs.items() if k != self.name}
        return scale * torch.randn(x0.shape, generator=gen, dtype=torch.float64), rest

    def worst(self, gen, n, s):
        return self.random(gen, n, s)

    def cast(self, aux, dtype):
        return {k: v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in aux.items()}

    def permuted(self, x, aux, gen):
        k = x.shape[-1]
        perm = torch.randperm(k, generator=gen)
        other = {n: v[..., perm] if isinstance(v, Tensor) and v.dim() == x.dim() and v.shape[-1] == k else v
                 for n, v in aux.items()}
        if self.relabel is not None:
            other[self.relabel] = torch.argsort(perm)[aux[self.relabel]]
        return x[..., perm], other

    def masked(self, x, aux):
        return None


def example_evaluate(fn: Callable, options: dict, name: str) -> Callable:
    """``(x, aux)`` -> per-sample losses (or the batch's one value) for :class:`ExampleProbe`.

    ``options``: the example's options updated with the caller's."""
    try:
        has_reduction = "reduction" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        has_reduction = False
    opts = {**({"reduction": "none"} if has_reduction else {}), **options}

    def evaluate(x: Tensor, aux: dict) -> Tensor:
        out = torch.as_tensor(fn(**{**aux, name: x}, **opts))
        if out.dim() >= 1 and out.shape[0] == x.shape[0]:
            return out.reshape(x.shape[0], -1).sum(1)
        return out.reshape(-1).sum().reshape(1)

    return evaluate


KINDS: dict[str, type[Probe]] = {c.kind: c for c in (MulticlassProbe, BinaryProbe, DistributionsProbe, LogitsProbe)}
