"""The registry: one declaration per objective carries everything the rest of losskit reads.

An objective is a plain function decorated with :func:`objective`. The decorator

1. wraps it so that the shared conventions apply on every call (the ``reduction`` value is checked,
   NaN/+inf inputs raise :class:`LossInputError` naming the argument, an empty batch raises,
   float16/bfloat16 tensors are promoted to float32: see :mod:`losskit._core.conventions`),
2. builds its ``nn.Module`` form (``fn.Module``), whose constructor takes the function's keyword-only
   options and whose ``forward`` takes its positional inputs,
3. records an :class:`Objective` entry (family, paper, input kind, claimed properties, example-input
   generator, formula) that the conformance suite, ``losskit list/info/check`` and the arena read.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .conventions import promote
from .domains import Domain, check_option, resolve
from .errors import fail
from .validate import require
from .values import FINITE, FINITE_OR_NEG_INF, Values, check_values

__all__ = [
    "Paper",
    "STANDARD",
    "Example",
    "BadInput",
    "InputKind",
    "Objective",
    "PROPERTIES",
    "register_property",
    "objective",
    "make_module",
    "list_objectives",
    "objectives",
    "resolve_family",
    "get",
    "unregister",
]


# --------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class Paper:
    """Where an objective comes from. ``Paper("standard")`` for textbook objectives."""

    title: str
    year: int | None = None
    arxiv: str | None = None
    authors: str | None = None

    @property
    def is_standard(self) -> bool:
        return self.title == "standard"

    def cite(self) -> str:
        if self.is_standard:
            return "standard"
        parts = [self.title]
        if self.authors:
            parts.append(self.authors)
        if self.year:
            parts.append(str(self.year))
        if self.arxiv:
            parts.append(f"arXiv:{self.arxiv}")
        return ", ".join(parts)


STANDARD = Paper("standard")

#: Property names an objective may claim, with what the claim means. ``losskit check`` tests them.
PROPERTIES: dict[str, str] = {
    "nonnegative": "L >= 0 for every input",
    "convex": "convex in its (logit / score) input",
    "calibrated": "classification-calibrated: minimising the conditional risk picks argmax p",
    "proper": "strictly proper: the conditional risk is minimised by predicting p itself",
    "symmetric": "sum_k L(z, k) is constant in z (tolerant to symmetric label noise)",
    "bounded": "bounded above over all inputs",
    "shift_invariant": "L(z + c) = L(z) for a constant shift c of the logits",
    "scale_invariant": "L(a z) = L(z) for a > 0",
    "divergence": "D(p, q) >= 0 with equality iff p = q",
    "symmetric_divergence": "D(p, q) = D(q, p)",
    "permutation_equivariant": "permuting classes (logits and labels together) leaves L unchanged",
    # the numerical properties losskit check tests (one vocabulary for the registry and the checker)
    "finite_extreme": "finite loss and gradient at logits of magnitude 1e4 and with -inf masks",
    "finite_half": "finite loss and gradient for float16 and bfloat16 inputs",
    "gradient_on_errors": "the gradient does not vanish on confidently wrong predictions "
                          "(the true class behind by margins up to 300)",
    "no_softmax_collapse": "in float32 a confidently right prediction (margin 100) still gets a "
                           "nonzero loss and gradient (softmax collapse, arXiv:2501.04697)",
    "lipschitz": "the gradient stays bounded as the inputs grow (Lipschitz in the scores)",
}


def register_property(name: str, meaning: str) -> None:
    """Add a property name that objectives may claim (families with their own vocabulary)."""
    PROPERTIES.setdefault(name, meaning)


@dataclass
class Example:
    """Example inputs for one call: ``fn(**inputs, **options)`` or ``Module(**options)(*inputs)``.

    ``grad`` names the differentiable inputs; ``batched`` the inputs that split along dim 0 for the
    batch-split check (``None``: every tensor input).
    """

    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    grad: tuple[str, ...] = ()
    batched: tuple[str, ...] | None = None

    def call(self, fn: Callable, **overrides):
        return fn(**self.inputs, **{**self.options, **overrides})

    def batched_names(self) -> tuple[str, ...]:
        if self.batched is not None:
            return self.batched
        return tuple(k for k, v in self.inputs.items() if isinstance(v, torch.Tensor))

    def batch_size(self) -> int:
        return self.inputs[self.batched_names()[0]].shape[0]

    def map_floats(self, f: Callable[[torch.Tensor], torch.Tensor]) -> Example:
        """A copy with ``f`` applied to every floating-point tensor input (and tensor option)."""

        def g(v):
            return f(v) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

        return dataclasses.replace(
            self,
            inputs={k: g(v) for k, v in self.inputs.items()},
            options={k: g(v) for k, v in self.options.items()},
        )

    def replace(self, inputs: dict | None = None, options: dict | None = None) -> Example:
        return dataclasses.replace(
            self, inputs={**self.inputs, **(inputs or {})}, options={**self.options, **(options or {})}
        )

    def select(self, index: torch.Tensor | slice) -> Example:
        """The sub-batch ``index`` of the batched inputs."""
        names = self.batched_names()
        return dataclasses.replace(
            self, inputs={k: (v[index] if k in names else v) for k, v in self.inputs.items()}
        )


@dataclass
class BadInput:
    """A call that must raise :class:`LossInputError` whose message names ``argument``."""

    label: str
    example: Example
    argument: str


@dataclass(frozen=True)
class InputKind:
    """What an objective consumes, and how to break and stress such inputs.

    ``bad_inputs(example)`` lists calls that must raise; ``extreme(example)`` returns inputs at the edge
    of the float32 range (e.g. logits of +-1e4) where the loss and gradient must stay finite.
    ``values`` declares the value domain of named inputs (:class:`~losskit._core.values.Values`:
    log-probabilities <= 0, probabilities in [0, 1], ...); the wrapper checks them, the families do not.
    """

    name: str
    description: str
    bad_inputs: Callable[[Example], list[BadInput]] | None = None
    extreme: Callable[[Example], Example] | None = None
    values: dict[str, Values] = field(default_factory=dict)


@dataclass
class Objective:
    """A registry entry. Everything losskit knows about one objective."""

    name: str
    family: str
    fn: Callable
    module: type[nn.Module]
    paper: Paper
    input_kind: InputKind
    properties: frozenset[str]
    example: Callable[..., Example] | None
    formula: str = ""
    per_sample: bool = True
    sample_weight: bool = True
    half: bool = True
    gradcheck: bool = True
    extreme: bool = True
    compile: bool = True
    meta: bool = True
    domains: dict[str, Domain] = field(default_factory=dict)
    allow_neg_inf: tuple[str, ...] = ()
    values: dict[str, Values] = field(default_factory=dict)
    module_aliases: tuple[str, ...] = ()
    batch_scalar: bool = False
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> bool:
        """Whether the objective comes from one of the seed papers (a catalogue ★): it then needs an
        oracle test against the authors' code (``tests/oracles``) or a stated reason why none exists."""
        return bool(self.tags.get("seed", False))

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.split("\n\n")[0].replace("\n", " ").strip()

    @property
    def signature(self) -> str:
        return f"{self.fn.__name__}{inspect.signature(self.fn)}"

    @property
    def options(self) -> builtins.list[str]:
        """The keyword-only options of the functional form (what the Module's constructor takes)."""
        return [p.name for p in inspect.signature(self.fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def make_example(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> Example:
        if self.example is None:
            raise LookupError(f"objective {self.name!r} has no example-input generator")
        gen = torch.Generator().manual_seed(seed)
        return self.example(gen, dtype)

    def bad_inputs(self, ex: Example) -> list[BadInput]:
        return self.input_kind.bad_inputs(ex) if self.input_kind.bad_inputs else []

    def __repr__(self) -> str:
        return f"Objective({self.name!r}, family={self.family!r}, paper={self.paper.cite()!r})"


_REGISTRY: dict[str, Objective] = {}


# ------------------------------------------------------------------------------------ the wrapper
def _wrap(fn: Callable, allow_neg_inf: tuple[str, ...], unchecked: tuple[str, ...],
          promote_half: bool, domains: dict[str, Domain], meta: bool = True,
          values: dict[str, Values] | None = None) -> Callable:
    """The one validation pass every call goes through, before the objective's own code:

    1. options against their declared domains (:mod:`losskit._core.domains`), naming the option;
    2. an empty batch in the first input is an error;
    3. every floating tensor argument against its value domain (:mod:`losskit._core.values`): declared
       (log-probabilities <= 0, probabilities in [0, 1], ...) or finite (``-inf`` allowed where
       ``allow_neg_inf``), all in one pass, by the validation mode (:func:`losskit.set_validation`);
    4. the dtype policy: half-precision tensors computed in float32 (unless ``promote_half=False``),
       floating inputs of different dtypes promoted to a common dtype as torch's elementwise ops do,
       integer inputs (class indices) of any integer dtype taken as int64.

    Families check shapes and what only they know (label ranges, probabilities summing to one).
    """
    sig = inspect.signature(fn)
    params = sig.parameters
    # each argument's value domain, resolved once: declared, else finite (-inf allowed in allow_neg_inf);
    # None for the unchecked ones
    domain_of = {k: None if k in unchecked else (values or {}).get(k)
                 or (FINITE_OR_NEG_INF if k in allow_neg_inf else FINITE) for k in params}
    first_input = next(iter(params), None)
    inputs = tuple(p.name for p in params.values()
                   if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))

    simple = all(p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                 for p in params.values())
    known = frozenset(params)

    def bind(args, kwargs) -> dict:
        # The common case without inspect.Signature.bind (about 20 us a call): positional arguments in
        # order, then keywords; anything unusual (too many, duplicated or unknown names) goes to bind()
        # for its error message.
        if simple and len(args) <= len(inputs) and not (kwargs.keys() - known):
            arguments = dict(zip(inputs, args))
            if not (arguments.keys() & kwargs.keys()):
                arguments.update(kwargs)
                return arguments
        try:
            return dict(sig.bind(*args, **kwargs).arguments)
        except TypeError as e:
            raise TypeError(f"{fn.__name__}(): {e}") from None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        arguments = bind(args, kwargs)
        for name, value in arguments.items():
            dom = domains.get(name)
            if dom is not None:
                check_option(name, value, dom, arguments)
                if isinstance(value, torch.Tensor) and value.numel() and dom.tensor_values:
                    require(name, value, lambda d=dom, v=value: d.tensor_bad(v), dom.description,
                            lambda v=value: f"values in [{v.min().item():.6g}, {v.max().item():.6g}]")
        first = arguments.get(first_input)
        if not meta:
            for name, value in arguments.items():
                if isinstance(value, torch.Tensor) and value.is_meta:
                    raise fail(name, "a tensor with data (this objective's solver reads values; meta tensors "
                                     "are not supported)", "a meta tensor")
        if isinstance(first, torch.Tensor) and first.numel() == 0:
            raise fail(first_input, "a non-empty batch", f"shape {tuple(first.shape)} with no elements")
        check_values([(k, v, domain_of[k]) for k, v in arguments.items() if isinstance(v, torch.Tensor)
                      and v.is_floating_point() and v.numel() and domain_of.get(k) is not None])
        if promote_half:
            for name, value in arguments.items():
                if isinstance(value, torch.Tensor):
                    arguments[name] = promote(value)
            floats = [k for k in inputs if isinstance(arguments.get(k), torch.Tensor)
                      and arguments[k].is_floating_point()]
            if len({arguments[k].dtype for k in floats}) > 1:
                common = functools.reduce(torch.promote_types, (arguments[k].dtype for k in floats))
                for k in floats:
                    arguments[k] = arguments[k].to(common)
        for k in inputs:
            v = arguments.get(k)
            if (isinstance(v, torch.Tensor) and not v.is_floating_point() and not v.is_complex()
                    and v.dtype not in (torch.bool, torch.int64)):
                arguments[k] = v.long()
        return fn(**arguments)

    wrapper.__signature__ = sig
    return wrapper


def make_module(fn: Callable, class_name: str, doc: str | None = None) -> type[nn.Module]:
    """The ``nn.Module`` form of a functional objective.

    The constructor takes the keyword-only options of ``fn`` (tensor options become buffers, so
    ``.to(device)`` moves them); ``forward`` takes the positional inputs and may override options.
    """
    sig = inspect.signature(fn)
    option_names = [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    input_names = [p.name for p in sig.parameters.values()
                   if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]

    def __init__(self, **options):
        nn.Module.__init__(self)
        unknown = set(options) - set(option_names)
        if unknown:
            raise TypeError(f"{class_name}() got unexpected options {sorted(unknown)}; "
                            f"it takes {option_names}")
        self._option_names = []
        self._tensor_options = []
        for k, v in options.items():
            if isinstance(v, torch.Tensor):
                self.register_buffer(k, v)
                self._tensor_options.append(k)
            else:
                setattr(self, k, v)
                self._option_names.append(k)

    def forward(self, *args, **kwargs):
        opts = {k: getattr(self, k) for k in self._option_names + self._tensor_options}
        opts.update(kwargs)
        return fn(*args, **opts)

    def extra_repr(self):
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._option_names)

    # A real signature for introspection, IDEs and help(): the constructor takes the functional's
    # keyword-only options (same names, defaults, annotations), forward its inputs (and option overrides).
    params = sig.parameters.values()
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = inspect.Signature(
        [self_param, *(p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)])
    forward.__signature__ = inspect.Signature(
        [self_param, *(p for p in params if p.name in input_names),
         inspect.Parameter("overrides", inspect.Parameter.VAR_KEYWORD)], return_annotation=sig.return_annotation)
    __init__.__doc__ = (f"Options as the keyword arguments of :func:`losskit.{fn.__name__}` "
                        f"({', '.join(option_names)}); tensor options become buffers.")
    forward.__doc__ = (f"``{fn.__name__}({', '.join(input_names)}, **options)`` with this module's options; "
                       f"keyword arguments override them for this call.")
    for method in (__init__, forward, extra_repr):
        method.__qualname__ = f"{class_name}.{method.__name__}"
    fn_doc = inspect.getdoc(fn)
    header = (f"Module form of :func:`losskit.{fn.__name__}`: ``{class_name}(**options)(inputs)`` = "
              f"``{fn.__name__}(inputs, **options)``; options ({', '.join(option_names)}), inputs "
              f"({', '.join(input_names)}).")
    cls = type(class_name, (nn.Module,), {
        "__init__": __init__, "forward": forward, "extra_repr": extra_repr,
        "__doc__": doc or (f"{header}\n\n{fn_doc}" if fn_doc else header),
        "functional": staticmethod(fn),
        "__module__": fn.__module__,
        "__qualname__": class_name,
    })
    return cls


# ---------------------------------------------------------------------------------- module names
#: Words written in capitals in Module class names (acronyms of the objectives' papers).
ACRONYMS = {w: w.upper() for w in (
    "aot", "apo", "bco", "cdpo", "cpl", "cpo", "d2o", "ddo", "dpo", "egpo", "exo", "fdpg", "grpo", "ipo", "kd",
    "kl", "kto", "mapl", "mmd", "mnpo", "mp", "nca", "ot", "po", "sppo", "orpo", "dro", "lm", "js", "gce", "mae",
    "sce", "hl", "ldr", "aldr", "dcl", "tcm", "cwcl", "clip", "eata", "dho", "bd", "gt", "ps", "wpc", "nwj", "dv",
    "fgan", "vicreg", "mv", "dhel",
)}
ACRONYMS.update({"alphapo": "AlphaPO", "simpo": "SimPO", "sparsepo": "SparsePO", "discopop": "DiscoPOP",
                 "infonce": "InfoNCE", "ntxent": "NTXent", "supcon": "SupCon", "isogclr": "ISogCLR",
                 "tempnet": "TempNet", "1d": "1D", "f": "F", "disco": "Disco", "b": "B"})
#: Class names that already name what they compute; other names get the suffix ``Loss``.
_NOUNS = ("Loss", "Divergence", "Distance", "Bound", "Gap", "Entropy", "Penalty", "Distillation", "MMD", "OT",
          "KD", "1D", "Wasserstein", "Chi2", "Hellinger", "Variation", "Sinkhorn", "Twins")


def module_class_name(name: str) -> str:
    """The one naming rule for Module classes: the registry name in CamelCase, paper acronyms in capitals
    (:data:`ACRONYMS`), and ``Loss`` appended unless the name already says what it computes
    (``KLDivergence``, ``EnergyDistance``, ``SinkhornDivergence``). Objectives registered before the rule
    keep their class names (given as ``module_name``); see ``Objective.module_aliases``."""
    words = [ACRONYMS.get(w, w.capitalize()) for w in name.split("_")]
    out = "".join(words)
    return out if words[-1] in _NOUNS or out.endswith(_NOUNS[:1]) else out + "Loss"


# ---------------------------------------------------------------------------------- registration
def objective(
    name: str,
    *,
    family: str,
    input_kind: InputKind,
    example: Callable[..., Example] | None,
    paper: Paper = STANDARD,
    properties: Iterable[str] = (),
    formula: str = "",
    module_name: str | None = None,
    allow_neg_inf: Iterable[str] = ("logits", "input", "log_probs", "student_logits", "teacher_logits"),
    unchecked: Iterable[str] = (),
    per_sample: bool = True,
    sample_weight: bool = True,
    half: bool = True,
    gradcheck: bool = True,
    extreme: bool = True,
    compile: bool = True,
    meta: bool = True,
    batch_scalar: bool = False,
    promote_half: bool = True,
    domains: dict[str, Domain] | None = None,
    values: dict[str, Values] | None = None,
    **tags: Any,
) -> Callable[[Callable], Callable]:
    """Register a functional objective (decorator). See the module docstring for what it adds.

    ``domains`` maps each keyword option to its :class:`~losskit._core.domains.Domain` (options named as
    in :data:`~losskit._core.domains.COMMON` may omit theirs); the wrapper validates every option passed.
    ``meta=False`` declares that the objective reads tensor values to run (an iterative solver) and so
    refuses tensors without data (meta) with a :class:`LossInputError`. ``batch_scalar=True`` declares
    that the objective is one loss for the whole batch (``per_sample=False``, no per-sample losses):
    ``reduction`` is accepted for a uniform signature and has no effect (every value returns that scalar;
    the conformance suite checks it, ``losskit info`` says it).

    ``values`` declares the value domain of tensor inputs (on top of the input kind's ``values``); an input
    without one must be finite (``-inf`` allowed for the names in ``allow_neg_inf``).
    ``unchecked`` names inputs that may legitimately hold NaN/inf (e.g. logits at masked positions
    that the objective never reads). ``promote_half=False`` leaves float16/bfloat16 inputs as they
    are: the objective applies the dtype policy itself (e.g. bfloat16 GEMMs with float32 accumulation).
    """
    props = frozenset(properties)
    unknown = props - set(PROPERTIES)
    if unknown:
        raise ValueError(f"{name}: unknown properties {sorted(unknown)}; known: {sorted(PROPERTIES)}")

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].fn.__wrapped__ is not fn:  # type: ignore[attr-defined]
            raise ValueError(f"objective {name!r} is already registered")
        option_names = [p.name for p in inspect.signature(fn).parameters.values()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY]
        unknown_opts = set(domains or {}) - set(option_names)
        if unknown_opts:
            raise ValueError(f"{name}: domains declared for {sorted(unknown_opts)}, which are not options of "
                             f"{fn.__name__}")
        if batch_scalar and per_sample:
            raise ValueError(f"{name}: batch_scalar=True needs per_sample=False")
        resolved = resolve(option_names, domains)
        declared = {**input_kind.values, **(values or {})}
        params = inspect.signature(fn).parameters
        declared = {k: v for k, v in declared.items() if k in params}
        wrapped = _wrap(fn, tuple(allow_neg_inf), tuple(unchecked), promote_half, resolved, meta, declared)
        cls_name = module_name or module_class_name(name)
        wrapped.Module = make_module(wrapped, cls_name)
        old = "".join(p.capitalize() for p in name.split("_"))  # the name rule before module_class_name
        aliases = (old,) if old != cls_name and module_name is None else ()
        _REGISTRY[name] = Objective(
            name=name, family=family, fn=wrapped, module=wrapped.Module, paper=paper,
            input_kind=input_kind, properties=props, example=example, formula=formula,
            per_sample=per_sample, sample_weight=sample_weight, half=half, gradcheck=gradcheck,
            extreme=extreme, compile=compile, meta=meta, domains=resolved,
            allow_neg_inf=tuple(allow_neg_inf), values=declared, module_aliases=aliases, batch_scalar=batch_scalar, tags=tags,
        )
        wrapped.objective_name = name
        return wrapped

    return deco


def unregister(name: str) -> None:
    """Remove an entry (for tests that register throw-away objectives)."""
    _REGISTRY.pop(name, None)


def resolve_family(family: str) -> str:
    """The registry's name of a family, accepting the package names and plurals the docs use
    (``divergences`` / ``divergence``, ``regularizers`` / ``regularisers`` / ``regularizer``), any case.
    An unknown name raises :class:`ValueError` listing the families."""
    known = families()
    key = family.strip().lower().replace("iser", "izer")
    for name in known:
        if key in (name, name + "s"):
            return name
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown family {family!r}{hint}; families: {', '.join(known)} "
                     f"(plural forms such as 'divergences' are accepted too)")


def objectives(family: str | None = None) -> builtins.list[Objective]:
    """Registry entries, sorted by family then name; only ``family`` if given (``'divergences'`` and
    ``'divergence'`` alike: :func:`resolve_family`; an unknown family raises :class:`ValueError`)."""
    if family is not None:
        family = resolve_family(family)
    items = [o for o in _REGISTRY.values() if family is None or o.family == family]
    return sorted(items, key=lambda o: (o.family, o.name))


def list_objectives(family: str | None = None) -> builtins.list[str]:
    """Names of the registered objectives (``losskit.list``), of one family if given (aliases accepted,
    an unknown family raises :class:`ValueError` with the valid choices)."""
    return [o.name for o in objectives(family)]


def families() -> builtins.list[str]:
    """The families' registry names (``losskit list --family`` accepts their plurals too)."""
    return sorted({o.family for o in _REGISTRY.values()})


def get(name: str) -> Objective:
    """The registry entry called ``name`` (``losskit.get``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no objective named {name!r}{hint}") from None
