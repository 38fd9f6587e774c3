"""Distillation objectives against torch / NumPy float64 formulas and the identities of the catalogue."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit
from losskit import LossInputError


def _logits(n=8, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = 2 * torch.randn(n, k, generator=g, dtype=torch.float64)
    t = 2 * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return s, t, y


def _np_softmax(z, T=1.0):
    return scipy.special.softmax(np.asarray(z) / T, axis=1)


# ---------------------------------------------------------------------------------------------- KD
@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_kd_matches_torch_kl_div_batchmean(T, alpha):
    s, t, y = _logits()
    ours = losskit.kd_loss(s, t, y, temperature=T, alpha=alpha)
    ref = alpha * F.cross_entropy(s, y) + (1 - alpha) * T * T * F.kl_div(
        F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_kd_soft_term_gradient_is_T_times_probability_gap():
    # d/dz_s [T^2 KL(p_t || p_s)] = T (p_s - p_t), p = softmax(z / T): Hinton's eq. (2), summed per sample
    s, t, _ = _logits(seed=12)
    T = 3.0
    s1 = s.clone().requires_grad_(True)
    losskit.kd_loss(s1, t, temperature=T, beta=1.0, reduction="sum").backward()
    torch.testing.assert_close(s1.grad, T * ((s / T).softmax(1) - (t / T).softmax(1)), rtol=1e-10, atol=1e-12)


def test_kd_directions_against_scipy():
    s, t, _ = _logits(seed=1)
    T = 2.0
    ps, pt = _np_softmax(s, T), _np_softmax(t, T)
    fwd = scipy.special.rel_entr(pt, ps).sum(1)
    rev = scipy.special.rel_entr(ps, pt).sum(1)
    js = scipy.spatial.distance.jensenshannon(pt, ps, axis=1) ** 2
    for div, ref in (("forward", fwd), ("reverse", rev), ("js", js)):
        got = losskit.kd_loss(s, t, temperature=T, beta=1.0, divergence=div, reduction="none")
        np.testing.assert_allclose(got.numpy(), T * T * ref, rtol=1e-10, err_msg=div)
    tv = 0.5 * np.abs(pt - ps).sum(1)
    got = losskit.kd_loss(s, t, temperature=T, beta=1.0, divergence="tv", reduction="none")
    np.testing.assert_allclose(got.numpy(), T * T * tv, rtol=1e-10)
    skl = scipy.special.rel_entr(pt, 0.1 * pt + 0.9 * ps).sum(1)
    got = losskit.kd_loss(s, t, temperature=T, beta=1.0, divergence=losskit.skew_kl_generator(0.1),
                          reduction="none")
    np.testing.assert_allclose(got.numpy(), T * T * skl, rtol=1e-10)


def test_kd_alpha_one_is_cross_entropy_even_with_masked_student():
    s, t, y = _logits(seed=2)
    s = s.clone()
    s[0, (y[0] + 1) % 5] = -math.inf  # teacher has mass there: forward KL is inf, weighted by 0
    s.requires_grad_(True)
    loss = losskit.kd_loss(s, t, y, alpha=1.0)
    ref = F.cross_entropy(s.detach(), y)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-12, atol=1e-12)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_kd_ignore_index_and_spatial_dims():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 3), generator=g)
    y[0, 1] = -100
    got = losskit.kd_loss(s, t, y, temperature=2.0, alpha=0.4, reduction="none")
    flat = losskit.kd_loss(s.permute(0, 2, 1).reshape(6, 5), t.permute(0, 2, 1).reshape(6, 5),
                           y.reshape(6), temperature=2.0, alpha=0.4, reduction="none").reshape(2, 3)
    torch.testing.assert_close(got, flat)
    assert got[0, 1] == 0
    mean = losskit.kd_loss(s, t, y, temperature=2.0, alpha=0.4)
    torch.testing.assert_close(mean, got.sum() / 5)


def test_kd_bad_divergence_and_temperature():
    s, t, y = _logits()
    with pytest.raises(LossInputError, match="^divergence:"):
        losskit.kd_loss(s, t, y, divergence="forwards")
    with pytest.raises(LossInputError, match="^temperature:"):
        losskit.kd_loss(s, t, y, temperature=0.0)


# ------------------------------------------------------------------------------------------- BD-KD
def test_bd_kd_w10_is_kd_and_w01_is_reverse():
    s, t, y = _logits(seed=4)
    torch.testing.assert_close(losskit.bd_kd(s, t, y, weights=(1.0, 0.0)),
                               losskit.kd_loss(s, t, y, alpha=1.0, beta=1.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.bd_kd(s, t, y, weights=(0.0, 1.0)),
                               losskit.kd_loss(s, t, y, alpha=1.0, beta=1.0, divergence="reverse"),
                               rtol=1e-12, atol=1e-12)


def test_bd_kd_entropy_gap_weighting_by_hand():
    s, t, y = _logits(seed=5)
    T, delta = 3.0, 2.5
    ps, pt = _np_softmax(s, T), _np_softmax(t, T)
    hs, ht = scipy.stats.entropy(ps, axis=1), scipy.stats.entropy(pt, axis=1)
    fwd, rev = scipy.special.rel_entr(pt, ps).sum(1), scipy.special.rel_entr(ps, pt).sum(1)
    less = hs > ht
    assert less.any() and (~less).any()
    wf = np.where(less, 1.0, delta)
    wr = np.where(less, delta, 1.0)
    ce = -np.log(_np_softmax(s))[np.arange(8), y.numpy()]
    ref = ce + T * T * (wf * fwd + wr * rev)
    got = losskit.bd_kd(s, t, y, temperature=T, delta=delta, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


# ------------------------------------------------------------------------------------ dual-head KD
def test_binary_kl_and_dual_head_by_hand():
    s, t, y = _logits(seed=6)
    aux = torch.randn_like(s)
    sig = scipy.special.expit
    a, b = sig(t.numpy()), sig(aux.numpy())
    bkl = (scipy.special.rel_entr(a, b) + scipy.special.rel_entr(1 - a, 1 - b)).sum(1)
    np.testing.assert_allclose(losskit.binary_kl(t, aux).sum(1).numpy(), bkl, rtol=1e-10)
    T = 4.0
    kd = losskit.kd_loss(s, t, y, temperature=T, alpha=1.0, beta=1.0, reduction="none").numpy()
    got = losskit.dual_head_kd(s, t, y, aux, temperature=T, beta=1.0, gamma=0.7, binary="kl", binary_temperature=1.0,
                               reduction="none").numpy()
    np.testing.assert_allclose(got, kd + 0.7 * bkl, rtol=1e-10)
    # BinaryKL-Norm (the default): KL(Bern 1/2 || Bern sigmoid((h2 - z_t) / tau)) * tau^2, no KD term (beta = 0)
    tau = 2.0
    q = sig((aux.numpy() - t.numpy()) / tau)
    bnorm = (scipy.special.rel_entr(0.5, q) + scipy.special.rel_entr(0.5, 1 - q)).sum(1)
    ce = losskit.kd_loss(s, t, y, alpha=1.0, beta=0.0, reduction="none").numpy()
    np.testing.assert_allclose(losskit.dual_head_kd(s, t, y, aux, reduction="none").numpy(), ce + tau ** 2 * bnorm,
                               rtol=1e-10)
    # the auxiliary head gets only the binary term's gradient; the main head none of it
    s1, a1 = s.clone().requires_grad_(True), aux.clone().requires_grad_(True)
    losskit.dual_head_kd(s1, t, y, a1, alpha=0.0, beta=0.0).backward()
    assert (s1.grad is None or s1.grad.abs().max() == 0) and a1.grad.abs().max() > 0


# -------------------------------------------------------------------------------------------- DHO
def test_dho_single_head_is_kd_and_unlabelled_samples():
    s, t, y = _logits(seed=7)
    torch.testing.assert_close(losskit.dho_loss(s, t, y, lam=0.3, temperature=2.0),
                               losskit.kd_loss(s, t, y, alpha=0.3, beta=0.7, temperature=2.0))
    h_kd = torch.randn_like(s)
    y2 = y.clone()
    y2[:3] = -1
    got = losskit.dho_loss(s, t, y2, h_kd, lam=0.4, unlabeled_index=-1, reduction="none")
    ce = F.cross_entropy(s, y2, ignore_index=-1, reduction="none")
    kd = F.kl_div(F.log_softmax(h_kd, 1), F.log_softmax(t, 1), log_target=True, reduction="none").sum(1)
    torch.testing.assert_close(got, 0.4 * ce + 0.6 * kd)
    assert (got[:3] > 0).all()  # unlabelled samples still distil
    torch.testing.assert_close(losskit.dho_loss(s, t, y2, h_kd, lam=0.4, unlabeled_index=-1), got.mean())
    with pytest.raises(LossInputError, match="^unlabeled_index:"):
        losskit.dho_loss(s, t, y2, h_kd, unlabeled_index=-100)
    with pytest.raises(LossInputError, match="^target:"):  # -1 is a label error unless declared unlabelled
        losskit.dho_loss(s, t, y2, h_kd)


def test_dho_ignored_samples_contribute_nothing():
    # was: ignored samples kept their KD term (ignored 'none' losses != 0, an all-ignored batch gave 0.39)
    s, t, y = _logits(seed=7)
    h_kd = torch.randn_like(s)
    y2 = y.clone()
    y2[:3] = -100
    y2[3] = -1
    got = losskit.dho_loss(s, t, y2, h_kd, lam=0.4, unlabeled_index=-1, reduction="none")
    assert (got[:3] == 0).all() and got[3] > 0
    kept = losskit.dho_loss(s[3:], t[3:], y2[3:], h_kd[3:], lam=0.4, unlabeled_index=-1)
    torch.testing.assert_close(losskit.dho_loss(s, t, y2, h_kd, lam=0.4, unlabeled_index=-1), kept)
    s1 = s.clone().requires_grad_(True)
    out = losskit.dho_loss(s1, t, torch.full_like(y, -100), lam=0.4)
    assert out == 0
    out.backward()
    assert (s1.grad == 0).all()


def test_dho_predict_mixing():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    p = losskit.dho_predict(a, b, alpha=0.3, beta=2.0)
    torch.testing.assert_close(p, 0.3 * a.softmax(1) + 0.7 * (b / 2).softmax(1))
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    torch.testing.assert_close(losskit.dho_predict(a, b, alpha=1.0), a.softmax(1))


# ------------------------------------------------------------------------------------------- PS-KD
def test_ps_kd_alpha_zero_is_ce_and_soft_target_ce():
    s, t, y = _logits(seed=9)
    torch.testing.assert_close(losskit.ps_kd(s, t, y, alpha=0.0), F.cross_entropy(s, y), rtol=1e-12, atol=1e-12)
    a = 0.35
    soft = (1 - a) * F.one_hot(y, 5).double() + a * t.softmax(1)
    torch.testing.assert_close(losskit.ps_kd(s, t, y, alpha=a), F.cross_entropy(s, soft), rtol=1e-12, atol=1e-12)
    t1 = t.clone().requires_grad_(True)
    s1 = s.clone().requires_grad_(True)
    losskit.ps_kd(s1, t1, y, alpha=a).backward()
    assert t1.grad is None or t1.grad.abs().max() == 0


def test_progressive_self_kd_state():
    n, k = 10, 4
    m = losskit.ProgressiveSelfKD(n, k, total_epochs=5, alpha_T=0.8, dtype=torch.float64)
    g = torch.Generator().manual_seed(10)
    z0 = torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    idx = torch.arange(n)
    torch.testing.assert_close(m(z0[:6], y[:6], index=idx[:6]), F.cross_entropy(z0[:6], y[:6]))  # epoch 0
    m(z0[6:], y[6:], index=idx[6:])
    m.set_epoch(2)
    assert m.alpha_t == pytest.approx(0.8 * 3 / 5)  # (t + 1) / T: the official schedule
    z1 = torch.randn(n, k, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    saved = {k_: v.clone() for k_, v in m.state_dict().items()}
    got = m(z1[perm], y[perm], index=perm)
    ref = losskit.ps_kd(z1[perm], z0[perm], y[perm], alpha=0.48)
    torch.testing.assert_close(got, ref)
    # state_dict round trip: a fresh module loaded with the saved state gives the same update
    m2 = losskit.ProgressiveSelfKD(n, k, total_epochs=5, alpha_T=0.8, dtype=torch.float64)
    m2.load_state_dict(saved)
    torch.testing.assert_close(m2(z1[perm], y[perm], index=perm), got)
    torch.testing.assert_close(m2.predictions, m.predictions)
    torch.testing.assert_close(m.predictions, z1.softmax(1))
    with pytest.raises(LossInputError, match="^index:"):
        m(z1[:2], y[:2], index=torch.tensor([0, 99]))


# -------------------------------------------------------------------------- GT-weighted self-KD
def test_gt_self_distillation_by_hand():
    g = torch.Generator().manual_seed(11)
    f, prev, y = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    got = losskit.gt_self_distillation(f, prev, y, xi=0.3, reduction="none")
    ref = 0.3 * ((y - f) ** 2).sum(1) + 0.7 * ((prev - f) ** 2).sum(1)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(losskit.gt_self_distillation(f, prev, y, xi=1.0),
                               F.mse_loss(f, y, reduction="sum") / 5)


_rows = st.lists(st.floats(-6, 6), min_size=4, max_size=4)


@settings(max_examples=40, deadline=None)
@given(st.lists(_rows, min_size=2, max_size=3), st.lists(_rows, min_size=2, max_size=3),
       st.floats(0.5, 5.0), st.sampled_from(["forward", "reverse", "js", "tv", "hellinger"]))
def test_kd_properties(s_rows, t_rows, T, div):
    n = min(len(s_rows), len(t_rows))
    s = torch.tensor(s_rows[:n], dtype=torch.float64)
    t = torch.tensor(t_rows[:n], dtype=torch.float64)
    soft = losskit.kd_loss(s, t, temperature=T, beta=1.0, divergence=div, reduction="none")
    assert (soft >= -1e-12).all()
    # invariant to a per-sample shift of either set of logits (distributions unchanged)
    shifted = losskit.kd_loss(s + 3.0, t - torch.arange(n, dtype=torch.float64)[:, None], temperature=T,
                              beta=1.0, divergence=div, reduction="none")
    torch.testing.assert_close(shifted, soft, rtol=1e-9, atol=1e-10)
    # a student equal to its teacher pays nothing
    assert losskit.kd_loss(t, t, temperature=T, beta=1.0, divergence=div).abs().item() < 1e-10


# --------------------------------------------------------------------------------- Sinkhorn KD
def test_sinkhorn_kd_cross_entropy_respects_ignore_index():
    # was: F.cross_entropy(reduction='none') averaged over every sample, ignored ones included (0.527 for the
    # 1.054 of cross_entropy with half the labels ignored)
    s, t, y = _logits(seed=20)
    y = y.clone()
    y[1::2] = -100
    got = losskit.sinkhorn_kd(s, t, y, alpha=0.0, eps=0.5)
    torch.testing.assert_close(got, losskit.cross_entropy(s, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, F.cross_entropy(s, y), rtol=1e-12, atol=1e-12)


def test_sinkhorn_kd_ignored_samples_leave_both_terms():
    s, t, y = _logits(seed=21)
    y = y.clone()
    y[1::2] = -100
    keep = y != -100
    kw = dict(alpha=0.3, eps=0.5, tol=1e-12)
    torch.testing.assert_close(losskit.sinkhorn_kd(s, t, y, **kw), losskit.sinkhorn_kd(s[keep], t[keep], y[keep], **kw),
                               rtol=1e-9, atol=1e-10)
    none = losskit.sinkhorn_kd(s, t, y, reduction="none", **kw)
    assert (none[~keep] == 0).all()
    torch.testing.assert_close(none[keep].mean(), losskit.sinkhorn_kd(s, t, y, **kw))
    # an ignored fully masked row is harmless; an all-ignored batch gives 0 with a zero gradient
    s1 = s.clone()
    s1[1] = -math.inf
    s1.requires_grad_(True)
    losskit.sinkhorn_kd(s1, t, y, **kw).backward()
    assert torch.isfinite(s1.grad).all() and (s1.grad[1] == 0).all()
    s2 = s.clone().requires_grad_(True)
    out = losskit.sinkhorn_kd(s2, t, torch.full_like(y, -100), **kw)
    assert out == 0
    out.backward()
    assert (s2.grad == 0).all()


def test_sinkhorn_kd_import_paths_and_registry():
    from losskit.distillation import sinkhorn_kd

    assert sinkhorn_kd is losskit.sinkhorn_kd
    entry = losskit.get("sinkhorn_kd")
    assert entry.family == "distillation" and entry.fn is losskit.sinkhorn_kd
    assert isinstance(losskit.SinkhornKd(), torch.nn.Module)


# --------------------------------------------------------------------- non-finite policy, domains
_STUDENT_OBJECTIVES = ["kd_loss", "bd_kd", "dual_head_kd", "dho_loss", "ps_kd", "sinkhorn_kd"]


@pytest.mark.parametrize("name", _STUDENT_OBJECTIVES)
@pytest.mark.parametrize("which", ["student_logits", "teacher_logits"])
def test_fully_masked_rows_raise_unless_ignored(name, which):
    # was: NaN (student rows) / the teacher term silently dropped (ps_kd's teacher rows)
    s, t, y = _logits(seed=22)
    fn = getattr(losskit, name)
    inputs = {"student_logits": s.clone(), "teacher_logits": t.clone()}
    inputs[which][2] = -math.inf
    with pytest.raises(LossInputError, match=f"^{which}:"):
        fn(inputs["student_logits"], inputs["teacher_logits"], y)
    if name != "ps_kd":
        with pytest.raises(LossInputError, match=f"^{which}:"):
            fn(inputs["student_logits"], inputs["teacher_logits"])
    y2 = y.clone()
    y2[2] = -100
    x = inputs[which].requires_grad_(True)
    none = fn(inputs["student_logits"], inputs["teacher_logits"], y2, reduction="none")
    assert none[2] == 0 and torch.isfinite(none).all()
    if not none.requires_grad:  # ps_kd detaches its past predictions
        return
    none.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[2] == 0).all()


@pytest.mark.parametrize("name, options", [
    ("kd_loss", {"alpha": 1.5}), ("kd_loss", {"alpha": -0.5}), ("kd_loss", {"beta": -1.0}),
    ("kd_loss", {"temperature": 0.0}), ("kd_loss", {"divergence": 3}),
    ("dual_head_kd", {"beta": -1.0}), ("dual_head_kd", {"gamma": -1.0}), ("dual_head_kd", {"alpha": -1.0}),
    ("dual_head_kd", {"binary_temperature": 0.0}),
    ("bd_kd", {"weights": (1.0, -1.0)}), ("bd_kd", {"delta": -2.0}), ("bd_kd", {"alpha": -1.0}),
    ("dho_loss", {"lam": 1.5}), ("ps_kd", {"alpha": 1.2}), ("sinkhorn_kd", {"alpha": 2.0}),
    ("sinkhorn_kd", {"max_iter": 0}),
])
def test_option_domains(name, options):
    # was: kd_loss(alpha=1.5) / kd_loss(beta=-1) / dual_head_kd(beta=-1) gave a (negative) value
    s, t, y = _logits(seed=23)
    (opt,) = options
    with pytest.raises(LossInputError, match=f"^{opt}:"):
        getattr(losskit, name)(s, t, y, **options)


def test_gt_self_distillation_xi_domain():
    f = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(LossInputError, match="^xi:"):
        losskit.gt_self_distillation(f, f, f, xi=-0.1)


# ------------------------------------------------------------------------------ PS-KD targets
def test_ps_kd_targets_are_progressive_targets():
    s, t, y = _logits(seed=24)
    soft = losskit.progressive_targets(y, t.softmax(1), 0.4, 5)
    torch.testing.assert_close(losskit.ps_kd(s, t, y, alpha=0.4), losskit.cross_entropy(s, soft), rtol=1e-12,
                               atol=1e-12)
    assert losskit.progressive_targets is losskit.distillation.progressive_targets
    assert losskit.teacher_targets is losskit.distillation.teacher_targets
    with pytest.raises(LossInputError, match="^alpha:"):
        losskit.progressive_targets(y, t.softmax(1), 1.5, 5)
    with pytest.raises(LossInputError, match="^temperature:"):
        losskit.teacher_targets(t, temperature=-1.0)


def test_ps_kd_spatial_dims():
    g = torch.Generator().manual_seed(25)
    s, t = torch.randn(2, 5, 3, generator=g, dtype=torch.float64), torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 3), generator=g)
    flat = losskit.ps_kd(s.permute(0, 2, 1).reshape(6, 5), t.permute(0, 2, 1).reshape(6, 5), y.reshape(6),
                         alpha=0.3, reduction="none").reshape(2, 3)
    torch.testing.assert_close(losskit.ps_kd(s, t, y, alpha=0.3, reduction="none"), flat)


def test_progressive_self_kd_index_check_obeys_validation():
    # was: a synchronising bool() check that ran even with validation off
    m = losskit.ProgressiveSelfKD(4, 3, total_epochs=2, dtype=torch.float64)
    z, y = torch.randn(2, 3, dtype=torch.float64), torch.tensor([0, 2])
    with pytest.raises(LossInputError, match="^index:"):
        m(z, y, index=torch.tensor([0, -1]))
    with losskit.validation(False):
        assert torch.isfinite(m(z, y, index=torch.tensor([0, -1])))  # -1: torch's last row, unchecked
