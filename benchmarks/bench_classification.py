"""Time and peak memory of classification losses against their baselines, measured in one run.

Each case runs forward + backward in a fresh subprocess (so peak resident memory, ``VmHWM`` above the
baseline after the inputs exist and one warm-up, via ``losskit.testing.memory``, belongs to that case alone) and reports the median wall time over
``--repeats`` runs. Ratios are losskit / baseline from the same invocation:

* ``cross_entropy`` vs ``torch.nn.functional.cross_entropy`` (validation on and off),
* ``focal`` vs a direct torch implementation ``-(1-p)^g log p`` via ``log_softmax``,
* ``sparsemax_loss`` / ``entmax_loss`` vs the ``entmax`` package (if installed),
* ``stablemax_cross_entropy`` vs ``F.cross_entropy`` (a different link: the cost of the float64 pass).

    python benchmarks/bench_classification.py                      # N=2048, K=512 (under a minute)
    python benchmarks/bench_classification.py --n 8192 --k 1000 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time, torch
torch.set_num_threads(int(sys.argv[5]))
import losskit
import torch.nn.functional as F
case, n, k, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
z0 = 3 * torch.randn(n, k, generator=g)
y = torch.randint(0, k, (n,), generator=g)

def focal_ref(z, y):
    lp = torch.log_softmax(z, -1).gather(-1, y[:, None]).squeeze(-1)
    return (-(1 - lp.exp()) ** 2 * lp).mean()

def run():
    if case == "ce":
        return losskit.cross_entropy(z, y)
    if case == "ce_novalid":
        with losskit.validation(False):
            return losskit.cross_entropy(z, y)
    if case == "ce_torch":
        return F.cross_entropy(z, y)
    if case == "focal":
        return losskit.focal(z, y, gamma=2.0)
    if case == "focal_torch":
        return focal_ref(z, y)
    if case == "sparsemax":
        return losskit.sparsemax_loss(z, y)
    if case == "sparsemax_pkg":
        import entmax
        return entmax.sparsemax_loss(z, y).mean()
    if case == "entmax":
        return losskit.entmax_loss(z, y, alpha=1.5)
    if case == "entmax_pkg":
        import entmax
        return entmax.entmax_bisect_loss(z, y, alpha=1.5, n_iter=50).mean()
    if case == "stablemax":
        return losskit.stablemax_cross_entropy(z, y)
    raise SystemExit(case)

z = z0.clone().requires_grad_(True)
run().backward()  # warm-up
from losskit.testing.memory import current_rss, peak_rss, reset_peak_rss
reset_peak_rss()
base = current_rss()
times = []
for _ in range(reps):
    z = z0.clone().requires_grad_(True)
    t0 = time.perf_counter()
    run().backward()
    times.append(time.perf_counter() - t0)
peak = peak_rss()
print(json.dumps({"ms": 1e3 * statistics.median(times), "mb": (peak - base) / 2**20}))
"""

PAIRS = [("ce", "ce_torch"), ("ce_novalid", "ce_torch"), ("focal", "focal_torch"),
         ("sparsemax", "sparsemax_pkg"), ("entmax", "entmax_pkg"), ("stablemax", "ce_torch")]


def run(case: str, n: int, k: int, reps: int, threads: int) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(n), str(k), str(reps), str(threads)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    cache: dict[str, dict | None] = {}
    print(f"N={args.n} K={args.k} float32, forward+backward, median of {args.repeats}, {args.threads} thread(s)")
    print(f"{'losskit':>12} {'baseline':>14} {'ms':>9} {'base ms':>9} {'time x':>7} {'MB':>8} {'base MB':>8}")
    for ours, theirs in PAIRS:
        for c in (ours, theirs):
            if c not in cache:
                cache[c] = run(c, args.n, args.k, args.repeats, args.threads)
        a, b = cache[ours], cache[theirs]
        if a is None or b is None:
            print(f"{ours:>12} {theirs:>14}  (not run: {'baseline' if b is None else 'losskit'} failed)")
            continue
        print(f"{ours:>12} {theirs:>14} {a['ms']:9.2f} {b['ms']:9.2f} {a['ms'] / b['ms']:7.2f} "
              f"{a['mb']:8.1f} {b['mb']:8.1f}")


if __name__ == "__main__":
    main()
