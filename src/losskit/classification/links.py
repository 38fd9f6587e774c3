"""Links: maps from logits to class probabilities (or normalised scores), the first factor of link x scoring rule.

* softmax (torch), :func:`log_stablemax` / :func:`stablemax` (Prieto et al. 2025, arXiv:2501.04697),
* :func:`sparsemax` (exact, sort-based) and :func:`entmax_bisect` (alpha-entmax by bisection; Peters,
  Niculae, Martins 2019, arXiv:1905.05702), both with the closed-form backward
  ``J = diag(s) - s s^T / sum(s)``, ``s = p^(2 - alpha)`` on the support,
* :func:`z_normalize` (the Z-loss's shift- and scale-free scores; de Brébisson, Vincent 2016).

All accept ``-inf`` entries as masked classes (probability exactly 0, zero gradient, no NaN).
"""

from __future__ import annotations

import torch

__all__ = ["log_stablemax", "stablemax", "sparsemax", "entmax_bisect", "tsallis_omega", "z_normalize"]


# ----------------------------------------------------------------------------------------- StableMax
class _LogS(torch.autograd.Function):
    """``log s(x) = sign(x) log1p(|x|)`` with its derivative ``1 / (1 + |x|)`` (1 at x = 0, 0 at -inf)."""

    @staticmethod
    def forward(ctx, x):
        a = x.abs()
        ctx.save_for_backward(a)
        return torch.copysign(torch.log1p(a), x)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / (1 + a)


def _log_s(x: torch.Tensor) -> torch.Tensor:
    """``log s(x)`` with ``s(x) = x + 1`` (x >= 0), ``1 / (1 - x)`` (x < 0): ``sign(x) log1p(|x|)``."""
    return _LogS.apply(x)


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(s(z_i) / sum_j s(z_j))``, computed in log space (no float64 cast is needed for accuracy)."""
    ls = _log_s(logits)
    return ls - torch.logsumexp(ls, dim=dim, keepdim=True)


def stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """StableMax probabilities ``s(z_i) / sum_j s(z_j)``; not invariant to shifting the logits."""
    return log_stablemax(logits, dim).exp()


# ------------------------------------------------------------------------------------ sparse maps
def _shift_max(z: torch.Tensor) -> torch.Tensor:
    """``z - max z`` along the last dimension (sparsemax / entmax are shift-invariant): the largest entry
    becomes 0, so ``1 + z_(1) > z_(1)`` holds in floating point also for logits of magnitude 1e30. A
    fully masked row (max ``-inf``) is left as it is."""
    mx = z.amax(-1, keepdim=True)
    return z - torch.where(torch.isfinite(mx), mx, mx.new_zeros(()))


def _sparsemax_forward(z: torch.Tensor) -> torch.Tensor:
    z = _shift_max(z)
    k = z.shape[-1]
    zs, _ = torch.sort(z, dim=-1, descending=True)
    cs = zs.cumsum(-1)
    r = torch.arange(1, k + 1, dtype=z.dtype, device=z.device)
    support = 1 + r * zs > cs  # -inf entries: -inf > -inf is False
    kz = support.sum(-1, keepdim=True).clamp(min=1)  # the top entry is always in the support
    tau = (cs.gather(-1, kz - 1) - 1) / kz.to(z.dtype)
    return (z - tau).clamp(min=0)


def _entmax_forward(z: torch.Tensor, alpha: float, n_iter: int) -> torch.Tensor:
    am1 = alpha - 1.0
    x = _shift_max(z) * am1  # max 0: the bracket below stays resolvable for logits of magnitude 1e30
    k = z.shape[-1]
    lo = torch.full_like(x[..., :1], -1.0)
    hi = torch.full_like(lo, -(1.0 / k) ** am1)
    for _ in range(n_iter):
        tau = (lo + hi) / 2
        f = (x - tau).clamp(min=0).pow(1.0 / am1).sum(-1, keepdim=True) - 1
        lo = torch.where(f >= 0, tau, lo)
        hi = torch.where(f >= 0, hi, tau)
    p = (x - lo).clamp(min=0).pow(1.0 / am1)
    return p / p.sum(-1, keepdim=True)


class _Entmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, alpha, n_iter):
        with torch.no_grad():
            p = _sparsemax_forward(z) if alpha == 2.0 else _entmax_forward(z, alpha, n_iter)
        ctx.alpha = alpha
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        s = _support_weights(p, ctx.alpha)
        gs = g * s
        return gs - s * gs.sum(-1, keepdim=True) / s.sum(-1, keepdim=True), None, None


def _support_weights(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s = p^(2 - alpha)`` on the support, 0 off it (``alpha = 2``: the support indicator)."""
    on = p > 0
    if alpha == 2.0:
        return on.to(p.dtype)
    return torch.where(on, p.clamp(min=torch.finfo(p.dtype).tiny).pow(2.0 - alpha), torch.zeros_like(p))


def _last(fn, z, dim, *args):
    if dim in (-1, z.dim() - 1):
        return fn(z, *args)
    return fn(z.movedim(dim, -1), *args).movedim(-1, dim)


def sparsemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax: the Euclidean projection of ``z`` onto the simplex (Martins, Astudillo 2016, arXiv:1602.02068)."""
    return _last(lambda z: _Entmax.apply(z, 2.0, 0), logits, dim)


def entmax_bisect(logits: torch.Tensor, alpha: float = 1.5, dim: int = -1, n_iter: int = 50) -> torch.Tensor:
    """alpha-entmax ``p_i = [(alpha - 1) z_i - tau]_+^(1/(alpha-1))`` with ``tau`` found by bisection.

    ``alpha = 1`` is softmax, ``alpha = 2`` sparsemax (computed exactly by sorting). The bisection
    brackets ``tau`` in ``[max - 1, max - K^(1-alpha)]`` and runs ``n_iter`` halvings (50: below float64
    resolution), then renormalises. The backward is closed-form, so gradients do not depend on the loop.
    """
    if alpha < 1:
        raise ValueError(f"alpha: expected a value >= 1, got {alpha!r}")
    if alpha == 1.0:
        return torch.softmax(logits, dim)
    return _last(lambda z: _Entmax.apply(z, float(alpha), n_iter), logits, dim)


def tsallis_omega(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """The negative Tsallis alpha-entropy ``(sum p^alpha - 1) / (alpha (alpha - 1))`` (``alpha = 1``: ``sum p log p``)."""
    if alpha == 1.0:
        return torch.where(p > 0, p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny)), torch.zeros_like(p)).sum(-1)
    return (p.pow(alpha).sum(-1) - 1) / (alpha * (alpha - 1))


# ------------------------------------------------------------------------------------ Z-normalise
def z_normalize(logits: torch.Tensor) -> torch.Tensor:
    """``(z - mean z) / std z`` over the finite classes (population std); ``-inf`` stays ``-inf``.

    When all finite logits are equal the std is 0 and every score is 0 (all classes tie).
    """
    finite = torch.isfinite(logits)
    z0 = torch.where(finite, logits, torch.zeros_like(logits))
    n = finite.sum(-1, keepdim=True).clamp(min=1).to(logits.dtype)
    mu = z0.sum(-1, keepdim=True) / n
    dev = torch.where(finite, z0 - mu, torch.zeros_like(z0))
    var = (dev * dev).sum(-1, keepdim=True) / n
    pos = var > 0
    std = torch.sqrt(torch.where(pos, var, torch.ones_like(var)))
    zt = torch.where(pos, dev / std, torch.zeros_like(dev))
    return torch.where(finite, zt, logits)
