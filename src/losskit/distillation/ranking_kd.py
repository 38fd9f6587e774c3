"""Contrastive Partial Ranking Distillation (CPRD): a cross-encoder teacher's order of the hard negatives
distilled into a dual-encoder student's similarity matrix (Chen et al., CVPR 2024).

The student (a dual encoder) scores every query against every candidate, a similarity matrix ``S`` of shape
``(N, M)``; the teacher (a cross encoder, too slow to score everything at inference) scores the same pairs.
Its absolute scores are not imitated, only the *relative order* of the hard negatives: a Plackett-Luce
likelihood of the teacher's top-K ranking, computed on the student's similarities, added to InfoNCE.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT, NONNEGATIVE, POSITIVE
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, check_labels, check_same_shape

__all__ = ["cprd_loss", "CPRDLoss"]

CPRD_PAPER = Paper("How to Make Cross Encoder a Good Teacher for Efficient Image-Text Retrieval?", 2024,
                   "2407.07479", "Chen et al.")


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, m: int = 8, d: int = 16) -> Example:
    """Cosine similarities of ``n`` query and ``m`` candidate embeddings; teacher scores well separated
    (a random order of 0, 0.5, 1, ... plus small noise) so that half precision cannot tie them."""
    q = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    c = torch.nn.functional.normalize(torch.randn(m, d, generator=gen, dtype=torch.float64), dim=1)
    s = q @ c.T
    order = torch.stack([torch.randperm(m, generator=gen) for _ in range(n)]).to(torch.float64)
    t = 0.5 * order + 0.05 * torch.rand(n, m, generator=gen, dtype=torch.float64)
    y = torch.randint(0, m, (n,), generator=gen)
    return Example({"student_similarity": s.to(dtype), "teacher_scores": t.to(dtype), "target": y},
                   options={"k": 4}, grad=("student_similarity",))


def _bad(ex: Example) -> list[BadInput]:
    s, t, y = ex.inputs["student_similarity"], ex.inputs["teacher_scores"], ex.inputs["target"]
    m = s.shape[1]
    inf = t.clone()
    inf.view(-1)[1] = float("inf")
    return [
        BadInput("teacher shape mismatch", ex.replace({"teacher_scores": t[:, :-1]}), "teacher_scores"),
        BadInput("teacher batch mismatch", ex.replace({"teacher_scores": t[:-1]}), "teacher_scores"),
        BadInput("target out of range", ex.replace({"target": torch.full_like(y, m + 2)}), "target"),
        BadInput("target batch mismatch", ex.replace({"target": y[:-1]}), "target"),
        BadInput("+inf teacher score", ex.replace({"teacher_scores": inf}), "teacher_scores"),
        BadInput("integer similarities", ex.replace({"student_similarity": s.round().long()}),
                 "student_similarity"),
        BadInput("similarities without a candidate axis",
                 ex.replace({"student_similarity": s[:, 0], "teacher_scores": t[:, 0]}), "student_similarity"),
        BadInput("a single candidate (no negative)",
                 ex.replace({"student_similarity": s[:, :1], "teacher_scores": t[:, :1],
                             "target": torch.zeros_like(y)}), "student_similarity"),
        BadInput("diagonal target with more queries than candidates",
                 ex.replace({"student_similarity": torch.cat([s, s]), "teacher_scores": torch.cat([t, t]),
                             "target": None}), "target"),
    ]


SIMILARITY_TEACHER = InputKind(
    "student similarities+teacher scores",
    "student similarity matrix (N, M) of N queries against M candidates, teacher scores (N, M) of the same "
    "pairs, index of each row's positive candidate (N,) or None (the diagonal)",
    bad_inputs=_bad,
    extreme=lambda ex: ex.map_floats(lambda x: (x * 1e4).float()),
)


@objective(
    "cprd_loss", seed=True, family="distillation", input_kind=SIMILARITY_TEACHER, example=_example,
    paper=CPRD_PAPER, module_name="CPRDLoss", properties={"nonnegative", "shift_invariant", "convex"},
    domains={"temperature": POSITIVE, "alpha": NONNEGATIVE, "k": COUNT},
    formula="-log softmax(s/T)_pos + alpha sum_{j=1..K} [logsumexp_{l>=j} s_{c_l}/T - s_{c_j}/T], "
            "c_1..c_K the K negatives with the highest teacher scores, in the teacher's order",
)
def cprd_loss(student_similarity: torch.Tensor, teacher_scores: torch.Tensor, target: torch.Tensor | None = None,
              *, temperature: float = 0.07, alpha: float = 1.0, k: int = 8,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Contrastive Partial Ranking Distillation (CPRD): InfoNCE plus a Plackett-Luce ranking term that asks
    the student to order the hard negatives as the cross-encoder teacher does.

    For query ``i`` with student similarities ``s = student_similarity[i]`` (``M`` candidates), positive
    ``p = target[i]`` and teacher scores ``t = teacher_scores[i]``, let ``c_1, ..., c_K`` be the ``K``
    negatives (candidates other than ``p``) with the highest teacher scores, ordered by the teacher
    (``t_{c_1} >= t_{c_2} >= ...``; ties broken by column index). The per-query loss is

    .. math:: \\ell_i = -\\log\\frac{e^{s_p/T}}{\\sum_{m} e^{s_m/T}}
        + \\alpha \\sum_{j=1}^{K} \\Big(\\log\\sum_{l=j}^{K} e^{s_{c_l}/T} - s_{c_j}/T\\Big)

    the second sum being the negative log Plackett-Luce probability, under the student's tempered
    similarities, of the teacher's ranking of its top-``K`` hard negatives ("partial": only the order
    within those ``K`` is distilled, not the teacher's absolute scores nor the order of the rest). The
    ``j = K`` term is zero, so ``k = 1`` (or ``alpha = 0``) is plain InfoNCE (cross-entropy on the row),
    and ``k = 2`` adds ``-alpha log sigmoid((s_{c_1} - s_{c_2}) / T)``. Each ranking term is
    non-negative, and the sum is smallest when the student orders ``c_1, ..., c_K`` as the teacher does;
    it is computed in log space (suffix log-sum-exps by a flipped ``logcumsumexp``), so large similarities
    do not overflow. The loss is unchanged by adding a constant to a row of ``student_similarity`` and,
    the teacher's order fixed, convex in it (log-sum-exps minus linear terms).

    Shapes: ``student_similarity`` and ``teacher_scores`` ``(N, M)``, rows queries and columns candidates
    (e.g. an image batch against its caption batch), ``M >= 2``; ``target`` ``(N,)`` class indices of each
    row's positive column, or ``None`` for the diagonal (``target[i] = i``, which needs ``N <= M``).
    ``k`` is the number of hard negatives ranked; rows with fewer negatives (``M - 1 < k``) rank all
    ``M - 1``. The teacher enters only through the order of its scores: it gets no gradient. Defaults:
    ``temperature = 0.07``, ``alpha = 1``, ``k = 8``.

    The exact form is our reading of the paper's abstract (InfoNCE on the positive pair plus ``alpha``
    times contrastive ranking terms that enforce the teacher's relative order among the hard negatives):
    the paper's equations and code were not available to us, so whether the positive or the unranked
    negatives enter the ranking denominators, how ``K`` is chosen and the default weights may differ from
    the authors'.

    Paper: Chen et al., "How to Make Cross Encoder a Good Teacher for Efficient Image-Text
    Retrieval?", CVPR 2024, arXiv:2407.07479.
    """
    check_floating("student_similarity", student_similarity)
    check_floating("teacher_scores", teacher_scores)
    if student_similarity.dim() != 2:
        raise fail("student_similarity", "a similarity matrix of shape (N, M)",
                   f"shape {tuple(student_similarity.shape)}")
    n, m = student_similarity.shape
    if m < 2:
        raise fail("student_similarity", "at least two candidates per row (a positive and a negative), "
                   "shape (N, M) with M >= 2", f"shape {tuple(student_similarity.shape)}")
    check_batch("teacher_scores", teacher_scores, n, "student_similarity")
    check_same_shape("teacher_scores", teacher_scores, "student_similarity", student_similarity)
    if target is None:
        if n > m:
            raise fail("target", "class indices (N,) when the similarity matrix has more rows than columns "
                       "(None means the diagonal, which needs N <= M)", f"None with shape {(n, m)}")
        target = torch.arange(n, device=student_similarity.device)
    else:
        check_batch("target", target, n, "student_similarity")
        if target.dim() != 1:
            raise fail("target", f"class indices of shape ({n},)", f"shape {tuple(target.shape)}")
        check_labels("target", target, m)
    logits = student_similarity / temperature
    y = target.unsqueeze(1)
    nce = torch.logsumexp(logits, dim=1) - logits.gather(1, y).squeeze(1)
    kk = min(k, m - 1)
    # the teacher's order of the negatives (the positive sent last); only the order is used, no gradient
    t = teacher_scores.detach().scatter(1, y, float("-inf"))
    hard = torch.sort(t, dim=1, descending=True, stable=True).indices[:, :kk]
    ranked = logits.gather(1, hard)  # (N, K): s_{c_1}/T, ..., s_{c_K}/T
    suffix = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)  # logsumexp_{l >= j}
    rank = (suffix - ranked).sum(1)
    return finish(nce + alpha * rank, reduction, sample_weight=sample_weight)


CPRDLoss = cprd_loss.Module
