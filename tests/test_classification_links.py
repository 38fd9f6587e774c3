"""Sparse links and Fenchel-Young losses against the ``entmax`` package; masks and half precision."""

import pytest
import torch

import losskit

entmax = pytest.importorskip("entmax")


def _rand(n=6, k=7, seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_entmax_bisect_values_and_gradients_match_entmax_package(alpha):
    z, _ = _rand(seed=1)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    ours = losskit.entmax_bisect(a, alpha)
    ref = entmax.entmax_bisect(b, alpha, n_iter=60)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    w = torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9)


def test_sparsemax_matches_package_and_is_a_projection():
    z, _ = _rand(seed=2)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    ours, ref = losskit.sparsemax(a), entmax.sparsemax(b)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.sum(-1), torch.ones(6, dtype=torch.float64))
    (ours[:, 0] * 2 + ours[:, 3]).sum().backward()
    (ref[:, 0] * 2 + ref[:, 3]).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_entmax15_matches_exact_sort_based_entmax15():
    z, _ = _rand(seed=3)
    torch.testing.assert_close(losskit.entmax_bisect(z, 1.5), entmax.entmax15(z), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_fenchel_young_losses_match_package_values_and_gradients(alpha):
    z, y = _rand(seed=4)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    if alpha == 2.0:
        ours = losskit.sparsemax_loss(a, y, reduction="none")
        ref = entmax.sparsemax_loss(b, y)
    else:
        ours = losskit.entmax_loss(a, y, alpha=alpha, reduction="none")
        ref = entmax.entmax_bisect_loss(b, y, alpha=alpha, n_iter=60)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-11)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)
    # the gradient is pi(z) - onehot(y)
    p = losskit.entmax_bisect(z, alpha)
    torch.testing.assert_close(a.grad, p - torch.nn.functional.one_hot(y, 7).double(), rtol=1e-9, atol=1e-12)


def test_fenchel_young_loss_is_zero_iff_the_link_hits_the_target():
    z = torch.tensor([[3.0, 0.0, -2.0]], dtype=torch.float64)
    assert losskit.sparsemax_loss(z, torch.tensor([0])).item() == 0.0  # sparsemax(z) = e_0
    t = losskit.entmax_bisect(torch.tensor([[0.3, 0.1, -0.2]], dtype=torch.float64), 1.5)
    assert abs(losskit.entmax_loss(torch.tensor([[0.3, 0.1, -0.2]], dtype=torch.float64), t).item()) < 1e-12
    assert losskit.entmax_loss(z, t).item() > 0


@pytest.mark.parametrize("fn", ["sparsemax_loss", "entmax_loss"])
def test_no_nan_at_neg_inf_masks(fn):
    z, y = _rand(seed=6)
    z[:, 2] = -float("inf")
    z[0, 5] = -float("inf")
    y[y == 2] = 0
    y[0] = 1
    a = z.clone().requires_grad_(True)
    loss = getattr(losskit, fn)(a, y, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(a.grad).all()
    assert torch.all(a.grad[:, 2] == 0)
    # equal to the loss on the logits with the masked classes removed
    keep = [0, 1, 3, 4, 6]
    ref = getattr(losskit, fn)(z[1:, [0, 1, 3, 4, 5, 6]], torch.tensor([[0, 1, -1, 2, 3, 4, 5][int(v)]
                                                                         for v in y[1:]]), reduction="none")
    torch.testing.assert_close(loss[1:], ref)
    ref0 = getattr(losskit, fn)(z[:1, keep], torch.tensor([1]), reduction="none")
    torch.testing.assert_close(loss[:1], ref0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", ["sparsemax_loss", "entmax_loss"])
def test_half_precision_is_finite_and_close(dtype, fn):
    z, y = _rand(n=16, k=50, seed=7, scale=4.0, dtype=torch.float32)
    z[:, :5] = -float("inf")
    y = y.clamp(min=5)
    h = z.to(dtype).requires_grad_(True)
    loss = getattr(losskit, fn)(h, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert h.grad.dtype == dtype and torch.isfinite(h.grad).all()
    ref = getattr(losskit, fn)(z.to(dtype).float(), y)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    big = (z.to(dtype) * 1000).requires_grad_(True)  # +-4e3: near the float16 range
    out = getattr(losskit, fn)(big, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(big.grad).all()


def test_entmax_bisect_handles_masks_and_all_but_one_masked():
    z = torch.tensor([[0.0, -float("inf"), -float("inf")], [1.0, 2.0, -float("inf")]], requires_grad=True)
    p = losskit.entmax_bisect(z, 1.5)
    torch.testing.assert_close(p[0], torch.tensor([1.0, 0.0, 0.0]))
    (p * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.isfinite(z.grad).all()
    s = losskit.sparsemax(z.detach())
    torch.testing.assert_close(s[1], torch.tensor([0.0, 1.0, 0.0]))


def test_stablemax_link_and_log_stablemax():
    z = torch.tensor([[2.0, 0.5, -1.0, 0.3, -float("inf")]], dtype=torch.float64)
    s = torch.tensor([3.0, 1.5, 0.5, 1.3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(losskit.stablemax(z)[0], s / s.sum())


def test_masked_logits_where_the_entmax_package_returns_nan():
    # entmax 1.3: sparsemax_loss / entmax15_loss / entmax_bisect_loss give NaN losses with a -inf logit
    # (its issues 9, 30); losskit gives the loss of the problem with that class removed.
    z, y = _rand(n=4, k=6, seed=8)
    y = torch.tensor([0, 1, 3, 4])
    zm = z.clone()
    zm[:, 2] = -float("inf")
    keep = [0, 1, 3, 4, 5]
    y_kept = torch.tensor([0, 1, 2, 3])
    for ours, theirs in [(lambda v, t: losskit.sparsemax_loss(v, t, reduction="none"), entmax.sparsemax_loss),
                         (lambda v, t: losskit.entmax_loss(v, t, reduction="none"), entmax.entmax15_loss)]:
        got = ours(zm, y)
        torch.testing.assert_close(got, theirs(z[:, keep], y_kept), rtol=1e-9, atol=1e-11)
        peer = theirs(zm, y)
        assert torch.isfinite(got).all() and (torch.isnan(peer).any() or torch.allclose(peer, got))
