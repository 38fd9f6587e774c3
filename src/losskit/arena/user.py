"""The arena on the user's own data: task templates over a table (CSV / Parquet / ``.npz``), arrays or a
``torch.utils.data.Dataset``, the user's model and metric, and the user's own objectives.

Everything about the data is checked when the task is built, before any trial starts: a target column
that does not exist, missing values, non-numeric or non-finite feature values, a single class, too few
rows for the train/test split; each error names the file, the column and the row. A user objective is any
callable ``fn(logits, target) -> scalar tensor``; one that raises or returns NaN makes its trials failed
rows with the message, and the run goes on.

Templates (``losskit arena --list-tasks``):

* ``classification``: multi-class (or binary) classification, optionally with injected symmetric label
  noise on the training split (``noise``) to test robustness; metrics: accuracy, balanced accuracy (on
  the untouched test split).
* ``imbalanced``: binary classification where the positive class is the minority; metrics: F1,
  balanced accuracy, MCC.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._core.domains import Anything, Choice, Integer, Real
from . import _train as T
from .task import Candidate, Task, TrialResult, Unavailable, _did_you_mean, bind_call, register_task
from .tasks.distillation import Distillation
from .tasks.representation import Representation
from .tasks.transport import Transport

__all__ = ["DataError", "UserData", "load_table", "from_arrays", "from_dataset", "TEMPLATES", "make_task",
           "UserClassification", "UserImbalanced", "UserRegression", "UserEmbeddings", "UserDistillation",
           "user_candidate", "tune", "tune_space"]


class DataError(ValueError):
    """The user's data cannot make a task (the message names the file, column and row)."""


class UserData:
    """Features ``x`` (float32, n x d), integer class labels ``y`` (0..K-1), and where they came from."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, features: Sequence[str] | None = None,
                 target: str = "target", classes: Sequence[Any] | None = None, source: str = "arrays"):
        self.x, self.y = x, y
        self.features = list(features) if features is not None else [f"x{i}" for i in range(x.shape[1])]
        self.target, self.source = target, source
        self.classes = list(classes) if classes is not None else sorted(set(y.tolist()))

    @property
    def fingerprint(self) -> str:
        """A short hash of the data (the store keys trials by it: new data, new trials)."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.x).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()[:12]

    def __repr__(self) -> str:
        what = f"{len(self.classes)} classes" if self.classes else "real target"
        return f"UserData({self.source}: {self.x.shape[0]} rows, {self.x.shape[1]} features, {what})"


# -------------------------------------------------------------------------------------------- loading
def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "na", "nan", "null", "none", "n/a", "?")


def _columns_from_csv(path: str) -> tuple[list[str], list[list[Any]], int]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: the file is empty (expected a header line with the column names)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataError(f"{path}: line {i + 2} has {len(r)} fields, the header has {len(header)}")
    cols = [[r[j] for r in body] for j in range(len(header))]
    return header, cols, 2  # data row i is on line i + 2


def _columns_from_parquet(path: str) -> tuple[list[str], list[list[Any]], int]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'losskit[arena]'") from err
    table = pq.read_table(path)
    return list(table.column_names), [table.column(n).to_pylist() for n in table.column_names], 0


def load_table(path: str | os.PathLike, target: str, regression: bool = False) -> UserData:
    """A CSV (header line), Parquet or ``.npz`` file as :class:`UserData`; ``target`` names the label column
    (for ``.npz``: the array of labels; the features are the array ``X`` or every other array)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if target not in arrays:
            raise DataError(f"{path}: no array {target!r}{_did_you_mean(target, arrays)}; arrays: "
                            f"{', '.join(arrays)}")
        y = arrays.pop(target)
        if "X" in arrays:
            x = arrays["X"]
        else:
            x = np.column_stack([arrays[k] for k in arrays]) if arrays else np.zeros((len(y), 0))
        return from_arrays(x, y, target=target, source=path, regression=regression)
    if ext in (".parquet", ".pq"):
        header, cols, first = _columns_from_parquet(path)
        where = "row"
    elif ext in (".csv", ".tsv", ".txt"):
        header, cols, first = _columns_from_csv(path)
        where = "line"
    else:
        raise DataError(f"{path}: unknown file type {ext!r}; expected .csv, .parquet or .npz")
    if target not in header:
        raise DataError(f"{path}: no column {target!r}{_did_you_mean(target, header)}; columns: "
                        f"{', '.join(header)}")
    features = [h for h in header if h != target]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    ycol = cols[header.index(target)]
    n = len(ycol)
    x = np.empty((n, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        col = cols[header.index(name)]
        for i, v in enumerate(col):
            if _is_missing(v):
                count = sum(_is_missing(u) for u in col)
                raise DataError(f"{path}: column {name!r} has a missing value at {where} {i + first}"
                                f"{f' (and {count - 1} more)' if count > 1 else ''}; impute or drop those rows")
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise DataError(f"{path}: column {name!r} is not numeric ({where} {i + first}: {v!r}); encode it "
                                f"as numbers or drop the column") from None
            if not math.isfinite(f):
                raise DataError(f"{path}: column {name!r} has a non-finite value {v!r} at {where} {i + first}")
            x[i, j] = f
    for i, v in enumerate(ycol):
        if _is_missing(v):
            raise DataError(f"{path}: the target column {target!r} has a missing value at {where} {i + first}")
    return from_arrays(x, ycol, features=features, target=target, source=path, first_row=first, where=where,
                       regression=regression)


def _labels(y: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Class indices 0..K-1 for any hashable labels (numbers or strings), and the labels in index order."""
    vals = [v.item() if hasattr(v, "item") else v for v in y]
    if vals and all(isinstance(v, str) for v in vals):  # a CSV's numbers arrive as text
        try:
            vals = [float(v) for v in vals]
        except ValueError:
            vals = [v.strip() for v in vals]
    vals = [int(v) if isinstance(v, float) and v.is_integer() else v for v in vals]
    try:
        classes = sorted(set(vals))
    except TypeError:
        classes = sorted(set(vals), key=str)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in vals], dtype=np.int64), classes


def from_arrays(x, y, *, features=None, target: str = "target", source: str = "arrays", first_row: int = 0,
                where: str = "row", regression: bool = False) -> UserData:
    """Numpy / torch arrays ``x`` (n x d) and ``y`` (n labels; real targets with ``regression``) as
    checked :class:`UserData`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{source}: features must be a 2-d array (rows x features), got shape {x.shape}")
    try:
        x = x.astype(np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{source}: the features are not numeric (dtype {x.dtype})") from None
    if len(y) != len(x):
        raise DataError(f"{source}: {len(x)} rows of features but {len(y)} labels")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        name = features[j] if features else f"column {j}"
        raise DataError(f"{source}: {name!r} has a missing or non-finite value at {where} {i + first_row} "
                        f"({len(bad)} in all); impute or drop those rows")
    if regression:
        return _regression_data(x, y, features, target, source, first_row, where)
    yi, classes = _labels(list(y))
    if len(classes) < 2:
        raise DataError(f"{source}: the target {target!r} has a single class ({classes[0]!r}) in {len(yi)} rows; "
                        f"a classification task needs at least two")
    counts = np.bincount(yi, minlength=len(classes))
    rare = [(classes[k], int(c)) for k, c in enumerate(counts) if c < 2]
    if rare:
        raise DataError(f"{source}: class {rare[0][0]!r} of {target!r} has {rare[0][1]} row; the stratified "
                        f"train/test split needs at least 2 rows per class (drop or merge it)")
    if len(yi) < max(10, 2 * len(classes)):
        raise DataError(f"{source}: {len(yi)} rows are fewer than the {max(10, 2 * len(classes))} a train/test "
                        f"split over {len(classes)} classes needs")
    return UserData(x, yi, features=features, target=target, classes=classes, source=source)


def _regression_data(x, y, features, target, source, first_row, where) -> UserData:
    vals = []
    for i, v in enumerate(list(y)):
        try:
            f = float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            raise DataError(f"{source}: the target {target!r} is not numeric at {where} {i + first_row} ({v!r}); "
                            f"the regression template needs real targets") from None
        if not math.isfinite(f):
            raise DataError(f"{source}: the target {target!r} has a missing or non-finite value at {where} "
                            f"{i + first_row}")
        vals.append(f)
    yr = np.asarray(vals, dtype=np.float32)
    if len(yr) < 10:
        raise DataError(f"{source}: {len(yr)} rows are fewer than the 10 a train/test split needs")
    if float(yr.std()) == 0.0:
        raise DataError(f"{source}: the target {target!r} is constant ({yr[0]:g}); nothing to regress")
    return UserData(x, yr, features=features, target=target, classes=[], source=source)


def from_dataset(ds, *, target: str = "target", limit: int | None = None, regression: bool = False) -> UserData:
    """A ``torch.utils.data.Dataset`` of ``(features, label)`` items as :class:`UserData`."""
    xs, ys = [], []
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"dataset item {i}: expected (features, label), got {type(item).__name__}")
        xi, yi = item[0], item[1]
        xs.append(np.asarray(xi.detach().cpu() if isinstance(xi, torch.Tensor) else xi, dtype=np.float32).ravel())
        ys.append(yi.item() if isinstance(yi, torch.Tensor) else yi)
    if not xs:
        raise DataError("the dataset is empty")
    if len({len(v) for v in xs}) > 1:
        raise DataError("dataset items have features of different sizes")
    return from_arrays(np.stack(xs), ys, target=target, source=type(ds).__name__, regression=regression)


# ---------------------------------------------------------------------------------- user objectives
def user_candidate(obj, name: str | None = None) -> Candidate:
    """A :class:`Candidate` for a user callable ``fn(logits, target) -> loss`` (named by ``name`` or the
    function's ``__name__``)."""
    from .._core import list_objectives

    if not callable(obj):
        raise TypeError(f"a user objective must be callable, got {type(obj).__name__}")
    name = name or getattr(obj, "__name__", None)
    if not name or name == "<lambda>":
        raise ValueError("name your objective: pass a def'd function, or objectives={'my_loss': fn}")
    if name in list_objectives():
        raise ValueError(f"user objective {name!r} has the name of a registered objective; rename it")
    return Candidate(name, {}, label=name, fn=obj)


# ---------------------------------------------------------------------------------------- templates
class _UserTask(Task):
    """What the templates share: the data, the split, the model (the user's ``model_fn`` or an MLP),
    one training loop, the user's metric."""

    template = ""
    baseline = "cross_entropy"
    settings = {"test_fraction": Real(0.0, 1.0, lo_open=True, hi_open=True), "data": Anything("a fingerprint"),
                "tune_backend": Choice("local", "ray")}
    quick = None
    claims = ()

    def __init__(self, data: UserData, *, name: str | None = None, model_fn: Callable | None = None,
                 metric: Callable | None = None, metric_name: str | None = None, higher_is_better: bool = True,
                 **settings):
        self.data = data
        stem = os.path.splitext(os.path.basename(data.source))[0] if data.source != "arrays" else "data"
        self.name = name or f"{self.template}:{stem}"
        self.model_fn, self.metric = model_fn, metric
        self.defaults = {**type(self).defaults, "data": data.fingerprint}
        extra = set(settings) - set(self.defaults)
        if extra:
            raise ValueError(f"template {self.template!r} has no setting(s) {', '.join(sorted(extra))}; settings: "
                             f"{', '.join(k for k in self.defaults if k != 'data')}")
        self.defaults.update(settings)
        base_metrics = type(self).metrics
        if metric is not None:
            self.metric_name = metric_name or getattr(metric, "__name__", "metric")
            self.metrics = (self.metric_name, *base_metrics)
            if not higher_is_better:
                self.lower_is_better = frozenset({self.metric_name})
        what = f"{len(data.classes)} classes" if data.classes else "real target"
        self.description = (f"{self.template} on {data.source} (target {data.target!r}, {len(data.y)} rows, "
                            f"{data.x.shape[1]} features, {what})")
        self.check_config(self.defaults)

    def k_out(self, entry) -> int:
        return len(self.data.classes)

    def fit(self, candidate, seed, config, validation=False):
        return fit(self, candidate, seed, config, validation)

    def run(self, candidate, seed, config):
        n = int(config.get("tune", 0))
        if n <= 0:
            return self.fit(candidate, seed, config)
        return tune(self, candidate, seed, config, n)


class UserClassification(_UserTask):
    """Classification on the user's data; ``noise`` injects symmetric label noise in the training split."""

    template = "classification"
    metrics = ("accuracy", "balanced_accuracy")
    defaults = {"noise": 0.0, "epochs": 30, "hidden": 64, "lr": 3e-3, "batch_size": 64, "eval_every": 5,
                "test_fraction": 0.3, "tune": 0,
                "tune_backend": "local"}

    def candidates(self):
        return [Candidate("cross_entropy"), Candidate("focal", {"gamma": 2.0}), Candidate("gce", {"q": 0.7}),
                Candidate("sce"), Candidate("cross_entropy", {"label_smoothing": 0.1})]

    def accepts(self, entry):
        if entry.family not in ("classification", "custom"):
            return (f"{entry.name} is a {entry.family} objective; the classification template takes "
                    f"classification objectives")
        if "binary" in entry.input_kind.name and len(self.data.classes) != 2:
            return f"{entry.name} is a binary objective; {self.data.source} has {len(self.data.classes)} classes"
        return None


class UserImbalanced(_UserTask):
    """Binary classification with a minority positive class; F1, balanced accuracy, MCC."""

    template = "imbalanced"
    metrics = ("f1", "balanced_accuracy", "mcc")
    defaults = {"epochs": 30, "hidden": 32, "lr": 3e-3, "batch_size": 64, "eval_every": 5, "test_fraction": 0.3, "tune": 0,
                "tune_backend": "local"}
    symbolic_options = {"cross_entropy": {"weight": ("inverse_frequency",)}}

    def __init__(self, data: UserData, **kw):
        if len(data.classes) != 2:
            raise DataError(f"{data.source}: the imbalanced template is binary; target {data.target!r} has "
                            f"{len(data.classes)} classes")
        counts = np.bincount(data.y, minlength=2)
        if counts[1] > counts[0]:  # the minority is the positive class
            data = UserData(data.x, 1 - data.y, features=data.features, target=data.target,
                            classes=data.classes[::-1], source=data.source)
        super().__init__(data, **kw)

    def candidates(self):
        return [Candidate("cross_entropy"), Candidate("cross_entropy", {"weight": "inverse_frequency"},
                                                      label="weighted_ce"),
                Candidate("binary_focal"), Candidate("anyloss", {"metric": "f1"})]

    def accepts(self, entry):
        if entry.family not in ("classification", "custom"):
            return (f"{entry.name} is a {entry.family} objective; the imbalanced template takes classification "
                    f"objectives")
        return None


def tune_space(candidate: Candidate) -> dict[str, tuple[float, float, bool]]:
    """The hyper-parameters of ``candidate`` that tuning searches: each real-valued option the candidate
    sets, over a range read from the registry's declared domain: ``(lo, hi, log)``. A bounded domain is
    searched uniformly (open ends nudged inside); a half-bounded one log-uniformly over [v / 10, 10 v]
    around the given value ``v`` (clipped to the domain)."""
    from .._core.domains import Real

    if candidate.fn is not None or candidate.missing():
        return {}
    doms = candidate.entry().domains
    out = {}
    for k, v in candidate.options.items():
        dom = doms.get(k)
        if not isinstance(dom, Real) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if dom.lo is not None and dom.hi is not None:
            eps = 1e-3 * (dom.hi - dom.lo)
            out[k] = (dom.lo + (eps if dom.lo_open else 0.0), dom.hi - (eps if dom.hi_open else 0.0), False)
        elif v > 0 and (dom.lo is None or dom.lo >= 0):
            out[k] = (max(v / 10, dom.lo or 0.0) or v / 10, v * 10, True)
        elif v == 0 and dom.lo == 0:
            out[k] = (0.0, 1.0, False)
    return out


def tune(task: _UserTask, candidate: Candidate, seed: int, config: dict, n: int) -> TrialResult:
    """Fair tuning: ``n`` configurations for every objective (the same ``n`` learning rates, log-uniform in
    [lr / 10, 10 lr], for all of them; its own options from :func:`tune_space`), each trained on 75% of the
    training split and scored on the other 25%; the best is retrained on the whole training split and
    evaluated once on the test split. The chosen values are stored as ``tuned_*`` metrics."""
    import dataclasses

    space = tune_space(candidate)
    lr_rng = np.random.default_rng(50_000 + seed)        # the same learning rates for every objective
    opt_rng = np.random.default_rng(60_000 + seed)
    m0 = task.metrics[0]
    sign = 1.0 if task.higher_is_better(m0) else -1.0
    configs = []
    for _ in range(n):
        lr = float(config["lr"] * 10 ** lr_rng.uniform(-1, 1))
        opts = {}
        for k, (lo, hi, log) in space.items():
            opts[k] = float(math.exp(opt_rng.uniform(math.log(lo), math.log(hi))) if log else opt_rng.uniform(lo, hi))
        configs.append((lr, opts, dataclasses.replace(candidate, options={**candidate.options, **opts})))
    if config.get("tune_backend", "local") == "ray":
        scores, errors = _scores_on_ray_tune(task, configs, seed, config, m0)
    else:
        scores, errors = [], []
        for lr, _, c in configs:
            try:
                scores.append(task.fit(c, seed, {**config, "lr": lr}, validation=True).metrics[m0])
            except (FloatingPointError, RuntimeError, ValueError, TypeError) as err:
                scores.append(math.nan)
                errors.append(err)
    ok = [i for i, v in enumerate(scores) if v is not None and math.isfinite(v)]
    if not ok:
        if errors and isinstance(errors[-1], BaseException):
            raise errors[-1]
        raise RuntimeError(f"no tuning configuration finished ({errors[-1] if errors else 'no scores'})")
    best = max(ok, key=lambda i: sign * scores[i])
    lr, opts, c = configs[best]
    res = task.fit(c, seed, {**config, "lr": lr})
    res.metrics.update({"tuned_lr": lr, **{f"tuned_{k}": v for k, v in opts.items()}})
    return res


def _ray_trial(params, task=None, configs=None, seed=0, config=None, metric=""):  # pragma: no cover - in Ray
    lr, _, c = configs[params["i"]]
    res = task.fit(c, seed, {**config, "lr": lr}, validation=True)
    return {"score": float(res.metrics[metric])}


def _scores_on_ray_tune(task, configs, seed, config, metric):
    """The validation score of each configuration, evaluated by Ray Tune (a local Ray instance unless one is
    running): a grid over the same pre-drawn configurations as the local backend, so both pick the same."""
    import tempfile

    try:
        import ray
        from ray import tune as rtune
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("tune_backend='ray' needs Ray Tune: pip install 'losskit[ray]'") from err
    started = False
    if not ray.is_initialized():
        import losskit

        root = os.path.dirname(os.path.dirname(os.path.abspath(losskit.__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=max(1, min(2, os.cpu_count() or 1)), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
        started = True
    try:
        trainable = rtune.with_parameters(_ray_trial, task=task, configs=configs, seed=seed, config=config,
                                          metric=metric)
        with tempfile.TemporaryDirectory() as d:
            tuner = rtune.Tuner(trainable, param_space={"i": rtune.grid_search(list(range(len(configs))))},
                                run_config=ray.tune.RunConfig(storage_path=d, name="losskit", verbose=0))
            grid = tuner.fit()
            scores, errors = [math.nan] * len(configs), []
            for r in grid:
                if r.error is not None:
                    errors.append(r.error)
                elif r.metrics and "score" in r.metrics:
                    scores[r.config["i"]] = r.metrics["score"]
        return scores, errors
    finally:
        if started:
            ray.shutdown()


def mse(pred, target):
    """Mean squared error (the regression template's baseline; not a registry objective)."""
    return ((pred - target) ** 2).mean()


class UserRegression(_UserTask):
    """Regression (a real target): MSE against regression-by-classification (HL-Gauss, two-hot)."""

    template = "regression"
    baseline = "mse"
    metrics = ("rmse", "mae", "r2")
    lower_is_better = frozenset({"rmse", "mae"})
    defaults = {"bins": 32, "epochs": 60, "hidden": 64, "lr": 3e-3, "batch_size": 64, "eval_every": 5,
                "test_fraction": 0.3, "tune": 0,
                "tune_backend": "local"}
    regression = True

    def candidates(self):
        return [Candidate("mse", label="mse", fn=mse), Candidate("hl_gauss_loss"), Candidate("two_hot_loss"),
                Candidate("proximal_matching_loss")]

    def accepts(self, entry):
        kind = entry.input_kind.name
        if kind in ("logits+real targets", "prediction+target") or entry.family == "custom":
            return None
        return (f"{entry.name} takes {kind}; the regression template feeds logits over bins with real targets "
                f"(hl_gauss_loss, two_hot_loss) or one prediction per row with real targets")

    def check_candidate(self, c):
        if c.fn is None and c.objective in ("hl_gauss_loss", "two_hot_loss"):
            c = Candidate(c.objective, {k: v for k, v in c.options.items() if k not in ("v_min", "v_max")})
        super().check_candidate(c)

    def fit(self, candidate, seed, config, validation=False):
        return fit_regression(self, candidate, seed, config, validation)


def fit_regression(task: UserRegression, candidate: Candidate, seed: int, config: dict,
                   validation: bool = False) -> TrialResult:
    """One regression trial: split, standardise x and y with the training statistics, train, test metrics in
    the target's units. Bin objectives get ``v_min``/``v_max`` from the (standardised) training targets."""
    from sklearn.model_selection import train_test_split

    from ..classification.targets import bin_centers, expected_value

    d = task.data
    xtr, xte, ytr, yte = train_test_split(d.x, d.y, test_size=config["test_fraction"], random_state=seed)
    if validation:
        xtr, xte, ytr, yte = _holdout(xtr, ytr, seed, stratify=False)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    ym, ys = float(ytr.mean()), float(ytr.std()) or 1.0
    xtr, xte = (torch.tensor((a - mu) / sd, dtype=torch.float32) for a in (xtr, xte))
    ttr = torch.tensor((ytr - ym) / ys, dtype=torch.float32)
    yte_t = torch.tensor(yte, dtype=torch.float32)
    if candidate.fn is not None:
        fn, opts, bins = candidate.fn, {}, False
    else:
        if candidate.missing():
            raise Unavailable(f"not registered: {', '.join(candidate.missing())}")
        entry = candidate.entry()
        why = task.accepts(entry)
        if why:
            raise Unavailable(why)
        fn, opts, bins = entry.fn, dict(candidate.options), entry.input_kind.name == "logits+real targets"
    centers = None
    if bins:
        lo, hi = float(ttr.min()), float(ttr.max())
        pad = 0.1 * (hi - lo)
        opts.setdefault("v_min", lo - pad)
        opts.setdefault("v_max", hi + pad)
        centers = bin_centers(opts["v_min"], opts["v_max"], config["bins"], dtype=torch.float32)
    out = config["bins"] if bins else 1
    torch.manual_seed(seed)
    model = task.model_fn(d.x.shape[1], out) if task.model_fn is not None else T.mlp(d.x.shape[1], config["hidden"],
                                                                                    out, seed)

    def predict(x):  # standardised units
        o = model(x)
        return expected_value(o, centers) if bins else o.squeeze(-1)

    def loss(idx, step):
        o = model(xtr[idx])
        value = fn(o.squeeze(-1), ttr[idx]) if candidate.fn is not None else (
            bind_call(fn, {"logits": o, "target": ttr[idx]}, opts) if bins
            else bind_call(fn, {"pred": o.squeeze(-1), "prediction": o.squeeze(-1), "target": ttr[idx]}, opts))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TypeError(f"{candidate.name} must return a scalar tensor, got {type(value).__name__}")
        return value.reshape(())

    def metrics():
        p = predict(xte) * ys + ym
        err = p - yte_t
        rmse = float(err.pow(2).mean().sqrt())
        ss = float((yte_t - yte_t.mean()).pow(2).sum())
        return {"rmse": rmse, "mae": float(err.abs().mean()), "r2": 1.0 - float(err.pow(2).sum()) / max(ss, 1e-12)}

    curve = T.train(model, loss, len(ttr), epochs=config["epochs"], lr=config["lr"], batch_size=config["batch_size"],
                    seed=seed, eval_every=config["eval_every"], evaluate=lambda: metrics()["rmse"], nonfinite="raise")
    with torch.no_grad():
        m = metrics()
        if task.metric is not None:
            m = {task.metric_name: float(task.metric(yte, (predict(xte) * ys + ym).numpy())), **m}
    return TrialResult(m, curve, "test RMSE")


def default_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The embeddings template's default view of standardised features: 20% of the features dropped,
    Gaussian noise of standard deviation 0.3."""
    keep = (torch.rand(x.shape, generator=g) > 0.2).float()
    return x * keep + 0.3 * torch.randn(x.shape, generator=g)


class UserEmbeddings(_UserTask, Representation):
    """Embeddings of the user's features from two augmented views (``augment(x, generator)``); the labels
    are used only to evaluate (linear probe, recall@1), and by the supervised objectives."""

    template = "embeddings"
    baseline = Representation.baseline
    metrics = Representation.metrics
    settings = {"test_fraction": Real(0.0, 1.0, lo_open=True, hi_open=True), "data": Anything("a fingerprint")}
    defaults = {**Representation.defaults, "test_fraction": 0.3}
    run = Representation.run

    def __init__(self, data: UserData, *, augment: Callable | None = None, **kw):
        if kw.get("metric") is not None:
            raise ValueError("the embeddings template has its own metrics (linear probe, recall@1)")
        self._augment = augment or default_augment
        super().__init__(data, **kw)

    def candidates(self):
        return Representation.candidates(self)

    def accepts(self, entry):
        return Task.accepts(self, entry)

    def split(self, seed):
        d = self.data
        return T.split(d.x, d.y, seed, test_fraction=self.defaults["test_fraction"])

    def augment(self, x, g):
        return self._augment(x, g)

    def encoder(self, d_in, config, seed):
        if self.model_fn is not None:
            torch.manual_seed(seed)
            return self.model_fn(d_in, config["dim"])
        return T.mlp(d_in, config["hidden"], config["dim"], seed)


class UserDistillation(_UserTask, Distillation):
    """Distillation from the user's teacher (a model or callable on the raw features, or its logits) into a
    small student MLP; metrics: student test accuracy, top-1 agreement with the teacher."""

    template = "distillation"
    baseline = Distillation.baseline
    metrics = Distillation.metrics
    settings = {"test_fraction": Real(0.0, 1.0, lo_open=True, hi_open=True), "data": Anything("a fingerprint")}
    defaults = {k: v for k, v in Distillation.defaults.items() if not k.startswith("teacher_")} | {
        "test_fraction": 0.3}
    run = Distillation.run

    def __init__(self, data: UserData, *, teacher=None, **kw):
        if teacher is None:
            raise ValueError("the distillation template needs teacher=: a model / callable on the features, or "
                             "its logits (rows x classes)")
        if kw.get("metric") is not None or kw.get("model_fn") is not None:
            raise ValueError("the distillation template trains its own two-head student MLP (no model_fn / metric)")
        if callable(teacher):
            with torch.no_grad():
                logits = teacher(torch.tensor(data.x, dtype=torch.float32))
        else:
            logits = teacher
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().cpu().numpy()
        logits = np.asarray(logits, dtype=np.float32)
        k = len(data.classes)
        if logits.shape != (len(data.y), k):
            raise DataError(f"teacher: expected logits of shape ({len(data.y)}, {k}) (rows x classes), got "
                            f"{logits.shape}")
        if not np.isfinite(logits).all():
            raise DataError(f"teacher: non-finite logits at row {int(np.argwhere(~np.isfinite(logits))[0][0])}")
        self.teacher_logits = logits
        super().__init__(data, **kw)
        self.defaults["teacher"] = hashlib.sha1(logits.tobytes()).hexdigest()[:12]

    def candidates(self):
        return Distillation.candidates(self)

    def accepts(self, entry):
        return Task.accepts(self, entry)

    def split(self, seed, config):
        from sklearn.model_selection import train_test_split

        d = self.data
        itr, ite = train_test_split(np.arange(len(d.y)), test_size=config["test_fraction"], random_state=seed,
                                    stratify=d.y)
        mu, sd = d.x[itr].mean(0), d.x[itr].std(0) + 1e-6
        t = lambda a: torch.tensor((a - mu) / sd, dtype=torch.float32)  # noqa: E731
        tl = torch.tensor(self.teacher_logits)
        return (t(d.x[itr]), torch.tensor(d.y[itr]), t(d.x[ite]), torch.tensor(d.y[ite]), tl[itr], tl[ite])


def _cloud(a, what: str, source: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: the {what} point cloud is not numeric") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) < 2:
        raise DataError(f"{source}: the {what} point cloud must be (points x dims) with 2+ points, got shape {a.shape}")
    bad = np.argwhere(~np.isfinite(a))
    if len(bad):
        raise DataError(f"{source}: the {what} point cloud has a missing or non-finite value at row {bad[0][0]}")
    return a


class UserTransport(Transport):
    """OT between the user's two point clouds: each seed draws ``n`` points of each (without replacement);
    solvers against the exact assignment cost; metrics: relative error, time."""

    template = "transport"
    defaults = {"n": 128, "repeats": 3}
    quick = None
    claims = ()

    def __init__(self, source, target, *, name: str | None = None, origin: str = "arrays", **settings):
        self.source, self.target = _cloud(source, "source", origin), _cloud(target, "target", origin)
        if self.source.shape[1] != self.target.shape[1]:
            raise DataError(f"{origin}: the clouds have {self.source.shape[1]} and {self.target.shape[1]} dimensions")
        stem = os.path.splitext(os.path.basename(origin))[0] if origin != "arrays" else "clouds"
        self.name = name or f"transport:{stem}"
        h = hashlib.sha1(self.source.tobytes())
        h.update(self.target.tobytes())
        n = min(len(self.source), len(self.target), 128)
        self.defaults = {"n": n, "repeats": 3, "data": h.hexdigest()[:12]}
        extra = set(settings) - set(self.defaults)
        if extra:
            raise ValueError(f"template 'transport' has no setting(s) {', '.join(sorted(extra))}; settings: n, repeats")
        self.defaults.update(settings)
        self.description = (f"transport between {origin}'s point clouds ({len(self.source)} and {len(self.target)} "
                            f"points in {self.source.shape[1]} dimensions), `n` drawn per seed")
        self.settings = {"n": Integer(2, min(len(self.source), len(self.target))), "data": Anything("a fingerprint")}
        self.check_config(self.defaults)

    def candidates(self):
        d = self.source.shape[1] if hasattr(self, "source") else 1
        return [c for c in Transport.candidates(self) if d == 1 or c.objective != "wasserstein_1d"]

    def clouds(self, seed, config):
        rng = np.random.default_rng(60_000 + seed)
        n = config["n"]
        xs = self.source[rng.choice(len(self.source), n, replace=False)]
        ys = self.target[rng.choice(len(self.target), n, replace=False)]
        return torch.tensor(xs), torch.tensor(ys)


def load_pairs(path: str | os.PathLike) -> list[dict]:
    """A JSONL of preference pairs: ``{"prompt", "chosen", "rejected"}`` per line (strings or numbers), with
    optional reference log-probabilities ``ref_chosen_logp`` / ``ref_rejected_logp``; checked line by line."""
    import json

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    pairs = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {i} is not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {i}: expected an object with prompt, chosen, rejected")
            pairs.append(_check_pair(row, f"{path}: line {i}"))
    return pairs


def _check_pair(row: dict, where: str) -> dict:
    for k in ("prompt", "chosen", "rejected"):
        if k not in row or row[k] is None:
            raise DataError(f"{where}: no {k!r} field (each pair needs prompt, chosen, rejected)")
    if row["chosen"] == row["rejected"]:
        raise DataError(f"{where}: chosen and rejected are the same response ({row['chosen']!r})")
    out = {"prompt": str(row["prompt"]), "chosen": str(row["chosen"]), "rejected": str(row["rejected"])}
    for k in ("ref_chosen_logp", "ref_rejected_logp"):
        if k in row:
            try:
                v = float(row[k])
            except (TypeError, ValueError):
                raise DataError(f"{where}: {k} is not a number ({row[k]!r})") from None
            if not math.isfinite(v) or v > 0:
                raise DataError(f"{where}: {k}={row[k]!r} is not a log-probability (finite, <= 0)")
            out[k] = v
    return out


class UserPreference(Task):
    """Preference optimisation on the user's pairs: a tabular policy over each prompt's responses, started at
    the reference (the pairs' ``ref_*_logp``, else uniform), trained on 70% of the pairs; metrics: accuracy
    on the held-out pairs (policy ranks chosen above rejected), KL(policy || reference) over prompts."""

    template = "preference"
    metrics = ("pair_accuracy", "kl_to_ref")
    lower_is_better = frozenset({"kl_to_ref"})
    baseline = "dpo"
    quick = None
    claims = ()
    defaults = {"epochs": 30, "lr": 0.05, "batch_size": 64, "beta": 0.1, "eval_every": 3, "test_fraction": 0.3}

    def __init__(self, pairs: list[dict], *, name: str | None = None, origin: str = "pairs", **settings):
        import json

        if len(pairs) < 10:
            raise DataError(f"{origin}: {len(pairs)} pairs are fewer than the 10 a train/test split needs")
        self.pairs = pairs
        stem = os.path.splitext(os.path.basename(origin))[0] if origin != "pairs" else "pairs"
        self.name = name or f"preference:{stem}"
        digest = hashlib.sha1(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:12]
        self.defaults = {**type(self).defaults, "data": digest}
        extra = set(settings) - set(self.defaults)
        if extra:
            raise ValueError(f"template 'preference' has no setting(s) {', '.join(sorted(extra))}; settings: "
                             f"{', '.join(k for k in self.defaults if k != 'data')}")
        self.defaults.update(settings)
        self.settings = {"test_fraction": Real(0.0, 1.0, lo_open=True, hi_open=True),
                         "data": Anything("a fingerprint")}
        prompts = {p["prompt"] for p in pairs}
        self.description = f"preference on {origin} ({len(pairs)} pairs over {len(prompts)} prompts)"
        self.check_config(self.defaults)

    def candidates(self):
        return [Candidate(n) for n in ("dpo", "ipo", "simpo", "orpo", "kto")]

    def accepts(self, entry):
        kind = entry.input_kind.name
        if entry.family not in ("preference", "custom"):
            return f"{entry.name} is a {entry.family} objective; the preference template takes preference objectives"
        if kind not in ("pair scores", "pair mean scores", "unpaired scores", "preference pair"):
            return f"{entry.name} takes {kind}; the preference template feeds pairs of log-probabilities"
        return None

    def run(self, candidate, seed, config):
        from .tasks.preference import _PREF_ALIASES

        # responses indexed per prompt; the reference log-probs where the pairs give them, else uniform
        index: dict[tuple[str, str], int] = {}
        ref_given: dict[int, float] = {}
        for p in self.pairs:
            for side in ("chosen", "rejected"):
                j = index.setdefault((p["prompt"], p[side]), len(index))
                if f"ref_{side}_logp" in p:
                    ref_given[j] = p[f"ref_{side}_logp"]
        prompts = sorted({k[0] for k in index})
        group = torch.tensor([prompts.index(k[0]) for k in index])
        ref_logits = torch.zeros(len(index))
        for j, v in ref_given.items():
            ref_logits[j] = v

        def log_softmax_grouped(z):
            m = z.detach().max()
            norm = torch.zeros(len(prompts)).index_add(0, group, (z - m).exp())
            return z - m - norm.log()[group]

        ref_lp = log_softmax_grouped(ref_logits)
        c_all = torch.tensor([index[(p["prompt"], p["chosen"])] for p in self.pairs])
        r_all = torch.tensor([index[(p["prompt"], p["rejected"])] for p in self.pairs])
        g = torch.Generator().manual_seed(90_000 + seed)
        perm = torch.randperm(len(self.pairs), generator=g)
        n_test = max(1, int(round(config["test_fraction"] * len(perm))))
        te, tr = perm[:n_test], perm[n_test:]
        theta = torch.nn.Parameter(ref_logits.clone())
        model = torch.nn.Module()
        model.theta = theta
        uses_ref = True
        if candidate.fn is not None:
            fn, opts, unpaired = candidate.fn, {}, False
        else:
            if candidate.missing():
                raise Unavailable(f"not registered: {', '.join(candidate.missing())}")
            entry = candidate.entry()
            why = self.accepts(entry)
            if why:
                raise Unavailable(why)
            fn, opts, unpaired = entry.fn, dict(candidate.options), entry.input_kind.name == "unpaired scores"
            if "beta" in entry.options:
                opts.setdefault("beta", config["beta"])
            try:  # reference-free heads (SimPO, ORPO) take no reference scores: their example says so
                uses_ref = "ref_chosen_logps" in entry.make_example().inputs or unpaired
            except Exception:  # noqa: BLE001
                uses_ref = True

        def loss(idx, step):
            lp = log_softmax_grouped(model.theta)
            c, rj = c_all[tr[idx]], r_all[tr[idx]]
            if candidate.fn is not None:
                return fn(lp[c] - ref_lp[c], lp[rj] - ref_lp[rj])
            ones = torch.ones(len(idx))
            inputs = {"policy_chosen_logps": lp[c], "policy_rejected_logps": lp[rj],
                      **({"ref_chosen_logps": ref_lp[c], "ref_rejected_logps": ref_lp[rj]} if uses_ref else {}),
                      "chosen_lengths": ones, "rejected_lengths": ones, "lengths": ones}
            if unpaired:
                pol, ref = torch.cat([lp[c], lp[rj]]), torch.cat([ref_lp[c], ref_lp[rj]])
                inputs.update(policy_logps=pol, ref_logps=ref, policy_kl_logps=pol, ref_kl_logps=ref,
                              desirable=torch.cat([torch.ones(len(idx), dtype=torch.bool),
                                                   torch.zeros(len(idx), dtype=torch.bool)]))
            return bind_call(fn, inputs, opts, aliases=_PREF_ALIASES)

        def measures():
            lp = log_softmax_grouped(theta.detach())
            d = lp[c_all[te]] - lp[r_all[te]]
            acc = float(((d > 0).float() + 0.5 * (d == 0).float()).mean())
            pi = lp.exp()
            kl = torch.zeros(len(prompts)).index_add(0, group, pi * (lp - ref_lp))
            return {"pair_accuracy": acc, "kl_to_ref": float(kl.mean())}

        curve = T.train(model, loss, len(tr), epochs=config["epochs"], lr=config["lr"],
                        batch_size=config["batch_size"], seed=seed, eval_every=config["eval_every"],
                        evaluate=lambda: measures()["pair_accuracy"], nonfinite="raise")
        return TrialResult(measures(), curve, "held-out pair accuracy")


TEMPLATES: dict[str, type] = {"classification": UserClassification, "imbalanced": UserImbalanced,
                                         "regression": UserRegression, "embeddings": UserEmbeddings,
                                         "distillation": UserDistillation, "transport": UserTransport,
                                         "preference": UserPreference}


def _transport_task(data, **kw) -> UserTransport:
    """Two clouds: a pair of arrays, or an ``.npz`` with arrays ``source`` and ``target``."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file")
        if not path.endswith(".npz"):
            raise DataError(f"{path}: the transport template reads an .npz with arrays 'source' and 'target'")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("source", "target") if k not in z.files]
            if missing:
                raise DataError(f"{path}: no array {missing[0]!r}; arrays: {', '.join(z.files)}")
            return UserTransport(z["source"], z["target"], origin=path, **kw)
    if isinstance(data, tuple) and len(data) == 2:
        return UserTransport(*data, **kw)
    raise TypeError("the transport template takes (source, target) point clouds or an .npz with both")


def make_task(data, target: str | None = None, template: str = "classification", *, register: bool = True,
              **kw) -> _UserTask:
    """A task over the user's data: ``data`` is a path (CSV / Parquet / .npz, with ``target``), a pair
    ``(X, y)`` of arrays, a ``torch.utils.data.Dataset`` or :class:`UserData`."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown task template {template!r}{_did_you_mean(template, TEMPLATES)}; templates: "
                         f"{', '.join(TEMPLATES)}")
    if template in ("transport", "preference"):
        if template == "transport":
            task = _transport_task(data, **kw)
        elif isinstance(data, (str, os.PathLike)):
            task = UserPreference(load_pairs(data), origin=os.fspath(data), **kw)
        else:
            task = UserPreference([_check_pair(dict(p), f"pair {i}") for i, p in enumerate(data)], **kw)
        if register:
            register_task(task)
        return task
    reg = getattr(TEMPLATES[template], "regression", False)
    if isinstance(data, UserData):
        ud = data
    elif isinstance(data, (str, os.PathLike)):
        if target is None:
            raise ValueError("name the target column: target='label'")
        ud = load_table(data, target, regression=reg)
    elif isinstance(data, tuple) and len(data) == 2:
        ud = from_arrays(*data, target=target or "target", regression=reg)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        ud = from_dataset(data, target=target or "target", regression=reg)
    else:
        raise TypeError(f"data: expected a file path, (X, y) arrays or a Dataset, got {type(data).__name__}")
    task = TEMPLATES[template](ud, **kw)
    if register:
        register_task(task)
    return task


def _holdout(x, y, seed: int, stratify: bool):
    """The validation split of a training split (25%, stratified where every class has 2+ rows)."""
    from sklearn.model_selection import train_test_split

    strat = None
    if stratify:
        counts = np.bincount(np.asarray(y))
        strat = np.asarray(y) if (counts[counts > 0] >= 2).all() else None
    return train_test_split(x, y, test_size=0.25, random_state=10_000 + seed, stratify=strat)


def fit(task: _UserTask, candidate: Candidate, seed: int, config: dict, validation: bool = False) -> TrialResult:
    """One trial of a template: split, (noise), model, train with the candidate, test metrics (with
    ``validation``: train on 75% of the training split, metrics on the other 25%; the test split unused)."""
    from .tasks.imbalanced import _binary_metrics, _f1

    d = task.data
    xtr, ytr, xte, yte = T.split(d.x, d.y, seed, test_fraction=config["test_fraction"])
    k = len(d.classes)
    if config.get("noise", 0.0) > 0:
        ytr = T.corrupt(ytr, config["noise"], "symmetric", k, seed)
    if validation:
        xtr, xte, ytr, yte = _holdout(xtr, ytr, seed, stratify=True)
    if candidate.fn is not None:
        fn, binary, opts = candidate.fn, False, {}
    else:
        if candidate.missing():
            raise Unavailable(f"not registered: {', '.join(candidate.missing())}")
        entry = candidate.entry()
        why = task.accepts(entry)
        if why:
            raise Unavailable(why)
        fn, binary, opts = entry.fn, "binary" in entry.input_kind.name, dict(candidate.options)
    if opts.get("weight") == "inverse_frequency":
        counts = torch.bincount(ytr, minlength=k).float().clamp_min(1)
        opts["weight"] = counts.sum() / (k * counts)
    out = 1 if binary else k
    torch.manual_seed(seed)
    model = task.model_fn(d.x.shape[1], out) if task.model_fn is not None else T.mlp(d.x.shape[1], config["hidden"],
                                                                                    out, seed)

    def forward(x):
        o = model(x)
        return o.squeeze(-1) if binary else o

    def predict(x):
        o = forward(x)
        return (o > 0).long() if binary else o.argmax(-1)

    user = candidate.fn is not None

    def loss(idx, step):
        logits = forward(xtr[idx])
        tgt = ytr[idx].float() if binary else ytr[idx]
        value = fn(logits, tgt) if user else bind_call(fn, {"logits": logits, "target": tgt}, opts)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TypeError(f"{candidate.name} must return a scalar tensor, got "
                            f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else tuple(value.shape)}")
        return value.reshape(())

    def evaluate():
        return _first_metric(task, predict, forward, xte, yte, _f1)

    curve = T.train(model, loss, len(ytr), epochs=config["epochs"], lr=config["lr"], batch_size=config["batch_size"],
                    seed=seed, eval_every=config["eval_every"], evaluate=evaluate, nonfinite="raise")
    with torch.no_grad():
        pred, scores = predict(xte), forward(xte)
    if task.template == "imbalanced":
        metrics = _binary_metrics(pred, yte)
    else:
        metrics = {"accuracy": T.accuracy_of(pred, yte), "balanced_accuracy": _balanced_accuracy(pred, yte, k)}
    if task.metric is not None:
        metrics = {task.metric_name: float(task.metric(yte.numpy(), scores.numpy())), **metrics}
    return TrialResult(metrics, curve, f"test {task.metrics[0]}")


def _first_metric(task, predict, forward, xte, yte, f1) -> float:
    if task.metric is not None:
        return float(task.metric(yte.numpy(), forward(xte).numpy()))
    pred = predict(xte)
    return f1(pred, yte) if task.template == "imbalanced" else T.accuracy_of(pred, yte)


def _balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, k: int) -> float:
    recalls = [float((pred[y == c] == c).float().mean()) for c in range(k) if (y == c).any()]
    return sum(recalls) / len(recalls)
