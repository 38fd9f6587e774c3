"""Overhead of the arena machinery per trial, on the quick suite (docs/arena.md, "Overhead").

For each task of the quick suite: its quick candidates and settings (the first point of its quick sweep),
``--seeds`` seeds, the serial backend, a fresh store. The machinery's time is everything the arena does
around the trials: planning (store reads), claiming, writing each trial's rows and curve, the progress
callback; i.e. the run's wall time minus the wall time spent inside ``Task.run``. Prints a Markdown table.

    PYTHONPATH=src python scripts/arena_overhead.py [--seeds 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import losskit.arena  # noqa: F401
from losskit.arena.runner import Summary, plan, run_trials
from losskit.arena.store import Store
from losskit.arena.task import get_task
from losskit.arena.tasks import DEFAULT_SUITE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in DEFAULT_SUITE:
            t = get_task(name)
            inside = []
            run = t.run

            def timed(c, s, cfg, run=run, inside=inside):
                t0 = time.perf_counter()
                try:
                    return run(c, s, cfg)
                finally:
                    inside.append(time.perf_counter() - t0)

            t.run = timed
            try:
                store = Store(os.path.join(d, f"{name}.sqlite"))
                cfg = t.config({k: v[0] for k, v in t.quick_sweep.items()}, quick=True)
                summary = Summary()
                t0 = time.perf_counter()
                trials = plan(t, cfg, t.select(None, quick=True), range(args.seeds), store, summary)
                run_trials(trials, store, summary, backend="serial", on_done=lambda tr, st: None)
                wall = time.perf_counter() - t0
            finally:
                del t.run
            n, train = len(inside), sum(inside)
            over = wall - train
            rows.append((name, n, train / max(n, 1), over / max(n, 1), 100 * over / max(train, 1e-9)))
    print("| task | trials | trial time (s, mean) | machinery per trial (ms) | overhead |")
    print("|---|---:|---:|---:|---:|")
    for name, n, tr, ov, pct in rows:
        print(f"| {name} | {n} | {tr:.2f} | {1000 * ov:.1f} | {pct:.2f}% |")
    tot_n = sum(r[1] for r in rows)
    tot_train = sum(r[1] * r[2] for r in rows)
    tot_over = sum(r[1] * r[3] for r in rows)
    print(f"| all | {tot_n} | {tot_train / tot_n:.2f} | {1000 * tot_over / tot_n:.1f} | "
          f"{100 * tot_over / tot_train:.2f}% |")


if __name__ == "__main__":
    main()
