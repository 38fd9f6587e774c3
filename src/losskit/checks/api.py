"""The Python API of ``losskit check``: :func:`check` (a :class:`~._report.Report` of verdicts per property).

The command line (argument parsing, printing, exit codes) is :mod:`losskit.checks.cli`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .._core.errors import LossInputError
from .._core.registry import PROPERTIES, Objective, get
from ._links import resolve_link
from ._probes import KINDS, ExampleProbe, LossOutputError, Probe, example_evaluate, per_sample, whole_batch
from ._properties import PROPERTY_CHECKS, skipped
from ._report import FAIL, SKIP, Report, Verdict

__all__ = ["check", "load_callable", "INPUT_KINDS"]

_INPUTS = {"multiclass": {"logits", "target"}, "binary": {"logits", "target"}, "distributions": {"p", "q"},
           "logits": {"logits"}}

#: registry input-kind names -> the checker's kinds
INPUT_KINDS = {"logits+labels": "multiclass", "binary logits+targets": "binary",
               "two distributions": "distributions", "logits": "logits"}


def load_callable(spec: str) -> Callable:
    """``'package.module:function'`` or ``'path/to/file.py:function'`` -> the function."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expected 'module:function' or 'file.py:function', got {spec!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name).resolve()
        if not path.exists():
            raise ValueError(f"no file {mod_name!r}")
        s = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(mod_name)
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"{mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


def _resolve(fn_or_name) -> tuple[str, Callable, Objective | None]:
    if isinstance(fn_or_name, Objective):
        return fn_or_name.name, fn_or_name.fn, fn_or_name
    if isinstance(fn_or_name, str):
        if ":" in fn_or_name:
            fn = load_callable(fn_or_name)
            name = getattr(fn, "objective_name", None)
            return (name, fn, get(name)) if name else (fn_or_name, fn, None)
        entry = get(fn_or_name)
        return entry.name, entry.fn, entry
    functional = getattr(type(fn_or_name), "functional", None)
    if isinstance(fn_or_name, torch.nn.Module) and hasattr(functional, "objective_name"):
        return functional.objective_name, functional, get(functional.objective_name)
    if not callable(fn_or_name):
        raise TypeError(f"check() takes a registered name, 'module:function' or a callable, "
                        f"not {type(fn_or_name).__name__}")
    name = getattr(fn_or_name, "objective_name", None)
    if name is not None:
        return name, fn_or_name, get(name)
    return getattr(fn_or_name, "__qualname__", repr(fn_or_name)), fn_or_name, None


def check(fn_or_name: str | Callable | Objective, properties: Iterable[str] | None = None, *,
          kind: str | None = None, options: dict[str, Any] | None = None, claims: Iterable[str] | None = None,
          link: Callable | None = None, num_classes: int = 4, seed: int = 0) -> Report:
    """Check a loss's properties numerically; one :class:`Verdict` (with evidence) per property.

    Args:
        fn_or_name: a registered objective's name, function or Module instance (its options are used),
            ``'module:function'`` / ``'file.py:function'``, or a
            callable ``fn(x, aux, **options)``: ``(logits, target)`` for ``multiclass``/``binary``,
            ``(p_logits, q_logits)`` for ``distributions``, ``(logits)`` for ``logits``. It should
            return per-sample losses or accept ``reduction='none'``.
        properties: which checks to run (names in :data:`PROPERTY_CHECKS`); default: every check that applies
            to the kind, plus any claimed property (reported as skipped if it cannot be checked).
        kind: the input kind of a user's callable (default ``'multiclass'``); a registered objective's
            kind comes from its registry entry.
        options: keyword options passed to the loss on every call (e.g. ``{'q': 0.7}``).
        claims: properties a user's callable claims (a registered objective's claims are its entry's);
            ``report.ok`` is True when every claimed property holds.
        link: the map from scores to predicted probabilities used by ``proper``: a callable or a name in
            :data:`LINKS` (``'softmax'`` default, ``'sigmoid'`` default for ``binary``, ``'stablemax'``,
            ``'sparsemax'``); a registered objective sets it with the ``link=`` registry tag.
        num_classes: K for the random inputs.
        seed: the seed of every random input (the report is deterministic).
    """
    label, fn, entry = _resolve(fn_or_name)
    opts = dict(options or {})
    if isinstance(fn_or_name, torch.nn.Module) and entry is not None:  # a losskit Module: its options
        own = getattr(fn_or_name, "_option_names", []) + getattr(fn_or_name, "_tensor_options", [])
        opts = {**{k: getattr(fn_or_name, k) for k in own if k != "reduction"}, **opts}
    if entry is not None:
        opts = {**entry.tags.get("check_options", {}), **opts}
        claimed = set(entry.properties) | set(claims or ())
        if kind is None:
            kind = INPUT_KINDS.get(entry.input_kind.name)
            if kind is not None and entry.example is not None and set(entry.make_example().inputs) - _INPUTS[kind]:
                kind = None  # inputs beyond the kind's (e.g. a per-sample temperature): use the example
        link = link or entry.tags.get("link")
    else:
        claimed = set(claims or ())
        kind = kind or "multiclass"
    wanted = list(properties) if properties is not None else None
    for p in (wanted or []) + sorted(claimed):
        if p not in PROPERTY_CHECKS and p not in PROPERTIES:
            raise ValueError(f"unknown property {p!r}; known: {sorted(set(PROPERTY_CHECKS) | set(PROPERTIES))}")
    start = time.perf_counter()
    if entry is None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")
    if entry is not None and kind is None:
        if entry.example is None:
            why = (f"losskit check does not support input kind {entry.input_kind.name!r} without an example "
                   f"generator (supported: {', '.join(sorted(INPUT_KINDS))})")
            names = wanted if wanted is not None else sorted(claimed)
            verdicts = [Verdict(n, SKIP, why, claimed=n in claimed) for n in names]
            return Report(label, entry.input_kind.name, verdicts, time.perf_counter() - start, f"not checked: {why}")
        kind = "example"
    if wanted is None:
        wanted = [n for n, c in PROPERTY_CHECKS.items() if kind in c.kinds] + sorted(claimed - set(PROPERTY_CHECKS))
        wanted += [n for n in sorted(claimed) if n in PROPERTY_CHECKS and n not in wanted]
    coupled = entry is not None and not entry.per_sample
    if kind == "example":
        labels = INPUT_KINDS.get(entry.input_kind.name) == "multiclass"
        probe = ExampleProbe(None, entry, seed, relabel="target" if labels else None)
        probe.evaluate = example_evaluate(fn, {**probe.options, **opts}, probe.name)
    else:
        evaluate = (whole_batch if coupled else per_sample)(fn, opts, takes_aux=kind != "logits")
        probe = KINDS[kind](evaluate, k=num_classes, link=resolve_link(link))
    probe.batch_coupled = coupled
    gen = torch.Generator().manual_seed(seed)
    verdicts = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 tensors: threads only add synchronisation
    try:
        # a stochastic loss draws from the global generator: seed it, and leave the caller's state alone
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            if kind != "example" and not coupled:
                _check_output(probe, seed)  # a misshapen loss is refused before any property runs
                torch.manual_seed(seed)
            for name in wanted:
                verdicts.append(_run_one(name, kind, probe, gen, seed))
                verdicts[-1].claimed = name in claimed
    finally:
        torch.set_num_threads(threads)
    setting = ("" if kind in ("binary", "example") else f"K={num_classes}, ") + f"float64, seed {seed}"
    setting += ", whole-batch values (batch-coupled)" if coupled else ""
    setting += (f", options {opts}" if opts else "") + (f", link {link}" if isinstance(link, str) else "")
    return Report(label, f"{kind}: {probe.description}", verdicts, time.perf_counter() - start, setting)


def _check_output(probe: Probe, seed: int) -> None:
    """Raise :class:`LossOutputError` if the loss does not return per-sample losses on ordinary inputs.

    N is chosen unlike K, so that a (K,)-shaped output is not mistaken for an (N,) one. Other errors are
    left to the property checks, which report them per property.
    """
    x, aux = probe.random(torch.Generator().manual_seed(seed), probe.k + 3, 1.0)
    try:
        probe.loss(x, aux)
    except LossOutputError:
        raise
    except Exception:  # noqa: BLE001 (reported by each check)
        pass


def _run_one(name: str, kind: str, probe: Probe, gen: torch.Generator, seed: int) -> Verdict:
    """One property's verdict. A property is never certified from non-finite evidence: if the loss (or its
    gradient) was NaN or +-inf at a point the check evaluated as evidence, the verdict fails and its
    evidence starts with ``non-finite values at ...``."""
    with probe.tracking() as non_finite:
        verdict = _run_tracked(name, kind, probe, gen, seed)
    if verdict.status == SKIP or not non_finite or verdict.evidence.startswith("non-finite values at"):
        return verdict
    return Verdict(name, FAIL, f"non-finite values at {non_finite[0]}; {verdict.evidence}"
                   + ("" if verdict.fails else " (not certified: a property is never certified from "
                                               "non-finite values)"),
                   {**verdict.numbers, "non_finite": list(non_finite)})


def _run_tracked(name: str, kind: str, probe: Probe, gen: torch.Generator, seed: int) -> Verdict:
    c = PROPERTY_CHECKS.get(name)
    if c is None:
        return skipped(name, "no numerical check for this property yet")
    if kind not in c.kinds:
        return skipped(name, f"does not apply to {kind} inputs ({c.why_not})" if c.why_not
                       else f"does not apply to {kind} inputs")
    if probe.batch_coupled and not c.whole_batch:
        return skipped(name, "needs per-sample losses; this objective is batch-coupled")
    gen.manual_seed(seed + zlib.crc32(name.encode()) % 1000)  # each check its own stream, stable
    try:
        return c.run(probe, gen)
    except LossOutputError as e:
        return Verdict(name, FAIL, str(e))
    except LossInputError as e:
        if probe.kind == "example":  # random values of the example's shape need not be valid inputs
            return skipped(name, f"the loss rejects random inputs of its example's shape: {e}")
        return Verdict(name, FAIL, f"the loss rejected valid inputs: {e}")
    except Exception as e:  # noqa: BLE001 (a loss that raises on valid inputs fails the check)
        return Verdict(name, FAIL, f"the loss raised {type(e).__name__} on valid inputs: {e}")
