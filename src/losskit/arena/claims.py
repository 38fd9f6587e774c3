"""The seed papers' qualitative claims, as checks the arena states honestly on its own results."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Claim", "MIN_SEEDS", "VERDICTS", "better_than_baseline", "task_claims"]

#: Seeds an objective (each contender and the reference) needs before a claim can be called reproduced
#: or refuted: a paired t-test over fewer has almost no power.
MIN_SEEDS = 3

#: The verdict words, as the report and the printout define them.
VERDICTS: dict[str, str] = {
    "reproduced": "every objective the claim names ran (each with at least {min_seeds} seeds, as did the "
                  "reference), and each beats the reference significantly (paired t-test over seeds, p < 0.05)",
    "mixed": "every named objective ran with enough seeds; some beat the reference significantly, not all",
    "inconclusive": "every named objective ran with enough seeds and is better on the mean, none significantly",
    "not reproduced": "every named objective ran with enough seeds; at least one is not better on the mean and "
                      "none is significantly better",
    "partly tested": "some objective the claim names did not run, or ran with fewer than {min_seeds} seeds "
                     "(or the reference did): no verdict on the claim; the evidence says what is missing and "
                     "what the objectives that ran show",
}


def verdict_meaning(word: str) -> str:
    return VERDICTS[word].format(min_seeds=MIN_SEEDS)


@dataclass
class Claim:
    """A claim and what this run says about it.

    ``verdict``: one of :data:`VERDICTS` (``reproduced`` only when every objective the claim names ran
    with at least :data:`MIN_SEEDS` seeds and each beats the reference significantly; ``partly tested``
    when one is missing or has too few seeds), or ``not run`` (the setting is not in the store).
    ``missing``: what stops a full verdict (``"sce: not run"``, ``"gce: 2 seeds"``).
    """

    statement: str
    source: str
    verdict: str
    evidence: str
    missing: list[str] = field(default_factory=list)


def _statistical(wins: int, losses: int, sig: int) -> str:
    total = wins + losses
    if sig == total:
        return "reproduced"
    if sig > 0:
        return "mixed"
    if wins == total:
        return "inconclusive"
    return "not reproduced"


def better_than_baseline(boards, *, statement: str, source: str, task: str, where: dict,
                         contenders: tuple[str, ...], reference: str, metric: str | None = None,
                         min_seeds: int | None = None) -> Claim:
    """Do the ``contenders`` (registry names; every grid point counts) beat ``reference`` on ``metric``
    in the leaderboard(s) of ``task`` whose configuration matches ``where``?

    The claim names every contender: it is ``reproduced`` only when each of them (and the reference) ran
    with at least ``min_seeds`` (default :data:`MIN_SEEDS`) seeds; otherwise ``partly tested``, listing
    what is missing and what the comparisons that ran show."""
    min_seeds = MIN_SEEDS if min_seeds is None else min_seeds
    relevant = [b for b in boards if b.task == task and all(b.config.get(k) == v for k, v in where.items())]
    if not relevant:
        return Claim(statement, source, "not run", f"no results for {task} with {where}")
    wins, losses, sig, lines = 0, 0, 0, []
    seeds: dict[str, int] = {}  # contender -> most seeds it ran with next to the reference
    covered: set[str] = set()  # contenders with a comparison where both sides have >= min_seeds
    ref_seeds = 0
    for b in relevant:
        m = metric or b.metrics[0]
        ref = next((e for e in b.entries if e.objective == reference and not e.options), None)
        if ref is None:
            continue
        ref_seeds = max(ref_seeds, ref.n)
        sign = 1 if b.higher_is_better(m) else -1
        for e in b.entries:
            if e.objective not in contenders:
                continue
            seeds[e.objective] = max(seeds.get(e.objective, 0), e.n)
            diff = e.mean(m) - ref.mean(m)
            p = b.p_value(e, ref, m)
            better = sign * diff > 0
            enough = e.n >= min_seeds and ref.n >= min_seeds
            if enough:
                covered.add(e.objective)
                wins += better
                losses += not better
                sig += better and p is not None and p < 0.05
            ptxt = "n/a" if p is None else f"{p:.3g}"
            where_txt = ",".join(f"{k}={b.config[k]}" for k in ("dataset", "noise", "noise_type", "truth", "ratio")
                                 if k in b.config and len(relevant) > 1)
            lines.append(f"{f'[{where_txt}] ' if where_txt else ''}{e.label}: {m} {e.mean(m):.3f} vs {reference} "
                         f"{ref.mean(m):.3f} "
                         f"({diff:+.3f}, paired t-test p={ptxt}, n={e.n}"
                         + ("" if enough else f", reference n={ref.n}: too few seeds, not counted") + ")")
    if not lines:
        return Claim(statement, source, "not run",
                     f"none of {', '.join(contenders)} (or the reference {reference}) ran in {task} with {where}")
    missing = [f"{c}: not run" for c in contenders if c not in seeds]
    missing += [f"{c}: {seeds[c]} seed{'s' * (seeds[c] != 1)}" for c in contenders
                if c in seeds and c not in covered and seeds[c] < min_seeds]
    if ref_seeds < min_seeds:
        missing.append(f"{reference} (the reference): {ref_seeds} seed{'s' * (ref_seeds != 1)}")
    if missing or not covered.issuperset(contenders):
        if not missing:  # each ran with enough seeds, but never in the same setting as an adequate reference
            missing = [f"{c}: no setting where it and {reference} both have >= {min_seeds} seeds"
                       for c in contenders if c not in covered]
        evidence = (f"missing (each named objective and the reference need >= {min_seeds} seeds): "
                    f"{'; '.join(missing)}. ")
        if wins + losses:
            evidence += f"What ran with enough seeds would read '{_statistical(wins, losses, sig)}': "
        else:
            evidence += "What ran: "
        return Claim(statement, source, "partly tested", evidence + "; ".join(lines), missing)
    return Claim(statement, source, _statistical(wins, losses, sig), "; ".join(lines))


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
