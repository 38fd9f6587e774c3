"""Peak memory of a contrastive loss's forward + backward: N x N similarities in row blocks vs dense.

Each variant runs in a fresh subprocess (so peaks do not mix). On CUDA the peak is
``torch.cuda.max_memory_allocated``; on CPU it is the process's peak RSS above the RSS measured just
before the loss (inputs already allocated). Prints time, peak memory, and the dense/blocked ratios,
and checks that both give the same loss and gradient.

    python benchmarks/bench_representation_memory.py                    # N = 4096 on CPU (< 2 min)
    python benchmarks/bench_representation_memory.py --n 32768 --device cuda --block 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def _rss_mib() -> float:
    """Resets the resident high-water mark and returns the resident size now (MiB)."""
    from losskit.testing.memory import current_rss, reset_peak_rss

    reset_peak_rss()
    return current_rss() / 2**20


def child(args) -> None:
    sys.path.insert(0, SRC)
    import torch

    import losskit

    torch.manual_seed(0)
    dev = torch.device(args.device)
    z1 = torch.randn(args.n, args.dim, device=dev, requires_grad=True)
    z2 = torch.randn(args.n, args.dim, device=dev, requires_grad=True)
    fn = getattr(losskit, args.loss)
    block = None if args.block == 0 else args.block
    # warm-up on a tiny batch: loads the BLAS / autograd code paths before the baseline is taken
    w1, w2 = (torch.randn(64, args.dim, device=dev, requires_grad=True) for _ in range(2))
    fn(w1, w2, block_size=None if block is None else 16).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
    t0 = time.perf_counter()
    loss = fn(z1, z2, block_size=block)
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        from losskit.testing.memory import peak_rss

        peak = peak_rss() / 2**20 - base
    dt = time.perf_counter() - t0
    g = z1.grad.double()
    print(json.dumps({"loss": loss.item(), "grad_norm": g.norm().item(), "grad_sum": g.sum().item(),
                      "peak_mib": peak, "seconds": dt}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096, help="embeddings per batch (default 4096)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--block", type=int, default=512, help="rows per block for the blocked path")
    p.add_argument("--loss", default="info_nce", help="info_nce | clip_loss | nt_xent | ...")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-dense", action="store_true", help="run the blocked path only (N too large for dense)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    # glibc: serve large blocks by mmap so that freed memory leaves the RSS (peak RSS ~ live peak)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MALLOC_MMAP_THRESHOLD_": "65536"}
    res = {}
    variants = (("blocked", args.block),) if args.skip_dense else (("dense", 0), ("blocked", args.block))
    for label, block in variants:
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--dim", str(args.dim), "--block",
               str(block), "--loss", args.loss, "--device", args.device]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        res[label] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.loss}: N={args.n} D={args.dim} device={args.device} block={args.block}")
    for label, r in res.items():
        print(f"  {label:8s} peak {r['peak_mib']:9.1f} MiB   time {r['seconds']:7.2f} s   loss {r['loss']:.6f}")
    print(f"  N x N float32 logits alone: {args.n * args.n * 4 / 2**20:.1f} MiB")
    if args.skip_dense:
        return
    d, b = res["dense"], res["blocked"]
    print(f"  memory ratio dense/blocked: {d['peak_mib'] / max(b['peak_mib'], 1e-9):.2f}x;"
          f" time ratio blocked/dense: {b['seconds'] / d['seconds']:.2f}x")
    same = abs(d["loss"] - b["loss"]) <= 1e-5 * abs(d["loss"]) and abs(d["grad_norm"] - b["grad_norm"]) <= 1e-4 * d[
        "grad_norm"]
    print(f"  same loss and gradient norm (float32 tolerance): {same}")


if __name__ == "__main__":
    main()
