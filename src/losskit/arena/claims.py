"""The seed papers' qualitative claims, as checks the arena states honestly on its own results."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Claim", "better_than_baseline", "task_claims"]


@dataclass
class Claim:
    """A claim and what this run says about it.

    ``verdict``: ``reproduced`` (every contender beats the reference, each significantly by the paired
    t-test over seeds, p < 0.05), ``partly`` (some do significantly, not all), ``inconclusive`` (every
    contender is better on the mean, none significantly), ``not reproduced`` (otherwise: at least one is
    not even better on the mean and none is significantly better), ``not run`` (the setting or the
    objectives are not in the store).
    """

    statement: str
    source: str
    verdict: str
    evidence: str


def better_than_baseline(boards, *, statement: str, source: str, task: str, where: dict,
                         contenders: tuple[str, ...], reference: str, metric: str | None = None) -> Claim:
    """Do the ``contenders`` (registry names; every grid point counts) beat ``reference`` on ``metric``
    in the leaderboard(s) of ``task`` whose configuration matches ``where``?"""
    relevant = [b for b in boards if b.task == task and all(b.config.get(k) == v for k, v in where.items())]
    if not relevant:
        return Claim(statement, source, "not run", f"no results for {task} with {where}")
    wins, losses, sig, lines = 0, 0, 0, []
    for b in relevant:
        m = metric or b.metrics[0]
        ref = next((e for e in b.entries if e.objective == reference and not e.options), None)
        if ref is None:
            continue
        sign = 1 if b.higher_is_better(m) else -1
        for e in b.entries:
            if e.objective not in contenders:
                continue
            diff = e.mean(m) - ref.mean(m)
            p = b.p_value(e, ref, m)
            better = sign * diff > 0
            wins += better
            losses += not better
            sig += better and p is not None and p < 0.05
            ptxt = "n/a" if p is None else f"{p:.3g}"
            where_txt = ",".join(f"{k}={b.config[k]}" for k in ("dataset", "noise", "noise_type", "truth", "ratio")
                                 if k in b.config and len(relevant) > 1)
            lines.append(f"{f'[{where_txt}] ' if where_txt else ''}{e.label}: {m} {e.mean(m):.3f} vs {reference} "
                         f"{ref.mean(m):.3f} "
                         f"({diff:+.3f}, paired t-test p={ptxt}, n={e.n})")
    if wins + losses == 0:
        return Claim(statement, source, "not run",
                     f"none of {', '.join(contenders)} (or the reference {reference}) ran in {task} with {where}")
    total = wins + losses
    if sig == total:
        verdict = "reproduced"
    elif sig > 0:
        verdict = "partly"
    elif wins == total:
        verdict = "inconclusive"
    else:
        verdict = "not reproduced"
    return Claim(statement, source, verdict, "; ".join(lines))


def task_claims(boards, get_task=None) -> list[Claim]:
    """The claims of the tasks that have leaderboards in ``boards``, checked on them (those whose setting
    did not run are left out). ``get_task``: name -> task (default: the arena's task registry); a board
    of a task that is not registered (e.g. a user's, without its plug-in) has no claims."""
    if get_task is None:
        from .task import get_task
    out = []
    for name in dict.fromkeys(b.task for b in boards):
        try:
            t = get_task(name)
        except KeyError:
            continue
        out += [fn(boards) for fn in t.claims]
    return [c for c in out if c.verdict != "not run"]
