"""Metric-learning objectives and reducers against pytorch-metric-learning 2.9.0 (the peer's own value,
float64, 1e-6 or tighter), and self-supervised objectives against the papers' reference code (ported
below, with citations) or closed forms."""


import math

import pytest
import torch
from helpers import randn64

import losskit
from losskit import LossInputError

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import losses as L  # noqa: E402
from pytorch_metric_learning import miners as M  # noqa: E402
from pytorch_metric_learning import reducers as R  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-10)


def _batch(seed, n=12, d=5, k=3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return randn64(n, d, seed=seed, scale=scale), torch.randint(0, k, (n,), generator=g)


def _close(a, b, **tol):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               **(tol or TOL))


def _grads(f_ours, f_peer, x):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    f_ours(x1).backward()
    f_peer(x2).backward()
    _close(x1.grad, x2.grad)


# ---------------------------------------------------------------------------------------- reducers
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
def test_triplet_nonzero_reducer_is_pml_default(seed, margin):
    x, y = _batch(seed)
    ours = losskit.triplet_margin(x, y, margin=margin, normalize=True, reducer="nonzero")
    _close(ours, L.TripletMarginLoss(margin=margin)(x, y))
    _grads(lambda e: losskit.triplet_margin(e, y, margin=margin, normalize=True, reducer="nonzero"),
           lambda e: L.TripletMarginLoss(margin=margin)(e, y), x)


@pytest.mark.parametrize("seed", range(3))
def test_triplet_mean_reducer_and_batch_hard(seed):
    x, y = _batch(seed)
    _close(losskit.triplet_margin(x, y, margin=0.3, normalize=True, reducer="mean"),
           L.TripletMarginLoss(margin=0.3, reducer=R.MeanReducer())(x, y))
    # batch-hard mining: PML's BatchHardMiner (one triplet per anchor) + its default reducer
    peer = L.TripletMarginLoss(margin=0.3)(x, y, M.BatchHardMiner()(x, y))
    _close(losskit.triplet_margin(x, y, margin=0.3, normalize=True, mining="batch_hard", reducer="nonzero"), peer)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("mp", "mn"), [(0.0, 1.0), (0.3, 0.8), (0.0, 0.2)])
def test_contrastive_nonzero_reducer_is_pml_default(seed, mp, mn):
    x, y = _batch(seed)
    ours = losskit.contrastive_margin(x, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True, reducer="nonzero")
    _close(ours, L.ContrastiveLoss(pos_margin=mp, neg_margin=mn)(x, y))
    _close(losskit.contrastive_margin(x, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True, reducer="mean"),
           L.ContrastiveLoss(pos_margin=mp, neg_margin=mn, reducer=R.MeanReducer())(x, y))
    _grads(lambda e: losskit.contrastive_margin(e, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True,
                                                reducer="nonzero"),
           lambda e: L.ContrastiveLoss(pos_margin=mp, neg_margin=mn)(e, y), x)


THRESHOLDS = [(0.0, None), (None, 0.3), (0.05, 0.4), (-1.0, 0.2), (0.5, 0.1), (None, 0.0), (0.1, None)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("low", "high"), THRESHOLDS)
def test_threshold_reducer_matches_pml(seed, low, high):
    from losskit.representation.metric import ThresholdReducer

    x, y = _batch(seed)
    ours = ThresholdReducer(low=low, high=high)

    def peer():
        return R.ThresholdReducer(low=low, high=high)

    _close(losskit.triplet_margin(x, y, margin=0.3, normalize=True, reducer=ours),
           L.TripletMarginLoss(margin=0.3, reducer=peer())(x, y))
    _close(losskit.contrastive_margin(x, y, power=1, normalize=True, pos_margin=0.2, neg_margin=0.9, reducer=ours),
           L.ContrastiveLoss(pos_margin=0.2, neg_margin=0.9, reducer=peer())(x, y))
    _close(losskit.lifted_structure(x, y, normalize=True, reducer=ours), L.LiftedStructureLoss(reducer=peer())(x, y))
    _grads(lambda e: losskit.triplet_margin(e, y, margin=0.3, normalize=True, reducer=ours),
           lambda e: L.TripletMarginLoss(margin=0.3, reducer=peer())(e, y), x)


@pytest.mark.parametrize("seed", range(3))
def test_per_anchor_reducer_is_the_default(seed):
    # PML's PerAnchorReducer (pair losses; it refuses triplets): each anchor's mean over its pairs, then the mean
    # over every anchor (0 for an anchor without pairs) -- contrastive_margin's default reducer=None
    x, y = _batch(seed)
    y[0] = 7  # an anchor without a positive
    _close(losskit.contrastive_margin(x, y, power=1, normalize=True),
           L.ContrastiveLoss(reducer=R.PerAnchorReducer())(x, y))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["hard", "semihard"])
@pytest.mark.parametrize(("margin", "mm"), [(0.2, None), (0.3, 0.1), (0.1, 0.5)])
def test_triplet_mining_matches_pml_miner(seed, kind, margin, mm):
    from losskit.representation.metric import ThresholdReducer

    x, y = _batch(seed)
    miner = M.TripletMarginMiner(margin=margin if mm is None else mm, type_of_triplets=kind)
    for ours, peer in (("nonzero", R.AvgNonZeroReducer()), ("mean", R.MeanReducer()),
                       (ThresholdReducer(0.05, 0.3), R.ThresholdReducer(0.05, 0.3))):
        _close(losskit.triplet_margin(x, y, margin=margin, mining=kind, mining_margin=mm, normalize=True, reducer=ours),
               L.TripletMarginLoss(margin=margin, reducer=peer)(x, y, miner(x, y)))
    _grads(lambda e: losskit.triplet_margin(e, y, margin=margin, mining=kind, mining_margin=mm, normalize=True,
                                            reducer="nonzero"),
           lambda e: L.TripletMarginLoss(margin=margin)(e, y, miner(e, y)), x)
    # per-anchor means over each anchor's mined triplets (a loop), anchors without one left out
    xn = torch.nn.functional.normalize(x, dim=1)
    d = torch.cdist(xn, xn)
    m2 = margin if mm is None else mm
    per, has = [], []
    for a in range(12):
        terms = [torch.relu(d[a, p] - d[a, n] + margin) for p in range(12) for n in range(12)
                 if p != a and y[p] == y[a] and y[n] != y[a]
                 and ((d[a, n] <= d[a, p]) if kind == "hard" else (d[a, p] < d[a, n] <= d[a, p] + m2))]
        per.append(sum(terms) / len(terms) if terms else torch.tensor(0.0, dtype=torch.float64))
        has.append(bool(terms))
    _close(losskit.triplet_margin(x, y, margin=margin, mining=kind, mining_margin=mm, normalize=True, reduction="none"),
           torch.stack(per))
    _close(losskit.triplet_margin(x, y, margin=margin, mining=kind, mining_margin=mm, normalize=True),
           torch.stack(per)[torch.tensor(has)].mean())


def test_reducer_edges():
    x, y = _batch(0)
    # every hinge inactive: the nonzero mean of nothing is 0 (PML's zero loss)
    big = losskit.triplet_margin(x, torch.zeros_like(y), normalize=True, reducer="nonzero")
    assert big.item() == 0.0  # a single class: no triplet at all
    _close(big, L.TripletMarginLoss()(x, torch.zeros_like(y)))
    # the reducer is one value for the batch: other reductions / sample weights refuse it
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.triplet_margin(x, y, reducer="nonzero", reduction="none")
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.contrastive_margin(x, y, reducer="mean", sample_weight=torch.ones(12, dtype=torch.float64))
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.contrastive_margin(x, y, reducer="threshold")
    with pytest.raises(LossInputError, match="^low"):
        losskit.representation.metric.ThresholdReducer(low=float("nan"))
    # reducer=None is unchanged: the per-anchor mean
    assert losskit.triplet_margin(x, y).item() == losskit.triplet_margin(x, y, reducer=None).item()


# ------------------------------------------------------------------------------ proxies and margins
N, D, C = 12, 5, 4


def _proxy_batch(seed, k=1):
    x, _ = _batch(seed, n=N, d=D)
    g = torch.Generator().manual_seed(100 + seed)
    return x, torch.randint(0, C, (N,), generator=g), randn64(C * k, D, seed=200 + seed)


def _with_w(peer, proxies, attr="W"):
    peer = peer.double()
    with torch.no_grad():
        getattr(peer, attr).data = (proxies.T if attr == "W" else proxies).clone()
    return peer


MARGIN_CASES = [
    ("arcface", lambda P: _with_w(L.ArcFaceLoss(C, D), P), dict(margin=math.radians(28.6))),
    ("arcface", lambda P: _with_w(L.ArcFaceLoss(C, D, margin=10.0, scale=8.0), P),
     dict(margin=math.radians(10.0), scale=8.0)),
    ("cosface", lambda P: _with_w(L.CosFaceLoss(C, D), P), {}),
    ("cosface", lambda P: _with_w(L.CosFaceLoss(C, D, margin=0.1, scale=3.0), P), dict(margin=0.1, scale=3.0)),
    ("large_margin_softmax", lambda P: _with_w(L.LargeMarginSoftmaxLoss(C, D), P), {}),
    ("large_margin_softmax", lambda P: _with_w(L.LargeMarginSoftmaxLoss(C, D, margin=3, scale=2.0), P),
     dict(margin=3, scale=2.0)),
    ("sphereface", lambda P: _with_w(L.SphereFaceLoss(C, D), P), {}),
    ("sphereface", lambda P: _with_w(L.SphereFaceLoss(C, D, margin=2, scale=0.5), P), dict(margin=2, scale=0.5)),
    ("proxy_nca", lambda P: _with_w(L.ProxyNCALoss(C, D), P, "proxies"), {}),
    ("proxy_nca", lambda P: _with_w(L.ProxyNCALoss(C, D, softmax_scale=3.0), P, "proxies"), dict(scale=3.0)),
    ("proxy_anchor", lambda P: _with_w(L.ProxyAnchorLoss(C, D), P, "proxies"), {}),
    ("proxy_anchor", lambda P: _with_w(L.ProxyAnchorLoss(C, D, margin=0.3, alpha=8.0), P, "proxies"),
     dict(margin=0.3, alpha=8.0)),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("name", "make", "opts"), MARGIN_CASES)
def test_proxy_losses_match_pml(name, make, opts, seed):
    x, y, P = _proxy_batch(seed)
    fn = getattr(losskit, name)
    _close(fn(x, y, P, **opts), make(P)(x, y))
    # gradients w.r.t. the embeddings and the proxies
    x1, P1 = x.clone().requires_grad_(True), P.clone().requires_grad_(True)
    fn(x1, y, P1, **opts).backward()
    peer = make(P)
    x2 = x.clone().requires_grad_(True)
    peer(x2, y).backward()
    w = peer.W.grad.T if hasattr(peer, "W") else peer.proxies.grad
    _close(x1.grad, x2.grad, rtol=1e-8, atol=1e-10)
    _close(P1.grad, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_subcenter_arcface_matches_pml(k):
    for seed in range(3):
        x, y, P = _proxy_batch(seed, k=k)
        peer = _with_w(L.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, sub_centers=k), P)
        _close(losskit.subcenter_arcface(x, y, P, sub_centers=k, margin=math.radians(28.6)), peer(x, y))
    # K = 1 is ArcFace
    x, y, P = _proxy_batch(0)
    _close(losskit.subcenter_arcface(x, y, P, sub_centers=1), losskit.arcface(x, y, P))


def test_proxy_edges():
    x, y, P = _proxy_batch(0)
    # an embedding on its proxy (cos = 1) and one opposite it (cos = -1, the monotone branch of ArcFace):
    # values as PML's, and our gradient stays finite there (PML's acos has an infinite one)
    x = x.clone()
    x[0] = 3 * P[y[0]]
    x[1] = -2 * P[y[1]]
    # (at cos = 1, sin(theta) = sqrt(1 - cos^2) turns a rounding of 1e-16 in the cosine into 1e-8: both
    # implementations are that far from the exact value there, hence 1e-6 on these rows)
    edge = dict(rtol=1e-6, atol=1e-8)
    for name, make, opts in MARGIN_CASES[:8]:
        _close(getattr(losskit, name)(x, y, P, **opts), make(P)(x, y), **edge)
        xg = x.clone().requires_grad_(True)
        getattr(losskit, name)(xg, y, P, **opts).backward()
        assert torch.isfinite(xg.grad).all(), name
    # batch of 1, a single class present (ProxyAnchor: one positive proxy)
    for name, make, opts in MARGIN_CASES:
        _close(getattr(losskit, name)(x[:1], y[:1], P, **opts), make(P)(x[:1], y[:1]), **edge)
    # extreme scale: logits of +-1e3 stay finite and agree
    _close(losskit.cosface(x, y, P, scale=1e3), _with_w(L.CosFaceLoss(C, D, scale=1e3), P)(x, y))
    # denominator='negatives': the paper's ProxyNCA, its positive proxy out of the denominator
    xn, pn = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(P, dim=1)
    d2 = torch.cdist(xn, pn) ** 2
    ref = torch.stack([d2[i, y[i]] + torch.logsumexp(-d2[i][torch.arange(C) != y[i]], 0) for i in range(N)])
    _close(losskit.proxy_nca(x, y, P, denominator="negatives", reduction="none"), ref)
    # labels out of range, proxies of the wrong width
    with pytest.raises(LossInputError, match="^labels"):
        losskit.arcface(x, y + C, P)
    with pytest.raises(LossInputError, match="^proxies"):
        losskit.subcenter_arcface(x, y, P, sub_centers=3)


# --------------------------------------------------------- circle, lifted structure, FastAP, SoftTriple, N-pairs
PAIR_CASES = [
    ("circle_loss", lambda: L.CircleLoss(), {}),
    ("circle_loss", lambda: L.CircleLoss(m=0.25, gamma=256), dict(m=0.25, gamma=256.0)),
    ("lifted_structure", lambda: L.LiftedStructureLoss(), dict(normalize=True, reducer="nonzero")),
    ("lifted_structure", lambda: L.LiftedStructureLoss(neg_margin=0.3, pos_margin=0.2),
     dict(neg_margin=0.3, pos_margin=0.2, normalize=True, reducer="nonzero")),
    ("lifted_structure", lambda: L.LiftedStructureLoss(reducer=R.MeanReducer()),
     dict(normalize=True, reducer="mean")),
    ("fast_ap", lambda: L.FastAPLoss(), {}),
    ("fast_ap", lambda: L.FastAPLoss(num_bins=4), dict(num_bins=4)),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("name", "make", "opts"), PAIR_CASES)
def test_pair_losses_match_pml(name, make, opts, seed):
    x, y = _batch(seed)
    fn = getattr(losskit, name)
    _close(fn(x, y, **opts), make()(x, y))
    _grads(lambda e: fn(e, y, **opts), lambda e: make()(e, y), x)


def test_pair_losses_edges():
    x, y = _batch(0)
    for name, make, opts in PAIR_CASES:
        fn = getattr(losskit, name)
        # a single positive pair in the batch; a single class (no negative); ties (duplicated embeddings)
        y1 = torch.arange(12)
        y1[5] = 0
        _close(fn(x, y1, **opts), make()(x, y1))
        if name != "fast_ap":  # FastAP without negatives: PML and losskit agree on the value below
            _close(fn(x, torch.zeros_like(y), **opts), make()(x, torch.zeros_like(y)))
        xt = torch.cat([x[:6], x[:6]])
        _close(fn(xt, y, **opts), make()(xt, y), rtol=1e-7, atol=1e-9)
    # the lifted structure's 'mean' is the paper's 1 / (2|P|) sum over unordered pairs (a loop)
    xn = torch.nn.functional.normalize(x, dim=1)
    d = torch.cdist(xn, xn)
    terms = []
    for i in range(12):
        for j in range(i + 1, 12):
            if y[i] == y[j]:
                negs = [torch.exp(1 - d[i, k]) for k in range(12) if y[k] != y[i]]
                negs += [torch.exp(1 - d[j, k]) for k in range(12) if y[k] != y[j]]
                terms.append(torch.relu(torch.log(sum(negs)) + d[i, j]) ** 2)
    _close(losskit.lifted_structure(x, y, normalize=True), sum(terms) / (2 * len(terms)))
    assert losskit.fast_ap(x, torch.zeros_like(y)).item() == pytest.approx(0.0, abs=1e-12)  # all positives: AP 1


@pytest.mark.parametrize("k", [1, 4, 10])
def test_soft_triple_matches_pml(k):
    for seed in range(3):
        x, y, P = _proxy_batch(seed, k=k)
        peer = _with_w(L.SoftTripleLoss(C, D, centers_per_class=k), P, "fc")
        peer.fc.data = P.T.clone()
        _close(losskit.soft_triple(x, y, P, centers_per_class=k), peer(x, y))
        peer2 = L.SoftTripleLoss(C, D, centers_per_class=k, la=5.0, gamma=0.5, margin=0.2).double()
        peer2.fc.data = P.T.clone()
        _close(losskit.soft_triple(x, y, P, centers_per_class=k, la=5.0, gamma=0.5, margin=0.2), peer2(x, y))


@pytest.mark.parametrize("seed", range(3))
def test_n_pairs_matches_pml(seed):
    a, p = randn64(6, 5, seed=seed), randn64(6, 5, seed=seed + 10)
    lab = torch.cat([torch.arange(6), torch.arange(6)])
    _close(losskit.n_pairs(a, p, normalize=True), L.NPairsLoss()(torch.cat([a, p]), lab))
    # the paper's form on raw inner products: log(1 + sum_{j != i} exp(a_i p_j - a_i p_i)), a loop
    s = a @ p.T
    ref = torch.stack([torch.log1p(sum(torch.exp(s[i, j] - s[i, i]) for j in range(6) if j != i)) for i in range(6)])
    _close(losskit.n_pairs(a, p, reduction="none"), ref)


# ----------------------------------------------------------------------- self-supervised (paper code)
def test_negative_cosine_closed_forms():
    p, z = randn64(7, 5, seed=1), randn64(7, 5, seed=2)
    cos = torch.nn.functional.cosine_similarity(p, z, dim=1)
    _close(losskit.negative_cosine(p, z, reduction="none"), -cos)
    _close(losskit.negative_cosine(p, z, form="byol", reduction="none"), 2 - 2 * cos)
    # BYOL's form is the squared distance of the normalised vectors (the paper's Eq. 2)
    pn, zn = torch.nn.functional.normalize(p, dim=1), torch.nn.functional.normalize(z, dim=1)
    _close(losskit.negative_cosine(p, z, form="byol", reduction="none"), ((pn - zn) ** 2).sum(1))
    # stop-gradient: no gradient reaches z; without it, the cosine's derivative does
    pg, zg = p.clone().requires_grad_(True), z.clone().requires_grad_(True)
    losskit.negative_cosine(pg, zg).backward()
    assert zg.grad is None or (zg.grad == 0).all()
    zg2 = z.clone().requires_grad_(True)
    losskit.negative_cosine(p, zg2, stop_gradient=False).backward()
    assert zg2.grad.abs().sum() > 0
    # a prediction equal (up to scale) to its target: -1; opposite: +1
    _close(losskit.negative_cosine(3 * z, z, reduction="none"), -torch.ones(7, dtype=torch.float64))
    _close(losskit.negative_cosine(-z, z, reduction="none"), torch.ones(7, dtype=torch.float64))


def _dino_reference(student_output, teacher_output, center, ncrops, student_temp, teacher_temp):
    """Ported from facebookresearch/dino, main_dino.py, DINOLoss.forward (lines 380-404), commit
    7c446df5b9f45747937fb0d72314eb9f7b66930a; inputs view-major (V B, K); the teacher temperature schedule
    replaced by its value and the centre update left out (tested separately)."""
    F_ = torch.nn.functional
    student_out = student_output / student_temp
    student_out = student_out.chunk(ncrops)
    teacher_out = F_.softmax((teacher_output - center) / teacher_temp, dim=-1)
    teacher_out = teacher_out.detach().chunk(2)
    total_loss = 0
    n_loss_terms = 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F_.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    total_loss /= n_loss_terms
    return total_loss


@pytest.mark.parametrize(("vs", "scale"), [(2, 1.0), (4, 1.0), (6, 3.0), (3, 30.0)])
def test_dino_matches_authors_code(vs, scale):
    b, k = 5, 7
    s = randn64(vs * b, k, seed=vs, scale=scale)
    t = randn64(2 * b, k, seed=vs + 1, scale=scale)
    c = randn64(1, k, seed=vs + 2)
    ref = _dino_reference(s, t, c, vs, 0.1, 0.04)
    to_b = lambda x, v: x.view(v, b, k).transpose(0, 1)  # noqa: E731
    _close(losskit.dino(to_b(s, vs), to_b(t, 2), c[0]), ref)
    # gradient w.r.t. the student
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    losskit.dino(to_b(s1, vs), to_b(t, 2), c[0], student_temperature=0.2, teacher_temperature=0.07).backward()
    _dino_reference(s2, t, c, vs, 0.2, 0.07).backward()
    _close(s1.grad, s2.grad)
    # centre update: m c + (1 - m) mean of the teacher outputs (main_dino.py, update_center, lines 406-415)
    _close(losskit.representation.dino_center(c[0], to_b(t, 2), 0.9), 0.9 * c[0] + 0.1 * t.mean(0))
    # batch of 1
    _close(losskit.dino(to_b(s, vs)[:1], to_b(t, 2)[:1], c[0]),
           _dino_reference(to_b(s, vs)[:1].transpose(0, 1).reshape(-1, k), to_b(t, 2)[:1].transpose(0, 1).reshape(-1, k),
                           c, vs, 0.1, 0.04))


def _swav_reference(output, bs, nmb_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations):
    """Ported from facebookresearch/swav, main_swav.py (train loop lines 290-315 without the queue, and
    distributed_sinkhorn lines 354-375 on one process), commit 06b1b7cbaf6ba2a792300d79c7299db98b93b7f9."""
    F_ = torch.nn.functional

    @torch.no_grad()
    def distributed_sinkhorn(out):
        Q = torch.exp(out / epsilon).t()
        B = Q.shape[1]
        K = Q.shape[0]
        sum_Q = torch.sum(Q)
        Q /= sum_Q
        for _ in range(sinkhorn_iterations):
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            Q /= sum_of_rows
            Q /= K
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B
        return Q.t()

    loss = 0
    for crop_id in crops_for_assign:
        with torch.no_grad():
            out = output[bs * crop_id: bs * (crop_id + 1)].detach()
            q = distributed_sinkhorn(out)[-bs:]
        subloss = 0
        for v in [i for i in range(nmb_crops) if i != crop_id]:
            x = output[bs * v: bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F_.log_softmax(x, dim=1), dim=1))
        loss += subloss / (nmb_crops - 1)
    loss /= len(crops_for_assign)
    return loss


@pytest.mark.parametrize(("v", "assign", "iters", "eps"), [(2, (0, 1), 3, 0.05), (4, (0, 1), 3, 0.05),
                                                          (3, (0,), 1, 0.1), (5, (0, 2), 10, 0.03)])
def test_swav_matches_authors_code(v, assign, iters, eps):
    b, k, d = 6, 4, 8
    z = torch.nn.functional.normalize(randn64(v * b, d, seed=v), dim=1)
    c = torch.nn.functional.normalize(randn64(k, d, seed=v + 1), dim=1)
    out = z @ c.T  # view-major (V B, K) prototype scores, as the authors' model outputs
    ref = _swav_reference(out, b, v, assign, 0.1, eps, iters)
    scores = out.view(v, b, k).transpose(0, 1)
    _close(losskit.swav(scores, epsilon=eps, sinkhorn_iterations=iters, crops_for_assign=assign), ref)
    o1, o2 = out.clone().requires_grad_(True), out.clone().requires_grad_(True)
    losskit.swav(o1.view(v, b, k).transpose(0, 1), epsilon=eps, sinkhorn_iterations=iters,
                 crops_for_assign=assign).backward()
    _swav_reference(o2, b, v, assign, 0.1, eps, iters).backward()
    _close(o1.grad, o2.grad)


def test_swav_codes_are_balanced_and_overflow_free():
    s = randn64(6, 4, seed=3)
    q = losskit.representation.swav_codes(s, 0.05, 50)
    _close(q.sum(1), torch.ones(6, dtype=torch.float64))
    _close(q.sum(0), torch.full((4,), 6 / 4, dtype=torch.float64), rtol=1e-6, atol=1e-8)
    # scores of 10 at eps 0.05: exp(200) overflows float32 in the reference code; the log domain does not
    q32 = losskit.representation.swav_codes((10 * s).float(), 0.05, 3)
    assert torch.isfinite(q32).all()
    _close(q32.double(), losskit.representation.swav_codes(10 * s, 0.05, 3), rtol=1e-4, atol=1e-5)


def _siglip_reference(img_emb, txt_emb, t, b):
    """The paper's Algorithm 1 (Zhai et al. 2023, arXiv:2303.15343), in torch."""
    zimg = torch.nn.functional.normalize(img_emb, dim=-1)
    ztxt = torch.nn.functional.normalize(txt_emb, dim=-1)
    logits = zimg @ ztxt.T * t + b
    n = img_emb.shape[0]
    labels = 2 * torch.eye(n, dtype=logits.dtype) - 1
    return -torch.sum(torch.nn.functional.logsigmoid(labels * logits)) / n


@pytest.mark.parametrize(("t", "b"), [(10.0, -10.0), (1.0, 0.0), (100.0, -3.0), (1e3, 5.0)])
def test_siglip_matches_paper(t, b):
    x, y = randn64(7, 5, seed=1), randn64(7, 5, seed=2)
    _close(losskit.siglip(x, y, logit_scale=t, logit_bias=b), _siglip_reference(x, y, t, b))
    # learnable scale and bias (0-dim tensors) get their gradients
    tp = torch.tensor(math.log(t), dtype=torch.float64, requires_grad=True)
    bb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    tp2 = tp.detach().clone().requires_grad_(True)
    bb2 = bb.detach().clone().requires_grad_(True)
    losskit.siglip(x, y, logit_scale=tp.exp(), logit_bias=bb).backward()
    _siglip_reference(x, y, tp2.exp(), bb2).backward()
    _close(tp.grad, tp2.grad)
    _close(bb.grad, bb2.grad)
    # batch of 1: only the positive pair
    _close(losskit.siglip(x[:1], y[:1], logit_scale=t, logit_bias=b), _siglip_reference(x[:1], y[:1], t, b))


def _koleo_reference(student_output, eps=1e-8):
    """Ported from facebookresearch/dinov2, dinov2/loss/koleo_loss.py (KoLeoLoss, lines 22-48), commit
    b8931f7bf91576930313be2c6d6af376033b35f0 (without the autocast context)."""
    F_ = torch.nn.functional
    pdist = torch.nn.PairwiseDistance(2, eps=1e-8)
    student_output = F_.normalize(student_output, eps=eps, p=2, dim=-1)
    dots = torch.mm(student_output, student_output.t())
    n = student_output.shape[0]
    dots.view(-1)[:: (n + 1)].fill_(-1)
    _, idx = torch.max(dots, dim=1)
    distances = pdist(student_output, student_output[idx])
    return -torch.log(distances + eps).mean()


@pytest.mark.parametrize(("n", "d", "scale"), [(7, 4, 1.0), (2, 3, 1.0), (16, 8, 100.0)])
def test_koleo_matches_dinov2(n, d, scale):
    x = randn64(n, d, seed=n, scale=scale)
    # PairwiseDistance adds its eps (1e-8) to every coordinate difference: 1e-8-relative differences
    _close(losskit.koleo(x), _koleo_reference(x), rtol=1e-6, atol=1e-7)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    losskit.koleo(x1).backward()
    _koleo_reference(x2).backward()
    _close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    # the closed form: -log of each point's nearest-neighbour distance on the sphere
    xn = torch.nn.functional.normalize(x, dim=1)
    dist = torch.cdist(xn, xn) + torch.diag(torch.full((n,), 9.0, dtype=torch.float64))
    _close(losskit.koleo(x, eps=0.0, reduction="none"), -torch.log(dist.min(1).values), rtol=1e-9, atol=1e-9)


def test_koleo_duplicates_stay_finite():
    x = randn64(5, 3, seed=1)
    x = torch.cat([x, x[:1]]).requires_grad_(True)
    out = losskit.koleo(x)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    # the duplicated pair: -log(0 + eps) here; DINOv2's PairwiseDistance measures |0 + eps 1| = eps sqrt(D)
    # there, so its terms are -log(eps (sqrt(D) + 1)): the stated difference, and nothing else
    per = losskit.koleo(x.detach(), reduction="none")
    _close(per[[0, 5]], torch.full((2,), -math.log(1e-8), dtype=torch.float64))
    ref = _koleo_reference(x.detach()) * 6
    _close(per.sum() - 2 * (-math.log(1e-8)), ref - 2 * (-math.log(1e-8 * (math.sqrt(3) + 1))), rtol=1e-6, atol=1e-6)


def _msn_reference(anchors, targets, prototypes, temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0,
                   target_sharpen_temperature=0.25):
    """Ported from lightly-ai/lightly, lightly/loss/msn_loss.py (prototype_probabilities, sharpen, sinkhorn,
    MSNLoss.forward and regularization_loss), commit e8d317fc5a87f4387a85a35e689869039ec249ee; single process.
    ``anchors`` view-major (V B, D)."""
    F_ = torch.nn.functional

    def prototype_probabilities(queries, prototypes, temperature):
        return F_.softmax(torch.matmul(queries, prototypes.T) / temperature, dim=1)

    def sharpen(probabilities, temperature):
        probabilities = probabilities ** (1.0 / temperature)
        probabilities /= torch.sum(probabilities, dim=1, keepdim=True)
        return probabilities

    @torch.no_grad()
    def sinkhorn(probabilities, iterations=3):
        if iterations <= 0:
            return probabilities
        num_targets, num_prototypes = probabilities.shape
        probabilities = probabilities.T
        sum_probabilities = torch.sum(probabilities)
        probabilities = probabilities / sum_probabilities
        for _ in range(iterations):
            row_sum = torch.sum(probabilities, dim=1, keepdim=True)
            probabilities /= row_sum
            probabilities /= num_prototypes
            probabilities /= torch.sum(probabilities, dim=0, keepdim=True)
            probabilities /= num_targets
        probabilities *= num_targets
        return probabilities.T

    num_views = anchors.shape[0] // targets.shape[0]
    anchors = F_.normalize(anchors, dim=1)
    targets = F_.normalize(targets, dim=1)
    prototypes = F_.normalize(prototypes, dim=1)
    anchor_probs = prototype_probabilities(anchors, prototypes, temperature=temperature)
    with torch.no_grad():
        target_probs = prototype_probabilities(targets, prototypes, temperature=temperature)
        target_probs = sharpen(target_probs, temperature=target_sharpen_temperature)
        if sinkhorn_iterations > 0:
            target_probs = sinkhorn(probabilities=target_probs, iterations=sinkhorn_iterations)
        target_probs = target_probs.repeat((num_views, 1))
    loss = torch.mean(torch.sum(torch.log(anchor_probs ** (-target_probs)), dim=1))
    if regularization_weight > 0:
        mean_anchor_probs = torch.mean(anchor_probs, dim=0)
        reg = -torch.sum(torch.log(mean_anchor_probs ** (-mean_anchor_probs)))
        reg += math.log(float(len(mean_anchor_probs)))
        loss += regularization_weight * reg
    return loss


@pytest.mark.parametrize(("v", "opts"), [(1, {}), (3, {}), (2, dict(sinkhorn_iterations=0)),
                                         (2, dict(regularization_weight=0.0, temperature=0.3)),
                                         (4, dict(sharpen_temperature=1.0, sinkhorn_iterations=7,
                                                  regularization_weight=2.5))])
def test_msn_matches_lightly(v, opts):
    b, d, k = 6, 5, 4
    a, t, p = randn64(b, v, d, seed=v), randn64(b, d, seed=v + 1), randn64(k, d, seed=v + 2)
    ref_opts = {"sharpen_temperature": "target_sharpen_temperature"}
    ropts = {ref_opts.get(key, key): val for key, val in opts.items()}
    a_vm = a.transpose(0, 1).reshape(-1, d)
    _close(losskit.msn(a, t, p, **opts), _msn_reference(a_vm, t, p, **ropts))
    a1, p1 = a.clone().requires_grad_(True), p.clone().requires_grad_(True)
    a2, p2 = a_vm.clone().requires_grad_(True), p.clone().requires_grad_(True)
    losskit.msn(a1, t, p1, **opts).backward()
    _msn_reference(a2, t, p2, **ropts).backward()
    _close(a1.grad.transpose(0, 1).reshape(-1, d), a2.grad)
    _close(p1.grad, p2.grad)
