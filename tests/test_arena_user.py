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


# ------------------------------------------------------------------------ the user's own data (API)
TINY = {"epochs": 3, "hidden": 16, "eval_every": 1}


def _breast_cancer(noise=0.2, seed=0):
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < noise
    y = y.copy()
    y[flip] = 1 - y[flip]
    return x, y


def _write_files(tmp_path, noise=0.2):
    """scikit-learn's breast_cancer with injected label noise, as CSV, Parquet and .npz."""
    import numpy as np

    x, y = _breast_cancer(noise)
    names = [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*names, "label"])] + [",".join([*(f"{v:.6g}" for v in row), str(int(t))]) for row, t in zip(x, y)]
    (tmp_path / "bc.csv").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "bc.npz", X=x, label=y)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {n: x[:, i] for i, n in enumerate(names)}
        cols["label"] = y
        pq.write_table(pa.table(cols), tmp_path / "bc.parquet")
    except ImportError:  # pragma: no cover
        pass
    return x, y


def my_loss(logits, target):
    """A user's objective: cross-entropy with heavy label smoothing."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, target, label_smoothing=0.3)


def test_compare_on_arrays_with_user_objectives_and_failures():
    import torch

    x, y = _breast_cancer()

    def nan_loss(logits, target):
        return logits.sum() * float("nan")

    def broken(logits, target):
        raise RuntimeError("my loss is broken")

    task = losskit.arena.Task.from_arrays(x, y, **TINY)
    res = losskit.arena.compare(task, ["gce(q=0.7)", my_loss, nan_loss, broken], seeds=2)
    labels = [r["objective"] for r in res.leaderboard]
    assert sorted(labels) == ["cross_entropy", "gce(q=0.7)", "my_loss"]            # the baseline is added
    assert "the objective returned nan at step 0" in res.failed["nan_loss"]
    assert "RuntimeError: my loss is broken" in res.failed["broken"]
    ok = [r for r in res.trials if r["status"] == "ok"]
    assert len(ok) == 6 and {"accuracy", "balanced_accuracy", "seed"} <= set(ok[0])
    bad = sorted((r["objective"], r["seed"]) for r in res.trials if r["status"] == "failed")
    assert bad == [("broken", 0), ("broken", 1), ("nan_loss", 0), ("nan_loss", 1)]      # one row per failed trial
    assert all("error" in r for r in res.trials if r["status"] == "failed")
    assert res.recommendation.startswith(("Recommendation:", "No significant difference"))
    base = next(r for r in res.leaderboard if r["objective"] == "cross_entropy")
    assert base["p_holm"] is None and all(r["p_holm"] is not None for r in res.leaderboard if r is not base)
    assert str(res).splitlines()[0] == res.recommendation
    # torch tensors, a Dataset, a user model and a user metric
    ds = torch.utils.data.TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))

    def auc(y_true, scores):
        from sklearn.metrics import roc_auc_score

        return roc_auc_score(y_true, scores[:, 1] - scores[:, 0])

    made = []

    def model_fn(d_in, k):
        made.append((d_in, k))
        return torch.nn.Sequential(torch.nn.Linear(d_in, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))

    t2 = losskit.arena.Task.from_dataset(ds, model_fn=model_fn, metric=auc, name="bc_dataset", **TINY)
    res2 = losskit.arena.compare(t2, {"my_loss": my_loss}, seeds=2)
    assert res2.metric == "auc" and made[0] == (30, 2) and 0.5 < res2.leaderboard[0]["mean"] <= 1


def test_compare_refuses_bad_objectives_before_any_trial():
    x, y = _breast_cancer()
    task = losskit.arena.Task.from_arrays(x, y, **TINY)
    def focal(logits, target):
        return logits.sum()

    for objectives, message in ((["binary_focall"], "did you mean binary_focal"), (["dpo"], "preference objective"),
                                (["gce(q=2)"], r"expected a real number in \(0, 1\]"),
                                ([lambda a, b: a.sum()], "name your objective"),
                                ([focal], "has the name of a registered objective")):
        with pytest.raises((ValueError, TypeError), match=message):
            losskit.arena.compare(task, objectives, seeds=1)
    with pytest.raises(ValueError, match="seeds"):
        losskit.arena.compare(task, ["focal"], seeds=0)


def test_files_csv_parquet_npz_and_bad_data(tmp_path):
    import numpy as np

    from losskit.arena.user import DataError

    x, y = _write_files(tmp_path)
    for name in ("bc.csv", "bc.parquet", "bc.npz"):
        if not (tmp_path / name).exists():
            continue
        t = losskit.arena.Task.from_file(tmp_path / name, target="label", **TINY)
        assert t.data.x.shape == x.shape and (t.data.y == y).all()
        assert np.allclose(t.data.x, x, rtol=1e-5)
    text = (tmp_path / "bc.csv").read_text().splitlines()
    bad = {
        "missing.csv": [text[0], *text[1:8], ",".join(["", *text[8].split(",")[1:]]), *text[9:]],
        "nonnum.csv": [text[0], *text[1:4], ",".join(["abc", *text[4].split(",")[1:]]), *text[5:]],
        "single.csv": [text[0], *(",".join([*r.split(",")[:-1], "1"]) for r in text[1:])],
        "few.csv": text[:6],
        "rare.csv": [*text[:40], ",".join([*text[40].split(",")[:-1], "7"])],
    }
    for name, lines in bad.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    cases = {
        "missing.csv": "column 'f0' has a missing value at line 9",
        "nonnum.csv": "column 'f0' is not numeric (line 5: 'abc')",
        "single.csv": "has a single class",
        "few.csv": "5 rows are fewer than the 10",
        "rare.csv": "class 7 of 'label' has 1 row",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            losskit.arena.Task.from_file(tmp_path / name, target="label")
    with pytest.raises(DataError, match=r"no column 'lable' \(did you mean label\?\)"):
        losskit.arena.Task.from_file(tmp_path / "bc.csv", target="lable")
    with pytest.raises(DataError, match="imbalanced template is binary"):
        losskit.arena.Task.from_arrays(np.random.rand(30, 2), np.arange(30) % 3, task="imbalanced")


def test_imbalanced_template_and_resume_from_a_store(tmp_path):
    import numpy as np

    x, y = _breast_cancer(noise=0.0)
    keep = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:40]])   # malignant: the minority
    task = losskit.arena.Task.from_arrays(x[keep], y[keep], task="imbalanced", **TINY)
    store = tmp_path / "s.sqlite"
    res = losskit.arena.compare(task, ["weighted_ce", "binary_focal"], seeds=2, store=store)
    assert res.metric == "f1" and {r["objective"] for r in res.leaderboard} == {"cross_entropy", "weighted_ce",
                                                                                "binary_focal"}
    again = losskit.arena.compare(task, ["weighted_ce", "binary_focal"], seeds=2, store=store)
    assert again.summary.ran == 0 and again.summary.reused == 6 and again.leaderboard == res.leaderboard


def test_cli_on_a_csv_and_list_tasks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write_files(tmp_path)
    rc, out = _main(capsys, "--data", "bc.csv", "--target", "label", "--objectives", "ce,focal,gce", "--seeds", "2",
                    "--set", "epochs=3", "--set", "hidden=16", "--no-progress", "--workers", "1")
    assert rc == 0, out
    assert "ran 6 trials" in out and "classification:bc" in out
    assert "No significant difference" in out or "Recommendation:" in out
    for args, message in ((["--data", "bc.csv", "--target", "lable"], "no column 'lable'"),
                          (["--data", "bc.csv"], "--data needs --target"),
                          (["--data", "bc.csv", "--target", "label", "-o", "sinkhorn"], "transport objective"),
                          (["--data", "nope.csv", "--target", "label"], "no such file")):
        rc, out = _main(capsys, *args, "--no-progress")
        assert rc == 2 and message in out, out
    rc, out = _main(capsys, "--list-tasks")
    assert rc == 0 and "classification" in out and "imbalanced" in out and "noisy_labels" in out


# ------------------------------------------------------------------------------------- statistics
def test_holm_by_hand():
    from losskit.arena.stats import holm

    # p sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])                       # capped at 1
    assert holm([0.2]) == [0.2]


def test_paired_against_scipy_and_the_recommendation():
    import numpy as np
    from scipy import stats

    from losskit.arena.stats import holm, paired, recommendation, versus_baseline

    rng = np.random.default_rng(1)
    base = rng.normal(0.80, 0.02, 8)
    x = base + rng.normal(0.03, 0.01, 8)
    r = paired(list(x), list(base))
    ref = stats.ttest_rel(x, base)
    assert r["p"] == pytest.approx(ref.pvalue) and r["diff"] == pytest.approx(float(np.mean(x - base)))
    lo, hi = ref.confidence_interval(0.95)
    assert r["ci"] == pytest.approx((lo, hi))
    assert r["d_z"] == pytest.approx(np.mean(x - base) / np.std(x - base, ddof=1))
    values = {"ce": dict(enumerate(base)), "good": dict(enumerate(x)),
              "same": dict(enumerate(base + rng.normal(0, 0.01, 8)))}
    comps = versus_baseline(values, "ce")
    good = next(c for c in comps if c.label == "good")
    assert good.better and [c.p_holm for c in comps] == pytest.approx(holm([c.p for c in comps]))
    text = recommendation(comps, "ce", "accuracy")
    assert text.startswith("Recommendation: good: accuracy") and "Holm-adjusted p=" in text and "95% CI" in text
    flat = versus_baseline({"ce": {0: 0.8, 1: 0.81, 2: 0.79}, "x": {0: 0.81, 1: 0.80, 2: 0.79}}, "ce")
    assert recommendation(flat, "ce", "accuracy").startswith("No significant difference")
    # lower is better: a significantly smaller error wins
    err = versus_baseline({"ce": dict(enumerate(1 - base)), "good": dict(enumerate(1 - x))}, "ce",
                          higher_is_better=False)
    assert err[0].better and recommendation(err, "ce", "error", higher_is_better=False).startswith(
        "Recommendation: good")


def test_friedman_and_nemenyi_against_scipy_and_demsar():
    import numpy as np
    from scipy import stats

    from losskit.arena.stats import average_ranks, friedman, nemenyi_cd

    rng = np.random.default_rng(0)
    for n, k in ((6, 4), (10, 3), (5, 7)):
        s = rng.normal(size=(n, k)).round(1)            # rounding makes ties: the tie correction matters
        stat, p = friedman(s.tolist())
        ref = stats.friedmanchisquare(*s.T)
        assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # Demšar (2006), Table 5(a): q_0.05 for k = 2..10
    q = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    for k, qk in zip(range(2, 11), q):
        assert nemenyi_cd(k, 1) / np.sqrt(k * (k + 1) / 6) == pytest.approx(qk, abs=2e-3)
    assert nemenyi_cd(4, 14) == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 14)), abs=2e-3)
    assert average_ranks([[0.9, 0.8, 0.8], [0.7, 0.9, 0.5]]) == pytest.approx([1.5, 1.75, 2.75])


def test_across_boards_summary():
    from losskit.arena.leaderboard import Board, Entry, across

    def board(task, scores):
        return Board(task, {}, ("accuracy",), frozenset(), "a",
                     [Entry(lab, lab, "{}", {"accuracy": {0: v}}) for lab, v in scores.items()])

    bs = [board(f"t{i}", {"a": 0.5 + 0.01 * i, "b": 0.6 + 0.01 * i, "c": 0.7}) for i in range(6)]
    s = across(bs)
    assert s.labels == ["a", "b", "c"] and s.ranks == pytest.approx([3.0, 2.0, 1.0]) and s.p < 0.05
    assert "c ranks best" in s.text() and "Nemenyi critical difference" in s.text()


# ------------------------------------------------------------------------------ the README examples
def _readme_examples():
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("## Choose a loss for your data", 1)[1].split("\n## ", 1)[0]
    [bash] = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    [py] = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    return bash.strip(), py


def _write_my_csv(tmp_path):
    """breast_cancer (scikit-learn's bundled copy) with 20% of the labels flipped, as my.csv."""
    x, y = _breast_cancer(noise=0.2)
    names = [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*names, "label"])] + [",".join([*(f"{v:.6g}" for v in r), str(int(t))]) for r, t in zip(x, y)]
    (tmp_path / "my.csv").write_text("\n".join(lines) + "\n")


def test_readme_cli_line_runs_on_a_csv(tmp_path):
    import shlex

    _write_my_csv(tmp_path)
    bash, _ = _readme_examples()
    argv = shlex.split(bash)
    assert argv[:2] == ["losskit", "arena"]
    out = subprocess.run([PY, "-m", "losskit.cli", *argv[1:], "--no-progress"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ran 15 trials" in out.stdout                         # ce, focal, gce x 5 seeds
    assert "Recommendation:" in out.stdout or "No significant difference" in out.stdout


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    _write_my_csv(tmp_path)
    monkeypatch.chdir(tmp_path)
    _, py = _readme_examples()
    exec(compile(py, "<README>", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.startswith(("Recommendation:", "No significant difference"))
    assert "smooth_ce" in out and "cross_entropy" in out


# ------------------------------------------------------------------ resume and sharing on user tasks
def test_a_sigkilled_user_run_resumes_without_repeating(tmp_path, monkeypatch, capsys):
    import re
    import sqlite3

    _write_files(tmp_path)
    args = ["--data", "bc.csv", "--target", "label", "-o", "ce", "--seeds", "10", "--backend", "serial",
            "--set", "epochs=4", "--set", "hidden=16", "--no-progress"]
    proc = subprocess.Popen([PY, "-m", "losskit.cli", "arena", *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "losskit_results.sqlite"
    deadline, n = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if db.exists():
            try:
                n = sqlite3.connect(db, timeout=5).execute("SELECT COUNT(DISTINCT seed) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if n >= 2:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= n < 10, "the run finished before it could be killed"
    before = dict(sqlite3.connect(db).execute("SELECT seed, created FROM results WHERE metric='accuracy'"))
    monkeypatch.chdir(tmp_path)
    rc, out = _main(capsys, *args)                         # the dead run's claim is taken over
    assert rc == 0, out
    ran = int(re.search(r"ran (\d+) trials", out).group(1))
    assert ran + len(before) == 10 and f"{len(before)} already in" in out
    after = dict(sqlite3.connect(db).execute("SELECT seed, created FROM results WHERE metric='accuracy'"))
    assert sorted(after) == list(range(10)) and all(after[s] == before[s] for s in before)


def test_claims_share_trials_between_runs(tmp_path):
    st = Store(tmp_path / "s.db")
    key = ("t", "{}", "o", "{}", 0)
    assert st.claim(*key, "a") == "mine"
    assert st.claim(*key, "b") == "busy"                    # a live run holds it
    assert st.claim(*key, "a") == "mine"                    # re-entrant for its owner
    st.release(*key, "a")
    assert st.claim(*key, "b") == "mine"
    st.write_trial("t", "{}", "o", "{}", "o", 0, {"m": 1.0})
    assert st.claim(*key, "c") == "done"
    con = st._connect().conn
    con.execute("UPDATE claims SET pid=999999999 WHERE owner='b'")   # its process is gone
    key1 = ("t", "{}", "o", "{}", 1)
    st.claim(*key1, "b")
    con.execute("UPDATE claims SET pid=999999999 WHERE owner='b'")
    assert st.claim(*key1, "c") == "mine"                   # a dead run's claim is taken over


def test_regression_template_hl_gauss_two_hot_vs_mse(tmp_path, monkeypatch, capsys):
    import numpy as np
    from sklearn.datasets import load_diabetes

    from losskit.arena.user import DataError

    x, y = load_diabetes(return_X_y=True)
    task = losskit.arena.Task.from_arrays(x, y, task="regression", epochs=3, hidden=16, eval_every=1)
    res = losskit.arena.compare(task, ["hl_gauss_loss(sigma=0.2)", "two_hot_loss"], seeds=2)
    assert res.metric == "rmse" and not res.higher_is_better and res.baseline == "mse"
    assert {r["objective"] for r in res.leaderboard} == {"mse", "hl_gauss_loss(sigma=0.2)", "two_hot_loss"}
    assert all(0 < r["mean"] < 200 for r in res.leaderboard) and {"mae", "r2"} <= set(res.trials[0])
    with pytest.raises(ValueError, match="focal takes logits\\+labels; the regression template"):
        losskit.arena.compare(task, ["focal"], seeds=1)
    with pytest.raises(DataError, match="is constant"):
        losskit.arena.Task.from_arrays(x, np.ones(len(x)), task="regression")
    # the CLI on a Parquet file
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    cols = {f"f{i}": x[:, i] for i in range(x.shape[1])}
    cols["progression"] = y
    pq.write_table(pa.table(cols), tmp_path / "diabetes.parquet")
    monkeypatch.chdir(tmp_path)
    rc, out = _main(capsys, "--data", "diabetes.parquet", "--target", "progression", "--task", "regression",
                    "-o", "hl_gauss_loss", "--seeds", "2", "--set", "epochs=2", "--set", "hidden=8", "--no-progress",
                    "--workers", "2")
    assert rc == 0 and "ran 4 trials" in out and "regression:diabetes" in out, out


def test_fair_tuning_same_budget_and_the_test_split_once(monkeypatch):
    from losskit.arena import user

    x, y = _breast_cancer()
    task = losskit.arena.Task.from_arrays(x, y, epochs=2, hidden=8, eval_every=1)
    calls = []
    real = user.fit

    def spy(t, c, seed, config, validation=False):
        calls.append((c.objective, seed, validation, config["lr"], dict(c.options)))
        return real(t, c, seed, config, validation)

    monkeypatch.setattr(user, "fit", spy)
    res = losskit.arena.compare(task, ["focal(gamma=2.0)", "gce(q=0.7)"], seeds=2, tune=3)
    for obj in ("cross_entropy", "focal", "gce"):
        for seed in (0, 1):
            mine = [c for c in calls if c[0] == obj and c[1] == seed]
            assert [c[2] for c in mine] == [True, True, True, False]          # 3 on validation, test once
    lrs = {obj: [c[3] for c in calls if c[0] == obj and c[1] == 0 and c[2]] for obj in ("cross_entropy", "gce")}
    assert lrs["cross_entropy"] == lrs["gce"]                                  # the same learning rates for all
    qs = [c[4]["q"] for c in calls if c[0] == "gce" and c[2]]
    assert len(set(qs)) > 1 and all(0 < q <= 1 for q in qs)                    # q searched inside its domain
    row = next(r for r in res.trials if r["objective"] == "gce(q=0.7)")
    assert "tuned_lr" in row and 0 < row["tuned_q"] <= 1
    assert user.tune_space(losskit.arena.Candidate("focal", {"gamma": 2.0})) == {"gamma": (0.2, 20.0, True)}


def test_report_of_a_user_task_recommends_shows_tuning_and_critical_difference(tmp_path):
    from losskit.arena.report import write_report
    from losskit.arena.task import _TASKS

    x, y = _breast_cancer()
    store = tmp_path / "s.sqlite"
    task = losskit.arena.Task.from_arrays(x, y, name="mine", epochs=2, hidden=8, eval_every=1)
    for noise in (0.0, 0.3):
        losskit.arena.compare(task, ["gce(q=0.7)", "sce"], seeds=2, store=store, config={"noise": noise}, tune=2)
    _TASKS.pop("mine")                                # a later process: the task is not registered there
    st = Store(store, readonly=True)
    [b0, b1] = st.boards()
    assert b0.baseline == "cross_entropy" and b0.metrics == ("accuracy", "balanced_accuracy")
    assert "tuned_lr" not in b0.metrics and set(b0.tuned()["gce(q=0.7)"]) == {"lr", "q"}
    path = write_report(st, tmp_path / "rep")
    html = Path(path).read_text()
    first = html.split("<h2", 2)[2]                   # after the contents: the Recommendations section
    assert first.split(">", 1)[1].startswith("Recommendations")
    assert ("No significant difference" in first.split("</ul>")[0]) or ("Recommendation:" in first.split("</ul>")[0])
    assert "critical-difference.png" in html and (tmp_path / "rep" / "critical-difference.png").exists()
    assert "Tuned hyper-parameters" in html and "Nemenyi critical difference" in html


def test_embeddings_and_distillation_templates_on_user_data():
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from losskit.arena.user import DataError

    x, y = load_digits(return_X_y=True)
    x, y = x[:400], y[:400]
    calls = []

    def jitter(v, g):                                     # the user's augmentation
        calls.append(1)
        return v + 0.2 * torch.randn(v.shape, generator=g)

    emb = losskit.arena.Task.from_arrays(x, y, task="embeddings", augment=jitter, epochs=2, eval_every=2, dim=8,
                                         hidden=16)
    res = losskit.arena.compare(emb, ["supcon", "vicreg"], seeds=2)
    assert res.metric == "probe_accuracy" and calls and {r["objective"] for r in res.leaderboard} == {
        "info_nce", "supcon", "vicreg"}
    with pytest.raises(ValueError, match="dpo is a preference objective"):
        losskit.arena.compare(emb, ["dpo"], seeds=1)
    teacher = LogisticRegression(max_iter=300).fit(x, y)
    for t in (teacher.decision_function(x),                                           # its logits
              lambda v: torch.tensor(teacher.decision_function(v.numpy()))):          # or a callable
        dist = losskit.arena.Task.from_arrays(x, y, task="distillation", teacher=t, epochs=2, eval_every=1)
        res = losskit.arena.compare(dist, ["kd_loss(divergence=forward)"], seeds=2)
        assert res.metric == "accuracy" and "agreement" in res.trials[0] and len(res.leaderboard) == 2
    with pytest.raises(DataError, match=r"teacher: expected logits of shape \(400, 10\)"):
        losskit.arena.Task.from_arrays(x, y, task="distillation", teacher=np.zeros((400, 3)))
    with pytest.raises(ValueError, match="needs teacher="):
        losskit.arena.Task.from_arrays(x, y, task="distillation")


def test_transport_template_between_user_point_clouds(tmp_path, monkeypatch, capsys):
    import numpy as np

    from losskit.arena.user import DataError

    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(150, 3)), rng.normal(size=(90, 3)) + 1.0
    task = losskit.arena.Task.from_arrays(src, tgt, task="transport", n=24, repeats=1)
    res = losskit.arena.compare(task, ["sinkhorn", "sliced_wasserstein"], seeds=2)
    assert res.baseline == "exact_ot" and res.metric == "rel_error" and not res.higher_is_better
    board = {r["objective"]: r for r in res.leaderboard}
    assert board["exact_ot"]["mean"] < 1e-6 and board["sinkhorn"]["mean"] > 0
    assert "wasserstein_1d" not in {c.objective for c in task.candidates()}          # 3-d clouds
    with pytest.raises(DataError, match="3 and 2 dimensions"):
        losskit.arena.Task.from_arrays(src, tgt[:, :2], task="transport")
    with pytest.raises(ValueError, match="setting n=500 is invalid"):
        losskit.arena.Task.from_arrays(src, tgt, task="transport", n=500)
    np.savez(tmp_path / "clouds.npz", source=src, target=tgt)
    monkeypatch.chdir(tmp_path)
    rc, out = _main(capsys, "--data", "clouds.npz", "--task", "transport", "-o", "sinkhorn", "--seeds", "2",
                    "--set", "n=16", "--set", "repeats=1", "--no-progress", "--workers", "1")
    assert rc == 0 and "ran 4 trials" in out and "transport:clouds" in out, out


def _write_pairs(path, n=200, seed=0, ref=False):
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    k, prompts = 5, 4
    r = rng.normal(size=(prompts, k))
    with open(path, "w") as f:
        for _ in range(n):
            p = int(rng.integers(prompts))
            a, b = (int(v) for v in rng.choice(k, 2, replace=False))
            if rng.random() >= 1 / (1 + np.exp(-(r[p, a] - r[p, b]))):
                a, b = b, a
            row = {"prompt": f"q{p}", "chosen": f"answer {a}", "rejected": f"answer {b}"}
            if ref:
                row.update(ref_chosen_logp=-float(np.log(k)), ref_rejected_logp=-float(np.log(k)))
            f.write(json.dumps(row) + "\n")


def test_preference_template_from_jsonl_pairs(tmp_path, monkeypatch, capsys):
    from losskit.arena.user import DataError

    _write_pairs(tmp_path / "pairs.jsonl", ref=True)
    task = losskit.arena.Task.from_file(tmp_path / "pairs.jsonl", target=None, task="preference", epochs=3)

    def margin_loss(chosen_logratio, rejected_logratio):            # a user's preference loss
        return (1 - (chosen_logratio - rejected_logratio)).clamp_min(0).mean()

    res = losskit.arena.compare(task, ["ipo", "kto", "simpo", margin_loss], seeds=2)
    assert res.baseline == "dpo" and res.metric == "pair_accuracy" and not res.failed
    assert {r["objective"] for r in res.leaderboard} == {"dpo", "ipo", "kto", "simpo", "margin_loss"}
    assert all(0 <= r["mean"] <= 1 for r in res.leaderboard) and "kl_to_ref" in res.trials[0]
    with pytest.raises(ValueError, match="focal is a classification objective"):
        losskit.arena.compare(task, ["focal"], seeds=1)
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    for bad, message in (([*lines[:3], "{not json", *lines[3:]], "line 4 is not JSON"),
                         ([*lines[:5], '{"prompt": "q", "chosen": "a"}'], "line 6: no 'rejected' field"),
                         ([*lines[:2], '{"prompt": "q", "chosen": "a", "rejected": "a"}'], "line 3: chosen and rejected"),
                         ([lines[0].replace('"ref_chosen_logp": -1.6094379124341003', '"ref_chosen_logp": 2')],
                          "is not a log-probability"),
                         (lines[:5], "5 pairs are fewer than the 10")):
        (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
        with pytest.raises(DataError, match=message):
            losskit.arena.Task.from_file(tmp_path / "bad.jsonl", target=None, task="preference")
    monkeypatch.chdir(tmp_path)
    rc, out = _main(capsys, "--data", "pairs.jsonl", "--task", "preference", "-o", "ipo", "--seeds", "2",
                    "--set", "epochs=2", "--no-progress", "--workers", "1")
    assert rc == 0 and "ran 4 trials" in out and "preference:pairs" in out, out


def test_fair_tuning_on_ray_tune_picks_what_the_local_search_picks(tmp_path):
    pytest.importorskip("ray.tune")
    x, y = _breast_cancer()
    task = losskit.arena.Task.from_arrays(x, y, name="ray_tuned", epochs=2, hidden=8, eval_every=1)
    local = losskit.arena.compare(task, ["gce(q=0.7)"], seeds=1, tune=2)
    ray = losskit.arena.compare(task, ["gce(q=0.7)"], seeds=1, tune=2, tune_backend="ray")
    pick = lambda res: sorted((r["objective"], r["tuned_lr"], r.get("tuned_q")) for r in res.trials)  # noqa: E731
    assert pick(ray) == pick(local)
    assert [r["mean"] for r in ray.leaderboard] == pytest.approx([r["mean"] for r in local.leaderboard])


def test_cli_exits_non_zero_when_every_trial_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # a task whose every trial raises: the run records the failures and exits non-zero
    from losskit.arena.task import register_task as reg

    class Broken(Task):
        name = "test_broken"
        metrics = ("score",)
        baseline = "cross_entropy"
        defaults = {"x": 1}

        def candidates(self):
            return [Candidate("cross_entropy")]

        def run(self, candidate, seed, config):
            raise RuntimeError("always broken")

    reg(Broken())
    rc, out = _main(capsys, "test_broken", "--seeds", "2", "--no-progress", "--backend", "serial")
    assert rc == 2 and "failed test_broken/cross_entropy: RuntimeError: always broken" in out
    assert "every trial that ran failed" in out
