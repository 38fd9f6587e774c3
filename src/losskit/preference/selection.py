"""Layer 4 helpers: which rollouts and which tokens a GRPO-family loss trains on (masks, detached).

* D^3S (Wang et al. 2025, arXiv:2509.22115): :func:`max_variance_subset`, the subset of k rollouts whose
  advantages (or rewards) have the largest variance -- exact, in O(n log n) per group -- and
  :func:`advantage_entropy_token_mask`, the tokens of largest ``|A_it| H_it``;
* Scaf-GRPO (Zhang et al. 2025, arXiv:2510.19807): :func:`hint_token_mask`, the completion mask without the
  hint tokens a scaffolded rollout was given (they condition the policy's log-probs, they are not its actions).

The masks are consumed by :func:`~losskit.preference.grpo` (and every objective on its surrogate): rows of a
rollout mask select the sequences (``logps[keep]``, ...), a token mask is and-ed into ``mask``. What remains
of these methods is training-loop logic, not a loss: D^3S's down-sampling schedule (the fraction kept,
aggressive early and relaxed later) and Scaf-GRPO's diagnosis of stalled prompts and its tiered choice of hint.
"""

from __future__ import annotations

import math

import torch

from .._core.errors import fail
from .._core.validate import check_floating, describe

__all__ = ["max_variance_subset", "advantage_entropy_token_mask", "hint_token_mask"]


def _count(name: str, k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise fail(name, f"an integer in [1, {n}] (the rollouts kept per group)", repr(k))
    return k


def max_variance_subset(values: torch.Tensor, k: int, group_size: int | None = None) -> torch.Tensor:
    """The k rollouts of each group whose values have the largest variance (D^3S's sample-level selection).

    .. math:: S^* = \\arg\\max_{S \\subseteq \\{1..n\\},\\ |S| = k}\\ \\frac1k\\sum_{i\\in S}(A_i - \\bar A_S)^2

    ``values``: ``(G, n)`` advantages (or rewards: within a group the advantage is an increasing affine map of
    the reward, so both select the same rollouts), or flat ``(G n,)`` with ``group_size = n``, or flat
    ``(N,)`` without ``group_size``: one group, the whole batch (D^3S's cross-group selection). Exact: a
    maximum-variance subset of fixed size always consists of the ``i`` smallest and the ``k - i`` largest
    values for some ``i`` (moving a kept value that lies strictly inside toward either end raises the
    variance), so the ``k + 1`` candidates of the sorted values decide it (ties: the smallest ``i``; equal
    values are interchangeable, which of them is kept is unspecified). Returns a boolean mask of ``values``'
    shape with k True per group.
    Select with it: ``logps[keep]``, ``advantages[keep]`` (D^3S keeps the advantages of the full group).
    Paper: Wang et al., "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient
    Policy Optimization", 2025, arXiv:2509.22115 (the same rule as PODS' max-variance down-sampling, Xu et al.
    2025, arXiv:2504.13818).
    """
    check_floating("values", values)
    with torch.no_grad():
        v = values.detach()
        if v.dim() == 1:
            if group_size is None:
                g = v[None]
            else:
                if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 \
                        or v.shape[0] % group_size:
                    raise fail("group_size", f"a divisor of the number of values {v.shape[0]}", repr(group_size))
                g = v.reshape(-1, group_size)
        elif v.dim() == 2:
            g = v
        else:
            raise fail("values", "(G, n), (G n,) or (N,) advantages or rewards", describe(values))
        if not torch.isfinite(g).all():
            raise fail("values", "finite advantages or rewards", "a non-finite value")
        n = g.shape[-1]
        k = _count("k", k, n)
        wide = torch.float64 if g.device.type != "mps" else torch.float32
        x, order = torch.sort(g.to(wide), dim=-1, stable=True)
        x = x - x.mean(-1, keepdim=True)  # variance is shift-invariant; centring keeps the sums small
        zero = x.new_zeros(x.shape[0], 1)
        c1 = torch.cat([zero, x.cumsum(-1)], -1)  # c1[:, j] = sum of the j smallest
        c2 = torch.cat([zero, (x * x).cumsum(-1)], -1)
        i = torch.arange(k + 1, device=x.device)
        s1 = c1[:, i] + c1[:, n:n + 1] - c1[:, n - k + i]  # i smallest + (k - i) largest
        s2 = c2[:, i] + c2[:, n:n + 1] - c2[:, n - k + i]
        var = s2 / k - (s1 / k) ** 2
        best = var.argmax(-1, keepdim=True)  # the first maximum
        rank = torch.arange(n, device=x.device)[None]
        keep_sorted = (rank < best) | (rank >= n - k + best)
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        return keep.reshape(values.shape)


def advantage_entropy_token_mask(advantages: torch.Tensor, entropies: torch.Tensor, mask: torch.Tensor,
                                 fraction: float, *, scope: str = "batch") -> torch.Tensor:
    """The completion tokens of largest ``|A_it| H_it`` (D^3S's token-level selection), a ``(B, T)`` mask.

    ``advantages``: ``(B,)`` or ``(B, T)``; ``entropies``: ``(B, T)`` the policy's entropy at each position
    (:func:`losskit.token_logprobs` with ``return_entropy=True``); ``mask``: the completion tokens.
    ``fraction`` in (0, 1]: the share kept, ``ceil(fraction * count)`` tokens of the ``scope`` --
    ``'batch'`` (the score ranked over every completion token of the call) or ``'sequence'`` (per sequence).
    Ties are broken by position (the earlier token first). Pass ``mask & keep`` to :func:`grpo`: its
    aggregation then averages over the kept tokens. Masked positions are never kept. Paper: Wang et al.,
    "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy Optimization",
    2025, arXiv:2509.22115.
    """
    check_floating("entropies", entropies)
    if entropies.dim() != 2:
        raise fail("entropies", "(B, T) per-token entropies", describe(entropies))
    check_floating("advantages", advantages)
    if advantages.shape not in (entropies.shape[:1], entropies.shape):
        raise fail("advantages", f"shape {tuple(entropies.shape[:1])} or {tuple(entropies.shape)}",
                   describe(advantages))
    if not isinstance(mask, torch.Tensor) or mask.shape != entropies.shape:
        raise fail("mask", f"a (B, T) mask of shape {tuple(entropies.shape)}", describe(mask))
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise fail("fraction", "a number in (0, 1]", repr(fraction))
    if scope not in ("batch", "sequence"):
        raise fail("scope", "one of 'batch', 'sequence'", repr(scope))
    with torch.no_grad():
        m = mask.bool()
        a = advantages.detach()
        a = a[:, None] if a.dim() == 1 else a
        score = (a.abs() * entropies.detach()).to(torch.float64 if a.device.type != "mps" else torch.float32)
        score = torch.where(m, score, -math.inf)
        rows = score.reshape(1, -1) if scope == "batch" else score
        counts = m.reshape(1, -1).sum(-1) if scope == "batch" else m.sum(-1)
        take = torch.ceil(counts.to(score.dtype) * fraction).long()
        _, order = torch.sort(rows, dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(rows.shape[-1], device=rows.device)
                                                .expand_as(order).contiguous())
        keep = rank < take[:, None]
        return keep.reshape(m.shape) & m


def hint_token_mask(mask: torch.Tensor, hint_lengths: torch.Tensor) -> torch.Tensor:
    """The completion mask without the first ``hint_lengths[i]`` completion tokens of each row (Scaf-GRPO).

    Scaf-GRPO (Zhang et al. 2025, arXiv:2510.19807) replaces a failed rollout of a stalled prompt by one the
    policy generated after a hint (a knowledge, planning or solution step) was put in its context. The hint
    conditions the log-probs of the tokens after it but was not sampled from the policy: its tokens are not
    actions and take no part in the policy loss, the KL term or the aggregation's token counts. Where the hint
    sits in the prompt (the paper's "in-prompt" hints) the completion mask already excludes it; where a
    pipeline writes it at the start of the completion segment, this mask removes it: ``grpo(logps, old_logps,
    advantages, hint_token_mask(mask, h), ...)`` is GRPO on the hint-conditioned rollouts' own tokens (the
    rows with ``h = 0``, the unhinted rollouts, are unchanged). The group's advantages are formed over the
    mixed group (unhinted and hinted rollouts, :func:`group_advantages`). ``hint_lengths``: ``(B,)``
    non-negative integers (0: no hint). Which prompts get a hint, and which tier, is the training loop's.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise fail("mask", "a (B, T) completion mask", describe(mask))
    h = hint_lengths
    if not isinstance(h, torch.Tensor) or h.dtype.is_floating_point or h.dtype == torch.bool \
            or h.shape != mask.shape[:1]:
        raise fail("hint_lengths", f"a ({mask.shape[0]},) integer tensor of hint lengths", describe(h))
    if (h < 0).any():
        raise fail("hint_lengths", "non-negative hint lengths", repr(int(h.min())))
    m = mask.bool()
    position = m.long().cumsum(-1)  # 1-based index of each completion token
    if (h > m.sum(-1)).any():
        raise fail("hint_lengths", "at most the completion's length (the hint is a prefix of the completion)",
                   "a longer hint")
    return m & (position > h[:, None])
