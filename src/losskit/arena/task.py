"""The arena's one abstraction: a :class:`Task` (data, model, metrics, candidates, baseline).

A task is a small plug-in. It names its metrics (the first is the one leaderboards rank by), lists
candidate objectives (a registry name plus hyperparameters), names the baseline the significance test
compares against, and implements :meth:`Task.run`: train / solve once for one candidate and one seed
under one configuration and return the metrics. Everything else (which trials to run, resuming, the
process pool or Ray, the results store, leaderboards, the report) is the arena's and works for every
task, including the user's own::

    from losskit.arena import Candidate, Task, TrialResult, register_task

    class MyTask(Task):
        name = "my_task"
        metrics = ("accuracy",)
        baseline = "cross_entropy"
        defaults = {"epochs": 50}

        def candidates(self):
            return [Candidate("cross_entropy"), Candidate("focal", {"gamma": 2.0})]

        def run(self, candidate, seed, config):
            ...
            return TrialResult({"accuracy": acc})

    register_task(MyTask())

Candidates are looked up in the losskit registry by name when a trial runs; a candidate whose objective
is not registered is skipped with a note, never a crash.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Candidate",
    "Task",
    "TrialResult",
    "Unavailable",
    "register_task",
    "get_task",
    "tasks",
    "bind_call",
    "parse_candidate",
    "canonical",
]


def canonical(obj: Any) -> str:
    """The canonical JSON text of a config / hyperparameter dict (the store's key)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Candidate:
    """One contender: a registry name, its hyperparameters, and how leaderboards show it.

    ``options`` are passed to the objective as keyword arguments; a task may resolve symbolic values
    (e.g. ``weight="inverse_frequency"``) from its data before the call. ``requires`` names other
    registry entries the candidate needs (checked together with ``objective``).
    """

    objective: str
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    requires: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if not self.options:
            return self.objective
        args = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.objective}({args})"

    @property
    def hparams(self) -> str:
        return canonical(dict(self.options))

    def missing(self) -> list[str]:
        """Registry names this candidate needs that are not registered (empty: runnable)."""
        from .._core import list_objectives

        have = set(list_objectives())
        return [n for n in (self.objective, *self.requires) if n not in have]

    def entry(self):
        from .._core import get

        return get(self.objective)


@dataclass
class TrialResult:
    """What one trial produced: ``metrics`` (name -> float) and an optional learning curve.

    ``curve`` is a list of ``(step, value)`` pairs of ``curve_metric`` measured during training.
    """

    metrics: dict[str, float]
    curve: list[tuple[float, float]] = field(default_factory=list)
    curve_metric: str = ""
    #: CPU seconds the trial took (set by the runner; wall time depends on the machine's load).
    cpu_s: float = 0.0


class Unavailable(Exception):
    """Raised by a task when a candidate cannot run (objective missing, inputs it cannot feed)."""


class Task:
    """Base class of an arena task. Subclasses set the class attributes and implement :meth:`run`.

    Attributes
    ----------
    name: the task's name on the command line.
    description: one line for ``losskit arena list`` and the report.
    metrics: metric names; the first ranks the leaderboard.
    lower_is_better: metric names where smaller wins (default: larger wins).
    baseline: the candidate name (``Candidate.name``) the significance test compares against.
    defaults: the configuration (dataset, noise rate, epochs, ...); ``--set k=v`` overrides it.
    quick: candidate names in the quick default suite (``None``: all of them).
    quick_config: overrides for the quick suite (fewer epochs, ...).
    """

    name: str = "task"
    description: str = ""
    metrics: tuple[str, ...] = ("score",)
    lower_is_better: frozenset[str] = frozenset()
    baseline: str = ""
    defaults: dict[str, Any] = {}
    quick: tuple[str, ...] | None = None
    quick_config: dict[str, Any] = {}
    #: Settings the quick suite sweeps (e.g. ``{"noise": [0.0, 0.4]}``).
    quick_sweep: dict[str, list] = {}
    #: Qualitative claims from the papers that the report checks: callables (leaderboard) -> Claim.
    claims: tuple[Callable, ...] = ()

    def candidates(self) -> list[Candidate]:
        raise NotImplementedError

    def run(self, candidate: Candidate, seed: int, config: dict[str, Any]) -> TrialResult:
        raise NotImplementedError

    # ----------------------------------------------------------------------- helpers for the runner
    def config(self, overrides: Mapping[str, Any] | None = None, quick: bool = False) -> dict[str, Any]:
        cfg = dict(self.defaults)
        if quick:
            cfg.update(self.quick_config)
        for k, v in (overrides or {}).items():
            if k not in cfg:
                known = ", ".join(sorted(cfg)) or "none"
                raise ValueError(f"task {self.name!r} has no setting {k!r}; settings: {known}")
            cfg[k] = _coerce(v, cfg[k])
        return cfg

    def select(self, names: Iterable[str] | None = None, quick: bool = False) -> list[Candidate]:
        """Candidates by name: a candidate's name, a registry name (all its grid points), or a new
        spec ``name(k=v,...)``. ``None``: the task's list (its quick subset if ``quick``)."""
        pool = self.candidates()
        if names is None:
            if quick and self.quick is not None:
                by_name = {c.name: c for c in pool}
                return [by_name[n] for n in self.quick if n in by_name]
            return pool
        out: list[Candidate] = []
        for spec in names:
            hits = [c for c in pool if c.name == spec] or [c for c in pool if c.objective == spec]
            out.extend(hits or [parse_candidate(spec)])
        if self.baseline and all(c.name != self.baseline for c in out):
            out = [c for c in pool if c.name == self.baseline] + out
        seen: dict[str, Candidate] = {}
        for c in out:
            seen.setdefault(c.name, c)
        return list(seen.values())

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _coerce(value: Any, like: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


_SPEC = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(?:\((.*)\))?\s*$")


def parse_candidate(spec: str) -> Candidate:
    """``"gce(q=0.5)"`` -> ``Candidate("gce", {"q": 0.5})``; values are parsed as JSON when they can be."""
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"objective spec {spec!r}: expected NAME or NAME(k=v,...)")
    name, args = m.group(1), m.group(2)
    options: dict[str, Any] = {}
    if args:
        for part in filter(None, (p.strip() for p in args.split(","))):
            k, sep, v = part.partition("=")
            if not sep:
                raise ValueError(f"objective spec {spec!r}: expected k=v, got {part!r}")
            try:
                options[k.strip()] = json.loads(v.strip())
            except json.JSONDecodeError:
                options[k.strip()] = v.strip()
    return Candidate(name, options)


# ----------------------------------------------------------------------------------------- registry
#: Registered tasks by name. This module imports no task: the built-in ones register themselves when
#: :mod:`losskit.arena` imports :mod:`losskit.arena.tasks`; the user's with :func:`register_task`.
_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task (an instance) to the arena under ``task.name``; returns it."""
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"no arena task {name!r}; tasks: {', '.join(sorted(_TASKS))}") from None


def tasks() -> list[Task]:
    return list(_TASKS.values())


# ------------------------------------------------------------------------------------------ binding
def bind_call(fn: Callable, available: Mapping[str, Any], options: Mapping[str, Any],
              aliases: Mapping[str, Iterable[str]] | None = None):
    """Call ``fn`` feeding its positional parameters by name from ``available``.

    ``aliases`` maps a parameter name the objective may use to the key in ``available`` it means
    (e.g. ``{"student_logits": ["logits"]}``). A required parameter that cannot be fed raises
    :class:`Unavailable` naming it, so the arena skips the candidate with a note.
    """
    sig = inspect.signature(fn)
    args, kwargs = [], dict(options)
    aliases = aliases or {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.KEYWORD_ONLY:
            if p.name in available and p.name not in kwargs and p.name in _KEYWORD_INPUTS:
                kwargs[p.name] = available[p.name]
            continue
        keys = [p.name, *aliases.get(p.name, ())]
        key = next((k for k in keys if k in available), None)
        if key is None:
            if p.default is inspect.Parameter.empty:
                raise Unavailable(f"cannot feed input {p.name!r} of {getattr(fn, '__name__', fn)}")
            break
        args.append(available[key])
    return fn(*args, **kwargs)


#: Keyword-only inputs the arena feeds when a task provides them (stateful objectives, lengths).
_KEYWORD_INPUTS = {"index", "step", "epoch", "lengths", "chosen_lengths", "rejected_lengths", "generator"}
