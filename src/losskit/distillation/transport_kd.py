"""Sinkhorn knowledge distillation (batch-wise form): entropic OT between the batch of student and the batch of
teacher output distributions, on top of :func:`losskit.transport.solve`.

(Moved here from ``losskit.transport.losses``: it is a distillation objective; ``losskit.sinkhorn_kd`` and
``losskit.distillation.sinkhorn_kd`` are its import paths.)
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT, POSITIVE, UNIT
from ..transport import solve
from ._inputs import STUDENT_TEACHER, kd_example
from .losses import _check_pair, _cross_entropy, _scaled, _valid, rows

__all__ = ["sinkhorn_kd", "SinkhornKd"]

SINKD_PAPER = Paper("Sinkhorn Distance Minimization for Knowledge Distillation", 2024, "2402.17110",
                    "Cui, Qin, Gao, Zhang, Xu, Li, Li, Sun")


def _example(gen: torch.Generator, dtype: torch.dtype):
    ex = kd_example(gen, dtype, grad_teacher=False)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    # alpha < 1: the example exercises the label path (the cross-entropy term and ignore_index)
    return ex.replace(options={"eps": 0.5, "tol": tol, "alpha": 0.6})


@objective(
    "sinkhorn_kd", seed=True, family="distillation", input_kind=STUDENT_TEACHER, example=_example, paper=SINKD_PAPER,
    properties={"nonnegative"}, per_sample=False, sample_weight=False, meta=False, compile=False,
    skip_reasons={"compile": "the Sinkhorn solver (losskit.transport.solve) runs eagerly: its iteration reads "
                             "convergence values and is excluded from tracing (torch.compiler.disable)"},
    domains={"temperature": POSITIVE, "eps": POSITIVE, "alpha": UNIT, "tol": POSITIVE, "max_iter": COUNT},
    formula="L = OT_eps({s_i}, {t_j}) over the batch, s = softmax(z_s / tau), t = softmax(z_t / tau), "
            "C_ij = ||s_i - t_j||^2 (batch-wise form); with labels alpha L + (1 - alpha) CE(z_s, y)",
    allow_neg_inf=("student_logits", "teacher_logits"),
)
def sinkhorn_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None,
                *, temperature: float = 1.0, eps: float = 0.1, alpha: float = 1.0, tol: float = 1e-3,
                max_iter: int = 2000, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Sinkhorn knowledge distillation, batch-wise form: entropic OT between the batch of student and
    the batch of teacher output distributions.

    .. math:: L = \\mathrm{OT}_\\varepsilon\\Big(\\tfrac1N\\sum_i \\delta_{s_i},\\ \\tfrac1N\\sum_j \\delta_{t_j}\\Big),
              \\quad C_{ij} = \\|s_i - t_j\\|_2^2,\\quad s = \\mathrm{softmax}(z_s/\\tau),\\ t = \\mathrm{softmax}(z_t/\\tau)

    † Our reading of the paper's batch-wise reformulation (the N x N cost between the student's and the
    teacher's predictions in a batch, Sinkhorn distance over it); the squared Euclidean cost between
    probability vectors and the dual (entropic) value are our choices, stated here. The authors' code
    (2018cx/SinKD, ``loss.py``) differs: ``0.001 * <P, W>`` with the L1 cost ``W``, ``T = 2``, ``eps = 0.1`` and
    ``P`` ten unconverged row/column normalisations of ``exp(-W/eps)`` (no option reproduces it). With ``target``
    (class indices) the loss is ``alpha * L + (1 - alpha) * CE(z_s, target)``, ``alpha`` in [0, 1];
    samples whose label is ``ignore_index`` leave both terms (the OT is between the kept samples' clouds,
    the CE mean is over the kept samples; an all-ignored batch gives 0). ``tau, eps, tol > 0``,
    ``max_iter >= 1``. ``reduction='none'`` gives per-sample shares ``f_i + g_i`` of the dual value (their
    mean is L) plus each sample's CE term; the loss couples the batch, so it is not per-sample. The
    teacher is not detached (detach it yourself). A fully masked (all ``-inf``) logit row raises unless
    its sample is ignored.

    Paper: Cui et al., "Sinkhorn Distance Minimization for Knowledge Distillation", 2024, arXiv:2402.17110.
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    if student_logits.dim() != 2:
        raise fail("student_logits", "logits of shape (N, K)", f"shape {tuple(student_logits.shape)}")
    valid = _valid(target, ignore_index)
    student_logits = rows("student_logits", student_logits, valid)
    s = torch.softmax(student_logits / temperature, -1)
    t = torch.softmax(rows("teacher_logits", teacher_logits, valid) / temperature, -1)
    if valid is None:
        a = None
    else:
        # the kept samples' empirical measures (uniform weights on them, 0 on ignored samples); with every
        # sample ignored, uniform weights keep the solver well-posed and the result is masked to 0 below
        w = valid.to(s.dtype)
        count = w.sum()
        a = torch.where(count > 0, w / count.clamp_min(1), torch.full_like(w, 1.0 / w.shape[0]))
    res = solve(s, t, a, a, eps=eps, tol=tol, max_iter=max_iter)
    # the dual value <a, f> + <b, g> split into per-sample shares f_i + g_i (a = b)
    loss = _attach(res.f[0] + res.g[0], res.value[0], a)
    if target is not None:
        loss = _scaled(alpha, loss) + _scaled(1 - alpha, _cross_entropy(student_logits, target, ignore_index)[0])
    return finish(loss, reduction, mask=valid)


def _attach(per: torch.Tensor, value: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
    """Per-sample shares whose ``a``-weighted mean (plain mean without ``a``) is ``value`` and that carry its
    gradient (the shares themselves are detached)."""
    per = per.detach()
    centre = per.mean() if a is None else (a * per).sum()
    return per - centre + value


SinkhornKd = sinkhorn_kd.Module
