"""Input kinds of the regression family: quantile predictions, survival data, ordinal responses, paired
predictions, and the information-bottleneck tuple (inputs, representation, targets, predictions)."""

from __future__ import annotations

import torch

from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.values import NONNEGATIVE_VALUES

__all__ = ["QUANTILES", "quantile_example", "interval_example", "SURVIVAL", "survival_example",
           "CUMULATIVE", "cumulative_example", "THRESHOLDS", "threshold_example", "ORDINAL_HEAD",
           "ordinal_head_example", "PAIRED", "paired_example", "BOTTLENECK", "bottleneck_example"]


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _scale_all(scale: float = 1e4):
    def extreme(ex: Example) -> Example:
        out = ex.map_floats(lambda t: t.to(torch.float32))
        return out.replace({k: (out.inputs[k].sign() * scale + out.inputs[k]) for k in ex.grad})

    return extreme


# -------------------------------------------------------------------------------------- quantiles
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def quantile_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7) -> Example:
    pred = torch.randn(n, len(LEVELS), generator=gen, dtype=torch.float64).sort(1).values
    pred[1] = pred[1].flip(0)  # one crossing row, so the rearrangements have work to do
    target = torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"pred": pred.to(dtype), "target": target.to(dtype)}, options={"quantiles": LEVELS},
                   grad=("pred",))


def interval_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    """The quantile example with the isotonic rearrangement on (the conformance suite covers that path)."""
    return quantile_example(gen, dtype).replace(options={"monotone": "isotonic"})


def _quantile_bad(ex: Example) -> list[BadInput]:
    pred, target = ex.inputs["pred"], ex.inputs["target"]
    return [
        BadInput("target of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("pred without a quantile axis", ex.replace({"pred": pred[:, 0]}), "pred"),
        BadInput("one level too many", ex.replace(options={"quantiles": (*ex.options["quantiles"], 0.95)}),
                 "quantiles"),
        BadInput("levels not increasing", ex.replace(options={"quantiles": tuple(reversed(ex.options["quantiles"]))}),
                 "quantiles"),
        BadInput("+inf prediction", ex.replace({"pred": _with(pred, float("inf"))}), "pred"),
        BadInput("NaN target", ex.replace({"target": _with(target, float("nan"))}), "target"),
        BadInput("integer prediction", ex.replace({"pred": pred.round().long()}), "pred"),
    ]


QUANTILES = InputKind("quantile predictions+targets",
                      "predicted quantiles (N, Q) at increasing levels and real targets (N,)",
                      bad_inputs=_quantile_bad, extreme=scale_input("pred"))


# --------------------------------------------------------------------------------------- survival
def survival_example(gen: torch.Generator, dtype: torch.dtype, n: int = 9) -> Example:
    risk = torch.randn(n, generator=gen, dtype=torch.float64)
    time = torch.randint(1, 6, (n,), generator=gen).to(torch.float64)  # ties on purpose
    event = torch.rand(n, generator=gen) < 0.65
    event[0] = True
    return Example({"risk": risk.to(dtype), "time": time.to(dtype), "event": event}, grad=("risk",))


def _survival_bad(ex: Example) -> list[BadInput]:
    risk, time, event = ex.inputs["risk"], ex.inputs["time"], ex.inputs["event"]
    return [
        BadInput("time of another batch size", ex.replace({"time": time[:-1]}), "time"),
        BadInput("event of another batch size", ex.replace({"event": event[:-1]}), "event"),
        BadInput("event not 0/1", ex.replace({"event": event.long() * 3}), "event"),
        BadInput("risk with a second axis", ex.replace({"risk": risk[:, None].expand(-1, 2)}), "risk"),
        BadInput("negative time", ex.replace({"time": _with(time, -1.0)}), "time"),
        BadInput("+inf risk", ex.replace({"risk": _with(risk, float("inf"))}), "risk"),
        BadInput("class weights of the wrong length",
                 ex.replace(options={"weight": torch.ones(3, dtype=torch.float64)}), "weight"),
        BadInput("negative class weight",
                 ex.replace(options={"weight": torch.tensor([1.0, -2.0], dtype=torch.float64)}), "weight"),
    ]


SURVIVAL = InputKind("risk scores+survival times+events",
                     "log-hazard scores (N,), observed times (N,) >= 0, event indicators (N,) (1 event, 0 censored)",
                     bad_inputs=_survival_bad, extreme=scale_input("risk"), values={"time": NONNEGATIVE_VALUES})


# ----------------------------------------------------------------------------------------- ordinal
def _ordinal_target(gen, n, k):
    target = torch.randint(0, k, (n,), generator=gen)
    target[:k] = torch.arange(k)  # every class appears
    return target


def cumulative_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, k: int = 4) -> Example:
    z = (torch.randn(n, k - 1, generator=gen, dtype=torch.float64).abs() + 0.2).cumsum(1) - 1.5
    return Example({"cum_logits": z.to(dtype), "target": _ordinal_target(gen, n, k)}, grad=("cum_logits",))


def _cumulative_bad(ex: Example) -> list[BadInput]:
    z, target = ex.inputs["cum_logits"], ex.inputs["target"]
    dec = z.detach().clone()
    dec[0] = dec[0].flip(0)
    k = z.shape[1] + 1
    return [
        BadInput("decreasing cumulative logits", ex.replace({"cum_logits": dec}), "cum_logits"),
        BadInput("class out of range", ex.replace({"target": torch.full_like(target, k)}), "target"),
        BadInput("float target", ex.replace({"target": target.to(z.dtype)}), "target"),
        BadInput("cum_logits without a boundary axis", ex.replace({"cum_logits": z[:, 0]}), "cum_logits"),
        BadInput("target of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("+inf logit", ex.replace({"cum_logits": _with(z, float("inf"))}), "cum_logits"),
    ]


CUMULATIVE = InputKind("cumulative logits+ordinal labels",
                       "cumulative logits (N, K-1), logit P(y <= k), non-decreasing in k, and classes (N,) in [0, K)",
                       bad_inputs=_cumulative_bad, extreme=scale_input("cum_logits"))


def threshold_example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, k: int = 4) -> Example:
    scores = torch.randn(n, generator=gen, dtype=torch.float64)
    thresholds = torch.tensor([-1.0, 0.2, 1.1], dtype=torch.float64)[: k - 1]
    return Example({"scores": scores.to(dtype), "thresholds": thresholds.to(dtype),
                    "target": _ordinal_target(gen, n, k)}, grad=("scores", "thresholds"), batched=("scores", "target"))


def _threshold_bad(ex: Example) -> list[BadInput]:
    s, th, target = ex.inputs["scores"], ex.inputs["thresholds"], ex.inputs["target"]
    return [
        BadInput("thresholds not increasing", ex.replace({"thresholds": th.flip(0)}), "thresholds"),
        BadInput("class out of range", ex.replace({"target": torch.full_like(target, th.shape[0] + 1)}), "target"),
        BadInput("scores with a second axis", ex.replace({"scores": s[:, None].expand(-1, 2)}), "scores"),
        BadInput("thresholds of a batch", ex.replace({"thresholds": th[None].expand(2, -1)}), "thresholds"),
        BadInput("target of another batch size", ex.replace({"target": target[:-1]}), "target"),
    ]


THRESHOLDS = InputKind("scores+thresholds+ordinal labels",
                       "one score per sample (N,), K-1 increasing thresholds (K-1,), classes (N,) in [0, K)",
                       bad_inputs=_threshold_bad, extreme=scale_input("scores"))


def ordinal_head_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, p: int = 3, k: int = 4) -> Example:
    x = torch.randn(n, p, generator=gen, dtype=torch.float64)
    b0 = 0.3 * torch.randn(p, 1, generator=gen, dtype=torch.float64)
    coef = b0 + 0.05 * torch.randn(p, k - 1, generator=gen, dtype=torch.float64)
    bias = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)[: k - 1]
    return Example({"features": x.to(dtype), "coef": coef.to(dtype), "bias": bias.to(dtype),
                    "target": _ordinal_target(gen, n, k)}, options={"lam": 0.05},
                   grad=("features", "coef", "bias"), batched=("features", "target"))


def _head_bad(ex: Example) -> list[BadInput]:
    x, coef, bias, target = (ex.inputs[k] for k in ("features", "coef", "bias", "target"))
    return [
        BadInput("coef of another feature size", ex.replace({"coef": coef[:-1]}), "coef"),
        BadInput("bias of another boundary count", ex.replace({"bias": bias[:-1]}), "bias"),
        BadInput("class out of range", ex.replace({"target": torch.full_like(target, coef.shape[1] + 1)}), "target"),
        BadInput("features without a feature axis", ex.replace({"features": x[:, 0]}), "features"),
        BadInput("target of another batch size", ex.replace({"target": target[:-1]}), "target"),
    ]


ORDINAL_HEAD = InputKind("features+boundary weights+ordinal labels",
                         "features (N, p), per-boundary coefficients (p, K-1), intercepts (K-1,), classes (N,)",
                         bad_inputs=_head_bad, extreme=scale_input("bias"))


# ------------------------------------------------------------------------------------------ paired
def paired_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 4) -> Example:
    pred = torch.randn(n, d, generator=gen, dtype=torch.float64)
    target = pred + 0.6 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"pred": pred.to(dtype), "target": target.to(dtype)}, options={"gamma": 1.5}, grad=("pred",))


def _paired_bad(ex: Example) -> list[BadInput]:
    pred, target = ex.inputs["pred"], ex.inputs["target"]
    return [
        BadInput("target of another shape", ex.replace({"target": target[:, :-1]}), "target"),
        BadInput("+inf prediction", ex.replace({"pred": _with(pred, float("inf"))}), "pred"),
        BadInput("integer prediction", ex.replace({"pred": pred.round().long()}), "pred"),
    ]


PAIRED = InputKind("prediction+target", "predictions (N, *) and targets of the same shape",
                   bad_inputs=_paired_bad, extreme=scale_input("pred"))


# ------------------------------------------------------------------------------ information bottleneck
def bottleneck_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, dx: int = 3, dt: int = 2) -> Example:
    x = torch.randn(n, dx, generator=gen, dtype=torch.float64)
    t = torch.tanh(x[:, :dt]) + 0.3 * torch.randn(n, dt, generator=gen, dtype=torch.float64)
    y = x.sum(1) + 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
    y_hat = y + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"y_hat": y_hat.to(dtype), "y": y.to(dtype), "x": x.to(dtype), "t": t.to(dtype)},
                   grad=("y_hat", "t"))


def _bottleneck_bad(ex: Example) -> list[BadInput]:
    y_hat, y, x, t = (ex.inputs[k] for k in ("y_hat", "y", "x", "t"))
    return [
        BadInput("y of another batch size", ex.replace({"y": y[:-1]}), "y"),
        BadInput("x of another batch size", ex.replace({"x": x[:-1]}), "x"),
        BadInput("t of another batch size", ex.replace({"t": t[:-1]}), "t"),
        BadInput("y of another shape", ex.replace({"y": y[:, None].expand(-1, 2)}), "y"),
        BadInput("+inf representation", ex.replace({"t": _with(t, float("inf"))}), "t"),
        BadInput("integer inputs", ex.replace({"x": x.round().long()}), "x"),
    ]


BOTTLENECK = InputKind("predictions+targets+inputs+representation",
                       "predictions (N,) or (N, d_y), targets of the same shape, inputs (N, *), representation (N, *)",
                       bad_inputs=_bottleneck_bad, extreme=_scale_all())
