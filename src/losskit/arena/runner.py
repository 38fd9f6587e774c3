"""Plan trials, skip the ones already in the store, run the rest on a backend, store each as it ends.

Backends: ``serial`` (this process), ``process`` (a local process pool, the default) and ``ray`` (Ray
tasks on a local or remote cluster, ``pip install losskit[ray]``). Each trial is a pure function of
(task, config, candidate, seed): :func:`execute`, run wherever the backend puts it; only this process
writes to the store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .store import Store
from .task import Candidate, Task, Unavailable, canonical

__all__ = ["Trial", "Summary", "plan", "execute", "run_trials", "BACKENDS"]

BACKENDS = ("process", "serial", "ray")


@dataclass
class Trial:
    task: Task
    config: dict[str, Any]
    candidate: Candidate
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.candidate.objective, self.candidate.hparams, self.seed)


@dataclass
class Summary:
    ran: int = 0
    reused: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: every failed trial: (task, candidate name, seed, message)
    failed_trials: list[tuple[str, str, int, str]] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


def plan(task: Task, config: dict[str, Any], candidates: Sequence[Candidate], seeds: Iterable[int],
         store: Store, summary: Summary) -> list[Trial]:
    """The trials still to run; candidates whose objectives are not registered are noted and skipped."""
    cfg = canonical(config)
    store.describe(task)
    done = store.done(task.name, cfg)
    todo = []
    for c in candidates:
        missing = c.missing()
        if missing:
            msg = f"not registered: {', '.join(missing)}"
            summary.skipped[f"{task.name}/{c.name}"] = msg
            store.note(task.name, cfg, c.objective, c.hparams, c.name, "skipped", msg)
            continue
        store.clear_note(task.name, cfg, c.objective, c.hparams)
        for s in seeds:
            t = Trial(task, config, c, int(s))
            if t.key in done:
                summary.reused += 1
            else:
                todo.append(t)
    return todo


def _init_worker(threads: int = 1, parent: int | None = None) -> None:
    """A pool worker's set-up: one torch thread, and it dies with the arena process (``parent``)."""
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the arena) dies, even by SIGKILL: Linux's parent-death signal
    (``prctl(PR_SET_PDEATHSIG)``, which fires when the process that forked us (the forkserver) exits)
    and, everywhere, a watchdog thread that polls whether ``parent`` is still alive."""
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - a pid we may not signal: not our parent any more
                os._exit(1)

    threading.Thread(target=watch, name="losskit-arena-watchdog", daemon=True).start()


class TrialTimeout(Exception):
    """A trial ran past the per-trial time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise :class:`TrialTimeout` in this thread after ``seconds`` (POSIX interval timer; the check
    happens between Python bytecodes, so a long single native call finishes first). No-op without a
    limit, off the main thread, or where ``setitimer`` does not exist."""
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise TrialTimeout(f"the trial ran past the {seconds:g} s per-trial limit (--trial-timeout)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def execute(task: Task, config: dict[str, Any], candidate: Candidate, seed: int, timeout: float | None = None):
    """Run one trial; returns ``("ok", TrialResult, seconds)``, ``("skip", msg, 0)`` or ``("fail", msg, 0)``.

    Never raises for a candidate's own trouble: an objective that cannot be fed, that errors, or that
    runs past ``timeout`` seconds is a result the leaderboard reports, not a crash of the arena.
    """
    import torch

    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with _time_limit(timeout):
            res = task.run(candidate, seed, dict(config))
    except Unavailable as err:
        return ("skip", str(err), 0.0)
    except Exception as err:  # noqa: BLE001  (reported, with its type, in the notes)
        msg = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        return ("fail", msg, 0.0)
    res.cpu_s = time.process_time() - c0
    return ("ok", res, time.perf_counter() - t0)


def _ray_execute(task, config, candidate, seed, timeout=None):  # pragma: no cover - runs inside Ray workers
    _init_worker(1)
    return execute(task, config, candidate, seed, timeout)


def run_trials(trials: Sequence[Trial], store: Store, summary: Summary, *, backend: str = "process",
               workers: int | None = None, address: str | None = None,
               on_done: Callable[[Trial, str], None] | None = None, timeout: float | None = None) -> Summary:
    """Run ``trials`` on ``backend``, storing each as soon as it finishes; a trial running past
    ``timeout`` seconds is recorded as failed (with the reason) and the run goes on."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    workers = workers or min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()

    def record(trial: Trial, out) -> None:
        status, payload, secs = out
        cfg = canonical(trial.config)
        c = trial.candidate
        key = f"{trial.task.name}/{c.name}"
        if status == "ok":
            store.write_trial(trial.task.name, cfg, c.objective, c.hparams, c.name, trial.seed, payload.metrics,
                              payload.curve, payload.curve_metric, backend=backend, wall_s=secs,
                              cpu_s=payload.cpu_s)
            summary.ran += 1
            summary.cpu_s += payload.cpu_s
        else:
            (summary.skipped if status == "skip" else summary.failed)[key] = payload
            if status == "fail":
                summary.failed_trials.append((trial.task.name, c.name, trial.seed, payload))
            store.note(trial.task.name, cfg, c.objective, c.hparams, c.name,
                       "skipped" if status == "skip" else "failed", payload)
        if on_done:
            on_done(trial, status)

    if not trials:
        return summary
    claims = _Claims(store, summary, on_done)
    try:
        if backend == "serial" or (backend == "process" and workers == 1):
            import torch

            prev = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                queue = list(trials)
                while queue:
                    for t in claims.take(queue):
                        record(t, execute(t.task, t.config, t.candidate, t.seed, timeout))
                        claims.release(t)
                    queue = claims.wait(claims.deferred())
            finally:
                torch.set_num_threads(prev)
        elif backend == "process":
            _run_pool(trials, record, workers, timeout, claims)
        else:
            _run_ray(trials, record, workers, address, timeout)
    finally:
        claims.release_all()
    summary.wall_s += time.perf_counter() - t0
    return summary


class _Claims:
    """Claims of trials in the store, so that concurrent runs on one store share the work: a trial another
    live run has claimed is deferred; at the end this run waits for it (its result is then reused) or takes
    it over if that run died."""

    def __init__(self, store: Store, summary: Summary, on_done=None):
        import uuid

        self.store, self.summary, self.on_done = store, summary, on_done
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._deferred: list[Trial] = []

    def _key(self, t: Trial):
        c = t.candidate
        return (t.task.name, canonical(t.config), c.objective, c.hparams, t.seed)

    def try_one(self, t: Trial) -> bool:
        """True: this run has the trial; otherwise it was done elsewhere (counted) or is deferred."""
        state = self.store.claim(*self._key(t), self.owner)
        if state == "mine":
            return True
        if state == "done":
            self.summary.reused += 1
            if self.on_done:
                self.on_done(t, "reused")
        else:
            self._deferred.append(t)
        return False

    def take(self, trials):
        """The trials of ``trials`` this run can run now (a generator: each is claimed when it is reached)."""
        for t in trials:
            if self.try_one(t):
                yield t

    def deferred(self) -> list[Trial]:
        out, self._deferred = self._deferred, []
        return out

    def wait(self, trials: list[Trial], poll: float = 0.5) -> list[Trial]:
        """Block until some of ``trials`` (claimed by other runs) are done (counted as reused) or free;
        returns the free ones, now claimed by this run (empty when all were done elsewhere)."""
        while trials:
            mine = [t for t in trials if self.try_one(t)]
            trials = self.deferred()
            if mine:
                self._deferred = trials
                return mine
            if trials:
                time.sleep(poll)
        return []

    def release(self, t: Trial) -> None:
        self.store.release(*self._key(t), self.owner)

    def release_all(self) -> None:
        try:
            self.store.release_all(self.owner)
        except Exception:  # noqa: BLE001 - the store may be gone; claims of a dead process expire anyway
            pass


def _run_pool(trials, record, workers: int, timeout=None, claims: _Claims | None = None) -> None:
    """Run ``trials`` on a local process pool, at most ``workers + 1`` submitted at a time (each claimed
    in the store when submitted). A worker that dies (killed, out of memory, a crash in native code)
    breaks the pool: the trials in flight are rerun one at a time in a pool of their own, so the one that
    kills its worker again is recorded as failed with the reason, and the rest of the run goes on in a
    fresh pool."""
    import itertools
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    queue = deque(trials)
    counter = itertools.count()
    take = claims.try_one if claims is not None else (lambda t: True)
    release = claims.release if claims is not None else (lambda t: None)
    while queue:
        suspects: list[Trial] = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(1, os.getpid())) as pool:
            inflight: dict = {}

            def fill(pool=pool, inflight=inflight):
                while queue and len(inflight) < workers + 1:
                    t = queue.popleft()
                    if take(t):
                        f = pool.submit(execute, t.task, t.config, t.candidate, t.seed, timeout)
                        inflight[f] = (next(counter), t)

            fill()
            while inflight:
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                broken = False
                for f in sorted(done, key=lambda f: inflight[f][0]):
                    try:
                        out = f.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    _, t = inflight.pop(f)
                    record(t, out)
                    release(t)
                if broken:  # every trial still in flight may have been on the dead worker
                    suspects = [t for _, t in sorted(inflight.values(), key=lambda v: v[0])]
                    break
                fill()
        for t in suspects:
            record(t, _isolated(t, ctx, timeout))
            release(t)
        if not queue and claims is not None:
            queue.extend(claims.wait(claims.deferred()))


def _isolated(t: Trial, ctx, timeout):
    """One trial in a one-worker pool of its own: its result, or a failure if its worker dies."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker,
                             initargs=(1, os.getpid())) as pool:
        try:
            return pool.submit(execute, t.task, t.config, t.candidate, t.seed, timeout).result()
        except BrokenProcessPool as err:
            return ("fail", f"the worker process running this trial died ({err})"[:300], 0.0)


def _run_ray(trials, record, workers, address, timeout=None):
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("the ray backend needs Ray: pip install 'losskit[ray]'") from err
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        if not address:  # a local instance: its workers import the same losskit as this process
            import losskit

            root = os.path.dirname(os.path.dirname(os.path.abspath(losskit.__file__)))
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            kw["runtime_env"] = {"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_execute)
        pending = {remote.remote(t.task, t.config, t.candidate, t.seed, timeout): t for t in trials}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                record(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()
