"""The fused cross-entropy pass as a ``torch.library`` custom operator: no graph break under ``torch.compile``.

:class:`~losskit.fused._engine.FusedLinearFunction` runs the chunked pass in an ``autograd.Function``
whose Python body (a data-dependent number of chunks, the head writing into one reused buffer) dynamo
cannot trace, so it ran behind ``torch.compiler.disable``: a graph break. Here the same pass
(:func:`~losskit.fused._engine.run_pass` with :class:`~losskit.fused._heads.CrossEntropyHead`) is
wrapped as two opaque operators with fake (shape) implementations and an autograd formula:

* ``losskit::fused_linear_ce`` -> ``(reduced, token_losses, lse, grad_h, grad_W, grad_b)``: with
  ``grad_in_forward`` the gradients of ``reduced = sum_i coef_i loss_i`` are formed in the forward pass
  (as the Function does); the ``grad_*`` outputs not asked for are empty tensors;
* ``losskit::fused_linear_ce_backward`` -> ``(grad_h, grad_W, grad_b)``: the recomputing pass for
  per-token upstream gradients (``reduction='none'``, ``return_outputs=True``, ``recompute=True``).

Everything the head needs is a tensor or a scalar argument, so compiled graphs hold the operators as
single nodes; eager calls run the same code. The single-shard case only: the vocabulary-parallel path
(a process group, which is not an operator argument) keeps the Function.
"""

from __future__ import annotations

import torch

from .._core.conventions import _has_data
from ._engine import FusedOptions, _compute_dtype, run_pass, token_rows
from ._heads import CrossEntropyHead

_OUT = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_GRADS = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pass(h, W, b, target, weight, ignore_index, label_smoothing, z_loss, softcap, chunk_size, bf16_matmul,
          coef, need):
    head = CrossEntropyHead(target, weight, label_smoothing, z_loss, softcap)
    opts = FusedOptions(chunk_size=chunk_size, bf16_matmul=bf16_matmul)
    return run_pass(h, W, b, head, token_rows(target != ignore_index), opts, coef=coef, need=need)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty((0,))


@torch.library.custom_op("losskit::fused_linear_ce", mutates_args=())
def fused_linear_ce(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, target: torch.Tensor,
                    weight: torch.Tensor | None, coef: torch.Tensor | None, ignore_index: int,
                    label_smoothing: float, z_loss: float, softcap: float | None, chunk_size: int | None,
                    bf16_matmul: bool, grad_in_forward: bool, need_h: bool, need_W: bool, need_b: bool) -> _OUT:
    """``h`` (N, H), ``W`` (V, H), ``target`` (N,); ``coef`` (N,) the reduction's coefficients or None."""
    need = (need_h, need_W, need_b and b is not None)
    in_forward = grad_in_forward and coef is not None and any(need)
    stats, grads = _pass(h, W, b, target, weight, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
                         bf16_matmul, {"loss": coef} if in_forward else None, need)
    n, cd = h.shape[0], _compute_dtype(h.dtype)
    tok = stats.get("loss", h.new_zeros(n, dtype=cd))
    lse = stats.get("lse", h.new_zeros(n, dtype=cd))
    reduced = (coef * tok).sum() if coef is not None else tok.new_zeros(())
    gh, gW, gb = (g if (in_forward and g is not None) else _empty(x) for g, x in zip(grads, (h, W, h)))
    return reduced, tok, lse, gh, gW, gb


@fused_linear_ce.register_fake
def _(h, W, b, target, weight, coef, ignore_index, label_smoothing, z_loss, softcap, chunk_size, bf16_matmul,
      grad_in_forward, need_h, need_W, need_b):
    n, cd = h.shape[0], _compute_dtype(h.dtype)
    in_forward = grad_in_forward and coef is not None and (need_h or need_W or (need_b and b is not None))
    tok = h.new_empty((n,), dtype=cd)
    return (h.new_empty((), dtype=cd), tok, torch.empty_like(tok),
            torch.empty_like(h) if in_forward and need_h else _empty(h),
            torch.empty_like(W) if in_forward and need_W else _empty(W),
            torch.empty_like(b) if in_forward and need_b and b is not None else _empty(h))


@torch.library.custom_op("losskit::fused_linear_ce_backward", mutates_args=())
def fused_linear_ce_backward(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, target: torch.Tensor,
                             weight: torch.Tensor | None, coef_loss: torch.Tensor | None,
                             coef_lse: torch.Tensor | None, ignore_index: int, label_smoothing: float,
                             z_loss: float, softcap: float | None, chunk_size: int | None, bf16_matmul: bool,
                             need_h: bool, need_W: bool, need_b: bool) -> _GRADS:
    need = (need_h, need_W, need_b and b is not None)
    _, grads = _pass(h, W, b, target, weight, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
                     bf16_matmul, {"loss": coef_loss, "lse": coef_lse}, need)
    return tuple(g if g is not None else _empty(x) for g, x in zip(grads, (h, W, h)))


@fused_linear_ce_backward.register_fake
def _(h, W, b, target, weight, coef_loss, coef_lse, ignore_index, label_smoothing, z_loss, softcap, chunk_size,
      bf16_matmul, need_h, need_W, need_b):
    return (torch.empty_like(h) if need_h else _empty(h), torch.empty_like(W) if need_W else _empty(W),
            torch.empty_like(b) if need_b and b is not None else _empty(h))


# the arguments after the tensors, in the operators' order
_STATIC = ("ignore_index", "label_smoothing", "z_loss", "softcap", "chunk_size", "bf16_matmul")


def _setup(ctx, inputs, output):
    (h, W, b, target, weight, coef, ignore_index, label_smoothing, z_loss, softcap, chunk_size, bf16_matmul,
     grad_in_forward, need_h, need_W, need_b) = inputs
    # the grad_* outputs are results, not functions of the inputs to differentiate; and no zero tensors are
    # materialised for outputs the caller did not use (a (V, H) zero gradient for grad_W otherwise)
    ctx.mark_non_differentiable(*output[3:])
    ctx.set_materialize_grads(False)
    ctx.static = (ignore_index, label_smoothing, z_loss, softcap, chunk_size, bf16_matmul)
    ctx.need = (need_h, need_W, need_b and b is not None)
    ctx.in_forward = grad_in_forward and coef is not None and any(ctx.need)
    ctx.has_b, ctx.has_weight, ctx.has_coef = b is not None, weight is not None, coef is not None
    saved = [h, W, b if b is not None else h.new_empty(0), target,
             weight if weight is not None else h.new_empty(0), coef if coef is not None else h.new_empty(0)]
    # the gradients formed in the forward are held on ctx, not saved: backward hands them over and drops
    # them, so AccumulateGrad can take the (V, H) weight gradient without a copy (a saved tensor is still
    # referenced there and would be cloned: +V*H*4 bytes at the peak)
    ctx.fwd = list(output[3:]) if ctx.in_forward else None
    ctx.save_for_backward(*saved)


def _backward(ctx, g_red, g_tok, g_lse, _gh, _gW, _gb):
    h, W, b, target, weight, coef = ctx.saved_tensors
    b = b if ctx.has_b else None
    weight = weight if ctx.has_weight else None
    coef = coef if ctx.has_coef else None
    result = [None, None, None]
    if ctx.in_forward and g_red is not None:
        # the scalar's gradients were formed in the forward pass; loss.backward() (upstream 1, on CPU: a free
        # read) takes them as they are, anything else scales them (no host read on accelerators or in graphs)
        if ctx.fwd is None:
            raise RuntimeError("losskit fused loss: a second backward through a loss whose gradients were formed "
                               "in the forward pass; pass recompute=True to allow it")
        fwd, ctx.fwd = ctx.fwd, None
        one = g_red.device.type == "cpu" and _has_data(g_red) and bool((g_red == 1).all())
        result = [None if not need else (g if one else g * g_red.to(g.dtype)) for g, need in zip(fwd, ctx.need)]
        del fwd
        coef_loss = g_tok
    elif g_red is not None and coef is not None:
        coef_loss = g_red * coef if g_tok is None else g_tok + g_red * coef
    else:
        coef_loss = g_tok
    # the recomputing pass: the per-token outputs were returned to the caller, or reduction='none', or
    # recompute=True (with gradients in the forward the caller returns the reduced loss only: the per-token
    # outputs' upstream gradients are zeros)
    if not ctx.in_forward and (coef_loss is not None or g_lse is not None):
        gh, gW, gb = fused_linear_ce_backward(h, W, b, target, weight, coef_loss, g_lse, *ctx.static, *ctx.need)
        for i, g in enumerate((gh, gW, gb)):
            if ctx.need[i]:
                result[i] = g if result[i] is None else result[i] + g
    return (*result, None, None, None, *([None] * (len(_STATIC) + 4)))


fused_linear_ce.register_autograd(_backward, setup_context=_setup)


def cross_entropy_pass(h, W, b, target, weight, coef, *, ignore_index, label_smoothing, z_loss, softcap,
                       chunk_size, recompute, bf16_matmul, outputs_used: bool):
    """``(reduced, token_losses, lse)`` through the operator; ``outputs_used``: whether the caller returns the
    per-token outputs (their gradients then need the recomputing pass)."""
    grad = torch.is_grad_enabled()
    need = (grad and h.requires_grad, grad and W.requires_grad, grad and b is not None and b.requires_grad)
    out = fused_linear_ce(h, W, b, target, weight, coef, ignore_index, float(label_smoothing), float(z_loss),
                          None if softcap is None else float(softcap), chunk_size, bf16_matmul,
                          not recompute and not outputs_used, *need)
    return out[0], out[1], out[2]
