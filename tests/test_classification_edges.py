"""Classification at the edges: fully masked rows, 1e30 logits, option domains, meta tensors, label dtypes.

Each test pins a fixed bug (it failed before the fix): the comment names what the old code did.
"""

import math

import pytest
import torch

import losskit
from losskit import LossInputError

# losses over (N, K) logits and class-index targets with ignore_index
INDEX_LOSSES = ["cross_entropy", "comp_sum", "focal", "gce", "mae", "poly_loss", "sce", "ldr_kl", "aldr_kl",
                "entmax_loss", "sparsemax_loss", "stablemax_cross_entropy", "spherical_z_loss"]


def _logits_labels(n=5, k=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, k, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


# ------------------------------------------------------------------------------ fully masked rows
@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_fully_masked_row_raises_naming_the_logits(name):
    # old: NaN for every softmax loss, an internal IndexError for sparsemax_loss
    fn = getattr(losskit, name)
    z, y = _logits_labels()
    z[1] = float("-inf")
    with pytest.raises(LossInputError, match=r"^logits: .*fully masked"):
        fn(z, y)


@pytest.mark.parametrize("mode", [True, False])
@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_ignored_fully_masked_row_is_exactly_zero_without_nan_gradient(name, mode):
    # old: NaN value or gradient (an IndexError for sparsemax_loss)
    fn = getattr(losskit, name)
    z, y = _logits_labels()
    z[1] = float("-inf")
    y[1] = -100
    z.requires_grad_(True)
    with losskit.validation(mode):  # off: the guard is not decided from the values
        none = fn(z, y, reduction="none")
        mean = fn(z, y)
    assert none[1].item() == 0.0
    assert torch.isfinite(none).all()
    mean.backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad[1] == 0).all()
    keep = torch.tensor([0, 2, 3, 4])
    zk, yk = _logits_labels()
    torch.testing.assert_close(mean.detach(), fn(zk[keep], yk[keep]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["hl_gauss_loss", "two_hot_loss"])
def test_fully_masked_row_of_bin_logits_raises(name):
    # old: NaN
    z, _ = _logits_labels(k=8)
    z[0] = float("-inf")
    y = torch.linspace(-0.9, 0.9, 5, dtype=torch.float64)
    with pytest.raises(LossInputError, match=r"^logits: "):
        getattr(losskit, name)(z, y, v_min=-1.0, v_max=1.0)


def test_decoupled_softmax_fully_masked_row_with_positives_raises():
    # old: a perfect 0 for a row that has nothing to predict
    z, _ = _logits_labels(n=3, k=4)
    t = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float64)
    zm = z.clone()
    zm[1] = float("-inf")
    with pytest.raises(LossInputError, match=r"^logits: .*fully masked"):
        losskit.decoupled_softmax_loss(zm, t)
    # a fully masked row without positives is not counted: 0, no NaN gradient
    zm = z.clone()
    zm[2] = float("-inf")
    zm.requires_grad_(True)
    out = losskit.decoupled_softmax_loss(zm, t)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(zm.grad).all()
    torch.testing.assert_close(out.detach(), losskit.decoupled_softmax_loss(z[:2], t[:2]))


def test_ensloss_refuses_neg_inf_logits():
    # old: a -inf loss (an optimiser reads "infinitely good")
    z = torch.tensor([-math.inf, 0.5, -0.3, 2.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    with pytest.raises(LossInputError, match=r"^logits: "):
        losskit.ensloss(z, y, noise=torch.zeros(4, dtype=torch.float64))


# ----------------------------------------------------------------------------------- 1e30 inputs
@pytest.mark.parametrize("name", ["sparsemax_loss", "entmax_loss"])
def test_fenchel_young_losses_at_float32_logits_of_1e30(name):
    # old: sparsemax "index -1 is out of bounds" (1 + 1e30 == 1e30 emptied the support)
    z = torch.tensor([[1e30, 0.0, -1e30], [1e30, 0.0, -1e30]], requires_grad=True)
    y = torch.tensor([0, 1])
    out = getattr(losskit, name)(z, y, reduction="none")
    assert torch.isfinite(out).all()
    assert out[0].item() == 0.0  # the link puts all its mass on the label: exactly 0
    assert out[1].item() == pytest.approx(1e30, rel=1e-6)  # <z, p - t> = z_0 - z_1
    out.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, 0, 0], [1, -1, 0]]))


def test_bag_loss_at_predictions_of_1e30_raises_instead_of_nan():
    # old: NaN (0 * inf from the rho = 0 within-bag term)
    resp = torch.tensor([0.5, 1.0])
    # rho = 0: the within-bag variance (here overflowing) does not enter at all
    pred = torch.tensor([[1e30, -1e30], [1.0, 2.0]], requires_grad=True)
    out = losskit.bag_loss(pred, resp, reduction="none")
    torch.testing.assert_close(out, torch.tensor([0.25, 0.25]))
    out.sum().backward()
    assert torch.isfinite(pred.grad).all()
    for fn in (losskit.instance_loss, losskit.interpolating_loss):
        with pytest.raises(LossInputError, match=r"^predictions: .*fit in torch.float32"):
            fn(pred, resp)
    pred = torch.tensor([[1e30, 1e30], [1.0, 2.0]])
    for fn in (losskit.bag_loss, losskit.instance_loss, losskit.interpolating_loss):
        with pytest.raises(LossInputError, match=r"^predictions: .*fit in torch.float32"):
            fn(pred, resp)


# ------------------------------------------------------------------------------- option domains
@pytest.mark.parametrize(("name", "option", "value"), [
    ("aldr_kl", "n_iter", 0),  # old: silently a different loss (lambda at the bracket's midpoint)
    ("aldr_kl", "n_iter", -3),
    ("entmax_loss", "n_iter", 0),
    ("sce", "beta", -1.0),  # old: accepted, rewarding the error RCE measures
    ("sce", "alpha", -0.5),
    ("ldr_kl", "c", -0.1),
    ("thurstone_fidelity_loss", "eps", 0.0),
])
def test_out_of_domain_options_raise_naming_the_option(name, option, value):
    entry = losskit.get(name)
    ex = entry.make_example()
    with pytest.raises(LossInputError, match=rf"^{option}: expected "):
        ex.call(entry.fn, **{option: value})


def test_sce_default_a_is_the_authors_code():
    import inspect

    # issue 17: the authors' code (and so their reported results) uses A = log(1e-4), the paper's text -4
    assert inspect.signature(losskit.sce).parameters["A"].default == math.log(1e-4)
    assert inspect.signature(losskit.sce).parameters["p_min"].default is None


# ---------------------------------------------------------------------------------- label dtypes
@pytest.mark.parametrize("name", ["sparsemax_loss", "entmax_loss", "cross_entropy", "aldr_kl"])
def test_int32_labels_equal_int64(name):
    # old: sparsemax / entmax failed in one_hot with int32 labels
    fn = getattr(losskit, name)
    z, y = _logits_labels()
    torch.testing.assert_close(fn(z, y.int(), reduction="none"), fn(z, y, reduction="none"), rtol=0, atol=0)


def test_target_builders_accept_int32_labels():
    y = torch.tensor([0, 2, 1], dtype=torch.int32)
    torch.testing.assert_close(losskit.classification.one_hot(y, 3), torch.eye(3)[[0, 2, 1]])
    torch.testing.assert_close(losskit.classification.smooth_labels(y, 0.3, 3),
                               0.7 * torch.eye(3, dtype=torch.get_default_dtype())[[0, 2, 1]] + 0.1)
    multi = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)
    z, _ = _logits_labels(n=3, k=3)
    torch.testing.assert_close(losskit.decoupled_softmax_loss(z, y), losskit.decoupled_softmax_loss(z, multi))


def test_normalized_softmax_mixed_float_dtypes_are_promoted():
    # old: a raw matmul dtype error
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    out = losskit.normalized_softmax_loss(x.float(), w, y)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, losskit.normalized_softmax_loss(x.float().double(), w, y))


# ------------------------------------------------------------------------------------ meta tensors
@pytest.mark.parametrize("name", ["bag_loss", "instance_loss", "interpolating_loss", "decoupled_softmax_loss",
                                  "ensloss", "hl_gauss_loss", "two_hot_loss", "normalized_softmax_loss"])
def test_meta_tensors_give_a_meta_result(name):
    # old: Tensor.item() / bool() on a meta tensor
    entry = losskit.get(name)
    ex = entry.make_example(torch.float32)
    ref = ex.call(entry.fn, reduction="none")
    meta = ex.replace({k: v.to("meta") for k, v in ex.inputs.items() if isinstance(v, torch.Tensor)},
                      {k: v.to("meta") for k, v in ex.options.items() if isinstance(v, torch.Tensor)})
    out = meta.call(entry.fn, reduction="none")
    assert out.is_meta and out.shape == ref.shape and out.dtype == ref.dtype


def test_target_builders_on_meta_tensors():
    y = torch.zeros(4, device="meta")
    assert losskit.classification.two_hot_targets(y, v_min=-1.0, v_max=1.0, num_bins=5).shape == (4, 5)
    assert losskit.classification.hl_gauss_targets(y, v_min=-1.0, v_max=1.0, num_bins=5).shape == (4, 5)


# ---------------------------------------------------------------------------- validation modes
def test_target_builders_obey_set_validation():
    # old: the value checks of targets.py ran (and synchronised) whatever set_validation said
    from losskit.classification import hl_gauss_targets, score_distribution

    y = torch.tensor([0.2, float("nan")], dtype=torch.float64)
    with pytest.raises(LossInputError, match=r"^target: "):
        hl_gauss_targets(y, v_min=-1.0, v_max=1.0, num_bins=4)
    with pytest.raises(LossInputError, match=r"^std: "):
        score_distribution(torch.tensor([3.0]), torch.tensor([-1.0]))
    with pytest.raises(LossInputError, match=r"^mean: "):
        score_distribution(torch.tensor([7.0]), torch.tensor([1.0]))
    with losskit.validation(False):
        hl_gauss_targets(y, v_min=-1.0, v_max=1.0, num_bins=4)
        score_distribution(torch.tensor([3.0]), torch.tensor([-1.0]))
        score_distribution(torch.tensor([7.0]), torch.tensor([1.0]))


def test_bag_and_decoupled_value_checks_obey_set_validation():
    pred = torch.randn(2, 3)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    with pytest.raises(LossInputError, match=r"^mask: "):
        losskit.bag_loss(pred, torch.zeros(2), mask)
    with losskit.validation(False):
        losskit.bag_loss(pred, torch.zeros(2), mask)
    t = torch.tensor([[0.5, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.raises(LossInputError, match=r"^target: "):
        losskit.decoupled_softmax_loss(pred, t)
    with losskit.validation(False):
        losskit.decoupled_softmax_loss(pred, t)


# ------------------------------------------------------------------------------ class weights
def test_class_weight_mean_is_torch_rule_with_sample_weights_and_ignored_samples():
    z, y = _logits_labels(n=6, k=4)
    y[2] = -100
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    s = torch.rand(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    none = losskit.cross_entropy(z, y, weight=w, reduction="none")
    keep = y != -100
    want = (s * none)[keep].sum() / (s * w[y.clamp(min=0)])[keep].sum()
    torch.testing.assert_close(losskit.cross_entropy(z, y, weight=w, sample_weight=s), want)
    torch.testing.assert_close(losskit.cross_entropy(z, y, weight=w),
                               torch.nn.functional.cross_entropy(z, y, weight=w))
