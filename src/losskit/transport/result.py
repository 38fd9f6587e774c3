"""The result of a solve (:class:`OTResult`) and the envelope-theorem gradient of its value (:class:`_Coupling`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._kernel import BLOCK_ELEMS, _block_rows
from .costs import Cost

__all__ = ["OTResult"]


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
