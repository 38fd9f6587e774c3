"""Peak memory and time of the sample-based divergences: blocked (losskit default) vs dense.

Each measurement runs in a fresh subprocess (forward + backward of ``losskit.mmd``, unbiased, Gaussian
kernel, float32) and reports the process's peak resident memory above its baseline after the data are
created (``VmHWM`` reset at the baseline, ``losskit.testing.memory``), and the wall time. "dense" is the same function with
``block_size >= n``: the whole n x n kernel matrices at once (what a direct implementation does).
Blocked memory should grow linearly in n, dense quadratically.

    python benchmarks/bench_divergences_memory.py                    # n = 1k, 2k, 4k (about a minute)
    python benchmarks/bench_divergences_memory.py --sizes 10000 40000 --dense-max 10000

Dense runs above ``--dense-max`` are skipped and their memory is extrapolated (n^2) from the largest
dense run, marked "~".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
import losskit
n, block, d = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
x = torch.randn(n, d, generator=g).requires_grad_(True)
y = (torch.randn(n, d, generator=g) + 0.3).requires_grad_(True)
w = torch.randn(64, d, requires_grad=True)  # warm-up: autograd / checkpoint machinery loaded before the baseline
losskit.mmd(w, w.detach() + 1, bandwidth=4.0, block_size=16).backward()
from losskit.testing.memory import current_rss, peak_rss, reset_peak_rss
reset_peak_rss()
base = current_rss()
t0 = time.perf_counter()
loss = losskit.mmd(x, y, bandwidth=4.0, block_size=block)
loss.backward()
dt = time.perf_counter() - t0
peak = peak_rss()
print(json.dumps({"mb": (peak - base) / 2**20, "s": dt, "value": loss.item()}))
"""


def run(n: int, block: int, d: int, threads: int) -> dict:
    # glibc would otherwise keep freed blocks in its heap (RSS then counts memory no longer in use):
    # every allocation above 64 KiB is its own mapping, returned to the OS when freed.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(block), str(d), str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--dense-max", type=int, default=10000, help="largest n run densely")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    print(f"MMD^2 (unbiased, gaussian), forward + backward, float32, d={args.dim}, block={args.block}, "
          f"{args.threads} thread(s)")
    print(f"{'n':>7} | {'blocked MB':>10} {'blocked s':>9} | {'dense MB':>10} {'dense s':>8} | "
          f"{'mem ratio':>9} {'time ratio':>10} | {'|diff|':>8}")
    last_dense = None
    for n in args.sizes:
        b = run(n, args.block, args.dim, args.threads)
        if n <= args.dense_max:
            dn = run(n, n, args.dim, args.threads)
            last_dense = (n, dn["mb"])
            dmb, ds, mark = dn["mb"], f"{dn['s']:8.2f}", " "
            diff = f"{abs(dn['value'] - b['value']):8.1e}"
            tratio = f"{dn['s'] / b['s']:.2f}"
        else:
            dmb = last_dense[1] * (n / last_dense[0]) ** 2 if last_dense else float("nan")
            ds, mark, diff, tratio = f"{'-':>8}", "~", f"{'-':>8}", ""
        print(f"{n:>7} | {b['mb']:>10.1f} {b['s']:>9.2f} | {mark}{dmb:>9.1f} {ds} | "
              f"{dmb / max(b['mb'], 1e-9):>9.1f} {tratio:>10} | {diff}")


if __name__ == "__main__":
    main()
