"""Leaderboards from the store: mean ± std over seeds, paired t-test against the task's baseline."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

from .store import Row

__all__ = ["Entry", "Board", "boards", "marker", "across"]


@dataclass
class Entry:
    label: str
    objective: str
    hparams: str
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value

    @property
    def options(self) -> dict:
        return json.loads(self.hparams)

    @property
    def n(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)

    def mean(self, metric: str) -> float:
        v = list(self.values.get(metric, {}).values())
        return sum(v) / len(v) if v else float("nan")

    def std(self, metric: str) -> float:
        v = list(self.values.get(metric, {}).values())
        if len(v) < 2:
            return 0.0
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


@dataclass
class Board:
    """The leaderboard of one task under one configuration."""

    task: str
    config: dict
    metrics: tuple[str, ...]
    lower_is_better: frozenset[str]
    baseline: str
    entries: list[Entry]

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    @property
    def baseline_entry(self) -> Entry | None:
        return next((e for e in self.entries if e.label == self.baseline), None)

    def p_value(self, e: Entry, ref: Entry, metric: str) -> float | None:
        """Two-sided paired t-test over the seeds both ran (None with fewer than 2 shared seeds)."""
        from scipy.stats import ttest_rel

        a, b = e.values.get(metric, {}), ref.values.get(metric, {})
        seeds = sorted(set(a) & set(b))
        if len(seeds) < 2 or e is ref:
            return None
        x, y = [a[s] for s in seeds], [b[s] for s in seeds]
        if all(abs(u - v) < 1e-12 for u, v in zip(x, y)):
            return 1.0
        import warnings

        with warnings.catch_warnings():  # nearly identical scores: SciPy warns, the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(ttest_rel(x, y).pvalue)
        return None if math.isnan(p) else p

    def recommendation(self, alpha: float = 0.05) -> str:
        """The sentence: the objective to use with its evidence (paired t-tests against the baseline over
        seeds, Holm-corrected across the objectives), or "No significant difference"."""
        from .stats import recommendation, versus_baseline

        m = self.metrics[0] if self.metrics else None
        if m is None or self.baseline_entry is None:
            return "No recommendation: the baseline has no results."
        values = {e.label: e.values.get(m, {}) for e in self.entries}
        comps = versus_baseline(values, self.baseline, self.higher_is_better(m), alpha)
        return recommendation(comps, self.baseline, m, alpha, self.higher_is_better(m))

    def tuned(self) -> dict[str, dict[str, list[float]]]:
        """Tuned hyper-parameters per objective (``tuned_*`` values stored with each seed), if any."""
        out: dict[str, dict[str, list[float]]] = {}
        for e in self.entries:
            for k, v in e.values.items():
                if k.startswith("tuned_"):
                    out.setdefault(e.label, {})[k[len("tuned_"):]] = [v[s] for s in sorted(v)]
        return out

    def ranked(self) -> list[Entry]:
        m = self.metrics[0]
        sign = -1 if self.higher_is_better(m) else 1
        return sorted(self.entries, key=lambda e: (math.isnan(e.mean(m)), sign * e.mean(m)))

    def marker(self, e: Entry, metric: str) -> str:
        ref = self.baseline_entry
        if ref is None or e is ref:
            return "base" if e is ref else ""
        return marker(self.p_value(e, ref, metric), e.mean(metric) - ref.mean(metric),
                      self.higher_is_better(metric))


def marker(p: float | None, diff: float, higher_is_better: bool) -> str:
    """``▲``/``▼`` significantly better/worse than the baseline (p < 0.05), ``·`` not significant."""
    if p is None:
        return "?"
    if p >= 0.05:
        return "·"
    better = diff > 0 if higher_is_better else diff < 0
    return "▲" if better else "▼"


def boards(rows: list[Row], meta: dict[str, dict] | None = None) -> list[Board]:
    """One board per (task, config) in ``rows``; task metadata from the task registry when known, else from
    ``meta`` (what :meth:`Store.task_meta` remembers: the user's own tasks)."""
    from .task import get_task

    grouped: dict[tuple[str, str], dict[tuple[str, str], Entry]] = defaultdict(dict)
    metric_order: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        g = grouped[(r.task, r.config)]
        e = g.setdefault((r.objective, r.hparams), Entry(r.label, r.objective, r.hparams))
        e.values.setdefault(r.metric, {})[r.seed] = r.value
        if r.metric not in metric_order[(r.task, r.config)]:
            metric_order[(r.task, r.config)].append(r.metric)
    out = []
    for (task, cfg), entries in grouped.items():
        try:
            t = get_task(task)
            metrics = tuple(m for m in t.metrics if m in metric_order[(task, cfg)])
            lower, baseline = t.lower_is_better, t.baseline
        except KeyError:
            m = (meta or {}).get(task)
            if m:
                metrics = tuple(x for x in m["metrics"] if x in metric_order[(task, cfg)])
                lower, baseline = frozenset(m["lower_is_better"]), m["baseline"]
            else:
                metrics, lower, baseline = tuple(metric_order[(task, cfg)]), frozenset(), ""
        out.append(Board(task, json.loads(cfg), metrics, frozenset(lower), baseline, list(entries.values())))
    return sorted(out, key=lambda b: (b.task, json.dumps(b.config, sort_keys=True)))


@dataclass
class Across:
    """The objectives every board ran, ranked over the boards (tasks / configurations): average ranks,
    the Friedman test and Nemenyi's critical difference (Demšar 2006)."""

    labels: list[str]
    boards: int
    ranks: list[float]
    statistic: float | None
    p: float | None
    cd: float

    def text(self) -> str:
        order = sorted(range(len(self.labels)), key=lambda i: self.ranks[i])
        ranks = ", ".join(f"{self.labels[i]} {self.ranks[i]:.2f}" for i in order)
        head = (f"Friedman chi2={self.statistic:.2f}, p={self.p:.3g}" if self.statistic is not None
                else "Friedman test needs 3+ objectives")
        best = self.labels[order[0]]
        tied = [self.labels[i] for i in order[1:] if self.ranks[i] - self.ranks[order[0]] < self.cd]
        verdict = (f"{best} ranks best; within the critical difference of it: {', '.join(tied)}" if tied
                   else f"{best} ranks best, ahead of every other by more than the critical difference")
        if self.p is not None and self.p >= 0.05:
            verdict = "no significant difference in ranks across the boards"
        return (f"Across {self.boards} boards (average rank, 1 = best): {ranks}. {head}; Nemenyi critical "
                f"difference {self.cd:.2f} (alpha 0.05): {verdict}.")


def across(bs: list[Board]) -> Across | None:
    """Ranks of the objectives that every board in ``bs`` ran, on each board's first metric (None with fewer
    than 2 boards or 2 shared objectives)."""
    from .stats import average_ranks, friedman, nemenyi_cd

    if len(bs) < 2:
        return None
    common = set.intersection(*({e.label for e in b.entries if not math.isnan(e.mean(b.metrics[0]))} for b in bs))
    labels = sorted(common)
    if len(labels) < 2:
        return None
    rows = []
    for b in bs:
        m = b.metrics[0]
        sign = 1 if b.higher_is_better(m) else -1
        by = {e.label: e for e in b.entries}
        rows.append([sign * by[lab].mean(m) for lab in labels])
    ranks = average_ranks(rows, higher_is_better=True)
    stat, p = friedman(rows) if len(labels) >= 3 else (None, None)
    return Across(labels, len(bs), ranks, stat, p, nemenyi_cd(len(labels), len(bs)))
