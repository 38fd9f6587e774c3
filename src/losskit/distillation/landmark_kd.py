"""KD-Loss for landmark regression: a student guided by a Tough and a Tolerant teacher (Fard & Mahoor).

The student regresses landmark coordinates; two pre-trained teachers predict the same coordinates, the
Tough-Teacher trained on the ground truth (hard landmarks), the Tolerant-Teacher on ASM-smoothed soft
landmarks. Each teacher's prediction is reflected onto the student's side of the ground truth and
bounds an *assistive loss* whose sign depends on where the student lies relative to it; the main loss
is piecewise (linear close to the ground truth, quadratic beyond the Tolerant-Teacher's error).
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, REAL, UNIT
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating

__all__ = ["landmark_kd_loss", "LandmarkKDLoss"]

_NAMES = ("student", "target", "tough_teacher", "tolerant_teacher")


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 8) -> Example:
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    s = y + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    tough = y + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    tol = y + 0.4 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"student": s.to(dtype), "target": y.to(dtype), "tough_teacher": tough.to(dtype),
                    "tolerant_teacher": tol.to(dtype)}, grad=("student",))


def _bad(ex: Example) -> list[BadInput]:
    s, y, t = ex.inputs["student"], ex.inputs["target"], ex.inputs["tough_teacher"]
    inf = t.clone()
    inf.view(-1)[1] = float("inf")
    return [
        BadInput("target shape mismatch", ex.replace({"target": y[:, :-1]}), "target"),
        BadInput("teacher batch mismatch", ex.replace({"tough_teacher": t[:-1]}), "tough_teacher"),
        BadInput("integer student", ex.replace({"student": s.round().long()}), "student"),
        BadInput("+inf teacher coordinate", ex.replace({"tough_teacher": inf}), "tough_teacher"),
        BadInput("no coordinate axis", ex.replace({k: ex.inputs[k][:, 0] for k in _NAMES}), "student"),
    ]


LANDMARKS = InputKind(
    "student+two teachers+landmarks",
    "student coordinates (N, D, *), ground truth, Tough- and Tolerant-Teacher predictions of the same shape",
    bad_inputs=_bad,
    extreme=lambda ex: ex.map_floats(lambda x: (x * 1e3).float()),
)


def _assist(student, target, teacher, alpha, beta, band):
    """The assistive term of one teacher: its weight map times ``|T' - s|``, ``T'`` the teacher reflected
    onto the student's side of the ground truth, ``b`` the point ``band`` of the way from y to T'."""
    side = torch.sign(student - target)
    err = (teacher - target).abs()
    reflected = target + side * err
    bound = target + side * err * band
    beyond = torch.sign(student - reflected) * torch.sign(reflected - target) > 0
    inside = torch.sign(reflected - student) * torch.sign(student - bound) >= 0
    w = alpha * beyond.to(student.dtype) + beta * inside.to(student.dtype)
    return w * (reflected - student).abs(), err, side


@objective(
    "landmark_kd_loss", family="distillation", input_kind=LANDMARKS, example=_example,
    paper=Paper("Facial Landmark Points Detection Using Knowledge Distillation-Based Neural Networks", 2021,
                "2111.07047", "Fard, Mahoor"),
    module_name="LandmarkKDLoss",
    domains={"main_weight": NONNEGATIVE, "tough_weight": NONNEGATIVE, "tolerant_weight": NONNEGATIVE,
             "alpha_tough": REAL, "beta_tough": REAL, "alpha_tolerant": REAL, "beta_tolerant": REAL,
             "band": UNIT, "slope": POSITIVE},
    formula="mean_j [w_m M(e_j, d_j) + w_T A_T,j + w_t A_t,j],  e = |y - s|, d = |y - tol|, "
            "M = c e if e <= d else e^2 + c d - d^2,  A = (alpha [s beyond T'] + beta [s between b and T']) |T' - s|",
)
def landmark_kd_loss(student: torch.Tensor, target: torch.Tensor, tough_teacher: torch.Tensor,
                     tolerant_teacher: torch.Tensor, *, main_weight: float = 2.0, tough_weight: float = 1.0,
                     tolerant_weight: float = 1.0, alpha_tough: float = 1.9, beta_tough: float = -0.45,
                     alpha_tolerant: float = 1.8, beta_tolerant: float = -0.4, band: float = 0.15,
                     slope: float = 3.0, sample_weight: torch.Tensor | None = None,
                     reduction: str = "mean") -> torch.Tensor:
    """KD-Loss: main loss plus the Tough- and Tolerant-Teacher assistive losses (ALoss), per coordinate.

    For every coordinate with student ``s``, ground truth ``y`` and a teacher prediction ``T``, the teacher
    is reflected onto the student's side of the ground truth, ``T' = y + sign(s - y) |T - y|``, and
    ``b = y + sign(s - y) · band · |T - y|``. The assistive loss of that teacher is

    .. math:: A = \\big(\\alpha\\,[s \\text{ beyond } T'] + \\beta\\,[s \\text{ between } b \\text{ and } T']\\big)\\,|T' - s|

    ("beyond": ``sign(s - T') sign(T' - y) > 0``, farther from ``y`` than the teacher, pulled back with
    weight ``alpha``; "between": ``sign(T' - s) sign(s - b) >= 0``, closer than the teacher but not yet
    within ``band`` of its error, where the weight ``beta < 0`` pushes the student *away* from the teacher
    towards the ground truth). The main loss, with ``e = |y - s|`` and ``d = |y - tol|`` (the
    Tolerant-Teacher's error), is ``c e`` for ``e <= d`` and ``e^2 + c d - d^2`` beyond (continuous at
    ``e = d``), ``c = slope``. Per sample the loss is the mean over the coordinates of
    ``main_weight · M + tough_weight · A_tough + tolerant_weight · A_tolerant``; ``reduction='mean'`` is
    therefore the authors' ``reduce_mean`` over the batch and every coordinate.

    Defaults are the authors' training script (``aliprf/KD-Loss``, ``student_train.py`` and ``main.py``):
    ``alpha_tough = 1.9``, ``beta_tough = -0.45``, ``alpha_tolerant = 1.8``, ``beta_tolerant = -0.4``,
    main weight 2, teacher weights 1, band 0.15, slope 3 (the last two are constants in their
    ``custom_Losses.py``). Because ``beta < 0`` the loss can be negative. No gradient flows through the
    region indicators (they are step functions); the teachers' predictions are constants in the paper
    (pass them detached). Shapes: all four inputs ``(N, D, *)`` of one shape (``D`` = 2 × landmarks,
    normalised coordinates as in the paper).

    Paper: Fard, Mahoor, "Facial Landmark Points Detection Using Knowledge Distillation-Based Neural
    Networks", Computer Vision and Image Understanding 2022, arXiv:2111.07047.
    """
    for name, x in zip(_NAMES, (student, target, tough_teacher, tolerant_teacher)):
        check_floating(name, x)
        if x.dim() < 2:
            raise fail(name, "coordinates of shape (N, D, *)", f"shape {tuple(x.shape)}")
        if x.shape != student.shape:
            raise fail(name, f"the shape of student {tuple(student.shape)}", f"shape {tuple(x.shape)}")
    a_tough, _, _ = _assist(student, target, tough_teacher, alpha_tough, beta_tough, band)
    a_tol, d, side = _assist(student, target, tolerant_teacher, alpha_tolerant, beta_tolerant, band)
    # the authors compare with the *reflected* tolerant teacher, |y - T'| = |side| d (0 where s == y)
    d = side.abs() * d
    e = (target - student).abs()
    main = torch.where(e <= d, slope * e, e.pow(2) + slope * d - d.pow(2))
    per = main_weight * main + tough_weight * a_tough + tolerant_weight * a_tol
    per = per.flatten(1).mean(1)
    return finish(per, reduction, sample_weight=sample_weight)


LandmarkKDLoss = landmark_kd_loss.Module
