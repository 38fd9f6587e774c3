"""Token layer: peak memory and time of chunked ``token_logprobs`` against ``log_softmax(...).gather(...)``.

Each variant runs forward + backward (the gradient of the summed log-probs) in a fresh subprocess; peak
memory is the growth of the process's peak resident set over its resident set once the logits (and, on
CUDA, ``max_memory_allocated`` over the allocated bytes) exist, so the (B, T, V) gradient that both must
produce is included in both. Time is the best of ``--repeat`` runs after one warm-up.

    python benchmarks/bench_preference_tokens.py                 # B=8, T=1024, V=32000, float32, CPU
    python benchmarks/bench_preference_tokens.py --B 2 --T 256 --V 8000 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def _rss() -> int:
    from losskit.testing.memory import current_rss, reset_peak_rss

    reset_peak_rss()
    return current_rss()


def _peak_rss() -> int:
    from losskit.testing.memory import peak_rss

    return peak_rss()


def run_variant(args) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from losskit.preference import naive_token_logprobs, token_logprobs

    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device=dev).manual_seed(0)
    logits = torch.randn(args.B, args.T, args.V, generator=g, device=dev, dtype=torch.float32).to(dtype)
    labels = torch.randint(0, args.V, (args.B, args.T), generator=g, device=dev)
    mask = torch.ones(args.B, args.T, dtype=torch.bool, device=dev)
    mask[:, : args.T // 8] = False  # a prompt
    logits.requires_grad_(True)

    def step():
        logits.grad = None
        if args.variant == "naive":
            lp = naive_token_logprobs(logits, labels, mask)
        else:
            lp = token_logprobs(logits, labels, mask, chunk_rows=args.chunk_rows).logps
        lp.sum().backward()
        return lp

    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss()
    step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss() - base
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lp = step().detach()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"variant": args.variant, "peak_bytes": peak, "time_s": min(times),
            "checksum": float(lp.double().sum()), "grad_checksum": float(logits.grad.double().abs().sum())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--V", type=int, default=32000)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--chunk-rows", type=int, default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--variant", choices=["naive", "chunked"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    results = {}
    for variant in ("naive", "chunked"):
        cmd = [sys.executable, __file__, "--variant", variant] + [a for a in (argv or sys.argv[1:])]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    n, c = results["naive"], results["chunked"]
    logits_bytes = args.B * args.T * args.V * torch.finfo(getattr(torch, args.dtype)).bits // 8
    print(f"token log-probs, B={args.B} T={args.T} V={args.V} {args.dtype} on {args.device}, "
          f"{args.threads} thread(s); logits {logits_bytes / 2**20:.0f} MiB")
    print(f"{'variant':<10}{'peak extra MiB':>16}{'x logits':>10}{'time s':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['peak_bytes'] / 2**20:>16.0f}{r['peak_bytes'] / logits_bytes:>10.2f}{r['time_s']:>10.3f}")
    print(f"chunked / naive: peak memory {c['peak_bytes'] / n['peak_bytes']:.3f}x, time {c['time_s'] / n['time_s']:.2f}x")
    rel = abs(c["checksum"] - n["checksum"]) / abs(n["checksum"])
    relg = abs(c["grad_checksum"] - n["grad_checksum"]) / abs(n["grad_checksum"])
    print(f"agreement: sum of log-probs rel. diff {rel:.2e}, sum |grad| rel. diff {relg:.2e}")


if __name__ == "__main__":
    main()
