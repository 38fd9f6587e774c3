"""The results store: one SQLite file (WAL mode), safe for several arena processes at once.

One row per (task, config, objective, hyperparameters, seed, metric) in ``results``, with the losskit
and torch versions that produced it. A trial's rows (all its metrics and its learning curve) are written
in one transaction, so a trial is either wholly in the store or not at all: a killed run resumes by
skipping the trials already there and loses none. Concurrent writers serialise on SQLite's lock
(``busy_timeout``); ``INSERT OR IGNORE`` makes two processes that ran the same trial harmless.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Store", "Row", "DEFAULT_STORE"]

DEFAULT_STORE = "losskit_results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task TEXT NOT NULL, config TEXT NOT NULL, objective TEXT NOT NULL, hparams TEXT NOT NULL,
    seed INTEGER NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    label TEXT NOT NULL, losskit_version TEXT NOT NULL, torch_version TEXT NOT NULL,
    backend TEXT, wall_s REAL, cpu_s REAL, created REAL NOT NULL,
    PRIMARY KEY (task, config, objective, hparams, seed, metric));
CREATE TABLE IF NOT EXISTS curves (
    task TEXT NOT NULL, config TEXT NOT NULL, objective TEXT NOT NULL, hparams TEXT NOT NULL,
    seed INTEGER NOT NULL, metric TEXT NOT NULL, points TEXT NOT NULL,
    PRIMARY KEY (task, config, objective, hparams, seed));
CREATE TABLE IF NOT EXISTS notes (
    task TEXT NOT NULL, config TEXT NOT NULL, objective TEXT NOT NULL, hparams TEXT NOT NULL,
    label TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (task, config, objective, hparams, kind));
"""


@dataclass(frozen=True)
class Row:
    task: str
    config: str
    objective: str
    hparams: str
    label: str
    seed: int
    metric: str
    value: float


def _versions() -> tuple[str, str]:
    import torch

    from .. import __version__

    return __version__, torch.__version__


class Store:
    """A results store at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike = DEFAULT_STORE, timeout: float = 120.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        with self._connect() as c:
            self._retry(lambda: c.executescript(_SCHEMA))

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return _Ctx(self._conn)

    def _retry(self, op, attempts: int = 50):
        for i in range(attempts):
            try:
                return op()
            except sqlite3.OperationalError as err:  # "database is locked" past busy_timeout
                if "locked" not in str(err) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __getstate__(self):
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout"])

    # -------------------------------------------------------------------------------------- writes
    def write_trial(self, task: str, config: str, objective: str, hparams: str, label: str, seed: int,
                    metrics: dict[str, float], curve: Iterable[tuple[float, float]] = (),
                    curve_metric: str = "", backend: str = "", wall_s: float | None = None,
                    cpu_s: float | None = None) -> None:
        """All of one trial's rows in one transaction (all or nothing)."""
        lk, tv = _versions()
        now = time.time()
        rows = [(task, config, objective, hparams, int(seed), m, float(v), label, lk, tv, backend, wall_s, cpu_s, now)
                for m, v in metrics.items()]
        points = json.dumps([[float(a), float(b)] for a, b in curve])

        def op():
            with self._connect() as c:
                c.execute("BEGIN IMMEDIATE")
                try:
                    c.executemany("INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                    if curve:
                        c.execute("INSERT OR IGNORE INTO curves VALUES (?,?,?,?,?,?,?)",
                                  (task, config, objective, hparams, int(seed), curve_metric, points))
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise

        self._retry(op)

    def note(self, task: str, config: str, objective: str, hparams: str, label: str, kind: str,
             message: str) -> None:
        """Record that a candidate was skipped or failed (the report lists these)."""
        with self._connect() as c:
            self._retry(lambda: c.execute("INSERT OR REPLACE INTO notes VALUES (?,?,?,?,?,?,?,?)",
                                          (task, config, objective, hparams, label, kind, message, time.time())))

    def clear_note(self, task: str, config: str, objective: str, hparams: str) -> None:
        with self._connect() as c:
            self._retry(lambda: c.execute(
                "DELETE FROM notes WHERE task=? AND config=? AND objective=? AND hparams=?",
                (task, config, objective, hparams)))

    # --------------------------------------------------------------------------------------- reads
    def done(self, task: str, config: str) -> set[tuple[str, str, int]]:
        """``(objective, hparams, seed)`` of the trials of ``task``/``config`` already in the store."""
        with self._connect() as c:
            cur = c.execute("SELECT DISTINCT objective, hparams, seed FROM results WHERE task=? AND config=?",
                            (task, config))
            return {(o, h, int(s)) for o, h, s in cur.fetchall()}

    def rows(self, task: str | None = None) -> list[Row]:
        q = "SELECT task, config, objective, hparams, label, seed, metric, value FROM results"
        args: tuple = ()
        if task is not None:
            q += " WHERE task=?"
            args = (task,)
        with self._connect() as c:
            return [Row(*r) for r in c.execute(q + " ORDER BY task, config, label, seed, metric", args)]

    def curves(self, task: str | None = None) -> list[tuple[str, str, str, str, int, str, list]]:
        q = "SELECT task, config, objective, hparams, seed, metric, points FROM curves"
        args: tuple = ()
        if task is not None:
            q += " WHERE task=?"
            args = (task,)
        with self._connect() as c:
            return [(*r[:6], json.loads(r[6])) for r in c.execute(q, args)]

    def notes(self) -> list[tuple[str, str, str, str, str]]:
        """``(task, config, label, kind, message)`` of skipped / failed candidates."""
        with self._connect() as c:
            return list(c.execute("SELECT task, config, label, kind, message FROM notes ORDER BY task, label"))

    def count(self) -> int:
        with self._connect() as c:
            return int(c.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def integrity(self) -> str:
        with self._connect() as c:
            return c.execute("PRAGMA integrity_check").fetchone()[0]


class _Ctx:
    """``with store._connect() as c`` hands out the shared connection without closing it."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        return False
