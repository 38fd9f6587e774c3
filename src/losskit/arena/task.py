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
    #: A user's own objective ``fn(logits, target) -> loss`` (not in the registry); ``objective`` names it.
    fn: Callable | None = field(default=None, compare=False, repr=False)

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
        if self.fn is not None:
            return []
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
    #: Domains of the settings (``losskit._core.domains``); a setting without one here takes the common
    #: domain of its name (:data:`SETTING_DOMAINS`: ``epochs`` >= 1, ``noise`` in [0, 1), ...).
    settings: dict[str, Any] = {}

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
                raise ValueError(f"task {self.name!r} has no setting {k!r}{_did_you_mean(k, cfg)}; "
                                 f"settings: {known}")
            try:
                cfg[k] = _coerce(v, cfg[k])
            except ValueError:
                raise ValueError(f"task {self.name!r}: setting {k}={v!r} is not a {type(cfg[k]).__name__}") from None
        self.check_config(cfg)
        return cfg

    def check_config(self, cfg: Mapping[str, Any]) -> None:
        """Raise :class:`ValueError` naming the setting when a value is outside its domain."""
        for k, v in cfg.items():
            dom = self.settings.get(k, SETTING_DOMAINS.get(k))
            if dom is not None and not dom.contains(v):
                raise ValueError(f"task {self.name!r}: setting {k}={v!r} is invalid; expected {dom.description}")

    def accepts(self, entry) -> str | None:
        """Why the registry ``entry`` cannot compete on this task (``None``: it can).

        The default reads the task's own candidates: an objective competes when its (family, input kind)
        is one of theirs. A task with a finer rule overrides this."""
        kinds = self._kinds()
        if not kinds or (entry.family, entry.input_kind.name) in kinds:
            return None
        if entry.family == "custom":  # registered by the user (losskit.register): fed by its parameter names
            return None
        fams = sorted({f for f, _ in kinds})
        if entry.family not in fams:
            return (f"{entry.name} is a {entry.family} objective; task {self.name!r} takes "
                    f"{' or '.join(fams)} objectives")
        ok = sorted({k for f, k in kinds if f == entry.family})
        return (f"{entry.name} takes {entry.input_kind.name}; task {self.name!r} feeds {' or '.join(ok)}")

    def _kinds(self) -> set[tuple[str, str]]:
        out = set()
        for c in self.candidates():
            if c.fn is None and not c.missing():
                e = c.entry()
                out.add((e.family, e.input_kind.name))
        return out

    def check_candidate(self, c: Candidate) -> None:
        """Refuse (``ValueError`` naming the problem and the valid choices) a candidate the user named
        that cannot run here: an unknown objective (with "did you mean"), one of the wrong family or
        input kind, an unknown option or an option value outside its declared domain."""
        if c.fn is not None:
            return
        from .._core import list_objectives

        names = list_objectives()
        if c.objective not in names:
            pool = sorted({*names, *(x.name for x in self.candidates())})
            raise ValueError(f"unknown objective {c.objective!r}{_did_you_mean(c.objective, pool)} "
                             f"(`losskit list` shows the registered objectives)")
        for r in c.requires:
            if r not in names:
                raise ValueError(f"objective {c.objective!r} needs {r!r}, which is not registered")
        entry = c.entry()
        why = self.accepts(entry)
        if why:
            raise ValueError(why)
        options = entry.options
        symbolic = self.symbolic_options.get(c.objective, {})
        for k, v in c.options.items():
            if k not in options:
                raise ValueError(f"{c.objective}: unknown hyper-parameter {k!r}{_did_you_mean(k, options)}; "
                                 f"its options: {', '.join(options) or 'none'}")
            if k in symbolic and v in symbolic[k]:
                continue
            dom = entry.domains.get(k)
            if dom is not None and not dom.contains(v, dict(c.options)):
                raise ValueError(f"{c.objective}({k}={v!r}): expected {dom.description}")

    #: Option values a task resolves itself before the call (``{"cross_entropy": {"weight": ("inverse_frequency",)}}``).
    symbolic_options: dict[str, dict[str, tuple]] = {}

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
            if isinstance(spec, Candidate):
                self.check_candidate(spec)
                out.append(spec)
                continue
            spec = ALIASES.get(spec, spec)
            hits = [c for c in pool if c.name == spec] or [c for c in pool if c.objective == spec]
            if not hits:
                c = parse_candidate(spec)
                self.check_candidate(c)
                hits = [c]
            out.extend(hits)
        if self.baseline and all(c.name != self.baseline for c in out):
            out = [c for c in pool if c.name == self.baseline] + out
        seen: dict[str, Candidate] = {}
        for c in out:
            seen.setdefault(c.name, c)
        return list(seen.values())

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    # ------------------------------------------------------------------------- the user's own data
    @staticmethod
    def from_file(path, target: str, task: str = "classification", **kw) -> Task:
        """A task template (``classification``, ``imbalanced``) over a CSV / Parquet / ``.npz`` file;
        ``kw``: ``name``, ``model_fn(input_dim, n_classes)``, ``metric(y_true, scores)``, settings such as
        ``noise`` or ``epochs``. The data are checked now (see :mod:`losskit.arena.user`)."""
        from .user import make_task

        return make_task(path, target, task, **kw)

    @staticmethod
    def from_arrays(x, y, task: str = "classification", **kw) -> Task:
        """A task template over numpy / torch arrays ``x`` (rows x features) and labels ``y``."""
        from .user import make_task

        return make_task((x, y), kw.pop("target", None), task, **kw)  # transport: (source, target) clouds

    @staticmethod
    def from_dataset(dataset, task: str = "classification", **kw) -> Task:
        """A task template over a ``torch.utils.data.Dataset`` of ``(features, label)`` items."""
        from .user import make_task

        return make_task(dataset, kw.pop("target", None), task, **kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


#: Short names accepted for objectives on the command line and in ``compare``.
ALIASES = {"ce": "cross_entropy", "bce": "binary_cross_entropy"}


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
            if not k.strip() or not v.strip():
                raise ValueError(f"objective spec {spec!r}: {part!r} has no {'value' if k.strip() else 'name'}")
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
        raise KeyError(f"no arena task {name!r}{_did_you_mean(name, _TASKS)}; "
                       f"tasks: {', '.join(sorted(_TASKS))}") from None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _setting_domains() -> dict[str, Any]:
    from .._core.domains import COUNT, HALF_OPEN_UNIT, NONNEG_INT, POSITIVE, Integer, Real

    return {"epochs": COUNT, "teacher_epochs": COUNT, "hidden": COUNT, "teacher_hidden": COUNT,
            "student_hidden": COUNT, "batch_size": COUNT, "eval_every": NONNEG_INT, "lr": POSITIVE,
            "noise": HALF_OPEN_UNIT, "ratio": Real(0.0, 1.0, lo_open=True), "n": Integer(2), "dim": COUNT,
            "repeats": COUNT, "pairs": COUNT, "vocab": Integer(2), "bins": Integer(2), "tune": NONNEG_INT, "temperature": POSITIVE, "beta": POSITIVE}


#: The common domains of settings, by name (a task's ``settings`` wins).
SETTING_DOMAINS: dict[str, Any] = _setting_domains()


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
