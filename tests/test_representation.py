"""Representation family: contrastive objectives against independent float64 references (explicit
per-anchor loops in numpy), the catalogue's identities and pytorch-metric-learning's values."""

import math

import numpy as np
import pytest
import torch
from helpers import randn64 as _rand
from helpers import unit_rows as _unit

import losskit
from losskit import LossInputError


def _lse(v):
    v = np.asarray(v, dtype=np.float64)
    m = v.max()
    return m + math.log(np.exp(v - m).sum())


# --------------------------------------------------------------------------- numpy references
def ref_info_nce(z1, z2, tau):
    a, b = _unit(z1), _unit(z2)
    n = len(a)
    out = []
    for i in range(n):
        s = [a[i] @ b[j] / tau for j in range(n)]
        out.append(-(s[i] - _lse(s)))
    return np.array(out)


def ref_supcon(x, labels, tau, mode="all"):
    """x: (M, D) rows, labels (M,); per-anchor losses and has-positive flags."""
    x = _unit(x)
    m = len(x)
    out, has = [], []
    for a in range(m):
        others = [k for k in range(m) if k != a]
        pos = [k for k in others if labels[k] == labels[a]]
        neg = [k for k in others if labels[k] != labels[a]]
        s = {k: x[a] @ x[k] / tau for k in others}
        if not pos:
            out.append(0.0)
            has.append(False)
            continue
        has.append(True)
        terms = []
        for p in pos:
            if mode == "all":
                den = _lse([s[k] for k in others])
            elif mode == "decoupled":
                den = _lse([s[p]] + [s[k] for k in neg])
            else:
                den = _lse([s[k] for k in neg])
            terms.append(-(s[p] - den))
        out.append(float(np.mean(terms)))
    return np.array(out), np.array(has)


def ref_nt_xent(z1, z2, tau):
    x = np.concatenate([z1, z2])
    n = len(z1)
    lab = np.concatenate([np.arange(n), np.arange(n)])
    loss, _ = ref_supcon(x, lab, tau)
    return loss.reshape(2, n).T  # (N, 2)


def ref_mv_infonce(views, tau):
    v = _unit(views)
    n, nv, _ = v.shape
    out = []
    for i in range(n):
        num = [v[i, l] @ v[i, m] / tau for l in range(nv) for m in range(nv) if l != m]
        den = [v[i, l] @ v[j, m] / tau for l in range(nv) for j in range(n) for m in range(nv) if (j, m) != (i, l)]
        out.append(-(_lse(num) - _lse(den)))
    return np.array(out)


def ref_mv_dhel(views, tau):
    v = _unit(views)
    n, nv, _ = v.shape
    out = []
    for i in range(n):
        align = _lse([v[i, l] @ v[i, m] / tau for l in range(nv) for m in range(l + 1, nv)])
        unif = sum(_lse([v[i, l] @ v[j, l] / tau for j in range(n) if j != i]) for l in range(nv))
        out.append(-align + unif)
    return np.array(out)


def ref_cwcl_direction(p, q, w, tau):
    a, b = _unit(p), _unit(q)
    n = len(a)
    out = []
    for i in range(n):
        s = [a[i] @ b[j] / tau for j in range(n)]
        lse = _lse(s)
        out.append(-sum(w[i, j] * (s[j] - lse) for j in range(n)) / sum(w[i]))
    return np.array(out)


# ---------------------------------------------------------------------------------- values
@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
def test_info_nce_matches_float64_loops(tau):
    z1, z2 = _rand(7, 5, seed=1), _rand(7, 5, seed=2)
    got = losskit.info_nce(z1, z2, temperature=tau, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref_info_nce(z1.numpy(), z2.numpy(), tau), rtol=1e-12, atol=1e-12)
    assert losskit.info_nce(z1, z2, temperature=tau).item() == pytest.approx(
        ref_info_nce(z1.numpy(), z2.numpy(), tau).mean(), abs=1e-12)


def test_info_nce_with_a_queue_of_negatives_matches_loops():
    z1, z2, queue = _rand(5, 4, seed=40), _rand(5, 4, seed=41), _rand(7, 4, seed=42)
    a, b, q = _unit(z1.numpy()), _unit(z2.numpy()), _unit(queue.numpy())
    ref = []
    for i in range(5):
        s = [a[i] @ b[j] / 0.2 for j in range(5)] + [a[i] @ k / 0.2 for k in q]
        ref.append(-(s[i] - _lse(s)))
    got = losskit.info_nce(z1, z2, temperature=0.2, negatives=queue, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    blocked = losskit.info_nce(z1, z2, temperature=0.2, negatives=queue, block_size=2, reduction="none")
    torch.testing.assert_close(blocked, got, rtol=1e-12, atol=1e-12)
    with pytest.raises(LossInputError, match="^negatives:"):
        losskit.info_nce(z1, z2, negatives=queue[:, :3])


def test_info_nce_equals_cross_entropy_of_cosine_logits():
    z1, z2 = _rand(6, 4, seed=3), _rand(6, 4, seed=4)
    logits = torch.nn.functional.normalize(z1, dim=1) @ torch.nn.functional.normalize(z2, dim=1).T / 0.2
    ref = torch.nn.functional.cross_entropy(logits, torch.arange(6))
    torch.testing.assert_close(losskit.info_nce(z1, z2, temperature=0.2), ref, rtol=1e-12, atol=1e-12)


def test_info_nce_known_value_by_hand():
    # two orthogonal unit pairs, tau = 1: each anchor sees e^1 against e^0 -> log(1 + e^-1)
    z = torch.eye(2, dtype=torch.float64)
    assert losskit.info_nce(z, z, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-14)
    assert math.log(1 + math.exp(-1)) == pytest.approx(0.313262, abs=1e-6)


def test_nt_xent_matches_float64_loops():
    z1, z2 = _rand(5, 4, seed=5), _rand(5, 4, seed=6)
    got = losskit.nt_xent(z1, z2, temperature=0.3, reduction="none")
    assert got.shape == (5, 2)
    np.testing.assert_allclose(got.numpy(), ref_nt_xent(z1.numpy(), z2.numpy(), 0.3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["all", "decoupled", "negatives"])
def test_supcon_matches_float64_loops(mode):
    x = _rand(9, 4, seed=7)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1])  # class 3 has one sample: no positive
    got = losskit.supcon(x, labels, temperature=0.2, denominator=mode, reduction="none")
    ref, has = ref_supcon(x.numpy(), labels.numpy(), 0.2, mode)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    mean = losskit.supcon(x, labels, temperature=0.2, denominator=mode)
    assert mean.item() == pytest.approx(ref[has].mean(), abs=1e-12)


def test_supcon_multiview_matches_loops():
    x = _rand(4, 3, 5, seed=8)
    labels = torch.tensor([0, 1, 0, 1])
    got = losskit.supcon(x, labels, temperature=0.1, reduction="none")
    flat = x.reshape(12, 5).numpy()
    ref, _ = ref_supcon(flat, np.repeat(labels.numpy(), 3), 0.1)
    np.testing.assert_allclose(got.numpy(), ref.reshape(4, 3), rtol=1e-12, atol=1e-12)


def test_clip_loss_matches_two_cross_entropies():
    a, b = _rand(6, 5, seed=9), _rand(6, 5, seed=10)
    s = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T / 0.07
    y = torch.arange(6)
    ref = (torch.nn.functional.cross_entropy(s, y) + torch.nn.functional.cross_entropy(s.T, y)) / 2
    torch.testing.assert_close(losskit.clip_loss(a, b), ref, rtol=1e-12, atol=1e-12)
    ls = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    torch.testing.assert_close(losskit.clip_loss(a, b, logit_scale=ls), ref, rtol=1e-12, atol=1e-12)


def test_cwcl_matches_loops_with_frozen_modality_weights():
    p, q = _rand(6, 4, seed=11), _rand(6, 4, seed=12)
    qn = _unit(q.numpy())
    w = (1 + qn @ qn.T) / 2
    one = ref_cwcl_direction(p.numpy(), q.numpy(), w, 0.1)
    other = ref_cwcl_direction(q.numpy(), p.numpy(), w, 0.1)
    got1 = losskit.cwcl(p, q, temperature=0.1, symmetric=False, reduction="none")
    got2 = losskit.cwcl(p, q, temperature=0.1, reduction="none")
    np.testing.assert_allclose(got1.numpy(), one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got2.numpy(), (one + other) / 2, rtol=1e-12, atol=1e-12)


def test_mv_infonce_and_mv_dhel_match_loops():
    v = _rand(5, 4, 3, seed=13)
    np.testing.assert_allclose(losskit.mv_infonce(v, temperature=0.2, reduction="none").numpy(),
                               ref_mv_infonce(v.numpy(), 0.2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(losskit.mv_dhel(v, temperature=0.2, reduction="none").numpy(),
                               ref_mv_dhel(v.numpy(), 0.2), rtol=1e-12, atol=1e-12)
    # a list of views is the same as the stacked tensor
    as_list = [v[:, i] for i in range(4)]
    torch.testing.assert_close(losskit.mv_infonce(as_list), losskit.mv_infonce(v))


def test_dcl_anchors_without_negatives_are_left_out_not_minus_inf():
    z1, z2 = _rand(4, 3, seed=43).requires_grad_(), _rand(4, 3, seed=44)
    lab = torch.tensor([0, 0, 0, 0])  # one class: no negatives anywhere
    loss = losskit.dcl(z1, z2, lab)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z1.grad, torch.zeros_like(z1))
    lab = torch.tensor([0, 0, 0, 1])
    none = losskit.dcl(z1, z2, lab, reduction="none")
    assert torch.isfinite(none).all()


def test_dcl_matches_loops():
    z1, z2 = _rand(5, 4, seed=14), _rand(5, 4, seed=15)
    x = np.concatenate([z1.numpy(), z2.numpy()])
    lab = np.concatenate([np.arange(5), np.arange(5)])
    ref, _ = ref_supcon(x, lab, 0.1, "negatives")
    got = losskit.dcl(z1, z2, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref.reshape(2, 5).T, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------- identities
def test_cwcl_with_identity_weights_is_info_nce_and_clip():
    p, q = _rand(7, 4, seed=16), _rand(7, 4, seed=17)
    eye = torch.eye(7, dtype=torch.float64)
    torch.testing.assert_close(losskit.cwcl(p, q, weights=eye, symmetric=False, temperature=0.1),
                               losskit.info_nce(p, q, temperature=0.1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.cwcl(p, q, weights=eye, temperature=0.1),
                               losskit.clip_loss(p, q, temperature=0.1), rtol=1e-12, atol=1e-12)


def test_decoupled_softmax_with_one_positive_is_info_nce():
    z1, z2 = _rand(6, 4, seed=18), _rand(6, 4, seed=19)
    x = torch.stack([z1, z2], 1)
    torch.testing.assert_close(losskit.supcon(x, temperature=0.3, denominator="decoupled", reduction="none"),
                               losskit.nt_xent(z1, z2, temperature=0.3, reduction="none"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.dcl(z1, z2, temperature=0.3, denominator="decoupled"),
                               losskit.nt_xent(z1, z2, temperature=0.3), rtol=1e-12, atol=1e-12)
    # ... and with several positives, decoupled differs from SupCon
    lab = torch.tensor([0, 0, 0, 1, 1, 1])
    assert abs(losskit.supcon(z1, lab, denominator="decoupled") - losskit.supcon(z1, lab)).item() > 1e-3


def test_mv_dhel_with_two_views_is_dhel():
    u, v = _rand(6, 4, seed=20), _rand(6, 4, seed=21)
    un, vn = _unit(u.numpy()), _unit(v.numpy())
    tau = 0.2
    # DHEL: alignment -<u_i, v_i>/tau, uniformity of each view against the other instances
    ref = [-(un[i] @ vn[i]) / tau + _lse([un[i] @ un[j] / tau for j in range(6) if j != i])
           + _lse([vn[i] @ vn[j] / tau for j in range(6) if j != i]) for i in range(6)]
    np.testing.assert_allclose(losskit.mv_dhel([u, v], temperature=tau, reduction="none").numpy(), ref,
                               rtol=1e-12, atol=1e-12)


def test_mv_infonce_with_two_views_is_not_nt_xent():
    u, v = _rand(6, 4, seed=22), _rand(6, 4, seed=23)
    a = losskit.mv_infonce([u, v], temperature=0.2)
    b = losskit.nt_xent(u, v, temperature=0.2)
    assert abs(a - b).item() > 1e-3
    # exact relation for V = 2: the pooled numerator is 2 e^{s_i}; pooled denominator sums both rows
    un, vn = _unit(u.numpy()), _unit(v.numpy())
    x = np.concatenate([un, vn])
    ref = []
    for i in range(6):
        rows = [i, 6 + i]
        den = _lse([x[r] @ x[k] / 0.2 for r in rows for k in range(12) if k != r])
        ref.append(-(math.log(2) + un[i] @ vn[i] / 0.2 - den))
    assert a.item() == pytest.approx(np.mean(ref), abs=1e-12)


# ----------------------------------------------------------------- pytorch-metric-learning
pml = pytest.importorskip("pytorch_metric_learning.losses")


def test_nt_xent_matches_pml():
    # mapping: PML NTXentLoss(temperature) on cat([z1, z2]) with labels cat([arange N, arange N]);
    # cosine similarity both sides; PML averages over positive pairs = our mean over 2N anchors.
    z1, z2 = _rand(8, 6, seed=24), _rand(8, 6, seed=25)
    lab = torch.cat([torch.arange(8), torch.arange(8)])
    ref = pml.NTXentLoss(temperature=0.2)(torch.cat([z1, z2]), lab)
    assert losskit.nt_xent(z1, z2, temperature=0.2).item() == pytest.approx(ref.item(), abs=1e-10)


def test_supcon_decoupled_matches_pml_ntxent_with_labels():
    # PML NTXentLoss with several positives: each positive pair's denominator is that positive plus
    # the negatives, averaged over positive pairs; ours averages per anchor first, so compare with
    # classes of equal size (every anchor has the same number of positives).
    x = _rand(9, 5, seed=26)
    lab = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    ref = pml.NTXentLoss(temperature=0.3)(x, lab)
    assert losskit.supcon(x, lab, temperature=0.3, denominator="decoupled").item() == pytest.approx(
        ref.item(), abs=1e-10)


def test_supcon_matches_pml():
    # mapping: PML SupConLoss(temperature) with cosine similarity; its AvgNonZeroReducer averages the
    # anchors with a positive (their losses are > 0), our mean leaves out anchors without positives.
    x = _rand(10, 5, seed=27)
    lab = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 1])
    ref = pml.SupConLoss(temperature=0.15)(x, lab)
    assert losskit.supcon(x, lab, temperature=0.15).item() == pytest.approx(ref.item(), abs=1e-10)


# ------------------------------------------------------------------------ gradients, blocks
@pytest.mark.parametrize("name", ["info_nce", "nt_xent", "clip_loss", "cwcl", "dcl"])
def test_blocked_equals_dense_value_and_gradient(name):
    fn = getattr(losskit, name)
    z1, z2 = _rand(11, 4, seed=28).requires_grad_(), _rand(11, 4, seed=29).requires_grad_()
    dense = fn(z1, z2)
    g_dense = torch.autograd.grad(dense, (z1,) if name == "cwcl" else (z1, z2))
    blocked = fn(z1, z2, block_size=3)
    g_blocked = torch.autograd.grad(blocked, (z1,) if name == "cwcl" else (z1, z2))
    torch.testing.assert_close(blocked, dense, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_blocked, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["supcon", "mv_infonce", "mv_dhel"])
def test_blocked_equals_dense_grouped(name):
    fn = getattr(losskit, name)
    x = _rand(7, 3, 4, seed=30).requires_grad_()
    args = (x, torch.tensor([0, 1, 0, 1, 2, 2, 0])) if name == "supcon" else (x,)
    dense = fn(*args)
    (gd,) = torch.autograd.grad(dense, x)
    blocked = fn(*args, block_size=4)
    (gb,) = torch.autograd.grad(blocked, x)
    torch.testing.assert_close(blocked, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, gd, rtol=1e-12, atol=1e-12)


def test_learnable_temperature_gets_a_gradient():
    z1, z2 = _rand(6, 4, seed=31), _rand(6, 4, seed=32)
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    losskit.info_nce(z1, z2, temperature=tau).backward()
    assert tau.grad is not None and torch.isfinite(tau.grad)
    # d/dtau by finite differences
    f = lambda t: losskit.info_nce(z1, z2, temperature=t).item()  # noqa: E731
    fd = (f(0.2 + 1e-6) - f(0.2 - 1e-6)) / 2e-6
    assert tau.grad.item() == pytest.approx(fd, rel=1e-5)


def test_bad_arguments_name_themselves():
    z = _rand(4, 3)
    with pytest.raises(LossInputError, match="^denominator:"):
        losskit.supcon(z, torch.tensor([0, 0, 1, 1]), denominator="bogus")
    with pytest.raises(LossInputError, match="^labels:"):
        losskit.supcon(z)
    with pytest.raises(LossInputError, match="^views:"):
        losskit.mv_dhel([z])
    with pytest.raises(LossInputError, match=r"^views\[1\]:"):
        losskit.mv_infonce([z, z[:3]])
    with pytest.raises(LossInputError, match="^weights:"):
        losskit.cwcl(z, z, weights=torch.eye(3, dtype=torch.float64))
    with pytest.raises(LossInputError, match="^temperature:"):
        losskit.info_nce(z, z, temperature=torch.tensor([0.1, 0.2], dtype=torch.float64))


def test_modules_exported():
    m = losskit.SupConLoss(temperature=0.2)
    x, y = _rand(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(m(x, y), losskit.supcon(x, y, temperature=0.2))


# ------------------------------------------------------- batch-coupled: permutation equivariance
# inputs whose first dimension is not the batch, which the generic permutation cannot permute:
# mixed_barlow_twins' perm indexes the batch; amcl's pair temperatures (C, 2N, 2N) and amcl_barlow_twins'
# channel-pair temperatures (C, D, D) lead with the head dimension C
NOT_BATCH_FIRST = {"mixed_barlow_twins", "amcl", "amcl_barlow_twins"}
BATCH_COUPLED = [e for e in losskit.objectives("representation")
                 if not e.per_sample and e.name not in NOT_BATCH_FIRST]


@pytest.mark.parametrize("entry", BATCH_COUPLED, ids=lambda e: e.name)
def test_batch_coupled_losses_are_permutation_equivariant(entry):
    # the conformance batch-split check does not apply to batch-coupled objectives; permuting the
    # batch must still permute the per-anchor losses (and leave batch-level values unchanged)
    ex = entry.make_example(torch.float64)
    n = ex.batch_size()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    whole = ex.call(entry.fn, reduction="none")
    permuted = ex.select(perm).call(entry.fn, reduction="none")
    expected = whole[perm] if whole.dim() else whole
    torch.testing.assert_close(permuted, expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ edges: domains, validation mode, dtypes
@pytest.mark.parametrize("name,option,value", [
    ("info_nce", "temperature", 0.0),
    ("info_nce", "temperature", -0.1),
    ("info_nce", "block_size", 0),
    ("nt_xent", "normalize", "yes"),
    ("dcl", "denominator", "all"),
    ("clip_loss", "logit_scale", float("nan")),
])
def test_contrastive_options_outside_their_domain_raise(name, option, value):
    z1, z2 = _rand(5, 3, seed=40), _rand(5, 3, seed=41)
    with pytest.raises(LossInputError, match=f"^{option}:"):
        getattr(losskit, name)(z1, z2, **{option: value})


def test_tensor_temperature_check_follows_the_validation_mode():
    # the old check ran bool((tau > 0).all()) on every call, whatever set_validation said
    z1, z2 = _rand(5, 3, seed=42), _rand(5, 3, seed=43)
    bad = torch.tensor(-0.2, dtype=torch.float64)
    with pytest.raises(LossInputError, match="^temperature:"):
        losskit.info_nce(z1, z2, temperature=bad)
    with losskit.validation(False):
        losskit.info_nce(z1, z2, temperature=bad)  # no check, no raise (and no host sync)


def test_tensor_temperature_on_meta_tensors():
    z1, z2 = _rand(5, 3, seed=44).to("meta"), _rand(5, 3, seed=45).to("meta")
    out = losskit.clip_loss(z1, z2, temperature=torch.tensor(0.1, dtype=torch.float64, device="meta"))
    assert out.is_meta and out.shape == ()


def test_cwcl_negative_weights_are_refused():
    z = _rand(4, 3, seed=46)
    w = torch.eye(4, dtype=torch.float64)
    w[0, 1] = -0.5
    with pytest.raises(LossInputError, match="^weights:"):
        losskit.cwcl(z, z, weights=w)


def test_mixed_float_dtypes_and_tensor_options_are_promoted():
    z1, z2 = _rand(6, 4, seed=47), _rand(6, 4, seed=48)
    for name in ("clip_loss", "info_nce", "nt_xent"):
        fn = getattr(losskit, name)
        got = fn(z1.float(), z2, temperature=torch.tensor(0.2))  # float32 input and temperature beside float64
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, fn(z1.float().double(), z2, temperature=0.2), rtol=1e-6, atol=1e-7)
    got = losskit.clip_loss(z1, z2.float(), logit_scale=torch.tensor(math.log(5.0)))
    torch.testing.assert_close(got, losskit.clip_loss(z1, z2.float().double(), temperature=0.2), rtol=1e-6, atol=1e-7)
    q = _rand(3, 4, seed=49)
    got = losskit.info_nce(z1, z2, negatives=q.float())
    torch.testing.assert_close(got, losskit.info_nce(z1, z2, negatives=q.float().double()), rtol=1e-12, atol=1e-12)


def test_clip_logit_scale_extremes_do_not_overflow():
    z1, z2 = _rand(4, 3, seed=50), _rand(4, 3, seed=51)
    assert torch.isfinite(losskit.clip_loss(z1, z2, logit_scale=-1000.0))  # math.exp(1000) used to overflow
