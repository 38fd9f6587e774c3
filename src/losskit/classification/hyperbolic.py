"""Hyperbolic (Poincaré-ball) classification losses of Hyp-OC: hyperbolic cross-entropy (Hyp-CE) with
hyperbolic multinomial logistic regression (MLR) logits, and hyperbolic pairwise confusion (Hyp-PC).

The Poincaré ball of curvature ``-c`` is ``B_c = {x : c ||x||² < 1}`` with Möbius addition

    x ⊕_c y = ((1 + 2c<x,y> + c||y||²) x + (1 - c||x||²) y) / (1 + 2c<x,y> + c²||x||²||y||²),

geodesic distance ``d_c(x, y) = (2/√c) artanh(√c ||(-x) ⊕_c y||)`` and exponential map at 0
``exp_0(u) = tanh(√c ||u||) u / (√c ||u||)``. Hyperbolic MLR (Ganea, Bécigneul, Hofmann 2018) scores
class ``k``, with offset ``p_k ∈ B_c`` and normal ``a_k``, by the signed distance to its gyroplane:

    logit_k(x) = (λ_{p_k} ||a_k|| / √c) asinh( 2√c <(-p_k) ⊕_c x, a_k> / ((1 - c||(-p_k) ⊕_c x||²) ||a_k||) ),
    λ_p = 2 / (1 - c||p||²).

As in the ``hyptorch`` layer the Hyp-OC code uses (``HyperbolicMLR``), the parameters are Euclidean:
``p_k = exp_0(offsets_k)`` and ``a_k = normals_k (1 - c||p_k||²)``, so any optimiser can train them.

Hyp-OC trains a one-class face anti-spoofing model with live faces only: a pseudo-negative class is
sampled from a Gaussian around a running mean of the features (``N(alpha m_prev + (1-alpha) mean(f), std² I)``,
alpha = 0.8, std = 1 in the authors' code), real and pseudo-negative features are mapped to the ball,
Hyp-CE separates the two classes and Hyp-PC pulls the real embeddings together.

Paper: Narayan, Patel, "Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing", 2024,
arXiv:2404.14406.
"""

from __future__ import annotations

import math

import torch

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import POSITIVE
from .._core.validate import check_floating, check_labels, require

__all__ = ["hyperbolic_cross_entropy", "HyperbolicCrossEntropyLoss", "hyperbolic_pairwise_confusion",
           "HyperbolicPairwiseConfusionLoss", "poincare_distance", "hyperbolic_mlr_logits", "to_poincare"]

HYPOC = Paper("Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing", 2024, "2404.14406",
              "Narayan, Patel")


def _mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    x2, y2 = x.square().sum(-1, keepdim=True), y.square().sum(-1, keepdim=True)
    xy = (x * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c * c * x2 * y2)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    s = v.square().sum(-1)
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


def _check_ball(name: str, x: torch.Tensor, c: float) -> None:
    def bad():
        return (c * x.detach().square().sum(-1) >= 1).any()

    require(name, x, bad, f"points inside the Poincaré ball c ||x||² < 1 (c = {c:g})",
            lambda: f"c ||x||² up to {(c * x.detach().square().sum(-1)).max().item():.6g}")


def to_poincare(u: torch.Tensor, c: float = 0.1, clip_r: float | None = 2.0) -> torch.Tensor:
    """Euclidean features to the ball: ``exp_0`` after clipping ``||u||`` to ``clip_r`` (feature clipping,
    Guo et al. 2022, as in Hyp-OC; ``None``: no clipping). The result lies strictly inside the ball."""
    check_floating("u", u)
    if clip_r is not None:
        n = _safe_norm(u)[..., None]
        u = u * torch.where(n > clip_r, clip_r / torch.where(n > 0, n, torch.ones_like(n)), torch.ones_like(n))
    n = _safe_norm(u)[..., None]
    sc = math.sqrt(c)
    # tanh(√c n) / (√c n) -> 1 as n -> 0 (no division by 0)
    ratio = torch.where(n > 0, torch.tanh(sc * n) / (sc * torch.where(n > 0, n, torch.ones_like(n))),
                        torch.ones_like(n))
    return u * ratio


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float = 0.1) -> torch.Tensor:
    """Geodesic distance ``d_c(x, y) = (2/√c) artanh(√c ||(-x) ⊕_c y||)`` on the ball (last dim)."""
    sc = math.sqrt(c)
    r = sc * _safe_norm(_mobius_add(-x, y, c))
    return 2 / sc * torch.atanh(r.clamp_max(1 - torch.finfo(r.dtype).eps))  # < 1 inside the ball


def hyperbolic_mlr_logits(x: torch.Tensor, offsets: torch.Tensor, normals: torch.Tensor, c: float = 0.1
                          ) -> torch.Tensor:
    """Hyperbolic MLR logits ``(N, K)`` of ball points ``x (N, D)`` with Euclidean parameters ``offsets``,
    ``normals (K, D)`` (``p_k = exp_0(offsets_k)``, ``a_k = normals_k (1 - c||p_k||²)``, as ``hyptorch``)."""
    sc = math.sqrt(c)
    p = to_poincare(offsets, c, clip_r=None)
    conf = 1 - c * p.square().sum(-1, keepdim=True)  # (K, 1)
    a = normals * conf
    lam = 2 / conf[:, 0]  # (K,)
    # ||a_k|| and the unit normal, scaled so that huge normals neither overflow nor give inf / inf
    scale = a.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    a_norm = scale[:, 0] * _safe_norm(a / scale)  # (K,)
    unit = a / torch.where(a_norm > 0, a_norm, torch.ones_like(a_norm))[:, None]
    mob = _mobius_add(-p[None, :, :], x[:, None, :], c)  # (N, K, D): (-p_k) ⊕ x
    arg = 2 * sc * (mob * unit[None]).sum(-1) / (1 - c * mob.square().sum(-1))
    return (lam * a_norm / sc)[None] * torch.asinh(arg)


# ---------------------------------------------------------------------------------- Hyp-CE
def _ce_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, d: int = 4, k: int = 2) -> Example:
    x = to_poincare(torch.randn(n, d, generator=gen, dtype=torch.float64) * 2, 0.1)
    offsets = 0.5 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    normals = torch.randn(k, d, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=gen)
    return Example({"embeddings": x.to(dtype), "target": target, "offsets": offsets.to(dtype),
                    "normals": normals.to(dtype)}, grad=("embeddings", "offsets", "normals"),
                   batched=("embeddings", "target"))


def _ce_bad(ex: Example) -> list[BadInput]:
    x, t = ex.inputs["embeddings"], ex.inputs["target"]
    return [BadInput("a point outside the ball", ex.replace({"embeddings": x * 100}), "embeddings"),
            BadInput("label out of range", ex.replace({"target": t + 5}), "target"),
            BadInput("batch mismatch", ex.replace({"target": t[:-1]}), "target"),
            BadInput("normals of the wrong width", ex.replace({"normals": ex.inputs["normals"][:, :-1]}), "normals"),
            BadInput("integer embeddings", ex.replace({"embeddings": x.round().long()}), "embeddings")]


BALL_LABELS = InputKind("ball embeddings+labels+MLR parameters",
                        "Poincaré-ball points (N, D), class indices (N,), MLR offsets and normals (K, D)",
                        bad_inputs=_ce_bad,
                        extreme=lambda ex: ex.map_floats(lambda t: t.float()).replace(
                            {"normals": (ex.inputs["normals"] * 1e4).float()}))


@objective("hyperbolic_cross_entropy", seed=True, family="classification", input_kind=BALL_LABELS,
           example=_ce_example, paper=HYPOC, properties={"nonnegative"}, module_name="HyperbolicCrossEntropyLoss",
           formula="L = -log softmax(logit(x))_y,  logit_k = (λ_pk ||a_k||/√c) asinh(2√c <(-p_k)⊕x, a_k> / "
                   "((1 - c||(-p_k)⊕x||²)||a_k||))",
           domains={"c": POSITIVE}, allow_neg_inf=())
def hyperbolic_cross_entropy(embeddings: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor,
                             normals: torch.Tensor, *, c: float = 0.1, sample_weight: torch.Tensor | None = None,
                             reduction: str = "mean") -> torch.Tensor:
    """Hyp-CE: cross-entropy of hyperbolic multinomial logistic regression logits on the Poincaré ball.

    .. math:: L(x, y) = -\\log\\mathrm{softmax}_y\\Big(\\frac{\\lambda_{p_k}\\lVert a_k\\rVert}{\\sqrt c}
              \\,\\mathrm{asinh}\\frac{2\\sqrt c\\,\\langle -p_k\\oplus_c x, a_k\\rangle}
              {(1 - c\\lVert -p_k\\oplus_c x\\rVert^2)\\lVert a_k\\rVert}\\Big)_k

    ``embeddings (N, D)``: points of the ball ``c ||x||² < 1`` (map features with :func:`to_poincare`);
    ``target (N,)`` class indices (Hyp-OC: 0 live, 1 pseudo-negative); ``offsets``, ``normals (K, D)`` the
    classifier's Euclidean parameters (``hyptorch``'s ``p_vals``/``a_vals``; :func:`hyperbolic_mlr_logits`).
    ``c`` the negative curvature, default 0.1 (the authors' ``--curvature``). Differences from the
    ``hyptorch`` code used by the authors: no ``1e-5`` added to the Möbius denominator and an exact
    ``asinh`` (theirs clamps its argument's log at 1e-5).

    Paper: Narayan, Patel, "Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing",
    2024, arXiv:2404.14406 (hyperbolic MLR: Ganea, Bécigneul, Hofmann, NeurIPS 2018).
    """
    for name, t in (("embeddings", embeddings), ("offsets", offsets), ("normals", normals)):
        check_floating(name, t)
    if embeddings.dim() != 2:
        raise fail("embeddings", "points of shape (N, D)", f"shape {tuple(embeddings.shape)}")
    n, d = embeddings.shape
    if offsets.dim() != 2 or offsets.shape[1] != d:
        raise fail("offsets", f"class offsets of shape (K, {d})", f"shape {tuple(offsets.shape)}")
    if tuple(normals.shape) != tuple(offsets.shape):
        raise fail("normals", f"class normals of shape {tuple(offsets.shape)}", f"shape {tuple(normals.shape)}")
    if tuple(target.shape) != (n,):
        raise fail("target", f"class indices of shape ({n},)", f"shape {tuple(target.shape)}")
    check_labels("target", target, offsets.shape[0])
    dtype = torch.promote_types(torch.promote_types(embeddings.dtype, offsets.dtype), normals.dtype)
    x = embeddings.to(dtype)
    _check_ball("embeddings", x, c)
    logits = hyperbolic_mlr_logits(x, offsets.to(dtype), normals.to(dtype), c)
    per = -torch.log_softmax(logits, -1).gather(-1, target.long()[:, None])[:, 0]
    return finish(per, reduction, sample_weight=sample_weight)


# ---------------------------------------------------------------------------------- Hyp-PC
def _pc_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 4) -> Example:
    x = to_poincare(torch.randn(n, d, generator=gen, dtype=torch.float64) * 2, 0.1)
    y = to_poincare(torch.randn(n, d, generator=gen, dtype=torch.float64) * 2, 0.1)
    return Example({"x": x.to(dtype), "y": y.to(dtype)}, grad=("x", "y"))


def _pc_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    return [BadInput("a point outside the ball", ex.replace({"y": y * 100}), "y"),
            BadInput("unpaired batches", ex.replace({"y": y[:-1]}), "y"),
            BadInput("1-d points", ex.replace({"x": x[:, 0], "y": y[:, 0]}), "x"),
            BadInput("integer points", ex.replace({"x": x.round().long()}), "x")]


BALL_PAIRS = InputKind("paired ball embeddings", "two batches of Poincaré-ball points (N, D), paired by row",
                       bad_inputs=_pc_bad, extreme=lambda ex: ex.map_floats(lambda t: (t * 0.999999).float()))


@objective("hyperbolic_pairwise_confusion", seed=True, family="classification", input_kind=BALL_PAIRS,
           example=_pc_example, paper=HYPOC, properties={"nonnegative"},
           module_name="HyperbolicPairwiseConfusionLoss",
           formula="L(x, y) = d_c(x, y) = (2/√c) artanh(√c ||(-x) ⊕_c y||)", domains={"c": POSITIVE},
           allow_neg_inf=())
def hyperbolic_pairwise_confusion(x: torch.Tensor, y: torch.Tensor, *, c: float = 0.1,
                                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Hyp-PC: the Poincaré distance between paired embeddings of the same (live) class.

    .. math:: L(x_i, y_i) = d_c(x_i, y_i) = \\frac{2}{\\sqrt c}\\,\\mathrm{artanh}\\big(\\sqrt c\\,
              \\lVert (-x_i) \\oplus_c y_i \\rVert\\big)

    Pairwise confusion (Dubey et al. 2018) in hyperbolic space: pulling random pairs of real-face
    embeddings together tightens the live class. Hyp-OC pairs the first half of a batch of live
    embeddings with the second half: ``hyperbolic_pairwise_confusion(z[:B//2], z[B//2:])``. The authors'
    ``TPC_loss_hyp`` divides the sum over the ``B/2`` pairs by ``B``, i.e. ``0.5 *`` this ``'mean'``; and it
    computes ``atan`` where the distance has ``artanh`` (Kartik-3004/hyp-oc ``loss.py``), so that its value
    saturates at ``π/√c`` instead of growing without bound towards the boundary. losskit uses the geodesic
    distance of the paper (and of ``hyptorch``'s ``pmath.dist``). ``c`` default 0.1 as the authors'.

    Paper: Narayan, Patel, "Hyp-OC: Hyperbolic One Class Classification for Face Anti-Spoofing",
    2024, arXiv:2404.14406.
    """
    check_floating("x", x)
    check_floating("y", y)
    if x.dim() != 2:
        raise fail("x", "points of shape (N, D)", f"shape {tuple(x.shape)}")
    if y.shape != x.shape:
        raise fail("y", f"points paired with x, shape {tuple(x.shape)}", f"shape {tuple(y.shape)}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    _check_ball("x", x, c)
    _check_ball("y", y, c)
    return finish(poincare_distance(x, y, c), reduction, sample_weight=sample_weight)


HyperbolicCrossEntropyLoss = hyperbolic_cross_entropy.Module
HyperbolicPairwiseConfusionLoss = hyperbolic_pairwise_confusion.Module
