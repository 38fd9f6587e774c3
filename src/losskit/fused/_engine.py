"""The one abstraction of the fused family: a chunked pass over tokens that never holds N x V logits.

For every chunk of ``c`` (non-ignored) tokens the pass forms the logits ``z = h_c W^T (+ b)`` in one
reused ``(c, V)`` buffer in the compute dtype (float32 for half inputs, else the input dtype), hands the
buffer to a *head* that computes per-token statistics (loss, log-sum-exp, ...) and, when asked, overwrites
the buffer in place with ``dL/dz`` for per-token coefficients; the pass then forms ``grad_h_c = G W`` and
accumulates ``grad_W += G^T h_c`` and ``grad_b += sum G`` in the compute dtype.

:class:`FusedLinearFunction` wraps the pass in ``torch.autograd.Function`` with two modes:

* gradient in the forward (the default for a scalar loss): the gradients for the scalar are formed in the
  forward pass (6 N H V flops in all) and the backward only scales them by the upstream gradient;
* recompute (``reduction='none'``, gradients through the per-token outputs, or ``recompute=True``): the
  forward keeps O(N) statistics only, the backward runs the pass again with the per-token upstream
  gradients as coefficients (8 N H V flops).

Heads implement ``__call__(z, idx, coef) -> dict[str, Tensor(c,)]``; ``coef`` is ``None`` (no gradient)
or a dict ``{stat: Tensor(c,) or None}`` and the head then writes ``d(sum_i sum_s coef_s[i] stat_s[i]) / dz``
into ``z``. ``idx`` holds the global token positions of the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._core.compiler import eager
from .._core.conventions import HALF_DTYPES, compute_dtype
from .._core.distributed import all_reduce
from ..ops.budget import FUSED_CHUNK_BYTES

__all__ = ["chunk_rows", "CHUNK_SHARE", "CHUNK_FLOOR", "CAP_FROM_TOKENS", "FusedOptions", "run_pass",
           "FusedLinearFunction", "all_reduce", "eager", "token_rows"]

_HALF = HALF_DTYPES
DEFAULT_BUDGET = FUSED_CHUNK_BYTES


def token_rows(valid: torch.Tensor) -> torch.Tensor:
    """The positions of the tokens the pass visits: ``valid.nonzero()`` (one host synchronisation on
    accelerators: the pass's chunking depends on the number of counted tokens).

    Tensors without data (meta) have no values to select by: every position is visited, which gives
    the result's shapes and dtypes without a data-dependent shape (``nonzero`` has no meta kernel).
    """
    if valid.is_meta:
        return torch.arange(valid.numel(), device=valid.device)
    return valid.nonzero().squeeze(1)


#: The token cap of the chunk rule: a chunk holds at most ``CHUNK_SHARE`` of the counted tokens (rounded down
#: to a multiple of 32), never fewer than ``CHUNK_FLOOR`` rows, and only from ``CAP_FROM_TOKENS`` tokens on.
#: The naive path's extra memory is 2.5-2.9 N V 4 bytes from N = 2048 on (the logits, their log-softmax and
#: gradients; 2.0 at N = 1024; measured by benchmarks/bench_fused_chunks.py), the fused path's the (c, V)
#: buffer plus < 1 MB, so c <= 0.11 N keeps the fused extra at or below ~4.4% of the naive one (5% would
#: allow 0.125 N). Below 224 rows every chunk streams W twice and grad W once for too few rows (+11-20%
#: time measured at 96-224 rows against 512 at N = 1024), and below 1792 tokens even the floor misses 5%
#: (224 / (2.5 N) > 5%): there the budget rule's 512 rows stay, time first.
CHUNK_SHARE = 0.11
CHUNK_FLOOR = 224
CAP_FROM_TOKENS = 8 * CHUNK_FLOOR


def chunk_rows(n: int, v: int, budget_bytes: int = DEFAULT_BUDGET, itemsize: int = 4,
               lo: int = 512, hi: int = 4096, share: float | None = CHUNK_SHARE) -> int:
    """Tokens per chunk for ``n`` counted tokens and a vocabulary (shard) of ``v``.

    First the largest power of two whose ``(c, V)`` buffer fits ``budget_bytes`` (64 MiB), clamped to
    ``[lo, hi]`` (below ~512 tokens the rank-c GEMMs run under the machine's GEMM rate on a CPU): V = 32000
    and V = 128000 give 512 tokens. Then, for ``n >= CAP_FROM_TOKENS`` (1792), the cap
    ``max(CHUNK_FLOOR, floor(share * n / 32) * 32)``: 224 rows at N = 2048, 448 at N = 4096, 512 (no cap) from
    N = 4655 on; ``share=None`` turns the cap off. Finally clamped to ``n``. The cap keeps the buffer a
    fixed share of the (N, V) logits the pass avoids (<= 5% of the naive path's extra memory from N = 2048,
    measured in docs/fused.md).
    """
    c = lo
    while c * 2 <= hi and c * 2 * v * itemsize <= budget_bytes:
        c *= 2
    if share is not None and n >= CAP_FROM_TOKENS:
        c = min(c, max(CHUNK_FLOOR, int(share * n) // 32 * 32))
    return max(1, min(c, n))


@dataclass
class FusedOptions:
    """How a pass runs. ``chunk_size=None``: from ``budget_bytes``. ``bf16_matmul``: run the three GEMMs
    with half-precision operands (faster, logits rounded to the input dtype as the naive path does);
    otherwise half inputs are multiplied in float32 (half-precision GEMMs get 4x the budget).
    ``group``: the process group over which the
    vocabulary is sharded (``grad_h`` is all-reduced over it)."""

    chunk_size: int | None = None
    budget_bytes: int = DEFAULT_BUDGET
    recompute: bool = False
    bf16_matmul: bool = False
    group: object = None


_compute_dtype = compute_dtype  # the dtype policy (losskit._core.conventions), one definition


def run_pass(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, head, rows: torch.Tensor,
             opts: FusedOptions, coef: dict | None = None, need=(False, False, False)):
    """One chunked pass over the tokens ``rows`` of ``h`` (N, H) against ``W`` (V, H).

    Returns ``(stats, (grad_h, grad_W, grad_b))``: ``stats`` maps each head statistic to an (N,) tensor
    (0 at rows not visited); the gradients are ``None`` unless requested in ``need`` (and ``coef`` given).
    """
    n, v = h.shape[0], W.shape[0]
    cd = _compute_dtype(h.dtype)
    mm = h.dtype if (opts.bf16_matmul and h.dtype in _HALF) else cd
    grads = coef is not None and any(need)
    Wm = W if W.dtype == mm else W.to(mm)
    bc = None if b is None else b.to(cd)
    # half-precision GEMMs: 4x the budget, since every chunk adds a (V, H) partial grad W into the float32
    # accumulator (a CPU bf16 GEMM cannot write float32), and those adds dominate below ~2048 tokens
    budget = opts.budget_bytes * (4 if mm != cd else 1)
    # the token cap (a share of the tokens) holds for the compute-dtype GEMMs, the forward and the
    # recomputing backward pass alike; half-precision GEMMs keep the budget rule alone (their extra memory is
    # the float32 weight-gradient accumulator, and small chunks multiply its (V, H) adds)
    c = opts.chunk_size or chunk_rows(max(len(rows), 1), v, budget, torch.finfo(cd).bits // 8,
                                      share=CHUNK_SHARE if mm == cd else None)
    c = max(1, min(c, max(len(rows), 1)))
    buf = torch.empty(c, v, dtype=cd, device=h.device)
    # every token counted (rows = 0..n-1, sorted and unique): chunk s covers positions [s, s + c), so the
    # chunk's hidden states are a view and grad h is written in place (no (c, H) gather / scatter copies)
    dense = len(rows) == n
    stats: dict[str, torch.Tensor] = {}
    gh = torch.zeros_like(h) if grads and need[0] else None
    gW = torch.zeros(W.shape, dtype=cd, device=W.device) if grads and need[1] else None
    gb = torch.zeros(v, dtype=cd, device=W.device) if grads and need[2] and b is not None else None
    for s in range(0, len(rows), c):
        idx = rows[s:s + c]
        z = buf[:len(idx)]
        e = s + len(idx)
        hc = h[s:e] if dense else h.index_select(0, idx)
        if hc.dtype != mm:
            hc = hc.to(mm)
        if mm == cd:
            torch.mm(hc, Wm.t(), out=z)
        else:
            z.copy_(hc @ Wm.t())
        if bc is not None:
            z.add_(bc)
        cc = None if not grads else {k: (None if t is None else t.index_select(0, idx)) for k, t in coef.items()}
        out = head(z, idx, cc)
        for k, t in out.items():
            if k not in stats:
                stats[k] = torch.zeros(n, dtype=t.dtype, device=h.device)
            stats[k].index_copy_(0, idx, t)
        if not grads:
            continue
        G = z if mm == cd else z.to(mm)
        if gh is not None:
            if dense and gh.dtype == mm:
                torch.mm(G, Wm, out=gh[s:e])
            else:
                gh.index_copy_(0, idx, (G @ Wm).to(h.dtype))
        if gW is not None:
            if mm == cd:
                gW.addmm_(G.t(), hc)
            else:
                gW.add_(G.t() @ hc)
        if gb is not None:
            gb.add_(z.sum(0))
    if gh is not None and opts.group is not None:
        gh = all_reduce(gh.to(cd), opts.group).to(h.dtype)
    return stats, (gh, None if gW is None else gW.to(W.dtype), None if gb is None else gb.to(b.dtype))


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a.add_(b)


class FusedLinearFunction(torch.autograd.Function):
    """``(reduced, stat_1, ..., stat_k) = f(h, W, b)`` with ``reduced = sum_i coef_i loss_i``.

    ``head.stats`` names the per-token statistics returned after ``reduced`` (``loss`` first).
    ``coef`` (N,) or ``None`` (then ``reduced`` is 0 and only the per-token outputs are used).
    """

    @staticmethod
    def forward(ctx, h, W, b, head, rows, coef, opts: FusedOptions):
        ctx.set_materialize_grads(False)
        need = tuple(ctx.needs_input_grad[:3])
        in_forward = coef is not None and any(need) and not opts.recompute
        with torch.no_grad():
            stats, grads = run_pass(h, W, b, head, rows, opts,
                                    coef={"loss": coef} if in_forward else None, need=need)
        n = h.shape[0]
        cd = _compute_dtype(h.dtype)
        outs = [stats.get(k, torch.zeros(n, dtype=cd, device=h.device)) for k in head.stats]
        reduced = (coef * outs[0]).sum() if coef is not None else outs[0].new_zeros(())
        ctx.head, ctx.rows, ctx.coef, ctx.opts, ctx.need = head, rows, coef, opts, need
        ctx.grads = grads if in_forward else None
        ctx.in_forward = in_forward
        ctx.save_for_backward(h, W, b)
        return (reduced, *outs)

    @staticmethod
    def backward(ctx, g_red, *g_stats):
        h, W, b = ctx.saved_tensors
        result = [None, None, None]
        if ctx.in_forward and g_red is not None:
            if ctx.grads is None:
                raise RuntimeError("losskit fused loss: a second backward through a loss whose gradients were "
                                   "formed in the forward pass; pass recompute=True to allow it")
            # upstream gradient 1 (loss.backward()): the gradients are final; the test reads a CPU value
            # only (free there); on accelerators the scaling always runs (no host synchronisation)
            one = g_red.device.type == "cpu" and bool((g_red == 1).all())
            for i, g in enumerate(ctx.grads):
                if g is not None:
                    result[i] = g if one else g.mul_(g_red.to(g.dtype))
            ctx.grads = None
        coef = {k: g for k, g in zip(ctx.head.stats, g_stats)}
        if not ctx.in_forward and g_red is not None and ctx.coef is not None:
            coef["loss"] = _add(g_red * ctx.coef, None if coef.get("loss") is None else coef["loss"].clone())
        if any(c is not None for c in coef.values()):
            _, grads = run_pass(h, W, b, ctx.head, ctx.rows, ctx.opts, coef=coef, need=ctx.need)
            result = [_add(r, g) for r, g in zip(result, grads)]
        return (*result, None, None, None, None)
