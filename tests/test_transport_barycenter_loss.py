"""``barycenter_loss`` (issue 19): the weighted (debiased) Sinkhorn divergence to K target measures.

References, none of them losskit:
- values: the primal ``<P, C> + eps KL(P | a (x) b)`` evaluated at POT's plans (``ot.sinkhorn``,
  ``method='sinkhorn_log'``, float64), summed with the barycentric weights;
- minimiser on a fixed support: POT's ``ot.bregman.barycenter_debiased`` (Janati et al. 2020) for the
  debiased loss, and POT's ``ot.bregman.barycenter`` for the plain loss plus ``eps <a, log a>`` (POT's
  entropy is ``sum P (log P - 1)``, not ``KL(P | a (x) b)``). The loss is convex in the weights, so its
  minimiser is the point where the KKT conditions of the simplex hold: the gradient is constant on the
  support (and not smaller off it), which is checked at POT's barycenter, and shown to fail elsewhere;
- minimiser on a free support: POT's ``ot.lp.free_support_barycenter`` (Cuturi & Doucet 2014, exact
  plans) and, in 1-D, the closed form (the average of the sorted samples, quantile averaging).
"""

from __future__ import annotations

import pytest
import torch

import losskit
from losskit import LossInputError

ot = pytest.importorskip("ot")
D = torch.float64


def _pot_primal(x, y, a, b, eps):
    """OT_eps(a, b) = <P, C> + eps KL(P | a (x) b) at POT's log-domain Sinkhorn plan, C = ||x - y||^2."""
    C = torch.cdist(x, y) ** 2
    P = torch.as_tensor(ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log",
                                    stopThr=1e-14, numItermax=100000))
    kl = (P * (P / (a[:, None] * b[None])).log()).sum()
    return float((P * C).sum() + eps * kl)


@pytest.mark.parametrize("debias", [True, False])
def test_value_is_the_weighted_sum_of_pot_primals(debias):
    g = torch.Generator().manual_seed(0)
    n, K, m, eps = 7, 3, 6, 0.5
    x = torch.randn(n, 2, generator=g, dtype=D)
    y = torch.randn(K, m, 2, generator=g, dtype=D) + torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.5]],
                                                                     dtype=D).view(K, 1, 2)
    a = torch.rand(n, generator=g, dtype=D) + 0.2
    a = a / a.sum()
    b = torch.rand(K, m, generator=g, dtype=D) + 0.2
    b = b / b.sum(1, keepdim=True)
    w = torch.tensor([1.0, 2.0, 5.0], dtype=D)          # normalised by the loss
    got = losskit.barycenter_loss(x, y, a=a, b=b, weights=w, eps=eps, tol=1e-13, debias=debias)
    wn = w / w.sum()
    ref = sum(float(wn[k]) * _pot_primal(x, y[k], a, b[k], eps) for k in range(K))
    if debias:
        ref -= 0.5 * _pot_primal(x, x, a, a, eps)
        ref -= 0.5 * sum(float(wn[k]) * _pot_primal(y[k], y[k], b[k], b[k], eps) for k in range(K))
    assert abs(got.item() - ref) < 1e-10 * max(1.0, abs(ref))
    # the same as the weighted sum of losskit's own divergences / entropic costs
    one = losskit.sinkhorn_divergence if debias else losskit.sinkhorn
    own = sum(wn[k] * one(x, y[k], a=a, b=b[k], eps=eps, tol=1e-13) for k in range(K))
    assert abs(got.item() - own.item()) < 1e-10


def _grid_problem():
    n = 25
    t = torch.linspace(0, 1, n, dtype=D)

    def hist(mu, s):
        h = torch.exp(-(t - mu) ** 2 / (2 * s ** 2)) + 1e-3
        return h / h.sum()

    A = torch.stack([hist(0.25, 0.06), hist(0.7, 0.1), hist(0.5, 0.2)])
    w = torch.tensor([0.3, 0.5, 0.2], dtype=D)
    return t, A, w, (t[:, None] - t[None]) ** 2


def _kkt(t, A, w, q, eps, debias, entropy=False):
    """(max deviation of the gradient from its mean on the support, min excess off the support)."""
    q = (q / q.sum()).detach().requires_grad_(True)
    K, n = A.shape
    loss = losskit.barycenter_loss(t[:, None], t[None, :, None].expand(K, n, 1), a=q, b=A, weights=w, eps=eps,
                                   tol=1e-11, max_iter=20000, debias=debias)
    if entropy:
        loss = loss + eps * (q * q.log()).sum()
    (grad,) = torch.autograd.grad(loss, q)
    on = q.detach() > 1e-6 * q.detach().max()
    lam = grad[on].mean()
    off = float((grad[~on] - lam).min()) if (~on).any() else 0.0
    return float((grad[on] - lam).abs().max()), off


def test_debiased_minimiser_is_pot_barycenter_debiased():
    t, A, w, M = _grid_problem()
    eps = 0.05
    with pytest.warns(UserWarning):      # POT's debiased iteration stalls near 3.6e-9 in its own criterion
        ref = ot.bregman.barycenter_debiased(A.T.numpy(), M.numpy(), eps, weights=w.numpy(), method="sinkhorn_log",
                                             stopThr=1e-10, numItermax=5000)
    plain = ot.bregman.barycenter(A.T.numpy(), M.numpy(), eps, weights=w.numpy(), method="sinkhorn_log",
                                  stopThr=1e-13, numItermax=50000)
    dev, off = _kkt(t, A, w, torch.as_tensor(ref), eps, debias=True)
    assert dev < 2e-4 and off > -2e-4          # measured 6.3e-5 and +1.3e-4 (POT's residual)
    dev_wrong, _ = _kkt(t, A, w, torch.as_tensor(plain), eps, debias=True)
    assert dev_wrong > 1e-2                    # measured 0.067: the test can fail


def test_plain_loss_plus_entropy_minimiser_is_pot_barycenter():
    t, A, w, M = _grid_problem()
    eps = 0.05
    ref = torch.as_tensor(ot.bregman.barycenter(A.T.numpy(), M.numpy(), eps, weights=w.numpy(),
                                                method="sinkhorn_log", stopThr=1e-13, numItermax=50000))
    dev, _ = _kkt(t, A, w, ref, eps, debias=False, entropy=True)
    assert dev < 1e-9                          # measured 6e-12
    dev_plain, _ = _kkt(t, A, w, ref, eps, debias=False)      # without eps <a, log a>: another minimiser
    assert dev_plain > 1e-2


def _cd_step(X, Y, w, eps):
    """One Cuturi-Doucet step written as preconditioned gradient descent on the loss:
    X <- X - grad / (2 c), c = 1/n the fixed weights (for OT_eps with the squared cost,
    grad_i = 2 c_i (X_i - (T Y)_i / c_i), so this is POT's update with entropic plans)."""
    X = X.detach().requires_grad_(True)
    n = X.shape[0]
    loss = losskit.barycenter_loss(X, Y, weights=w, eps=eps, tol=1e-8, max_iter=5000, debias=True)
    (grad,) = torch.autograd.grad(loss, X)
    return X.detach() - grad * n / 2, grad


def test_free_support_minimiser_is_pot_free_support_barycenter():
    g = torch.Generator().manual_seed(3)
    n, K = 8, 3
    Y = torch.stack([torch.randn(n, 2, generator=g, dtype=D) * s + c
                     for s, c in ((1.0, 0.0), (0.5, 2.0), (0.8, -1.0))])
    w = torch.tensor([0.2, 0.3, 0.5], dtype=D)
    X0 = torch.randn(n, 2, generator=g, dtype=D)
    ref = torch.as_tensor(ot.lp.free_support_barycenter([y.numpy() for y in Y], [torch.full((n,), 1 / n).numpy()] * K,
                                                        X0.numpy(), weights=w.numpy(), numItermax=200, stopThr=1e-14))
    eps = 1e-2                                   # << the squared gaps between points: plans are permutations
    step, grad_ref = _cd_step(ref, Y, w, eps)
    _, grad_0 = _cd_step(X0, Y, w, eps)
    # measured: 1e-8 at 5 of 8 points, up to 1.6e-3 at the three whose exact assignment is nearly tied (the
    # entropic plan mixes them); 0.1-1 at POT's start
    assert grad_ref.abs().max() < 5e-3 and grad_0.abs().max() > 0.1
    assert (grad_ref.abs() < 1e-6).all(1).float().mean() >= 0.5   # measured: 5 of 8 points below 1e-8
    assert (step - ref).abs().max() < 1e-2       # POT's answer is a fixed point of the descent on the loss


def test_one_dimensional_closed_form_quantile_average():
    g = torch.Generator().manual_seed(1)
    n, K = 9, 4
    # samples at least 0.8 apart: with eps = 1e-2 the entropic plans are the sorted matchings to exp(-60)
    base = torch.arange(n, dtype=D) + 0.1 * torch.rand(K, n, generator=g, dtype=D)
    Y = (base * (1 + torch.rand(K, 1, generator=g, dtype=D)) + 3 * torch.randn(K, 1, generator=g, dtype=D))
    Y = Y[:, torch.randperm(n, generator=g)].unsqueeze(-1)
    w = torch.rand(K, generator=g, dtype=D)
    bar = ((w / w.sum()).view(K, 1) * Y[..., 0].sort(1).values).sum(0)[:, None]
    X = bar.clone().requires_grad_(True)
    loss = losskit.barycenter_loss(X, Y, weights=w, eps=1e-2, tol=1e-8, max_iter=5000)
    (grad,) = torch.autograd.grad(loss, X)
    assert grad.abs().max() < 1e-6
    X = (bar + 0.05 * torch.randn(n, 1, generator=g, dtype=D)).requires_grad_(True)
    (grad,) = torch.autograd.grad(losskit.barycenter_loss(X, Y, weights=w, eps=1e-2, tol=1e-8, max_iter=5000), X)
    assert grad.abs().max() > 1e-3


def test_properties_batching_unbalanced_and_errors():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 2, generator=g, dtype=D)
    y = torch.randn(3, 2, 6, 2, generator=g, dtype=D)
    kw = dict(eps=0.3, tol=1e-12)
    per = losskit.barycenter_loss(x, y, reduction="none", **kw)
    for i in range(3):
        assert abs(per[i] - losskit.barycenter_loss(x[i], y[i], **kw)) < 1e-12
    assert (per > 0).all()
    # zero when every target is the prediction (debiased), positive without debiasing
    same = x[:, None].expand(3, 2, 5, 2)
    assert losskit.barycenter_loss(x, same, reduction="none", **kw).abs().max() < 1e-10
    assert (losskit.barycenter_loss(x, same, debias=False, reduction="none", **kw) > 0).all()
    # a weight of one target puts all the loss there
    w = torch.tensor([0.0, 3.0], dtype=D)
    one = losskit.barycenter_loss(x, y, weights=w, reduction="none", **kw)
    ref = losskit.sinkhorn_divergence(x, y[:, 1], reduction="none", **kw)
    assert (one - ref).abs().max() < 1e-12
    # unbalanced: the weighted unbalanced Sinkhorn divergences
    b = torch.rand(3, 2, 6, generator=g, dtype=D) + 0.1
    u = losskit.barycenter_loss(x, y, b=b, rho=2.0, reduction="none", **kw)
    ref = 0.5 * sum(losskit.unbalanced_sinkhorn_divergence(x, y[:, k], b=b[:, k], rho=2.0, reduction="none", **kw)
                    for k in range(2))
    assert (u - ref).abs().max() < 1e-10
    # the module
    assert abs(losskit.BarycenterLoss(**kw)(x, y) - losskit.barycenter_loss(x, y, **kw)) < 1e-14
    with pytest.raises(LossInputError, match="y"):
        losskit.barycenter_loss(x, y[:, 0], **kw)
    with pytest.raises(LossInputError, match="b"):
        losskit.barycenter_loss(x, y, b=torch.full((3, 2, 6), 0.5, dtype=D), **kw)   # totals differ from a
    with pytest.raises(LossInputError, match="weights"):
        losskit.barycenter_loss(x, y, weights=torch.zeros(2, dtype=D), **kw)
