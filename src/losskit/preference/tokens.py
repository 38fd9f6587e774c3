"""Layer 1, tokens: per-token log-probabilities of the selected tokens, chunked over the vocabulary rows.

``log_softmax(logits).gather(...)`` materialises a second ``(B, T, V)`` tensor in the forward, keeps it for
the backward, and the backward builds two more (the scattered gather gradient and the softmax gradient).
:func:`token_logprobs` instead walks over chunks of rows: each chunk is copied to the compute dtype, its
log-sum-exp and selected logit are taken, and only ``(B, T)`` numbers are kept. The backward recomputes
each chunk's softmax and writes its slice of the one ``(B, T, V)`` gradient that must exist anyway.

Masked positions never leak: their rows are replaced by zeros before anything is computed, so NaN or
+-1e4 logits there change neither the outputs nor the gradient (which is exactly 0 there), and their
outputs are exactly 0.

The token-level head :func:`sparsepo` (per-token log-ratios and KLs with masks) lives here too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._core import BadInput, Example, InputKind, Paper, objective
from .._core.conventions import compute_dtype
from .._core.domains import Maybe, Tensor
from .._core.errors import fail
from .._core.validate import check_floating, check_tensor, check_unit_interval, describe, require
from .heads import PAIR_DOMAINS, _finish, margin_loss

__all__ = ["TokenLogProbs", "token_logprobs", "naive_token_logprobs", "default_chunk_rows", "sparsepo",
           "wpo_weights"]

#: Bytes of compute-dtype workspace one chunk may use (per temporary).
CHUNK_BYTES = 16 * 2**20


class TokenLogProbs(NamedTuple):
    """Per-token outputs of :func:`token_logprobs`, each of the labels' shape (exactly 0 where masked)."""

    logps: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None


def default_chunk_rows(vocab: int, dtype: torch.dtype = torch.float32) -> int:
    """Rows per chunk: the largest count whose compute-dtype ``(rows, V)`` buffer fits ``CHUNK_BYTES``."""
    size = torch.finfo(compute_dtype(dtype)).bits // 8
    return max(1, CHUNK_BYTES // (vocab * size))


def _chunk(logits: torch.Tensor, valid: torch.Tensor, s: int, e: int, dt, temperature: float) -> torch.Tensor:
    """Rows s:e in the compute dtype, masked rows replaced by zeros (a fresh tensor, never a view)."""
    z = torch.where(valid[s:e, None], logits[s:e], logits.new_zeros(())).to(dt)
    if temperature != 1.0:
        z.div_(temperature)
    return z


class _SelectedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, valid, anchor, chunk, temperature, want_entropy):
        n, v = logits.shape
        dt = compute_dtype(logits.dtype)
        logp = logits.new_zeros(n, dtype=dt)
        lse = logits.new_zeros(n, dtype=dt)
        ent = logits.new_zeros(n, dtype=dt) if want_entropy else None
        kl = logits.new_zeros(n, dtype=dt) if anchor is not None else None
        # Without entropy/KL/temperature/promotion the rows are read in place: masked rows may give NaN here,
        # which the final torch.where replaces (the backward never reads them).
        direct = dt == logits.dtype and temperature == 1.0 and not want_entropy and anchor is None
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            z = logits[s:e] if direct else _chunk(logits, valid, s, e, dt, temperature)
            lz = torch.logsumexp(z, -1)
            lse[s:e] = lz
            logp[s:e] = z.gather(1, labels[s:e, None]).squeeze(1) - lz
            if want_entropy or anchor is not None:
                z.sub_(lz[:, None])  # log p
                p = z.exp()
                if want_entropy:
                    ent[s:e] = -(p * z).sum(-1)
                if anchor is not None:
                    a = torch.log_softmax(_chunk(anchor, valid, s, e, dt, temperature), -1)
                    kl[s:e] = (a.exp() * (a - z)).sum(-1)
        zero = logp.new_zeros(())
        logp = torch.where(valid, logp, zero)
        lse = torch.where(valid, lse, zero)
        if ent is not None:
            ent = torch.where(valid, ent, zero)
        if kl is not None:
            kl = torch.where(valid, kl, zero)
        ctx.save_for_backward(logits, labels, valid, lse, ent if ent is not None else lse, anchor)
        ctx.chunk, ctx.temperature = chunk, temperature
        ctx.mark_non_differentiable(lse)
        return logp, lse, ent, kl

    @staticmethod
    def backward(ctx, g_logp, _g_lse, g_ent, g_kl):
        logits, labels, valid, lse, ent, anchor = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        n, v = logits.shape
        dt = compute_dtype(logits.dtype)
        chunk, temperature = ctx.chunk, ctx.temperature
        zero = lse.new_zeros(())
        g_logp = torch.where(valid, g_logp.to(dt), zero) if g_logp is not None else None
        g_ent = torch.where(valid, g_ent.to(dt), zero) if g_ent is not None else None
        g_kl = torch.where(valid, g_kl.to(dt), zero) if g_kl is not None else None
        grad = torch.empty_like(logits)
        in_place = dt == logits.dtype  # work directly in the gradient's rows (no chunk buffer, no copy)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            if in_place:
                logq = torch.where(valid[s:e, None], logits[s:e], logits.new_zeros(()), out=grad[s:e])
                if temperature != 1.0:
                    logq.div_(temperature)
            else:
                logq = _chunk(logits, valid, s, e, dt, temperature)
            logq.sub_(lse[s:e, None])  # log p
            # d logp_y = onehot - p;  d H = -p (log p + H);  d KL(a || p) = p - a. Masked rows hold zeros, their
            # coefficients are 0, so their gradient is exactly 0.
            coef = torch.zeros(e - s, 1, dtype=dt, device=logits.device)
            if g_logp is not None:
                coef = coef - g_logp[s:e, None]
            if g_kl is not None:
                coef = coef + g_kl[s:e, None]
            if g_ent is not None:
                gz = logq.exp() * (coef - g_ent[s:e, None] * (logq + ent[s:e, None]))
                gz = logq.copy_(gz) if in_place else gz
            else:
                gz = logq.exp_().mul_(coef)
            if g_kl is not None:
                a = torch.softmax(_chunk(anchor, valid, s, e, dt, temperature), -1)
                gz.sub_(a * g_kl[s:e, None])
            if g_logp is not None:
                gz.scatter_add_(1, labels[s:e, None], g_logp[s:e, None])
            if temperature != 1.0:
                gz.div_(temperature)
            if not in_place:
                grad[s:e] = gz
        return grad, None, None, None, None, None, None


def _check_inputs(logits, labels, mask, ignore_index, anchor_logits):
    check_floating("logits", logits)
    check_tensor("labels", labels)
    if logits.dim() < 2:
        raise fail("logits", "a tensor (..., V) with a vocabulary dimension", describe(logits))
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise fail("labels", f"shape {tuple(logits.shape[:-1])} (the logits without the vocabulary dim)",
                   f"shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise fail("labels", "integer token ids", describe(labels))
    if mask is None:
        mask = labels != ignore_index
    else:
        check_tensor("mask", mask)
        if tuple(mask.shape) != tuple(labels.shape):
            raise fail("mask", f"shape {tuple(labels.shape)} (the labels' shape)", f"shape {tuple(mask.shape)}")
        mask = mask.bool() & (labels != ignore_index)
    if anchor_logits is not None:
        check_floating("anchor_logits", anchor_logits)
        if anchor_logits.shape != logits.shape:
            raise fail("anchor_logits", f"the logits' shape {tuple(logits.shape)}",
                       f"shape {tuple(anchor_logits.shape)}")
    v = logits.shape[-1]

    def bad():
        return mask & ((labels < 0) | (labels >= v))

    def got():
        pos = tuple(bad().nonzero()[0].tolist())
        return f"{labels[pos].item()} at position {pos}"

    require("labels", labels, lambda: bad().any(), f"token ids in [0, {v}) at unmasked positions", got)
    return mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, *,
                   ignore_index: int = -100, temperature: float = 1.0, return_entropy: bool = False,
                   anchor_logits: torch.Tensor | None = None, chunk_rows: int | None = None) -> TokenLogProbs:
    """Log-probabilities of the selected tokens, ``log softmax(logits / T)[..., labels]``, chunked.

    .. math:: \\log \\pi(y_t) = z_{t, y_t}/T - \\log\\sum_v e^{z_{t,v}/T}

    ``logits[..., t, :]`` scores ``labels[..., t]`` (shift before calling, as for a causal LM:
    ``logits[:, :-1], labels[:, 1:]``). A position counts when ``mask`` is true (default: every position)
    and its label is not ``ignore_index``.

    Args:
        logits: ``(..., V)`` floating logits; float16/bfloat16 are computed in float32 chunk by chunk.
        labels: ``(...)`` integer token ids.
        mask: ``(...)`` boolean completion mask (prompt and padding false).
        ignore_index: label value treated as masked.
        temperature: T, the sampling temperature (GRPO uses the rollout temperature).
        return_entropy: also return the per-token entropy ``H_t = -sum_v p log p``.
        anchor_logits: logits of an anchor model (the reference) of the logits' shape; returns the per-token
            full-vocabulary ``KL_t(pi_anchor || pi)`` (SparsePO). The anchor gets no gradient.
        chunk_rows: rows (positions) per chunk; default from a 16 MiB workspace budget.

    Returns:
        :class:`TokenLogProbs` ``(logps, mask, entropy, kl)``, float32 for half inputs; every output is exactly
        0 at masked positions, whatever the logits hold there (NaN, +-inf, +-1e4), and the logits' gradient
        there is exactly 0. A row of all-masked positions (an empty completion) gives zeros; see
        :func:`~losskit.preference.sequence_scores` for how an empty completion aggregates.

    Raises LossInputError for NaN/+inf logits or out-of-range labels at unmasked positions.
    """
    mask = _check_inputs(logits, labels, mask, ignore_index, anchor_logits)
    if temperature <= 0:
        raise fail("temperature", "a positive temperature", repr(temperature))
    shape = labels.shape
    v = logits.shape[-1]
    flat = logits.reshape(-1, v)
    valid = mask.reshape(-1)
    lab = torch.where(valid, labels.reshape(-1), torch.zeros((), dtype=labels.dtype, device=labels.device))
    anchor = anchor_logits.reshape(-1, v).detach() if anchor_logits is not None else None
    rows = chunk_rows or default_chunk_rows(v, logits.dtype)
    logp, lse, ent, kl = _SelectedLogProbs.apply(flat, lab.long(), valid, anchor, int(rows), float(temperature),
                                                 bool(return_entropy))

    def got():
        pos = (valid & ~torch.isfinite(lse)).nonzero()[0].item()
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(pos), shape))
        return f"a row with log-sum-exp {lse[pos].item()} at position {where}"

    require("logits", logits, lambda: (valid & ~torch.isfinite(lse)).any(),
            "finite logits (or -inf for excluded tokens) at unmasked positions", got)
    return TokenLogProbs(logp.reshape(shape), mask, ent.reshape(shape) if ent is not None else None,
                         kl.reshape(shape) if kl is not None else None)


def naive_token_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, *,
                         ignore_index: int = -100) -> torch.Tensor:
    """The reference ``log_softmax(logits).gather(labels)`` (unchunked; masked positions not protected).

    Kept as the baseline of the benchmark and the tests; use :func:`token_logprobs`.
    """
    if mask is None:
        mask = labels != ignore_index
    lab = torch.where(mask, labels, torch.zeros_like(labels))
    out = torch.log_softmax(logits.to(compute_dtype(logits.dtype)), -1)
    return out.gather(-1, lab.unsqueeze(-1)).squeeze(-1) * mask


# ------------------------------------------------------------------------------ token-level head: SparsePO
SPARSEPO_PAPER = Paper("SparsePO: Controlling Preference Alignment of LLMs via Sparse Token Masks", 2024,
                       "2410.05102", "Christopoulou, Cardenas, Lampouras, Bou-Ammar, Wang")


def _sparse_example(gen, dtype, b=5, t=6):
    def lr():
        return 0.5 * torch.randn(b, t, generator=gen, dtype=torch.float64)

    def kl():
        return 0.2 * torch.rand(b, t, generator=gen, dtype=torch.float64)

    lengths_w, lengths_l = torch.tensor([6, 3, 1, 5, 2]), torch.tensor([4, 6, 2, 1, 6])
    ar = torch.arange(t)[None]
    inputs = {"chosen_logratios": lr(), "rejected_logratios": lr(), "chosen_kl": kl(), "rejected_kl": kl(),
              "chosen_mask": ar < lengths_w[:, None], "rejected_mask": ar < lengths_l[:, None]}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    return Example(inputs, {}, grad=("chosen_logratios", "rejected_logratios", "chosen_kl", "rejected_kl"))


def _sparse_bad(ex):
    i = ex.inputs
    return [BadInput("sequence scores instead of per-token ratios",
                     ex.replace({"chosen_logratios": i["chosen_logratios"][:, 0]}), "chosen_logratios"),
            BadInput("KL of another shape", ex.replace({"rejected_kl": i["rejected_kl"][:, :-1]}), "rejected_kl"),
            BadInput("mask of another shape", ex.replace({"chosen_mask": i["chosen_mask"][:-1]}), "chosen_mask")]


def _sparse_extreme(ex):
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({k: v * 2e3 for k, v in ex.inputs.items() if k.endswith(("logratios", "kl"))})


SPARSE_TOKENS = InputKind("token log-ratios", "(B, T) per-token log-ratios and full-vocabulary KLs with masks",
                          bad_inputs=_sparse_bad, extreme=_sparse_extreme)


def _tokens(name, x, shape):
    check_floating(name, x)
    if x.dim() != 2 or (shape is not None and tuple(x.shape) != tuple(shape)):
        raise fail(name, f"a (B, T) per-token tensor{'' if shape is None else ' of shape ' + str(tuple(shape))}",
                   describe(x))
    return x


TOKEN_MASK = Maybe(Tensor("None or a (B, T) tensor of token weights in [0, 1]"))


@objective("sparsepo", seed=True, family="preference", input_kind=SPARSE_TOKENS, example=_sparse_example,
           paper=SPARSEPO_PAPER,
           domains={**PAIR_DOMAINS, "chosen_reward_mask": TOKEN_MASK, "rejected_reward_mask": TOKEN_MASK,
                    "chosen_kl_mask": TOKEN_MASK, "rejected_kl_mask": TOKEN_MASK},
           formula="L = -log sigma(beta sum_t m^u_t u_t(y_w) - beta sum_t m^u_t u_t(y_l) "
                   "- beta [sum_t m^d_t KL_t(y_l) - sum_t m^d_t KL_t(y_w)])")
def sparsepo(chosen_logratios, rejected_logratios, chosen_kl, rejected_kl, chosen_mask, rejected_mask, *,
             beta: float = 0.1, chosen_reward_mask=None, rejected_reward_mask=None, chosen_kl_mask=None,
             rejected_kl_mask=None, sample_weight=None, reduction: str = "mean", return_metrics: bool = False):
    """SparsePO: token-level DPO (TDPO-style KL term) with sparse token masks on rewards and KLs.

    .. math:: L = -\\log\\sigma\\Big(\\beta\\sum_t m^u_t u_t(y_w) - \\beta\\sum_t m^u_t u_t(y_l)
              - \\beta\\big[\\sum_t m^d_t \\mathrm{KL}_t(y_l) - \\sum_t m^d_t \\mathrm{KL}_t(y_w)\\big]\\Big)

    ``*_logratios``: per-token ``log pi - log pi_ref`` (B, T; log-ratios, any sign); ``*_kl``: per-token
    full-vocabulary ``KL(pi_ref || pi)`` (:func:`~losskit.preference.token_logprobs` with ``anchor_logits``);
    masks m^u, m^d in [0, 1] (B, T), by default the completion masks (the paper learns them or derives them
    from activations: compute them outside and pass them); ``beta > 0``. Masked tokens are never read. Equal to
    the authors' loss (huawei-noah/HEBO ``SparsePO/src/trainers/sparse_trainer.py``, whose per-token "KL" is
    ``-KL(ref || pi)``) with their masks passed here; their optional L1 penalties on the masks
    (``l1_norm_param_u/d``) belong to the mask model: add them to the loss yourself. Paper:
    Christopoulou et al., "SparsePO: Controlling Preference Alignment of LLMs via Sparse Token Masks", 2024,
    arXiv:2410.05102.
    """
    cw = _tokens("chosen_logratios", chosen_logratios, None)
    cl = _tokens("rejected_logratios", rejected_logratios, None)
    if cl.shape[0] != cw.shape[0]:
        raise fail("rejected_logratios", f"a batch of {cw.shape[0]}", describe(cl))
    _tokens("chosen_kl", chosen_kl, cw.shape)
    _tokens("rejected_kl", rejected_kl, cl.shape)
    for name, m, ref in (("chosen_mask", chosen_mask, cw), ("rejected_mask", rejected_mask, cl)):
        if not isinstance(m, torch.Tensor) or m.shape != ref.shape:
            raise fail(name, f"a (B, T) mask of shape {tuple(ref.shape)}", describe(m))
    for name, w, ref in (("chosen_reward_mask", chosen_reward_mask, cw), ("rejected_reward_mask",
                         rejected_reward_mask, cl), ("chosen_kl_mask", chosen_kl_mask, cw),
                         ("rejected_kl_mask", rejected_kl_mask, cl)):
        if w is not None:
            _tokens(name, w, ref.shape)
            check_unit_interval(name, w)

    def total(x, mask, weights):
        w = mask.to(x.dtype) if weights is None else weights * mask
        return torch.where(mask.bool(), x * w, x.new_zeros(())).sum(-1)

    r_w = beta * total(cw, chosen_mask, chosen_reward_mask)
    r_l = beta * total(cl, rejected_mask, rejected_reward_mask)
    kl_term = beta * (total(rejected_kl, rejected_mask, rejected_kl_mask) - total(chosen_kl, chosen_mask,
                                                                                   chosen_kl_mask))
    loss = margin_loss(r_w - r_l - kl_term)
    return _finish(loss, reduction, sample_weight, return_metrics, r_w, r_l)


def wpo_weights(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, *,
                ignore_index: int = -100, chunk_rows: int | None = None) -> torch.Tensor:
    """WPO's sequence weights: the geometric mean over tokens of ``pi(y_t) / sum_v pi(v)^2`` (detached, ``(B,)``).

    .. math:: w(y) = \\exp\\Big(\\frac{1}{|y|}\\sum_t \\log\\frac{\\pi(y_t)}{\\sum_v \\pi(v)^2}\\Big)

    The weight of an off-policy completion under the current policy, aligned so that a completion sampled
    from it weighs about 1 (eq. 2 of the paper, the "sampled alignment" TRL's ``use_weighting`` computes:
    ``log pi(y_t) - (lse(2 z) - 2 lse(z))``). ``logits`` ``(B, T, V)`` score ``labels`` ``(B, T)`` (shifted as
    for :func:`token_logprobs`), ``mask`` the completion tokens; computed chunk by chunk without a gradient. An
    empty completion weighs 1. Pass the chosen and rejected weights to :func:`~losskit.preference.wpo`.
    Paper: Zhou et al., "WPO: Enhancing RLHF with Weighted Preference Optimization", 2024, arXiv:2406.11827.
    """
    mask = _check_inputs(logits, labels, mask, ignore_index, None)
    if logits.dim() != 3:
        raise fail("logits", "(B, T, V) logits", describe(logits))
    with torch.no_grad():
        v = logits.shape[-1]
        dt = compute_dtype(logits.dtype)
        flat = logits.detach().reshape(-1, v)
        valid = mask.reshape(-1)
        lab = torch.where(valid, labels.reshape(-1), torch.zeros((), dtype=labels.dtype, device=labels.device))
        rows = chunk_rows or default_chunk_rows(v, logits.dtype)
        out = torch.zeros(flat.shape[0], dtype=dt, device=logits.device)
        for s in range(0, flat.shape[0], rows):
            e = min(s + rows, flat.shape[0])
            z = _chunk(flat, valid, s, e, dt, 1.0)
            lse1 = torch.logsumexp(z, -1)
            lse2 = torch.logsumexp(2.0 * z, -1)
            zy = z.gather(1, lab[s:e, None].long()).squeeze(1)
            out[s:e] = torch.where(valid[s:e], zy - lse1 - (lse2 - 2.0 * lse1), 0.0)
        out = out.reshape(labels.shape)
        n = mask.sum(-1).clamp_min(1).to(dt)
        return torch.exp(out.sum(-1) / n)
