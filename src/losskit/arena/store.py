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

__all__ = ["Store", "StoreError", "Row", "DEFAULT_STORE"]

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
CREATE TABLE IF NOT EXISTS tasks (
    task TEXT PRIMARY KEY, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    task TEXT NOT NULL, config TEXT NOT NULL, objective TEXT NOT NULL, hparams TEXT NOT NULL,
    seed INTEGER NOT NULL, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (task, config, objective, hparams, seed));
"""


class StoreError(Exception):
    """The results store cannot be used (what is wrong with which file, and what to do); nothing was written."""


_HEADER = b"SQLite format 3\x00"


def check_path(path: str, write: bool = True) -> None:
    """Raise :class:`StoreError` (one clear line) unless ``path`` is a usable results store; reads only."""
    if path == ":memory:":
        return
    where = os.path.abspath(path)
    if os.path.isdir(path):
        raise StoreError(f"results store {where} is a directory; pass a file path with --store (e.g. "
                         f"{os.path.join(path, DEFAULT_STORE)})")
    parent = os.path.dirname(where)
    if not os.path.isdir(parent):
        raise StoreError(f"results store {where}: the directory {parent} does not exist; create it or choose "
                         f"another --store")
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            raise StoreError(f"results store {where} is not readable (permissions); fix them or choose another --store")
        size = os.path.getsize(path)
        if size:
            with open(path, "rb") as f:
                head = f.read(100)
            if not head.startswith(_HEADER):
                raise StoreError(f"results store {where} is not an SQLite database (not written by losskit "
                                 f"arena?); left untouched; choose another --store or move the file away")
            if len(head) < 100 or size < 512 or size % 512:
                raise StoreError(f"results store {where} is truncated or corrupted ({size} bytes); left "
                                 f"untouched; restore it from a backup or choose another --store")
            err = _quick_check(path)
            if err:
                raise StoreError(f"results store {where} is corrupted ({err}); left untouched; restore it from a "
                                 f"backup or choose another --store")
        if write and (not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222):
            raise StoreError(f"results store {where} is read-only; make it writable or choose another --store")
    if write and (not os.access(parent, os.W_OK) or not os.stat(parent).st_mode & 0o222):
        raise StoreError(f"results store {where}: its directory {parent} is read-only (SQLite needs to write "
                         f"its journal beside the file); choose another --store")


def _quick_check(path: str) -> str:
    """SQLite's own check of every page, through a read-only connection (the file is not modified)."""
    try:
        # immutable: no -wal / -shm files are created beside a file that may not even be a store
        flags = "?mode=ro" if os.path.exists(path + "-wal") else "?mode=ro&immutable=1"
        uri = "file:" + os.path.abspath(path).replace("?", "%3f").replace("#", "%23") + flags
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            res = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
        return "" if res == "ok" else str(res).splitlines()[0]
    except sqlite3.DatabaseError as err:
        if "locked" in str(err):
            return ""
        return str(err)


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
    """A results store at ``path`` (created on first use; ``":memory:"``: in this process only).

    A path that cannot hold a store (a directory, a missing parent directory, a file that is not an
    SQLite database or is corrupted, a read-only file or directory) raises :class:`StoreError` with one
    clear line, before anything is written.
    """

    def __init__(self, path: str | os.PathLike = DEFAULT_STORE, timeout: float = 120.0, readonly: bool = False):
        self.path = os.fspath(path)
        self.timeout = timeout
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        if readonly and not os.path.exists(self.path):
            raise StoreError(f"no results store at {os.path.abspath(self.path)}; run `losskit arena` first")
        check_path(self.path, write=not readonly)
        try:
            with self._connect() as c:
                if not readonly:
                    self._retry(lambda: c.executescript(_SCHEMA))
        except sqlite3.DatabaseError as err:
            self.close()
            raise StoreError(f"results store {os.path.abspath(self.path)}: {err}; choose another --store") from None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if getattr(self, "readonly", False):
                uri = "file:" + os.path.abspath(self.path).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
                self._conn, self._pid = conn, os.getpid()
                return _Ctx(conn)
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
        return {"path": self.path, "timeout": self.timeout, "readonly": self.readonly}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout"], state.get("readonly", False))

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

    def describe(self, task) -> None:
        """Remember a task's metrics, baseline and description, so that leaderboards and reports of tasks
        that are not registered in the reading process (the user's own) still know them."""
        meta = json.dumps({"metrics": list(task.metrics), "lower_is_better": sorted(task.lower_is_better),
                           "baseline": task.baseline, "description": task.description})
        with self._connect() as c:
            self._retry(lambda: c.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?)", (task.name, meta)))

    def task_meta(self) -> dict[str, dict]:
        try:
            with self._connect() as c:
                return {t: json.loads(m) for t, m in c.execute("SELECT task, meta FROM tasks")}
        except sqlite3.OperationalError:  # a store written before the table existed, opened read-only
            return {}

    # -------------------------------------------------------------------------------------- claims
    def claim(self, task: str, config: str, objective: str, hparams: str, seed: int, owner: str,
              ttl: float = 6 * 3600.0) -> str:
        """Claim a trial for ``owner`` so that concurrent runs on this store share the work: ``"mine"``
        (run it), ``"busy"`` (another live run has it) or ``"done"`` (its results are in the store). A claim
        whose process is gone (same host) or older than ``ttl`` seconds is taken over."""
        import socket

        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        key = (task, config, objective, hparams, int(seed))

        def op():
            with self._connect() as c:
                c.execute("BEGIN IMMEDIATE")
                try:
                    if c.execute("SELECT 1 FROM results WHERE task=? AND config=? AND objective=? AND hparams=? "
                                 "AND seed=? LIMIT 1", key).fetchone():
                        c.execute("COMMIT")
                        return "done"
                    row = c.execute("SELECT owner, host, pid, created FROM claims WHERE task=? AND config=? AND "
                                    "objective=? AND hparams=? AND seed=?", key).fetchone()
                    if row and row[0] != owner and not (row[1] == host and not _alive(row[2])) \
                            and row[3] > now - ttl:
                        c.execute("COMMIT")
                        return "busy"
                    c.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?,?,?)", (*key, owner, host, pid, now))
                    c.execute("COMMIT")
                    return "mine"
                except BaseException:
                    c.execute("ROLLBACK")
                    raise

        return self._retry(op)

    def release(self, task: str, config: str, objective: str, hparams: str, seed: int, owner: str) -> None:
        with self._connect() as c:
            self._retry(lambda: c.execute("DELETE FROM claims WHERE task=? AND config=? AND objective=? AND hparams=? "
                                          "AND seed=? AND owner=?", (task, config, objective, hparams, int(seed), owner)))

    def release_all(self, owner: str) -> None:
        with self._connect() as c:
            self._retry(lambda: c.execute("DELETE FROM claims WHERE owner=?", (owner,)))

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

    def boards(self, task: str | None = None):
        """The leaderboards of what this store holds (task metadata from the registry or the store)."""
        from .leaderboard import boards

        return boards(self.rows(task), self.task_meta())

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


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Ctx:
    """``with store._connect() as c`` hands out the shared connection without closing it."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        return False
