"""The arena: objectives head-to-head on small real tasks, with evidence (``losskit arena``).

A :class:`Task` is a plug-in (data, model, metrics, candidate objectives, baseline); the arena plans
trials over candidates x seeds, runs them on a process pool (or Ray), stores every result in a SQLite
file (resumable, safe for concurrent writers), and prints leaderboards with a paired t-test against the
baseline. ``losskit arena report`` writes an HTML page with plots. See ``docs/arena.md``.
"""

from __future__ import annotations

# Registers the built-in tasks (the explicit list in tasks/__init__.py); the task registry (task.py) does
# not import them. Keep this first: importing the subpackage sets this package's attribute ``tasks`` to
# it, and the ``from .task import ... tasks`` below binds the public ``losskit.arena.tasks`` back to the
# function that lists the registered tasks (``from losskit.arena.tasks import X`` still reaches the package).
from . import tasks as _builtin_tasks
from .claims import Claim
from .cli import main as _cli_main
from .compare import Results, compare
from .leaderboard import Board, Entry, boards
from .runner import Summary, Trial, execute, plan, run_trials
from .store import DEFAULT_STORE, Store, StoreError
from .task import (
    Candidate,
    Task,
    TrialResult,
    Unavailable,
    bind_call,
    get_task,
    parse_candidate,
    register_task,
    tasks,
)

__all__ = [
    "Board", "Candidate", "Claim", "DEFAULT_STORE", "Entry", "Results", "Store", "StoreError", "Summary", "Task",
    "Trial", "TrialResult", "Unavailable", "bind_call", "boards", "compare", "execute", "get_task", "main",
    "parse_candidate", "plan",
    "register_task", "run", "run_trials", "tasks",
]


def run(task: str | Task, objectives=None, *, seeds: int = 3, config: dict | None = None, quick: bool = False,
        store: str | Store = DEFAULT_STORE, backend: str = "serial", workers: int | None = None,
        address: str | None = None, trial_timeout: float | None = None) -> list[Board]:
    """Run one task from Python and return its leaderboard(s) (one per configuration; here one).

    ``objectives``: candidate names / specs as on the command line (``None``: the task's list).
    ``trial_timeout``: seconds after which a trial is recorded as failed (``None``: no limit).
    """
    from .task import canonical

    t = get_task(task) if isinstance(task, str) else task
    st = store if isinstance(store, Store) else Store(store)
    cfg = t.config(config, quick=quick)
    summary = Summary()
    trials = plan(t, cfg, t.select(objectives, quick=quick), range(seeds), st, summary)
    run_trials(trials, st, summary, backend=backend, workers=workers, address=address, timeout=trial_timeout)
    return [b for b in boards(st.rows(t.name)) if canonical(b.config) == canonical(cfg)]


def main(argv: list[str]) -> int:
    """``losskit arena ...`` (the CLI hands over the arguments after ``arena``)."""
    return _cli_main(argv)
