"""Registering your own objective without losskit's private modules: :func:`register`.

A registered objective joins ``losskit list/info/check``, the conformance suite
(:func:`losskit.testing.check_conformance`) and the arena (candidates are looked up by name), and gets
the conventions of every losskit objective: ``sample_weight`` and ``reduction``, option domains checked on
every call, NaN/+inf inputs refused with a :class:`~losskit.LossInputError` naming the argument, half
precision computed in float32, a generated ``nn.Module`` with the options as its constructor's signature.

You write a function of the inputs of one of the public input kinds (:data:`INPUTS`), named as the kind
names them, that returns **one loss per sample**, with keyword-only options::

    @losskit.register("my_loss", inputs="multiclass", formula="L = ...", options={"gamma": POSITIVE})
    def my_loss(logits, target, *, gamma=1.0):
        \"\"\"One line; the formula; the paper.\"\"\"
        return per_sample_losses          # shape (N,)

losskit validates the inputs as the kind says (shapes, class-index range, ...) before your function runs,
and adds ``sample_weight=None, reduction='mean'``. Option domains: :data:`POSITIVE`, :data:`UNIT`,
:class:`Real`, :class:`Integer`, :class:`Choice`, ... (re-exported here).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ._core.domains import (
    COMMON,
    COUNT,
    FLAG,
    HALF_OPEN_UNIT,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    REAL,
    UNIT,
    Choice,
    Domain,
    Flag,
    Integer,
    Maybe,
    Real,
)
from ._core.errors import fail
from ._core.inputs import BINARY_LOGITS, LOGITS_LABELS, binary_example, logits_labels_example
from ._core.reduction import finish
from ._core.registry import STANDARD, BadInput, Example, InputKind, Paper, objective
from ._core.registry import unregister as _unregister
from ._core.validate import require

__all__ = ["register", "unregister", "INPUTS", "PublicInputs", "Domain", "Real", "Integer", "Choice", "Flag",
           "Maybe", "POSITIVE", "NONNEGATIVE", "UNIT", "OPEN_UNIT", "HALF_OPEN_UNIT", "REAL", "COUNT", "FLAG"]


@dataclass(frozen=True)
class PublicInputs:
    """One public input kind: the input names your function takes (in this order), what they are, how
    losskit validates them, and the example inputs the conformance checks and ``losskit check`` use."""

    name: str
    names: tuple[str, ...]
    kind: InputKind
    example: Callable[..., Example]
    validate: Callable[[dict], None]


def _floating(name: str, x, what: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise fail(name, f"a floating-point tensor ({what})", got)


def _dims(name: str, x: torch.Tensor, dims: int, what: str) -> None:
    if x.dim() != dims:
        raise fail(name, what, f"shape {tuple(x.shape)}")


def _same_batch(name: str, x: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if x.shape[0] != ref.shape[0]:
        raise fail(name, f"{ref.shape[0]} samples, as {ref_name}", f"{x.shape[0]} (shape {tuple(x.shape)})")


# ------------------------------------------------------------------------------------------ multiclass
def _multiclass_validate(a: dict) -> None:
    logits, target = a["logits"], a["target"]
    _floating("logits", logits, "logits (N, K)")
    _dims("logits", logits, 2, "logits of shape (N, K)")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        got = f"{target.dtype} tensor" if isinstance(target, torch.Tensor) else type(target).__name__
        raise fail("target", "integer class indices (N,)", got)
    _dims("target", target, 1, "class indices of shape (N,)")
    _same_batch("target", target, logits, "logits")
    k = logits.shape[1]
    require("target", target, lambda: ((target < 0) | (target >= k)).any(), f"class indices in [0, {k})",
            lambda: f"values in [{target.min().item()}, {target.max().item()}]")


# ---------------------------------------------------------------------------------------------- binary
def _binary_validate(a: dict) -> None:
    logits, target = a["logits"], a["target"]
    _floating("logits", logits, "logits")
    _floating("target", target, "targets in [0, 1]")
    if target.shape != logits.shape:
        raise fail("target", f"the shape of logits {tuple(logits.shape)}", f"shape {tuple(target.shape)}")
    require("target", target, lambda: ((target < 0) | (target > 1)).any(), "targets in [0, 1]",
            lambda: f"values in [{target.min().item():.6g}, {target.max().item():.6g}]")


# -------------------------------------------------------------------------------------- embedding pair
def _pair_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 4) -> Example:
    z1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"z1": z1.to(dtype), "z2": z2.to(dtype)}, grad=("z1", "z2"))


def _pair_validate(a: dict) -> None:
    z1, z2 = a["z1"], a["z2"]
    for name, z in (("z1", z1), ("z2", z2)):
        _floating(name, z, "embeddings (N, D)")
        _dims(name, z, 2, "embeddings of shape (N, D)")
    if z2.shape != z1.shape:
        raise fail("z2", f"the shape of z1 {tuple(z1.shape)}", f"shape {tuple(z2.shape)}")


def _pair_bad(ex: Example) -> list[BadInput]:
    z1, z2 = ex.inputs["z1"], ex.inputs["z2"]
    inf = z2.clone()
    inf[1, 0] = float("inf")
    return [
        BadInput("batch size mismatch", ex.replace({"z2": z2[:-1]}), "z2"),
        BadInput("feature size mismatch", ex.replace({"z2": z2[:, :-1]}), "z2"),
        BadInput("no feature dimension", ex.replace({"z1": z1[:, 0], "z2": z2[:, 0]}), "z1"),
        BadInput("integer embeddings", ex.replace({"z1": z1.round().long()}), "z1"),
        BadInput("+inf embedding", ex.replace({"z2": inf}), "z2"),
    ]


# ------------------------------------------------------------------------------------- preference pair
_PREF = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pref_example(gen: torch.Generator, dtype: torch.dtype, b: int = 6) -> Example:
    s = -(1.0 + 20 * torch.rand(4, b, generator=gen, dtype=torch.float64))
    return Example({k: s[i].to(dtype) for i, k in enumerate(_PREF)}, grad=_PREF[:2])


def _pref_validate(a: dict) -> None:
    ref = a[_PREF[0]]
    for name in _PREF:
        x = a[name]
        _floating(name, x, "sequence log-probabilities (B,)")
        if x.dim() != 1:
            hint = (" (per-token log-probs: sum them per sequence first, losskit.preference.sequence_scores)"
                    if x.dim() == 2 else "")
            raise fail(name, f"sequence scores of shape (B,){hint}", f"shape {tuple(x.shape)}")
        if x.shape != ref.shape:
            raise fail(name, f"the shape of {_PREF[0]} {tuple(ref.shape)}", f"shape {tuple(x.shape)}")


def _pref_bad(ex: Example) -> list[BadInput]:
    pc, pr = ex.inputs[_PREF[0]], ex.inputs[_PREF[1]]
    return [
        BadInput("batch size mismatch", ex.replace({_PREF[1]: pr[:-1]}), _PREF[1]),
        BadInput("per-token log-probs", ex.replace({_PREF[1]: pr[:, None].expand(-1, 3).clone()}), _PREF[1]),
        BadInput("integer scores", ex.replace({_PREF[0]: pc.round().long()}), _PREF[0]),
    ]


def _scale_all(scale: float):
    def extreme(ex: Example) -> Example:
        return ex.map_floats(lambda t: (t.sign() * scale + t).float())

    return extreme


#: The public input kinds: ``register(..., inputs=NAME)``. Your function's first parameters carry these
#: names, in this order.
INPUTS: dict[str, PublicInputs] = {p.name: p for p in (
    # the kinds of losskit's own classification losses (their bad inputs, extremes, losskit check probes)
    PublicInputs("multiclass", ("logits", "target"), LOGITS_LABELS, logits_labels_example, _multiclass_validate),
    PublicInputs("binary", ("logits", "target"), BINARY_LOGITS, binary_example, _binary_validate),
    PublicInputs("embedding pair", ("z1", "z2"),
                 InputKind("embedding pair (public)", "two embedding batches (N, D), rows i positives of each other",
                           bad_inputs=_pair_bad, extreme=_scale_all(1e3)),
                 _pair_example, _pair_validate),
    PublicInputs("preference pair", _PREF,
                 InputKind("preference pair (public)", "(B,) sequence log-probs of chosen and rejected completions under "
                                              "the policy and the reference",
                           bad_inputs=_pref_bad, extreme=_scale_all(100.0)),
                 _pref_example, _pref_validate),
)}


def register(name: str, *, inputs: str, formula: str, paper: Paper | tuple | None = None,
             family: str = "custom", properties: Iterable[str] = (), options: dict[str, Domain] | None = None,
             batch_coupled: bool = False, **flags) -> Callable[[Callable], Callable]:
    """Register a per-sample objective ``fn(<inputs>, *, options) -> (N,)`` (decorator); returns the
    losskit functional (with ``sample_weight`` and ``reduction`` added, inputs validated), whose
    ``.Module`` is its ``nn.Module`` form.

    ``inputs``: one of :data:`INPUTS` (``'multiclass'``, ``'binary'``, ``'embedding pair'``,
    ``'preference pair'``). ``formula``: the formula in one line (``losskit info`` prints it).
    ``paper``: ``losskit.Paper(title, year, arxiv)`` or a ``(title, year, arxiv)`` tuple (``None``: a
    standard objective); the docstring must cite it. ``properties``: names from ``losskit.PROPERTIES``
    that ``losskit check`` then verifies. ``options``: the domain of every keyword-only option
    (:data:`POSITIVE`, ``Real(0, 1)``, ``Choice('a', 'b')``, ...). ``batch_coupled``: each sample's loss
    depends on the rest of the batch (contrastive losses). ``flags``: the registry's declarations for the
    conformance checks, e.g. ``compile=False``, ``half=False``, ``gradcheck=False``.
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs: expected one of {', '.join(map(repr, INPUTS))}, got {inputs!r}")
    spec = INPUTS[inputs]
    if isinstance(paper, tuple):
        paper = Paper(*paper)
    known_flags = {"half", "gradcheck", "extreme", "compile", "meta", "promote_half"}
    if set(flags) - known_flags:
        raise ValueError(f"register(): unknown flags {sorted(set(flags) - known_flags)}; known: {sorted(known_flags)}")

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        if tuple(positional) != spec.names:
            raise ValueError(f"{name}: inputs={inputs!r} needs the parameters ({', '.join(spec.names)}) before "
                             f"the keyword-only options; {fn.__name__} has ({', '.join(positional)})")
        opts = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        taken = {"sample_weight", "reduction"} & {p.name for p in opts}
        if taken or any(p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD,
                                   inspect.Parameter.POSITIONAL_ONLY) for p in params):
            raise ValueError(f"{name}: {fn.__name__} takes its inputs and keyword-only options only, and "
                             f"returns one loss per sample (losskit adds sample_weight and reduction)")
        undeclared = [p.name for p in opts if p.name not in (options or {}) and p.name not in COMMON]
        if undeclared:
            raise ValueError(f"{name}: declare the domain of every option in options={{...}} "
                             f"(e.g. POSITIVE, Real(0, 1), Choice('a', 'b')); missing: {undeclared}")

        def objective_fn(**arguments):
            reduction = arguments.pop("reduction", "mean")
            sample_weight = arguments.pop("sample_weight", None)
            spec.validate(arguments)
            per = fn(**arguments)
            return finish(per, reduction, sample_weight=sample_weight)

        objective_fn.__name__ = objective_fn.__qualname__ = fn.__name__
        objective_fn.__module__ = fn.__module__
        objective_fn.__doc__ = fn.__doc__
        extra = [inspect.Parameter("sample_weight", inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation="torch.Tensor | None"),
                 inspect.Parameter("reduction", inspect.Parameter.KEYWORD_ONLY, default="mean", annotation="str")]
        objective_fn.__signature__ = sig.replace(parameters=[*params, *extra], return_annotation="torch.Tensor")
        objective_fn.user_function = fn
        return objective(name, family=family, input_kind=spec.kind, example=spec.example,
                         paper=paper or STANDARD, properties=properties, formula=formula,
                         allow_neg_inf=(), per_sample=not batch_coupled, domains=dict(options or {}),
                         **flags)(objective_fn)

    return deco


def unregister(name: str) -> None:
    """Remove a registered objective (e.g. to register it again after editing it in a notebook)."""
    _unregister(name)
