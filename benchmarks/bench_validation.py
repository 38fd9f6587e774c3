"""What validation costs: every registered objective with validation on vs off, measured in one run.

For each objective the example inputs (float32) are tiled along the batch to ``--batch`` rows, and
forward + backward is timed with ``losskit.set_validation(True)`` and ``(False)`` interleaved (median of
``--repeats``). The ratio on/off is what the default value checks cost; the goal is <= 1.2 for every
objective, and ``cross_entropy`` within 1.10x of ``torch.nn.functional.cross_entropy`` at N=2048, K=512
(``benchmarks/bench_classification.py``).

    python benchmarks/bench_validation.py                 # all objectives, batch 256, 1 thread
    python benchmarks/bench_validation.py --family preference --batch 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import losskit


def _tiled(entry, batch: int):
    ex = entry.make_example(torch.float32)
    n = ex.batch_size()
    if entry.per_sample and batch > n:
        ex = ex.select(torch.arange(batch) % n)
    return ex


def _once(entry, ex) -> float:
    inputs = {k: (v.detach().clone().requires_grad_(True) if k in ex.grad else v) for k, v in ex.inputs.items()}
    t0 = time.perf_counter()
    out = entry.fn(**inputs, **ex.options)
    out = out[0] if isinstance(out, tuple) else out
    if out.requires_grad:
        out.sum().backward()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=0.5,
                    help="objectives whose first call takes longer are reported, not repeated")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"validation on / off, forward+backward, float32, batch {args.batch} (per-sample objectives), "
          f"median of {args.repeats}, {args.threads} thread(s)")
    print(f"{'objective':<34} {'family':<15} {'on ms':>8} {'off ms':>8} {'on/off':>7}")
    worst = []
    for entry in losskit.objectives(args.family):
        try:
            ex = _tiled(entry, args.batch)
            first = []
            for mode in (True, False):
                with losskit.validation(mode):
                    first.append(_once(entry, ex))
            if max(first) > args.max_seconds:
                print(f"{entry.name:<34} {entry.family:<15} {1e3 * first[0]:8.1f} {1e3 * first[1]:8.1f}    (one call; "
                      f"> {args.max_seconds} s, not repeated)")
                continue
            on, off = [], []
            for _ in range(args.repeats):
                with losskit.validation(True):
                    on.append(_once(entry, ex))
                with losskit.validation(False):
                    off.append(_once(entry, ex))
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{entry.name:<34} {entry.family:<15} failed: {type(e).__name__}: {str(e)[:60]}")
            continue
        a, b = 1e3 * statistics.median(on), 1e3 * statistics.median(off)
        worst.append((a / b, entry.name))
        print(f"{entry.name:<34} {entry.family:<15} {a:8.3f} {b:8.3f} {a / b:7.2f}")
    worst.sort(reverse=True)
    print(f"max on/off {worst[0][0]:.2f} ({worst[0][1]}); median {statistics.median(r for r, _ in worst):.2f}; "
          f"{sum(r > 1.2 for r, _ in worst)} of {len(worst)} above 1.2")


if __name__ == "__main__":
    main()
