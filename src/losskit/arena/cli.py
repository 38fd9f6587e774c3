"""``losskit arena``: the command line of the arena (``losskit arena -h``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .claims import task_claims, verdict_meaning
from .store import DEFAULT_STORE

#: The old name (tests and older code import it from here); the report and this CLI both use :mod:`.claims`.
_claims = task_claims

USAGE = """\
losskit arena                      quick default suite: every task, its quick candidates, 3 seeds
losskit arena TASK [TASK ...] [options]
losskit arena --data my.csv --target label [--task classification] [--objectives ce,focal,gce] [--seeds 5]
losskit arena --list-tasks         the templates for your own data (--task) and the embedded tasks
losskit arena list                 tasks, their settings and candidates (registered or not)
losskit arena show [TASK]          leaderboards of what the store holds
losskit arena report [--out DIR]   HTML report with plots (PNG files beside it)
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="losskit arena", usage=USAGE,
                                 description="Objectives head-to-head on embedded tasks.")
    ap.add_argument("tasks", nargs="*", help="task names (default: the quick suite of every task)")
    ap.add_argument("--objectives", "-o", default=None,
                    help="comma-separated candidates: a candidate name, a registry name (all its grid "
                         "points) or NAME(k=v,...) for new hyperparameters; the baseline is always added")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), default 3")
    ap.add_argument("--noise", default=None, help="label-noise rate(s), e.g. 0.4 or 0,0.2,0.4 (a sweep)")
    ap.add_argument("--noise-type", default=None, choices=("symmetric", "asymmetric"))
    ap.add_argument("--dataset", default=None, help="digits | breast_cancer | wine (noisy_labels)")
    ap.add_argument("--policy", default=None, choices=("bandit", "tiny-llama"),
                    help="preference: the bandit (default) or a tiny transformers Llama (needs losskit[hf])")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a task setting (repeatable; comma-separated values make a sweep)")
    ap.add_argument("--quick", action="store_true", help="the quick settings and candidates of each task")
    ap.add_argument("--backend", default="process", choices=("process", "serial", "ray"))
    ap.add_argument("--workers", type=int, default=None, help="parallel trials (default: min(2, CPUs))")
    ap.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
    ap.add_argument("--trial-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="a trial running longer is recorded as failed and the run goes on (default 600; 0: none)")
    ap.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite results store (default ./{DEFAULT_STORE})")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (it registers your own tasks); repeatable")
    ap.add_argument("--data", default=None, metavar="FILE",
                    help="your own data: a CSV (header line), Parquet or .npz file (with --target)")
    ap.add_argument("--target", default=None, help="the label column of --data")
    ap.add_argument("--task", default="classification", dest="template",
                    help="the task template for --data (losskit arena --list-tasks); default classification")
    ap.add_argument("--tune", type=int, default=None, metavar="N",
                    help="fair tuning (templates for --data): N configurations per objective on a validation split")
    ap.add_argument("--list-tasks", action="store_true", help="the task templates for --data, and the embedded tasks")
    return ap


def _sweep(overrides: dict[str, list[str]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for k, values in overrides.items():
        combos = [{**c, k: v} for c in combos for v in values]
    return combos


def main(argv: list[str]) -> int:
    from .store import StoreError

    argv = list(argv)
    try:
        if argv and argv[0] == "list":
            return cmd_list()
        if argv and argv[0] in ("report", "show"):
            ap = argparse.ArgumentParser(prog=f"losskit arena {argv[0]}")
            ap.add_argument("tasks", nargs="*")
            ap.add_argument("--store", default=DEFAULT_STORE)
            ap.add_argument("--out", default="arena_report", help="report folder (index.html + PNGs)")
            args = ap.parse_args(argv[1:])
            return cmd_report(args) if argv[0] == "report" else cmd_show(args)
        args = _parser().parse_args(argv)
        problem = _check_args(args)
        if problem:
            return _refuse(problem)
        return cmd_run(args)
    except StoreError as err:
        return _refuse(str(err))


def _refuse(message: str, con=None) -> int:
    """One line (never wrapped) in red; the exit status of a refused command."""
    (con or _console()).print(f"[red]{_esc(message)}[/]", soft_wrap=True)
    return 2


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _check_args(args) -> str | None:
    """What is wrong with the numeric options (``None``: nothing); checked before anything runs."""
    if args.seeds < 1:
        return f"--seeds: expected a number of seeds >= 1, got {args.seeds}"
    if args.workers is not None and args.workers < 1:
        return f"--workers: expected a number of parallel trials >= 1, got {args.workers}"
    if args.trial_timeout is not None and (args.trial_timeout < 0 or args.trial_timeout != args.trial_timeout):
        return f"--trial-timeout: expected seconds >= 0 (0: no limit), got {args.trial_timeout:g}"
    return None


def _console():
    from rich.console import Console

    con = Console()
    # piped / logged output (CI, `| tee`): rich would fall back to 80 columns and wrap every score cell
    return con if con.is_terminal else Console(width=140)


def cmd_list() -> int:
    from rich.table import Table

    from .task import tasks

    con = _console()
    for t in tasks():
        table = Table(title=f"[bold]{t.name}[/]: {t.description}", title_justify="left", show_header=True)
        table.add_column("candidate")
        table.add_column("status")
        table.add_column("quick")
        for c in t.candidates():
            miss = c.missing()
            table.add_row(c.name + (" (baseline)" if c.name == t.baseline else ""),
                          "[green]registered[/]" if not miss else f"[yellow]not registered: {', '.join(miss)}[/]",
                          "yes" if t.quick is None or c.name in t.quick else "")
        con.print(table)
        con.print("  settings: " + ", ".join(f"{k}={v}" for k, v in t.defaults.items()) + "\n")
    return 0


def cmd_list_tasks(con) -> int:
    from rich.markup import escape

    from .task import tasks
    from .user import TEMPLATES

    con.print("[bold]templates for your own data[/] (losskit arena --data FILE --target COLUMN --task NAME)")
    for name, cls in TEMPLATES.items():
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        cands = ", ".join(c.name for c in cls.candidates(cls.__new__(cls)))
        con.print(f"  [cyan]{name}[/]: {escape(doc)}\n    metrics: {', '.join(cls.metrics)}; default objectives: "
                  f"{escape(cands)}; settings: {', '.join(f'{k}={v}' for k, v in cls.defaults.items())}",
                  soft_wrap=True)
    con.print("[bold]embedded tasks[/] (losskit arena TASK; details: losskit arena list)")
    for t in tasks():
        if not getattr(t, "template", ""):
            con.print(f"  [cyan]{t.name}[/]: {escape(t.description)}", soft_wrap=True)
    return 0


def cmd_run(args) -> int:
    from rich.markup import escape

    from .runner import Summary, plan, run_trials
    from .store import Store
    from .task import get_task
    from .tasks import DEFAULT_SUITE

    con = _console()
    import importlib

    for mod in args.plugin:
        importlib.import_module(mod)
    if args.list_tasks:
        return cmd_list_tasks(con)
    if args.data is not None:
        from .user import DataError, make_task

        if args.tasks:
            return _refuse(f"--data runs one task template (--task); drop the task names {' '.join(args.tasks)}", con)
        if not args.target and not args.data.endswith(".npz") and args.template not in ("transport", "preference"):
            return _refuse("--data needs --target: the name of the label column", con)
        try:
            user_task = make_task(args.data, args.target or "y", args.template)
        except (DataError, ValueError) as err:
            return _refuse(str(err), con)
        args.tasks = [user_task.name]
    quick = args.quick or not args.tasks
    names = args.tasks or list(DEFAULT_SUITE)
    try:
        selected = [get_task(n) for n in names]
    except KeyError as err:
        return _refuse(err.args[0], con)
    overrides: dict[str, list[str]] = {}
    if args.noise is not None:
        overrides["noise"] = args.noise.split(",")
    if args.noise_type:
        overrides["noise_type"] = [args.noise_type]
    if args.dataset:
        overrides["dataset"] = args.dataset.split(",")
    if args.policy:
        overrides["policy"] = [args.policy]
    if args.tune is not None:
        overrides["tune"] = [str(args.tune)]
        if args.backend == "ray" and args.data is not None:
            # the sweep of each trial runs on Ray Tune; the driver runs the trials one after the other
            overrides["tune_backend"] = ["ray"]
            args.backend = "serial"
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep:
            return _refuse(f"--set: expected KEY=VALUE, got {kv!r}", con)
        overrides[k.strip()] = v.split(",")
    unknown = [k for k in overrides if not any(k in t.defaults for t in selected)]
    if unknown:
        from .task import _did_you_mean

        known = sorted({k for t in selected for k in t.defaults})
        hint = "".join(_did_you_mean(k, known) for k in unknown)
        return _refuse(f"no selected task has the setting(s) {', '.join(unknown)}{hint}; settings: "
                       f"{', '.join(known)}", con)
    objectives = [s.strip() for s in _split_specs(args.objectives)] if args.objectives else None

    # everything is checked before the store is opened and before any trial starts
    work = []
    try:
        per_task = _objectives_per_task(selected, objectives)
        for t in selected:
            own = {k: v for k, v in overrides.items() if k in t.defaults}
            if quick:
                own = {**{k: [str(x) for x in v] for k, v in t.quick_sweep.items()}, **own}
            if objectives is not None and not per_task[t.name]:
                continue  # none of the named objectives competes on this task
            cands = t.select(per_task[t.name], quick=quick and objectives is None)
            for combo in _sweep(own):
                work.append((t, t.config(combo, quick=quick), cands))
    except ValueError as err:
        return _refuse(str(err), con)
    store = Store(args.store)
    summary = Summary()
    trials, runs = [], []
    for t, cfg, cands in work:
        runs.append((t.name, cfg))
        trials += plan(t, cfg, cands, range(args.seeds), store, summary)

    con.print(f"[bold]losskit arena[/]: {len(trials)} trials to run, {summary.reused} already in "
              f"{os.path.abspath(args.store)}; backend {args.backend}")
    for key, msg in sorted(summary.skipped.items()):
        con.print(f"  [yellow]skipped[/] {escape(key)}: {escape(msg)}")
    planned_skips = set(summary.skipped)
    _run_with_progress(trials, store, summary, args, run_trials, con)
    for key, msg in sorted(summary.skipped.items()):  # inputs the task could not feed, found while running
        if key not in planned_skips:
            con.print(f"  [yellow]skipped[/] {escape(key)}: {escape(msg)}")
    for key, msg in sorted(summary.failed.items()):
        con.print(f"  [red]failed[/] {escape(key)}: {escape(msg)}")
    print_boards(con, store, runs, notes=False)
    con.print(f"ran {summary.ran} trials in {summary.wall_s:.1f} s wall, {summary.cpu_s:.1f} CPU-s in trials "
              f"({summary.reused} reused from the store); "
              f"HTML report: losskit arena report --store {args.store}")
    if trials and summary.ran == 0 and summary.failed:
        return _refuse(f"every trial that ran failed ({len(summary.failed)} objective(s)); see the reasons above", con)
    return 0


def _objectives_per_task(selected, objectives):
    """The named objectives each selected task takes. A name no selected task can run is refused
    (``ValueError`` with the reason); one that only some tasks take goes to those."""
    if objectives is None:
        return {t.name: None for t in selected}
    out: dict[str, list[str]] = {t.name: [] for t in selected}
    for spec in objectives:
        errors = []
        for t in selected:
            try:
                t.select([spec])
            except ValueError as err:
                errors.append(str(err))
            else:
                out[t.name].append(spec)
        if len(errors) == len(selected):
            raise ValueError(errors[0] if len(selected) == 1 or len(set(errors)) == 1
                             else f"{spec}: no selected task can run it ({'; '.join(errors)})")
    return out


def _split_specs(text: str) -> list[str]:
    """Split ``a,b(k=1,j=2),c`` on the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur)
    return [s for s in out if s.strip()]


def _run_with_progress(trials, store, summary, args, run_trials, con):
    if args.no_progress or not trials:
        run_trials(trials, store, summary, backend=args.backend, workers=args.workers, address=args.address,
                   timeout=args.trial_timeout)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=con, transient=False) as prog:
        bar = prog.add_task("trials", total=len(trials))

        def done(trial, status):
            prog.update(bar, advance=1, description=f"{trial.task.name}/{trial.candidate.name} s{trial.seed}")

        run_trials(trials, store, summary, backend=args.backend, workers=args.workers, address=args.address,
                   on_done=done, timeout=args.trial_timeout)
        prog.update(bar, description="trials")


def print_boards(con, store, runs=None, notes: bool = True) -> None:
    """Rich tables of the leaderboards (only the (task, config) pairs in ``runs`` if given)."""
    from rich.markup import escape
    from rich.table import Table

    from .task import canonical, get_task

    wanted = None if runs is None else {(t, canonical(c)) for t, c in runs}
    bs = [b for b in store.boards() if wanted is None or (b.task, canonical(b.config)) in wanted]
    for b in bs:
        con.print(f"[bold]{escape(b.task)}[/] {escape(_cfg_text(b))}: [bold]{escape(b.recommendation())}[/]",
                  soft_wrap=True)
        table = Table(title=f"[bold]{b.task}[/]  {_cfg_text(b)}", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("objective", overflow="fold", min_width=14)
        for m in b.metrics:
            table.add_column(m + (" ↓" if not b.higher_is_better(m) else " ↑"), justify="right")
        table.add_column("seeds", justify="right")
        for i, e in enumerate(b.ranked(), 1):
            cells = []
            for m in b.metrics:
                mk = b.marker(e, m)
                mk = {"▲": "[green]▲[/]", "▼": "[red]▼[/]", "base": "[dim](base)[/]"}.get(mk, mk)
                cells.append(f"{e.mean(m):.3f} ± {e.std(m):.3f} {mk}")
            table.add_row(str(i), escape(e.label), *cells, str(e.n))
        con.print(table)
    from .leaderboard import across

    summary = across(bs)
    if summary is not None:
        con.print(f"[bold]{escape(summary.text())}[/]", soft_wrap=True)
    if bs:
        con.print("[dim]mean ± std over seeds; ▲/▼ significantly better/worse than the task's baseline "
                  "(paired t-test over seeds, p < 0.05), · not significant, ? too few seeds[/]")
    for t, cfg, label, kind, msg in store.notes() if notes else ():
        if wanted is None or (t, cfg) in wanted:
            con.print(f"  [yellow]{kind}[/] {t}/{escape(label)}: {escape(msg)}")
    claims = task_claims(bs, get_task)
    if claims:
        con.print("[bold]paper claims at this scale[/]")
        for c in claims:
            colour = {"reproduced": "green", "mixed": "yellow", "inconclusive": "yellow",
                      "not reproduced": "red", "partly tested": "cyan"}.get(c.verdict, "dim")
            con.print(f"  [{colour}]{c.verdict}[/]: {escape(c.statement)}\n    [dim]{escape(c.evidence)}[/]")
        for word in dict.fromkeys(c.verdict for c in claims):
            con.print(f"  [dim]{word}: {escape(verdict_meaning(word))}[/]")


def _cfg_text(b) -> str:
    from .task import get_task

    try:
        defaults = get_task(b.task).defaults
    except KeyError:
        defaults = {}
    keys = [k for k in b.config if not k.startswith("eval")]
    return ", ".join(f"{k}={b.config[k]}" + ("" if defaults.get(k, b.config[k]) == b.config[k] else "*")
                     for k in keys)


def cmd_show(args) -> int:
    from .store import Store
    from .task import _did_you_mean, tasks

    store = Store(args.store, readonly=True)
    known = {t.name for t in tasks()} | {r.task for r in store.rows()}
    for name in args.tasks:
        if name not in known:
            return _refuse(f"no arena task {name!r}{_did_you_mean(name, known)}; tasks: {', '.join(sorted(known))}")
    runs = None
    if args.tasks:

        runs = [(b.task, b.config) for b in store.boards() if b.task in args.tasks]
    print_boards(_console(), store, runs)
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    from .store import Store

    path = write_report(Store(args.store, readonly=True), args.out)
    _console().print(f"report written: {path}")
    return 0
