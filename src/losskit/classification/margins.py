"""The margin vector and the comp-sum core: most classification surrogates are one scalar transform of it.

For logits ``z`` and a label ``y`` the *margin vector* is ``d_k = z_k - z_y + c [k != y]`` (``d_y = 0``).
Its temperature-``T`` log-sum-exp

.. math:: s_y(z) = \\log \\sum_k e^{d_k / T} = -\\log \\mathrm{softmax}(z / T)_y \\quad (c = 0)

is the one number the comp-sum family (Mao, Mohri, Zhong 2023) and the LDR family (Zhu, Ying, Yang
2023) read: with ``u = sum_{k != y} e^{d_k} = e^s - 1``,

* comp-sum ``Phi_tau(u) = ((1+u)^(1-tau) - 1)/(1-tau) = expm1((1-tau) s)/(1-tau)`` (tau=0 sum-exp,
  tau=1 cross-entropy ``s``, tau in (1,2) GCE, tau=2 MAE ``1 - p_y``),
* LDR-KL ``lam log((1/K) sum_k e^{d_k/lam}) = lam softplus(c/lam + log u) - lam log K`` with ``u`` at
  temperature ``lam`` (:func:`log_rival_mass` forms ``log u`` directly, so the hinge limit
  ``lam -> 0`` stays exact where ``p_y`` rounds to 1).

So the identities (comp-sum tau=1 = CE, LDR(lam=1, c=0) = CE - log K, GCE(q) = comp-sum(1+q),
MAE = comp-sum(2)) hold by construction. ``s`` is computed for every candidate label at once (shape
``(..., K)``) by one ``log_softmax``; :func:`losskit.classification._targets.classwise_loss` then
transforms only the target column for class indices, or every column for soft targets / smoothing.

Numerics: ``s`` is a ``log_softmax`` (never ``log(softmax)``); transforms are evaluated through
:func:`guarded`, which keeps ``-inf`` logits (``s = +inf``, probability 0) and exactly-certain
predictions (``s = 0``) from producing NaN gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "margin_vector",
    "margin_logsumexp",
    "comp_sum_transform",
    "ldr_transform",
    "log_rival_mass",
    "guarded",
    "masked_logsumexp",
    "softplus",
]


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` exactly, with finite gradients at ``+-inf`` (``F.softplus`` switches to ``x`` above
    20, an error of ~2e-9 in float64; ``logaddexp`` has a NaN gradient at ``+inf``)."""
    pos = x > 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    xp = torch.where(pos, x, zero)
    xn = torch.where(pos, zero, x)
    return torch.where(pos, xp + torch.log1p(torch.exp(-xp)), torch.log1p(torch.exp(xn)))


def margin_vector(logits: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``d_k = z_k - z_y + c [k != y]`` for class-last logits ``(..., K)`` and indices ``(...)``."""
    zy = logits.gather(-1, target.unsqueeze(-1))
    d = logits - zy
    if margin:
        off = torch.ones_like(d).scatter(-1, target.unsqueeze(-1), 0.0)
        d = d + margin * off
    return d


def margin_logsumexp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``s_y = log sum_k exp((z_k - z_y)/T)`` for every candidate label ``y`` at once: ``-log_softmax(z/T)``.

    Equal to ``margin_vector(z, y).div(T).logsumexp(-1)`` for each ``y`` (tested), in one ``O(K)`` pass.
    """
    z = logits if temperature == 1.0 else logits / temperature
    return -torch.log_softmax(z, dim=-1)


def _margin_logsumexp_at(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``s_y`` at the given labels only, ``-log_softmax(z)_y``: torch's fused log-softmax + NLL kernels on
    the class-last logits flattened to ``(M, K)`` (the same kernels as ``F.cross_entropy``, whose backward
    writes the gradient once, where a gather's backward would first scatter into zeros)."""
    k = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, k), index.reshape(-1), reduction="none").reshape(index.shape)


margin_logsumexp.at = _margin_logsumexp_at  # type: ignore[attr-defined]  # read by classwise_loss
margin_logsumexp.lse = True  # type: ignore[attr-defined]  # s_y is non-finite iff the row is (classwise_loss)


def guarded(s: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], *, at_zero: bool = False) -> torch.Tensor:
    """``fn(s)`` with NaN-free gradients at ``s = +inf`` (a ``-inf`` logit) and, if ``at_zero``, ``s = 0``.

    At those points the value is ``fn``'s limit (evaluated without gradient) and the gradient is zero,
    which is the true gradient there (``d softmax / dz`` vanishes); elsewhere it is plain ``fn``.
    """
    ok = torch.isfinite(s)
    if at_zero:
        ok = ok & (s > 0)
    safe = torch.where(ok, s, torch.ones_like(s))
    with torch.no_grad():
        limit = fn(s)
    return torch.where(ok, fn(safe), limit)


def comp_sum_transform(s: torch.Tensor, tau: float) -> torch.Tensor:
    """``Phi_tau(e^s - 1) = expm1((1 - tau) s) / (1 - tau)``; ``tau = 1`` gives ``s``."""
    if tau == 1.0:
        return s
    return guarded(s, lambda v: torch.expm1((1.0 - tau) * v) / (1.0 - tau))


def log_rival_mass(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log u_y = log sum_{k != y} exp((z_k - z_y)/T)`` for every candidate label ``y``, accurate everywhere.

    ``log u = log(expm1(s))`` loses everything when ``p_y`` rounds to 1 (``s = 0``); here the exclusive
    log-sum-exp is formed directly: for the arg-max class from a log-sum-exp without it, for the others
    as ``log(1 - p_y) - log p_y`` (``p_y <= 1/2`` there, so no cancellation). ``O(K)``.
    """
    w = logits if temperature == 1.0 else logits / temperature
    lp = torch.log_softmax(w, dim=-1)
    is_max = torch.zeros_like(w, dtype=torch.bool).scatter(-1, w.argmax(-1, keepdim=True), True)
    lse_wo = masked_logsumexp(w, ~is_max, dim=-1, keepdim=True)
    lp_safe = torch.where(is_max, torch.full_like(lp, -1.0), lp)
    others = torch.log(-torch.expm1(lp_safe)) - lp_safe
    w_safe = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
    return torch.where(is_max, lse_wo - w_safe, others)


def ldr_transform(log_u: torch.Tensor, lam, margin: float, num_classes: int) -> torch.Tensor:
    """LDR-KL from the rival mass at temperature ``lam``: ``lam softplus(c/lam + log u) - lam log K``.

    ``= lam log((1/K) sum_k e^{d_k/lam})`` since ``sum_k e^{d_k/lam} = 1 + e^{c/lam} u``. ``lam`` is a
    float or a tensor broadcasting against ``log_u`` (per-sample temperatures).
    """
    import math

    log_k = math.log(num_classes)
    return guarded(log_u, lambda v: lam * softplus(margin / lam + v) - lam * log_k)


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """``log sum_{mask} exp(x)`` along ``dim``; ``-inf`` with zero gradient where nothing is selected.

    Entries that are ``-inf`` count as unselected, so an all-``-inf`` selection cannot give a NaN gradient.
    """
    mask = mask & (x > float("-inf"))
    any_ = mask.any(dim=dim, keepdim=True)
    xm = torch.where(mask, x, torch.full_like(x, float("-inf")))
    xm = torch.where(any_, xm, torch.zeros_like(xm))
    out = torch.logsumexp(xm, dim=dim, keepdim=True)
    out = torch.where(any_, out, torch.full_like(out, float("-inf")))
    return out if keepdim else out.squeeze(dim)
