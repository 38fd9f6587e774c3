"""Classification surrogates: catalogue known values, identities, and agreement with independent references.

References are float64 hand computations with ``math`` / NumPy / SciPy, ``torch.nn.functional`` and
scikit-learn; never losskit itself.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError
from losskit.classification.margins import margin_logsumexp, margin_vector

Z = [2.0, 0.5, -1.0, 0.3]
Y = 0


def _z():
    return torch.tensor([Z], dtype=torch.float64), torch.tensor([Y])


def _rand(n=7, k=5, seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


def _p(z):
    z = np.asarray(z, dtype=np.float64)
    return np.exp(z - scipy.special.logsumexp(z))


# --------------------------------------------------------------------------- catalogue known values
def test_known_values_from_the_catalogue():
    z, y = _z()
    assert losskit.cross_entropy(z, y).item() == pytest.approx(0.375419, abs=1e-6)
    assert losskit.comp_sum(z, y, tau=0.0).item() == pytest.approx(0.455601, abs=1e-6)
    assert losskit.comp_sum(z, y, tau=1.5).item() == pytest.approx(0.342289, abs=1e-6)
    assert losskit.comp_sum(z, y, tau=2.0).item() == pytest.approx(0.312998, abs=1e-6)
    assert losskit.mae(z, y).item() == pytest.approx(0.312998, abs=1e-6)
    assert losskit.ldr_kl(z, y, lam=1.0, c=0.0, normalize=False).item() == pytest.approx(-1.010876, abs=1e-6)
    zero = torch.zeros(1, 4, dtype=torch.float64)
    assert losskit.ldr_kl(zero, y, lam=10.0, c=0.1, normalize=False).item() == pytest.approx(0.0750936, abs=1e-6)
    assert losskit.spherical_z_loss(z, y, a=1.0, b=1.0).item() == pytest.approx(0.490720, abs=1e-6)
    assert losskit.spherical_z_loss(3 * z + 7, y, a=1.0, b=1.0).item() == pytest.approx(0.490720, abs=1e-6)
    torch.testing.assert_close(losskit.stablemax(z), torch.tensor([[.4762, .2381, .0794, .2063]],
                                                                  dtype=torch.float64), atol=5e-5, rtol=0)


def test_mae_sum_over_labels_is_constant():
    z, _ = _rand(n=5, k=4)
    total = sum(losskit.mae(z, torch.full((5,), k), reduction="none") for k in range(4))
    torch.testing.assert_close(total, torch.full((5,), 3.0, dtype=torch.float64))


# -------------------------------------------------------------------------------- hand formulas
def _comp_sum_ref(z, y, tau):
    u = sum(math.exp(z[k] - z[y]) for k in range(len(z)) if k != y)
    return math.log1p(u) if tau == 1 else ((1 + u) ** (1 - tau) - 1) / (1 - tau)


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0, 1.25, 1.7, 2.0, 3.0])
def test_comp_sum_matches_hand_formula(tau):
    z, y = _rand(seed=1)
    got = losskit.comp_sum(z, y, tau=tau, reduction="none")
    ref = [_comp_sum_ref(z[i].tolist(), int(y[i]), tau) for i in range(len(y))]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_gce_mae_sce_poly_match_hand_formulas():
    z, y = _rand(seed=2)
    py = np.array([_p(z[i].numpy())[y[i]] for i in range(len(y))])
    ce = -np.log(py)
    cases = {
        "gce": (losskit.gce(z, y, q=0.7, reduction="none"), (1 - py ** 0.7) / 0.7),
        "mae": (losskit.mae(z, y, reduction="none"), 1 - py),
        "sce": (losskit.sce(z, y, alpha=0.1, beta=1.0, A=-4.0, reduction="none"), 0.1 * ce + 4.0 * (1 - py)),
        "sce_default_a": (losskit.sce(z, y, reduction="none"), 0.1 * ce - math.log(1e-4) * (1 - py)),
        "poly": (losskit.poly_loss(z, y, epsilon=2.0, reduction="none"), ce + 2.0 * (1 - py)),
    }
    for name, (got, ref) in cases.items():
        torch.testing.assert_close(got, torch.tensor(ref), rtol=1e-12, atol=1e-12, msg=name)


def test_identities_hold():
    z, y = _rand(seed=3)
    ce = losskit.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(losskit.comp_sum(z, y, tau=1.0, reduction="none"), ce, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(losskit.gce(z, y, q=0.4, reduction="none"),
                               losskit.comp_sum(z, y, tau=1.4, reduction="none"), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(losskit.mae(z, y, reduction="none"),
                               losskit.comp_sum(z, y, tau=2.0, reduction="none"), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(losskit.ldr_kl(z, y, lam=1.0, c=0.0, normalize=False, reduction="none"), ce - math.log(5),
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(losskit.poly_loss(z, y, epsilon=0.0, reduction="none"), ce)
    torch.testing.assert_close(losskit.sce(z, y, alpha=1.0, beta=0.0, reduction="none"), ce)
    torch.testing.assert_close(losskit.focal(z, y, gamma=0.0, reduction="none"), ce)
    # entmax alpha=1 is the softmax Fenchel-Young loss: CE for one-hot targets
    torch.testing.assert_close(losskit.entmax_loss(z, y, alpha=1.0, reduction="none"), ce, rtol=1e-12, atol=1e-12)
    # decoupled softmax with one positive = softmax CE (= InfoNCE over the row)
    torch.testing.assert_close(losskit.decoupled_softmax_loss(z, y, reduction="none"), ce, rtol=1e-12, atol=1e-12)


def test_margin_vector_logsumexp_is_the_core():
    z, y = _rand(seed=4)
    for c, temp in [(0.0, 1.0), (0.0, 3.0)]:
        d = margin_vector(z, y, c)
        s = margin_logsumexp(z, temp).gather(-1, y[:, None]).squeeze(-1)
        torch.testing.assert_close(s, torch.logsumexp(d / temp, -1), rtol=1e-13, atol=1e-13)
    d = margin_vector(z, y, 0.3)
    assert torch.all(d.gather(-1, y[:, None]) == 0)


def _ldr_ref(z, y, lam, c):
    d = np.array([z[k] - z[y] + (c if k != y else 0.0) for k in range(len(z))])
    return lam * (scipy.special.logsumexp(d / lam) - math.log(len(z)))


@pytest.mark.parametrize(("lam", "c"), [(10.0, 0.1), (1.0, 0.5), (0.3, 1.0), (50.0, 0.0)])
def test_ldr_kl_matches_hand_formula(lam, c):
    z, y = _rand(seed=5)
    got = losskit.ldr_kl(z, y, lam=lam, c=c, normalize=False, reduction="none")
    ref = [_ldr_ref(z[i].numpy(), int(y[i]), lam, c) for i in range(len(y))]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_ldr_kl_limits_crammer_singer_and_weston_watkins():
    z, y = _rand(seed=6)
    d = margin_vector(z, y, 1.0)
    cs = d.max(-1).values.clamp(min=0)  # d_y = 0 keeps it >= 0
    got = losskit.ldr_kl(z, y, lam=1e-4, c=1.0, normalize=False, reduction="none")
    torch.testing.assert_close(got, cs, atol=2e-3, rtol=0)
    ww = d.mean(-1)
    got = losskit.ldr_kl(z, y, lam=1e5, c=1.0, normalize=False, reduction="none")
    torch.testing.assert_close(got, ww, atol=1e-3, rtol=0)


def test_ldr_kl_normalize_option_matches_official_normalisation():
    z, y = _rand(seed=7)
    sp = F.softplus(z)
    zn = sp / sp.mean(-1, keepdim=True)
    torch.testing.assert_close(losskit.ldr_kl(z, y, normalize=True, reduction="none"),
                               losskit.ldr_kl(zn, y, normalize=False, reduction="none"), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(losskit.ldr_kl(z, y, reduction="none"),  # the default: the authors' normalisation
                               losskit.ldr_kl(zn, y, normalize=False, reduction="none"), rtol=1e-13, atol=1e-13)
    zl = z / z.abs().mean(-1, keepdim=True)
    torch.testing.assert_close(losskit.ldr_kl(z, y, normalize="l1", reduction="none"),
                               losskit.ldr_kl(zl, y, normalize=False, reduction="none"), rtol=1e-13, atol=1e-13)


def test_aldr_kl_is_the_maximum_over_lambda():
    z, y = _rand(seed=8, scale=3.0)
    lam0, c, alpha = 10.0, 0.1, 2.0
    got = losskit.aldr_kl(z, y, lam0=lam0, c=c, alpha=alpha, normalize=False, reduction="none")
    for i in range(len(y)):
        zi, yi = z[i].numpy(), int(y[i])
        k = len(zi)
        a = alpha * math.log(k) / lam0

        def neg(lam, zi=zi, yi=yi, a=a):
            return -(_ldr_ref(zi, yi, lam, c) - a / 2 * (lam - lam0) ** 2)

        res = scipy.optimize.minimize_scalar(neg, bounds=(lam0 * (1 - 1 / alpha), lam0), method="bounded",
                                             options={"xatol": 1e-12})
        assert got[i].item() == pytest.approx(-res.fun, abs=1e-9)
        # the stationary lam satisfies the paper's update lam = lam0 (1 - KL(q||U) / (alpha log K))
        d = np.array([zi[j] - zi[yi] + (c if j != yi else 0) for j in range(k)])
        q = np.exp(d / res.x - scipy.special.logsumexp(d / res.x))
        kl = float(np.sum(q * np.log(q * k)))
        assert res.x == pytest.approx(lam0 * (1 - kl / (alpha * math.log(k))), abs=1e-6)


def test_aldr_kl_rejects_soft_targets():
    z, _ = _rand()
    with pytest.raises(LossInputError, match="^target:"):
        losskit.aldr_kl(z, torch.softmax(z, -1))


# ------------------------------------------------------------------- torch.nn.functional agreement
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_spatial_label_smoothing_ignore_index_weight(smoothing, use_weight):
    g = torch.Generator().manual_seed(9)
    z = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 5), generator=g)
    y[0, 2] = y[2, 0] = -100
    w = torch.tensor([0.3, 2.0, 1.0, 0.7], dtype=torch.float64) if use_weight else None
    for reduction in ("mean", "sum", "none"):
        a = z.clone().requires_grad_(True)
        b = z.clone().requires_grad_(True)
        ours = losskit.cross_entropy(a, y, weight=w, label_smoothing=smoothing, ignore_index=-100,
                                     reduction=reduction)
        ref = F.cross_entropy(b, y, weight=w, label_smoothing=smoothing, ignore_index=-100, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        ours.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_smooth_labels_builder_equals_label_smoothing_argument_for_every_classwise_loss():
    z, y = _rand(seed=10)
    t = losskit.smooth_labels(y, 0.2, num_classes=5, dtype=torch.float64)
    for fn in (losskit.cross_entropy, losskit.focal, losskit.comp_sum, losskit.gce, losskit.mae, losskit.sce,
               losskit.poly_loss, losskit.ldr_kl, losskit.spherical_z_loss, losskit.stablemax_cross_entropy,
               losskit.sparsemax_loss, losskit.entmax_loss):
        torch.testing.assert_close(fn(z, y, label_smoothing=0.2, reduction="none"), fn(z, t, reduction="none"),
                                   rtol=1e-12, atol=1e-12, msg=fn.__name__)


def test_mixup_targets_make_cross_entropy_the_mixture():
    z, y = _rand(seed=11)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    t = losskit.mix_targets(y, 0.3, perm, num_classes=5, dtype=torch.float64)
    ref = 0.3 * F.cross_entropy(z, y, reduction="none") + 0.7 * F.cross_entropy(z, y[perm], reduction="none")
    torch.testing.assert_close(losskit.cross_entropy(z, t, reduction="none"), ref)


# ------------------------------------------------------------------------------ focal: numerics
def test_focal_no_nan_at_neg_inf_logits_and_certain_predictions():
    z = torch.tensor([[0.0, -float("inf"), 1.0], [50.0, 0.0, -float("inf")]], dtype=torch.float64,
                     requires_grad=True)
    y = torch.tensor([2, 0])
    for gamma in (0.5, 2.0):
        for target in (y, torch.tensor([[0.2, 0.0, 0.8], [1.0, 0.0, 0.0]], dtype=torch.float64)):
            z.grad = None
            loss = losskit.focal(z, target, gamma=gamma)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), (gamma, target)
    # value at the finite classes equals the reference without the masked class
    ref = losskit.focal(torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.tensor([1]), gamma=2.0)
    got = losskit.focal(torch.tensor([[0.0, -float("inf"), 1.0]], dtype=torch.float64), torch.tensor([2]), gamma=2.0)
    torch.testing.assert_close(got, ref)


def test_focal_float32_certain_prediction_gamma_below_one_has_finite_gradient():
    z = torch.tensor([[40.0, 0.0, 0.0]], requires_grad=True)
    losskit.focal(z, torch.tensor([0]), gamma=0.5).backward()
    assert torch.isfinite(z.grad).all()


def test_binary_focal_matches_hand_formula_and_alpha_none():
    g = torch.Generator().manual_seed(12)
    x = 3 * torch.randn(9, generator=g, dtype=torch.float64)
    t = (torch.rand(9, generator=g) < 0.5).double()
    p = 1 / (1 + np.exp(-x.numpy()))
    pt = p * t.numpy() + (1 - p) * (1 - t.numpy())
    for alpha in (None, 0.25):
        at = 1.0 if alpha is None else alpha * t.numpy() + (1 - alpha) * (1 - t.numpy())
        ref = -at * (1 - pt) ** 2 * np.log(pt)
        torch.testing.assert_close(losskit.binary_focal(x, t, alpha=alpha, reduction="none"), torch.tensor(ref))


def test_binary_focal_default_alpha_moves_the_bayes_threshold():
    # Conditional risk eta L(x,1) + (1-eta) L(x,0) at eta = 0.6: the minimiser's sign should be +
    # (Bayes); alpha=0.25 makes it negative, which is why binary_focal does not claim 'calibrated'.
    xs = torch.linspace(-6, 6, 2401, dtype=torch.float64)

    def argmin(alpha):
        one, zero = torch.ones_like(xs), torch.zeros_like(xs)
        risk = 0.6 * losskit.binary_focal(xs, one, alpha=alpha, reduction="none") + \
            0.4 * losskit.binary_focal(xs, zero, alpha=alpha, reduction="none")
        return xs[risk.argmin()].item()

    assert argmin(None) > 0
    assert argmin(0.25) < 0
    assert "calibrated" not in losskit.get("binary_focal").properties


# ---------------------------------------------------------------------------------- StableMax
def test_stablemax_cross_entropy_float32_matches_float64_hand_reference():
    z, y = _rand(seed=13, scale=30.0, dtype=torch.float32)

    def s(x):
        return x + 1 if x >= 0 else 1 / (1 - x)

    ref = []
    for i in range(len(y)):
        vals = [s(float(v)) for v in z[i].double()]
        ref.append(-math.log(vals[int(y[i])] / sum(vals)))
    got = losskit.stablemax_cross_entropy(z, y, reduction="none")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_softmax_collapse_and_stablemax_does_not():
    z = torch.tensor([[100.0, 0.0, 0.0]], requires_grad=True)
    ce = losskit.cross_entropy(z, torch.tensor([0]))
    ce.backward()
    assert ce.item() == 0.0 and z.grad.abs().max() < 1e-40  # exactly 0 up to float32 denormals
    z.grad = None
    sm = losskit.stablemax_cross_entropy(z, torch.tensor([0]))
    sm.backward()
    assert sm.item() > 0 and torch.any(z.grad != 0)
    assert sm.item() == pytest.approx(-math.log(101 / 103), rel=1e-6)


def test_stablemax_is_not_shift_invariant_and_z_loss_is_scale_invariant():
    z, y = _rand(seed=14)
    a = losskit.stablemax_cross_entropy(z, y, reduction="none")
    b = losskit.stablemax_cross_entropy(z + 3.0, y, reduction="none")
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(losskit.spherical_z_loss(z, y, reduction="none"),
                               losskit.spherical_z_loss(0.01 * z - 4, y, reduction="none"), rtol=1e-10, atol=1e-12)


def test_spherical_z_loss_hand_formula_and_masked_classes():
    z, y = _rand(seed=15)
    zt = (z - z.mean(-1, keepdim=True)) / z.std(-1, unbiased=False, keepdim=True)
    ref = F.softplus(0.5 * (2.0 - zt.gather(-1, y[:, None]).squeeze(-1))) / 0.5
    torch.testing.assert_close(losskit.spherical_z_loss(z, y, a=0.5, b=2.0, reduction="none"), ref)
    zm = torch.cat([z, torch.full((7, 1), -float("inf"), dtype=torch.float64)], 1).requires_grad_(True)
    got = losskit.spherical_z_loss(zm, y, a=0.5, b=2.0, reduction="none")
    torch.testing.assert_close(got, ref)
    got.sum().backward()
    assert torch.isfinite(zm.grad).all()


# ----------------------------------------------------------------------------- decoupled softmax
def test_decoupled_softmax_hand_formula():
    z, _ = _rand(seed=16, k=6)
    pos = torch.zeros(7, 6, dtype=torch.bool)
    pos[:, 0] = True
    pos[:, 3] = True
    pos[2, 5] = True
    ref = []
    for i in range(7):
        s = z[i].numpy() / 0.5
        negs = [s[j] for j in range(6) if not pos[i, j]]
        ps = [s[j] for j in range(6) if pos[i, j]]
        ref.append(np.mean([-(p - np.log(np.exp(p) + np.sum(np.exp(negs)))) for p in ps]))
    got = losskit.decoupled_softmax_loss(z, pos.double(), temperature=0.5, reduction="none")
    torch.testing.assert_close(got, torch.tensor(ref), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.decoupled_softmax_loss(z, pos, temperature=0.5, reduction="none"), got)


def test_decoupled_softmax_rows_without_positives_or_negatives():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float64)
    loss = losskit.decoupled_softmax_loss(z, t)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    ref = F.cross_entropy(z.detach()[2:], torch.tensor([0]))
    torch.testing.assert_close(loss, ref / 2)  # mean over the two rows with positives; the all-positive row is 0


def test_stablemax_gradient_at_zero_logits_and_masks():
    z = torch.tensor([[0.0, 0.0, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: losskit.stablemax_cross_entropy(v, torch.tensor([0])), (z,))
    zm = torch.tensor([[0.0, -float("inf"), 1.0]], requires_grad=True)
    losskit.stablemax_cross_entropy(zm, torch.tensor([2])).backward()
    assert torch.isfinite(zm.grad).all() and zm.grad[0, 1] == 0


def test_binary_focal_neg_inf_logit_with_negative_target_is_exactly_zero():
    x = torch.tensor([-float("inf"), 1.5, -3.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    loss = losskit.binary_focal(x, t, reduction="none")
    assert loss[0].item() == 0.0
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0] == 0
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x.detach()[1:], t[1:], reduction="none")
    p = torch.sigmoid(x.detach()[1:])
    pt = p * t[1:] + (1 - p) * (1 - t[1:])
    at = 0.25 * t[1:] + 0.75 * (1 - t[1:])
    torch.testing.assert_close(loss[1:], at * (1 - pt) ** 2 * ref)


def test_normalized_softmax_hand_formula_and_feature_scale_invariance():
    g = torch.Generator().manual_seed(20)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 0])
    xn, wn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True), \
        w.numpy() / np.linalg.norm(w.numpy(), axis=1, keepdims=True)
    cos = 10.0 * xn @ wn.T
    ref = [scipy.special.logsumexp(cos[i]) - cos[i, y[i]] for i in range(5)]
    got = losskit.normalized_softmax_loss(x, w, y, scale=10.0, reduction="none")
    torch.testing.assert_close(got, torch.tensor(ref), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.normalized_softmax_loss(7.0 * x, w, y, scale=10.0, reduction="none"), got)
    with pytest.raises(LossInputError, match="^features:"):
        losskit.normalized_softmax_loss(torch.zeros(1, 3, dtype=torch.float64), w, y[:1])
