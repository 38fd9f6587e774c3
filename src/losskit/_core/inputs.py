"""Input kinds shared across families: example builders, bad inputs and extreme inputs.

A family with inputs of its own defines its :class:`InputKind` next to its objectives; the kinds here
are the ones several families use.
"""

from __future__ import annotations

import torch

from .registry import BadInput, Example, InputKind
from .values import UNIT_VALUES

__all__ = ["LOGITS_LABELS", "BINARY_LOGITS", "TWO_DISTRIBUTIONS", "logits_labels_example",
           "binary_example", "distributions_example", "scale_input"]


def scale_input(name: str, scale: float = 1e4, dtype: torch.dtype = torch.float32):
    """An ``extreme`` builder: the input ``name`` rescaled to have entries of magnitude ``scale``."""

    def extreme(ex: Example) -> Example:
        x = ex.inputs[name]
        x = (x.sign() * scale + x).to(dtype)
        other = ex.map_floats(lambda t: t.to(dtype))
        return other.replace(inputs={name: x})

    return extreme


# ----------------------------------------------------------------------------- logits and labels
def logits_labels_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=gen)
    return Example({"logits": logits.to(dtype), "target": target}, grad=("logits",))


def _logits_labels_bad(ex: Example) -> list[BadInput]:
    logits, target = ex.inputs["logits"], ex.inputs["target"]
    k = logits.shape[1]
    bad = [
        BadInput("label out of range", ex.replace({"target": torch.where(
            torch.arange(len(target)) == 1, torch.full_like(target, k + 2), target)}), "target"),
        BadInput("negative label", ex.replace({"target": torch.full_like(target, -3)}), "target"),
        BadInput("batch size mismatch", ex.replace({"target": target[:-1]}), "target"),
        BadInput("float labels of the wrong shape", ex.replace({"target": target.to(logits.dtype)}), "target"),
        BadInput("logits without a class dimension", ex.replace({"logits": logits[:, 0]}), "logits"),
        BadInput("+inf logit", ex.replace({"logits": logits.clone().index_put_((torch.tensor([0]),
                                                                                   torch.tensor([1])),
                                                                                  torch.tensor(float("inf"),
                                                                                               dtype=logits.dtype))}),
                 "logits"),
        BadInput("integer logits", ex.replace({"logits": logits.round().long()}), "logits"),
    ]
    return bad


LOGITS_LABELS = InputKind(
    "logits+labels",
    "logits (N, K, *) and class indices (N, *) or target distributions (N, K, *)",
    bad_inputs=_logits_labels_bad,
    extreme=scale_input("logits"),
)


# ---------------------------------------------------------------------------------------- binary
def binary_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8) -> Example:
    logits = 2 * torch.randn(n, generator=gen, dtype=torch.float64)
    target = (torch.rand(n, generator=gen) < 0.5).to(torch.float64)
    return Example({"logits": logits.to(dtype), "target": target.to(dtype)}, grad=("logits",))


def _binary_bad(ex: Example) -> list[BadInput]:
    logits, target = ex.inputs["logits"], ex.inputs["target"]
    return [
        BadInput("target outside [0, 1]", ex.replace({"target": target + 2}), "target"),
        BadInput("shape mismatch", ex.replace({"target": target[:-1]}), "target"),
        BadInput("NaN target", ex.replace({"target": target.clone().fill_(float("nan"))}), "target"),
        BadInput("integer logits", ex.replace({"logits": logits.round().long()}), "logits"),
    ]


BINARY_LOGITS = InputKind(
    "binary logits+targets",
    "logits of any shape and targets in [0, 1] of the same shape",
    bad_inputs=_binary_bad,
    extreme=scale_input("logits"),
    values={"target": UNIT_VALUES},
)


# --------------------------------------------------------------------------- two distributions
def distributions_example(gen: torch.Generator, dtype: torch.dtype, n: int = 5, k: int = 6) -> Example:
    p = 1.5 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    q = 1.5 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    return Example({"p": p.to(dtype), "q": q.to(dtype)}, grad=("p", "q"))


def _distributions_bad(ex: Example) -> list[BadInput]:
    p, q = ex.inputs["p"], ex.inputs["q"]
    probs = torch.softmax(p, -1)
    return [
        BadInput("shape mismatch", ex.replace({"q": q[:, :-1]}), "q"),
        BadInput("probabilities not summing to one",
                 ex.replace({"p": probs * 1.3, "q": torch.softmax(q, -1)}, {"input_space": "probs"}), "p"),
        BadInput("negative probability", ex.replace(
            {"p": probs, "q": torch.softmax(q, -1) - torch.softmax(q, -1)[:, :1] * 0 - 0.5},
            {"input_space": "probs"}), "q"),
        BadInput("unknown input_space", ex.replace(options={"input_space": "logprob"}), "input_space"),
        BadInput("+inf logit", ex.replace({"q": q.clone().fill_(float("inf"))}), "q"),
    ]


TWO_DISTRIBUTIONS = InputKind(
    "two distributions",
    "two categorical distributions p, q over dim (as logits, log-probabilities or probabilities)",
    bad_inputs=_distributions_bad,
    extreme=lambda ex: ex.map_floats(lambda t: (t.sign() * 1e4 + t).float()),
)
