"""Input kinds of the representation family: embedding pairs, multi-view features (+ labels)."""

from __future__ import annotations

import torch

from .._core.registry import BadInput, Example, InputKind

__all__ = ["PAIR", "VIEWS", "FEATURES_LABELS", "pair_example", "views_example", "features_labels_example",
           "scale_all"]


def scale_all(scale: float = 1e4):
    """Extreme builder: every float input rescaled to magnitude ``scale`` (float32)."""

    def extreme(ex: Example) -> Example:
        return ex.map_floats(lambda t: (t.sign() * scale + t).float())

    return extreme


def pair_example(gen, dtype, n: int = 6, d: int = 5) -> Example:
    z1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"z1": z1.to(dtype), "z2": z2.to(dtype)}, grad=("z1", "z2"))


def _pair_bad(ex: Example) -> list[BadInput]:
    names = list(ex.inputs)
    a, b = names[0], names[1]
    x, y = ex.inputs[a], ex.inputs[b]
    yinf = y.clone()
    yinf.view(-1)[1] = float("inf")
    return [
        BadInput("batch size mismatch", ex.replace({b: y[:-1]}), b),
        BadInput("feature size mismatch", ex.replace({b: y[:, :-1]}), b),
        BadInput("no feature dimension", ex.replace({a: x[:, 0], b: y[:, 0]}), a),
        BadInput("integer embeddings", ex.replace({a: x.round().long()}), a),
        BadInput("+inf embedding", ex.replace({b: yinf}), b),
        BadInput("non-positive temperature", ex.replace(options={"temperature": 0.0}), "temperature"),
    ]


PAIR = InputKind("embedding pair", "two embedding batches (N, D) whose rows i are positives of each other",
                 bad_inputs=_pair_bad, extreme=scale_all())


def views_example(gen, dtype, n: int = 5, v: int = 3, d: int = 4) -> Example:
    base = torch.randn(n, 1, d, generator=gen, dtype=torch.float64)
    views = base + 0.6 * torch.randn(n, v, d, generator=gen, dtype=torch.float64)
    return Example({"views": views.to(dtype)}, grad=("views",))


def _views_bad(ex: Example) -> list[BadInput]:
    x = ex.inputs["views"]
    return [
        BadInput("one view only", ex.replace({"views": x[:, :1]}), "views"),
        BadInput("no view dimension", ex.replace({"views": x[:, 0]}), "views"),
        BadInput("integer views", ex.replace({"views": x.round().long()}), "views"),
        BadInput("non-positive temperature", ex.replace(options={"temperature": -1.0}), "temperature"),
    ]


VIEWS = InputKind("views", "embeddings of V >= 2 views per instance, (N, V, D) or a list of V (N, D) tensors",
                  bad_inputs=_views_bad, extreme=scale_all())


def features_labels_example(gen, dtype, n: int = 8, d: int = 4, k: int = 3) -> Example:
    # every class appears at least twice, so every anchor has a positive
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=gen)]
    feats = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.8 * torch.randn(k, d, generator=gen,
                                                                                        dtype=torch.float64)[labels]
    return Example({"features": feats.to(dtype), "labels": labels}, grad=("features",))


def _features_labels_bad(ex: Example) -> list[BadInput]:
    name = next(iter(ex.inputs))  # 'features' or 'embeddings'
    x, y = ex.inputs[name], ex.inputs["labels"]
    return [
        BadInput("labels of the wrong length", ex.replace({"labels": y[:-1]}), "labels"),
        BadInput("float labels", ex.replace({"labels": y.to(torch.float64)}), "labels"),
        BadInput("no feature dimension", ex.replace({name: x[:, 0]}), name),
        BadInput("integer features", ex.replace({name: x.round().long()}), name),
    ]


FEATURES_LABELS = InputKind("features+labels", "embeddings (N, D) or (N, V, D) and integer class labels (N,)",
                            bad_inputs=_features_labels_bad, extreme=scale_all())
