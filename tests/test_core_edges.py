"""The core's edge machinery: validation modes, device-side checks without host syncs, tensors without
data, declared domains and the one reduction (the registry-wide cases are in the conformance suite)."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError
from losskit._core import domains as D
from losskit._core import validate
from losskit._core.reduction import finish


@contextlib.contextmanager
def no_host_sync():
    """Force the accelerator path (device-side assertions) and make any host read of a tensor fail."""

    def forbidden(*a, **k):
        raise AssertionError("host synchronisation on the default validation path")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "value_check_mode", lambda x: "async")
        for name in ("item", "__bool__", "tolist", "__float__", "__int__"):
            mp.setattr(torch.Tensor, name, forbidden)
        yield


def _ce_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)


def test_async_mode_reads_no_value_and_still_computes():
    z, y = _ce_inputs()
    s = torch.rand(8, dtype=torch.float64)
    with no_host_sync():
        out = losskit.cross_entropy(z, y, sample_weight=s, label_smoothing=0.1)
        d = losskit.kl_divergence(z, z.flip(0))
    torch.testing.assert_close(out, F.cross_entropy(z, y, reduction="none", label_smoothing=0.1).mul(s).sum() / s.sum())
    assert d > 0


def test_async_mode_fails_on_device_with_the_argument_named(monkeypatch):
    monkeypatch.setattr(validate, "value_check_mode", lambda x: "async")
    z, y = _ce_inputs()
    z[2, 1] = float("nan")
    with pytest.raises(RuntimeError, match="logits: expected finite values"):
        losskit.cross_entropy(z, y)
    y[0] = 9
    with pytest.raises(RuntimeError, match="target: expected class indices"):
        losskit.cross_entropy(_ce_inputs()[0], y)


def test_debug_and_off_modes():
    z, y = _ce_inputs()
    z[3, 0] = float("nan")
    with losskit.validation("debug"), pytest.raises(LossInputError, match=r"logits: .*nan at position \(3, 0\)"):
        losskit.cross_entropy(z, y)
    with losskit.validation(False):
        assert torch.isnan(losskit.cross_entropy(z, y))
    with pytest.raises(LossInputError, match="enabled"):
        losskit.set_validation("sometimes")
    assert losskit._core.validation_mode() == "on"


def test_meta_and_fake_tensors_skip_value_checks():
    z, y = _ce_inputs()
    out = losskit.cross_entropy(z.to("meta"), y.to("meta"), reduction="none")
    assert out.is_meta and out.shape == (8,)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fz, fy = mode.from_tensor(z), mode.from_tensor(y)
        assert losskit.focal(fz, fy).shape == ()


def test_fully_masked_row_policy():
    z, y = _ce_inputs()
    z[1] = float("-inf")
    with pytest.raises(LossInputError, match="logits: .*fully masked"):
        losskit.cross_entropy(z, y)
    y[1] = -100  # the row's sample is ignored: it contributes exactly 0, and no NaN gradient
    z.requires_grad_(True)
    out = losskit.cross_entropy(z, y, reduction="none")
    assert out[1] == 0 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("domain, good, bad", [
    (D.POSITIVE, [1e-9, 3], [0, -1, math.nan, math.inf, "1", True]),
    (D.UNIT, [0, 1, 0.5], [-0.1, 1.5, math.nan]),
    (D.OPEN_UNIT, [0.5], [0, 1]),
    (D.COUNT, [1, 50], [0, -2, 1.5, True]),
    (D.Choice("a", "b"), ["a", "b"], ["c", 1, None]),
    (D.Maybe(D.POSITIVE), [None, 2.0], [0.0]),
    (D.Seq(D.POSITIVE), [(1.0, 2.0), [3]], [(), (1.0, -1.0), 1.0]),
    (D.Either(D.Choice("auto"), D.COUNT), ["auto", 3], ["x", 0]),
])
def test_domains(domain, good, bad):
    for v in good:
        assert domain.contains(v), (domain, v)
    for v in bad:
        assert not domain.contains(v), (domain, v)
    for v in domain.invalid():
        assert not domain.contains(v), (domain, v)
    for v in domain.boundaries():
        assert domain.contains(v), (domain, v)


def test_dim_domain_reads_the_input_rank():
    x = torch.zeros(2, 3)
    d = D.Dim(of="p")
    assert d.contains(-2, {"p": x}) and d.contains(1, {"p": x})
    assert not d.contains(2, {"p": x}) and not d.contains(-3, {"p": x})


def test_option_errors_name_option_value_and_domain():
    z, y = _ce_inputs()
    with pytest.raises(LossInputError, match=r"^label_smoothing: expected a real number in \[0, 1\], got 1.5$"):
        losskit.cross_entropy(z, y, label_smoothing=1.5)
    with pytest.raises(LossInputError, match=r"^reduction: expected one of 'mean', 'sum', 'none', got 'avg'$"):
        losskit.cross_entropy(z, y, reduction="avg")


def test_finish_class_weight_denominator_is_torchs_rule():
    z, y = _ce_inputs()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    y[::3] = -100
    per = F.cross_entropy(z, y, weight=w, reduction="none")
    keep = y != -100
    ours = finish(per, "mean", mask=keep, denominator=w[y.clamp_min(0)])
    torch.testing.assert_close(ours, F.cross_entropy(z, y, weight=w))
    s = torch.rand(8, dtype=torch.float64)
    ours = finish(per, "mean", sample_weight=s, mask=keep, denominator=w[y.clamp_min(0)])
    ref = (per * s)[keep].sum() / (w[y[keep]] * s[keep]).sum()
    torch.testing.assert_close(ours, ref)
    assert finish(per, "mean", mask=torch.zeros(8, dtype=torch.bool)) == 0


def test_integer_labels_of_any_dtype_and_mixed_floats():
    z, y = _ce_inputs()
    ref = losskit.cross_entropy(z, y)
    for dt in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(losskit.cross_entropy(z, y.to(dt)), ref)
    p, q = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6)
    out = losskit.kl_divergence(p, q)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, losskit.kl_divergence(p, q.double()))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_ignored_rows_never_leak_into_values_or_gradients(bad, smoothing):
    """NaN, +inf or -inf everywhere in an ignored row: value and gradient as if the row were absent
    (the label-only path checks rows from its per-sample values, the smoothed path from the row maxima)."""
    z, y = _ce_inputs()
    y[2] = -100
    z[2] = bad
    z.requires_grad_(True)
    out = losskit.cross_entropy(z, y, label_smoothing=smoothing)
    out.backward()
    keep = torch.arange(8) != 2
    z2 = z.detach()[keep].clone().requires_grad_(True)
    ref = losskit.cross_entropy(z2, y[keep], label_smoothing=smoothing)
    ref.backward()
    torch.testing.assert_close(out, ref)
    assert (z.grad[2] == 0).all()
    torch.testing.assert_close(z.grad[keep], z2.grad)


def test_a_zero_probability_target_is_plus_inf_not_an_error():
    z, y = _ce_inputs()
    z[0, y[0]] = float("-inf")
    assert losskit.cross_entropy(z, y, reduction="none")[0] == float("inf")


@pytest.mark.parametrize("mode", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_per_sample_gradients_with_torch_func(mode, smoothing):
    """vmap(grad(.)) works (value checks are skipped inside torch.func transforms, which cannot read
    values), and equals the per-sample gradients computed one by one."""
    from torch.func import grad, vmap

    z, y = _ce_inputs()
    y[3] = -100

    def one(zz, yy):
        return losskit.cross_entropy(zz[None], yy[None], label_smoothing=smoothing)

    with losskit.validation(mode):
        g = vmap(grad(one))(z, y)
    for i in range(len(y)):
        zi = z[i:i + 1].clone().requires_grad_(True)
        losskit.cross_entropy(zi, y[i:i + 1], label_smoothing=smoothing).backward()
        torch.testing.assert_close(g[i], zi.grad[0])
    assert (g[3] == 0).all()
