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

__all__ = ["amcl", "AMCLLoss", "amcl_omega", "amcl_simsiam", "AMCLSimSiamLoss", "amcl_barlow_twins",
           "AMCLBarlowTwinsLoss"]

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


# ----------------------------------------------------------------------------------------------- SimSiam
def _simsiam_example(gen, dtype, n: int = 5, c: int = 2, d: int = 4) -> Example:
    base = torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    t = [base + 0.5 * torch.randn(n, c, d, generator=gen, dtype=torch.float64) for _ in range(4)]
    tau = [0.2 + torch.rand(n, c, generator=gen, dtype=torch.float64) for _ in range(2)]
    return Example({"p1": t[0].to(dtype), "z2": t[1].to(dtype), "p2": t[2].to(dtype), "z1": t[3].to(dtype),
                    "tau1": tau[0].to(dtype), "tau2": tau[1].to(dtype)}, grad=("p1", "p2", "tau1", "tau2"))


def _simsiam_bad(ex: Example) -> list[BadInput]:
    p1, tau1 = ex.inputs["p1"], ex.inputs["tau1"]
    return [
        BadInput("a target of another shape", ex.replace({"z2": ex.inputs["z2"][:-1]}), "z2"),
        BadInput("temperatures of the wrong shape", ex.replace({"tau1": tau1[:-1]}), "tau1"),
        BadInput("a zero temperature", ex.replace({"tau2": ex.inputs["tau2"] * 0}), "tau2"),
        BadInput("integer predictions", ex.replace({"p1": p1.round().long()}), "p1"),
    ]


HEAD_PREDICTIONS = InputKind(
    "multi-head SimSiam branches + pair temperatures",
    "predictions p1, p2 and targets z1, z2 (N, C, D) of C heads, and the temperatures tau1 of (p1, z2) and tau2 of "
    "(p2, z1), (N, C)", bad_inputs=_simsiam_bad,
    extreme=lambda ex: ex.replace({k: (ex.inputs[k].sign() * 1e4 + ex.inputs[k]).float() for k in ("p1", "z2", "p2", "z1")}),
    values={"tau1": POSITIVE_VALUES, "tau2": POSITIVE_VALUES})


def _heads(name, x, shape=None):
    check_floating(name, x)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3 or (shape is not None and tuple(x.shape) != shape):
        want = f"shape {shape} (or without the head dimension)" if shape else "shape (N, C, D) or (N, D)"
        raise fail(name, want, f"shape {tuple(x.shape)}")
    return x


@objective(
    "amcl_simsiam", seed=True, family="representation", input_kind=HEAD_PREDICTIONS, example=_simsiam_example,
    paper=AMCL, module_name="AMCLSimSiamLoss", domains={"beta": NONNEGATIVE},
    formula="l_i = sum_c [-cos(p1, sg z2) / (2 tau1) - cos(p2, sg z1) / (2 tau2) + beta Omega(tau1) + beta Omega(tau2)]",
)
def amcl_simsiam(p1: torch.Tensor, z2: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, tau1: torch.Tensor,
                 tau2: torch.Tensor, *, beta: float = 0.01, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """AMCL for SimSiam: the symmetric negative cosine of each head, each pair scaled by its temperature.

    .. math:: \\ell_i = \\sum_c \\Big[-\\frac{\\cos(p^1_{ic}, \\bar z^2_{ic})}{2\\tau^1_{ic}}
              - \\frac{\\cos(p^2_{ic}, \\bar z^1_{ic})}{2\\tau^2_{ic}}
              + \\beta\\,\\Omega(\\tau^1_{ic}) + \\beta\\,\\Omega(\\tau^2_{ic})\\Big],\\qquad
              \\Omega(\\tau) = \\tfrac D2 \\log\\tau + \\tfrac1\\tau

    ``p1``, ``p2`` the predictor outputs and ``z1``, ``z2`` the projections (N, C, D) of the two views by C heads
    (``z`` stop-gradient, written ``\\bar z``, as SimSiam); ``tau1``, ``tau2`` (N, C) the temperatures of the pairs
    (p1, z2) and (p2, z1) from the user's temperature map. ``beta`` 0.01 (the authors' default). With one head and
    every temperature 1, beta = 0 gives SimSiam's loss :func:`negative_cosine` (per sample). Follows the authors'
    ``AMCLSimSiamLoss`` (LeiWangR/cl, amcl/losses.py), tested against a port.

    Paper: Wang, Koniusz, Gedeon, Zheng, "Adaptive Multi-head Contrastive Learning", ECCV 2024, arXiv:2310.05615.
    """
    check_reduction(reduction)
    p1 = _heads("p1", p1)
    shape = tuple(p1.shape)
    z2, p2, z1 = _heads("z2", z2, shape), _heads("p2", p2, shape), _heads("z1", z1, shape)
    n, c, d = shape
    for name, t in (("tau1", tau1), ("tau2", tau2)):
        check_floating(name, t)
        if tuple(t.shape) not in ((n, c),) + (((n,),) if c == 1 else ()):
            raise fail(name, f"temperatures of shape ({n}, {c})", f"shape {tuple(t.shape)}")
    tau1, tau2 = tau1.reshape(n, c), tau2.reshape(n, c)
    s1 = (embed("p1", p1, True) * embed("z2", z2.detach(), True)).sum(-1)
    s2 = (embed("p2", p2, True) * embed("z1", z1.detach(), True)).sum(-1)
    per = -0.5 * s1 / tau1 - 0.5 * s2 / tau2 + beta * (amcl_omega(tau1, d) + amcl_omega(tau2, d))
    return finish(per.sum(1), reduction, sample_weight=sample_weight)


AMCLSimSiamLoss = amcl_simsiam.Module


# ------------------------------------------------------------------------------------------- Barlow Twins
def _bt_example(gen, dtype, n: int = 6, c: int = 2, d: int = 3) -> Example:
    base = torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    z1 = base + 0.5 * torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    z2 = base + 0.5 * torch.randn(n, c, d, generator=gen, dtype=torch.float64)
    tau = 0.3 + torch.rand(c, d, d, generator=gen, dtype=torch.float64)
    return Example({"z1": z1.to(dtype), "z2": z2.to(dtype), "tau": tau.to(dtype)}, grad=("z1", "z2", "tau"))


def _bt_bad(ex: Example) -> list[BadInput]:
    z1, z2, tau = (ex.inputs[k] for k in ("z1", "z2", "tau"))
    return [
        BadInput("views of another shape", ex.replace({"z2": z2[:-1]}), "z2"),
        BadInput("temperatures of the wrong size", ex.replace({"tau": tau[:, :-1]}), "tau"),
        BadInput("a zero temperature", ex.replace({"tau": tau * 0}), "tau"),
        BadInput("integer views", ex.replace({"z1": z1.round().long()}), "z1"),
    ]


HEAD_CHANNELS = InputKind("multi-head view pair + channel-pair temperatures",
                          "two views (N, C, D) through C heads and the temperatures (C, D, D) of every pair of "
                          "channels (or (D, D), shared)", bad_inputs=_bt_bad, extreme=_extreme,
                          values={"tau": POSITIVE_VALUES})


@objective(
    "amcl_barlow_twins", seed=True, family="representation", input_kind=HEAD_CHANNELS, example=_bt_example,
    paper=AMCL, per_sample=False, batch_scalar=True, sample_weight=False, module_name="AMCLBarlowTwinsLoss",
    domains={"beta": NONNEGATIVE, "lambd": NONNEGATIVE, "eps": NONNEGATIVE},
    formula="L = sum_c [sum_i (1 - C_ii / tau_ii)^2 + lambda sum_{i != j} C_ij^2 / tau_ij + beta sum_i Omega(tau_ii) "
            "- beta sum_{i != j} Omega(tau_ij)]",
)
def amcl_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, tau: torch.Tensor, *, lambd: float = 5e-3,
                      beta: float = 1e-4, eps: float = 1e-9, reduction: str = "mean") -> torch.Tensor:
    """AMCL for Barlow Twins: each entry of every head's cross-correlation scaled by its channel-pair temperature.

    .. math:: \\mathcal L = \\sum_c \\Big[\\sum_i \\Big(1 - \\frac{C^c_{ii}}{\\tau^c_{ii}}\\Big)^2
              + \\lambda \\sum_{i \\ne j} \\frac{(C^c_{ij})^2}{\\tau^c_{ij}}
              + \\beta \\sum_i \\Omega(\\tau^c_{ii}) - \\beta \\sum_{i \\ne j} \\Omega(\\tau^c_{ij})\\Big]

    ``C^c = x^T y / N`` with ``x``, ``y`` the features of head c standardised per channel as the authors' code
    (``(z - mean) / (std_unbiased + eps)``, ``eps`` 1e-9), ``Omega(tau) = D/2 log tau + 1/tau``. ``tau`` (C, D, D)
    (or (D, D)): the temperatures of the channel pairs from the user's temperature map (the paper's map reads
    the N-dimensional channel vectors, so it needs a fixed batch size; losskit takes its output). ``lambd`` 5e-3,
    ``beta`` 1e-4 (the authors' defaults). With every temperature 1 and beta = 0 this is Barlow Twins
    (:func:`barlow_twins` with its standardisation). A batch-level loss: every ``reduction`` returns the value.
    Follows the authors' ``AMCLBarlowTwinsLoss`` (LeiWangR/cl, amcl/losses.py), tested against a port.

    Paper: Wang, Koniusz, Gedeon, Zheng, "Adaptive Multi-head Contrastive Learning", ECCV 2024, arXiv:2310.05615.
    """
    check_reduction(reduction)
    z1 = _heads("z1", z1)
    z2 = _heads("z2", z2, tuple(z1.shape))
    n, c, d = z1.shape
    if n < 2:
        raise fail("z1", "at least 2 samples (an unbiased standard deviation)", f"{n}")
    check_floating("tau", tau)
    if tau.dim() == 2:
        tau = tau.unsqueeze(0).expand(c, -1, -1)
    if tuple(tau.shape) != (c, d, d):
        raise fail("tau", f"channel-pair temperatures of shape ({c}, {d}, {d}) or ({d}, {d})", f"shape {tuple(tau.shape)}")

    def standardise(z):
        return (z - z.mean(0)) / (z.std(0, unbiased=True) + eps)

    x, y = standardise(z1).permute(1, 2, 0), standardise(z2).permute(1, 0, 2)  # (C, D, N), (C, N, D)
    corr = x @ y / n  # (C, D, D)
    eye = torch.eye(d, dtype=torch.bool, device=z1.device)
    diag = torch.diagonal(corr, dim1=1, dim2=2)
    t_pos = torch.diagonal(tau, dim1=1, dim2=2)
    zero = corr.new_zeros(())
    pos = (1 - diag / t_pos).pow(2).sum()
    neg = lambd * torch.where(eye, zero, corr.pow(2) / tau).sum()
    reg = beta * amcl_omega(t_pos, d).sum() - beta * torch.where(eye, zero, amcl_omega(tau, d)).sum()
    return pos + neg + reg


AMCLBarlowTwinsLoss = amcl_barlow_twins.Module
