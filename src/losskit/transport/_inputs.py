"""The transport family's input kinds: two point clouds (batched problems), and 1-D samples."""

from __future__ import annotations

import torch

from .._core.registry import BadInput, Example, InputKind

__all__ = ["TWO_SAMPLES", "two_samples_example", "points_example", "TWO_SAMPLES_1D", "samples_1d_example"]


def two_samples_example(gen: torch.Generator, dtype: torch.dtype, B: int = 3, n: int = 4, m: int = 5,
                        d: int = 2, **options) -> Example:
    """B problems: x (B, n, d) and y (B, m, d), Gaussian clouds with shifted means."""
    x = torch.randn(B, n, d, generator=gen, dtype=torch.float64)
    y = 0.8 * torch.randn(B, m, d, generator=gen, dtype=torch.float64) + 0.5
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    opts = {"eps": 1.0, "tol": tol, **options}
    return Example({"x": x.to(dtype), "y": y.to(dtype)}, options=opts, grad=("x", "y"))


def points_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    """Like :func:`two_samples_example` without the entropic options (exact and sliced solvers)."""
    ex = two_samples_example(gen, dtype)
    return Example(ex.inputs, options={}, grad=ex.grad)


def _two_samples_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    B, n = x.shape[0], x.shape[1]
    return [
        BadInput("point dimensions differ", ex.replace({"y": y[..., :1]}), "y"),
        BadInput("batch sizes differ", ex.replace({"y": y[:-1]}), "y"),
        BadInput("points without a feature dimension", ex.replace({"x": x[..., 0, 0]}), "x"),
        BadInput("integer points", ex.replace({"x": x.round().long()}), "x"),
        BadInput("+inf in y", ex.replace({"y": y.clone().fill_(float("inf"))}), "y"),
        BadInput("negative weight", ex.replace(options={"a": -torch.ones(B, n, dtype=x.dtype)}), "a"),
        BadInput("weights of the wrong length", ex.replace(options={"a": torch.ones(B, n + 1, dtype=x.dtype)}), "a"),
    ] + ([BadInput("non-positive eps", ex.replace(options={"eps": 0.0}), "eps")] if "eps" in ex.options else [])


def _two_samples_extreme(ex: Example) -> Example:
    """Clouds 1e3 apart with eps = 1e-2 of the spread, in float32: cost/eps ~ 1e8 (log-domain test)."""
    x = ex.inputs["x"].double()
    y = ex.inputs["y"].double() + 1e3
    opts = {"eps": 1e-2, "tol": 1e-3} if "eps" in ex.options else {}
    return ex.replace({"x": x.float(), "y": y.float()}, opts)


TWO_SAMPLES = InputKind(
    "two point clouds",
    "two batched point clouds x (B, n, d), y (B, m, d) (or unbatched (n, d), (m, d)) with optional "
    "weights a (B, n), b (B, m): one transport problem per batch entry",
    bad_inputs=_two_samples_bad,
    extreme=_two_samples_extreme,
)


def samples_1d_example(gen: torch.Generator, dtype: torch.dtype, B: int = 4, n: int = 7, m: int = 5,
                       **options) -> Example:
    x = torch.randn(B, n, generator=gen, dtype=torch.float64)
    y = 1.5 * torch.randn(B, m, generator=gen, dtype=torch.float64) + 0.3
    return Example({"x": x.to(dtype), "y": y.to(dtype)}, options=dict(options), grad=("x", "y"))


def _samples_1d_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    return [
        BadInput("batch sizes differ", ex.replace({"y": y[:-1]}), "y"),
        BadInput("integer samples", ex.replace({"x": x.round().long()}), "x"),
        BadInput("-inf sample", ex.replace({"y": y.clone().fill_(float("-inf"))}), "y"),
        BadInput("negative weight", ex.replace(options={"a": -torch.ones_like(x)}), "a"),
        BadInput("p below 1", ex.replace(options={"p": 0.5}), "p"),
    ]


TWO_SAMPLES_1D = InputKind(
    "two 1-d samples",
    "two batched 1-d samples x (B, n), y (B, m) (or unbatched (n,), (m,)), optional weights a, b",
    bad_inputs=_samples_1d_bad,
    extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
)
