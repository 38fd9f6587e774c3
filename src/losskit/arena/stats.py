"""The arena's statistics: paired comparisons over seeds with Holm's correction, effect sizes with
confidence intervals, and the Friedman test with Nemenyi's critical difference across tasks (Demšar 2006).

Every function takes plain numbers (no store, no task) so each can be checked against SciPy and by hand:

* :func:`holm`: Holm's step-down adjustment of ``m`` p-values (controls the family-wise error rate);
* :func:`paired`: the mean paired difference, its Student-t confidence interval, the two-sided paired
  t-test (:func:`scipy.stats.ttest_rel`) and Cohen's d_z (mean difference / sd of the differences);
* :func:`versus_baseline`: every objective against the baseline on one metric, Holm-adjusted across the
  objectives compared, and the recommendation sentence built from it;
* :func:`friedman` and :func:`nemenyi_cd`: average ranks over several tasks, the Friedman chi-square
  (with SciPy's tie correction) and the critical difference of average ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["holm", "paired", "Comparison", "versus_baseline", "recommendation", "friedman", "nemenyi_cd",
           "average_ranks"]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: sort ascending, multiply the i-th smallest (0-based)
    by ``m - i``, take the running maximum, cap at 1. Reject hypothesis j at level alpha iff adjusted
    p_j <= alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """One objective against the baseline on one metric, over the seeds both ran."""

    label: str
    n: int
    mean: float
    baseline_mean: float
    diff: float                      # mean of (objective - baseline), in the metric's units
    ci_low: float
    ci_high: float
    p: float | None                  # two-sided paired t-test
    p_holm: float | None = None      # Holm-adjusted across the objectives compared
    effect_size: float | None = None  # Cohen's d_z
    better: bool = False             # significantly better after Holm (alpha)
    worse: bool = False


def paired(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired comparison of ``x`` against ``y`` (same seeds, same order)."""
    from scipy import stats

    n = len(x)
    d = [a - b for a, b in zip(x, y)]
    mean = sum(d) / n if n else math.nan
    if n < 2:
        return {"n": n, "diff": mean, "ci": (math.nan, math.nan), "p": None, "d_z": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
        dz = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        import warnings

        with warnings.catch_warnings():  # nearly identical scores: SciPy warns, the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(x, y).pvalue)
        dz = mean / sd
    return {"n": n, "diff": mean, "ci": (mean - half, mean + half), "p": p, "d_z": dz}


def versus_baseline(values: Mapping[str, Mapping[int, float]], baseline: str, higher_is_better: bool = True,
                    alpha: float = 0.05, confidence: float = 0.95) -> list[Comparison]:
    """Each label of ``values`` (label -> seed -> value) against ``baseline``, Holm-adjusted across the
    labels compared (the baseline itself is not a hypothesis). Sorted best mean first."""
    ref = values.get(baseline, {})
    out = []
    for label, v in values.items():
        if label == baseline:
            continue
        seeds = sorted(set(v) & set(ref))
        x, y = [v[s] for s in seeds], [ref[s] for s in seeds]
        r = paired(x, y, confidence)
        out.append(Comparison(label, r["n"], _mean(v.values()), _mean(ref.values()), r["diff"], r["ci"][0],
                              r["ci"][1], r["p"], effect_size=r["d_z"]))
    tested = [c for c in out if c.p is not None]
    for c, adj in zip(tested, holm([c.p for c in tested])):
        c.p_holm = adj
        if adj <= alpha:
            gain = c.diff > 0 if higher_is_better else c.diff < 0
            c.better, c.worse = gain, not gain
    sign = -1 if higher_is_better else 1
    return sorted(out, key=lambda c: (math.isnan(c.mean), sign * c.mean))


def recommendation(comparisons: Sequence[Comparison], baseline: str, metric: str, alpha: float = 0.05,
                   higher_is_better: bool = True) -> str:
    """One sentence: the objective to use, with its evidence, or "no significant difference"."""
    winners = [c for c in comparisons if c.better]
    m = len([c for c in comparisons if c.p is not None])
    if not comparisons:
        return f"Recommendation: {baseline} (the only objective compared)."
    if not m:
        return (f"No recommendation: too few shared seeds to test against {baseline} (a paired test needs "
                f"at least 2 seeds).")
    if not winners:
        losers = [c.label for c in comparisons if c.worse]
        tail = f"; significantly worse: {', '.join(losers)}" if losers else ""
        n = max(c.n for c in comparisons)
        return (f"No significant difference: no objective beats {baseline} on {metric} "
                f"(paired t-tests over {n} seeds, Holm-corrected across {_n(m, 'objective')}, alpha={alpha:g}){tail}; "
                f"keep {baseline}.")
    best = max(winners, key=lambda c: c.diff if higher_is_better else -c.diff)
    return (f"Recommendation: {best.label}: {metric} {best.mean:.4g} vs {best.baseline_mean:.4g} for {baseline} "
            f"({best.diff:+.4g}, 95% CI [{best.ci_low:+.4g}, {best.ci_high:+.4g}], effect size d_z="
            f"{best.effect_size:.2f}, Holm-adjusted p={best.p_holm:.3g} over {_n(m, 'objective')}, {best.n} seeds).")


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def _mean(v) -> float:
    v = list(v)
    return sum(v) / len(v) if v else math.nan


# --------------------------------------------------------------------------------- several tasks
def average_ranks(scores: Sequence[Sequence[float]], higher_is_better: bool = True) -> list[float]:
    """Average rank (1 = best) of each column of ``scores`` (rows: tasks, columns: objectives), ties
    sharing the mean of their ranks."""
    from scipy.stats import rankdata

    k = len(scores[0])
    total = [0.0] * k
    for row in scores:
        r = rankdata([-v for v in row] if higher_is_better else list(row))
        for j in range(k):
            total[j] += float(r[j])
    return [t / len(scores) for t in total]


def friedman(scores: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Friedman's chi-square and its p-value for ``scores`` (rows: N tasks, columns: k >= 3 objectives),
    with the tie correction SciPy applies (``scipy.stats.friedmanchisquare(*columns)`` gives the same)."""
    from scipy.stats import chi2, rankdata

    n, k = len(scores), len(scores[0])
    if k < 3:
        raise ValueError("the Friedman test needs at least 3 objectives")
    sums = [0.0] * k
    ties = 0.0
    for row in scores:
        r = rankdata(row)
        for j in range(k):
            sums[j] += float(r[j])
        counts: dict[float, int] = {}
        for v in r:
            counts[float(v)] = counts.get(float(v), 0) + 1
        ties += sum(t ** 3 - t for t in counts.values())
    stat = 12.0 / (n * k * (k + 1)) * sum(s * s for s in sums) - 3.0 * n * (k + 1)
    stat /= 1.0 - ties / (n * k * (k * k - 1))
    return stat, float(chi2.sf(stat, k - 1))


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks for k objectives over n tasks:
    ``q_alpha * sqrt(k (k + 1) / (6 n))`` with ``q_alpha`` the studentized range quantile / sqrt(2)
    (Demšar 2006, Table 5: 1.960, 2.343, 2.569, ... for k = 2, 3, 4 at alpha = 0.05)."""
    from scipy.stats import norm, studentized_range

    if k < 2:
        raise ValueError("a critical difference needs at least 2 objectives")
    q = float(norm.ppf(1 - alpha / 2)) if k == 2 else float(studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6.0 * n))
