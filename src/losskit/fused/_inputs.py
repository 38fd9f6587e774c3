"""The fused family's input kind: hidden states, an output projection and labels."""

from __future__ import annotations

import torch

from .._core import BadInput, Example, InputKind

__all__ = ["FUSED", "hidden_example", "distill_example", "preference_example"]


def hidden_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, h: int = 4, v: int = 11,
                   bias: bool = True) -> Example:
    x = torch.randn(n, h, generator=gen, dtype=torch.float64)
    w = torch.randn(v, h, generator=gen, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=gen)
    inputs = {"hidden": x.to(dtype), "linear_weight": w.to(dtype), "target": y}
    grad = ("hidden", "linear_weight")
    opts = {"chunk_size": 3}
    if bias:
        opts["linear_bias"] = (0.5 * torch.randn(v, generator=gen, dtype=torch.float64)).to(dtype)
    return Example(inputs, opts, grad=grad, batched=("hidden", "target"))


def distill_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, h: int = 4, v: int = 11) -> Example:
    xs = torch.randn(n, h, generator=gen, dtype=torch.float64)
    ws = torch.randn(v, h, generator=gen, dtype=torch.float64)
    xt = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    wt = torch.randn(v, 5, generator=gen, dtype=torch.float64)
    inputs = {"student_hidden": xs.to(dtype), "student_weight": ws.to(dtype),
              "teacher_hidden": xt.to(dtype), "teacher_weight": wt.to(dtype)}
    return Example(inputs, {"chunk_size": 3, "divergence": "js", "beta": 0.3, "temperature": 2.0},
                   grad=("student_hidden", "student_weight"), batched=("student_hidden", "teacher_hidden"))


def _dpo_reference(pc, pr, rc=None, rr=None, *, beta=0.1, reduction="mean"):
    """Sigmoid DPO written out here (the example head; the preference family has its own)."""
    margin = (pc - pr) - ((rc - rr) if rc is not None else 0)
    out = -torch.nn.functional.logsigmoid(beta * margin)
    return out if reduction == "none" else out.sum() if reduction == "sum" else out.mean()


def preference_example(gen: torch.Generator, dtype: torch.dtype, b: int = 3, t: int = 4, h: int = 4,
                       v: int = 9) -> Example:
    x = torch.randn(b, 2, t, h, generator=gen, dtype=torch.float64)
    w = torch.randn(v, h, generator=gen, dtype=torch.float64)
    y = torch.randint(0, v, (b, 2, t), generator=gen)
    y[:, :, 0] = -100  # the prompt
    xr = torch.randn(b, 2, t, h, generator=gen, dtype=torch.float64)
    wr = w + 0.1 * torch.randn(v, h, generator=gen, dtype=torch.float64)
    inputs = {"hidden": x.to(dtype), "linear_weight": w.to(dtype), "target": y, "ref_hidden": xr.to(dtype),
              "ref_linear_weight": wr.to(dtype)}
    return Example(inputs, {"head": _dpo_reference, "beta": 0.5, "chunk_size": 5, "nll_weight": 0.2},
                   grad=("hidden", "linear_weight"), batched=("hidden", "target", "ref_hidden"))


def _bad(ex: Example) -> list[BadInput]:
    first = next(iter(ex.inputs))
    x = ex.inputs[first]
    wname = [k for k in ex.inputs if k.endswith("weight")][0]
    w = ex.inputs[wname]
    bad = [
        BadInput("hidden size mismatch", ex.replace({wname: w[:, :-1]}), wname),
        BadInput("integer hidden states", ex.replace({first: x.round().long()}), first),
        BadInput("+inf hidden state", ex.replace({first: x.clone().fill_(float("inf"))}), first),
    ]
    if "target" in ex.inputs:
        y = ex.inputs["target"]
        v = w.shape[0]
        bad += [
            BadInput("label out of range", ex.replace({"target": torch.full_like(y, v + 3)}), "target"),
            BadInput("float labels", ex.replace({"target": y.to(x.dtype)}), "target"),
            BadInput("batch mismatch", ex.replace({"target": y[:-1]}), "target"),
        ]
    return bad


def _extreme(ex: Example) -> Example:
    # hidden states scaled so that the logits reach magnitudes of ~1e4 in float32
    first = next(iter(ex.inputs))
    ex = ex.map_floats(lambda t: t.float())
    return ex.replace({first: ex.inputs[first] * 3e3})


FUSED = InputKind(
    "hidden+linear weight",
    "hidden states (N, H) (or (..., H)), an output projection (V, H) and labels (N,): the logits "
    "hidden @ weight.T are never materialised",
    bad_inputs=_bad,
    extreme=_extreme,
)
