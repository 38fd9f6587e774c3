"""The arena on the user's own data (issue 21): refusals before any trial, store errors, dead workers,
the Python API on user data and user objectives, the statistics against SciPy, the README examples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import losskit.arena  # noqa: F401  (registers the built-in tasks)
from losskit.arena import Candidate, Store, Task, TrialResult
from losskit.arena.runner import Summary, plan, run_trials
from losskit.arena.store import StoreError
from losskit.arena.task import register_task

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def _main(capsys, *args) -> tuple[int, str]:
    from losskit.arena import main

    rc = main(list(args))
    return rc, capsys.readouterr().out


# ------------------------------------------------------------------ refused before any trial starts
REFUSED = [
    (["noisy_labels", "-o", "binary_focall"], "did you mean binary_focal?"),
    (["noisy_labels", "-o", "cross_entropy,not_a_loss"], "unknown objective 'not_a_loss'"),
    (["noisy_labels", "--seeds", "0"], "--seeds: expected a number of seeds >= 1"),
    (["noisy_labels", "--seeds", "-1"], "--seeds"),
    (["noisy_labels", "--noise", "1.5"], "noise=1.5 is invalid; expected a real number in [0, 1)"),
    (["noisy_labels", "--noise", "-0.2"], "noise=-0.2 is invalid"),
    (["noisy_labels", "--noise", "abc"], "noise='abc' is not a float"),
    (["noisy_labels", "--dataset", "nosuch"], "expected one of 'digits', 'breast_cancer', 'wine'"),
    (["noisy_labels", "-o", "dpo"], "dpo is a preference objective; task 'noisy_labels' takes classification"),
    (["noisy_labels", "-o", "sinkhorn"], "sinkhorn is a transport objective"),
    (["noisy_labels", "-o", "binary_focal"], "binary_focal takes binary logits+targets"),
    (["noisy_labels", "-o", "gce(q=)"], "'q=' has no value"),
    (["noisy_labels", "-o", "gce(nosuch=1)"], "gce: unknown hyper-parameter 'nosuch'; its options: q"),
    (["noisy_labels", "-o", "gce(q=-1)"], "gce(q=-1): expected a real number in (0, 1]"),
    (["noisy_labels", "-o", "focal(gamma=abc)"], "focal(gamma='abc'): expected a real number in [0, inf)"),
    (["imbalanced", "--set", "ratio=0"], "ratio=0.0 is invalid"),
    (["noisy_labels", "--set", "epochs=0"], "epochs=0 is invalid; expected an integer >= 1"),
    (["noisy_labels", "--set", "epoch=3"], "did you mean epochs"),
    (["noisy_labels", "--trial-timeout", "-1"], "--trial-timeout: expected seconds >= 0"),
    (["noisy_labels", "--workers", "-1"], "--workers: expected a number of parallel trials >= 1"),
    (["noisy_labls"], "no arena task 'noisy_labls' (did you mean noisy_labels?)"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_cli_input_is_refused_before_any_trial(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out = _main(capsys, *args, "--no-progress")
    assert rc == 2, out
    assert message in out, out
    assert len(out.strip().splitlines()) == 1, out            # one line, no traceback, no table
    assert not list(tmp_path.iterdir())                         # no store was created


def test_show_an_unknown_task_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    st = Store("losskit_results.sqlite")
    st.write_trial("noisy_labels", "{}", "cross_entropy", "{}", "cross_entropy", 0, {"accuracy": 0.5})
    st.close()
    rc, out = _main(capsys, "show", "nosuchtask")
    assert rc == 2 and "no arena task 'nosuchtask'" in out
    rc, out = _main(capsys, "show", "noisy_labels")
    assert rc == 0 and "noisy_labels" in out


def _bad_stores(tmp_path):
    good = tmp_path / "good.sqlite"
    st = Store(good)
    for s in range(40):
        st.write_trial("t", "{}", "o", "{}", "o", s, {"m": float(s)})
    st.close()
    data = good.read_bytes()
    (tmp_path / "garbage.sqlite").write_bytes(os.urandom(3000))
    (tmp_path / "text.sqlite").write_text("task,objective\nnoisy_labels,ce\n")
    (tmp_path / "truncated.sqlite").write_bytes(data[: len(data) // 2 + 100])
    (tmp_path / "cut.sqlite").write_bytes(data[:4096])
    ro = tmp_path / "readonly.sqlite"
    ro.write_bytes(data)
    ro.chmod(0o444)
    (tmp_path / "adir.sqlite").mkdir()
    rodir = tmp_path / "rodir"
    rodir.mkdir()
    rodir.chmod(0o555)
    return {
        "garbage.sqlite": "is not an SQLite database",
        "text.sqlite": "is not an SQLite database",
        "truncated.sqlite": "truncated or corrupted",
        "cut.sqlite": "corrupted",
        "readonly.sqlite": "is read-only",
        "adir.sqlite": "is a directory",
        "rodir/new.sqlite": "is read-only",
        "missing/dir/new.sqlite": "does not exist",
    }


@pytest.mark.parametrize("command", ["run", "show", "report"])
def test_unusable_stores_give_one_clear_line_and_stay_untouched(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = _bad_stores(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for path, message in cases.items():
        if command != "run" and path in ("readonly.sqlite", "rodir/new.sqlite"):
            continue  # reading a read-only store is fine
        args = {"run": ["transport", "--set", "n=8", "--seeds", "1", "--no-progress"], "show": ["show"],
                "report": ["report", "--out", "rep"]}[command]
        rc, out = _main(capsys, *args, "--store", path)
        assert rc == 2, (path, out)
        if command != "run" and path.startswith(("rodir", "missing")):
            message = "no results store"
        assert message in out and len(out.strip().splitlines()) == 1, (path, out)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before                                        # nothing written, nothing created
    with pytest.raises(StoreError):
        Store(tmp_path / "garbage.sqlite")


def test_a_read_only_store_can_still_be_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _bad_stores(tmp_path)
    rc, out = _main(capsys, "show", "--store", "readonly.sqlite")
    assert rc == 0, out


# ------------------------------------------------------------------------------- dead pool workers
class Killer(Task):
    """A task whose candidate ``focal(gamma=7)`` kills its own worker process (as the OOM killer would)."""

    name = "test_killer"
    metrics = ("score",)
    baseline = "cross_entropy"
    defaults = {"sleep": 0.0}

    def candidates(self):
        return [Candidate("cross_entropy"), Candidate("focal", {"gamma": 7.0})]

    def run(self, candidate, seed, config):
        if candidate.options.get("gamma") == 7.0:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(config["sleep"])
        return TrialResult({"score": float(seed)})


register_task(Killer())


def test_a_dead_worker_is_a_failed_trial_and_the_run_goes_on(tmp_path):
    t = Killer()
    store = Store(tmp_path / "s.db")
    summary = Summary()
    trials = plan(t, t.config(), t.candidates(), range(4), store, summary)
    run_trials(trials, store, summary, backend="process", workers=2)
    assert summary.ran == 4                                      # every cross_entropy seed
    assert "worker process running this trial died" in summary.failed["test_killer/focal(gamma=7.0)"]
    assert {(label, kind) for _, _, label, kind, _ in store.notes()} == {("focal(gamma=7.0)", "failed")}


def _descendants(pid: int) -> set[int]:
    psutil = pytest.importorskip("psutil")
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_workers_die_with_a_sigkilled_arena(tmp_path):
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen([PY, "-m", "losskit.cli", "arena", "noisy_labels", "-o", "cross_entropy", "--seeds", "4",
                             "--workers", "2", "--set", "epochs=400", "--no-progress", "--store",
                             str(tmp_path / "s.db")], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        kids: set[int] = set()
        deadline = time.time() + 60
        while time.time() < deadline:                      # the forkserver, the resource tracker, 2 workers
            kids |= _descendants(proc.pid)
            if len(kids) >= 3 and len(_descendants(proc.pid)) >= 3:
                break
            time.sleep(0.2)
        assert len(kids) >= 3, kids
        time.sleep(1.0)
        kids |= _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 15
        alive = kids
        while time.time() < deadline:
            alive = {k for k in kids if psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE}
            if not alive:
                break
            time.sleep(0.25)
        assert not alive, [psutil.Process(k).cmdline() for k in alive]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
