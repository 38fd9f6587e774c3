"""How long ``losskit check`` takes per registered objective (all checks, and the claimed ones only).

    python benchmarks/bench_check.py [--family F] [--limit N]

Prints seconds per objective, the median and maximum, the ratio of the full report to the claims-only
run (what the registry test runs), and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import losskit
from losskit.checks import check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N objectives")
    args = ap.parse_args(argv)
    entries = losskit.objectives(args.family)[: args.limit]
    check("cross_entropy", ["calibrated"])  # warm-up: first-use costs are not per-objective
    full, claimed = [], []
    print(f"{'objective':<34} {'all checks':>10} {'claims':>8}  kind")
    for e in entries:
        t = time.perf_counter()
        r = check(e.name)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        check(e.name, sorted(e.properties))
        claimed.append(time.perf_counter() - t)
        print(f"{e.name:<34} {full[-1]:>9.2f}s {claimed[-1]:>7.2f}s  {r.kind.split(':')[0]}")
    from losskit.testing.memory import peak_rss

    peak_mb = peak_rss() / 2**20
    print(f"{len(entries)} objectives: all checks median {statistics.median(full):.2f}s, max {max(full):.2f}s; "
          f"claims only median {statistics.median(claimed):.2f}s, max {max(claimed):.2f}s; "
          f"full/claims ratio {sum(full) / max(sum(claimed), 1e-9):.1f}x; peak RSS {peak_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
