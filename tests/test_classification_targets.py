"""Target builders, regression-as-classification, DeQA-Score, AnyLoss, EnsLoss and aggregate-response losses."""

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError


# ------------------------------------------------------------------------------------- HL-Gauss
def test_hl_gauss_catalogue_mean_and_scipy_reference():
    t = losskit.hl_gauss_targets(torch.tensor([0.37], dtype=torch.float64), v_min=0.0, v_max=1.0, num_bins=10,
                                 sigma=0.075)
    centers = losskit.bin_centers(0.0, 1.0, 10)
    assert (t * centers).sum().item() == pytest.approx(0.3700, abs=5e-5)
    edges = np.linspace(0, 1, 11)
    cdf = scipy.stats.norm.cdf(edges, loc=0.37, scale=0.075)
    ref = np.diff(cdf) / (cdf[-1] - cdf[0])
    torch.testing.assert_close(t[0], torch.tensor(ref), rtol=1e-10, atol=1e-14)


def test_hl_gauss_far_tail_bins_have_no_cancellation():
    t = losskit.hl_gauss_targets(torch.tensor([0.02], dtype=torch.float64), v_min=0.0, v_max=1.0, num_bins=10)
    sigma = 0.075
    ref_last = scipy.stats.norm.sf(0.9, 0.02, sigma) - scipy.stats.norm.sf(1.0, 0.02, sigma)
    norm = scipy.stats.norm.cdf(1.0, 0.02, sigma) - scipy.stats.norm.cdf(0.0, 0.02, sigma)
    assert t[0, -1].item() == pytest.approx(ref_last / norm, rel=1e-8)
    assert t[0, -1].item() > 0


def test_hl_gauss_loss_is_soft_target_cross_entropy_and_prediction():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 8, generator=g, dtype=torch.float64)
    y = torch.rand(5, generator=g, dtype=torch.float64) * 4 - 2
    t = losskit.hl_gauss_targets(y, v_min=-2.0, v_max=2.0, num_bins=8)
    torch.testing.assert_close(losskit.hl_gauss_loss(z, y, v_min=-2.0, v_max=2.0, reduction="none"),
                               F.cross_entropy(z, t, reduction="none"))
    c = losskit.bin_centers(-2.0, 2.0, 8)
    torch.testing.assert_close(losskit.expected_value(z, c), (torch.softmax(z, -1) * c).sum(-1))


def test_two_hot_mean_is_exactly_y_and_loss_is_ce():
    y = torch.tensor([-0.95, -0.3, 0.0, 0.4999, 0.93, 5.0], dtype=torch.float64)
    t = losskit.two_hot_targets(y, v_min=-1.0, v_max=1.0, num_bins=10)
    c = losskit.bin_centers(-1.0, 1.0, 10)
    torch.testing.assert_close((t * c).sum(-1), y.clamp(c[0].item(), c[-1].item()), rtol=0, atol=1e-15)
    assert torch.all((t > 0).sum(-1) <= 2) and torch.allclose(t.sum(-1), torch.ones(6, dtype=torch.float64))
    z = torch.randn(6, 10, dtype=torch.float64)
    torch.testing.assert_close(losskit.two_hot_loss(z, y, v_min=-1.0, v_max=1.0, reduction="none"),
                               F.cross_entropy(z, t, reduction="none"))


# ---------------------------------------------------------------------------------- DeQA-Score
@pytest.mark.parametrize(("mu", "sd"), [(3.0, 0.8), (1.4, 0.5), (4.7, 1.2), (2.2, 0.05), (5.0, 0.3), (3.6, 0.0)])
def test_score_distribution_mean_is_exact_and_it_is_a_distribution(mu, sd):
    p = losskit.score_distribution(torch.tensor([mu], dtype=torch.float64), torch.tensor([sd], dtype=torch.float64))
    levels = torch.arange(1, 6, dtype=torch.float64)
    assert torch.all(p >= 0)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (p * levels).sum().item() == pytest.approx(mu, abs=1e-12)


def test_score_distribution_before_adjustment_is_the_gaussian_mass():
    # For mu at the centre the adjustment is the identity; compare with SciPy's interval masses.
    p = losskit.score_distribution(torch.tensor([3.0], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64))
    lv = np.arange(1, 6)
    ref = scipy.stats.norm.cdf(lv + 0.5, 3.0, 0.9) - scipy.stats.norm.cdf(lv - 0.5, 3.0, 0.9)
    torch.testing.assert_close(p[0], torch.tensor(ref / ref.sum()), rtol=1e-10, atol=1e-14)


def test_score_distribution_rescales_from_the_score_range():
    a = losskit.score_distribution(torch.tensor([62.5], dtype=torch.float64), torch.tensor([10.0], dtype=torch.float64),
                                   score_range=(0.0, 100.0))
    b = losskit.score_distribution(torch.tensor([3.5], dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64))
    torch.testing.assert_close(a, b)


def test_thurstone_probability_and_fidelity_hand_formula():
    g = torch.Generator().manual_seed(1)
    za = torch.randn(4, 5, generator=g, dtype=torch.float64)
    zb = torch.randn(4, 5, generator=g, dtype=torch.float64)
    p = torch.rand(4, generator=g, dtype=torch.float64)
    lv = np.arange(1, 6)
    ref = []
    for i in range(4):
        pa = np.exp(za[i].numpy()) / np.exp(za[i].numpy()).sum()
        pb = np.exp(zb[i].numpy()) / np.exp(zb[i].numpy()).sum()
        ma, mb = (pa * lv).sum(), (pb * lv).sum()
        va, vb = (pa * (lv - ma) ** 2).sum(), (pb * (lv - mb) ** 2).sum()
        ph = scipy.stats.norm.cdf((ma - mb) / math.sqrt(va + vb + 1e-8))
        ref.append(1 - math.sqrt(ph * p[i].item() + 1e-8) - math.sqrt((1 - ph) * (1 - p[i].item()) + 1e-8))
    got = losskit.thurstone_fidelity_loss(za, zb, p, reduction="none")
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    pr = losskit.thurstone_probability(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(2.0), torch.tensor(1.0))
    assert pr.item() == pytest.approx(scipy.stats.norm.cdf(1 / math.sqrt(1.25)), abs=1e-6)


# ------------------------------------------------------------------------------------- AnyLoss
def _hard_case():
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(40, generator=g) < 0.3).double()
    y[:2] = torch.tensor([0.0, 1.0])
    pred = (torch.rand(40, generator=g) < 0.5).double()
    logits = torch.where(pred > 0, 30.0, -30.0).double()
    return logits, y, pred


@pytest.mark.parametrize("metric", ["accuracy", "f1", "fbeta", "gmean", "gmean_sqrt", "balanced_accuracy", "mcc"])
def test_anyloss_equals_one_minus_the_metric_on_confident_predictions(metric):
    logits, y, pred = _hard_case()
    yt, yp = y.numpy().astype(int), pred.numpy().astype(int)
    ref = {
        "accuracy": skm.accuracy_score(yt, yp),
        "f1": skm.f1_score(yt, yp),
        "fbeta": skm.fbeta_score(yt, yp, beta=2.0),
        "gmean": skm.recall_score(yt, yp) * skm.recall_score(1 - yt, 1 - yp),  # the authors' (no square root)
        "gmean_sqrt": math.sqrt(skm.recall_score(yt, yp) * skm.recall_score(1 - yt, 1 - yp)),
        "balanced_accuracy": skm.balanced_accuracy_score(yt, yp),
        "mcc": skm.matthews_corrcoef(yt, yp),
    }[metric]
    got = losskit.anyloss(logits, y, metric=metric, beta=2.0)
    assert got.item() == pytest.approx(1 - ref, abs=1e-9)


def test_anyloss_soft_confusion_matrix_hand_formula_and_gradient():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(12, generator=g) < 0.5).double()
    a = 1 / (1 + np.exp(-73 * (1 / (1 + np.exp(-z.detach().numpy())) - 0.5)))
    yn = y.numpy()
    tp, fn, fp = (yn * a).sum(), (yn * (1 - a)).sum(), ((1 - yn) * a).sum()
    assert losskit.anyloss(z, y, metric="f1").item() == pytest.approx(1 - 2 * tp / (2 * tp + fn + fp), abs=1e-12)
    losskit.anyloss(z, y).backward()
    assert torch.isfinite(z.grad).all()


def test_anyloss_batch_without_negatives_is_finite():
    z = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for metric in ("gmean", "gmean_sqrt", "balanced_accuracy", "mcc"):
        out = losskit.anyloss(z, torch.ones(5, dtype=torch.float64), metric=metric)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------------- EnsLoss
def test_ensloss_gradient_is_the_sorted_random_calibrated_derivative():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(10, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(10, generator=g) < 0.5).double()
    eps = torch.randn(10, generator=g, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    losskit.ensloss(zz, y, noise=eps, reduction="sum").backward()
    m = (2 * y - 1) * z
    dm = zz.grad * (2 * y - 1)  # d loss / d m
    # reference: sort -exp(eps) ascending (clipped at -1), assign to ascending margins, 1/m tail, -1e-6
    gs = np.maximum(np.sort(-np.exp(eps.numpy())), -1.0)
    ref = np.empty(10)
    ref[np.argsort(m.numpy())] = gs
    mn = m.numpy()
    ref = np.where(mn > 1, ref / np.where(mn > 1, mn, 1), ref) - 1e-6
    torch.testing.assert_close(dm, torch.tensor(ref))
    assert torch.all(dm < 0)  # calibrated: the implied loss decreases in the margin
    order = torch.argsort(m)
    small = order[m[order] <= 1]
    assert torch.all(torch.diff(dm[small]) >= 0)  # non-decreasing derivative: convex implied loss


def test_ensloss_reproducible_with_a_generator_and_rejects_soft_labels():
    z = torch.randn(6, dtype=torch.float64)
    y = torch.tensor([0.0, 1, 1, 0, 1, 0], dtype=torch.float64)
    a = losskit.ensloss(z, y, generator=torch.Generator().manual_seed(0))
    b = losskit.ensloss(z, y, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()
    with pytest.raises(LossInputError, match="^target:"):
        losskit.ensloss(z, torch.full((6,), 0.5, dtype=torch.float64))


# ------------------------------------------------------------------------------- aggregate losses
def test_bag_instance_interpolating_identities():
    g = torch.Generator().manual_seed(5)
    f = torch.randn(4, 6, generator=g, dtype=torch.float64)
    yb = torch.randn(4, generator=g, dtype=torch.float64)
    bag = losskit.bag_loss(f, yb, reduction="none")
    inst = losskit.instance_loss(f, yb, reduction="none")
    torch.testing.assert_close(bag, (yb - f.mean(-1)) ** 2)
    torch.testing.assert_close(inst, ((yb[:, None] - f) ** 2).mean(-1))
    k = 6
    torch.testing.assert_close(k * inst, k * bag + ((f - f.mean(-1, keepdim=True)) ** 2).sum(-1))
    torch.testing.assert_close(losskit.interpolating_loss(f, yb, rho=0.0, reduction="none"), bag)
    torch.testing.assert_close(losskit.interpolating_loss(f, yb, rho=1.0, reduction="none"), inst)
    torch.testing.assert_close(losskit.interpolating_loss(f, yb, rho=0.3, reduction="none"), 0.7 * bag + 0.3 * inst)


def test_ragged_bags_with_a_mask_equal_separate_bags():
    f = torch.tensor([[1.0, 2.0, 99.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    yb = torch.tensor([1.0, 0.0], dtype=torch.float64)
    got = losskit.instance_loss(f, yb, mask, reduction="none")
    ref = torch.tensor([((1 - 1.0) ** 2 + (1 - 2.0) ** 2) / 2, (0.25 + 1 + 9) / 3], dtype=torch.float64)
    torch.testing.assert_close(got, ref)


# ----------------------------------------------------------------------------- claimed properties
def _classwise_entries():
    return [o for o in losskit.objectives("classification") if o.input_kind.name == "logits+labels"]


@pytest.mark.parametrize("entry", _classwise_entries(), ids=lambda e: e.name)
def test_claimed_invariances_and_signs_hold(entry):
    ex = entry.make_example(torch.float64, seed=3)
    z, y = ex.inputs["logits"], ex.inputs["target"]
    base = entry.fn(z, y, **ex.options, reduction="none")
    props = entry.properties
    if "nonnegative" in props:
        assert torch.all(base >= -1e-12)
    if "shift_invariant" in props:
        torch.testing.assert_close(entry.fn(z + 2.5, y, **ex.options, reduction="none"), base, rtol=1e-9, atol=1e-10)
    if "scale_invariant" in props:
        torch.testing.assert_close(entry.fn(3.0 * z, y, **ex.options, reduction="none"), base, rtol=1e-9, atol=1e-10)
    if "permutation_equivariant" in props:
        perm = torch.tensor([4, 2, 0, 1, 3])
        inv = torch.argsort(perm)
        torch.testing.assert_close(entry.fn(z[:, perm], inv[y], **ex.options, reduction="none"), base,
                                   rtol=1e-9, atol=1e-10)
    if "symmetric" in props:
        total = sum(entry.fn(z, torch.full_like(y, k), **ex.options, reduction="none") for k in range(5))
        torch.testing.assert_close(total, torch.full_like(total, total[0].item()))
    if "convex" in props:
        z0 = z[0].detach()

        def f(v):
            return entry.fn(v[None], y[:1], **ex.options, reduction="sum")

        h = torch.autograd.functional.hessian(f, z0)
        assert torch.linalg.eigvalsh(h).min() > -1e-8


@pytest.mark.parametrize("name", ["cross_entropy", "focal", "comp_sum", "gce", "mae", "sce", "poly_loss", "ldr_kl",
                                  "spherical_z_loss", "stablemax_cross_entropy", "sparsemax_loss", "entmax_loss"])
def test_claimed_calibration_minimiser_picks_argmax(name):
    entry = losskit.get(name)
    assert "calibrated" in entry.properties
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([z], max_iter=200, line_search_fn="strong_wolfe")
    labels = torch.arange(3)

    def closure():
        opt.zero_grad()
        risk = (p * entry.fn(z[None].expand(3, 3), labels, reduction="none")).sum()
        risk.backward()
        return risk

    for _ in range(3):
        opt.step(closure)
    assert int(z.argmax()) == 0


def test_two_hot_float32_at_the_top_centre_is_a_distribution():
    y = torch.tensor([0.9, 1.0, -1.0, 0.8999999])
    t = losskit.two_hot_targets(y, v_min=-1.0, v_max=1.0, num_bins=10)
    assert torch.all(t >= 0) and torch.allclose(t.sum(-1), torch.ones(4))
    losskit.two_hot_loss(torch.randn(4, 10), y, v_min=-1.0, v_max=1.0)


def test_teacher_and_progressive_targets():
    g = torch.Generator().manual_seed(9)
    zs = torch.randn(4, 5, generator=g, dtype=torch.float64)
    zt = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 1])
    t = losskit.teacher_targets(zt, temperature=2.0)
    ref = -(np.exp(zt.numpy() / 2) / np.exp(zt.numpy() / 2).sum(1, keepdims=True)
            * (zs.numpy() - np.log(np.exp(zs.numpy()).sum(1, keepdims=True)))).sum(1)
    torch.testing.assert_close(losskit.cross_entropy(zs, t, reduction="none"), torch.tensor(ref))
    prev = torch.softmax(zt, -1)
    torch.testing.assert_close(losskit.cross_entropy(zs, losskit.progressive_targets(y, prev, 0.0, 5)),
                               F.cross_entropy(zs, y))  # PS-KD with alpha = 0 is CE
    p = losskit.progressive_targets(y, prev, 0.3, 5)
    torch.testing.assert_close(p, 0.7 * F.one_hot(y, 5).double() + 0.3 * prev)


def _other_entries():
    return [o for o in losskit.objectives("classification")
            if o.input_kind.name not in ("logits+labels", "binary logits+targets")]


@pytest.mark.parametrize("entry", _other_entries(), ids=lambda e: e.name)
def test_claimed_properties_of_other_input_kinds(entry):
    ex = entry.make_example(torch.float64, seed=4)
    first = ex.grad[0]
    base = ex.call(entry.fn, reduction="none")
    if "nonnegative" in entry.properties:
        assert torch.all(base >= 0)
    if "shift_invariant" in entry.properties:
        shifted = ex.replace({first: ex.inputs[first] + 1.7})
        torch.testing.assert_close(shifted.call(entry.fn, reduction="none"), base, rtol=1e-10, atol=1e-12)
    if "scale_invariant" in entry.properties:
        scaled = ex.replace({first: ex.inputs[first] * 3.3})
        torch.testing.assert_close(scaled.call(entry.fn, reduction="none"), base, rtol=1e-10, atol=1e-12)
    if "convex" in entry.properties:
        row = ex.select(slice(0, 1))
        x0 = row.inputs[first].detach()

        def f(v):
            return row.replace({first: v}).call(entry.fn, reduction="sum")

        h = torch.autograd.functional.hessian(f, x0).reshape(x0.numel(), x0.numel())
        assert torch.linalg.eigvalsh(h).min() > -1e-8
