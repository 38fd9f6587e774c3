"""Layer 2, sequence scores: s(y) = phi( agg_t( w_t [log pi - log pi_anchor]_t ) ).

* ``agg``: ``'sum'`` (DPO), ``'mean'`` (SimPO, IPO in TRL, ORPO), ``'shared_tail'`` (the shared prefix of a
  pair counted fully, the tail beyond it times alpha: length-desensitised DPO), ``'discounted'``
  (sum_t gamma^t, CPL);
* ``w_t``: optional token weights (SparsePO's masks, token-level reward weights);
* the anchor: none, a reference model's token log-probs, or a geometric mixture ``sum_k c_k log pi_k``
  (:func:`geometric_anchor`; MNPO's opponents, APO's extrapolated reference);
* ``phi``: :func:`transform_score` (f-DPO's ``f'(e^u)``, AlphaPO's reward shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._core.errors import fail
from .._core.validate import check_floating, describe

__all__ = ["sequence_scores", "geometric_anchor", "transform_score", "shared_length", "AGGREGATIONS",
           "TRANSFORMS"]

AGGREGATIONS = ("sum", "mean", "shared_tail", "discounted")
TRANSFORMS = ("identity", "reverse_kl", "forward_kl", "js", "alpha")


def geometric_anchor(logps: Sequence[torch.Tensor], weights: Sequence[float | torch.Tensor]) -> torch.Tensor:
    """The log of a geometric mixture, ``sum_k c_k log pi_k`` (unnormalised; normalisers cancel in margins).

    Works on token or sequence log-probs. MNPO: ``[ref, opponent_1, ...]`` with ``[rho, (1-rho) lambda_1,
    ...]``; APO's extrapolated reference: ``[current, previous]`` with ``[1 + alpha, -alpha]``.
    """
    if len(logps) == 0 or len(logps) != len(weights):
        raise fail("weights", f"one weight per log-prob tensor ({len(logps)})", f"{len(weights)} weights")
    out = 0
    for k, (lp, c) in enumerate(zip(logps, weights)):
        check_floating(f"logps[{k}]", lp)
        if lp.shape != logps[0].shape:
            raise fail(f"logps[{k}]", f"shape {tuple(logps[0].shape)}", f"shape {tuple(lp.shape)}")
        out = out + c * lp
    return out


def _bounded_exponent(a: torch.Tensor, *factors: float) -> torch.Tensor:
    """``a`` clamped so that ``e^a`` and ``f e^a`` for every factor ``f`` stay below a quarter of the dtype's
    largest value.

    Reward shapes with an exponential (``-e^{-u}``, ``(1 - e^{-alpha u}) / alpha``) overflow for scores far
    out (``e^{-alpha u}`` at ``u = -1e30``): a margin of two overflowed rewards is ``inf - inf`` and the
    backward of a saturated link multiplies ``0`` by ``inf``; both are NaN. Saturating the exponent keeps
    the value finite (the true value is beyond the dtype anyway) and gives that entry a zero gradient.
    """
    limit = math.log(torch.finfo(a.dtype).max / 4) - max([0.0] + [math.log(abs(f)) for f in factors if f])
    return a.clamp(max=limit)


def _transform(u: torch.Tensor, phi: str, alpha: float, scale: float) -> torch.Tensor:
    if phi in ("identity", "reverse_kl"):
        return u
    if phi == "forward_kl":
        return -torch.exp(_bounded_exponent(-u, scale))
    if phi == "js":
        return u - F.softplus(u) + math.log(2.0)
    if phi == "alpha":
        if alpha == 0:
            return u
        return -torch.expm1(_bounded_exponent(-alpha * u, 1 / alpha, scale / alpha)) / alpha
    raise fail("phi", f"one of {TRANSFORMS}", repr(phi))


def transform_score(u: torch.Tensor, phi: str = "identity", *, alpha: float = 0.5) -> torch.Tensor:
    """A reward shape phi applied to a (log-ratio or log-likelihood) score u.

    ``f'(e^u)`` for the f-divergences of f-DPO (constants that cancel in a margin dropped):

    * ``'identity'`` / ``'reverse_kl'``: ``u`` (f(t) = t log t, so DPO);
    * ``'forward_kl'``: ``-e^{-u}`` (f(t) = -log t);
    * ``'js'``: ``u - softplus(u) + log 2 = log(2t/(1+t))``;
    * ``'alpha'``: ``(1 - e^{-alpha u}) / alpha`` (alpha-divergence; ``alpha -> 0`` is ``u``). The same
      function of the length-normalised log-likelihood is AlphaPO's reward (``-pi^{-alpha/|y|}`` up to
      affine terms).

    Where the exponential would exceed a quarter of the dtype's largest value (``e^{-u}`` for ``u < -88``
    in float32), it saturates there: the value stays finite and the gradient of that entry is 0 (the
    exact value is not representable; margins of two such rewards would otherwise be ``inf - inf``).
    """
    return _transform(u, phi, alpha, 1.0)


def shared_length(chosen_mask: torch.Tensor, rejected_mask: torch.Tensor) -> torch.Tensor:
    """Per pair, ``min(|y_w|, |y_l|)``: the prefix length of :func:`sequence_scores`' ``'shared_tail'``."""
    return torch.minimum(chosen_mask.sum(-1), rejected_mask.sum(-1))


def sequence_scores(token_logps: torch.Tensor, mask: torch.Tensor, *,
                    ref_token_logps: torch.Tensor | None = None, token_weights: torch.Tensor | None = None,
                    aggregation: str = "sum", alpha: float = 1.0, prefix_length: torch.Tensor | None = None,
                    gamma: float = 1.0, transform: str = "identity", transform_alpha: float = 0.5) -> torch.Tensor:
    """Sequence score ``s = phi(agg_t(w_t (log pi_t - log pi_anchor_t)))`` from per-token log-probs.

    Args:
        token_logps: ``(B, T)`` per-token log-probs (:func:`~losskit.preference.token_logprobs`).
        mask: ``(B, T)`` completion mask; masked entries are never read (NaN there is harmless).
        ref_token_logps: ``(B, T)`` anchor log-probs (a reference model, or :func:`geometric_anchor` of
            several); ``None`` for reference-free scores.
        token_weights: ``(B, T)`` weights w_t.
        aggregation: ``'sum'``; ``'mean'`` over completion tokens; ``'shared_tail'``: tokens at completion
            positions < ``prefix_length`` count once, later ones ``alpha`` times; ``'discounted'``:
            ``sum_t gamma^t x_t`` with t counted from the first completion token.
        transform: phi, see :func:`transform_score` (``transform_alpha`` is its alpha).

    An empty completion (mask all false) scores 0 under every aggregation (``'mean'`` divides by
    ``max(|y|, 1)``): finite, and the loss of a pair of empty completions is the head's value at margin 0.
    """
    check_floating("token_logps", token_logps)
    if token_logps.dim() != 2:
        raise fail("token_logps", "a (B, T) tensor of per-token log-probs", describe(token_logps))
    if tuple(mask.shape) != tuple(token_logps.shape):
        raise fail("mask", f"shape {tuple(token_logps.shape)}", f"shape {tuple(mask.shape)}")
    mask = mask.bool()
    x = token_logps
    if ref_token_logps is not None:
        if ref_token_logps.shape != x.shape:
            raise fail("ref_token_logps", f"shape {tuple(x.shape)}", f"shape {tuple(ref_token_logps.shape)}")
        x = x - ref_token_logps
    if token_weights is not None:
        if token_weights.shape != x.shape:
            raise fail("token_weights", f"shape {tuple(x.shape)}", f"shape {tuple(token_weights.shape)}")
        x = x * token_weights
    x = torch.where(mask, x, x.new_zeros(()))
    pos = torch.cumsum(mask.long(), -1) - 1  # completion position of each token
    if aggregation == "sum":
        s = x.sum(-1)
    elif aggregation == "mean":
        s = x.sum(-1) / mask.sum(-1).clamp_min(1).to(x.dtype)
    elif aggregation == "shared_tail":
        if prefix_length is None:
            raise fail("prefix_length", "a (B,) tensor of shared prefix lengths for aggregation='shared_tail'",
                       "None")
        tail = pos >= prefix_length.reshape(-1, 1)
        s = (x * torch.where(tail, torch.full_like(x, alpha), torch.ones_like(x))).sum(-1)
    elif aggregation == "discounted":
        if not 0 < gamma <= 1:
            raise fail("gamma", "a discount in (0, 1]", repr(gamma))
        s = (x * torch.pow(torch.tensor(gamma, dtype=x.dtype, device=x.device), pos.clamp_min(0).to(x.dtype))).sum(-1)
    else:
        raise fail("aggregation", f"one of {AGGREGATIONS}", repr(aggregation))
    return transform_score(s, transform, alpha=transform_alpha)
