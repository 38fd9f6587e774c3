"""Fused losses from hidden states: cross-entropy, distillation, preference and vocabulary-parallel CE.

Each objective is a few lines on top of :mod:`losskit.fused._engine` (the chunked pass and its autograd
Function) and a head from :mod:`losskit.fused._heads`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import preference as _pref
from .._core import LossInputError, Paper, fail, finish, objective
from .._core.domains import (
    COUNT,
    FLAG,
    NONNEG_INT,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Choice,
    Domain,
    Either,
    Maybe,
    Tensor,
)
from .._core.domains import Callable as CallableOption
from .._core.validate import check_class_weight, check_floating, check_labels, describe
from ._engine import (
    DEFAULT_BUDGET,
    FusedLinearFunction,
    FusedOptions,
    _compute_dtype,
    all_reduce,
    eager,
    token_rows,
)
from ._heads import CrossEntropyHead, DistillationHead
from ._inputs import FUSED, distill_example, hidden_example, preference_example
from ._ops import cross_entropy_pass

__all__ = ["fused_linear_cross_entropy", "FusedLinearCrossEntropy", "vocab_parallel_cross_entropy",
           "VocabParallelCrossEntropy", "fused_linear_distillation", "FusedLinearDistillation",
           "fused_linear_preference", "FusedLinearPreference", "FusedOutput", "PreferenceOutput"]

CCE = Paper("Cut Your Losses in Large-Vocabulary Language Models", 2024, "2411.09009",
            "Wijmans, Huval, Hertzberg, Koltun, Krähenbühl")
HINTON = Paper("Distilling the Knowledge in a Neural Network", 2015, "1503.02531", "Hinton, Vinyals, Dean")
DPO = Paper("Direct Preference Optimization: Your Language Model is Secretly a Reward Model", 2023, "2305.18290",
            "Rafailov et al.")
MEGATRON = Paper("Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism", 2019,
                 "1909.08053", "Shoeybi et al.")


class FusedOutput(NamedTuple):
    """``loss`` as reduced; ``token_losses`` (unweighted, 0 at ignored tokens) and ``lse`` (the
    log-sum-exp of the (soft-capped) logits, 0 at ignored tokens), both shaped like ``target``."""

    loss: torch.Tensor
    token_losses: torch.Tensor
    lse: torch.Tensor


class PreferenceOutput(NamedTuple):
    """``loss`` and the per-sequence log-probabilities (B,) fed to the head (reference ones ``None``
    when no reference hidden states were given)."""

    loss: torch.Tensor
    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None
    ref_rejected_logps: torch.Tensor | None


# -------------------------------------------------------------------------------------- domains
@dataclass(frozen=True, repr=False)
class _Keywords(Domain):
    """A mapping of keyword-argument names to values (options passed on to a head)."""

    description: str = "a dict of keyword options"

    def contains(self, value, arguments=None) -> bool:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)

    def invalid(self) -> list:
        return ["not-a-dict"]


_BIAS = Maybe(Tensor("a bias of shape (V,) for the output projection"))
_PASS = {"chunk_size": Maybe(COUNT), "recompute": FLAG, "bf16_matmul": FLAG}
_CE_DOMAINS = {"linear_bias": _BIAS, "z_loss": NONNEGATIVE, "softcap": Maybe(POSITIVE), "return_outputs": FLAG,
               **_PASS}
#: why the fused objectives run eagerly under torch.compile (a graph break, no fullgraph compile)
_NO_COMPILE = {"compile": "by design the chunked pass runs eagerly (torch.compiler.disable): a custom "
                          "autograd.Function over a data-dependent number of chunks (the non-ignored tokens), "
                          "with per-chunk heads written in place into one reused logits buffer; under "
                          "torch.compile it is a graph break, so fullgraph=True cannot hold"}


# --------------------------------------------------------------------------------------- checks
def _check_linear(hname, h, wname, W, bname=None, b=None):
    check_floating(hname, h)
    check_floating(wname, W)
    if h.dim() < 2:
        raise fail(hname, "hidden states of shape (N, H) or (..., H)", f"shape {tuple(h.shape)}")
    if W.dim() != 2 or W.shape[1] != h.shape[-1]:
        raise fail(wname, f"an output projection of shape (V, {h.shape[-1]})", f"shape {tuple(W.shape)}")
    if W.dtype != h.dtype:
        raise fail(wname, f"the dtype of {hname} ({h.dtype})", describe(W))
    if b is not None:
        check_floating(bname, b)
        if tuple(b.shape) != (W.shape[0],):
            raise fail(bname, f"a bias of shape ({W.shape[0]},)", f"shape {tuple(b.shape)}")


def _check_target(target, lead, num_classes, ignore_index):
    if not isinstance(target, torch.Tensor):
        raise fail("target", "a tensor of class indices", describe(target))
    if tuple(target.shape) != tuple(lead):
        raise fail("target", f"class indices of shape {tuple(lead)} (the hidden states' leading shape)",
                   f"shape {tuple(target.shape)}")
    check_labels("target", target, num_classes, ignore_index)


def _coefficients(valid, lead, reduction, sample_weight, dtype, denominator=None):
    """The per-token coefficients ``c`` (N,) of the reduced loss ``sum_i c_i l_i``, or ``None`` for 'none'.

    The fused pass needs them before it runs (it forms the gradients of the scalar in the forward), so
    the reduction is folded into the pass; the weights come from :func:`~losskit._core.finish` (which
    validates ``sample_weight`` and applies the mask) and 'mean' divides by ``sum_i s_i d_i`` over the
    counted tokens (``d``: the class weights of the targets, torch's rule, else 1), 0 when that is 0:
    ``sum_i c_i l_i`` is ``finish(l, reduction, sample_weight=, mask=valid, denominator=d)``.
    """
    if reduction == "none":
        return None
    ones = torch.ones(lead, dtype=dtype, device=valid.device)
    base = finish(ones, "none", sample_weight=sample_weight, mask=valid.reshape(lead)).reshape(-1)
    if reduction == "sum":
        return base
    denom = (base if denominator is None else base * denominator).sum()
    return base / torch.where(denom == 0, denom.new_ones(()), denom)


# --------------------------------------------------------------------------------- cross-entropy
def _cross_entropy(hidden, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing, z_loss,
                   softcap, sample_weight, reduction, outputs, chunk_size, recompute, bf16_matmul,
                   group=None, vocab_start=0, vocab_total=None):
    _check_linear("hidden", hidden, "linear_weight", linear_weight, "linear_bias", linear_bias)
    vl = linear_weight.shape[0]
    vt = vocab_total or vl
    lead = hidden.shape[:-1]
    _check_target(target, lead, vt, ignore_index)
    check_class_weight(weight, vl)
    cd = _compute_dtype(hidden.dtype)
    h = hidden.reshape(-1, hidden.shape[-1])
    y = target.reshape(-1)
    valid = y != ignore_index
    head = None if group is None else CrossEntropyHead(y, weight, label_smoothing, z_loss, softcap, vocab_start,
                                                       vt, group)
    wy = None
    if reduction == "mean" and weight is not None:
        yl = (y - vocab_start).clamp(0, vl - 1)
        hit = valid & (y >= vocab_start) & (y < vocab_start + vl)
        wy = all_reduce(torch.where(hit, weight.to(cd).index_select(0, yl), weight.new_zeros((), dtype=cd)), group)
    coef = _coefficients(valid, lead, reduction, sample_weight, cd, wy)
    if group is None:  # one shard: the custom operator (no graph break under torch.compile)
        reduced, tok, lse = cross_entropy_pass(
            h, linear_weight, linear_bias, y, weight, coef, ignore_index=ignore_index,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, chunk_size=chunk_size,
            recompute=recompute, bf16_matmul=bf16_matmul, outputs_used=outputs or reduction == "none")
    else:
        opts = FusedOptions(chunk_size=chunk_size, recompute=recompute, bf16_matmul=bf16_matmul, group=group)
        reduced, tok, lse = _sharded_pass(h, linear_weight, linear_bias, head, valid, coef, opts)
    if reduction == "none":
        loss = finish(tok.reshape(lead), "none", sample_weight=sample_weight, mask=valid.reshape(lead))
    else:
        loss = reduced
    if outputs:
        return FusedOutput(loss, tok.reshape(lead), lse.reshape(lead))
    return loss


@eager
def _sharded_pass(h, W, b, head, valid, coef, opts):
    """The vocabulary-parallel pass (a process group is no operator argument): the autograd Function, run
    eagerly (a graph break under torch.compile)."""
    return FusedLinearFunction.apply(h, W, b, head, token_rows(valid), coef, opts)


_CE_FORMULA = ("l_i = (1-eps) w_y (lse_i - z'_iy) + eps/V sum_k w_k (lse_i - z'_ik) + lam lse_i^2, "
               "z' = s tanh((h W^T + b)/s), chunk by chunk; mean = sum_i s_i l_i / sum_i s_i w_{y_i}")


@objective(
    "fused_linear_cross_entropy", family="fused", input_kind=FUSED, example=hidden_example, paper=CCE,
    properties={"nonnegative"}, formula=_CE_FORMULA, module_name="FusedLinearCrossEntropy",
    allow_neg_inf=(), promote_half=False, domains=_CE_DOMAINS,
)
def fused_linear_cross_entropy(hidden: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                               linear_bias: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                               ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
                               softcap: float | None = None, sample_weight: torch.Tensor | None = None,
                               reduction: str = "mean", return_outputs: bool = False,
                               chunk_size: int | None = None, recompute: bool = False,
                               bf16_matmul: bool = False):
    """Cross-entropy of ``hidden @ linear_weight.T + linear_bias`` without materialising the logits.

    Equal to ``F.cross_entropy(hidden @ W.T + b, target, weight=, ignore_index=, label_smoothing=)``
    (plus the optional z-loss), computed over chunks of tokens with one reused ``(chunk, V)`` float32
    buffer; the gradients for ``hidden``, ``linear_weight`` and ``linear_bias`` are formed chunk by
    chunk (in the forward pass for a scalar loss, recomputed in the backward for ``reduction='none'``
    or ``recompute=True``), with float32 accumulation of the weight gradient.

    .. math:: \\ell_i = (1-\\varepsilon) w_{y_i} (\\mathrm{lse}_i - z'_{i y_i})
              + \\tfrac{\\varepsilon}{V} \\sum_k w_k (\\mathrm{lse}_i - z'_{ik}) + \\lambda\\, \\mathrm{lse}_i^2,
              \\qquad z' = s \\tanh(z / s),\\ z = h W^\\top + b

    Args:
        hidden: (N, H) or (..., H) hidden states; float64, float32 or bfloat16/float16.
        linear_weight: (V, H) output projection (same dtype); ``linear_bias``: optional (V,).
        target: (N,) or (...) class indices; ``ignore_index`` entries cost nothing and give 0.
        weight: (V,) class weights, as in ``F.cross_entropy`` ('mean' divides by ``sum w_{y_i}``).
        label_smoothing: ``eps`` in [0, 1], as in ``F.cross_entropy``.
        z_loss: ``lambda >= 0``, the PaLM logit z-loss coefficient (1e-4 in PaLM, arXiv 2204.02311); it is
            not multiplied by the class weight.
        softcap: ``s > 0``, Gemma-2 style logit soft-capping (``None``: off).
        sample_weight: per-token weights; 'mean' is ``sum s_i l_i / sum s_i w_{y_i}``.
        return_outputs: return :class:`FusedOutput` (loss, per-token losses, log-sum-exp), both
            differentiable (using them triggers a recomputing backward pass).
        chunk_size: tokens per chunk, an integer >= 1 (default: the largest power of two whose float32
            (chunk, V) buffer fits 64 MiB, clamped to [512, 4096], then from 1792 counted tokens on capped
            at 11% of them (a multiple of 32, at least 224); see :func:`losskit.fused.chunk_rows`).
        bf16_matmul: for half inputs, run the GEMMs in the input dtype (faster on CPUs with bf16 units;
            logits rounded to bf16 as in the naive path); default: float32 GEMMs on upcast operands.

    An all-ignored batch gives 0 (every reduction) with zero gradients. Half inputs return a float32
    loss. Only the non-ignored tokens are visited (selecting them reads their count on the host: one
    synchronisation on accelerators); meta tensors visit every token and give the result's shape. Under
    ``torch.compile`` the pass is one opaque node, the custom operator ``losskit::fused_linear_ce`` (with its
    shape function and autograd formula; :mod:`losskit.fused._ops`): ``fullgraph=True`` holds, and a model
    whose loss this is compiles without a graph break. Cut Cross-Entropy (Cut Your Losses in Large-Vocabulary Language Models, 2024, arXiv
    2411.09009) and Liger-Kernel (arXiv 2410.10989) are the GPU peers.
    """
    return _cross_entropy(hidden, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing,
                          z_loss, softcap, sample_weight, reduction, return_outputs, chunk_size, recompute,
                          bf16_matmul)


@objective(
    "vocab_parallel_cross_entropy", family="fused", input_kind=FUSED, example=hidden_example, paper=MEGATRON,
    properties={"nonnegative"}, formula="as fused_linear_cross_entropy with max, sum exp, target logit and "
    "sum of logits all-reduced over the ranks holding the vocabulary shards",
    module_name="VocabParallelCrossEntropy", allow_neg_inf=(), promote_half=False,
    domains={**_CE_DOMAINS, "vocab_start": Maybe(NONNEG_INT)}, compile=False, skip_reasons=_NO_COMPILE,
)
def vocab_parallel_cross_entropy(hidden: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                                 group=None, vocab_start: int | None = None,
                                 linear_bias: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                                 ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
                                 softcap: float | None = None, sample_weight: torch.Tensor | None = None,
                                 reduction: str = "mean", return_outputs: bool = False,
                                 chunk_size: int | None = None, recompute: bool = False,
                                 bf16_matmul: bool = False):
    """Fused cross-entropy with the output projection sharded by vocabulary across ``torch.distributed`` ranks.

    Each rank holds rows ``[vocab_start, vocab_start + V_r)`` of ``W`` (the tensor-parallel layout of
    Megatron-LM, arXiv 1909.08053), its shard of ``linear_bias`` and of the class ``weight``; ``hidden``
    and ``target`` (global class indices) are the same on every rank. Per chunk, every rank forms its
    shard of the logits; the per-token max, sum of exponentials, target logit (and for label smoothing
    the sum of logits) are combined with all-reduce, so

    .. math:: \\mathrm{lse}_i = m_i + \\log \\sum_r \\sum_{k \\in r} e^{z_{ik} - m_i},\\quad
              m_i = \\max_r \\max_{k \\in r} z_{ik}

    and the loss is that of :func:`fused_linear_cross_entropy` on the full vocabulary, on every rank. The
    gradient for ``hidden`` is all-reduced (every rank gets the full gradient); each rank gets the
    gradient of its own weight shard. ``group=None`` uses the default group when ``torch.distributed``
    is initialised and a single shard otherwise. ``vocab_start`` defaults to ``rank * V_r`` (equal
    shards); it must satisfy ``vocab_start + V_r <= V`` and be ``None`` or 0 without a process group.
    """
    import torch.distributed as dist

    vl = linear_weight.shape[0] if isinstance(linear_weight, torch.Tensor) and linear_weight.dim() == 2 else 0
    if group is None and dist.is_available() and dist.is_initialized():
        group = dist.group.WORLD
    if group is None:
        if vocab_start not in (None, 0):
            raise fail("vocab_start", "None or 0 without a process group (one shard holds the whole vocabulary)",
                       repr(vocab_start))
        start, total = 0, None
    else:
        # the vocabulary size is needed on the host (label range, chunking): one read of an all-reduced count
        n = torch.tensor([vl], dtype=torch.int64, device=linear_weight.device)
        total = int(all_reduce(n, group).item())
        start = dist.get_rank(group) * vl if vocab_start is None else int(vocab_start)
        if start + vl > total:
            raise fail("vocab_start", f"a shard start with vocab_start + {vl} <= {total} (the whole vocabulary)",
                       repr(start))
    return _cross_entropy(hidden, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing,
                          z_loss, softcap, sample_weight, reduction, return_outputs, chunk_size, recompute,
                          bf16_matmul, group=group, vocab_start=start, vocab_total=total)


# ---------------------------------------------------------------------------------- distillation
_DIVERGENCES = ("forward", "reverse", "js")


@eager
def _distill(hs, Ws, ht, Wt, target, bs, bt, divergence, beta, temperature, ignore_index, sample_weight,
             reduction, chunk_size, recompute, bf16_matmul):
    _check_linear("student_hidden", hs, "student_weight", Ws, "student_bias", bs)
    _check_linear("teacher_hidden", ht, "teacher_weight", Wt, "teacher_bias", bt)
    if Wt.shape[0] != Ws.shape[0]:
        raise fail("teacher_weight", f"the student's vocabulary of {Ws.shape[0]}", f"shape {tuple(Wt.shape)}")
    lead = hs.shape[:-1]
    if tuple(ht.shape[:-1]) != tuple(lead):
        raise fail("teacher_hidden", f"leading shape {tuple(lead)} (as student_hidden)", f"shape {tuple(ht.shape)}")
    cd = _compute_dtype(hs.dtype)
    h = hs.reshape(-1, hs.shape[-1])
    if target is None:
        valid = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
    else:
        _check_target(target, lead, Ws.shape[0], ignore_index)
        valid = target.reshape(-1) != ignore_index
    mm = hs.dtype if (bf16_matmul and cd != hs.dtype) else cd
    head = DistillationHead(ht.detach().reshape(-1, ht.shape[-1]), Wt.detach(), None if bt is None else bt.detach(),
                            divergence, beta, temperature, mm)
    coef = _coefficients(valid, lead, reduction, sample_weight, cd)
    opts = FusedOptions(chunk_size=chunk_size, budget_bytes=DEFAULT_BUDGET // 4, recompute=recompute,
                        bf16_matmul=bf16_matmul)
    reduced, tok = FusedLinearFunction.apply(h, Ws, bs, head, token_rows(valid), coef, opts)
    if reduction == "none":
        return finish(tok.reshape(lead), "none", sample_weight=sample_weight, mask=valid.reshape(lead))
    return reduced


@objective(
    "fused_linear_distillation", family="fused", input_kind=FUSED, example=distill_example, paper=HINTON,
    properties={"nonnegative"}, module_name="FusedLinearDistillation", allow_neg_inf=(), promote_half=False,
    formula="T^2 D(p_t || p_s), p = softmax(h W^T / T); D = KL(p_t||p_s) | KL(p_s||p_t) | "
            "beta KL(p_t||M) + (1-beta) KL(p_s||M), M = beta p_t + (1-beta) p_s",
    domains={"student_bias": _BIAS, "teacher_bias": _BIAS, "divergence": Choice(*_DIVERGENCES), "beta": OPEN_UNIT,
             "temperature": POSITIVE, **_PASS},
    compile=False, skip_reasons=_NO_COMPILE,
)
def fused_linear_distillation(student_hidden: torch.Tensor, student_weight: torch.Tensor,
                              teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor,
                              target: torch.Tensor | None = None, *, student_bias: torch.Tensor | None = None,
                              teacher_bias: torch.Tensor | None = None, divergence: str = "forward",
                              beta: float = 0.5, temperature: float = 1.0, ignore_index: int = -100,
                              sample_weight: torch.Tensor | None = None, reduction: str = "mean",
                              chunk_size: int | None = None, recompute: bool = False,
                              bf16_matmul: bool = False):
    """Token-level distillation between a student (h_s, W_s) and a teacher (h_t, W_t), logits never held.

    With ``p_s = softmax(h_s W_s^T / T)`` and ``p_t = softmax(h_t W_t^T / T)`` per token:

    .. math:: \\ell = T^2 D(p_t, p_s),\\quad D = \\begin{cases}
              \\mathrm{KL}(p_t \\| p_s) & \\text{forward} \\\\ \\mathrm{KL}(p_s \\| p_t) & \\text{reverse} \\\\
              \\beta\\,\\mathrm{KL}(p_t \\| M) + (1-\\beta)\\,\\mathrm{KL}(p_s \\| M),\\ M = \\beta p_t + (1-\\beta) p_s
              & \\text{js} \\end{cases}

    (``T^2`` keeps gradient magnitudes comparable across temperatures: Distilling the Knowledge in a
    Neural Network, Hinton et al., 2015, arXiv 1503.02531; ``beta = 0.5`` is the Jensen-Shannon
    divergence.) The teacher gets no gradient; the student's ``student_hidden``, ``student_weight`` and
    ``student_bias`` do, chunk by chunk, as in :func:`fused_linear_cross_entropy`. The teacher may have a
    different hidden size but the same vocabulary. ``target`` (optional) only marks ``ignore_index``
    tokens (padding) to skip; 'mean' averages over the remaining tokens. Computed in float32 for half
    inputs (no bf16 cancellation in the log-ratios). ``temperature > 0``; ``beta`` in (0, 1) (the skew of
    ``js``; its endpoints make the divergence vanish identically); ``divergence`` one of 'forward',
    'reverse', 'js'.
    """
    return _distill(student_hidden, student_weight, teacher_hidden, teacher_weight, target, student_bias,
                    teacher_bias, divergence, beta, temperature, ignore_index, sample_weight, reduction,
                    chunk_size, recompute, bf16_matmul)


# ------------------------------------------------------------------------------------ preference
def _sequence_logps(h, W, b, y, valid, opts):
    """Per-token cross-entropy (N,) by the fused pass (gradients by recomputation)."""
    head = CrossEntropyHead(y)
    _, tok, _ = FusedLinearFunction.apply(h, W, b, head, token_rows(valid), None, opts)
    return tok


#: The preference family's pairwise heads by name: each takes ``(policy_chosen_logps,
#: policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta, reduction)``.
PREFERENCE_HEADS = {f.__name__: f for f in (
    _pref.dpo, _pref.cdpo, _pref.robust_dpo, _pref.hinge_dpo, _pref.ipo, _pref.exo, _pref.nca, _pref.bco,
    _pref.sppo_hard, _pref.aot, _pref.apo_zero, _pref.apo_down, _pref.discopop, _pref.f_dpo, _pref.orpo,
    _pref.cpo, _pref.simpo, _pref.alphapo, _pref.cpl, _pref.mapl, _pref.ddo, _pref.d2o, _pref.mnpo,
)}


def _resolve_head(head):
    if isinstance(head, str):
        return PREFERENCE_HEADS[head]  # the name's domain (a Choice) was checked by the registry wrapper
    return head


#: the head's arguments, as this objective's arguments (the head's errors name the latter)
_HEAD_ARGS = {"policy_chosen_logps": "hidden", "policy_rejected_logps": "hidden",
              "ref_chosen_logps": "ref_hidden", "ref_rejected_logps": "ref_hidden"}


def _call_head(head_fn, scores, kw):
    """``head_fn(*scores, **kw)``; a LossInputError of the head is re-raised naming this objective's argument
    (a reference-free head given ``ref_hidden`` names ``ref_hidden``; its own options ``head_options``)."""
    try:
        return head_fn(*scores, **kw)
    except LossInputError as e:
        arg = _HEAD_ARGS.get(e.argument, e.argument if e.argument in ("beta", "reduction") else "head_options")
        raise fail(arg, f"{e.expected} (the head's {e.argument})", e.got) from None


@eager
def _preference(hidden, linear_weight, target, ref_hidden, ref_linear_weight, head, linear_bias,
                ref_linear_bias, beta, nll_weight, average_log_prob, ignore_index, head_options, sample_weight,
                reduction, return_logps, chunk_size, bf16_matmul):
    _check_linear("hidden", hidden, "linear_weight", linear_weight, "linear_bias", linear_bias)
    if hidden.dim() != 4 or hidden.shape[1] != 2:
        raise fail("hidden", "hidden states of shape (B, 2, T, H): [:, 0] chosen, [:, 1] rejected",
                   f"shape {tuple(hidden.shape)}")
    lead = hidden.shape[:-1]
    _check_target(target, lead, linear_weight.shape[0], ignore_index)
    head_fn = _resolve_head(head)
    bsz, _, t = lead
    opts = FusedOptions(chunk_size=chunk_size, bf16_matmul=bf16_matmul)
    y = target.reshape(-1)
    valid = y != ignore_index
    count = valid.reshape(bsz, 2, t).sum(-1)
    keep = count.sum(1) > 0  # a pair without any counted token (all ignore_index) is ignored
    tok = _sequence_logps(hidden.reshape(-1, hidden.shape[-1]), linear_weight, linear_bias, y, valid, opts)
    tok = tok.reshape(bsz, 2, t)

    def seq(tokens):
        lp = -tokens.sum(-1)
        return lp / count.clamp_min(1).to(lp.dtype) if average_log_prob else lp

    logp = seq(tok)
    ref = (None, None)
    if ref_hidden is not None:
        if ref_linear_weight is None:
            raise fail("ref_linear_weight", "the reference model's output projection (V, H) with ref_hidden",
                       "None")
        rw, rb = ref_linear_weight, ref_linear_bias
        _check_linear("ref_hidden", ref_hidden, "ref_linear_weight", rw, "ref_linear_bias", rb)
        if tuple(ref_hidden.shape[:-1]) != tuple(lead):
            raise fail("ref_hidden", f"leading shape {tuple(lead)} (as hidden)", f"shape {tuple(ref_hidden.shape)}")
        with torch.no_grad():
            rtok = _sequence_logps(ref_hidden.detach().reshape(-1, ref_hidden.shape[-1]), rw.detach(),
                                   None if rb is None else rb.detach(), y, valid, opts)
        rlogp = seq(rtok.reshape(bsz, 2, t))
        ref = (rlogp[:, 0], rlogp[:, 1])
    # the head sees the kept pairs only (a batch-coupled head is not coupled to ignored pairs); selecting
    # them reads the pair count on the host (as the pass's chunking does; meta tensors keep every pair)
    pairs = token_rows(keep)
    scores = (logp[:, 0], logp[:, 1], *ref)
    kw = dict(beta=beta, reduction="none", **(head_options or {}))
    if len(pairs) == bsz:
        per = _call_head(head_fn, scores, kw)
    elif len(pairs) == 0:
        per = logp[:, 0] * 0  # nothing to score: 0 with zero gradients
    else:
        out = _call_head(head_fn, tuple(None if v is None else v.index_select(0, pairs) for v in scores), kw)
        per = out.new_zeros(bsz).index_copy(0, pairs, out)
    if nll_weight:
        per = per + nll_weight * tok[:, 0].sum(-1) / count[:, 0].clamp_min(1).to(tok.dtype)
    loss = finish(per, reduction, sample_weight=sample_weight, mask=keep)
    if return_logps:
        return PreferenceOutput(loss, logp[:, 0], logp[:, 1], *ref)
    return loss


@objective(
    "fused_linear_preference", family="fused", input_kind=FUSED, example=preference_example, paper=DPO,
    module_name="FusedLinearPreference", allow_neg_inf=(), promote_half=False,
    formula="head(sum_t log p(y_ct), sum_t log p(y_rt), [ref...]) + nll_weight * mean_t CE(chosen), "
            "log p by the fused pass",
    domains={"head": Either(Choice(*PREFERENCE_HEADS), CallableOption(
                 "a callable head(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, "
                 "*, beta, reduction)")),
             "linear_bias": _BIAS, "ref_linear_bias": _BIAS, "beta": POSITIVE, "nll_weight": NONNEGATIVE,
             "average_log_prob": FLAG, "head_options": Maybe(_Keywords()), "return_logps": FLAG,
             "chunk_size": Maybe(COUNT), "bf16_matmul": FLAG},
    compile=False, skip_reasons=_NO_COMPILE,
)
def fused_linear_preference(hidden: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
                            ref_hidden: torch.Tensor | None = None, ref_linear_weight: torch.Tensor | None = None,
                            *, head="dpo", linear_bias: torch.Tensor | None = None,
                            ref_linear_bias: torch.Tensor | None = None, beta: float = 0.1,
                            nll_weight: float = 0.0, average_log_prob: bool = False, ignore_index: int = -100,
                            head_options: dict | None = None, sample_weight: torch.Tensor | None = None,
                            reduction: str = "mean", return_logps: bool = False,
                            chunk_size: int | None = None, bf16_matmul: bool = False):
    """A preference loss (DPO and its relatives) from the policy's (and reference's) hidden states.

    ``hidden`` is (B, 2, T, H): ``[:, 0]`` the chosen and ``[:, 1]`` the rejected completion of each pair
    (from the concatenated layout ``h2`` of shape (2B, T, H): ``h2.view(2, B, T, H).transpose(0, 1)``),
    ``target`` (B, 2, T) the next tokens (already shifted; prompt and padding = ``ignore_index``). The
    per-sequence log-probabilities

    .. math:: \\log \\pi(y \\mid x) = \\sum_t \\log \\mathrm{softmax}(h_t W^\\top + b)_{y_t}

    (divided by the number of tokens with ``average_log_prob=True``, as SimPO uses) are computed by the
    fused pass for the policy and, without gradient, for the reference (``ref_hidden`` with
    ``ref_linear_weight`` and ``ref_linear_bias``: the frozen reference model's own output layer). All
    B pairs are gathered before the head runs, so batch-coupled heads (IPO's batch statistics, AOT's
    sorting) see the whole batch:
    ``head(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta,
    reduction='none', **head_options)``; ``head`` is a callable or the name of one of the preference
    family's pairwise heads (:data:`PREFERENCE_HEADS`: ``'dpo'`` (Direct Preference Optimization,
    Rafailov et al., 2023, arXiv 2305.18290), ``'ipo'``, ``'simpo'``, ``'orpo'``, ...). The head's
    errors name this objective's arguments (``ref_hidden`` for its reference scores). The head's gradient
    with respect to the scores flows back through a second chunked pass. ``nll_weight >= 0`` adds
    ``nll_weight`` times the chosen sequence's mean token cross-entropy (per pair; RPO / CPO style).

    ``beta > 0`` (a negative beta trains toward the rejected answer). A pair whose every target is
    ``ignore_index`` is ignored: it is not passed to the head, its 'none' loss is exactly 0 and it does
    not count in 'mean'; an all-ignored batch gives 0 with zero gradients. (Selecting the kept pairs
    reads their count on the host, as the pass's token selection does.)
    """
    return _preference(hidden, linear_weight, target, ref_hidden, ref_linear_weight, head, linear_bias,
                       ref_linear_bias, beta, nll_weight, average_log_prob, ignore_index, head_options,
                       sample_weight, reduction, return_logps, chunk_size, bf16_matmul)


FusedLinearCrossEntropy = fused_linear_cross_entropy.Module
VocabParallelCrossEntropy = vocab_parallel_cross_entropy.Module
FusedLinearDistillation = fused_linear_distillation.Module
FusedLinearPreference = fused_linear_preference.Module
