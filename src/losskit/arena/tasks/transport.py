"""The ``transport`` task: OT solvers on point clouds against the exact assignment (SciPy's Hungarian
algorithm)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..task import Candidate, Task, TrialResult, Unavailable, bind_call
from ._common import entry_of

__all__ = ["Transport"]

#: The input kind of the solvers of one-dimensional samples (x (n,), y (m,)).
ONE_D_KIND = "two 1-d samples"


class Transport(Task):
    """OT solvers on point clouds against the exact assignment (SciPy's Hungarian algorithm)."""

    name = "transport"
    description = ("two point clouds of `n` points in `dim` dimensions, squared-Euclidean cost, uniform "
                   "weights; the exact OT cost is an assignment problem solved by scipy's "
                   "linear_sum_assignment; metrics: relative error of the solver's cost against it (entropic "
                   "costs carry their eps bias, the quadratically regularised one its gamma bias; the sliced "
                   "distance is a different quantity, a lower bound), median time over `repeats` calls")
    metrics = ("rel_error", "time_ms")
    lower_is_better = frozenset({"rel_error", "time_ms"})
    baseline = "exact_ot"
    defaults = {"n": 128, "dim": 2, "repeats": 3}
    quick_config = {"n": 64}
    quick = ("exact_ot", "sinkhorn", "sinkhorn(eps=0.005)", "sinkhorn_divergence", "sliced_wasserstein",
             "quadratic_ot(gamma=0.1)")

    def candidates(self):
        return [Candidate("exact_ot"), Candidate("sinkhorn"), Candidate("sinkhorn", {"eps": 0.005}),
                Candidate("sinkhorn_divergence"), Candidate("sliced_wasserstein"), Candidate("wasserstein_1d"),
                Candidate("quadratic_ot", {"gamma": 0.1})]

    def clouds(self, seed, config):
        """The two point clouds of one seed, float64 ``(n, dim)`` each (a subclass brings its own)."""
        g = torch.Generator().manual_seed(60_000 + seed)
        n, d = config["n"], config["dim"]
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
        return x, y

    def run(self, candidate, seed, config):
        from scipy.optimize import linear_sum_assignment

        entry = entry_of(candidate)
        x, y = self.clouds(seed, config)
        n, d = x.shape
        cost = torch.cdist(x, y) ** 2
        rows, cols = linear_sum_assignment(cost.numpy())
        exact = float(cost.numpy()[rows, cols].mean())
        # a solver of 1-d samples (wasserstein_1d), read from its input kind, takes the clouds as (n,) vectors
        one_d = entry.input_kind.name == ONE_D_KIND
        if one_d and d != 1:
            raise Unavailable(f"{entry.name} needs dim=1")
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        inputs = {"x": x.squeeze(-1) if one_d else x, "y": y.squeeze(-1) if one_d else y, "a": w, "b": w,
                  "cost": cost, "C": cost, "u_values": x.squeeze(-1), "v_values": y.squeeze(-1)}
        aliases = {"source": ["x"], "target": ["y"], "X": ["x"], "Y": ["y"], "cost_matrix": ["cost"]}
        times, value = [], None
        for _ in range(config["repeats"]):
            t0 = time.perf_counter()
            value = bind_call(entry.fn, inputs, dict(candidate.options), aliases=aliases)
            times.append(time.perf_counter() - t0)
        v = float(value.detach().double().mean()) if isinstance(value, torch.Tensor) else float(value)
        return TrialResult({"rel_error": abs(v - exact) / exact, "time_ms": 1000 * float(np.median(times))})
