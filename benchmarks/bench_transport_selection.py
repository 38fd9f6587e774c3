"""TAROT-style selection (losskit.transport.ot_select): quality and cost on a synthetic pool, one run.

Pool: n candidates in d dimensions, a fraction ``--on`` of them target-like (the target's distribution)
and the rest in three off-target clusters (spread 0.7, centres at distance ``--sep``); every point
(candidates and target alike) also has 4 nuisance directions of standard deviation ``--nuisance``
that carry no information about the target, and the features are rotated at random, so the nuisance
directions dominate raw distances (the "dominant feature components" TAROT whitens away). Target:
m points of the target distribution. Printed (one run): time and peak memory (ru_maxrss above the data)
of ``ot_select`` at a fixed budget, the precision of the selection (fraction of target-like points,
against the pool fraction), and the whitened OT distance to the target of: the selected subset, random
subsets of the same size, the whole pool, and the same round-robin rule on unwhitened (unit-norm raw)
features; then the automatic size (``budget=None``).

    python benchmarks/bench_transport_selection.py                     # n = 20000, d = 32, m = 500
    python benchmarks/bench_transport_selection.py --n 5000 --d 16 --m 200 --budget 0.05
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from losskit.transport import ot_select, whitened_ot  # noqa: E402
from losskit.transport.selection import _rounds, _unit  # noqa: E402


def _data(n, d, m, on, nuisance, sep, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_on = int(on * n)
    parts = [torch.randn(n_on, d, generator=g)]
    rest = n - n_on
    for k in range(3):
        c = (rest // 3) if k < 2 else rest - 2 * (rest // 3)
        centre = torch.zeros(d)
        centre[4 + k] = sep
        parts.append(0.7 * torch.randn(c, d, generator=g) + centre)
    cand = torch.cat(parts)
    target = torch.randn(m, d, generator=g)
    # nuisance: 4 high-variance directions shared by every point (candidates and target alike)
    cand[:, :4] *= nuisance
    target[:, :4] *= nuisance
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    is_on = torch.zeros(n, dtype=torch.bool)
    is_on[:n_on] = True
    return cand @ q, target @ q, is_on


def _mb(reset: bool = False) -> float:
    """Resident high-water mark (MiB); ``reset=True`` first resets it to the resident size now."""
    from losskit.testing.memory import peak_rss, reset_peak_rss

    if reset:
        reset_peak_rss()
    return peak_rss() / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--m", type=int, default=500)
    ap.add_argument("--on", type=float, default=0.25, help="fraction of target-like candidates")
    ap.add_argument("--nuisance", type=float, default=30.0, help="std of the 4 shared nuisance directions")
    ap.add_argument("--sep", type=float, default=6.0, help="distance of the off-target cluster centres")
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--random", type=int, default=4, help="random subsets to compare with")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cand, target, is_on = _data(args.n, args.d, args.m, args.on, args.nuisance, args.sep)
    n = args.n
    k = max(1, round(args.budget * n))
    print(f"pool n = {n}, d = {args.d}, target m = {args.m}, on-target fraction {args.on}, nuisance std "
          f"{args.nuisance:g}, off-target centres at {args.sep:g}, budget k = {k}, eps = {args.eps}, float32, {torch.get_num_threads()} thread(s)")

    base = _mb(reset=True)
    t0 = time.perf_counter()
    res = ot_select(cand, target, budget=k, eps=args.eps)
    t_sel = time.perf_counter() - t0
    peak = _mb() - base
    prec = is_on[res.indices].float().mean().item()
    print(f"ot_select(budget={k}): {t_sel:.2f} s, peak memory above the data {peak:.0f} MB, "
          f"{len(res.sizes)} curve points")
    print(f"  precision {prec:.3f} (pool fraction {is_on.float().mean().item():.3f}), "
          f"OT distance of the selection {res.distance.item():.4f}")

    def dist_of(index_sets):
        B = len(index_sets)
        a = torch.zeros(B, n)
        for i, s in enumerate(index_sets):
            a[i, s] = 1.0 / len(s)
        return whitened_ot(cand.expand(B, -1, -1), target.expand(B, -1, -1), a=a, eps=args.eps,
                           reduction="none")

    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    rnd = dist_of([torch.randperm(n, generator=g)[:k] for _ in range(args.random)])
    full = dist_of([torch.arange(n)])[0]
    # the same round-robin rule on unwhitened features (unit-norm raw features: cosine, as LESS/DSDM)
    with torch.no_grad():
        raw_rounds, raw_dist = _rounds(_unit(cand), _unit(target), 1.0, 1 << 20)
        by = torch.sort(raw_dist, stable=True).indices
        raw_order = by[torch.sort(raw_rounds[by], stable=True).indices]
    raw = dist_of([raw_order[:k]])[0]
    t_ref = time.perf_counter() - t0
    print(f"  random subsets of {k} ({args.random}): OT distance min {rnd.min().item():.4f} mean "
          f"{rnd.mean().item():.4f} -> selection / best random = {res.distance.item() / rnd.min().item():.3f}")
    print(f"  whole pool: OT distance {full.item():.4f} -> selection / pool = {res.distance.item() / full.item():.3f}")
    print(f"  same rule without whitening: precision {is_on[raw_order[:k]].float().mean().item():.3f}, "
          f"OT distance {raw.item():.4f} -> selection / unwhitened = {res.distance.item() / raw.item():.3f}")
    print(f"  (reference distances computed in {t_ref:.1f} s)")

    t0 = time.perf_counter()
    auto = ot_select(cand, target, budget=None, eps=args.eps)
    t_auto = time.perf_counter() - t0
    print(f"ot_select(budget=None): {t_auto:.2f} s, chose k = {auto.budget} ({auto.budget / n:.3f} of the pool), "
          f"precision {is_on[auto.indices].float().mean().item():.3f}, recall "
          f"{is_on[auto.indices].sum().item() / is_on.sum().item():.3f}, OT distance {auto.distance.item():.4f}")
    print("  curve (size: distance): " + ", ".join(
        f"{s}: {v:.4f}" for s, v in zip(auto.sizes.tolist()[:12], auto.distances.tolist()[:12])))


if __name__ == "__main__":
    main()
