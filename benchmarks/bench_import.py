"""What ``import losskit`` costs over ``import torch``, each in a fresh interpreter.

Each run starts ``python -c "import torch"`` and ``python -c "import torch, losskit"`` as subprocesses,
interleaved, and times them from outside (wall clock, interpreter start-up included in both, so the
difference is what losskit adds). Prints the medians of ``--runs``, their difference and their ratio, and
the same for ``python -m losskit --version`` (what a command costs before it does anything); and, less noisy,
``import losskit`` timed inside an interpreter that has already imported torch. The goal
(issue 24) is ``import losskit`` within 0.3 s of ``import torch``.

    python benchmarks/bench_import.py            # 9 runs of each
    python benchmarks/bench_import.py --runs 21
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"


ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
#: In one fresh interpreter: torch imported first, then the time ``import losskit`` alone takes.
AFTER_TORCH = ("import time, torch; t = time.perf_counter(); import losskit; "
               "print(time.perf_counter() - t)")


def _time(code: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *code], check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _after_torch() -> float:
    out = subprocess.run([sys.executable, "-c", AFTER_TORCH], check=True, env=ENV, capture_output=True, text=True)
    return float(out.stdout)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    cases = {
        "import torch": ["-c", "import torch"],
        "import torch, losskit": ["-c", "import torch, losskit"],
        "losskit --version": ["-m", "losskit", "--version"],
    }
    _time(cases["import torch, losskit"])  # warm the file cache once
    times: dict[str, list[float]] = {k: [] for k in cases}
    inner: list[float] = []
    for _ in range(args.runs):
        for k, code in cases.items():
            times[k].append(_time(code))
        inner.append(_after_torch())
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["import torch"]
    print(f"median of {args.runs} runs, each a fresh interpreter (start-up included)")
    print(f"{'':24}{'median s':>10}{'range s':>16}{'- torch s':>11}{'/ torch':>9}")
    for k, v in times.items():
        print(f"{k:24}{med[k]:10.3f}{min(v):8.3f}-{max(v):<7.3f}{med[k] - base:11.3f}{med[k] / base:9.2f}")
    med["import losskit after torch"] = statistics.median(inner)
    print(f"import losskit after torch, timed inside the interpreter: median {med['import losskit after torch']:.3f} s "
          f"(range {min(inner):.3f}-{max(inner):.3f})")
    return med


if __name__ == "__main__":
    main()
