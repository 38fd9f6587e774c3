"""Policy-gradient and unpaired preference losses from hidden states: GRPO's family and KTO, fused.

Both are the preference family's objectives fed by the fused pass: the per-token log-probabilities
``log softmax(h_t W^T + b)_{y_t}`` come from the chunked cross-entropy operator
(:mod:`losskit.fused._ops`, no ``(N, V)`` logits; gradients by one recomputing pass), and the head is the
preference family's own function (:func:`losskit.grpo`, :func:`losskit.kto`, ...), so the values are
those of the head on materialised log-probabilities.
"""

from __future__ import annotations

import inspect

import torch

from .. import preference as _pref
from .._core import BadInput, Example, InputKind, LossInputError, Paper, fail, finish, objective
from .._core.domains import COUNT, FLAG, POSITIVE, Choice, Either, Maybe, Tensor
from .._core.domains import Callable as CallableOption
from ._engine import token_rows
from ._inputs import FUSED
from ._ops import cross_entropy_pass
from .losses import _check_linear, _check_target, _Keywords

__all__ = ["fused_linear_policy", "FusedLinearPolicy", "fused_linear_kto", "FusedLinearKTO", "POLICY_HEADS"]

#: token-level policy heads: ``head(logps, old_logps, advantages_or_rewards, mask, [ref_logps], **options)``
POLICY_HEADS = {f.__name__: f for f in (_pref.grpo, _pref.gspo, _pref.sapo, _pref.ppo, _pref.rloo,
                                        _pref.reinforce_pp)}
_BIAS = Maybe(Tensor("a bias of shape (V,) for the output projection"))
_PASS = {"chunk_size": Maybe(COUNT), "bf16_matmul": FLAG, "return_logps": FLAG,
         "head_options": Maybe(_Keywords()), "linear_bias": _BIAS, "ref_linear_bias": _BIAS}
LIGER = Paper("Liger Kernel: Efficient Triton Kernels for LLM Training", 2024, "2410.10989", "Hsu et al.")


def _token_logps(h, W, b, y, ignore_index, chunk_size, bf16_matmul, grad=True):
    """(B, T) per-token log-probabilities of ``y`` (0 at ``ignore_index``) by the fused operator."""
    lead = y.shape
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        _, tok, _ = cross_entropy_pass(
            h.reshape(-1, h.shape[-1]), W, b, y.reshape(-1), None, None, ignore_index=ignore_index,
            label_smoothing=0.0, z_loss=0.0, softcap=None, chunk_size=chunk_size, recompute=False,
            bf16_matmul=bf16_matmul, outputs_used=True)
    return (-tok).reshape(lead)


def _reference(ref_hidden, ref_linear_weight, ref_linear_bias, lead, target, ignore_index, chunk_size, bf16):
    if ref_hidden is None:
        if ref_linear_weight is not None:
            raise fail("ref_hidden", "the reference model's hidden states with ref_linear_weight", "None")
        return None
    if ref_linear_weight is None:
        raise fail("ref_linear_weight", "the reference model's output projection (V, H) with ref_hidden", "None")
    _check_linear("ref_hidden", ref_hidden, "ref_linear_weight", ref_linear_weight, "ref_linear_bias",
                  ref_linear_bias)
    if tuple(ref_hidden.shape[:-1]) != tuple(lead):
        raise fail("ref_hidden", f"leading shape {tuple(lead)} (as hidden)", f"shape {tuple(ref_hidden.shape)}")
    rb = None if ref_linear_bias is None else ref_linear_bias.detach()
    return _token_logps(ref_hidden.detach(), ref_linear_weight.detach(), rb, target, ignore_index, chunk_size,
                        bf16, grad=False)


def _call(head_fn, args, kw, names):
    """``head_fn(*args, **kw)``; the head's LossInputError is re-raised naming this objective's argument."""
    try:
        return head_fn(*args, **kw)
    except LossInputError as e:
        arg = names.get(e.argument, e.argument if e.argument == "reduction" else "head_options")
        raise fail(arg, f"{e.expected} (the head's {e.argument})", e.got) from None


def _sequence_tokens(hidden, linear_weight, target, linear_bias, ignore_index):
    _check_linear("hidden", hidden, "linear_weight", linear_weight, "linear_bias", linear_bias)
    if hidden.dim() != 3:
        raise fail("hidden", "hidden states of shape (B, T, H) (completions, already shifted)",
                   f"shape {tuple(hidden.shape)}")
    lead = hidden.shape[:-1]
    _check_target(target, lead, linear_weight.shape[0], ignore_index)
    return lead


# ------------------------------------------------------------------------------------------------ policy
def _policy_example(gen: torch.Generator, dtype: torch.dtype, b: int = 4, t: int = 5, h: int = 4,
                    v: int = 9) -> Example:
    x = torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    w = torch.randn(v, h, generator=gen, dtype=torch.float64)
    y = torch.randint(0, v, (b, t), generator=gen)
    y[1, 3:] = -100  # padding after a short completion
    y[2, 1:] = -100
    xr = x + 0.3 * torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    # the sampler's log-probs: of slightly different hidden states (ratios near 1, some clipped)
    xo = x + 0.2 * torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    old = torch.log_softmax(xo @ w.T, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0] * (y != -100)
    inputs = {"hidden": x.to(dtype), "linear_weight": w.to(dtype), "target": y, "advantages": adv.to(dtype),
              "old_logps": old.to(dtype), "ref_hidden": xr.to(dtype), "ref_linear_weight": w.to(dtype)}
    return Example(inputs, {"head": "grpo", "head_options": {"beta": 0.04}, "chunk_size": 3},
                   grad=("hidden", "linear_weight"),
                   batched=("hidden", "target", "advantages", "old_logps", "ref_hidden"))


def _policy_extreme(ex: Example) -> Example:
    """Logits of ~1e4 for the policy and the reference alike (their KL stays finite; the k3 estimator of
    a KL between logits 1e4 apart overflows, as it does on materialised log-probs)."""
    ex = ex.map_floats(lambda t: t.float())
    x = ex.inputs["hidden"] * 3e3
    return ex.replace({"hidden": x, "ref_hidden": x.detach().clone()})


def _policy_bad(ex: Example) -> list[BadInput]:
    a = ex.inputs["advantages"]
    return [*FUSED.bad_inputs(ex),
            BadInput("advantages of another batch size", ex.replace({"advantages": a[:-1]}), "advantages"),
            BadInput("hidden states without a time axis", ex.replace({"hidden": ex.inputs["hidden"][:, 0]}),
                     "hidden"),
            BadInput("unknown head", ex.replace(options={"head": "nosuch"}), "head")]


FUSED_POLICY = InputKind(
    "hidden+linear weight, policy tokens",
    "completions' hidden states (B, T, H), an output projection (V, H), the sampled tokens (B, T) "
    "(ignore_index for prompt and padding) and (B,) advantages; optionally the reference model's (B, T, H)",
    bad_inputs=_policy_bad, extreme=_policy_extreme)


@objective(
    "fused_linear_policy", family="fused", input_kind=FUSED_POLICY, example=_policy_example, paper=LIGER,
    module_name="FusedLinearPolicy", allow_neg_inf=(), promote_half=False, per_sample=False,
    sample_weight=False,
    formula="head(log pi(y_t), log pi_old(y_t), A, mask, log pi_ref(y_t)), log pi(y_t) = log softmax(h_t W^T + b)_"
            "{y_t} by the fused pass; head = grpo | gspo | sapo | ppo | rloo | reinforce_pp",
    domains={"head": Either(Choice(*POLICY_HEADS), CallableOption(
                 "a callable head(logps, old_logps, advantages, mask, [ref_logps], **options)")), **_PASS},
)
def fused_linear_policy(hidden: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
                        advantages: torch.Tensor, old_logps: torch.Tensor | None = None,
                        ref_hidden: torch.Tensor | None = None, ref_linear_weight: torch.Tensor | None = None, *,
                        head="grpo", linear_bias: torch.Tensor | None = None,
                        ref_linear_bias: torch.Tensor | None = None, ignore_index: int = -100,
                        head_options: dict | None = None, reduction: str = "mean", return_logps: bool = False,
                        chunk_size: int | None = None, bf16_matmul: bool = False):
    """A token-level policy-gradient loss (GRPO, GSPO, SAPO, PPO, RLOO, REINFORCE++) from hidden states.

    ``hidden`` (B, T, H) are the policy's last hidden states at the completions' positions and ``target``
    (B, T) the sampled tokens (already shifted; prompt and padding = ``ignore_index``, which is the mask).
    The per-token log-probabilities

    .. math:: \\log \\pi_\\theta(y_t \\mid y_{<t}) = \\log \\mathrm{softmax}(h_t W^\\top + b)_{y_t}

    come from the fused cross-entropy pass (no (B T, V) logits; their gradient through one recomputing
    pass) and go to the head with the sampler's ``old_logps`` (B, T) (``None``: the current ones, detached:
    one update per generation, ratio 1, as TRL's default ``num_iterations=1``), ``advantages`` (B,) (the
    rewards for ``rloo`` / ``reinforce_pp``, which form their own advantages) and the reference's log-probs
    from ``ref_hidden`` with ``ref_linear_weight`` / ``ref_linear_bias`` (no gradient; the KL penalty needs
    the head's ``beta > 0`` in ``head_options``). ``head``: one of :data:`POLICY_HEADS` or a callable with
    the same positional inputs; ``head_options`` are its keyword options (``beta``, ``epsilon``,
    ``aggregation``, ...) and its defaults apply. Liger-Kernel's fused GRPO (Liger Kernel: Efficient Triton
    Kernels for LLM Training, 2024, arXiv 2410.10989) is the GPU peer. ``return_logps=True`` returns
    ``(loss, logps)``.
    """
    lead = _sequence_tokens(hidden, linear_weight, target, linear_bias, ignore_index)
    head_fn = POLICY_HEADS[head] if isinstance(head, str) else head
    if not isinstance(advantages, torch.Tensor) or tuple(advantages.shape) != (lead[0],):
        raise fail("advantages", f"a tensor of shape ({lead[0]},) (one per completion)",
                   f"shape {tuple(getattr(advantages, 'shape', ()))}")
    logps = _token_logps(hidden, linear_weight, linear_bias, target, ignore_index, chunk_size, bf16_matmul)
    mask = target != ignore_index
    old = logps.detach() if old_logps is None else old_logps
    ref = _reference(ref_hidden, ref_linear_weight, ref_linear_bias, lead, target, ignore_index, chunk_size,
                     bf16_matmul)
    args = [logps, old, advantages, mask]
    if ref is not None:
        if "ref_logps" not in inspect.signature(head_fn).parameters:
            raise fail("ref_hidden", f"None: the head {getattr(head_fn, '__name__', head_fn)!r} takes no reference",
                       "a tensor")
        args.append(ref)
    names = {"logps": "hidden", "old_logps": "old_logps", "advantages": "advantages", "rewards": "advantages",
             "mask": "target", "ref_logps": "ref_hidden"}
    loss = _call(head_fn, args, {**(head_options or {}), "reduction": reduction}, names)
    return (loss, logps) if return_logps else loss


# --------------------------------------------------------------------------------------------------- KTO
def _kto_example(gen: torch.Generator, dtype: torch.dtype, b: int = 4, t: int = 5, h: int = 4,
                 v: int = 9) -> Example:
    x = torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    w = torch.randn(v, h, generator=gen, dtype=torch.float64)
    y = torch.randint(0, v, (b, t), generator=gen)
    y[:, 0] = -100  # the prompt
    y[3, 2:] = -100
    xr = x + 0.3 * torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    desirable = torch.tensor([True, False, True, False])[:b]
    inputs = {"hidden": x.to(dtype), "linear_weight": w.to(dtype), "target": y, "desirable": desirable,
              "ref_hidden": xr.to(dtype), "ref_linear_weight": w.to(dtype)}
    return Example(inputs, {"beta": 0.5, "chunk_size": 3, "head_options": {"reference_point": 0.1}},
                   grad=("hidden", "linear_weight"), batched=("hidden", "target", "desirable", "ref_hidden"))


def _kto_bad(ex: Example) -> list[BadInput]:
    d = ex.inputs["desirable"]
    return [*FUSED.bad_inputs(ex),
            BadInput("desirable flags of another batch size", ex.replace({"desirable": d[:-1]}), "desirable"),
            BadInput("no reference hidden states", ex.replace({"ref_hidden": None}), "ref_hidden")]


FUSED_UNPAIRED = InputKind(
    "hidden+linear weight, unpaired completions",
    "completions' hidden states (B, T, H), an output projection (V, H), tokens (B, T) (ignore_index for "
    "prompt and padding), (B,) desirable flags and the reference model's hidden states",
    bad_inputs=_kto_bad, extreme=FUSED.extreme)


@objective(
    "fused_linear_kto", family="fused", input_kind=FUSED_UNPAIRED, example=_kto_example, paper=LIGER,
    module_name="FusedLinearKTO", allow_neg_inf=(), promote_half=False,
    formula="kto(sum_t log pi(y_t), sum_t log pi_ref(y_t), desirable), log pi by the fused pass",
    domains={"beta": POSITIVE, **_PASS}, compile=False,
    skip_reasons={"compile": "the completions with a counted token are selected before KTO sees them (its batch "
                             "reference point must not see the empty ones): a data-dependent shape, so "
                             "fullgraph=True cannot hold (the fused pass itself is a custom operator)"},
)
def fused_linear_kto(hidden: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
                     desirable: torch.Tensor, ref_hidden: torch.Tensor | None = None,
                     ref_linear_weight: torch.Tensor | None = None, *, beta: float = 0.1,
                     linear_bias: torch.Tensor | None = None, ref_linear_bias: torch.Tensor | None = None,
                     ignore_index: int = -100, head_options: dict | None = None, sample_weight=None,
                     reduction: str = "mean", return_logps: bool = False, chunk_size: int | None = None,
                     bf16_matmul: bool = False):
    """KTO (Kahneman-Tversky Optimization) from hidden states: :func:`losskit.kto` on sequence
    log-probabilities computed by the fused pass.

    ``hidden`` (B, T, H) and ``ref_hidden`` (the frozen reference model's, with its ``ref_linear_weight``)
    at the completions' positions, ``target`` (B, T) (prompt and padding = ``ignore_index``), ``desirable``
    (B,) booleans. The sequence scores ``sum_t log softmax(h_t W^T + b)_{y_t}`` are formed chunk by chunk
    (no (B T, V) logits) and passed to :func:`losskit.kto` with ``beta`` and ``head_options`` (its
    ``reference_point``, ``desirable_weight``, ``undesirable_weight``, or detached ``policy_kl_logps`` /
    ``ref_kl_logps`` of mismatched pairs). Liger-Kernel's fused KTO (arXiv 2410.10989) is the GPU peer.
    ``return_logps=True`` returns ``(loss, policy_logps, ref_logps)`` (B,).
    """
    lead = _sequence_tokens(hidden, linear_weight, target, linear_bias, ignore_index)
    if not isinstance(desirable, torch.Tensor) or tuple(desirable.shape) != (lead[0],):
        raise fail("desirable", f"a tensor of shape ({lead[0]},) (one flag per completion)",
                   f"shape {tuple(getattr(desirable, 'shape', ()))}")
    if ref_hidden is None:
        raise fail("ref_hidden", "the reference model's hidden states (B, T, H) (KTO's implied reward needs them)",
                   "None")
    logp = _token_logps(hidden, linear_weight, linear_bias, target, ignore_index, chunk_size, bf16_matmul).sum(-1)
    ref = _reference(ref_hidden, ref_linear_weight, ref_linear_bias, lead, target, ignore_index, chunk_size,
                     bf16_matmul).sum(-1)
    names = {"policy_logps": "hidden", "ref_logps": "ref_hidden", "desirable": "desirable", "beta": "beta"}
    # a completion without any counted token (all ignore_index) is ignored: not passed to KTO (whose
    # batch reference point it would move), 0 in 'none', not counted in 'mean' (selecting the kept rows
    # reads their count on the host, as the pass's token selection does)
    keep = (target != ignore_index).any(-1)
    rows = token_rows(keep)
    kw = {**(head_options or {}), "beta": beta, "reduction": "none"}
    bsz = lead[0]
    if len(rows) == bsz:
        per = _call(_pref.kto, [logp, ref, desirable], kw, names)
    elif len(rows) == 0:
        per = logp * 0  # nothing to score: 0 with zero gradients
    else:
        out = _call(_pref.kto, [v.index_select(0, rows) for v in (logp, ref, desirable)], kw, names)
        per = out.new_zeros(bsz).index_copy(0, rows, out)
    loss = finish(per, reduction, sample_weight=sample_weight, mask=keep)
    return (loss, logp, ref) if return_logps else loss


FusedLinearPolicy = fused_linear_policy.Module
FusedLinearKTO = fused_linear_kto.Module
