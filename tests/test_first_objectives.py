"""Cross-entropy, focal, KL, reverse KL and JS against independent references."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError

# ------------------------------------------------------------------------------- cross-entropy


def _rand(n=7, k=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.7])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("use_ignore", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(smoothing, use_weight, use_ignore, reduction):
    z, y = _rand()
    w = torch.tensor([0.5, 2.0, 1.0, 0.1, 3.0], dtype=torch.float64) if use_weight else None
    if use_ignore:
        y = y.clone()
        y[[1, 4]] = -100
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    ours = losskit.cross_entropy(z1, y, weight=w, label_smoothing=smoothing, reduction=reduction)
    ref = F.cross_entropy(z2, y, weight=w, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_soft_targets_match_torch(smoothing, use_weight):
    z, _ = _rand(seed=3)
    t = torch.softmax(torch.randn(7, 5, dtype=torch.float64), -1)
    w = torch.rand(5, dtype=torch.float64) + 0.2 if use_weight else None
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            losskit.cross_entropy(z, t, weight=w, label_smoothing=smoothing, reduction=reduction),
            F.cross_entropy(z, t, weight=w, label_smoothing=smoothing, reduction=reduction))


def test_cross_entropy_spatial_dims_match_torch():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 5, 2), generator=g)
    y[0, 1, 1] = -100
    for reduction in ("mean", "none"):
        torch.testing.assert_close(losskit.cross_entropy(z, y, label_smoothing=0.1, reduction=reduction),
                                   F.cross_entropy(z, y, label_smoothing=0.1, reduction=reduction))


def test_cross_entropy_hand_computation_known_value():
    # catalogue: z = [2, 0.5, -1, 0.3], y = 0 gives 0.375419 (independent float64 computation)
    z = [2.0, 0.5, -1.0, 0.3]
    ref = -(z[0] - math.log(sum(math.exp(v) for v in z)))
    assert ref == pytest.approx(0.375419, abs=1e-6)
    got = losskit.cross_entropy(torch.tensor([z], dtype=torch.float64), torch.tensor([0]))
    assert got.item() == pytest.approx(ref, abs=1e-12)


def test_all_ignored_batch_gives_zero_not_nan():
    z = torch.randn(4, 3, requires_grad=True)
    y = torch.full((4,), -100)
    loss = losskit.cross_entropy(z, y)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert torch.isnan(F.cross_entropy(z.detach(), y))  # torch's behaviour, documented difference


def test_ignored_positions_do_not_leak_nan():
    z = torch.randn(4, 3)
    z[2] = float("nan")
    y = torch.tensor([0, 1, -100, 2])
    with losskit.validation(False):  # the NaN sits in an ignored row: with checks off it must not leak
        z.requires_grad_(True)
        loss = losskit.cross_entropy(z, y)
        loss.backward()
    ref = F.cross_entropy(z.detach()[[0, 1, 3]], y[[0, 1, 3]])
    torch.testing.assert_close(loss, ref)
    assert torch.isfinite(z.grad[[0, 1, 3]]).all()


def test_label_error_message_names_argument_position_and_range():
    z = torch.randn(5, 10)
    y = torch.tensor([0, 1, 2, 12, 3])
    with pytest.raises(LossInputError, match=r"^target: expected class indices in \[0, 10\).*got 12 at position 3"):
        losskit.cross_entropy(z, y)


def test_nan_policy_raises_and_can_be_disabled():
    z = torch.randn(3, 4)
    z[1, 2] = float("nan")
    y = torch.tensor([0, 1, 2])
    with pytest.raises(LossInputError, match=r"^logits: expected finite values .* got nan at position \(1, 2\)"):
        losskit.cross_entropy(z, y)
    with losskit.validation(False):
        assert torch.isnan(losskit.cross_entropy(z, y))


def test_neg_inf_logits_are_a_mask():
    z = torch.tensor([[0.0, -float("inf"), 1.0]], requires_grad=True)
    loss = losskit.cross_entropy(z, torch.tensor([2]))
    ref = F.cross_entropy(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad[0, 1] == 0


def test_half_precision_is_computed_and_returned_in_float32():
    z, y = _rand(dtype=torch.float32)
    out = losskit.cross_entropy(z.to(torch.bfloat16), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.cross_entropy(z.to(torch.bfloat16).float(), y))


# -------------------------------------------------------------------------------------- focal
def _focal_reference(z, y, gamma, alpha=None):
    z = z.numpy().astype(np.float64)
    out = []
    for zi, yi in zip(z, y.numpy()):
        lp = zi - scipy.special.logsumexp(zi)
        p = math.exp(lp[yi])
        a = 1.0 if alpha is None else alpha[yi]
        out.append(-a * (1 - p) ** gamma * lp[yi])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_matches_hand_computation(gamma):
    z, y = _rand(seed=5)
    alpha = [0.25, 0.5, 1.0, 2.0, 0.75]
    got = losskit.focal(z, y, gamma=gamma, weight=torch.tensor(alpha, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(got, _focal_reference(z, y, gamma, alpha), rtol=1e-12, atol=1e-12)


def test_focal_gamma_zero_is_cross_entropy():
    z, y = _rand(seed=6)
    torch.testing.assert_close(losskit.focal(z, y, gamma=0.0, label_smoothing=0.1),
                               F.cross_entropy(z, y, label_smoothing=0.1))


def test_focal_confident_prediction_is_exact():
    # 1 - p_y for a confident prediction: -expm1(log p) keeps the value instead of rounding to 0
    z = torch.tensor([[30.0, 0.0]], dtype=torch.float32)
    got = losskit.focal(z, torch.tensor([0]), gamma=1.0)
    ref = math.exp(-30) * math.log1p(math.exp(-30))
    assert got.item() == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_binary_focal_matches_formula(gamma, alpha):
    g = torch.Generator().manual_seed(7)
    x = 4 * torch.randn(20, generator=g, dtype=torch.float64)
    y = torch.rand(20, generator=g, dtype=torch.float64).round()
    p = 1 / (1 + np.exp(-x.numpy()))
    yy = y.numpy()
    ce = -(yy * np.log(p) + (1 - yy) * np.log(1 - p))
    pt = p * yy + (1 - p) * (1 - yy)
    ref = ce * (1 - pt) ** gamma
    if alpha is not None:
        ref = ref * (alpha * yy + (1 - alpha) * (1 - yy))
    got = losskit.binary_focal(x, y, alpha=alpha, gamma=gamma, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    if gamma == 0 and alpha is None:
        torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(x, y, reduction="none"))


# ------------------------------------------------------------------------------- divergences
P = np.array([0.5, 0.3, 0.2])
Q = np.array([0.2, 0.2, 0.6])


def test_known_values_from_the_catalogue():
    p, q = torch.tensor([P]), torch.tensor([Q])
    kw = dict(input_space="probs")
    assert losskit.kl_divergence(p, q, **kw).item() == pytest.approx(0.360062, abs=1e-6)
    assert losskit.reverse_kl_divergence(p, q, **kw).item() == pytest.approx(0.394816, abs=1e-6)
    assert losskit.js_divergence(p, q, **kw).item() == pytest.approx(0.0905658, abs=1e-7)


def test_against_scipy_on_random_distributions():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), size=20)
    q = rng.dirichlet(np.ones(8) * 0.5, size=20)
    tp, tq = torch.tensor(p), torch.tensor(q)
    kl = scipy.special.rel_entr(p, q).sum(-1)
    np.testing.assert_allclose(losskit.kl_divergence(tp, tq, input_space="probs", reduction="none"), kl, rtol=1e-10)
    np.testing.assert_allclose(losskit.reverse_kl_divergence(tp, tq, input_space="probs", reduction="none"),
                               scipy.special.rel_entr(q, p).sum(-1), rtol=1e-10)
    js = scipy.spatial.distance.jensenshannon(p, q, axis=1) ** 2
    np.testing.assert_allclose(losskit.js_divergence(tp, tq, input_space="probs", reduction="none"), js, rtol=1e-8)
    # logits and log-probabilities give the same values
    lp, lq = torch.log(tp) + 3.0, torch.log(tq) - 1.0
    np.testing.assert_allclose(losskit.kl_divergence(lp, lq, reduction="none"), kl, rtol=1e-10)
    np.testing.assert_allclose(losskit.kl_divergence(torch.log(tp), torch.log(tq), input_space="log_probs",
                                                     reduction="none"), kl, rtol=1e-10)


def test_zero_probabilities_are_exact():
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    assert losskit.js_divergence(p, q, input_space="probs").item() == pytest.approx(math.log(2), abs=1e-15)
    assert losskit.kl_divergence(p, q, input_space="probs").item() == math.inf
    # -inf logits are zero probabilities; KL is finite where the support allows
    z = torch.tensor([[0.0, -math.inf, 0.0]], requires_grad=True)
    w = torch.tensor([[0.0, 0.0, 1.0]])
    d = losskit.kl_divergence(z, w)
    ref = scipy.special.rel_entr([0.5, 0, 0.5], scipy.special.softmax([0.0, 0, 1.0])).sum()
    assert d.item() == pytest.approx(ref, rel=1e-6)
    d.backward()
    assert torch.isfinite(z.grad).all()


def test_kl_direction_relative_to_torch_kl_div():
    rng = np.random.default_rng(1)
    p, q = torch.tensor(rng.dirichlet(np.ones(5), 4)), torch.tensor(rng.dirichlet(np.ones(5), 4))
    # torch: kl_div(input=log q, target=p, 'batchmean') = KL(p || q)
    torch.testing.assert_close(losskit.kl_divergence(p, q, input_space="probs"),
                               F.kl_div(q.log(), p, reduction="batchmean"))


def test_probabilities_must_sum_to_one():
    with pytest.raises(LossInputError, match=r"^p: expected probabilities summing to 1"):
        losskit.kl_divergence(torch.tensor([[0.5, 0.6]]), torch.tensor([[0.5, 0.5]]), input_space="probs")
