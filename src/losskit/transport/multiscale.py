"""Multiscale, truncated (block-sparse) Sinkhorn for large low-dimensional point clouds (issue 23).

For ``n, m`` of 10^5-10^6 points in dimension ``d <= 3`` with the squared Euclidean cost, most entries of
the plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)`` are negligible: the reduced cost
``C_ij - f_i - g_j`` grows quadratically away from the transport map. The method (Schmitzer 2019,
"Stabilized sparse scaling algorithms for entropy regularized transport problems", arXiv 1610.06519,
section 4; Feydy 2020, thesis "Geometric data analysis, beyond convolutions", ch. 3, GeomLoss's multiscale
mode) is:

1. **Cluster** both clouds on a common grid of cell side ``cluster_size`` (default: about the kernel
   width ``sqrt(eps)``, enlarged so that there are at most about ``sqrt(n)`` clusters per cloud). Each
   cluster ``I`` has a weight ``A_I = sum_{i in I} a_i``, a centroid and a radius ``r_I`` (the largest
   distance of a member to the centroid).
2. **Coarse solve**: log-domain Sinkhorn with epsilon-scaling (the dense solver of :mod:`.sinkhorn`) on
   the cluster measures (centroids, weights ``A``, ``B``) down to the target ``eps``.
3. **Extrapolate** the coarse potentials to the points by one soft c-transform each:
   ``f_i = -eps log sum_J B_J exp((G_J - |x_i - c_J|^2)/eps)`` (and ``g_j`` likewise).
4. **Truncate**: with ``C_min(I, J) = max(0, |c_I - c_J| - r_I - r_J)^2 <= C_ij`` for all ``i in I``,
   ``j in J``, keep the block ``(I, J)`` iff ``R_IJ = C_min(I, J) - max_I f - max_J g <= eps tau``
   (plus, per row and column cluster, its smallest-``R`` partner, so that no marginal is empty).
5. **Fine Sinkhorn** on the kept blocks only (the fused sweep of :mod:`._kernel` restricted to a
   block-sparse list: for each row cluster, one GEMM against the gathered points of its kept column
   clusters, a log-sum-exp over them, and the column sums scattered back), until the column error of the
   truncated plan is below ``tol``. The kept list is rebuilt from the current potentials whenever a
   dropped block violates the rule (checked at convergence); the loop ends only when it does not.

**The bound** (certified, not an approximation left unstated). For a dropped block every entry satisfies
``P_ij <= a_i b_j exp(-R_IJ/eps)``, so the mass of the full plan (at the returned potentials) outside the
kept blocks is at most

    delta = sum_{(I, J) dropped} A_I B_J exp(-R_IJ / eps)  <=  exp(-tau) |a| |b|,

computed exactly at the returned potentials and reported as ``dropped_mass_bound``. The truncated plan's
rows are exact (f is updated last) and its column L1 error ``err`` is measured as the dense path does;
the full plan at the same potentials then has L1 row + column error at most ``err + 2 delta``, which is
the reported ``marginal_error`` (``converged`` compares it with ``tol``). The default
``tau = log(10 / tol)`` keeps ``2 delta <= tol / 5``.

Value and gradients are those of :func:`~.sinkhorn.solve` (envelope theorem: dual objective at the
potentials; ``grad_x_i = 2 sum_j P_ij (x_i - y_j)``, ``grad_a = -eps (P 1 / a - |b|)``, ...), with the
plan restricted to the kept blocks: each differs from the full plan's by at most the dropped mass times
the largest cost gradient (value: at most ``eps delta``).

Scope: squared Euclidean cost (``p = 2``, no ``cost=`` callable), balanced problems (``rho=None``),
envelope gradients, ``d <= 3`` (:data:`MAX_DIM`: a grid of cells localises the kernel only in low
dimension; in higher dimension the clusters do not separate and every block is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._core.compiler import eager
from .._core.errors import fail
from ._kernel import _CLAMP2, _FUSED_FLOOR, _LOG2E, BLOCK_ELEMS, _exp_shifted_, _Kernel
from ._solve import _as_eps, _sinkhorn
from .costs import Cost
from .result import OTResult

__all__ = ["MAX_DIM", "MultiscaleResult", "solve_multiscale"]

#: the largest point dimension method='multiscale' accepts
MAX_DIM = 3
#: when the kept list is built, the dropped blocks' bound is asked to fit the budget with this margin
#: (a factor e^margin), so that the potentials can move during the fine iterations
_MARGIN = 1.0


@dataclass
class MultiscaleResult(OTResult):
    """An :class:`~.result.OTResult` of the multiscale solver, with the truncation's certificate.

    Attributes (besides OTResult's):
        dropped_mass_bound: ``delta`` per problem, an upper bound on the full plan's mass outside the kept
            blocks at the returned potentials (see :mod:`.multiscale`).
        truncated_error: the column L1 error of the truncated plan (its rows are exact);
            ``marginal_error = truncated_error + 2 dropped_mass_bound``.
        kept_fraction: the fraction of the ``n m`` plan entries inside kept blocks.
        n_clusters: clusters of x and of y, shape (B, 2).
        n_rebuilds: how many times the kept list was built (1 + the rebuilds).
        tau: the truncation rule that holds at the returned potentials: every dropped block has
            ``R_IJ >= eps tau`` (so ``dropped_mass_bound <= exp(-tau) |a||b|``); inf if none was dropped.
    """

    dropped_mass_bound: torch.Tensor | None = None
    truncated_error: torch.Tensor | None = None
    kept_fraction: torch.Tensor | None = None
    n_clusters: torch.Tensor | None = None
    n_rebuilds: torch.Tensor | None = None
    tau: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------- clusters
@dataclass
class _Clusters:
    order: torch.Tensor    # (n,) original index of each sorted point
    starts: torch.Tensor   # (K + 1,) offsets of each cluster in sorted order
    label: torch.Tensor    # (n,) cluster of each sorted point
    centre: torch.Tensor   # (K, d) weighted centroid (plain mean for a cluster of zero weight)
    radius: torch.Tensor   # (K,) largest distance of a member to the centre
    weight: torch.Tensor   # (K,) total weight

    @property
    def K(self) -> int:
        return self.centre.shape[0]


def _grid_clusters(x: torch.Tensor, w: torch.Tensor, origin: torch.Tensor, h: float) -> _Clusters:
    """Points ``x (n, d)`` with weights ``w`` grouped by the grid cell of side ``h`` they fall in."""
    cell = torch.floor((x.double() - origin) / h).long()
    cell -= cell.amin(0)
    key = cell[:, 0]
    for k in range(1, x.shape[1]):
        key = key * (int(cell[:, k].max()) + 1) + cell[:, k]
    _, label = torch.unique(key, return_inverse=True)
    order = torch.argsort(label, stable=True)
    label = label[order]
    K = int(label.max()) + 1
    counts = torch.bincount(label, minlength=K)
    starts = torch.zeros(K + 1, dtype=torch.long)
    starts[1:] = counts.cumsum(0)
    xs, ws = x[order].double(), w[order].double()
    W = torch.zeros(K, dtype=torch.float64).index_add_(0, label, ws)
    S = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, label, ws.unsqueeze(1) * xs)
    mean = torch.zeros_like(S).index_add_(0, label, xs) / counts.unsqueeze(1)
    centre = torch.where((W > 0).unsqueeze(1), S / W.clamp_min(1e-300).unsqueeze(1), mean)
    dist = (xs - centre[label]).norm(dim=1)
    radius = torch.zeros(K, dtype=torch.float64).scatter_reduce_(0, label, dist, "amax", include_self=True)
    return _Clusters(order, starts, label, centre, radius * (1 + 1e-7), W)


#: the default grid: cells of side 0.6 sqrt(eps), enlarged until the clouds' occupied cells hold at
#: least this many points on average and number at most _MAX_CLUSTERS (the coarse problem is dense)
_MIN_POINTS, _MAX_CLUSTERS = 16, 8192


def default_cluster_size(x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """The default cell side: ``0.6 sqrt(eps)`` (below the kernel's width, so that the coarse solution
    extrapolates well), enlarged by factors 1.25 until each cloud has at most ``min(n / 16, 8192)``
    occupied cells (per-cluster overhead, and the dense coarse problem)."""
    lo = torch.minimum(x.amin(0), y.amin(0))
    span = float((torch.maximum(x.amax(0), y.amax(0)) - lo).max().clamp_min(1e-12))
    h = 0.6 * math.sqrt(eps)
    for _ in range(200):
        ok = all(_occupied(z, lo, h) <= min(z.shape[0] / _MIN_POINTS, _MAX_CLUSTERS) for z in (x, y))
        if ok or h >= span:
            break
        h *= 1.25
    return min(h, span * (1 + 1e-6))


def _occupied(x: torch.Tensor, origin: torch.Tensor, h: float) -> int:
    cell = torch.floor((x.double() - origin) / h).long()
    cell -= cell.amin(0)
    key = cell[:, 0]
    for k in range(1, x.shape[1]):
        key = key * (int(cell[:, k].max()) + 1) + cell[:, k]
    return int(torch.unique(key).numel())


# ------------------------------------------------------------------------------------------ kept blocks
def _reduced_bound(cx: _Clusters, cy: _Clusters, fmax: torch.Tensor, gmax: torch.Tensor, rows: slice):
    """``R_IJ = C_min(I, J) - max_I f - max_J g`` for the row clusters ``rows`` (float64)."""
    c = torch.cdist(cx.centre[rows], cy.centre)
    gap = (c - cx.radius[rows].unsqueeze(1) - cy.radius.unsqueeze(0)).clamp_min(0)
    return gap * gap - fmax[rows].unsqueeze(1) - gmax.unsqueeze(0)


def _cluster_max(pot: torch.Tensor, cl: _Clusters, w: torch.Tensor) -> torch.Tensor:
    """Largest potential per cluster over members of positive weight (-inf for an all-zero cluster:
    such points carry no mass in any plan)."""
    p = torch.where(w > 0, pot.double(), torch.tensor(-math.inf, dtype=torch.float64))
    out = torch.full((cl.K,), -math.inf, dtype=torch.float64)
    return out.scatter_reduce_(0, cl.label, p, "amax", include_self=True)


def _rows_chunk(Kx: int, Ky: int) -> int:
    return max(1, (1 << 22) // max(1, Ky))


@dataclass
class _Blocks:
    """Kept blocks, as per-row-cluster lists of column clusters (both in the sorted order)."""
    ptr: list[int]                 # (Kx + 1) offsets into the pair lists
    col: torch.Tensor              # (P,) column cluster of each kept pair
    n_entries: int                 # kept plan entries

    def pairs(self, I: int) -> torch.Tensor:
        return self.col[self.ptr[I]:self.ptr[I + 1]]


class _Relaxation:
    """The over-relaxation parameter of the fine iterations (Thibault, Chizat, Dossal, Papadakis 2017,
    "Overrelaxed Sinkhorn-Knopp algorithm for regularized optimal transport", arXiv 1711.01851;
    Lehmann, von Renesse, Sambale, Uschmajew 2021, "A note on overrelaxation in the Sinkhorn
    algorithm", arXiv 2012.12562): with ``lam`` the contraction rate of plain Sinkhorn near the solution,
    ``omega = 2 / (1 + sqrt(1 - lam))`` gives the rate ``omega - 1``, a square-root gain
    (``lam = 0.99``: 0.82 instead of 0.99).

    ``lam`` is the error ratio of plain iterations: after ``PLAIN`` of them at the start, and again after
    every ``EVERY`` relaxed ones (two plain iterations, the last ratio; the local rate grows as the
    iterates approach the solution, so ``lam`` only increases). A relaxed error above ``RISE`` times the
    best seen switches the relaxation off for good. It only changes the path: the stopping test and the
    certificate are on plain plans (exact rows)."""

    PLAIN, EVERY, RISE, OMEGA_MAX = 4, 20, 2.0, 1.95

    def __init__(self):
        self.omega, self.lam, self.prev, self.best = 1.0, 0.0, math.inf, math.inf
        self.plain, self.relaxed, self.off, self.need = 0, 0, False, self.PLAIN

    def update(self, err: float) -> None:
        ratio = err / self.prev if self.prev > 0 else 1.0
        self.prev = err
        if not self.off and self.omega != 1.0:
            self.relaxed += 1
            if err > self.RISE * self.best:
                self.omega, self.off = 1.0, True
            elif self.relaxed % self.EVERY == 0:
                self.omega, self.plain, self.need = 1.0, 0, 2
        elif not self.off:
            self.plain += 1
            if self.plain >= self.need:
                self.lam = max(self.lam, min(ratio, 0.9999))
                if self.lam > 0.3:
                    self.omega = min(self.OMEGA_MAX, 2.0 / (1.0 + math.sqrt(1.0 - self.lam)))
        self.best = min(self.best, err)


#: a stale row offset is used while the shifted row sums stay within e^(+-_OFFSET_RANGE) (float32 sums of
#: exponentials of entries up to ~_OFFSET_RANGE above the offset stay finite; entries far below it underflow
#: only where they are negligible next to the row's sum)
_OFFSET_RANGE = 30.0
_LN2 = math.log(2.0)

_TAU_STEP = 0.25      # resolution of the truncation threshold, in units of eps
_TAU_MAX = 200.0


def _threshold(cx: _Clusters, cy: _Clusters, fmax, gmax, eps: float, budget: float) -> float:
    """The smallest ``tau`` (on a grid of step 1/4) such that the blocks with ``R_IJ > eps tau`` carry at
    most ``budget`` in the bound: ``e^margin sum_{R_IJ > eps tau} A_I B_J exp(-R_IJ/eps) <= budget``."""
    nb = int(_TAU_MAX / _TAU_STEP) + 1
    hist = torch.zeros(nb + 1, dtype=torch.float64)
    step = _rows_chunk(cx.K, cy.K)
    for r0 in range(0, cx.K, step):
        sl = slice(r0, min(cx.K, r0 + step))
        R = torch.nan_to_num(_reduced_bound(cx, cy, fmax, gmax, sl), nan=math.inf) / eps
        w = cx.weight[sl].unsqueeze(1) * cy.weight.unsqueeze(0) * torch.exp(-R)
        # a block with R in (k step, (k+1) step] is dropped by every tau <= k step
        k = torch.ceil(R / _TAU_STEP).clamp(0, nb).long() - 1
        ok = (k >= 0) & (w > 0)
        hist.index_add_(0, k[ok], w[ok])
    tail = hist.flip(0).cumsum(0).flip(0)            # tail[k] = bound of dropping every R > k step
    fits = (tail[:nb] * math.exp(_MARGIN) <= budget).nonzero()
    return float(fits[0]) * _TAU_STEP if fits.numel() else _TAU_MAX


def _keep(cx: _Clusters, cy: _Clusters, fmax, gmax, thresh: float) -> tuple[_Blocks, _Blocks]:
    """Blocks with ``R_IJ <= thresh`` plus each row's and each column's smallest-R partner; returned as
    the row-wise list and the column-wise (transposed) list."""
    Kx, Ky = cx.K, cy.K
    keep_I, keep_J = [], []
    col_best = torch.full((Ky,), math.inf, dtype=torch.float64)
    col_arg = torch.zeros(Ky, dtype=torch.long)
    step = _rows_chunk(Kx, Ky)
    for r0 in range(0, Kx, step):
        sl = slice(r0, min(Kx, r0 + step))
        R = _reduced_bound(cx, cy, fmax, gmax, sl)
        R = torch.nan_to_num(R, nan=math.inf)
        k = R <= thresh
        k[torch.arange(R.shape[0]), R.argmin(1)] = True
        mn, am = R.min(0)
        better = mn < col_best
        col_best = torch.where(better, mn, col_best)
        col_arg = torch.where(better, am + r0, col_arg)
        I, J = k.nonzero(as_tuple=True)
        keep_I.append(I + r0)
        keep_J.append(J)
    I = torch.cat(keep_I + [col_arg])
    J = torch.cat(keep_J + [torch.arange(Ky)])
    key = torch.unique(I * Ky + J)
    I, J = key // Ky, key % Ky
    sx = (cx.starts[1:] - cx.starts[:-1])
    sy = (cy.starts[1:] - cy.starts[:-1])
    n_entries = int((sx[I] * sy[J]).sum())
    rows = _Blocks(_ptr(I, Kx), J, n_entries)
    order = torch.argsort(J * Kx + I)
    cols = _Blocks(_ptr(J[order], Ky), I[order], n_entries)
    return rows, cols


def _ptr(I: torch.Tensor, K: int) -> list[int]:
    p = torch.zeros(K + 1, dtype=torch.long)
    p[1:] = torch.bincount(I, minlength=K).cumsum(0)
    return p.tolist()


def _dropped_bound(cx, cy, fmax, gmax, blocks: _Blocks, eps: float) -> tuple[float, float]:
    """``(delta, min R over dropped blocks / eps)`` at the given cluster maxima (see the module docstring)."""
    Kx, Ky = cx.K, cy.K
    delta, rmin = 0.0, math.inf
    step = _rows_chunk(Kx, Ky)
    for r0 in range(0, Kx, step):
        r1 = min(Kx, r0 + step)
        R = _reduced_bound(cx, cy, fmax, gmax, slice(r0, r1))
        R = torch.nan_to_num(R, nan=math.inf)
        kept = torch.zeros_like(R, dtype=torch.bool)
        for I in range(r0, r1):
            kept[I - r0, blocks.pairs(I)] = True
        Rd = R.masked_fill(kept, math.inf)
        w = cx.weight[r0:r1].unsqueeze(1) * cy.weight.unsqueeze(0)
        delta += float((w * torch.exp(-Rd / eps)).sum())
        rmin = min(rmin, float(Rd.min()) / eps)
    return delta, rmin


def _ranges(cl: _Clusters, J: torch.Tensor) -> torch.Tensor:
    """Sorted-order indices of the members of clusters ``J`` (concatenated)."""
    s = cl.starts[J]
    c = cl.starts[J + 1] - s
    off = torch.repeat_interleave(s - (c.cumsum(0) - c), c)
    return off + torch.arange(off.numel())


# ---------------------------------------------------------------------------------------- fine sweeps
class _Pool:
    """The fine passes' parallelism: contiguous groups of row clusters (balanced by their kept entries)
    run on ``threads`` Python threads, torch's intra-op threads held at 1 meanwhile (a row cluster's
    blocks are small: an OpenMP region per op cost more than it saved, 2 threads ran slower than 1);
    each group returns its own column accumulators, summed here. The ops release the GIL."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.ex = None
        self.bounds: list[tuple[int, int]] = []

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            torch.set_num_threads(1)
            self.ex = ThreadPoolExecutor(self.threads, initializer=torch.set_num_threads, initargs=(1,))
        return self

    def __exit__(self, *exc):
        if self.ex is not None:
            self.ex.shutdown(wait=True)
            self.ex = None
        torch.set_num_threads(self.saved)
        return False

    def set_work(self, work: torch.Tensor) -> None:
        """``work[I]``: the entries of row cluster I's kept blocks; 4 groups per thread."""
        K = work.numel()
        G = min(K, 4 * self.threads) if self.ex is not None else 1
        cum = work.double().cumsum(0)
        cuts = torch.searchsorted(cum, cum[-1] * torch.arange(1, G, dtype=torch.float64) / G).tolist()
        edges = sorted(set([0] + [min(K, c + 1) for c in cuts] + [K]))
        self.bounds = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def sum(self, fn):
        if self.ex is None or len(self.bounds) < 2:
            parts = [fn(a, b) for a, b in self.bounds]
        else:
            parts = list(self.ex.map(lambda ab: fn(*ab), self.bounds))
        return sum(parts[1:], parts[0])


class _Sparse:
    """The block-sparse soft c-transforms of one problem (points sorted by cluster)."""

    def __init__(self, xs, ys, cx: _Clusters, cy: _Clusters, eps: float, block_elems: int, pool: _Pool):
        self.x, self.y, self.cx, self.cy, self.eps = xs, ys, cx, cy, eps
        self.pool = pool
        self.x2, self.y2 = (xs * xs).sum(1), (ys * ys).sum(1)
        # y with a column of ones: the GEMM then also subtracts a per-row offset (see sweep)
        self.y1 = torch.cat([ys, torch.ones_like(ys[:, :1])], 1)
        self.off: torch.Tensor | None = None     # each row's log-sum-exp at the last sweep
        self.block_elems = block_elems
        self.rows = self.cols = None
        self.idx_rows: list[torch.Tensor] = []

    def set_blocks(self, rows: _Blocks, cols: _Blocks) -> None:
        self.rows, self.cols = rows, cols
        # the gathered column indices of each row cluster, kept while the list stands (int32: these lists
        # are the solver's largest memory, 4 bytes per kept (row cluster, column point) pair)
        self.idx_rows = [_ranges(self.cy, rows.pairs(I)).int() for I in range(self.cx.K)]
        sizes = self.cx.starts[1:] - self.cx.starts[:-1]
        self.pool.set_work(sizes * torch.tensor([i.numel() for i in self.idx_rows]))
        self.idx_cols = None

    def _buffer(self) -> torch.Tensor:
        """The reused block buffer: a chunk holds at most max(block_elems, one row) entries."""
        k = max(self.x.shape[0], self.y.shape[0])
        return torch.empty(max(self.block_elems, k), dtype=self.x.dtype)

    def _chunks(self, cl: _Clusters, I: int, k: int):
        i0, i1 = int(cl.starts[I]), int(cl.starts[I + 1])
        r = max(1, self.block_elems // max(1, k))
        for a in range(i0, i1, r):
            yield a, min(i1, a + r)

    def softmin(self, transpose: bool, logw: torch.Tensor, pot: torch.Tensor) -> torch.Tensor:
        """``-eps log sum_{j kept} w_j exp((pot_j - C_ij)/eps)`` for each row i (of y if ``transpose``)."""
        eps = self.eps
        if transpose:
            if self.idx_cols is None:
                self.idx_cols = [_ranges(self.cx, self.cols.pairs(J)).int() for J in range(self.cy.K)]
            X, Y, X2, Y2, cl, idxs = self.y, self.x, self.y2, self.x2, self.cy, self.idx_cols
        else:
            X, Y, X2, Y2, cl, idxs = self.x, self.y, self.x2, self.y2, self.cx, self.idx_rows
        h = logw + (pot - Y2) / eps
        Xs = X * (2.0 / eps)
        out = torch.empty(X.shape[0], dtype=X.dtype)
        buf = self._buffer()
        for I in range(cl.K):
            idx = idxs[I]
            Yt = Y.index_select(0, idx).t()
            hI = h.index_select(0, idx)
            for a, b in self._chunks(cl, I, idx.numel()):
                blk = torch.addmm(hI, Xs[a:b], Yt, out=buf[:(b - a) * idx.numel()].view(b - a, -1))
                mx = torch.nan_to_num(blk.amax(1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)
                lse = _exp_shifted_(blk, mx).sum(1).log_() + mx.squeeze(1)
                out[a:b] = lse - X2[a:b] / eps
        return -eps * out

    def sweep(self, loga, logb, g, f=None, omega: float = 1.0):
        """One fused iteration over the kept blocks: ``s`` (the f-update) from g, then the next g from
        ``f_new`` by the column sums of the same exponentials (see :meth:`._kernel._Kernel.sweep`).

        With ``omega != 1`` (over-relaxation, Thibault et al.): ``f_new = f + omega (s - f)`` (row weights
        rescaled by ``exp((f_new - s)/eps)``) and the returned g is ``g + omega (T(f_new) - g)``.
        Returns ``(s, f_new, g_next, t_plain)``: ``t_plain`` is the g-update from ``s`` itself, whose
        gap to g is the column error of the plan with exact rows (``f = s``)."""
        eps = self.eps
        h = logb + g / eps
        hp = h - self.y2 / eps
        Xs = self.x * (2.0 / eps)
        n = self.x.shape[0]
        s = torch.empty(n, dtype=self.x.dtype)
        lse_all = torch.empty(n, dtype=self.x.dtype)
        relax = omega != 1.0 and f is not None
        M = float(loga.max())
        # the row offsets: the last sweep's row log-sum-exps, folded into the GEMM as a (d+1)-th
        # coordinate, so that the block needs no max pass and no subtraction; a chunk whose shifted row sums
        # leave [e^-_OFFSET_RANGE, e^_OFFSET_RANGE] (the potentials moved a lot) is redone with its own row
        # maxima. The exponentials are taken in base 2 (exp2 is about 3x faster than exp on CPU): the GEMM's
        # inputs carry the factor log2(e); the clamp keeps the arguments out of exp's slow underflow path
        off = self.off
        Xs2, hp2 = Xs * _LOG2E, hp * _LOG2E
        X1 = torch.cat([Xs2, (-_LOG2E * off).unsqueeze(1)], 1) if off is not None else None
        d = Xs.shape[1]

        def group(I0: int, I1: int) -> torch.Tensor:
            buf = self._buffer()
            S = torch.zeros(2 if relax else 1, self.y.shape[0], dtype=self.x.dtype)
            for I in range(I0, I1):
                idx = self.idx_rows[I]
                hI = hp2.index_select(0, idx)
                Yt = (self.y1 if X1 is not None else self.y).index_select(0, idx).t()
                for a, b in self._chunks(self.cx, I, idx.numel()):
                    out = buf[:(b - a) * idx.numel()].view(b - a, -1)
                    blk = lrs = None
                    if X1 is not None:
                        blk = torch.addmm(hI, X1[a:b], Yt, out=out).clamp_(min=_CLAMP2).exp2_()
                        lrs = blk.sum(1).log_()
                        if not bool((lrs.abs() <= _OFFSET_RANGE).all()):
                            blk = None
                    if blk is None:
                        blk = torch.addmm(hI, Xs2[a:b], Yt[:d], out=out)
                        mx = torch.nan_to_num(blk.amax(1, keepdim=True), nan=0.0, posinf=0.0, neginf=0.0)
                        blk.sub_(mx).clamp_(min=_CLAMP2).exp2_()
                        lrs = blk.sum(1).log_()
                        lse = lrs + mx.squeeze(1) * _LN2
                    else:
                        lse = lrs + off[a:b]
                    lse_all[a:b] = lse
                    sa = -eps * (lse - self.x2[a:b] / eps)
                    s[a:b] = sa
                    w = torch.exp(loga[a:b] - lrs - M)
                    if relax:     # the relaxed rows: exp((f_new - s)/eps) = exp((1 - omega)(f - s)/eps)
                        w = torch.stack([w, w * torch.exp((1.0 - omega) * (f[a:b] - sa) / eps)])
                        ws = w @ blk
                        # 1-D index_add_ each (with an int32 index a 2-D one is 40x slower, torch 2.13)
                        S[0].index_add_(0, idx, ws[0])
                        S[1].index_add_(0, idx, ws[1])
                    else:
                        S[0].index_add_(0, idx, w @ blk)
            return S

        S = self.pool.sum(group)
        self.off = lse_all
        f_new = s if not relax else f + omega * (s - f)
        if bool(((S < _FUSED_FLOOR) | ~torch.isfinite(S)).any()):
            t_plain = self.softmin(True, loga, s)
            t = self.softmin(True, loga, f_new) if relax else t_plain
        else:
            T = eps * (h - S.log() - M)
            t_plain, t = T[0], T[-1]
        return s, f_new, (t if not relax else g + omega * (t - g)), t_plain

    @torch.no_grad()
    def plan_sums(self, a, b, f, g, want_points: bool):
        """Over the kept blocks, with ``K_ij = exp((f_i + g_j - C_ij)/eps)``: ``sum_j b_j K_ij``,
        ``sum_i a_i K_ij``, and (``want_points``) ``sum_j P_ij y_j``, ``sum_i P_ij x_i`` (``P = a b K``)."""
        eps = self.eps
        n, m, d = self.x.shape[0], self.y.shape[0], self.x.shape[1]
        hx = (f - self.x2) * (_LOG2E / eps)       # base 2, as in sweep
        hy = (g - self.y2) * (_LOG2E / eps)
        Xs = self.x * (2.0 * _LOG2E / eps)
        ax = a.unsqueeze(1) * self.x
        rowK = torch.zeros(n, dtype=self.x.dtype)
        Py = torch.zeros(n, d, dtype=self.x.dtype) if want_points else None

        def group(I0: int, I1: int) -> torch.Tensor:
            # the column accumulators of this group: colK, then Px's d columns
            acc = torch.zeros(1 + (d if want_points else 0), m, dtype=self.x.dtype)
            for I in range(I0, I1):
                idx = self.idx_rows[I]
                Yg = self.y.index_select(0, idx)
                hI = hy.index_select(0, idx)
                bI = b.index_select(0, idx)
                for i0, i1 in self._chunks(self.cx, I, idx.numel()):
                    K = torch.addmm(hI, Xs[i0:i1], Yg.t()).add_(hx[i0:i1].unsqueeze(1)).clamp_(max=-_CLAMP2).exp2_()
                    acc[0].index_add_(0, idx, a[i0:i1] @ K)
                    if want_points:
                        px = ax[i0:i1].t() @ K
                        for k in range(d):     # 1-D index_add_ (see sweep)
                            acc[1 + k].index_add_(0, idx, px[k])
                    K.mul_(bI)
                    rowK[i0:i1] = K.sum(1)
                    if want_points:
                        Py[i0:i1] = a[i0:i1].unsqueeze(1) * (K @ Yg)
            return acc

        acc = self.pool.sum(group)
        colK = acc[0]
        Px = acc[1:].t().contiguous() if want_points else None
        if want_points:
            Px.mul_(b.unsqueeze(1))
        return rowK, colK, Py, Px


# ------------------------------------------------------------------------------------------------ solve
class _Envelope(torch.autograd.Function):
    """The value with the envelope-theorem gradients of the truncated plan (see the module docstring)."""

    @staticmethod
    def forward(ctx, value, grads, x, y, a, b):  # noqa: D401
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, go):
        gx, gy, ga, gb = ctx.grads
        go = go.reshape(-1)
        B = go.shape[0]

        def scale(t):
            return None if t is None else t * go.view(B, *([1] * (t.dim() - 1))).to(t.dtype)

        need = ctx.needs_input_grad
        return (None, None, scale(gx) if need[2] else None, scale(gy) if need[3] else None,
                scale(ga) if need[4] else None, scale(gb) if need[5] else None)


@torch.no_grad()
def _one(x, y, a, b, eps: float, tol: float, max_iter: int, scaling, tau, truncation, cluster_size,
         block_elems: int, want_points: bool):
    """One problem, unbatched: ``x (n, d)``, ``y (m, d)`` (centred), ``a (n,)``, ``b (m,)``."""
    dtype = x.dtype
    u = torch.finfo(dtype).eps
    r2 = max(float((x * x).sum(1).max()), float((y * y).sum(1).max()))
    # the GEMM expansion of ||x - y||^2 loses about 8 u max||x||^2: compute in float64 where that exceeds 1e-3 eps
    work = torch.float64 if 8 * u * r2 > 1e-3 * eps else dtype
    h = float(cluster_size) if cluster_size is not None else default_cluster_size(x, y, eps)
    origin = torch.minimum(x.amin(0), y.amin(0)).double()
    cx, cy = _grid_clusters(x, a, origin, h), _grid_clusters(y, b, origin, h)
    xs, ys = x[cx.order].to(work), y[cy.order].to(work)
    a_s, b_s = a[cx.order].to(work), b[cy.order].to(work)
    loga, logb = a_s.log(), b_s.log()

    # coarse: dense log-domain Sinkhorn with epsilon-scaling between the cluster measures
    A, Bw = cx.weight.to(work), cy.weight.to(work)
    cc = Cost(cx.centre.to(work)[None], cy.centre.to(work)[None], p=2.0)
    kern = _Kernel(cc, online=cx.K * cy.K > (1 << 26), block_elems=block_elems)
    e_t = _as_eps(eps, 1, work, x.device)
    coarse = _sinkhorn(kern, A.log()[None], Bw.log()[None], e_t, None, tol, max_iter,
                       0.5 if scaling is None else scaling)
    # extrapolation: one soft c-transform from the coarse potentials to the points
    kx = _Kernel(Cost(xs[None], cy.centre.to(work)[None], p=2.0), online=True, block_elems=block_elems)
    ky = _Kernel(Cost(ys[None], cx.centre.to(work)[None], p=2.0), online=True, block_elems=block_elems)
    f = kx.softmin_rows(Bw.log()[None], coarse.g, e_t)[0]
    g = ky.softmin_rows(A.log()[None], coarse.f, e_t)[0]

    with _Pool(torch.get_num_threads()) as pool:
        sp = _Sparse(xs, ys, cx, cy, eps, block_elems, pool)
        iters = 0     # fine iterations only (the coarse ones are on K x K problems)
        builds = 0
        err = math.inf
        s = f
        mass_ab = float(a.sum() * b.sum())
        budget = (0.1 * tol if truncation is None else truncation) * mass_ab
        # the fine iterations aim below tol by the room the certificate needs: the reported error is the
        # truncated plan's column error + 2 delta, with delta <= budget (or <= exp(-tau) |a||b|)
        room = 2 * (budget if tau is None else math.exp(-tau) * mass_ab)
        target = max(0.5 * tol, tol - room)
        relax = _Relaxation()
        while True:
            fmax, gmax = _cluster_max(f, cx, a_s), _cluster_max(g, cy, b_s)
            tau_k = tau + _MARGIN if tau is not None else _threshold(cx, cy, fmax, gmax, eps, budget)
            rows, cols = _keep(cx, cy, fmax, gmax, eps * tau_k)
            sp.set_blocks(rows, cols)
            builds += 1
            last = (f, g)
            while iters < max_iter:
                s, f_next, g_next, t = sp.sweep(loga, logb, g, f, relax.omega)
                err = float((b_s * (1 - torch.exp((g - t) / eps)).abs()).sum())
                iters += 1
                last = (s, g)      # the plan with exact rows whose column error is err
                if err < target:
                    break
                relax.update(err)
                f, g = f_next, g_next
            f, g = last
            fmax, gmax = _cluster_max(f, cx, a_s), _cluster_max(g, cy, b_s)
            delta, rmin = _dropped_bound(cx, cy, fmax, gmax, rows, eps)
            holds = rmin >= tau if tau is not None else delta <= budget
            if holds or iters >= max_iter or builds >= 20:
                break
        rowK, colK, Py, Px = sp.plan_sums(a_s, b_s, f, g, want_points)
    mass = float((a_s * rowK).sum())
    coupling = -eps * (mass - float(a.sum() * b.sum()))
    # envelope gradients of the coupling term (the marginal terms <a, f> + <b, g> are differentiated
    # by autograd), as result._Coupling computes them on the full plan
    ga = -eps * (rowK - float(b.sum()))
    gb = -eps * (colK - float(a.sum()))
    gx = gy = None
    if want_points:
        gx = 2 * ((a_s * rowK).unsqueeze(1) * xs - Py)
        gy = 2 * ((b_s * colK).unsqueeze(1) * ys - Px)
    inv_x, inv_y = torch.argsort(cx.order), torch.argsort(cy.order)

    def back(t, inv):
        return None if t is None else t[inv].to(dtype)

    kept = rows.n_entries / (x.shape[0] * y.shape[0])
    return dict(tau=rmin, coupling=coupling, f=back(f, inv_x), g=back(g, inv_y), iters=iters, err=err, delta=delta,
                kept=kept, clusters=(cx.K, cy.K), builds=builds, gx=back(gx, inv_x), gy=back(gy, inv_y),
                ga=back(ga, inv_x), gb=back(gb, inv_y))


def check_multiscale(x: torch.Tensor, p: float, cost, rho, differentiate) -> None:
    """What method='multiscale' needs (raised as LossInputError naming the argument)."""
    if x.shape[-1] > MAX_DIM:
        raise fail("x", f"points of dimension <= {MAX_DIM} with method='multiscale' (a grid of clusters "
                   "localises the kernel only in low dimension)", f"dimension {x.shape[-1]}")
    if cost is not None:
        raise fail("cost", "None with method='multiscale' (the squared Euclidean cost only)", "a callable")
    if p != 2:
        raise fail("p", "2 with method='multiscale' (the squared Euclidean cost only)", repr(p))
    if rho is not None:
        raise fail("rho", "None with method='multiscale' (balanced problems only)", repr(rho))
    if differentiate != "envelope":
        raise fail("differentiate", "'envelope' with method='multiscale'", repr(differentiate))


@eager
def _solve_multiscale(x, y, a, b, *, eps, tol, max_iter, scaling, tau=None, truncation=None, cluster_size=None,
                      block_elems=BLOCK_ELEMS) -> MultiscaleResult:
    """On validated batched inputs ``x (B, n, d)``, ``y (B, m, d)``, ``a (B, n)``, ``b (B, m)``."""
    B = x.shape[0]
    eps_t = _as_eps(eps, B, x.dtype, x.device)
    centre = 0.5 * (x.detach().mean(1, keepdim=True) + y.detach().mean(1, keepdim=True))
    xc, yc = (x - centre).detach(), (y - centre).detach()
    want = x.requires_grad or y.requires_grad
    outs = [_one(xc[k], yc[k], a[k].detach(), b[k].detach(), float(eps_t[k]), tol, max_iter, scaling, tau, truncation,
                 cluster_size, block_elems, want) for k in range(B)]
    coupling = torch.tensor([o["coupling"] for o in outs], dtype=x.dtype)
    f = torch.stack([o["f"] for o in outs])
    g = torch.stack([o["g"] for o in outs])
    err = torch.tensor([o["err"] for o in outs], dtype=x.dtype)
    delta = torch.tensor([o["delta"] for o in outs], dtype=torch.float64)
    total = err.double() + 2 * delta
    gx = torch.stack([o["gx"] for o in outs]) if want else None
    gy = torch.stack([o["gy"] for o in outs]) if want else None
    ga = torch.stack([o["ga"] for o in outs])
    gb = torch.stack([o["gb"] for o in outs])
    coupling = _Envelope.apply(coupling, (gx, gy, ga, gb), x, y, a, b)
    value = (a * f).sum(1) + (b * g).sum(1) + coupling
    return MultiscaleResult(
        value, f, g, eps_t, torch.tensor([o["iters"] for o in outs]), total.to(x.dtype), total < tol,
        Cost(xc, yc, p=2.0), a.detach(), b.detach(), None, block_elems, y.detach(),
        dropped_mass_bound=delta, truncated_error=err,
        kept_fraction=torch.tensor([o["kept"] for o in outs], dtype=torch.float64),
        n_clusters=torch.tensor([o["clusters"] for o in outs]),
        n_rebuilds=torch.tensor([o["builds"] for o in outs]),
        tau=torch.tensor([o["tau"] for o in outs], dtype=torch.float64))


def solve_multiscale(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None,
                     b: torch.Tensor | None = None, *, eps: float | torch.Tensor = 0.05, tol: float = 1e-3,
                     max_iter: int = 2000, scaling: float | None = 0.5, truncation: float | None = None,
                     tau: float | None = None, cluster_size: float | None = None,
                     block_elems: int = BLOCK_ELEMS) -> MultiscaleResult:
    """Multiscale truncated Sinkhorn (see the module docstring): ``solve(x, y, method='multiscale')`` with
    its own options.

    ``truncation`` (default ``tol / 10``): the budget for the dropped mass, relative to ``|a||b|``: each
    kept list drops the blocks of largest ``R_IJ`` whose bound fits in the budget (with a factor ``e``
    to spare), i.e. keeps ``R_IJ <= eps tau`` with that list's ``tau``; the solve ends only when the bound
    at the returned potentials, ``result.dropped_mass_bound``, is within the budget. ``tau``: a fixed
    rule instead (keep ``R_IJ <= eps (tau + 1)`` when building; end when every dropped block has
    ``R_IJ >= eps tau``, so the dropped mass is at most ``exp(-tau) |a||b|``). ``cluster_size``: the
    grid's cell side (default :func:`default_cluster_size`); ``scaling``: the coarse solve's
    epsilon-scaling factor (the fine iterations run at the target eps, warm-started)."""
    from . import _domains as D
    from . import _validate as V

    x, y, a, b = V.samples(x, y, a, b, balanced=True)
    for name, value in (("eps", eps), ("tol", tol), ("max_iter", max_iter), ("scaling", scaling)):
        D.check(name, value)
    check_multiscale(x, 2.0, None, None, "envelope")
    V.cost_range(x, y, 2.0)
    for name, value in (("truncation", truncation), ("tau", tau), ("cluster_size", cluster_size)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value > 0):
            raise fail(name, "None or a positive finite number", repr(value))
    return _solve_multiscale(x, y, a, b, eps=eps, tol=tol, max_iter=max_iter, scaling=scaling, tau=tau,
                             truncation=truncation, cluster_size=cluster_size, block_elems=block_elems)
