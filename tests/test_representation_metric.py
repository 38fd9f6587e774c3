"""Barlow Twins, VICReg, mixed Barlow Twins, triplet / contrastive margin, TCM and proto-triplet
against independent float64 computations (numpy loops) and pytorch-metric-learning."""

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import randn64 as _rand

import losskit
from losskit import LossInputError


def _std(z, eps, unbiased=False):
    z = np.asarray(z, dtype=np.float64)
    mu = z.mean(0)
    var = z.var(0, ddof=1 if unbiased else 0)
    return (z - mu) / np.sqrt(var + eps)


# ------------------------------------------------------------------------------- Barlow Twins
def ref_barlow(z1, z2, lambd, eps=1e-5, unbiased=False):
    a, b = _std(z1, eps, unbiased), _std(z2, eps, unbiased)
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else lambd * c * c
    return total


def test_barlow_twins_matches_loops():
    z1, z2 = _rand(9, 5, seed=1), _rand(9, 5, seed=2)
    for lambd in (5e-3, 0.5):
        got = losskit.barlow_twins(z1, z2, lambd=lambd)
        assert got.item() == pytest.approx(ref_barlow(z1.numpy(), z2.numpy(), lambd), abs=1e-12)
    # every reduction is the one batch value
    assert losskit.barlow_twins(z1, z2, reduction="none").dim() == 0


def test_barlow_twins_lightly_convention_mapping():
    # lightly standardises with the unbiased std and no eps: z~ = (z - mu) / std_unbiased. Its C is
    # then sqrt((N-1)/N)^2 = (N-1)/N times ours (eps -> 0); check that relation on an independent loop.
    z1, z2 = _rand(6, 3, seed=3), _rand(6, 3, seed=4)
    n = 6
    a = (z1.numpy() - z1.numpy().mean(0)) / z1.numpy().std(0, ddof=1)
    b = (z2.numpy() - z2.numpy().mean(0)) / z2.numpy().std(0, ddof=1)
    c_lightly = a.T @ b / n
    ours = losskit.representation.redundancy.cross_correlation(z1, z2, eps=0.0).numpy()
    np.testing.assert_allclose(c_lightly, ours * (n - 1) / n, rtol=1e-12)
    # ... and barlow_twins(unbiased=True, eps=0) is lightly's loss on that C
    lam = 5e-3
    lightly = ((1 - np.diag(c_lightly)) ** 2).sum() + lam * ((c_lightly ** 2).sum() - (np.diag(c_lightly) ** 2).sum())
    assert losskit.barlow_twins(z1, z2, unbiased=True, eps=0.0).item() == pytest.approx(lightly, abs=1e-12)


def test_barlow_twins_perfect_twins_is_off_diagonal_only():
    # identical, decorrelated, standardised branches: C = I, so the loss is 0
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert losskit.barlow_twins(z, z, eps=0.0).item() == pytest.approx(0.0, abs=1e-14)


# ------------------------------------------------------------------------------------- VICReg
def ref_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).sum() / (n * d)

    def var(z):
        return np.mean([max(0.0, gamma - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)])

    def cov(z):
        zc = z - z.mean(0)
        c = zc.T @ zc / (n - 1)
        return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return lam * inv + mu * (var(z1) + var(z2)) / 2 + nu * (cov(z1) + cov(z2))


def test_vicreg_matches_loops():
    z1, z2 = 0.5 * _rand(10, 4, seed=5), 0.5 * _rand(10, 4, seed=6)  # std < 1: variance hinge active
    assert losskit.vicreg(z1, z2).item() == pytest.approx(ref_vicreg(z1.numpy(), z2.numpy()), abs=1e-12)
    got = losskit.vicreg(z1, z2, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0, gamma=0.7)
    ref = ref_vicreg(z1.numpy(), z2.numpy(), 1.0, 2.0, 3.0, 0.7)
    assert got.item() == pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------- mixed BT
def test_mixed_barlow_twins_matches_loops_and_vanishes_for_linear_features():
    n, d = 8, 3
    z1, z2 = _rand(n, d, seed=7), _rand(n, d, seed=8)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    alpha, lambd, s = 0.3, 1 / 128, 4.0
    zm = _rand(n, d, seed=9)
    # the official code's standardisation: unbiased std, no eps
    a, b, m = (_std(x.numpy(), 0.0, unbiased=True) for x in (z1, z2, zm))
    bp = b[perm.numpy()]

    def cc(x, y):
        return np.array([[sum(x[k, i] * y[k, j] for k in range(n)) / n for j in range(d)] for i in range(d)])

    reg = ((cc(m, a) - alpha * cc(a, a) - (1 - alpha) * cc(bp, a)) ** 2).sum() \
        + ((cc(m, b) - alpha * cc(a, b) - (1 - alpha) * cc(bp, b)) ** 2).sum()
    ref = ref_barlow(z1.numpy(), z2.numpy(), lambd, 0.0, unbiased=True) + s * lambd * reg
    got = losskit.mixed_barlow_twins(z1, z2, zm, perm, alpha=alpha)
    assert got.item() == pytest.approx(ref, abs=1e-12)
    # alpha = 1 and z_mix = z1: the mixed features are exactly the linear mix, the regulariser is 0
    torch.testing.assert_close(losskit.mixed_barlow_twins(z1, z2, z1, perm, alpha=1.0, eps=1e-5, unbiased=False),
                               losskit.barlow_twins(z1, z2, lambd=lambd), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- triplet / margin
def ref_triplet(x, labels, margin, dist, mining="all"):
    n = len(x)
    out, has = [], []
    for a in range(n):
        P = [p for p in range(n) if p != a and labels[p] == labels[a]]
        N = [k for k in range(n) if labels[k] != labels[a]]
        if not P or not N:
            out.append(0.0)
            has.append(False)
            continue
        has.append(True)
        if mining == "all":
            out.append(np.mean([max(0.0, dist(x[a], x[p]) - dist(x[a], x[k]) + margin)
                                for p, k in itertools.product(P, N)]))
        else:
            out.append(max(0.0, max(dist(x[a], x[p]) for p in P) - min(dist(x[a], x[k]) for k in N) + margin))
    return np.array(out), np.array(has)


EUC = lambda u, v: float(np.sqrt(((u - v) ** 2).sum()))  # noqa: E731
COS = lambda u, v: 1 - float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731


@pytest.mark.parametrize("mining", ["all", "batch_hard"])
@pytest.mark.parametrize(("distance", "ref_d"), [("euclidean", EUC), ("cosine", COS)])
def test_triplet_margin_matches_loops(mining, distance, ref_d):
    x = _rand(9, 4, seed=10)
    lab = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1])
    got = losskit.triplet_margin(x, lab, margin=0.5, distance=distance, mining=mining, reduction="none")
    ref, has = ref_triplet(x.numpy(), lab.numpy(), 0.5, ref_d, mining)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    mean = losskit.triplet_margin(x, lab, margin=0.5, distance=distance, mining=mining)
    assert mean.item() == pytest.approx(ref[has].mean(), abs=1e-12)


def test_triplet_margin_callable_distance():
    x = _rand(6, 3, seed=11)
    lab = torch.tensor([0, 0, 1, 1, 2, 2])
    l1 = lambda a, b: (a.unsqueeze(1) - b.unsqueeze(0)).abs().sum(-1)  # noqa: E731
    ref, _ = ref_triplet(x.numpy(), lab.numpy(), 0.3, lambda u, v: float(np.abs(u - v).sum()))
    np.testing.assert_allclose(losskit.triplet_margin(x, lab, margin=0.3, distance=l1, reduction="none").numpy(),
                               ref, rtol=1e-12)


def test_contrastive_margin_matches_loops():
    x = _rand(7, 3, seed=12)
    lab = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    got = losskit.contrastive_margin(x, lab, pos_margin=0.2, neg_margin=1.5, power=2.0, reduction="none")
    ref = []
    xn = x.numpy()
    for a in range(7):
        P = [max(0.0, EUC(xn[a], xn[p]) - 0.2) ** 2 for p in range(7) if p != a and lab[p] == lab[a]]
        N = [max(0.0, 1.5 - EUC(xn[a], xn[k])) ** 2 for k in range(7) if lab[k] != lab[a]]
        ref.append((np.mean(P) if P else 0.0) + (np.mean(N) if N else 0.0))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------- TCM
def ref_tcm(x, labels, lp=1.0, lm=1.0, mp=0.9, mm=0.5):
    n = len(x)
    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            s = 1 - COS(x[i], x[j])
            (pos if labels[i] == labels[j] else neg).append(s)
    hp = [mp - s for s in pos if s <= mp]
    hn = [s - mm for s in neg if s >= mm]
    return lp * (np.mean(hp) if hp else 0.0) + lm * (np.mean(hn) if hn else 0.0)


def test_tcm_matches_loops():
    x = _rand(10, 3, seed=13)
    lab = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 1])
    assert losskit.tcm(x, lab).item() == pytest.approx(ref_tcm(x.numpy(), lab.numpy()), abs=1e-12)
    got = losskit.tcm(x, lab, lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.7, margin_minus=0.1)
    assert got.item() == pytest.approx(ref_tcm(x.numpy(), lab.numpy(), 0.5, 2.0, 0.7, 0.1), abs=1e-12)


pml = pytest.importorskip("pytorch_metric_learning.losses")
reducers = pytest.importorskip("pytorch_metric_learning.reducers")


def test_tcm_matches_pml():
    # mapping: PML ThresholdConsistentMarginLoss (same defaults: lambda+- = 1, m+ = 0.9, m- = 0.5,
    # cosine similarity, all ordered pairs i != j)
    x = _rand(12, 4, seed=14)
    lab = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 1, 3, 0])
    ref = pml.ThresholdConsistentMarginLoss()(x, lab)
    assert losskit.tcm(x, lab).item() == pytest.approx(ref.item(), abs=1e-10)


def test_triplet_matches_pml_mean_reducer():
    # mapping: PML TripletMarginLoss(margin, reducer=MeanReducer()) averages over all triplets with its
    # default distance (L2 of normalised embeddings); with classes of equal size every anchor has as
    # many triplets, so that is our mean of per-anchor means with normalize=True.
    x = _rand(9, 4, seed=15)
    lab = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    ref = pml.TripletMarginLoss(margin=0.3, reducer=reducers.MeanReducer())(x, lab)
    got = losskit.triplet_margin(x, lab, margin=0.3, normalize=True)
    assert got.item() == pytest.approx(ref.item(), abs=1e-10)


# ---------------------------------------------------------------------------------- proto-triplet
def test_proto_triplet_matches_loops():
    g = torch.Generator().manual_seed(16)
    support = torch.randn(6, 3, generator=g, dtype=torch.float64)
    s_lab = torch.tensor([5, 5, 7, 7, 9, 9])  # arbitrary class ids
    query = torch.randn(5, 3, generator=g, dtype=torch.float64)
    q_lab = torch.tensor([7, 5, 9, 9, 5])
    got = losskit.proto_triplet(query, q_lab, support, s_lab, margin=0.5, reduction="none")
    sn, qn = support.numpy(), query.numpy()
    protos = {c: sn[s_lab.numpy() == c].mean(0) for c in (5, 7, 9)}
    ref = []
    for q, y in zip(qn, q_lab.numpy()):
        dpos = EUC(q, protos[y])
        dneg = min(EUC(q, protos[c]) for c in protos if c != y)
        ref.append(max(0.0, dpos - dneg + 0.5))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_metric_bad_arguments():
    x = _rand(4, 3)
    with pytest.raises(LossInputError, match="^mining:"):
        losskit.triplet_margin(x, torch.tensor([0, 0, 1, 1]), mining="semi")
    with pytest.raises(LossInputError, match="^distance:"):
        losskit.triplet_margin(x, torch.tensor([0, 0, 1, 1]), distance="manhattan")
    with pytest.raises(LossInputError, match="^query_labels:"):
        losskit.proto_triplet(x, torch.tensor([0, 0, 1, 3]), x, torch.tensor([0, 0, 1, 1]))


# ------------------------------------------------------------------------------ multi-similarity
def ref_multi_similarity(x, labels, alpha, beta, base):
    n = len(x)
    out = []
    for a in range(n):
        sp = [1 - COS(x[a], x[p]) for p in range(n) if p != a and labels[p] == labels[a]]
        sn = [1 - COS(x[a], x[k]) for k in range(n) if labels[k] != labels[a]]
        out.append(math.log1p(sum(math.exp(-alpha * (s - base)) for s in sp)) / alpha
                   + math.log1p(sum(math.exp(beta * (s - base)) for s in sn)) / beta)
    return np.array(out)


def test_multi_similarity_matches_loops_and_pml():
    x = _rand(10, 4, seed=17)
    lab = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 1, 1])
    got = losskit.multi_similarity(x, lab, miner=None, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref_multi_similarity(x.numpy(), lab.numpy(), 2.0, 50.0, 0.5),
                               rtol=1e-12, atol=1e-12)
    # mapping: PML MultiSimilarityLoss(alpha, beta, base), cosine similarity, mean over all anchors
    ref = pml.MultiSimilarityLoss(alpha=3.0, beta=20.0, base=0.2)(x, lab)
    got = losskit.multi_similarity(x, lab, alpha=3.0, beta=20.0, base=0.2, miner=None)
    assert got.item() == pytest.approx(ref.item(), abs=1e-10)


def test_triplet_all_mining_sorted_form_equals_brute_force_value_and_gradient():
    # triplet_margin never builds the N x M x M triplet tensor; compare with it on a larger batch
    g = torch.Generator().manual_seed(18)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 5, (40,), generator=g)
    got = losskit.triplet_margin(x, lab, margin=0.7, reduction="none")
    (g_got,) = torch.autograd.grad(got.sum(), x)
    d = torch.cdist(x, x)
    same = lab[:, None] == lab[None]
    pos = same & ~torch.eye(40, dtype=torch.bool)
    h = torch.relu(d[:, :, None] - d[:, None, :] + 0.7)
    mask = pos[:, :, None] & (~same)[:, None, :]
    ref = (h * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------- edges (trust at the edges)
@pytest.mark.parametrize("name,option,value", [
    ("multi_similarity", "beta", -50.0),
    ("multi_similarity", "alpha", 0.0),
    ("multi_similarity", "base", 1.5),
    ("triplet_margin", "margin", -0.1),
    ("triplet_margin", "mining", "semi_hard"),
    ("triplet_margin", "distance", "manhattan"),
    ("contrastive_margin", "power", 0.5),
    ("tcm", "margin_plus", 2.0),
    ("tcm", "lambda_minus", -1.0),
])
def test_metric_options_outside_their_domain_raise(name, option, value):
    x, lab = _rand(6, 3, seed=60), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(LossInputError, match=f"^{option}:"):
        getattr(losskit, name)(x, lab, **{option: value})


@pytest.mark.parametrize("name,option,value", [
    ("barlow_twins", "lambd", -1.0), ("vicreg", "gamma", 0.0), ("vicreg", "eps", 0.0),
    ("vicreg", "std_coeff", -1.0), ("mixed_barlow_twins", "alpha", 1.5), ("mixed_barlow_twins", "scale", -1.0),
])
def test_redundancy_options_outside_their_domain_raise(name, option, value):
    z1, z2 = _rand(6, 3, seed=61), _rand(6, 3, seed=62)
    args = (z1, z2, z1, torch.arange(6)) if name == "mixed_barlow_twins" else (z1, z2)
    opts = {"alpha": 0.5} if name == "mixed_barlow_twins" else {}
    with pytest.raises(LossInputError, match=f"^{option}:"):
        getattr(losskit, name)(*args, **{**opts, option: value})


def test_huge_embeddings_raise_instead_of_nan():
    # float32 embeddings of magnitude 1e30: squared distances / covariances overflow; these gave NaN
    x = _rand(6, 3, seed=63).float() * 1e30
    lab = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(LossInputError, match="^embeddings: .*squared distances"):
        losskit.triplet_margin(x, lab)
    with pytest.raises(LossInputError, match="^embeddings:"):
        losskit.triplet_margin(x, lab, mining="batch_hard", distance="squared_euclidean")
    with pytest.raises(LossInputError, match="^query:"):
        losskit.proto_triplet(x, lab, _rand(6, 3, seed=64).float(), lab)
    with pytest.raises(LossInputError, match="^support:"):
        losskit.proto_triplet(_rand(6, 3, seed=64).float(), lab, x, lab)
    with pytest.raises(LossInputError, match="^z1:"):
        losskit.vicreg(x, _rand(6, 3, seed=65).float())
    with pytest.raises(LossInputError, match="^z2:"):
        losskit.vicreg(_rand(6, 3, seed=65).float(), x)
    # cosine distances are scale-free: no error, a finite loss
    assert torch.isfinite(losskit.triplet_margin(x, lab, distance="cosine"))


def test_mixed_barlow_twins_collapsed_embeddings_are_defined():
    # every sample identical (zero variance, eps = 0 by default): standardised features are 0, not 0/0 = NaN
    n, d = 7, 3
    z = torch.full((n, d), 0.3, dtype=torch.float32).requires_grad_()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    loss = losskit.mixed_barlow_twins(z, z, z, perm, alpha=0.4)
    assert loss.item() == pytest.approx(d)  # C = 0: the Barlow Twins term is sum_i (1 - 0)^2, the regulariser 0
    loss.backward()
    assert torch.isfinite(z.grad).all()
    # one collapsed feature beside healthy ones: finite, and barlow_twins(eps=0) likewise
    z1, z2 = _rand(8, 3, seed=66), _rand(8, 3, seed=67)
    z1[:, 1] = 2.0
    assert torch.isfinite(losskit.barlow_twins(z1, z2, eps=0.0))
    assert torch.isfinite(losskit.mixed_barlow_twins(z1, z2, z1, torch.arange(8), alpha=1.0))


# meta tensors: the conformance suite's `meta` check runs every objective on meta inputs


def test_proto_triplet_label_checks_follow_the_validation_mode():
    q, s = _rand(4, 3, seed=68), _rand(4, 3, seed=69)
    ql, sl = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    with pytest.raises(LossInputError, match="^query_labels:"):
        losskit.proto_triplet(q, ql + 5, s, sl)
    with pytest.raises(LossInputError, match="^support_labels:"):
        losskit.proto_triplet(q, ql * 0, s, sl * 0)
    with losskit.validation(False):
        assert torch.isfinite(losskit.proto_triplet(q, ql * 0, s, sl * 0))  # no second class: all hinges inactive


def test_euclidean_distance_zero_diagonal_and_finite_gradient():
    from losskit.representation.core import distance_matrix

    x = _rand(5, 3, seed=70)
    x = torch.cat([x, x[:1]]).requires_grad_()  # rows 0 and 5 coincide
    d = distance_matrix(x, x, "euclidean")
    assert (torch.diagonal(d) == 0).all() and d[0, 5] == 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg", "mixed_barlow_twins"])
def test_redundancy_mixed_float_dtypes_are_promoted(name):
    z1, z2 = _rand(6, 3, seed=71), _rand(6, 3, seed=72)
    extra = (z1 + z2, torch.arange(6)) if name == "mixed_barlow_twins" else ()
    opts = {"alpha": 0.5} if name == "mixed_barlow_twins" else {}
    fn = getattr(losskit, name)
    got = fn(z1.float(), z2, *extra, **opts)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, fn(z1.float().double(), z2, *extra, **opts), rtol=1e-10, atol=1e-12)
