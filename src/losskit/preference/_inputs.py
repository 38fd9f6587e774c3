"""The preference family's input layer: input kinds (sequence scores of pairs, groups, policy-gradient
batches) with their example builders, and the value checks every head shares.

Value checks (:func:`check_logprobs`, probabilities in [0, 1]) go through
:func:`losskit._core.validate.require`: they obey :func:`losskit.set_validation`, skip meta tensors and
tracing, and do not synchronise on accelerators.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._core.errors import fail
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe, require
from .._core.values import Values

__all__ = ["PAIR_SCORES", "PAIR_MEAN_SCORES", "GROUP_SCORES", "POLICY_TOKENS", "pair_example", "scale_logps",
           "check_logprobs", "LOGP_TOLERANCE", "LOGPROB", "LOGPROB_INPUTS"]

N = 6

#: How far above 0 a log-probability may lie and still be accepted (nats). Log-probabilities computed with
#: ``log_softmax`` / ``logsumexp`` are exactly <= 0 (rounding is monotone: ``lse = m + log(sum) >= m >= z_y``),
#: but kernels with approximate ``exp`` / ``log`` (GPU fast-math, inference servers' returned log-probs) can
#: put a near-certain token's log-prob a few ulps above 0, and a sequence sums thousands of them. 1e-3 admits
#: that drift while every usual mistake (logits, probabilities, NLLs passed for log-probs) is far above it.
LOGP_TOLERANCE = 1e-3

#: The value domain of log-probabilities of discrete tokens or sequences.
LOGPROB = Values(hi=LOGP_TOLERANCE, description="log-probabilities <= 0 (log pi of discrete tokens or sequences: "
                                                  "not logits, probabilities or NLLs)")

#: Every input of the family that holds log-probabilities, by name: the input kinds declare them
#: (``InputKind(values=...)``) and the registry's wrapper checks them, in one pass with the finiteness check.
LOGPROB_INPUTS = dict.fromkeys(
    ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps", "policy_logps",
     "ref_logps", "policy_kl_logps", "ref_kl_logps", "prev_chosen_logps", "prev_rejected_logps",
     "opponent_chosen_logps", "opponent_rejected_logps", "prev_logps"),
    LOGPROB)


def sequence_input(name: str, x, n: int | None = None, like: str = "policy_chosen_logps") -> torch.Tensor:
    """A ``(B,)`` floating tensor of per-sequence scores (of ``n`` samples, as input ``like``). Shapes only:
    the values of registered inputs are checked by the wrapper against their declared domain."""
    check_floating(name, x)
    if x.dim() != 1:
        raise fail(name, "a (B,) tensor of sequence scores" + (
            " (a (B, T) tensor looks like per-token log-probs: aggregate them per sequence first with "
            "losskit.preference.sequence_scores(token_logps, mask))" if x.dim() == 2 else ""), describe(x))
    if n is not None and x.shape[0] != n:
        raise fail(name, f"a batch of {n} (as {like})", f"shape {tuple(x.shape)}")
    return x


def check_logprobs(name: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probabilities of discrete sequences or tokens: no value above 0 (up to :data:`LOGP_TOLERANCE`).

    ``mask`` (bool, ``x``'s shape): only the true positions are read. A value check (validation mode).
    """
    if x.numel() == 0:
        return x

    def top():
        v = x if mask is None else torch.where(mask, x, x.new_full((), float("-inf")))
        return v.amax()

    def got():
        if x.dim() == 0:
            return f"{x.item():.6g}"
        v = x if mask is None else torch.where(mask, x, x.new_full((), float("-inf")))
        pos = v.argmax().item()
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(pos), x.shape))
        return f"{v.reshape(-1)[pos].item():.6g} at position {where if len(where) > 1 else where[0]}"

    require(name, x, lambda: top() > LOGP_TOLERANCE, LOGPROB.description, got)
    return x


def _logps(gen, n, lo=0.5, hi=6.0):
    return -(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))


def pair_example(*, ref: bool = True, mean: bool = False, extras: dict[str, Callable] | None = None,
                 options: dict | None = None, n: int = N, chosen_shape: tuple = ()) -> Callable:
    """An example builder for heads on (B,) sequence scores.

    ``mean``: length-normalised log-probs (in [-1.5, -0.05]); ``extras``: ``name -> f(gen, n)`` more inputs;
    ``chosen_shape``: trailing shape of the chosen scores (D2O's K self-samples).
    """

    def build(gen: torch.Generator, dtype: torch.dtype) -> Example:
        lo, hi = (0.05, 1.5) if mean else (0.5, 6.0)
        inputs = {"policy_chosen_logps": _logps(gen, n * int(torch.tensor(chosen_shape).prod()), lo, hi)
                  .reshape((n,) + chosen_shape),
                  "policy_rejected_logps": _logps(gen, n, lo, hi)}
        if ref:
            inputs["ref_chosen_logps"] = _logps(gen, inputs["policy_chosen_logps"].numel(), lo, hi).reshape(
                inputs["policy_chosen_logps"].shape)
            inputs["ref_rejected_logps"] = _logps(gen, n, lo, hi)
        for k, f in (extras or {}).items():
            inputs[k] = f(gen, n)
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        grad = tuple(k for k in inputs if k.endswith("logps"))
        return Example(inputs, dict(options or {}), grad=grad)

    return build


def scale_logps(factor: float = 2e3) -> Callable[[Example], Example]:
    """Extreme inputs: every ``*logps`` input times ``factor`` (log-probs of -1e4, margins of thousands)."""

    def extreme(ex: Example) -> Example:
        ex = ex.map_floats(lambda t: t.float())
        return ex.replace({k: v * factor for k, v in ex.inputs.items() if k.endswith("logps")})

    return extreme


def _pair_bad(ex: Example) -> list[BadInput]:
    pc, pr = ex.inputs["policy_chosen_logps"], ex.inputs["policy_rejected_logps"]
    bad = [BadInput("rejected scores of another batch size", ex.replace({"policy_rejected_logps": pr[:-1]}),
                    "policy_rejected_logps"),
           BadInput("per-token log-probs instead of sequence scores",
                    ex.replace({"policy_rejected_logps": pr[:, None].expand(-1, 3).clone()}),
                    "policy_rejected_logps")]
    if pc.dim() == 1:
        bad.append(BadInput("integer scores", ex.replace({"policy_chosen_logps": pc.round().long()}),
                            "policy_chosen_logps"))
    if ex.inputs.get("ref_rejected_logps") is not None:
        bad.append(BadInput("reference chosen without reference rejected",
                            ex.replace({"ref_rejected_logps": None}), "ref_rejected_logps"))
    return bad


PAIR_MEAN_SCORES = InputKind(
    "pair mean scores",
    "(B,) length-normalised log-probs of chosen and rejected completions (extremes: -150 per token)",
    bad_inputs=_pair_bad,
    extreme=scale_logps(100.0),
    values=LOGPROB_INPUTS,
)

PAIR_SCORES = InputKind(
    "pair scores",
    "(B,) sequence scores (log-probs) of chosen and rejected completions, optionally of a reference model",
    bad_inputs=_pair_bad,
    extreme=scale_logps(),
    values=LOGPROB_INPUTS,
)


# ------------------------------------------------------------------------------------------- groups
def group_example(gen: torch.Generator, dtype: torch.dtype, g: int = 4, n: int = 5) -> Example:
    scores = -(0.05 + 1.5 * torch.rand(g, n, generator=gen, dtype=torch.float64))
    labels = torch.rand(g, n, generator=gen) < 0.5
    labels[:, 0], labels[:, 1] = True, False  # every question has a correct and a wrong answer
    kl = 1e-4 * torch.rand(g, generator=gen, dtype=torch.float64) * 3
    # kl is not a grad input: its constraint term is a surrogate (gradient beta [KL - delta]_+ grad KL), tested
    # on its own.
    return Example({"logps": scores.to(dtype), "labels": labels, "kl": kl.to(dtype)}, grad=("logps",))


def _group_bad(ex: Example) -> list[BadInput]:
    s, y = ex.inputs["logps"], ex.inputs["labels"]
    return [BadInput("labels of another shape", ex.replace({"labels": y[:, :-1]}), "labels"),
            BadInput("float labels", ex.replace({"labels": y.to(s.dtype) * 3}), "labels"),
            BadInput("flat scores", ex.replace({"logps": s.reshape(-1)}), "logps")]


GROUP_SCORES = InputKind(
    "group scores",
    "(G, n) scores of n sampled answers to each of G questions, (G, n) boolean correctness labels",
    bad_inputs=_group_bad,
    extreme=scale_logps(2e3),
)


# ------------------------------------------------------------------------------------ policy tokens
def policy_example(gen: torch.Generator, dtype: torch.dtype, b: int = 6, t: int = 5) -> Example:
    logps = -(0.05 + 2 * torch.rand(b, t, generator=gen, dtype=torch.float64))
    old = (logps + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)).clamp(max=-0.01)  # log-probs <= 0
    ref = (logps + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)).clamp(max=-0.01)
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])[:b]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return Example({"logps": logps.to(dtype), "old_logps": old.to(dtype), "advantages": adv.to(dtype),
                    "mask": mask, "ref_logps": ref.to(dtype)}, {"beta": 0.04}, grad=("logps",))


def _policy_extreme(ex: Example) -> Example:
    ex = ex.map_floats(lambda t: t.float())
    lp = ex.inputs["logps"] * 5e3
    return ex.replace({"logps": lp, "old_logps": lp + 0.01 * torch.sin(lp), "ref_logps": lp - 0.5,
                       "advantages": ex.inputs["advantages"] * 1e4})


def _policy_bad(ex: Example) -> list[BadInput]:
    lp, m = ex.inputs["logps"], ex.inputs["mask"]
    return [BadInput("old log-probs of another shape", ex.replace({"old_logps": lp[:, :-1]}), "old_logps"),
            BadInput("mask of another shape", ex.replace({"mask": m[:-1]}), "mask"),
            BadInput("advantages of another batch size", ex.replace({"advantages": ex.inputs["advantages"][:-1]}),
                     "advantages"),
            BadInput("unknown aggregation", ex.replace(options={"aggregation": "token_mean"}), "aggregation"),
            BadInput("unknown KL estimator", ex.replace(options={"kl_estimator": "k4"}), "kl_estimator")]


POLICY_TOKENS = InputKind(
    "policy tokens",
    "(B, T) per-token log-probs under the policy, the sampler (old) and the reference, (B,) advantages, mask",
    bad_inputs=_policy_bad,
    extreme=_policy_extreme,
)
