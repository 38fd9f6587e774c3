"""Multiscale truncated Sinkhorn (method='multiscale') vs the online (blockwise, O(n + m) memory) path.

The problem is bench_transport.py's ``--big`` problem, reproduced exactly (its ``_data``: Gaussian clouds
x ~ N(0, I_3), y ~ 0.8 N(0, I_3) + 0.5, uniform weights, squared Euclidean cost, eps = frac x the median
cost of the first 1000 pairs; its default frac is 0.05). Both methods stop at the same L1 marginal error
``tol`` (0.95 tol given to the solvers, as bench_transport.py does); each runs in its own subprocess and
its peak memory is ``losskit.testing.memory.PeakRSS`` around the solve (VmHWM reset at entry).

    python benchmarks/bench_transport_multiscale.py                          # n = 10k and 100k, d = 3
    python benchmarks/bench_transport_multiscale.py --sizes 10000 --eps 0.05,0.01

The multiscale error is the solver's certified one (``truncated_error + 2 dropped_mass_bound``, see
losskit.transport.multiscale); with ``--check`` (default for n <= 20000) the full plan's row + column L1
error at the returned potentials is also measured by an independent float64 pass over all n m entries.
The online path at n > ``--online-full`` is too slow to run to convergence: ``--online-iters`` of its
iterations are timed and the time per iteration is multiplied by the iterations it needs
(``--online-needed``; default 30, measured by bench_transport.py --big on this problem: "30 iterations,
481 s, error 9.3e-4"). That extrapolation is printed as such.
The machine is shared: timings include whatever else runs (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

from bench_transport import _data, _marginal_error  # noqa: E402  (the --big problem, exactly)


def worker(method, n, frac, tol, iters, check):
    from losskit.testing.memory import PeakRSS
    from losskit.transport import solve
    from losskit.transport.multiscale import solve_multiscale

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    x, y, med = _data(n, 3)
    eps = frac * med
    out = {}
    if method == "multiscale":
        solve_multiscale(x[:500], y[:500], eps=eps)                 # warm-up of the code path
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            r = solve_multiscale(x, y, eps=eps, tol=0.95 * tol)
            dt = time.perf_counter() - t0
        out.update(err=float(r.marginal_error[0]), trunc=float(r.truncated_error[0]),
                   delta=float(r.dropped_mass_bound[0]), kept=float(r.kept_fraction[0]),
                   clusters=r.n_clusters[0].tolist(), tau=float(r.tau[0]))
    else:
        solve(x[:500], y[:500], eps=eps, online=True, method="sinkhorn")
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            r = solve(x, y, eps=eps, tol=0.95 * tol, max_iter=iters or 5000, online=True, method="sinkhorn")
            dt = time.perf_counter() - t0
        out.update(err=float(r.marginal_error[0]))
    out.update(s=dt, mb=mem.increase / 2**20, iters=int(r.n_iter[0]), converged=bool(r.converged[0]))
    if check:
        xc = x - 0.5 * (x.mean(0) + y.mean(0))        # solve() centres the points (same costs)
        yc = y - 0.5 * (x.mean(0) + y.mean(0))
        out["check"] = _marginal_error(xc, yc, r.f[0], r.g[0], eps)
    print(json.dumps(out))


def run(*args, timeout):
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - a failed run is reported, not fatal
        return {"error": str(e)[-200:]}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        m, n, frac, tol, iters, check = sys.argv[2:8]
        worker(m, int(n), float(frac), float(tol), int(iters), bool(int(check)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--eps", default="0.05", help="fractions of the median cost (bench_transport --big: 0.05)")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--online-full", type=int, default=20000, help="largest n run to convergence online")
    ap.add_argument("--online-iters", type=int, default=2, help="iterations timed above --online-full")
    ap.add_argument("--online-needed", type=int, default=30, help="iterations the online path needs there")
    ap.add_argument("--check", type=int, default=20000, help="independent float64 error check up to this n")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    print(f"threads: {threads}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(a shared, loaded machine: timings include the other jobs)")
    print(f"{'n':>7} {'eps':>5} {'method':>11} {'time s':>9} {'iters':>5} {'L1 err':>8} {'check':>8} "
          f"{'MB':>6} {'kept':>5} {'speed-up':>8}")
    for n in map(int, args.sizes.split(",")):
        for frac in map(float, args.eps.split(",")):
            chk = int(n <= args.check)
            ms = run("multiscale", n, frac, args.tol, 0, chk, timeout=args.timeout)
            full = n <= args.online_full
            on = run("online", n, frac, args.tol, 0 if full else args.online_iters, chk if full else 0,
                     timeout=args.timeout)
            note = ""
            if "error" not in on and not full:
                on["s_measured"], on["iters_measured"] = on["s"], on["iters"]
                on["s"] = on["s"] / on["iters"] * args.online_needed
                on["iters"] = args.online_needed
                note = (f"  (online: {on['iters_measured']} iterations timed, {on['s_measured']:.1f} s, "
                        f"extrapolated to {args.online_needed})")
            for name, r in (("multiscale", ms), ("online", on)):
                if "error" in r:
                    print(f"{n:>7} {frac:>5} {name:>11} failed: {r['error']}")
                    continue
                sp = f"{on['s'] / r['s']:.1f}x" if name == "multiscale" and "s" in on else ""
                err = "~tol*" if name == "online" and not full else f"{r['err']:.1e}"
                chk_s = f"{r['check']:.1e}" if "check" in r else ""
                kept = f"{r['kept']:.2f}" if "kept" in r else ""
                print(f"{n:>7} {frac:>5} {name:>11} {r['s']:>9.1f} {r['iters']:>5} {err:>8} {chk_s:>8} "
                      f"{r['mb']:>6.0f} {kept:>5} {sp:>8}")
            if "kept" in ms:
                print(f"        multiscale: clusters {ms['clusters']}, truncated-plan error {ms['trunc']:.1e}, "
                      f"dropped mass <= {ms['delta']:.1e} (tau {ms['tau']:.1f}){note}", flush=True)
            elif note:
                print(note)


if __name__ == "__main__":
    main()
