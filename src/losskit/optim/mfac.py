"""M-FAC: matrix-free inverse-Fisher-vector products over a sliding window of gradients, and the
M-FAC optimiser (preconditioned SGD with them).

The dynamic algorithm keeps the last ``m`` gradients ``g_1..g_m`` (rows of ``G``, zeros until filled)
and applies the inverse of the dampened empirical Fisher

    F = lambda I + (1/m) sum_i g_i g_i^T = lambda I + (1/m) G^T G

to a vector without forming the d x d matrix. By Woodbury,

    F^{-1} v = (1/lambda) (v - G^T (m lambda I + G G^T)^{-1} G v),

so a product costs O(d m + m^2) given a factorisation of the m x m matrix ``m lambda I + G G^T``; replacing
the oldest gradient updates one row and column of ``G G^T`` (O(d m)) and refactorises it (O(m^3)): the
costs of the paper's dynamic algorithm. losskit factorises by Cholesky (the matrix is symmetric positive
definite) where the authors' code runs a recursive LU-style elimination; the two give the same product
(``tests/oracles/test_optim_oracles.py`` compares them).

Paper: Frantar, Kurtic, Alistarh, "M-FAC: Efficient Matrix-Free Approximations of Second-Order
Information", NeurIPS 2021, arXiv:2107.03356. Authors' code: IST-DASLab/M-FAC, ``optim.py``.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

__all__ = ["SlidingFisherInverse", "MFAC"]


class SlidingFisherInverse:
    """``F^{-1} v`` for ``F = damp I + (1/m) sum of the last m gradients' outer products``.

    Args:
        dim: the gradient dimension ``d``.
        m: the window size (number of gradients kept).
        damp: the dampening ``lambda`` (> 0).
        dtype, device: of the stored gradients and products.
    """

    def __init__(self, dim: int, m: int, damp: float = 1e-5, *, dtype=torch.float32, device=None):
        if m < 1 or dim < 1:
            raise ValueError(f"m and dim must be >= 1, got m={m}, dim={dim}")
        if not damp > 0:
            raise ValueError(f"damp must be > 0, got {damp}")
        self.m, self.d, self.damp = int(m), int(dim), float(damp)
        self.grads = torch.zeros(self.m, self.d, dtype=dtype, device=device)  # G
        self.dots = torch.zeros(self.m, self.m, dtype=dtype, device=device)  # G G^T
        self.last = 0  # ring-buffer index of the oldest gradient
        self.count = 0  # gradients seen
        self._chol: torch.Tensor | None = None

    def _factor(self) -> torch.Tensor:
        if self._chol is None:
            eye = torch.eye(self.m, dtype=self.dots.dtype, device=self.dots.device)
            self._chol = torch.linalg.cholesky(self.m * self.damp * eye + self.dots)
        return self._chol

    @torch.no_grad()
    def update(self, g: torch.Tensor) -> None:
        """Replace the oldest gradient in the window by ``g`` (shape (d,))."""
        g = g.reshape(-1).to(self.grads)
        if g.numel() != self.d:
            raise ValueError(f"gradient of {g.numel()} entries for a window of dimension {self.d}")
        self.grads[self.last] = g
        row = self.grads @ g
        self.dots[self.last, :] = row
        self.dots[:, self.last] = row
        self.last = (self.last + 1) % self.m
        self.count += 1
        self._chol = None

    @torch.no_grad()
    def mul(self, v: torch.Tensor) -> torch.Tensor:
        """``F^{-1} v`` for ``v`` of shape (d,) (or (d, k): k vectors at once)."""
        vv = v.to(self.grads)
        gv = self.grads @ vv
        c = torch.cholesky_solve(gv if gv.dim() == 2 else gv.unsqueeze(1), self._factor())
        c = c if gv.dim() == 2 else c.squeeze(1)
        return (vv - self.grads.T @ c) / self.damp

    def dense(self) -> torch.Tensor:
        """The d x d matrix F itself (for tests and small problems)."""
        eye = torch.eye(self.d, dtype=self.grads.dtype, device=self.grads.device)
        return self.damp * eye + self.grads.T @ self.grads / self.m


class MFAC(Optimizer):
    """The M-FAC optimiser: ``theta <- theta - lr * F^{-1} g`` with F over the last ``ngrads`` gradients.

    As the authors' ``MFAC`` (IST-DASLab/M-FAC, ``optim.py``): one window over all parameters (their
    gradients flattened and concatenated, weight decay added to the gradient first), the new gradient
    enters the window before its product is taken, and ``momentum`` averages the preconditioned steps
    (``v <- momentum v + (1 - momentum) F^{-1} g``). Memory: ``ngrads`` copies of the parameters.

    Args:
        params: parameters or groups (each group may set its own ``lr``).
        lr, momentum, weight_decay: as above.
        ngrads: the window size m.
        damp: the dampening lambda.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 ngrads: int = 32, damp: float = 1e-5):
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid lr={lr}, momentum={momentum} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        ps = [p for group in self.param_groups for p in group["params"]]
        n = sum(p.numel() for p in ps)
        self.fisher = SlidingFisherInverse(n, ngrads, damp, dtype=ps[0].dtype, device=ps[0].device)
        self.v: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flat = []
        for group in self.param_groups:
            for p in group["params"]:
                g = torch.zeros_like(p) if p.grad is None else p.grad
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p
                flat.append(g.reshape(-1))
        g = torch.cat(flat)
        self.fisher.update(g)
        step = self.fisher.mul(g)
        mom = self.param_groups[0]["momentum"]
        if mom > 0:
            self.v = (1 - mom) * step if self.v is None else mom * self.v + (1 - mom) * step
            step = self.v
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(step[i:i + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                i += p.numel()
        return loss
