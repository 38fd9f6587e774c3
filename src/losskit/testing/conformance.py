"""The conformance checks run over the whole registry (and usable on a user's own objective).

Each check takes an :class:`~losskit.Objective` and raises ``AssertionError`` with a message saying
what broke, or :class:`Skip` when the objective declares the check does not apply (and why).
``tests/test_conformance.py`` parametrises every check over every registered objective, so a new
objective is covered by registering it.

Tolerances (stated once, here):

* gradcheck in float64 with ``eps=1e-6, atol=1e-5, rtol=1e-3``;
* reductions and batch-split agreement: ``rtol=1e-10, atol=1e-12`` in float64;
* half precision: the float16/bfloat16 result must equal the float32 result computed on the same
  (rounded) inputs to ``rtol=1e-4`` (losskit computes half inputs in float32), and the float32 result
  on the unrounded inputs to ``rtol=atol=5e-2`` (bfloat16) / ``1e-2`` (float16);
* Module vs functional and ``torch.compile`` vs eager: ``rtol=1e-6`` in float64.

The edge checks (issue "trust at the edges") generate their cases from the registry entry rather than
from hand-written lists: invalid option values from each option's declared domain, meta tensors,
fully masked rows and 1e30 inputs, other integer label dtypes, mixed float dtypes, batch-size
mismatches and ignored targets. An objective passes by raising :class:`LossInputError` naming the
right argument, or by giving the value the conventions define; any other exception is an internal
error and fails the check.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os

import torch

from .._core import LossInputError
from .._core.domains import Domain
from .._core.registry import BadInput, Example, Objective

__all__ = ["Skip", "CHECKS", "check_conformance"]

F64 = dict(rtol=1e-10, atol=1e-12)


class Skip(Exception):
    """The objective declares that this check does not apply (the message says why)."""


def _call(entry: Objective, ex: Example, **overrides):
    return ex.call(entry.fn, **overrides)


def _close(a: torch.Tensor, b: torch.Tensor, what: str, **tol) -> None:
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if not torch.allclose(a.double(), b.double(), equal_nan=False, **tol):
        diff = (a.double() - b.double()).abs().max().item()
        raise AssertionError(f"{what}: values differ (max abs diff {diff:.3g}; {tol})\n{a}\nvs\n{b}")


def _takes(entry: Objective, name: str) -> bool:
    return name in inspect.signature(entry.fn).parameters


def _require_grad(ex: Example) -> Example:
    return ex.replace({k: ex.inputs[k].detach().clone().requires_grad_(True) for k in ex.grad})


# ------------------------------------------------------------------------------------------ checks
def check_example(entry: Objective) -> None:
    """The entry has an example-input generator whose example runs and names real inputs."""
    if entry.example is None:
        raise AssertionError(f"{entry.name}: registered without an example-input generator")
    ex = entry.make_example(torch.float64)
    params = inspect.signature(entry.fn).parameters
    for k in list(ex.inputs) + list(ex.options):
        if k not in params:
            raise AssertionError(f"{entry.name}: example names {k!r}, not a parameter of {entry.signature}")
    for k in ex.grad:
        if k not in ex.inputs or not ex.inputs[k].is_floating_point():
            raise AssertionError(f"{entry.name}: grad input {k!r} is not a floating example input")
    if not _takes(entry, "reduction"):
        raise AssertionError(f"{entry.name}: takes no 'reduction' argument (a losskit convention)")


def check_documented(entry: Objective) -> None:
    """The docstring gives a formula and cites the paper (title or arXiv id) unless standard."""
    doc = inspect.getdoc(entry.fn) or ""
    if len(doc) < 40:
        raise AssertionError(f"{entry.name}: docstring missing or too short")
    if not entry.formula:
        raise AssertionError(f"{entry.name}: no formula in the registry entry")
    p = entry.paper
    if not p.is_standard and not ((p.arxiv and p.arxiv in doc) or p.title.lower()[:30] in doc.lower()):
        raise AssertionError(f"{entry.name}: docstring does not cite {p.cite()!r}")


def check_gradcheck(entry: Objective) -> None:
    """float64 ``torch.autograd.gradcheck`` of the 'none' (or default) output w.r.t. every grad input."""
    if not entry.gradcheck:
        raise Skip("entry declares gradcheck=False")
    ex = entry.make_example(torch.float64)
    if not ex.grad:
        raise Skip("no differentiable inputs")
    names = ex.grad
    red = "none" if entry.per_sample else "mean"

    def f(*xs):
        return _call(entry, ex.replace(dict(zip(names, xs))), reduction=red)

    xs = tuple(ex.inputs[k].detach().clone().requires_grad_(True) for k in names)
    try:
        ok = torch.autograd.gradcheck(f, xs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True)
    except Exception as e:  # GradcheckError and friends
        raise AssertionError(f"{entry.name}: gradcheck failed: {str(e)[:800]}") from None
    if not ok:
        raise AssertionError(f"{entry.name}: gradcheck failed")


def check_reductions(entry: Objective) -> None:
    """'sum' = none.sum(); 'mean' = none.mean(); with sample weights the weighted versions. A
    ``batch_scalar`` objective (one loss for the batch) gives the same scalar for every reduction; an
    objective not declared so must not ignore ``reduction`` (its 'none' differs from its 'mean')."""
    ex = entry.make_example(torch.float64)
    if entry.batch_scalar:
        outs = [_tensor_out(_call(entry, ex, reduction=r)) for r in ("mean", "sum", "none")]
        if outs[0].dim() != 0:
            raise AssertionError(f"{entry.name}: 'mean' must return a scalar, got {tuple(outs[0].shape)}")
        for r, o in zip(("sum", "none"), outs[1:]):
            _close(o, outs[0], f"{entry.name}: batch_scalar objective: '{r}' vs 'mean'", **F64)
        return
    none = _call(entry, ex, reduction="none")
    if not entry.per_sample and none.dim() == 0:
        raise AssertionError(f"{entry.name}: reduction='none' returns a scalar: the objective ignores "
                             f"'reduction'; declare batch_scalar=True")
    total = _call(entry, ex, reduction="sum")
    mean = _call(entry, ex, reduction="mean")
    if total.dim() != 0 or mean.dim() != 0:
        raise AssertionError(f"{entry.name}: 'sum'/'mean' must return scalars, got {tuple(total.shape)}")
    _close(total, none.sum(), f"{entry.name}: sum vs none.sum()", **F64)
    _close(mean, none.mean(), f"{entry.name}: mean vs none.mean()", **F64)
    if not entry.sample_weight:
        return
    if not _takes(entry, "sample_weight"):
        raise AssertionError(f"{entry.name}: per-sample objective without a 'sample_weight' argument")
    gen = torch.Generator().manual_seed(1)
    w = torch.rand(none.shape[0], generator=gen, dtype=torch.float64) + 0.1
    wb = w.reshape((-1,) + (1,) * (none.dim() - 1)).expand_as(none)
    none_w = _call(entry, ex, reduction="none", sample_weight=w)
    _close(none_w, none * wb, f"{entry.name}: 'none' with sample_weight vs w * none", **F64)
    _close(_call(entry, ex, reduction="sum", sample_weight=w), (none * wb).sum(),
           f"{entry.name}: weighted 'sum'", **F64)
    _close(_call(entry, ex, reduction="mean", sample_weight=w), (none * wb).sum() / wb.sum(),
           f"{entry.name}: weighted 'mean' is not sum(w l) / sum(w)", **F64)


def check_batch_split(entry: Objective) -> None:
    """Per-sample losses do not depend on the rest of the batch (halves, and a permutation)."""
    if not entry.per_sample:
        raise Skip("batch-coupled objective (per_sample=False)")
    ex = entry.make_example(torch.float64)
    n = ex.batch_size()
    if n < 2:
        raise AssertionError(f"{entry.name}: example batch of {n} is too small to split")
    whole = _call(entry, ex, reduction="none")
    parts = [_call(entry, ex.select(slice(0, n // 2)), reduction="none"),
             _call(entry, ex.select(slice(n // 2, n)), reduction="none")]
    _close(torch.cat(parts), whole, f"{entry.name}: batch split changes per-sample losses", **F64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    _close(_call(entry, ex.select(perm), reduction="none"), whole[perm],
           f"{entry.name}: permuting the batch does not permute the losses", **F64)


def check_extreme(entry: Objective) -> None:
    """Finite loss and gradients at the input kind's extreme inputs (e.g. float32 logits of +-1e4)."""
    if not entry.extreme or entry.input_kind.extreme is None:
        raise Skip("no extreme-input builder for this objective / input kind")
    ex = entry.input_kind.extreme(entry.make_example(torch.float32))
    ex = _require_grad(ex)
    loss = _call(entry, ex)
    if not bool(torch.isfinite(loss).all()):
        raise AssertionError(f"{entry.name}: non-finite loss {loss} at extreme inputs")
    loss.sum().backward()
    for k in ex.grad:
        g = ex.inputs[k].grad
        if g is None or not bool(torch.isfinite(g).all()):
            raise AssertionError(f"{entry.name}: non-finite or missing gradient for {k!r} at extreme inputs")


def _half(entry: Objective, dtype: torch.dtype, loose: float) -> None:
    if not entry.half:
        raise Skip("entry declares half=False")
    ex32 = entry.make_example(torch.float32)
    exh = _require_grad(ex32.map_floats(lambda t: t.to(dtype)))
    out = _call(entry, exh)
    if out.dtype != torch.float32:
        raise AssertionError(f"{entry.name}: {dtype} input gave a {out.dtype} loss; the dtype policy says float32")
    rounded = _call(entry, exh.map_floats(lambda t: t.detach().float()))
    _close(out, rounded, f"{entry.name}: {dtype} result vs float32 on the same rounded inputs", rtol=1e-4, atol=1e-6)
    _close(out, _call(entry, ex32), f"{entry.name}: {dtype} result vs float32", rtol=loose, atol=loose)
    out.sum().backward()
    for k in exh.grad:
        g = exh.inputs[k].grad
        if g is None or g.dtype != dtype or not bool(torch.isfinite(g).all()):
            raise AssertionError(f"{entry.name}: gradient for {k!r} missing, not {dtype}, or not finite")


def check_float16(entry: Objective) -> None:
    """float16 inputs: computed in float32, close to the float32 result, finite gradients."""
    _half(entry, torch.float16, 1e-2)


def check_bfloat16(entry: Objective) -> None:
    """bfloat16 inputs: computed in float32, close to the float32 result, finite gradients."""
    _half(entry, torch.bfloat16, 5e-2)


def generic_bad_inputs(entry: Objective, ex: Example) -> list[BadInput]:
    """Bad inputs every objective must reject, whatever its input kind."""
    bad = [BadInput("unknown reduction", ex.replace(options={"reduction": "avg"}), "reduction")]
    first = next(iter(ex.inputs))
    bad.append(BadInput("empty batch", ex.replace({first: ex.inputs[first][:0]}), first))
    for k in ex.grad:
        x = ex.inputs[k].clone()
        x.view(-1)[0] = float("nan")
        bad.append(BadInput(f"NaN in {k}", ex.replace({k: x}), k))
    if entry.sample_weight and _takes(entry, "sample_weight"):
        n = ex.batch_size()
        bad.append(BadInput("sample_weight of the wrong length",
                            ex.replace(options={"sample_weight": torch.ones(n + 3, dtype=torch.float64)}),
                            "sample_weight"))
        bad.append(BadInput("negative sample_weight",
                            ex.replace(options={"sample_weight": -torch.ones(n, dtype=torch.float64)}),
                            "sample_weight"))
    return bad


def check_bad_inputs(entry: Objective) -> None:
    """Every class of bad input raises LossInputError, and its message starts with the argument's name."""
    ex = entry.make_example(torch.float64)
    cases = generic_bad_inputs(entry, ex) + entry.bad_inputs(ex)
    for case in cases:
        try:
            _call(entry, case.example)
        except LossInputError as e:
            if not str(e).startswith(f"{case.argument}:"):
                raise AssertionError(f"{entry.name}: {case.label}: message should name {case.argument!r} "
                                     f"first, got: {e}") from None
            continue
        except Exception as e:  # noqa: BLE001 - any other exception is a failure of the convention
            raise AssertionError(f"{entry.name}: {case.label}: raised {type(e).__name__} ({e}), "
                                 f"expected LossInputError naming {case.argument!r}") from None
        raise AssertionError(f"{entry.name}: {case.label}: no error raised (expected LossInputError "
                             f"naming {case.argument!r})")


def check_module(entry: Objective) -> None:
    """``Module(**options)(*inputs)`` equals ``fn(*inputs, **options)``, for every reduction."""
    ex = entry.make_example(torch.float64)
    if not (isinstance(entry.module, type) and issubclass(entry.module, torch.nn.Module)):
        raise AssertionError(f"{entry.name}: module is not an nn.Module class")
    for red in ("mean", "sum", "none"):
        m = entry.module(**{**ex.options, "reduction": red})
        _close(m(*ex.inputs.values()), _call(entry, ex, reduction=red),
               f"{entry.name}: Module vs functional (reduction={red})", rtol=1e-12, atol=1e-12)


def check_compile(entry: Objective) -> None:
    """``torch.compile(fullgraph=True)`` gives the eager value, with validation on (backend from
    LOSSKIT_COMPILE_BACKEND, default aot_eager): no graph break, value checks included."""
    if not entry.compile:
        raise Skip("entry declares compile=False")
    import torch._dynamo

    backend = os.environ.get("LOSSKIT_COMPILE_BACKEND", "aot_eager")
    ex = entry.make_example(torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(entry.fn, backend=backend, fullgraph=True)
    try:
        out = compiled(**ex.inputs, **ex.options)
    except Exception as e:  # noqa: BLE001 - a graph break under fullgraph=True, or a compile failure
        raise AssertionError(f"{entry.name}: torch.compile(fullgraph=True) failed: "
                             f"{type(e).__name__}: {str(e)[:600]}") from None
    _close(out, _call(entry, ex), f"{entry.name}: torch.compile({backend}) vs eager", rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------ edge checks
def _expect_error_or(entry: Objective, label: str, ex: Example, arguments, ok=None, **overrides):
    """Call; a LossInputError must name one of ``arguments``; otherwise ``ok(result)`` must hold.

    Returns the result (None after an accepted error). Any other exception fails.
    """
    try:
        out = _call(entry, ex, **overrides)
    except LossInputError as e:
        if arguments is not None and not any(str(e).startswith(f"{a}:") for a in arguments):
            raise AssertionError(f"{entry.name}: {label}: LossInputError should name one of {list(arguments)}, "
                                 f"got: {e}") from None
        return None
    except Exception as e:  # noqa: BLE001 - an internal error: what the convention forbids
        raise AssertionError(f"{entry.name}: {label}: internal error {type(e).__name__}: {str(e)[:300]}") from None
    if ok is not None:
        msg = ok(out)
        if msg:
            raise AssertionError(f"{entry.name}: {label}: {msg}")
    return out


def _tensor_out(out):
    return out[0] if isinstance(out, tuple) else out


def check_domains(entry: Objective) -> None:
    """Every option declares its domain; defaults and the example's options lie in their domains."""
    params = inspect.signature(entry.fn).parameters
    missing = [n for n in entry.options if n not in entry.domains]
    if missing:
        raise AssertionError(f"{entry.name}: options without a declared domain: {missing} (declare them in "
                             f"@objective(domains=...))")
    for n in entry.options:
        d: Domain = entry.domains[n]
        default = params[n].default
        if default is not inspect.Parameter.empty and not d.contains(default, {}):
            raise AssertionError(f"{entry.name}: default {n}={default!r} is outside its domain {d.description}")
    ex = entry.make_example(torch.float64)
    for n, v in ex.options.items():
        if n in entry.domains and not entry.domains[n].contains(v, ex.inputs):
            raise AssertionError(f"{entry.name}: example option {n}={v!r} is outside its domain "
                                 f"{entry.domains[n].description}")


def check_hyperparameters(entry: Objective) -> None:
    """Invalid values generated from each option's domain raise LossInputError naming the option; the
    domain's valid boundaries are accepted (never refused for that option) and give no NaN."""
    ex = entry.make_example(torch.float64)
    for name, dom in entry.domains.items():
        for v in dom.invalid():
            try:
                _call(entry, ex, **{name: v})
            except LossInputError as e:
                if not str(e).startswith(f"{name}:"):
                    raise AssertionError(f"{entry.name}: {name}={v!r}: LossInputError should name {name!r} first, "
                                         f"got: {e}") from None
                continue
            except Exception as e:  # noqa: BLE001
                raise AssertionError(f"{entry.name}: {name}={v!r}: internal error {type(e).__name__}: "
                                     f"{str(e)[:300]}") from None
            raise AssertionError(f"{entry.name}: {name}={v!r} (outside {dom.description}) gave a value instead "
                                 f"of LossInputError")
        for v in dom.boundaries():
            if name == "reduction":
                continue

            def finite(out, v=v, name=name):
                t = _tensor_out(out)
                if isinstance(t, torch.Tensor) and torch.isnan(t).any():
                    return f"valid boundary {name}={v!r} gave NaN"
                return None

            _expect_error_or(entry, f"valid boundary {name}={v!r}",
                             ex, [a for a in list(ex.inputs) + list(entry.options) if a != name], finite,
                             **{name: v})


def _to_meta(v):
    return v.to("meta") if isinstance(v, torch.Tensor) else v


def check_meta(entry: Objective) -> None:
    """Meta tensors (no data): the result's shape and dtype as on CPU, with no value read; an objective
    declaring ``meta=False`` (its solver reads values) refuses them with LossInputError instead."""
    ex = entry.make_example(torch.float32)
    mex = dataclasses.replace(ex, inputs={k: _to_meta(v) for k, v in ex.inputs.items()},
                              options={k: _to_meta(v) for k, v in ex.options.items()})
    red = "none" if entry.per_sample else "mean"
    if not entry.meta:
        try:
            _call(entry, mex, reduction=red)
        except LossInputError:
            return
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{entry.name}: meta inputs (meta=False): internal error {type(e).__name__}: "
                                 f"{str(e)[:300]}") from None
        raise AssertionError(f"{entry.name}: declares meta=False but accepted meta tensors")
    ref = _tensor_out(_call(entry, ex, reduction=red))
    try:
        out = _tensor_out(_call(entry, mex, reduction=red))
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{entry.name}: meta inputs: {type(e).__name__}: {str(e)[:300]} (declare meta=False "
                             f"if the objective must read values)") from None
    if out.device.type != "meta" or out.shape != ref.shape or out.dtype != ref.dtype:
        raise AssertionError(f"{entry.name}: meta inputs gave {out.device} {tuple(out.shape)} {out.dtype}, "
                             f"expected meta {tuple(ref.shape)} {ref.dtype}")


def _no_nan(out):
    t = _tensor_out(out)
    if isinstance(t, torch.Tensor) and t.is_floating_point():
        if torch.isnan(t).any():
            return f"NaN result {t}"
        if (t == float("-inf")).any():
            return f"-inf result {t} (an optimiser would read 'infinitely good')"
    return None


def check_nonfinite_policy(entry: Objective) -> None:
    """The non-finite policy of the conventions: a fully masked (all ``-inf``) sample in a logit /
    log-probability input raises LossInputError naming it, or gives a defined, non-NaN value; inputs of
    magnitude 1e30 in float32 give no NaN (or LossInputError naming the input)."""
    ex = entry.make_example(torch.float32)
    allowed = entry.allow_neg_inf
    for k in ex.grad:
        x = ex.inputs[k]
        if k in allowed and x.dim() >= 1:
            xm = x.detach().clone()
            xm[0] = float("-inf")
            _expect_error_or(entry, f"fully masked sample 0 of {k}", ex.replace({k: xm}), [k], _no_nan)
        big = (x.detach().sign() + (x.detach() == 0)) * 1e30 + x.detach()
        exb = _require_grad(ex.replace({k: big}))
        out = _expect_error_or(entry, f"{k} of magnitude 1e30", exb, list(ex.inputs), _no_nan)
        if out is not None:
            t = _tensor_out(out)
            if t.requires_grad and torch.isfinite(t).all():
                t.sum().backward()
                g = exb.inputs[k].grad
                if g is not None and torch.isnan(g).any():
                    raise AssertionError(f"{entry.name}: {k} of magnitude 1e30: NaN gradient")


def check_dtypes(entry: Objective) -> None:
    """Integer inputs of any integer dtype give the int64 result; mixed float dtypes are promoted as torch's
    elementwise ops do (or refused with LossInputError)."""
    ex = entry.make_example(torch.float64)
    ref = _tensor_out(_call(entry, ex))
    ints = [k for k, v in ex.inputs.items() if isinstance(v, torch.Tensor) and not v.is_floating_point()
            and v.dtype != torch.bool and not v.is_complex()]
    for k in ints:
        for dt in (torch.int32, torch.int16) if ex.inputs[k].abs().max() < 2**15 else (torch.int32,):
            out = _expect_error_or(entry, f"{k} as {dt}", ex.replace({k: ex.inputs[k].to(dt)}), None)
            if out is None:
                raise AssertionError(f"{entry.name}: {k} as {dt} was refused; integer labels of any integer "
                                     f"dtype are accepted, as torch does")
            _close(_tensor_out(out), ref, f"{entry.name}: {k} as {dt}", **F64)
    floats = [k for k, v in ex.inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if len(floats) >= 2:
        k = floats[0]
        low = ex.inputs[k].float()
        out = _expect_error_or(entry, f"{k} as float32 beside float64 inputs", ex.replace({k: low}), floats)
        if out is not None:
            want = _tensor_out(_call(entry, ex.replace({k: low.double()})))
            t = _tensor_out(out)
            if t.dtype != torch.float64:
                raise AssertionError(f"{entry.name}: mixed float32/float64 inputs gave {t.dtype}, expected the "
                                     f"promoted float64")
            _close(t, want, f"{entry.name}: mixed float32/float64 inputs vs promoted", rtol=1e-6, atol=1e-8)


def check_batch_mismatch(entry: Objective) -> None:
    """Per-sample objectives: a batched input one sample short raises LossInputError naming an input."""
    if not entry.per_sample:
        raise Skip("batch-coupled objective (per_sample=False)")
    ex = entry.make_example(torch.float64)
    names = [k for k in ex.batched_names() if isinstance(ex.inputs[k], torch.Tensor) and ex.inputs[k].dim() >= 1]
    if len(names) < 2:
        raise Skip("a single batched input")
    for k in names[1:]:
        _expect_error_or(entry, f"{k} one sample short", ex.replace({k: ex.inputs[k][:-1]}), list(ex.inputs),
                         lambda out, k=k: f"{k} one sample short gave a value instead of LossInputError")


def check_label_grad(entry: Objective) -> None:
    """Floating inputs that are not differentiated in the example (soft targets, teacher outputs,
    preference probabilities) may arrive with ``requires_grad=True``: the call works (or refuses them with
    a LossInputError naming the input) and backward gives finite gradients, as torch's losses do."""
    ex = entry.make_example(torch.float64)
    others = [k for k, v in ex.inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
              and k not in ex.grad]
    if not others:
        raise Skip("every floating input is differentiated in the example")
    for k in others:
        exk = _require_grad(dataclasses.replace(ex, grad=ex.grad + (k,)))
        out = _expect_error_or(entry, f"{k} with requires_grad=True", exk, [k])
        if out is None:
            continue
        t = _tensor_out(out)
        try:
            t.sum().backward()
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{entry.name}: backward with {k} requiring grad: {type(e).__name__}: "
                                 f"{str(e)[:300]}") from None
        for name in exk.grad:
            g = exk.inputs[name].grad
            if g is not None and not torch.isfinite(g).all():
                raise AssertionError(f"{entry.name}: non-finite gradient for {name!r} with {k} requiring grad")


def check_ignore_index(entry: Objective) -> None:
    """``ignore_index``: ignored samples give an exact 0 under 'none' and leave 'mean' and 'sum' equal to
    those of the kept samples alone; an all-ignored batch gives 0."""
    if not _takes(entry, "ignore_index"):
        raise Skip("takes no ignore_index")
    ex = entry.make_example(torch.float64)
    ints = [k for k, v in ex.inputs.items() if isinstance(v, torch.Tensor) and not v.is_floating_point()
            and v.dtype != torch.bool]
    if not ints:
        raise Skip("example has no class-index target")
    k = ints[0]
    ii = ex.options.get("ignore_index", inspect.signature(entry.fn).parameters["ignore_index"].default)
    t = ex.inputs[k]
    n = t.shape[0]
    keep = torch.arange(n) % 2 == 0
    ign = torch.where(keep.reshape((-1,) + (1,) * (t.dim() - 1)).expand_as(t), t, torch.full_like(t, ii))
    exi = ex.replace({k: ign})
    if entry.per_sample:
        none = _call(entry, exi, reduction="none")
        dropped = none[~keep]
        if not bool((dropped == 0).all()):
            raise AssertionError(f"{entry.name}: ignored samples' 'none' losses are not 0: {dropped}")
    # batch-coupled objectives too: an ignored sample takes no part in the batch's loss
    sub = ex.select(keep)
    for red in ("mean", "sum") if entry.per_sample else ("mean",):
        _close(_call(entry, exi, reduction=red), _call(entry, sub, reduction=red),
               f"{entry.name}: '{red}' with half the targets ignored vs the kept samples alone", **F64)
    exa = ex.replace({k: torch.full_like(t, ii)})
    for red in ("mean", "sum"):
        out = _call(entry, exa, reduction=red)
        if not bool((out == 0).all()):
            raise AssertionError(f"{entry.name}: an all-ignored batch gave {red}={out}, expected 0")


def check_values(entry: Objective) -> None:
    """Every declared value domain of an input (``InputKind.values`` / ``@objective(values=...)``) is
    enforced: one entry of that input set just outside a finite bound (above ``hi``, below ``lo``), or a
    row of a ``rows`` domain masked entirely, raises LossInputError naming the input."""
    ex = entry.make_example()
    cases = 0
    for name, dom in entry.values.items():
        x = ex.inputs.get(name)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            continue
        bad = []
        if dom.hi < math.inf:
            bad.append(("above", dom.hi + max(1.0, abs(dom.hi))))
        if dom.lo > -math.inf:
            bad.append(("below", dom.lo - max(1.0, abs(dom.lo))))
        for where, value in bad:
            y = x.detach().clone()
            y.reshape(-1)[0] = value
            _expect_raises(entry, f"{name} {where} its domain ({dom.description})", ex.replace({name: y}), name)
            cases += 1
        if dom.rows is not None and x.dim() >= 2:
            y = x.detach().clone()
            y[0].fill_(float("-inf"))  # every row of the first sample
            _expect_raises(entry, f"{name} with a row masked entirely", ex.replace({name: y}), name)
            cases += 1
    if not cases:
        raise Skip("no input declares a value domain with a finite bound")


def _expect_raises(entry: Objective, label: str, ex: Example, name: str) -> None:
    try:
        _call(entry, ex)
    except LossInputError as e:
        if not str(e).startswith(f"{name}:"):
            raise AssertionError(f"{entry.name}: {label}: the error should name {name}, got: {e}") from None
        return
    raise AssertionError(f"{entry.name}: {label}: no LossInputError (a silent value on invalid input)")


CHECKS = {
    "example": check_example,
    "documented": check_documented,
    "gradcheck": check_gradcheck,
    "reductions": check_reductions,
    "batch_split": check_batch_split,
    "extreme": check_extreme,
    "float16": check_float16,
    "bfloat16": check_bfloat16,
    "bad_inputs": check_bad_inputs,
    "module": check_module,
    "compile": check_compile,
    "domains": check_domains,
    "hyperparameters": check_hyperparameters,
    "meta": check_meta,
    "nonfinite": check_nonfinite_policy,
    "dtypes": check_dtypes,
    "batch_mismatch": check_batch_mismatch,
    "ignore_index": check_ignore_index,
    "label_grad": check_label_grad,
    "values": check_values,
}


def explain_skip(entry: Objective, check: str, skip: Skip) -> str:
    """The generic reason for a skip, followed by the objective's own (registry tag ``skip_reasons``)."""
    own = (entry.tags.get("skip_reasons") or {}).get(check)
    return f"{skip} ({own})" if own else str(skip)


def check_conformance(entry: Objective, checks=None) -> dict[str, str]:
    """Run the checks on ``entry``; return ``{check: 'ok' | 'skip: why' | 'FAIL: why'}``."""
    out = {}
    for name in checks or CHECKS:
        try:
            CHECKS[name](entry)
            out[name] = "ok"
        except Skip as s:
            out[name] = f"skip: {explain_skip(entry, name, s)}"
        except AssertionError as e:
            out[name] = f"FAIL: {e}"
    return out
