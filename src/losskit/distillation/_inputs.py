"""Input kinds of the distillation family: student logits, teacher logits, optional labels."""

from __future__ import annotations

import torch

from .._core.registry import BadInput, Example, InputKind

__all__ = ["STUDENT_TEACHER", "kd_example", "REGRESSION_SD", "regression_sd_example", "FEATURES",
           "features_example"]


def kd_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5, *,
               grad_teacher: bool = True, extra: tuple[str, ...] = ()) -> Example:
    s = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    t = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    inputs = {"student_logits": s.to(dtype), "teacher_logits": t.to(dtype), "target": y}
    for name in extra:
        inputs[name] = (2 * torch.randn(n, k, generator=gen, dtype=torch.float64)).to(dtype)
    grad = ("student_logits", "teacher_logits") if grad_teacher else ("student_logits",)
    return Example(inputs, grad=grad + extra)


def _inf_at(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[1] = float("inf")
    return x


def _kd_bad(ex: Example) -> list[BadInput]:
    s, t, y = ex.inputs["student_logits"], ex.inputs["teacher_logits"], ex.inputs["target"]
    k = s.shape[1]
    return [
        BadInput("teacher shape mismatch", ex.replace({"teacher_logits": t[:, :-1]}), "teacher_logits"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(y, k + 3)}), "target"),
        BadInput("target batch mismatch", ex.replace({"target": y[:-1]}), "target"),
        BadInput("+inf student logit", ex.replace({"student_logits": _inf_at(s)}), "student_logits"),
        BadInput("+inf teacher logit", ex.replace({"teacher_logits": _inf_at(t)}), "teacher_logits"),
        BadInput("integer student logits", ex.replace({"student_logits": s.round().long()}), "student_logits"),
        BadInput("logits without a class dimension", ex.replace(
            {"student_logits": s[:, 0], "teacher_logits": t[:, 0]}), "student_logits"),
    ]


def _kd_extreme(ex: Example) -> Example:
    return ex.map_floats(lambda x: (x.sign() * 1e4 + x).float())


STUDENT_TEACHER = InputKind(
    "student+teacher logits",
    "student logits (N, K, *), teacher logits of the same shape, class indices (N, *) or None",
    bad_inputs=_kd_bad,
    extreme=_kd_extreme,
)


def regression_sd_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 3) -> Example:
    f = torch.randn(n, d, generator=gen, dtype=torch.float64)
    prev = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"student_outputs": f.to(dtype), "teacher_outputs": prev.to(dtype), "target": y.to(dtype)},
                   grad=("student_outputs",))


def _sd_bad(ex: Example) -> list[BadInput]:
    f, prev, y = ex.inputs["student_outputs"], ex.inputs["teacher_outputs"], ex.inputs["target"]
    return [
        BadInput("teacher shape mismatch", ex.replace({"teacher_outputs": prev[:, :-1]}), "teacher_outputs"),
        BadInput("target shape mismatch", ex.replace({"target": y[:-1]}), "target"),
        BadInput("xi outside [0, 1]", ex.replace(options={"xi": 1.5}), "xi"),
        BadInput("integer outputs", ex.replace({"student_outputs": f.round().long()}), "student_outputs"),
    ]


REGRESSION_SD = InputKind(
    "student+teacher outputs+targets",
    "student outputs (N, *), previous-generation outputs and targets of the same shape",
    bad_inputs=_sd_bad,
    extreme=lambda ex: ex.map_floats(lambda x: (x * 1e4).float()),
)


def features_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, student_channels: int = 4,
                     teacher_channels: int = 4, spatial: tuple[int, ...] = (3, 3)) -> Example:
    """Intermediate feature maps: student ``(N, C_s, *spatial)`` and teacher ``(N, C_t, *spatial)``."""
    fs = torch.randn(n, student_channels, *spatial, generator=gen, dtype=torch.float64)
    ft = torch.randn(n, teacher_channels, *spatial, generator=gen, dtype=torch.float64)
    return Example({"student_features": fs.to(dtype), "teacher_features": ft.to(dtype)},
                   grad=("student_features", "teacher_features"))


def _features_bad(ex: Example) -> list[BadInput]:
    fs, ft = ex.inputs["student_features"], ex.inputs["teacher_features"]
    return [
        BadInput("teacher spatial shape mismatch", ex.replace({"teacher_features": ft[..., :-1]}),
                 "teacher_features"),
        BadInput("teacher batch mismatch", ex.replace({"teacher_features": ft[:-1]}), "teacher_features"),
        BadInput("integer student features", ex.replace({"student_features": fs.round().long()}),
                 "student_features"),
        BadInput("student features without a feature axis", ex.replace({"student_features": fs[:, 0, 0, 0]}),
                 "student_features"),
        BadInput("+inf teacher feature", ex.replace({"teacher_features": _inf_at(ft)}), "teacher_features"),
    ]


FEATURES = InputKind(
    "student+teacher features",
    "student features (N, C_s, *spatial) and teacher features (N, C_t, *spatial) from matching layers",
    bad_inputs=_features_bad,
    extreme=lambda ex: ex.map_floats(lambda x: (x * 1e4).float()),
)
