"""The arena's Ray backend on a local Ray instance (num_cpus=2): trials run as Ray tasks, results land in
the store exactly as with the process pool."""

from __future__ import annotations

import sqlite3

import pytest

ray = pytest.importorskip("ray")

from losskit.arena import Store, get_task  # noqa: E402
from losskit.arena.runner import Summary, plan, run_trials  # noqa: E402


def test_ray_backend_local_instance(tmp_path):
    t = get_task("imbalanced")
    cfg = t.config({"epochs": 2, "hidden": 8, "eval_every": 1})
    cands = [c for c in t.candidates() if c.name in ("cross_entropy", "weighted_ce")]
    store = Store(tmp_path / "ray.db")
    summary = Summary()
    trials = plan(t, cfg, cands, range(2), store, summary)
    assert len(trials) == 4
    run_trials(trials, store, summary, backend="ray", workers=2)
    assert not ray.is_initialized()  # the arena shuts down the instance it started
    assert summary.ran == 4 and not summary.failed and not summary.skipped
    con = sqlite3.connect(store.path)
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4 * 3
    assert {r[0] for r in con.execute("SELECT DISTINCT backend FROM results")} == {"ray"}
    # same numbers as running the trials here (each trial is a pure function of its inputs)
    ref = t.run(cands[0], 1, cfg).metrics["f1"]
    got = con.execute("SELECT value FROM results WHERE objective='cross_entropy' AND hparams='{}' AND seed=1 "
                      "AND metric='f1'").fetchone()[0]
    assert got == pytest.approx(ref, abs=1e-6)
