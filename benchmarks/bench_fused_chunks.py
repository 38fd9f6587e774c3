"""The fused cross-entropy's chunk rule against the naive path: peak memory and time at several (N, V).

For every shape (H=1024, float32 by default, one thread) three fresh processes run one forward+backward
each: ``naive`` (``F.cross_entropy(h @ W.T)``), ``old`` (the fused loss with the previous rule's chunk:
the largest power of two whose (c, V) buffer fits 64 MiB, clamped to [512, 4096]) and ``new`` (the
default rule, :func:`losskit.fused.chunk_rows`). Each process builds the inputs, warms up on a small
prefix of the tokens (kernels paged in, the BLAS buffers and the malloc arenas formed, the weight
gradient's pages touched once), then resets the resident high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``; :mod:`losskit.testing.memory`) and times one step on all N tokens. "extra" is the
peak growth beyond the gradients of h and W, which every path returns. When old and new pick the same
chunk, one fused process serves both. ``--rounds 2`` repeats the timed processes (best time kept) to damp
the load of a shared machine; old and new then alternate. Times are the process's CPU time (one thread:
the compute it got, which other jobs on a shared machine distort far less than the wall clock); the
wall-clock fused/naive ratio is printed beside it.

    python benchmarks/bench_fused_chunks.py                                # the 4 x 2 table (~25 min, 1 thread)
    python benchmarks/bench_fused_chunks.py --n 8192 --v 131072            # one shape alone
    python benchmarks/bench_fused_chunks.py --n 2048 --v 32768 --sweep 96 128 224 512   # chunk sweep

Shapes whose naive path would need more than ``--max-gb`` (default: 60% of the available memory) are
skipped with a note; run them alone. The naive extra is about 4 N V 4 bytes (logits, log-softmax, and their
gradients), so N=8192, V=131072 needs ~17 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import torch, torch.nn.functional as F
cfg = json.loads(sys.argv[1])
torch.set_num_threads(1)
from losskit.testing.memory import current_rss, peak_rss, reset_peak_rss
import losskit
losskit.set_validation(False)
N, H, V, chunk = cfg["N"], cfg["H"], cfg["V"], cfg["chunk"]
dt = getattr(torch, cfg["dtype"])
g = torch.Generator().manual_seed(0)
# filled in place: a freed temporary would leave a hole below the baseline that the gradients reuse
h = torch.empty(N, H, dtype=dt).normal_(0, H**-0.5, generator=g).requires_grad_(True)
W = torch.empty(V, H, dtype=dt).normal_(generator=g).requires_grad_(True)
y = torch.randint(0, V, (N,), generator=g)

def step(n):
    h.grad = W.grad = None
    if chunk:
        loss = losskit.fused_linear_cross_entropy(h[:n], W, y[:n], chunk_size=chunk)
    else:
        loss = F.cross_entropy(h[:n] @ W.T, y[:n])
    loss.backward()
    return float(loss)

step(min(N, 2 * chunk if chunk else 256))     # warm-up on a prefix: two chunks (fused), 256 tokens (naive)
h.grad = W.grad = None
reset_peak_rss()
base = current_rss()
t, c = time.perf_counter(), time.process_time()
loss = step(N)
t, c = time.perf_counter() - t, time.process_time() - c
peak = peak_rss() - base
print(json.dumps(dict(wall=t, time=c, peak=peak / 2**20, loss=loss)))
"""

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def old_rule(v: int, itemsize: int = 4) -> int:
    """The previous default: the largest power of two whose (c, V) buffer fits 64 MiB, in [512, 4096]."""
    c = 512
    while c * 2 <= 4096 and c * 2 * v * itemsize <= 64 * 2**20:
        c *= 2
    return c


def child(cfg: dict, fixed_mmap: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if fixed_mmap:
        # glibc raises its mmap threshold to the size of each freed mmapped block (up to 32 MiB): a buffer
        # of <= 32 MiB freed after the warm-up then lives on in the heap, resident in the baseline, and the
        # measured step reuses it for free. A fixed threshold (which turns that adjustment off) maps and
        # unmaps every block >= 128 KiB, so each one counts at the peak it is part of.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    ap.add_argument("--v", nargs="+", type=int, default=[32768, 131072])
    ap.add_argument("--h", type=int, default=1024)
    ap.add_argument("--dtype", default="float32", choices=["float32"])
    ap.add_argument("--rounds", type=int, default=1, help="timed processes per path (best kept)")
    ap.add_argument("--sweep", nargs="*", type=int, default=[], help="extra fused chunk sizes to measure")
    ap.add_argument("--max-gb", type=float, default=None, help="skip shapes whose naive path needs more")
    args = ap.parse_args(argv)

    sys.path.insert(0, SRC)
    from losskit.fused import chunk_rows

    max_gb = args.max_gb if args.max_gb is not None else 0.6 * available_gb()
    print(f"H={args.h} dtype={args.dtype} threads=1 rounds={args.rounds} naive limit {max_gb:.1f} GB")
    print("| N | V | naive peak MB | naive extra MB | old chunk | old extra % | new chunk | new extra MB "
          "| new extra % | fused/naive time | fused/naive wall | new/old time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sweeps = []
    for v in args.v:
        for n in args.n:
            need = (4 * n * v * 4 + 2 * (n + v) * args.h * 4) / 2**30
            if need > max_gb:
                print(f"| {n} | {v} | skipped: the naive path needs ~{need:.0f} GB > {max_gb:.0f} GB; run it alone |")
                continue
            base = dict(N=n, H=args.h, V=v, dtype=args.dtype)
            c_old, c_new = min(old_rule(v), n), chunk_rows(n, v)
            res: dict = {}
            for _ in range(args.rounds):
                for label, c in (("naive", 0), ("old", c_old), ("new", c_new)):
                    if label == "new" and c_new == c_old:
                        continue
                    r = child({**base, "chunk": c})
                    prev = res.get(label)
                    res[label] = r if prev is None else {**prev, "time": min(prev["time"], r["time"]),
                                                         "wall": min(prev["wall"], r["wall"]),
                                                         "peak": max(prev["peak"], r["peak"])}
            res.setdefault("new", res["old"])
            grads = (n + v) * args.h * 4 / 2**20
            nx = res["naive"]["peak"] - grads

            pct = {k: 100 * (r["peak"] - grads) / nx for k, r in res.items()}
            print(f"| {n} | {v} | {res['naive']['peak']:.0f} | {nx:.0f} | {c_old} | {pct['old']:.1f} | {c_new} | "
                  f"{res['new']['peak'] - grads:.0f} | **{pct['new']:.1f}** | "
                  f"{res['new']['time'] / res['naive']['time']:.2f} | {res['new']['wall'] / res['naive']['wall']:.2f} | "
                  f"{res['new']['time'] / res['old']['time']:.3f} |",
                  flush=True)
            for c in args.sweep:
                r = child({**base, "chunk": min(c, n)})
                sweeps.append((n, v, c, r, nx, grads, res["naive"]["time"]))
    if sweeps:
        print("\n| N | V | chunk | extra MB | extra % of naive | buffer MB | extra - buffer MB | time s | time/naive |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, v, c, r, nx, grads, tn in sweeps:
            ex = r["peak"] - grads
            buf = c * v * 4 / 2**20
            print(f"| {n} | {v} | {c} | {ex:.0f} | {100 * ex / nx:.1f} | {buf:.0f} | {ex - buf:.0f} | "
                  f"{r['time']:.2f} | {r['time'] / tn:.2f} |")


if __name__ == "__main__":
    main()
