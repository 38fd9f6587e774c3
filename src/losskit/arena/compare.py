"""``losskit.arena.compare``: which objective for *my* data, as one Python call.

::

    from losskit.arena import Task, compare

    task = Task.from_file("my.csv", target="label")            # or Task.from_arrays(X, y), a Dataset
    res = compare(task, ["cross_entropy", "focal(gamma=2)", "gce(q=0.7)", my_loss], seeds=5)
    print(res.recommendation)                                    # the objective to use, with its evidence
    res.leaderboard                                              # list of dicts, best first

Every input is checked before any trial starts (the objectives against the registry and the task, the
data when the task is built); a trial whose objective raises or returns NaN is a failed row with its
message. Results go to ``store`` (default: in memory); a path makes the run resumable.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .runner import Summary, plan, run_trials
from .stats import recommendation, versus_baseline
from .store import Store
from .task import Candidate, Task, canonical, get_task

__all__ = ["compare", "Results"]


@dataclass
class Results:
    """What :func:`compare` found: the leaderboard (dicts, best first), every trial, the recommendation."""

    task: str
    metric: str
    baseline: str
    higher_is_better: bool
    leaderboard: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    recommendation: str
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    summary: Summary | None = None

    @property
    def best(self) -> str:
        """The recommended objective (the baseline when nothing beats it significantly)."""
        winners = [r for r in self.leaderboard if r.get("significantly_better")]
        return winners[0]["objective"] if winners else self.baseline

    def table(self) -> str:
        head = f"{'#':>2}  {'objective':28} {self.metric + (' ↑' if self.higher_is_better else ' ↓'):>18}  " \
               f"{'vs ' + self.baseline:>22}  {'Holm p':>8}  seeds"
        lines = [self.recommendation, head]
        for r in self.leaderboard:
            diff = "(baseline)" if r["objective"] == self.baseline else (
                f"{r['diff']:+.4f} [{r['ci_low']:+.3f},{r['ci_high']:+.3f}]" if r["diff"] is not None else "")
            p = "" if r["p_holm"] is None else f"{r['p_holm']:.3g}"
            lines.append(f"{r['rank']:>2}  {r['objective'][:28]:28} {r['mean']:>10.4f} ± {r['std']:.4f}  "
                         f"{diff:>22}  {p:>8}  {r['seeds']}")
        for k, v in {**self.failed, **self.skipped}.items():
            lines.append(f"    {'failed' if k in self.failed else 'skipped'} {k}: {v}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _candidates(task: Task, objectives) -> list[Candidate] | None:
    from .user import user_candidate

    if objectives is None:
        return None
    if isinstance(objectives, Mapping):
        items: Iterable = objectives.items()
    else:
        items = [(None, o) for o in objectives]
    out: list[Candidate | str] = []
    for name, o in items:
        if isinstance(o, (str, Candidate)) and name is None:
            out.append(o)
        elif isinstance(o, str):
            raise TypeError(f"objectives[{name!r}]: a mapping's values are callables, got a string")
        else:
            out.append(user_candidate(o, name))
    return task.select(out)


def compare(task: Task | str, objectives=None, *, seeds: int = 5, store: str | Store | None = None,
            config: Mapping[str, Any] | None = None, baseline: str | None = None, backend: str = "serial",
            workers: int | None = None, trial_timeout: float | None = None, alpha: float = 0.05,
            metric: str | None = None, on_done: Callable | None = None, target: str | None = None,
            template: str = "classification", tune: int = 0, tune_backend: str | None = None,
            budget: int | None = None, progress: bool = False, **task_kw) -> Results:
    """Run ``objectives`` (registry specs like ``"gce(q=0.7)"``, :class:`Candidate` s, or user callables
    ``fn(logits, target) -> loss``; a mapping ``{name: callable}`` names them) on ``task`` over
    ``seeds`` seeds and return :class:`Results`.

    ``task``: a :class:`Task` (``Task.from_file`` / ``Task.from_arrays`` / ``Task.from_dataset`` or an
    embedded task), a task name, or a data path / ``(X, y)`` pair (then ``target`` and ``template`` say how to
    read it and ``task_kw`` go to the template: ``model_fn``, ``metric``, ``noise``, ``epochs``...).
    ``tune=N``: fair tuning, N configurations per objective (learning rate and the objective's own options)
    on a validation split of each seed's training data, the test split touched once (user templates);
    ``budget`` is another name for ``tune``. ``progress=True``: a progress bar over the trials with the
    estimated time remaining (rich). ``tune_backend="ray"`` evaluates the configurations on Ray Tune (a local Ray instance unless one runs).
    The baseline (the task's, or ``baseline``) is always run; every objective is compared with it by a
    paired t-test over seeds, Holm-corrected across the objectives; ``recommendation`` says which one to use.
    """
    from .user import make_task

    if budget is not None:
        if tune and tune != budget:
            raise ValueError(f"budget={budget} and tune={tune}: they are the same setting; pass one")
        tune = budget
    if not isinstance(tune, int) or tune < 0:
        raise ValueError(f"tune / budget: expected a number of configurations >= 0, got {tune!r}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected a number of seeds >= 1, got {seeds!r}")
    if trial_timeout is not None and not trial_timeout >= 0:
        raise ValueError(f"trial_timeout: expected seconds >= 0, got {trial_timeout!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers!r}")
    if isinstance(task, str) and not _is_path(task):
        t = get_task(task)
    elif isinstance(task, Task):
        t = task
    else:
        t = make_task(task, target, template, **task_kw)
    if baseline is not None and baseline != t.baseline:
        t = _with_baseline(t, baseline)
    cfg = t.config({**dict(config or {}), **({"tune": tune} if tune else {}),
                    **({"tune_backend": tune_backend} if tune_backend else {})})
    cands = _candidates(t, objectives)
    if cands is None:
        cands = t.select(None)
    if backend != "serial":
        try:
            pickle.dumps((t, cands))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"backend {backend!r} sends the task and objectives to other processes, but they "
                             f"cannot be pickled ({err}); define them at module level or use backend='serial'"
                             ) from None
    st = store if isinstance(store, Store) else Store(":memory:" if store is None else store)
    summary = Summary()
    trials = plan(t, cfg, cands, range(seeds), st, summary)
    if progress and trials:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("eta"), TimeRemainingColumn()) as prog:
            bar = prog.add_task(f"{t.name}: trials", total=len(trials))

            def done(trial, status):
                prog.update(bar, advance=1, description=f"{trial.candidate.name} seed {trial.seed}")
                if on_done:
                    on_done(trial, status)

            run_trials(trials, st, summary, backend=backend, workers=workers, timeout=trial_timeout, on_done=done)
    else:
        run_trials(trials, st, summary, backend=backend, workers=workers, timeout=trial_timeout, on_done=on_done)
    return results_of(t, cfg, st, cands, summary, alpha=alpha, metric=metric)


def _is_path(s: str) -> bool:
    import os

    return os.path.splitext(s)[1].lower() in (".csv", ".parquet", ".pq", ".npz", ".tsv") or os.path.exists(s)


def _with_baseline(t: Task, baseline: str) -> Task:
    import copy

    t2 = copy.copy(t)
    t2.baseline = baseline
    return t2


def results_of(t: Task, cfg: dict, st: Store, cands: list[Candidate] | None, summary: Summary | None = None,
               alpha: float = 0.05, metric: str | None = None) -> Results:
    """The :class:`Results` of ``t`` under ``cfg`` from what ``st`` holds (only ``cands`` if given)."""
    key = canonical(cfg)
    wanted = None if cands is None else {c.name for c in cands}
    rows = [r for r in st.rows(t.name) if r.config == key and (wanted is None or r.label in wanted)]
    metric = metric or t.metrics[0]
    hib = t.higher_is_better(metric)
    values: dict[str, dict[int, float]] = {}
    trials: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        trials.setdefault((r.label, r.seed), {"objective": r.label, "seed": r.seed, "status": "ok"})[r.metric] = r.value
        if r.metric == metric:
            values.setdefault(r.label, {})[r.seed] = r.value
    for task_name, label, seed, msg in (summary.failed_trials if summary else []):
        if task_name == t.name and (label, seed) not in trials:
            trials[(label, seed)] = {"objective": label, "seed": seed, "status": "failed", "error": msg}
    comps = {c.label: c for c in versus_baseline(values, t.baseline, hib, alpha)}
    board = []
    for label, v in values.items():
        xs = list(v.values())
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        c = comps.get(label)
        board.append({"objective": label, "mean": mean, "std": std, "seeds": len(xs),
                      "diff": None if c is None else c.diff, "ci_low": None if c is None else c.ci_low,
                      "ci_high": None if c is None else c.ci_high, "p": None if c is None else c.p,
                      "p_holm": None if c is None else c.p_holm, "effect_size": None if c is None else c.effect_size,
                      "significantly_better": bool(c and c.better), "significantly_worse": bool(c and c.worse)})
    sign = -1 if hib else 1
    board.sort(key=lambda r: sign * r["mean"])
    for i, r in enumerate(board, 1):
        r["rank"] = i
    notes = {label: msg for task, c, label, kind, msg in st.notes() if task == t.name and c == key}
    failed = {k.split("/", 1)[1]: v for k, v in (summary.failed if summary else {}).items()}
    skipped = {k.split("/", 1)[1]: v for k, v in (summary.skipped if summary else {}).items()}
    for label, msg in notes.items():
        if label not in failed and label not in skipped and label not in values:
            failed[label] = msg
    rec = recommendation(list(comps.values()), t.baseline, metric, alpha, hib)
    if t.baseline not in values:
        rec = f"No recommendation: the baseline {t.baseline} has no results" + (
            f" ({failed.get(t.baseline) or skipped.get(t.baseline)})" if t.baseline in {**failed, **skipped} else "") + "."
    return Results(t.name, metric, t.baseline, hib, board,
                   sorted(trials.values(), key=lambda d: (d["objective"], d["seed"])), rec, failed, skipped, summary)
