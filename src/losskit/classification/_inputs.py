"""Input kinds of the classification family beyond logits + labels: multi-label, regression-as-classification,
paired level distributions, bags of instances."""

from __future__ import annotations

import torch

from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.values import LOGIT_ROWS

__all__ = ["MULTILABEL", "multilabel_example", "REGRESSION_LOGITS", "regression_example", "LEVEL_PAIRS",
           "level_pairs_example", "BAGS", "bags_example"]


def _plus_inf(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = float("inf")
    return x


# ------------------------------------------------------------------------------------ multi-label
def multilabel_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 6) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = (torch.rand(n, k, generator=gen) < 0.35).to(torch.float64)
    target[:, 0] = 1.0  # every row has a positive
    target[:, -1] = 0.0  # and a negative
    return Example({"logits": logits.to(dtype), "target": target.to(dtype)}, grad=("logits",))


def _multilabel_bad(ex: Example) -> list[BadInput]:
    logits, target = ex.inputs["logits"], ex.inputs["target"]
    return [
        BadInput("target of another shape", ex.replace({"target": target[:, :-1]}), "target"),
        BadInput("target not in {0, 1}", ex.replace({"target": target * 0.5}), "target"),
        BadInput("integer logits", ex.replace({"logits": logits.round().long()}), "logits"),
        BadInput("+inf logit", ex.replace({"logits": _plus_inf(logits)}), "logits"),
        BadInput("class indices out of range", ex.replace({"target": torch.full((logits.shape[0],), 99)}), "target"),
    ]


MULTILABEL = InputKind("logits+multi-hot", "logits (N, K) and multi-hot targets (N, K) or class indices (N,)",
                       bad_inputs=_multilabel_bad, extreme=scale_input("logits"))


# -------------------------------------------------------------------------- regression via classes
def regression_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 8) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    return Example({"logits": logits.to(dtype), "target": target.to(dtype)},
                   options={"v_min": -1.0, "v_max": 1.0}, grad=("logits",))


def _regression_bad(ex: Example) -> list[BadInput]:
    logits, target = ex.inputs["logits"], ex.inputs["target"]
    nan = target.clone()
    nan[0] = float("nan")
    return [
        BadInput("target of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("integer target", ex.replace({"target": target.round().long()}), "target"),
        BadInput("NaN target", ex.replace({"target": nan}), "target"),
        BadInput("logits without a class dimension", ex.replace({"logits": logits[:, 0]}), "logits"),
        BadInput("+inf logit", ex.replace({"logits": _plus_inf(logits)}), "logits"),
        BadInput("empty support", ex.replace(options={"v_min": 1.0, "v_max": -1.0}), "v_max"),
    ]


REGRESSION_LOGITS = InputKind("logits+real targets", "logits (N, K) over bins and real targets (N,)",
                              bad_inputs=_regression_bad, extreme=scale_input("logits"),
                              values={"logits": LOGIT_ROWS})


# ------------------------------------------------------------------------------ paired level logits
def level_pairs_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    a = torch.randn(n, k, generator=gen, dtype=torch.float64)
    b = torch.randn(n, k, generator=gen, dtype=torch.float64)
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    return Example({"logits_a": a.to(dtype), "logits_b": b.to(dtype), "target": p.to(dtype)},
                   grad=("logits_a", "logits_b"))


def _pairs_bad(ex: Example) -> list[BadInput]:
    a, b, p = ex.inputs["logits_a"], ex.inputs["logits_b"], ex.inputs["target"]
    return [
        BadInput("logits_b of another shape", ex.replace({"logits_b": b[:, :-1]}), "logits_b"),
        BadInput("target outside [0, 1]", ex.replace({"target": p + 2}), "target"),
        BadInput("target of another batch size", ex.replace({"target": p[:-1]}), "target"),
        BadInput("+inf logit", ex.replace({"logits_a": _plus_inf(a)}), "logits_a"),
    ]


def _pairs_extreme(ex: Example) -> Example:
    ex = scale_input("logits_a")(ex)
    return scale_input("logits_b")(ex)


LEVEL_PAIRS = InputKind("paired level logits", "level logits of two items (N, K) each and P(A > B) (N,)",
                        bad_inputs=_pairs_bad, extreme=_pairs_extreme)


# --------------------------------------------------------------------------------------------- bags
def bags_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 4) -> Example:
    pred = torch.randn(n, k, generator=gen, dtype=torch.float64)
    resp = torch.randn(n, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, k, dtype=torch.bool)
    mask[1, 3] = False
    mask[4, 2:] = False
    return Example({"predictions": pred.to(dtype), "bag_response": resp.to(dtype), "mask": mask},
                   grad=("predictions",))


def _bags_bad(ex: Example) -> list[BadInput]:
    pred, resp = ex.inputs["predictions"], ex.inputs["bag_response"]
    nan = resp.clone()
    nan[0] = float("nan")
    empty = ex.inputs["mask"].clone()
    empty[0] = False
    return [
        BadInput("bag_response of another batch size", ex.replace({"bag_response": resp[:-1]}), "bag_response"),
        BadInput("NaN bag_response", ex.replace({"bag_response": nan}), "bag_response"),
        BadInput("predictions without an instance dimension", ex.replace({"predictions": pred[:, 0]}), "predictions"),
        BadInput("mask of another shape", ex.replace({"mask": empty[:, :-1]}), "mask"),
        BadInput("an empty bag", ex.replace({"mask": empty}), "mask"),
    ]


def _bags_extreme(ex: Example) -> Example:
    return scale_input("predictions", 1e4)(ex)


BAGS = InputKind("bags", "instance predictions (B, k) with an optional mask (B, k) and bag responses (B,)",
                 bad_inputs=_bags_bad, extreme=_bags_extreme)


# ----------------------------------------------------------------------------- features + prototypes
def features_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5, d: int = 4) -> Example:
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return Example({"features": x.to(dtype), "prototypes": w.to(dtype), "target": y},
                   grad=("features", "prototypes"), batched=("features", "target"))


def _features_bad(ex: Example) -> list[BadInput]:
    x, w, y = ex.inputs["features"], ex.inputs["prototypes"], ex.inputs["target"]
    return [
        BadInput("prototypes of another dimension", ex.replace({"prototypes": w[:, :-1]}), "prototypes"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(y, w.shape[0] + 1)}), "target"),
        BadInput("target of another batch size", ex.replace({"target": y[:-1]}), "target"),
        BadInput("a zero feature vector", ex.replace({"features": torch.cat([x[:1] * 0, x[1:]])}), "features"),
        BadInput("+inf feature", ex.replace({"features": _plus_inf(x)}), "features"),
    ]


def _features_extreme(ex: Example) -> Example:
    ex = scale_input("features", 1e4)(ex)
    return ex.replace({"prototypes": ex.inputs["prototypes"] * 1e-3})


FEATURES_PROTOTYPES = InputKind("features+prototypes",
                                "features (N, d), class prototypes (K, d) and class indices (N,)",
                                bad_inputs=_features_bad, extreme=_features_extreme)
__all__ += ["FEATURES_PROTOTYPES", "features_example"]
