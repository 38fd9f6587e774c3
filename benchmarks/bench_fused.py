"""Fused linear cross-entropy vs the naive path (materialised logits): time, peak memory, GEMM bound.

Every (path, shape) runs in a fresh subprocess: it builds the inputs, runs forward+backward (one warm-up,
then ``--repeats`` timed runs, best kept), records the peak memory growth after the inputs exist (the
gradients of h and W included, measured after one warm-up step; CPU: the resident high-water mark
``VmHWM`` reset at the baseline (``losskit.testing.memory``), CUDA: ``max_memory_allocated``), then measures in the
same process the lower bound: the three GEMMs of N.H.V multiply-adds (logits, grad h, grad W) at this
machine's GEMM rate. Ratios are time / bound and fused / naive, all measured in one run.

    python benchmarks/bench_fused.py                         # N=4096 H=1024 V=32000 float32 (< 2 min idle)
    python benchmarks/bench_fused.py --shapes 4096,1024,32000 8192,2048,128000 --dtype bfloat16
    python benchmarks/bench_fused.py --paths naive fused torch --chunk 256 512   # chunk-size sweep

Paths: ``naive`` (``F.cross_entropy(h @ W.T)``, bf16 logits upcast with ``.float()``), ``fused``
(:func:`losskit.fused_linear_cross_entropy`; bf16 inputs use ``bf16_matmul=True``), ``torch``
(``F.linear_cross_entropy`` with ``LinearCrossEntropyOptions()``, the CPU peer). On a CUDA machine the
same paths run on the GPU (``--device cuda``, the default when CUDA is present).
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
torch.set_num_threads(cfg["threads"])
dev, dt = torch.device(cfg["device"]), getattr(torch, cfg["dtype"])
N, H, V = cfg["N"], cfg["H"], cfg["V"]
cuda = dev.type == "cuda"

def sync():
    if cuda:
        torch.cuda.synchronize()

from losskit.testing.memory import current_rss, peak_rss, reset_peak_rss

def mem():
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss() / 2**20

def baseline():
    # resets the peak counter and returns the memory in use now (MiB)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    reset_peak_rss()
    return current_rss() / 2**20

g = torch.Generator(device="cpu").manual_seed(0)
# filled in place: a freed temporary would leave a hole below the baseline that the gradients reuse
h = torch.empty(N, H, dtype=dt).normal_(0, H**-0.5, generator=g).to(dev).requires_grad_(True)
W = torch.empty(V, H, dtype=dt).normal_(generator=g).to(dev).requires_grad_(True)
y = torch.randint(0, V, (N,), generator=g).to(dev)
path = cfg["path"]
if path == "fused":
    import losskit
    losskit.set_validation(False)
    kw = dict(chunk_size=cfg["chunk"], bf16_matmul=dt == torch.bfloat16)
    def step():
        return losskit.fused_linear_cross_entropy(h, W, y, **kw)
elif path == "torch":
    opts = torch.nn.LinearCrossEntropyOptions()
    def step():
        return F.linear_cross_entropy(h, W, y, options=opts)
else:
    def step():
        return F.cross_entropy((h @ W.T).float(), y)

def fwd_bwd():
    h.grad = W.grad = None
    loss = step()
    loss.backward()
    sync()
    return loss

loss = fwd_bwd()            # warm-up: kernels paged in, allocator pools formed (a training step >= 2)
del loss
h.grad = W.grad = None
sync()
base = baseline()
times = []
for i in range(cfg["repeats"]):
    t = time.perf_counter(); loss = fwd_bwd(); times.append(time.perf_counter() - t)
peak = mem() - base
t_path = min(times)
loss_value = float(loss)
del loss
h.grad = W.grad = None

def gemms():
    with torch.no_grad():
        z = h @ W.T          # logits       N.H.V
        gh = z @ W           # grad h       N.V.H
        gw = z.T @ h         # grad W       V.N.H
    sync()
    return gh, gw

gemms()  # warm-up: first touch of the (N, V) pages would inflate the bound
lb = []
for i in range(cfg["repeats"]):
    t = time.perf_counter(); gemms(); lb.append(time.perf_counter() - t)
print(json.dumps(dict(time=t_path, peak_mb=peak, lb=min(lb), loss=loss_value)))
"""


SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def run(cfg: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC}
    env["OMP_NUM_THREADS"] = str(cfg["threads"])
    # a fixed glibc mmap threshold: otherwise a freed block of <= 32 MiB (a chunk buffer of 256 x 32000
    # floats) stays in the heap after the warm-up, resident in the baseline, and the timed step reuses it
    # for free (benchmarks/bench_fused_chunks.py measures the same way)
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["4096,1024,32000"], help="N,H,V triples")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--paths", nargs="+", default=["naive", "fused", "torch"])
    ap.add_argument("--chunk", nargs="+", type=int, default=[0], help="fused chunk sizes (0: the default rule)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    sys.path.insert(0, SRC)
    from losskit.fused import chunk_rows
    from losskit.fused._engine import CHUNK_SHARE

    print(f"device={args.device} dtype={args.dtype} threads={args.threads} repeats={args.repeats}")
    print("| N | H | V | path | chunk | time s | bound s | time/bound | time/naive | peak MB | peak/naive "
          "| extra MB | extra/naive | GEMM GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        n, h, v = (int(s) for s in shape.split(","))
        naive = None
        runs = []
        for path in args.paths:
            for chunk in (args.chunk if path == "fused" else [0]):
                cfg = dict(N=n, H=h, V=v, path=path, chunk=chunk or None, dtype=args.dtype, device=args.device,
                           repeats=args.repeats, threads=args.threads)
                r = run(cfg)
                if path == "naive":
                    naive = r
                budget = 4 * 64 * 2**20 if args.dtype == "bfloat16" else 64 * 2**20  # bf16_matmul: 4x
                share = None if args.dtype == "bfloat16" else CHUNK_SHARE  # bf16_matmul: no token cap
                label = chunk or (chunk_rows(n, v, budget, share=share) if path == "fused" else "-")
                runs.append((path, label, r))
        # "extra": the peak growth beyond the gradients of h and W (which every path must return)
        grads_mb = (n * h + v * h) * (2 if args.dtype == "bfloat16" else 4) / 2**20
        for path, label, r in runs:
            rate = 6 * n * h * v / r["lb"] / 1e9
            extra = r["peak_mb"] - grads_mb
            tn = f"{r['time'] / naive['time']:.2f}" if naive else "-"
            pn = f"{r['peak_mb'] / naive['peak_mb']:.2f}" if naive and naive["peak_mb"] > 0 else "-"
            en = f"{extra / (naive['peak_mb'] - grads_mb):.3f}" if naive and naive["peak_mb"] > grads_mb else "-"
            print(f"| {n} | {h} | {v} | {path} | {label} | {r['time']:.2f} | {r['lb']:.2f} | "
                  f"{r['time'] / r['lb']:.2f} | {tn} | {r['peak_mb']:.0f} | {pn} | {extra:.0f} | {en} | {rate:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
