"""Adaptive multi-head contrastive learning (AMCL, Wang, Koniusz, Gedeon, Zheng, ECCV 2024): a contrastive loss
over C projection heads whose every pair has its own (learned) temperature, regularised against ill solutions."""

from __future__ import annotations

import torch

from .._core import Paper, check_reduction, fail, finish, objective
from .._core.domains import COUNT, NONNEGATIVE, Maybe, Tensor
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating
from .._core.values import POSITIVE_VALUES
from .core import embed

__all__ = ["amcl", "AMCLLoss", "amcl_omega"]

AMCL = Paper("Adaptive Multi-head Contrastive Learning", 2024, "2310.05615", "Wang, Koniusz, Gedeon, Zheng")


def amcl_omega(tau: torch.Tensor, dim: int) -> torch.Tensor:
    """AMCL's temperature regulariser ``Omega(tau) = dim / 2 * log(tau) + 1 / tau`` (minimum at ``tau = 2 / dim``)."""
    return 0.5 * dim * torch.log(tau) + 1 / tau


def _example(gen, dtype, n: int = 5, c: int = 2, d: int = 4) -> Example:
    base = torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    z1 = base + 0.5 * torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    z2 = base + 0.5 * torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    t = torch.rand(c, 2 * n, 2 * n, generator=gen, dtype=torch.float64)
    tau = 0.2 + (t + t.transpose(1, 2)) / 2
    return Example({"z1": z1.to(dtype), "z2": z2.to(dtype), "tau": tau.to(dtype)}, grad=("z1", "z2", "tau"))


def _bad(ex: Example) -> list[BadInput]:
    z1, z2, tau = (ex.inputs[k] for k in ("z1", "z2", "tau"))
    return [
        BadInput("views of another shape", ex.replace({"z2": z2[:-1]}), "z2"),
        BadInput("temperatures of the wrong size", ex.replace({"tau": tau[:, :-1]}), "tau"),
        BadInput("a zero temperature", ex.replace({"tau": tau * 0}), "tau"),
        BadInput("integer views", ex.replace({"z1": z1.round().long()}), "z1"),
        BadInput("a single sample", ex.replace({"z1": z1[:1], "z2": z2[:1], "tau": tau[:, :2, :2]}), "z1"),
    ]


def _extreme(ex: Example) -> Example:
    return ex.replace({k: (ex.inputs[k].sign() * 1e4 + ex.inputs[k]).float() for k in ("z1", "z2")})


HEAD_VIEWS = InputKind("multi-head view pair + pair temperatures",
                       "two views (N, C, D) of N samples through C projection heads and the temperatures (C, 2N, 2N) "
                       "of every pair of the 2N views (or (2N, 2N), shared by the heads)",
                       bad_inputs=_bad, extreme=_extreme, values={"tau": POSITIVE_VALUES})


@objective(
    "amcl", seed=True, family="representation", input_kind=HEAD_VIEWS, example=_example, paper=AMCL, per_sample=False,
    module_name="AMCLLoss",
    domains={"beta": NONNEGATIVE, "topk": COUNT, "queue": Maybe(Tensor("a queue of negatives (K, D) or (C, K, D)"))},
    formula="l_i = sum_c 1/2 sum_{(a, p) in {(z1_i, z2_i), (z2_i, z1_i)}} [-s_ap / tau_ap + mean_{n in topK(a)} "
            "s_an / tau_an + beta Omega(tau_ap) - beta sum_{n in topK(a)} (log tau_an + 1 / tau_an)], "
            "Omega(t) = D/2 log t + 1/t",
)
def amcl(z1: torch.Tensor, z2: torch.Tensor, tau: torch.Tensor, *, queue: torch.Tensor | None = None,
         beta: float = 0.01, topk: int = 100, sample_weight: torch.Tensor | None = None,
         reduction: str = "mean") -> torch.Tensor:
    """AMCL for SimCLR: a two-view contrastive loss summed over C heads, with one temperature per pair.

    ``z1``, ``z2`` (N, C, D) (or (N, D), one head): the projections of two views of N samples by C heads,
    L2-normalised here (cosine similarities ``s``). ``tau`` (C, 2N, 2N) (or (2N, 2N) for every head): the
    temperatures of every pair of the 2N views ``[z1; z2]`` (row ``i`` is ``z1_i``, row ``N + i`` is ``z2_i``),
    as the paper's shared temperature map ``sigma(phi(a)^T phi(b))`` gives them; only the positive pairs and
    each anchor's ``topk`` hardest negatives are read. For an anchor ``a`` (either view of sample ``i``) with
    positive ``p`` (the other view) and negatives all other 2N - 2 views, K = min(topk, 2N - 2) of them of
    largest similarity:

    .. math:: \\ell(a) = -\\frac{s_{ap}}{\\tau_{ap}} + \\frac1K \\sum_{n \\in \\mathrm{top}K(a)}
              \\frac{s_{an}}{\\tau_{an}} + \\beta\\,\\Omega(\\tau_{ap})
              - \\beta \\sum_{n \\in \\mathrm{top}K(a)} (\\log\\tau_{an} + \\tau_{an}^{-1}),\\qquad
              \\Omega(\\tau) = \\tfrac D2 \\log\\tau + \\tfrac1\\tau

    and the loss of sample ``i`` is ``sum_c (l_c(z1_i) + l_c(z2_i)) / 2`` (heads summed, the two directions
    averaged); ``'mean'`` over samples is the authors' value. The top-K mean of scaled negative similarities
    is the paper's top-K approximation of the negative term (its Eq. 5, used by the authors' code), which
    is why there is no log-sum-exp; ``beta`` (0.01 for SimCLR in the authors' code; 0 drops the
    regulariser) and ``topk`` (100) as their defaults. The temperature map itself (an MLP on the heads'
    features, its output squashed into ``[tau_min, tau_max]``) is the user's model: losskit takes its output.

    ``queue`` (K, D) or (C, K, D) (MoCo): the negatives are the queue's K entries instead of the other views
    (the authors' ``AMCLMoCoLoss``: both directions against the same queue); ``tau`` is then (C, 2N, 2N + K),
    the temperatures of every view against ``[z1; z2; queue]`` (only the positive pairs and the queue columns
    are read). The queue is an input, not state: update it outside (and detach the keys, as MoCo does).

    Follows the authors' ``AMCLNTXentLoss`` and ``AMCLMoCoLoss`` (LeiWangR/cl, amcl/losses.py); tested against
    ports of both.

    Paper: Wang, Koniusz, Gedeon, Zheng, "Adaptive Multi-head Contrastive Learning", ECCV 2024, arXiv:2310.05615.
    """
    check_reduction(reduction)
    for name, z in (("z1", z1), ("z2", z2)):
        check_floating(name, z)
        if z.dim() not in (2, 3):
            raise fail(name, "views of shape (N, C, D) or (N, D)", f"shape {tuple(z.shape)}")
    if z1.shape != z2.shape:
        raise fail("z2", f"a view of the shape of z1 {tuple(z1.shape)}", f"shape {tuple(z2.shape)}")
    if z1.dim() == 2:
        z1, z2 = z1.unsqueeze(1), z2.unsqueeze(1)
    n, c, d = z1.shape
    if n < 2:
        raise fail("z1", "at least 2 samples (the negatives are the other samples' views)", f"{n}")
    kq = 0
    if queue is not None:
        check_floating("queue", queue)
        if queue.dim() == 2:
            queue = queue.unsqueeze(0).expand(c, -1, -1)
        if queue.dim() != 3 or queue.shape[0] != c or queue.shape[2] != d or queue.shape[1] < 1:
            raise fail("queue", f"a queue of negatives of shape (K, {d}) or ({c}, K, {d}), K >= 1",
                       f"shape {tuple(queue.shape)}")
        kq = queue.shape[1]
    check_floating("tau", tau)
    if tau.dim() == 2:
        tau = tau.unsqueeze(0).expand(c, -1, -1)
    m = 2 * n + kq
    if tuple(tau.shape) != (c, 2 * n, m):
        raise fail("tau", f"pair temperatures of shape ({c}, {2 * n}, {m}) or ({2 * n}, {m})",
                   f"shape {tuple(tau.shape)}")
    z = embed("z1", torch.cat([z1, z2], 0).transpose(0, 1), True)  # (C, 2N, D)
    cand = z if queue is None else torch.cat([z, embed("queue", queue.to(z.dtype), True)], 1)  # (C, M, D)
    s = z @ cand.transpose(1, 2)  # (C, 2N, M)
    rows = torch.arange(2 * n, device=z.device)
    cols = torch.arange(m, device=z.device)
    partner = (rows + n) % (2 * n)
    s_pos = s[:, rows, partner]
    t_pos = tau[:, rows, partner]
    if queue is None:  # every other view
        neg = (rows.unsqueeze(1) != cols.unsqueeze(0)) & (partner.unsqueeze(1) != cols.unsqueeze(0))
        k = min(topk, 2 * n - 2)
    else:  # the queue only
        neg = (cols >= 2 * n).unsqueeze(0).expand(2 * n, m)
        k = min(topk, kq)
    masked = torch.where(neg, s, s.new_full((), float("-inf")))
    vals, idx = masked.topk(k, dim=2)
    t_top = tau.gather(2, idx)
    per = (-s_pos / t_pos + (vals / t_top).mean(2) + beta * amcl_omega(t_pos, d)
           - beta * (torch.log(t_top) + 1 / t_top).sum(2))  # (C, 2N)
    per = per.sum(0)
    return finish((per[:n] + per[n:]) / 2, reduction, sample_weight=sample_weight)


AMCLLoss = amcl.Module
