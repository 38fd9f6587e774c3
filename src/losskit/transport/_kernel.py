"""The soft c-transform kernel of the Sinkhorn solver: blocked, fused log-sum-exp sweeps over a cost.

One iteration is one fused pass over C (:meth:`_Kernel.sweep`): the row pass computes
``E_ij = exp((g_j - C_ij)/eps + log b_j - max_j(...))`` block by block (the log-sum-exp gives f), and the
same block, still in cache, gives the column sums for the next g as a matrix-vector product ``E^T w``.
Exponent arguments are clamped at :data:`CLAMP` after subtracting the maximum. The matrix is kept
(``online=False``) or its row blocks are recomputed from the points every pass (``online=True``), one block
of ``block_elems`` entries at a time. See :mod:`.sinkhorn` for the whole algorithm.
"""

from __future__ import annotations

import math

import torch

from ..ops.budget import SWEEP_BLOCK_ELEMS
from .costs import Cost

__all__ = ["CLAMP", "BLOCK_ELEMS", "_Kernel", "_block_rows"]

CLAMP = -80.0
_FUSED_FLOOR = math.exp(-30.0)
# Entries per row block of a sweep (the reused exp buffer: 2 MiB of float32, cache-sized): see
# losskit.ops.budget (SWEEP_BLOCK_ELEMS, half of the memory-bound passes' BLOCK_ELEMS).
BLOCK_ELEMS = SWEEP_BLOCK_ELEMS


def _block_rows(B: int, m: int, n: int, block_elems: int) -> int:
    return max(1, min(n, block_elems // max(1, B * m)))


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    """``t`` with -inf, inf and NaN replaced by 0 (one op: this runs several times per iteration)."""
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


_LOG2E = 1.0 / math.log(2.0)
_CLAMP2 = CLAMP * _LOG2E      # exp2(_CLAMP2) = exp(CLAMP)


def _exp_shifted_(b: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """``exp(max(b - mx, CLAMP))`` in place, as ``exp2`` of the argument times log2(e): on CPU exp2 is
    about 3x faster than exp (float32, AVX-512: 0.29 vs 0.83 ns per entry), for one more cheap pass; the
    clamp keeps the arguments out of exp's slow underflow path (10-30 ns per entry below -87)."""
    return b.sub_(mx).mul_(_LOG2E).clamp_(min=_CLAMP2).exp2_()


def _lse_rows_(buf: torch.Tensor) -> torch.Tensor:
    """In-place log-sum-exp over the last dim of ``buf`` (destroys it)."""
    mx = buf.amax(-1, keepdim=True)
    mx = _finite_or_zero(mx)
    _exp_shifted_(buf, mx)
    return buf.sum(-1).log_().add_(mx.squeeze(-1))


class _Kernel:
    """Soft c-transforms of one problem, with a reused block buffer."""

    def __init__(self, cost: Cost, online: bool, block_elems: int):
        self.cost = cost
        self.B, self.n, self.m = cost.B, cost.n, cost.m
        self.online = online
        self.block_elems = block_elems
        ref = cost.matrix if cost.is_matrix else cost.x
        self.dtype, self.device = ref.dtype, ref.device
        self.C = None
        if cost.is_matrix:
            self.C = cost.matrix.detach()
        elif not online:
            self.C = self._materialise()
        self.tcost = cost.transpose() if self.C is None else None

    def _materialise(self) -> torch.Tensor:
        C = torch.empty(self.B, self.n, self.m, dtype=self.dtype, device=self.device)
        r = _block_rows(self.B, self.m, self.n, 4 * self.block_elems)
        for i0 in range(0, self.n, r):
            C[:, i0:i0 + r] = self.cost.rows(i0, min(self.n, i0 + r), differentiable=False)
        return C

    def _buf(self, rows: int, cols: int) -> torch.Tensor:
        return torch.empty(self.B, rows, cols, dtype=self.dtype, device=self.device)

    def _row_blocks(self, cost: Cost, C: torch.Tensor | None, h: torch.Tensor, eps: torch.Tensor):
        """Yield ``(i0, i1, block, r)`` with ``block[:, k, j] = h_j - C_{i0+k, j} / eps + r_k`` for row blocks of
        ``cost`` (or of the stored matrix ``C``), written into one reused buffer. ``r`` is a known row
        offset (``||x_i||^2 / eps`` on the squared Euclidean GEMM path, else None): the block is then one
        batched GEMM ``(2/eps) <x_i, y_j> + (h_j - ||y_j||^2/eps)``."""
        B, n, m = cost.B, cost.n, cost.m
        r = _block_rows(B, m, n, self.block_elems)
        buf = self._buf(r, m)
        e1, e3 = eps.view(B, 1), eps.view(B, 1, 1)
        if C is None and cost.sq_euclidean:
            x2, y2 = cost.sq_norms()
            x2 = x2 / e1
            hp = (h - y2 / e1).unsqueeze(1)
            xs = cost.x * (2.0 / e3)
            yt = cost.y.transpose(1, 2)
            for i0 in range(0, n, r):
                i1 = min(n, i0 + r)
                b = buf[:, : i1 - i0]
                torch.baddbmm(hp, xs[:, i0:i1], yt, out=b)
                yield i0, i1, b, x2[:, i0:i1]
            return
        h = h.unsqueeze(1)
        for i0 in range(0, n, r):
            i1 = min(n, i0 + r)
            b = buf[:, : i1 - i0]
            blk = C[:, i0:i1] if C is not None else cost.rows(i0, i1, differentiable=False)
            torch.addcdiv(h, blk, e3, value=-1.0, out=b)
            yield i0, i1, b, None

    def _softmin(self, cost: Cost, C: torch.Tensor | None, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``s_i = -eps log sum_j exp(h_j - C_ij / eps)`` over the rows of ``cost``, shape (B, n)."""
        out = torch.empty(cost.B, cost.n, dtype=self.dtype, device=self.device)
        for i0, i1, b, r in self._row_blocks(cost, C, h, eps):
            out[:, i0:i1] = _lse_rows_(b) if r is None else _lse_rows_(b) - r
        return -eps.view(-1, 1) * out

    def softmin_rows(self, logb: torch.Tensor, g: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``-eps log sum_j b_j exp((g_j - C_ij)/eps)``, shape (B, n)."""
        return self._softmin(self.cost, self.C, logb + g / eps.view(-1, 1), eps)

    def sweep(self, loga: torch.Tensor, logb: torch.Tensor, g: torch.Tensor, eps: torch.Tensor,
              lam) -> tuple[torch.Tensor, torch.Tensor]:
        """One fused Sinkhorn iteration, one pass over C: the row soft-min ``s`` (``f = lam s``) from g,
        then the column soft-min ``t = -eps log sum_i a_i exp((f_i - C_ij)/eps)`` from that new f.

        The row pass leaves ``E_ij = exp(h_j - C_ij/eps + r_i - mx_i)`` (clamped at exp(-80)) in the
        block buffer, ``h = log b + g/eps``, ``mx_i`` the row maximum. Since
        ``a_i exp((f_i - C_ij)/eps) = w_i E_ij exp(-h_j)`` with ``log w_i = log a_i + f_i/eps - r_i + mx_i``,
        the column sums are the matrix-vector product ``E^T w``: n m exponentials per iteration instead
        of 2 n m, and C is read once. ``w`` is kept normalised by a running maximum. The row-relative
        clamp floor contributes at most ``n exp(-80)`` to a (normalised) column sum; a column whose sum
        falls below ``exp(-30)`` (a column far from every row's mass, early in a solve, or a zero
        target weight) would lose accuracy, so the exact column pass is run instead for that iteration.
        """
        B = self.B
        e1 = eps.view(B, 1)
        h = logb + g / e1
        s = torch.empty(B, self.n, dtype=self.dtype, device=self.device)
        S = torch.zeros(B, 1, self.m, dtype=self.dtype, device=self.device)
        M = torch.full((B, 1), -math.inf, dtype=self.dtype, device=self.device)
        balanced = not isinstance(lam, torch.Tensor) and lam == 1.0
        for i0, i1, b, r in self._row_blocks(self.cost, self.C, h, eps):
            mx = _finite_or_zero(b.amax(-1, keepdim=True))
            _exp_shifted_(b, mx)
            mx = mx.squeeze(-1)
            lrs = b.sum(-1).log_()                                   # log of the shifted row sum
            lse = lrs + mx if r is None else lrs + (mx - r)
            si = -e1 * lse
            s[:, i0:i1] = si
            if balanced:                                             # f/eps + mx - r = -lrs
                logw = loga[:, i0:i1] - lrs
            else:
                logw = loga[:, i0:i1] + (lam * si) / e1 + mx - (0.0 if r is None else r)
            newM = _finite_or_zero(torch.maximum(M, logw.amax(-1, keepdim=True)))
            if i0 > 0:
                S.mul_(torch.exp(M - newM).unsqueeze(-1))
            S.baddbmm_(torch.exp(logw - newM).unsqueeze(1), b)
            M = newM
        S = S.squeeze(1)
        if bool((S < _FUSED_FLOOR).any()):
            return s, self.softmin_cols(loga, lam * s, eps)
        return s, e1 * (h - S.log() - M)

    def softmin_cols(self, loga: torch.Tensor, f: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``-eps log sum_i a_i exp((f_i - C_ij)/eps)``, shape (B, m)."""
        h = loga + f / eps.view(-1, 1)
        if self.C is None:
            return self._softmin(self.tcost, None, h, eps)
        B, n, m = self.B, self.n, self.m
        r = _block_rows(B, m, n, self.block_elems)
        buf = self._buf(r, m)
        e3 = eps.view(B, 1, 1)
        M = torch.full((B, 1, m), -math.inf, dtype=self.dtype, device=self.device)
        S = torch.zeros(B, 1, m, dtype=self.dtype, device=self.device)
        h = h.unsqueeze(-1)
        for i0 in range(0, n, r):
            i1 = min(n, i0 + r)
            b = buf[:, : i1 - i0]
            torch.addcdiv(h[:, i0:i1], self.C[:, i0:i1], e3, value=-1.0, out=b)
            newM = torch.maximum(M, b.amax(1, keepdim=True))
            newM = _finite_or_zero(newM)
            S.mul_(torch.exp(M - newM))
            _exp_shifted_(b, newM)
            S.add_(b.sum(1, keepdim=True))
            M = newM
        return -eps.view(B, 1) * (S.log() + M).squeeze(1)
