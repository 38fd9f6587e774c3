"""Entropic optimal transport: the solver every transport objective rests on.

One abstraction: a batched problem (cost ``C (B, n, m)`` from :class:`~.costs.Cost`, weights ``a``, ``b``,
regularisation ``eps``, optional KL marginal relaxation ``rho``) is solved for its dual potentials ``f``,
``g`` by log-domain Sinkhorn with epsilon-scaling, and returned as an :class:`OTResult` (value,
potentials, achieved marginal error, iteration count, lazy plan and barycentric projection).

Solver (no autograd). With ``lambda = rho / (rho + eps)`` (``lambda = 1`` balanced), the soft c-transforms

    f_i = lambda * (-eps log sum_j b_j exp((g_j - C_ij) / eps))
    g_j = lambda * (-eps log sum_i a_i exp((f_i - C_ij) / eps))

alternate. One iteration is one fused pass over C (``_Kernel.sweep``): the row pass computes
``E_ij = exp((g_j - C_ij)/eps + log b_j - max_j(...))`` block by block (the log-sum-exp gives f), and
the same block, still in cache, gives the column sums for the next g as a matrix-vector product
``E^T w`` (``w_i = a_i exp(f_i/eps + row max)``): n m exponentials and one read of C per iteration, not
2 n m and two. A column whose sum underflows this row-relative scale falls back to an exact column
log-sum-exp pass. The returned potentials are ``(f, g)`` with f updated last, so the plan has exact
row marginals (balanced case). Exponent arguments are clamped at -80 after subtracting the maximum (a
term below exp(-80) = 2e-35 of the largest is irrelevant, and float32 ``exp`` is 10-15x slower below
-87). For points with the squared Euclidean cost, ``(g_j - C_ij)/eps`` is one batched GEMM:
``(2/eps) <x_i, y_j> + (g_j - |y_j|^2)/eps`` minus a row constant.

Memory: the matrix is kept when ``B n m`` entries fit under ``dense_bytes`` (default 2 GiB) (except
for the squared Euclidean cost with d <= 16, where one GEMM per block is faster than reading the block
back); otherwise the "online" path recomputes cost blocks from the points every pass and holds
O(B (n + m)) plus one block of ``block_elems`` entries. ``online=True/False`` forces a path.

Stopping: each sweep gives, for free, the L1 column-marginal error ``sum_j b_j |1 - exp((g_j - g_j^new)/eps)|``
of the plan ``(f, g)`` (whose rows are exact after the f-update). The loop stops per problem once that
error is below ``tol`` at the target eps; a converged problem is frozen, so a problem's result does not
depend on the rest of the batch. For unbalanced problems the same quantity is the fixed-point residual.

Value and gradient. The value is the dual objective at the potentials,

    OT_eps = <a, phi(f)> + <b, phi(g)> - eps (sum_ij a_i b_j exp((f_i + g_j - C_ij)/eps) - |a||b|),
    phi(f) = f (balanced) or -rho (exp(-f/rho) - 1) (unbalanced),

which at the optimum equals the primal ``min_P <P, C> + eps KL(P | a (x) b) (+ rho KL marginal terms)``.
Gradients use the envelope theorem (the potentials are treated as constants): ``dOT/dC_ij = P_ij``, so
``grad_x = sum_j P_ij grad_x c(x_i, y_j)``, computed block by block in the backward pass (O(n + m)
memory on the online path); ``grad_a = phi'(...)`` terms come from the formula. ``differentiate='unroll'``
instead back-propagates through every iteration (dense only; memory grows with the iteration count).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..ops.budget import DENSE_BYTES
from .costs import Cost

__all__ = ["OTResult", "solve", "solve_matrix"]

CLAMP = -80.0
_FUSED_FLOOR = math.exp(-30.0)
BLOCK_ELEMS = 1 << 19


def _block_rows(B: int, m: int, n: int, block_elems: int) -> int:
    return max(1, min(n, block_elems // max(1, B * m)))


def _finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    """``t`` with -inf, inf and NaN replaced by 0 (one op: this runs several times per iteration)."""
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


def _lse_rows_(buf: torch.Tensor) -> torch.Tensor:
    """In-place log-sum-exp over the last dim of ``buf`` (destroys it)."""
    mx = buf.amax(-1, keepdim=True)
    mx = _finite_or_zero(mx)
    buf.sub_(mx).clamp_(min=CLAMP).exp_()
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
            b.sub_(mx).clamp_(min=CLAMP).exp_()
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
            b.sub_(newM).clamp_(min=CLAMP).exp_()
            S.add_(b.sum(1, keepdim=True))
            M = newM
        return -eps.view(B, 1) * (S.log() + M).squeeze(1)


@dataclass
class _Solution:
    f: torch.Tensor
    g: torch.Tensor
    s: torch.Tensor          # the last row soft-min (f = lambda * s)
    eps: torch.Tensor        # (B,)
    n_iter: torch.Tensor     # (B,) int
    error: torch.Tensor      # (B,) last measured marginal error / residual
    converged: torch.Tensor  # (B,) bool


def _as_eps(eps, B, dtype, device) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=dtype, device=device)
    return e.expand(B).clone() if e.dim() == 0 else e.reshape(B).clone()


@torch.no_grad()
def _sinkhorn(kernel: _Kernel, loga, logb, eps, rho, tol, max_iter, scaling) -> _Solution:
    B, n, m = kernel.B, kernel.n, kernel.m
    dtype, device = kernel.dtype, kernel.device
    eps_t = _as_eps(eps, B, dtype, device)
    b = logb.exp()
    if scaling is not None:
        eps0 = torch.maximum(kernel.cost.diameter().to(dtype), eps_t)
    f = torch.zeros(B, n, dtype=dtype, device=device)
    g = torch.zeros(B, m, dtype=dtype, device=device)
    s = f.clone()
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n_iter = torch.zeros(B, dtype=torch.long, device=device)
    err = torch.full((B,), math.inf, dtype=dtype, device=device)
    k = 0
    annealing = scaling is not None
    eps_k, at_target = eps_t, torch.ones(B, dtype=torch.bool, device=device)
    lam = 1.0
    any_done = False
    while True:
        if annealing:
            eps_k = torch.maximum(eps_t, eps0 * scaling ** k)
            at_target = eps_k <= eps_t
            annealing = not bool(at_target.all())   # from here on eps_k = eps_t: stop recomputing
        if rho is not None:
            lam = rho / (rho + eps_k.view(B, 1))
        s_new, t_new = kernel.sweep(loga, logb, g, eps_k, lam)
        g_new = t_new if rho is None else lam * t_new
        e = (b * (1 - torch.exp((g - g_new) / eps_k.view(B, 1))).abs()).sum(1)
        f_new = s_new if rho is None else lam * s_new
        if any_done:                     # converged problems are frozen
            active = ~done
            f = torch.where(active.view(B, 1), f_new, f)
            s = torch.where(active.view(B, 1), s_new, s)
            err = torch.where(active, e, err)
            n_iter += active.long()
        else:
            f, s, err = f_new, s_new, e
            n_iter += 1
        k += 1
        done = done | (at_target & (err < tol))
        # (f, g) with f just updated has exact row marginals; e is its column error. A problem that
        # converges keeps that g (the returned plan's rows are exact), the others move on to g_new.
        if bool(done.all()):
            break
        any_done = B > 1 and bool(done.any())
        g = torch.where(done.view(B, 1), g, g_new) if any_done else g_new
        if k >= max_iter:
            break
    return _Solution(f, g, s, eps_t, n_iter, err, done)


@torch.no_grad()
def _sinkhorn_symmetric(kernel: _Kernel, loga, eps, rho, tol, max_iter, scaling) -> _Solution:
    """OT_eps(a, a) on a symmetric cost: one potential, averaged updates f <- (f + lambda T(f)) / 2."""
    B, n = kernel.B, kernel.n
    dtype, device = kernel.dtype, kernel.device
    eps_t = _as_eps(eps, B, dtype, device)
    a = loga.exp()
    if scaling is not None:
        eps0 = torch.maximum(kernel.cost.diameter().to(dtype), eps_t)
    f = torch.zeros(B, n, dtype=dtype, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n_iter = torch.zeros(B, dtype=torch.long, device=device)
    err = torch.full((B,), math.inf, dtype=dtype, device=device)
    k = 0
    while True:
        eps_k = eps_t if scaling is None else torch.maximum(eps_t, eps0 * scaling ** k)
        at_target = eps_k <= eps_t
        lam = 1.0 if rho is None else rho / (rho + eps_k.view(B, 1))
        s = kernel.softmin_rows(loga, f, eps_k)
        e = (a * (1 - torch.exp((f - lam * s) / eps_k.view(B, 1))).abs()).sum(1)
        active = ~done
        f = torch.where(active.view(B, 1), 0.5 * (f + lam * s), f)
        err = torch.where(active, e, err)
        n_iter += active.long()
        k += 1
        done = done | (at_target & (err < tol))
        if bool(done.all()) or k >= max_iter:
            break
    s = kernel.softmin_rows(loga, f, eps_t)
    return _Solution(f, f, s, eps_t, n_iter, err, done)


AUTO_SINKHORN_ITERS = 2000       # method='auto': Sinkhorn iterations before a stalled problem goes to Newton
AUTO_NEWTON_ENTRIES = 1 << 20    # ... if its dense n x m float64 matrix has at most this many entries


def _sinkhorn_newton(kernel: _Kernel, loga, logb, eps_t, tol, max_iter, scaling, warm_tol: float = 1e-2,
                     sparsity: float = 1e-6, warm_iter: int | None = None) -> _Solution:
    """Sinkhorn down to ``warm_tol`` (at most ``warm_iter`` iterations), then sparse Newton steps for
    each problem not yet within ``tol`` (see :mod:`.newton`); the dense cost of a problem is read from
    the stored matrix or recomputed from the points."""
    from .newton import newton_refine

    warm = _sinkhorn(kernel, loga, logb, eps_t, None, max(tol, warm_tol), warm_iter or max_iter, scaling)
    f, g = warm.f.clone(), warm.g.clone()
    n_iter, err = warm.n_iter.clone(), warm.error.clone()
    for k in range(kernel.B):
        if bool(warm.converged[k]) and float(warm.error[k]) < tol:
            continue
        Ck = kernel.C[k] if kernel.C is not None else kernel.cost.rows(0, kernel.n, differentiable=False)[k]
        fk, gk, steps, e = newton_refine(Ck.double(), loga[k].double(), logb[k].double(),
                                         float(eps_t[k]), f[k].double(), g[k].double(), tol,
                                         max(1, max_iter - int(n_iter[k])), sparsity)
        f[k], g[k] = fk.to(f.dtype), gk.to(g.dtype)
        n_iter[k] += steps
        err[k] = e
    # the Newton phase ends with a row update, so s = f (balanced)
    s = torch.where((n_iter > warm.n_iter).view(-1, 1), f, warm.s)
    return _Solution(f, g, s, eps_t, n_iter, err, err < tol)


class _Coupling(torch.autograd.Function):
    """``-eps (sum_ij a_i b_j exp((f_i + g_j - C_ij)/eps) - |a||b|)`` with f, g constant (envelope theorem).

    Forward takes the value already known from the solver; backward streams row blocks of the plan.
    """

    @staticmethod
    def forward(ctx, value, cost_state, x, y, C, a, b):  # noqa: D401
        ctx.cost_state = cost_state
        ctx.save_for_backward(x, y, C, a, b)
        return value.clone()

    @staticmethod
    def backward(ctx, go):
        x, y, C, a, b = ctx.saved_tensors
        st = ctx.cost_state
        cost: Cost = st["cost"]
        f, g, s, eps, block_elems = st["f"], st["g"], st["s"], st["eps"], st["block_elems"]
        B, n, m = cost.B, cost.n, cost.m
        need_x, need_y, need_C, need_a, need_b = ctx.needs_input_grad[2:7]
        e1, e3 = eps.view(B, 1), eps.view(B, 1, 1)
        go = go.reshape(B)
        loga = a.log()
        gx = torch.zeros_like(x) if need_x and x is not None else None
        gy = torch.zeros_like(y) if need_y and y is not None else None
        gC = torch.empty_like(C) if need_C and C is not None else None
        colK = torch.zeros(B, m, dtype=f.dtype, device=f.device)   # sum_i a_i K_ij
        r = _block_rows(B, m, n, block_elems)
        hx = (loga + f / e1).unsqueeze(-1)
        hy = (g / e1).unsqueeze(1)
        any_points = (gx is not None) or (gy is not None)
        for i0 in range(0, n, r):
            i1 = min(n, i0 + r)
            Cb = cost.rows(i0, i1, differentiable=False).detach() if not cost.is_matrix else C[:, i0:i1].detach()
            aK = torch.exp(hx[:, i0:i1] + hy - Cb / e3)          # a_i K_ij
            colK += aK.sum(1)
            if gC is None and not any_points:
                continue
            P = aK * (b.unsqueeze(1) * go.view(B, 1, 1))         # go * P_ij
            if gC is not None:
                gC[:, i0:i1] = P
            if any_points:
                if cost.sq_euclidean:
                    xb = x[:, i0:i1].detach()
                    if gx is not None:
                        gx[:, i0:i1] = 2 * (P.sum(-1, keepdim=True) * xb - P @ y.detach())
                    if gy is not None:
                        gy += 2 * (P.sum(1).unsqueeze(-1) * y.detach() - P.transpose(1, 2) @ xb)
                else:
                    with torch.enable_grad():
                        xd = x[:, i0:i1].detach().requires_grad_(gx is not None)
                        yd = y.detach().requires_grad_(gy is not None)
                        Cg = cost.rows(0, i1 - i0, xd, yd)
                        ins = [t for t in (xd, yd) if t.requires_grad]
                        grads = torch.autograd.grad(Cg, ins, grad_outputs=P)
                    it = iter(grads)
                    if gx is not None:
                        gx[:, i0:i1] = next(it)
                    if gy is not None:
                        gy += next(it)
        ga = gb = None
        if need_a:
            rowK = torch.exp((f - s) / e1)  # sum_j b_j K_ij, from the last row update
            ga = -e1 * (rowK - b.sum(1, keepdim=True)) * go.view(B, 1)
        if need_b:
            gb = -e1 * (colK - a.sum(1, keepdim=True)) * go.view(B, 1)
        return None, None, gx, gy, gC, ga, gb


@dataclass
class OTResult:
    """A solved batch of (entropic) OT problems. Tensors have a leading batch dim B.

    Attributes:
        value: ``OT_eps`` per problem (differentiable by the envelope theorem, or unrolled), shape (B,).
        f, g: dual potentials (detached), shapes (B, n) and (B, m).
        eps: the regularisation used, (B,).
        n_iter: Sinkhorn iterations (one g- and one f-update each) per problem.
        marginal_error: the last measured L1 marginal error (balanced) or fixed-point residual (unbalanced).
        converged: whether ``marginal_error < tol`` was reached within ``max_iter``.
    """

    value: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    eps: torch.Tensor
    n_iter: torch.Tensor
    marginal_error: torch.Tensor
    converged: torch.Tensor
    cost: Cost
    a: torch.Tensor
    b: torch.Tensor
    rho: float | None = None
    block_elems: int = BLOCK_ELEMS
    target: torch.Tensor | None = None   # the target points y (uncentred), for barycentric_projection

    def _plan_rows(self, i0: int, i1: int) -> torch.Tensor:
        B = self.cost.B
        e3 = self.eps.view(B, 1, 1)
        C = self.cost.rows(i0, i1, differentiable=False).detach()
        lp = (self.a[:, i0:i1].log() + self.f[:, i0:i1] / self.eps.view(B, 1)).unsqueeze(-1) \
            + (self.b.log() + self.g / self.eps.view(B, 1)).unsqueeze(1) - C / e3
        return lp.exp()

    def _blocks(self):
        r = _block_rows(self.cost.B, self.cost.m, self.cost.n, self.block_elems)
        for i0 in range(0, self.cost.n, r):
            i1 = min(self.cost.n, i0 + r)
            yield i0, i1, self._plan_rows(i0, i1)

    @torch.no_grad()
    def plan(self) -> torch.Tensor:
        """The transport plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)``, dense (B, n, m)."""
        return self._plan_rows(0, self.cost.n)

    @torch.no_grad()
    def marginals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column sums of the plan, computed block by block (O(n + m) memory)."""
        rows = torch.empty_like(self.f)
        cols = torch.zeros_like(self.g)
        for i0, i1, P in self._blocks():
            rows[:, i0:i1] = P.sum(-1)
            cols += P.sum(1)
        return rows, cols

    def marginal_errors(self) -> torch.Tensor:
        """``||P 1 - a||_1 + ||P^T 1 - b||_1`` per problem (one extra pass)."""
        rows, cols = self.marginals()
        return (rows - self.a).abs().sum(1) + (cols - self.b).abs().sum(1)

    @torch.no_grad()
    def linear_cost(self) -> torch.Tensor:
        """``<P, C>`` per problem (POT's ``sinkhorn2`` value), block by block."""
        out = torch.zeros_like(self.eps)
        for i0, i1, P in self._blocks():
            out += (P * self.cost.rows(i0, i1, differentiable=False)).sum((1, 2))
        return out

    @torch.no_grad()
    def barycentric_projection(self, target: torch.Tensor | None = None) -> torch.Tensor:
        """``T(x_i) = sum_j P_ij y_j / sum_j P_ij`` (default target: the points y), shape (B, n, d)."""
        y = self.target if target is None else target
        if y is None:
            raise ValueError("target: expected the target points (the problem was given as a cost matrix)")
        out = torch.empty(self.cost.B, self.cost.n, y.shape[-1], dtype=self.f.dtype, device=self.f.device)
        for i0, i1, P in self._blocks():
            out[:, i0:i1] = (P @ y.to(P.dtype)) / P.sum(-1, keepdim=True)
        return out


def _marginal_term(w: torch.Tensor, pot: torch.Tensor, rho: float | None) -> torch.Tensor:
    if rho is None:
        return (w * pot).sum(1)
    return (w * (-rho) * torch.expm1(-pot / rho)).sum(1)


def _unrolled(cost: Cost, a, b, eps_t, rho, tol, max_iter, scaling):
    """Differentiable loop (autograd through every iteration); dense C."""
    C = cost.full()
    B = cost.B
    loga, logb = a.log(), b.log()
    eps0 = torch.maximum(cost.diameter().detach().to(C.dtype), eps_t) if scaling is not None else eps_t
    f = C.new_zeros(B, cost.n)
    g = C.new_zeros(B, cost.m)
    k = 0
    n_iter = 0
    err = torch.full((B,), math.inf, dtype=C.dtype)
    while True:
        eps_k = eps_t if scaling is None else torch.maximum(eps_t, eps0 * scaling ** k)
        e1, e3 = eps_k.view(B, 1), eps_k.view(B, 1, 1)
        lam = 1.0 if rho is None else rho / (rho + e1)
        g = lam * -e1 * torch.logsumexp((loga + f / e1).unsqueeze(-1) - C / e3, 1)
        s = -e1 * torch.logsumexp((logb + g / e1).unsqueeze(1) - C / e3, 2)
        f_new = lam * s
        err = (a * (1 - torch.exp((f - f_new) / e1)).abs()).sum(1).detach()
        f = f_new
        k += 1
        n_iter += 1
        if (bool((eps_k <= eps_t).all()) and bool((err < tol).all())) or k >= max_iter:
            break
    e1, e3 = eps_t.view(B, 1), eps_t.view(B, 1, 1)
    mass = torch.exp((loga + f / e1).unsqueeze(-1) + (logb + g / e1).unsqueeze(1) - C / e3).sum((1, 2))
    value = _marginal_term(a, f, rho) + _marginal_term(b, g, rho) - eps_t * (mass - a.sum(1) * b.sum(1))
    n_it = torch.full((B,), n_iter, dtype=torch.long)
    return value, f.detach(), g.detach(), n_it, err, err < tol


@torch.compiler.disable
def _solve(cost: Cost, a, b, *, eps, rho, tol, max_iter, scaling, online, differentiate, block_elems,
           dense_bytes, inputs, symmetric=False, method="sinkhorn", newton=None) -> OTResult:
    B, n, m = cost.B, cost.n, cost.m
    ref = cost.matrix if cost.is_matrix else cost.x
    eps_t = _as_eps(eps, B, ref.dtype, ref.device)
    if differentiate == "unroll":
        value, f, g, n_it, err, conv = _unrolled(cost, a, b, eps_t, rho, tol, max_iter, scaling)
        return OTResult(value, f, g, eps_t, n_it, err, conv, cost, a.detach(), b.detach(), rho, block_elems)
    if method == "newton":
        online = False
    if method == "auto":
        # plain Sinkhorn; a problem that has not converged after AUTO_SINKHORN_ITERS iterations (slow
        # alternating convergence at small eps) is finished by sparse Newton steps, when balanced and
        # small enough for a dense matrix
        small = n * m <= AUTO_NEWTON_ENTRIES and not symmetric
        method = "auto-newton" if (rho is None and small and max_iter >= 20) else "sinkhorn"
    if online is None:
        # Keep the matrix when it fits, except for the squared Euclidean cost in low dimension, whose
        # blocks one GEMM recomputes faster than they can be read back (measured at d = 2).
        too_big = B * n * m * ref.element_size() > dense_bytes
        cheap = cost.sq_euclidean and cost.x.shape[-1] <= 16
        online = (not cost.is_matrix) and (too_big or cheap)
    kernel = _Kernel(_detached(cost), bool(online), block_elems)
    ad, bd = a.detach(), b.detach()
    if symmetric:
        sol = _sinkhorn_symmetric(kernel, ad.log(), eps_t, rho, tol, max_iter, scaling)
    elif method == "newton":
        sol = _sinkhorn_newton(kernel, ad.log(), bd.log(), eps_t, tol, max_iter, scaling, **(newton or {}))
    elif method == "auto-newton":
        # at most half of the budget for Sinkhorn, so that the Newton phase has the rest
        sol = _sinkhorn_newton(kernel, ad.log(), bd.log(), eps_t, tol, max_iter, scaling, warm_tol=tol,
                               warm_iter=min(AUTO_SINKHORN_ITERS, max_iter // 2))
    else:
        sol = _sinkhorn(kernel, ad.log(), bd.log(), eps_t, rho, tol, max_iter, scaling)
    e1 = eps_t.view(B, 1)
    with torch.no_grad():
        mass = (ad * torch.exp((sol.f - sol.s) / e1)).sum(1)
        coupling = -eps_t * (mass - ad.sum(1) * bd.sum(1))
    state = {"cost": _detached(cost), "f": sol.f, "g": sol.g, "s": sol.s, "eps": eps_t, "block_elems": block_elems}
    x, y, C = inputs
    coupling = _Coupling.apply(coupling, state, x, y, C, a, b)
    value = _marginal_term(a, sol.f, rho) + _marginal_term(b, sol.g, rho) + coupling
    return OTResult(value, sol.f, sol.g, eps_t, sol.n_iter, sol.error, sol.converged, _detached(cost),
                    ad, bd, rho, block_elems)


def _detached(cost: Cost) -> Cost:
    if cost.is_matrix:
        return Cost(matrix=cost.matrix.detach())
    return Cost(cost.x.detach(), cost.y.detach(), p=cost.p, fn=cost.fn, expand=cost.expand)


def _uniform(B: int, n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.full((B, n), 1.0 / n, dtype=ref.dtype, device=ref.device)


def _options_check(eps, rho, tol, max_iter, scaling, differentiate, method="sinkhorn", online=None):
    from .._core.errors import fail

    if method not in ("auto", "sinkhorn", "newton"):
        raise fail("method", "'auto', 'sinkhorn' or 'newton' (sparse Newton iterations)", repr(method))
    if method == "newton":
        if rho is not None:
            raise fail("rho", "None with method='newton' (balanced problems only)", repr(rho))
        if differentiate != "envelope":
            raise fail("differentiate", "'envelope' with method='newton'", repr(differentiate))
        if online:
            raise fail("online", "False or None with method='newton' (it needs the dense cost matrix)",
                       repr(online))

    e = torch.as_tensor(eps)
    if not bool((e > 0).all()) or not bool(torch.isfinite(e).all()):
        raise fail("eps", "a positive regularisation strength", repr(eps))
    if rho is not None and not (rho > 0):
        raise fail("rho", "a positive marginal-relaxation strength (or None for balanced OT)", repr(rho))
    if not (tol > 0):
        raise fail("tol", "a positive tolerance", repr(tol))
    if int(max_iter) < 1:
        raise fail("max_iter", "a positive iteration count", repr(max_iter))
    if scaling is not None and not (0 < scaling < 1):
        raise fail("scaling", "an epsilon-scaling factor in (0, 1), or None", repr(scaling))
    if differentiate not in ("envelope", "unroll"):
        raise fail("differentiate", "'envelope' or 'unroll'", repr(differentiate))


def _point_cost(x, y, p, fn, eps):
    """Centre the points (translation-invariant costs) and decide whether the GEMM expansion of
    ``||x - y||^2`` is accurate enough: its rounding error is about ``8 u max ||x||^2`` (u the unit
    roundoff); when that exceeds 1e-3 eps, or p != 2, costs are computed from differences (slower)."""
    if fn is not None:
        return x, y, Cost(x, y, p=p, fn=fn)
    centre = 0.5 * (x.detach().mean(1, keepdim=True) + y.detach().mean(1, keepdim=True))
    xc, yc = x - centre, y - centre
    with torch.no_grad():
        r2 = max(float((xc * xc).sum(-1).max()), float((yc * yc).sum(-1).max()))
        u = torch.finfo(x.dtype).eps
        e_min = float(torch.as_tensor(eps).min())
    # For p != 2 the root of an expanded square is inaccurate near coincident points: use differences.
    return xc, yc, Cost(xc, yc, p=p, expand=p == 2 and 8 * u * r2 <= 1e-3 * e_min)


def solve(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
          eps: float | torch.Tensor = 0.05, p: float = 2.0, cost: Callable | None = None,
          rho: float | None = None, tol: float = 1e-3, max_iter: int = 2000, scaling: float | None = 0.5,
          online: bool | None = None, differentiate: str = "envelope", block_elems: int = BLOCK_ELEMS,
          dense_bytes: int = DENSE_BYTES, method: str = "auto", newton: dict | None = None) -> OTResult:
    """Entropic OT between point clouds ``x (B, n, d)`` and ``y (B, m, d)`` (or unbatched ``(n, d)``).

    Cost ``C_ij = ||x_i - y_j||^p`` or ``cost(x_block, y)``; weights ``a (B, n)``, ``b (B, m)`` (uniform
    by default; zero weights are allowed, e.g. to pad ragged batches). Returns an :class:`OTResult`
    (unbatched inputs keep a batch dim of 1 in the result). See the module docstring for the algorithm.
    ``method='newton'``: Sinkhorn to a loose error, then sparse Newton steps (:mod:`.newton`; balanced,
    dense cost matrix, for small and medium problems and small eps / tight tol); ``newton`` passes its
    options (``warm_tol``, ``sparsity``). ``method='auto'`` (default): Sinkhorn, and a balanced problem
    with at most 2^20 cost entries still unconverged after min(2000, max_iter / 2) iterations
    (alternating Sinkhorn can stall at small eps) is finished by sparse Newton steps, which get the rest
    of ``max_iter``; ``'sinkhorn'``: Sinkhorn only.
    """
    from . import _validate as V

    x, y, a, b = V.samples(x, y, a, b, balanced=rho is None)
    _options_check(eps, rho, tol, max_iter, scaling, differentiate, method, online)
    xc, yc, c = _point_cost(x, y, p, cost, eps)
    res = _solve(c, a, b, eps=eps, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=online,
                 differentiate=differentiate, block_elems=block_elems, dense_bytes=dense_bytes,
                 inputs=(xc, yc, None), method=method, newton=newton)
    res.target = y.detach()
    return res


def solve_matrix(C: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                 eps: float | torch.Tensor = 0.05, rho: float | None = None, tol: float = 1e-3,
                 max_iter: int = 2000, scaling: float | None = 0.5, differentiate: str = "envelope",
                 block_elems: int = BLOCK_ELEMS, method: str = "auto", newton: dict | None = None) -> OTResult:
    """Entropic OT for a given cost matrix ``C (B, n, m)`` or ``(n, m)``; gradients flow to C, a, b.
    ``method='newton'``: sparse Newton iterations after a Sinkhorn warm start; ``'auto'`` (default)
    switches a stalled problem to them (see :func:`solve`)."""
    from . import _validate as V

    C, a, b = V.matrix(C, a, b, balanced=rho is None)
    _options_check(eps, rho, tol, max_iter, scaling, differentiate, method)
    c = Cost(matrix=C)
    return _solve(c, a, b, eps=eps, rho=rho, tol=tol, max_iter=max_iter, scaling=scaling, online=False,
                  differentiate=differentiate, block_elems=block_elems, dense_bytes=DENSE_BYTES,
                  inputs=(None, None, C), method=method, newton=newton)
