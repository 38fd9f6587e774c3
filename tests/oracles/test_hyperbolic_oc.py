"""Hyp-OC's hyperbolic losses (Narayan, Patel 2024, arXiv:2404.14406).

Oracles: the ``hyptorch`` code the authors use (Kartik-3004/hyp-oc ``hyptorch/nn.py`` @
9c25c74b608f6f6bb2eae3924cc4c244520e2e29, ``HyperbolicMLR``; its ``pmath`` from
leymir/hyperbolic-image-embeddings ``hyptorch/pmath.py`` @ 0a7bd9715a80f6818f4f6d4602f08ab779eb75d4:
``_mobius_add``, ``_expmap0``, ``_mobius_addition_batch``, ``_hyperbolic_softmax``, ``_dist``), ported
below with their ``1e-5`` stabilisers as a switch; the authors' ``TPC_loss_hyp`` (``loss.py``, same
commit). Properties of the Poincaré distance: closed form from the origin, symmetry, triangle
inequality, and the Euclidean limit ``d_c -> 2||x - y||`` as ``c -> 0``.
"""

import math

import pytest
import torch
from oracle_meta import Oracle

import losskit
from losskit.classification import hyperbolic_mlr_logits, poincare_distance, to_poincare

ORACLES = [
    Oracle("hyperbolic_cross_entropy", "Kartik-3004/hyp-oc",
           "hyptorch/nn.py (HyperbolicMLR) with leymir/hyperbolic-image-embeddings hyptorch/pmath.py @ "
           "0a7bd9715a80f6818f4f6d4602f08ab779eb75d4 (_mobius_add, _expmap0, _hyperbolic_softmax)",
           "9c25c74b608f6f6bb2eae3924cc4c244520e2e29", "1e-12",
           differences="the port's 1e-5 stabilisers switched off (1e-12, gradients 1e-9); with them on, 1e-3"),
    Oracle("hyperbolic_pairwise_confusion", "Kartik-3004/hyp-oc", "loss.py (TPC_loss_hyp)",
           "9c25c74b608f6f6bb2eae3924cc4c244520e2e29", "relation",
           differences="the authors' code takes atan of the scaled Mobius distance; losskit uses the geodesic "
                       "distance (artanh), the mean over pairs = the pmath _dist port (1e-12); 0.5 * losskit = "
                       "TPC_loss_hyp with artanh (1e-4, their 1e-5 eps)"),
]


EPS = 1e-5


# ---- port of hyptorch pmath / HyperbolicMLR (eps: their 1e-5 stabilisers, 0 for the exact formulas) ----
def p_mobius_add(x, y, c, eps):
    x2 = x.pow(2).sum(dim=-1, keepdim=True)
    y2 = y.pow(2).sum(dim=-1, keepdim=True)
    xy = (x * y).sum(dim=-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    denom = 1 + 2 * c * xy + c ** 2 * x2 * y2
    return num / (denom + eps)


def p_expmap0(u, c):
    sqrt_c = c ** 0.5
    u_norm = torch.clamp_min(u.norm(dim=-1, p=2, keepdim=True), 1e-5)
    return torch.tanh(sqrt_c * u_norm) * u / (sqrt_c * u_norm)


def p_mobius_addition_batch(x, y, c, eps):
    xy = torch.einsum("ij,kj->ik", (x, y))
    x2 = x.pow(2).sum(-1, keepdim=True)
    y2 = y.pow(2).sum(-1, keepdim=True)
    num = 1 + 2 * c * xy + c * y2.permute(1, 0)
    num = num.unsqueeze(2) * x.unsqueeze(1)
    num = num + (1 - c * x2).unsqueeze(2) * y
    denom = 1 + 2 * c * xy + c ** 2 * x2 * y2.permute(1, 0)
    return num / (denom.unsqueeze(2) + eps)


def p_hyperbolic_softmax(X, A, P, c, eps):
    c = torch.as_tensor(c, dtype=X.dtype)
    lambda_pkc = 2 / (1 - c * P.pow(2).sum(dim=1))
    k = lambda_pkc * torch.norm(A, dim=1) / torch.sqrt(c)
    mob_add = p_mobius_addition_batch(-P, X, c, eps)
    num = 2 * torch.sqrt(c) * torch.sum(mob_add * A.unsqueeze(1), dim=-1)
    denom = torch.norm(A, dim=1, keepdim=True) * (1 - c * mob_add.pow(2).sum(dim=2))
    logit = k.unsqueeze(1) * torch.asinh(num / denom)
    return logit.permute(1, 0)


def p_mlr(x, p_vals, a_vals, c, eps):  # HyperbolicMLR.forward
    p_vals_poincare = p_expmap0(p_vals, c)
    conformal_factor = 1 - c * p_vals_poincare.pow(2).sum(dim=1, keepdim=True)
    a_vals_poincare = a_vals * conformal_factor
    return p_hyperbolic_softmax(x, a_vals_poincare, p_vals_poincare, c, eps)


def p_dist(x, y, c, eps):
    sqrt_c = c ** 0.5
    return 2 / sqrt_c * torch.atanh(sqrt_c * p_mobius_add(-x, y, c, eps).norm(dim=-1))


def tpc_loss_hyp(features, c, atan=True):  # loss.py TPC_loss_hyp (atan=False: the artanh of the distance)
    batch_size = features.shape[0]
    left, right = features[: batch_size // 2], features[batch_size // 2:]
    loss = 0.0
    for lv, rv in zip(left, right):
        m = torch.norm(p_mobius_add(-lv, rv, c, EPS), 2, -1)
        sc = float(math.sqrt(c))
        loss += (torch.atan(sc * m) if atan else torch.atanh(sc * m)) * 2.0 / sc
    return loss / float(batch_size)


def _points(n=12, d=5, c=0.1, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return to_poincare(torch.randn(n, d, generator=g, dtype=torch.float64) * scale, c)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_mlr_logits_and_hyp_ce_match_hyptorch(c):
    g = torch.Generator().manual_seed(1)
    x = _points(c=c)
    p_vals = 0.5 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    a_vals = torch.randn(3, 5, generator=g, dtype=torch.float64)
    got = hyperbolic_mlr_logits(x, p_vals, a_vals, c)
    torch.testing.assert_close(got, p_mlr(x, p_vals, a_vals, c, 0.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, p_mlr(x, p_vals, a_vals, c, EPS), rtol=1e-3, atol=1e-4)  # with their eps
    y = torch.randint(0, 3, (12,), generator=g)
    ref = torch.nn.functional.cross_entropy(p_mlr(x, p_vals, a_vals, c, 0.0), y)
    xs, ps, as_ = (t.clone().requires_grad_() for t in (x, p_vals, a_vals))
    loss = losskit.hyperbolic_cross_entropy(xs, y, ps, as_, c=c)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    xr, pr, ar = (t.clone().requires_grad_() for t in (x, p_vals, a_vals))
    ref2 = torch.nn.functional.cross_entropy(p_mlr(xr, pr, ar, c, 0.0), y)
    for a, b in zip(torch.autograd.grad(loss, (xs, ps, as_)), torch.autograd.grad(ref2, (xr, pr, ar))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_hyp_pc_matches_authors_with_the_distance_fixed():
    c = 0.1
    z = _points(n=10, c=c, seed=2)
    got = losskit.hyperbolic_pairwise_confusion(z[:5], z[5:], c=c)
    # the authors' TPC_loss_hyp with artanh (the geodesic distance) is 0.5 * the mean over pairs
    torch.testing.assert_close(0.5 * got, tpc_loss_hyp(z, c, atan=False), rtol=1e-4, atol=0)  # their 1e-5 eps
    torch.testing.assert_close(got, p_dist(z[:5], z[5:], c, 0.0).mean(), rtol=1e-12, atol=0)
    # as written (atan) the code computes a different, bounded function
    assert abs(tpc_loss_hyp(z, c, atan=True).item() - 0.5 * got.item()) > 1e-2


def test_distance_properties():
    c = 0.7
    x, y, w = _points(n=30, c=c, seed=3).chunk(3)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(poincare_distance(zero, x, c),
                               2 / math.sqrt(c) * torch.atanh(math.sqrt(c) * x.norm(dim=-1)))
    torch.testing.assert_close(poincare_distance(x, y, c), poincare_distance(y, x, c))
    assert (poincare_distance(x, w, c) <= poincare_distance(x, y, c) + poincare_distance(y, w, c) + 1e-12).all()
    assert poincare_distance(x, x, c).abs().max().item() < 1e-7
    a, b = torch.randn(2, 4, 3, dtype=torch.float64) * 0.3
    torch.testing.assert_close(poincare_distance(a, b, 1e-10), 2 * (a - b).norm(dim=-1), rtol=1e-6, atol=0)


def test_to_poincare_clips_and_stays_inside():
    u = torch.randn(50, 4, dtype=torch.float64) * 100
    x = to_poincare(u, c=0.1, clip_r=2.0)
    torch.testing.assert_close(x.norm(dim=-1), torch.full((50,), math.tanh(math.sqrt(0.1) * 2) / math.sqrt(0.1),
                                                          dtype=torch.float64))
    assert (0.1 * x.square().sum(-1) < 1).all()


def test_points_outside_the_ball_raise():
    z = _points(n=4)
    with pytest.raises(losskit.LossInputError, match="ball"):
        losskit.hyperbolic_pairwise_confusion(z[:2] * 50, z[2:], c=0.1)
