"""ICNN loss (SuSana Distancia) and AMCL against ports of the authors' code; Metrix against float64 loops of the
paper's equations, the authors' mixed-pair contrastive terms and pytorch-metric-learning's multi-similarity loss."""

import math

import pytest
import torch
from oracle_meta import Oracle

import losskit
from losskit import LossInputError

ICNN_REPO, ICNN_COMMIT = "maumruiz/FewShot-KidneyStones", "0e40969d1d10ac01f712fa833832cece98fd80ee"
METRIX_REPO, METRIX_COMMIT = "billpsomas/metrix", "0f03b58a210c0583d306786c1d0713ded3d4c60b"
AMCL_REPO, AMCL_COMMIT = "LeiWangR/cl", "755799dbee4260d2d2efc891e9e4d2c13ea2cfe4"

ORACLES = [
    Oracle("icnn_loss", ICNN_REPO, "pro-fewshot/algorithms/icnn_loss.py (modified_score, nearest_neighbors)",
           ICNN_COMMIT, "2e-6",
           differences="the authors add 1e-6 under the square root and 1e-7 to every denominator (losskit is exact: "
                       "2e-7 relative measured on the test's episodes, gradients to 1e-4); the same function is in "
                       "maumruiz/FSL-Loss, the paper's repository; neighbors >= N raises there, losskit clamps it "
                       "to N - 1 as the authors clamp k"),
    Oracle("metrix", METRIX_REPO, "mixup/losses.py (loss_posneg_mixup)", METRIX_COMMIT, "relation",
           differences="the authors' mixed-pair contrastive terms lam [d]_+ and (1 - lam) [0.5 - d]_+ are losskit's "
                       "loss='contrastive' mixed term of a single (positive, negative) mix (1e-12); their PML reducers "
                       "average the pair terms over the batch where losskit follows the paper's per-anchor sums; "
                       "their multi-similarity variant (a later file) puts 0.4 x the mixed sum inside the clean "
                       "term's log and leaves its mixed negative mask unfilled: losskit follows the paper's "
                       "l + w l~, checked against float64 loops of it (1e-10) and PML's MultiSimilarityLoss at w = 0"),
    Oracle("amcl_simsiam", AMCL_REPO, "amcl/losses.py (AMCLSimSiamLoss)", AMCL_COMMIT, "1e-12",
           differences="tau1, tau2 (the temperature map's output) are inputs; values 1e-12, gradients 1e-10"),
    Oracle("amcl_barlow_twins", AMCL_REPO, "amcl/losses.py (AMCLBarlowTwinsLoss)", AMCL_COMMIT, "1e-12",
           differences="the channel-pair temperatures (C, D, D) of their BatchVectorTemperatureHead are an input (their "
                       "map needs a fixed batch size; losskit does not); values 1e-12, gradients 1e-10"),
    Oracle("amcl", AMCL_REPO, "amcl/losses.py (AMCLNTXentLoss, AMCLMoCoLoss, TemperatureHead, omega)", AMCL_COMMIT,
           "1e-12",
           differences="losskit takes the temperature map's output, the pair temperatures (C, 2N, 2N), or (C, 2N, 2N + K) "
                       "with a MoCo queue, as an input; the test feeds it the authors' map and compares values (1e-12) "
                       "and gradients (1e-10) for SimCLR and MoCo"),
]


# ----------------------------------------------------------------------------------------------- ICNN
# Port of ``modified_score`` and ``nearest_neighbors`` of the authors' code (the score their ``suppicnn`` /
# ``queryicnn`` / ``fullicnn`` losses take minus the log of): maumruiz/FewShot-KidneyStones,
# pro-fewshot/algorithms/icnn_loss.py @ 0e40969d1d10ac01f712fa833832cece98fd80ee (the same function is in
# maumruiz/FSL-Loss, the paper's repository). Test oracle only; kept as close to their lines as possible.
def _ref_nearest_neighbors(x, y, k):
    eps = 0.000001
    n, m, d = x.size(0), y.size(0), x.size(1)
    dist = torch.pow(x.unsqueeze(1).expand(n, m, d) - y.unsqueeze(0).expand(n, m, d), 2).sum(2)
    knn = ((dist + eps) ** (1 / 2)).topk(k, largest=False)
    return knn.values, knn.indices


def ref_modified_score(origin, y_orig, k=4, ipc=None):
    target, y_targ = origin, y_orig
    k = target.shape[0] - 2 if k + 2 >= target.shape[0] else k
    ipc = k + 1 if ipc is None else ipc
    eps = 0.0000001
    distances, indices = _ref_nearest_neighbors(origin, target, k=ipc + 1)
    distances = distances[:, 1:]
    indices = indices[:, 1:]
    classes = y_targ[indices]
    yMatrix = y_orig.repeat(ipc, 1).T
    scMatrix = (yMatrix == classes) * 1
    dcMatrix = (scMatrix) * (-1) + 1
    dt = distances.T
    dcnd = distances * dcMatrix
    nn_dc = (dcnd + torch.where(dcnd.eq(0.), float('inf'), 0.)).min(axis=1).values
    nd = dt / (nn_dc + eps)
    nd = nd[:k, :]
    nd = nd / torch.stack((torch.ones_like(nd[0]), nd.max(axis=0).values)).max(axis=0).values
    nd = nd.T
    scMatrix = scMatrix[:, :k]
    scnd = nd * scMatrix
    scCounts = scMatrix.sum(axis=1)
    scndsum = scnd.sum(axis=1) / (scCounts + eps)
    sclamb = 1 - (scndsum.sum() / (torch.count_nonzero(scCounts) + eps))
    dcnd = dcnd[:, :k]
    dcMatrix = dcMatrix[:, :k]
    dcnd = dcnd / (dcnd.max() + eps)
    dcop = -1 if torch.all(dcMatrix == 0) else 0
    dcCounts = dcMatrix.sum(axis=1)
    dcndsum = dcnd.sum(axis=1) / (dcCounts + eps)
    dclamb = dcndsum.sum() / (torch.count_nonzero(dcCounts) + eps)
    dclamb = torch.abs(dclamb + dcop)
    lambr = (sclamb + dclamb) / 2
    gamma = torch.sum(torch.sum(scMatrix, axis=1) / k) / (y_orig.shape[0]) if k + 2 < target.shape[0] else 1.0
    return (lambr + gamma) / 2


def _episode(ways, per_class, d=6, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways).repeat_interleave(per_class)
    centres = 2 * torch.randn(ways, d, generator=g, dtype=torch.float64)
    x = centres[labels] + spread * torch.randn(ways * per_class, d, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(labels), generator=g)
    return x[perm], labels[perm]


@pytest.mark.parametrize("ways,per_class,k,ipc,seed", [
    (5, 5, 4, None, 0),    # suppicnn, 5-way 5-shot
    (5, 1, 4, None, 1),    # 1-shot support: no same-class neighbour at all
    (5, 10, 4, 10, 2),     # fullicnn: shot + query = 10 neighbours
    (3, 2, 4, None, 3),    # k clamped to N - 2
    (2, 6, 3, 7, 4),
    (4, 4, 2, None, 5),
])
def test_icnn_matches_authors_modified_score(ways, per_class, k, ipc, seed):
    x, y = _episode(ways, per_class, seed=seed)
    ref = -torch.log(ref_modified_score(x, y, k=k, ipc=ipc))
    got = losskit.icnn_loss(x, y, k=k, neighbors=ipc)
    # the authors' 1e-6 under the square root and 1e-7 in the denominators: agreement to ~1e-6
    assert got.item() == pytest.approx(ref.item(), rel=2e-6, abs=2e-6)


def test_icnn_gradient_matches_authors_score():
    x, y = _episode(4, 5, seed=7)
    xa = x.clone().requires_grad_(True)
    (-torch.log(ref_modified_score(xa, y, k=4))).backward()
    xb = x.clone().requires_grad_(True)
    losskit.icnn_loss(xb, y, k=4).backward()
    assert xb.grad.abs().max() > 1e-3
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-6)


def test_icnn_scale_invariant_and_bounded():
    x, y = _episode(4, 4, seed=11)
    base = losskit.icnn_loss(x, y)
    for c in (1e-8, 3.0, 1e12):
        assert losskit.icnn_loss(c * x, y).item() == pytest.approx(base.item(), rel=1e-10)
    s = losskit.icnn_score(x, y)
    assert 0 < s.item() <= 1 and base.item() >= 0
    # well separated classes score higher (lower loss) than the same points with shuffled labels
    xs, ys = _episode(4, 6, seed=12, spread=0.05)
    assert losskit.icnn_loss(xs, ys) < losskit.icnn_loss(xs, ys[torch.randperm(len(ys))])


def test_icnn_reductions_and_errors():
    x, y = _episode(3, 4, seed=1)
    v = losskit.icnn_loss(x, y)
    assert losskit.icnn_loss(x, y, reduction="none").dim() == 0
    assert losskit.icnn_loss(x, y, reduction="sum").item() == v.item()
    assert torch.allclose(losskit.ICNNLoss(k=4)(x, y), v)
    with pytest.raises(LossInputError, match="^embeddings"):
        losskit.icnn_loss(x[:2], y[:2])
    with pytest.raises(LossInputError, match="^labels"):
        losskit.icnn_loss(x, y[:-1])


# --------------------------------------------------------------------------------------------- Metrix
def _mix_batch(n=10, m=7, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    emb = torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(k, d, generator=g, dtype=torch.float64)[labels]
    i = torch.randint(0, n, (m,), generator=g)
    j = torch.randint(0, n, (m,), generator=g)
    lam = torch.rand(m, generator=g, dtype=torch.float64)
    mixed = lam[:, None] * emb[i] + (1 - lam[:, None]) * emb[j]
    return emb, labels, mixed, torch.stack([labels[i], labels[j]], 1), lam


def ref_metrix(emb, labels, mixed, mlab, lam, loss, alpha=2.0, beta=50.0, base=0.5, pm=0.0, nm=0.5, w=1.0,
               normalize=True):
    """The paper's l(a) + w l~(a), one anchor and one candidate at a time in Python floats."""
    def unit(v):
        v = [float(t) for t in v]
        r = math.sqrt(sum(t * t for t in v))
        return [t / r for t in v]

    E = [unit(e) if (normalize or loss == "multi_similarity") else [float(t) for t in e] for e in emb]
    U = [unit(u) if (normalize or loss == "multi_similarity") else [float(t) for t in u] for u in mixed]
    y = [int(t) for t in labels]

    def sim(a, b):
        if loss == "multi_similarity":
            return sum(p * q for p, q in zip(a, b))
        return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))

    def ell(a, cands):  # cands: (vector, positivity v)
        if loss == "multi_similarity":
            sp = sum(v * math.exp(-alpha * (sim(a, c) - base)) for c, v in cands)
            sn = sum((1 - v) * math.exp(beta * (sim(a, c) - base)) for c, v in cands)
            return math.log1p(sp) / alpha + math.log1p(sn) / beta
        return sum(v * max(sim(a, c) - pm, 0.0) + (1 - v) * max(nm - sim(a, c), 0.0) for c, v in cands)

    out = []
    for i, a in enumerate(E):
        clean = [(E[j], 1.0 if y[j] == y[i] else 0.0) for j in range(len(E)) if j != i]
        mix = [(U[u], float(lam[u]) * (int(mlab[u, 0]) == y[i]) + (1 - float(lam[u])) * (int(mlab[u, 1]) == y[i]))
               for u in range(len(U))]
        out.append(ell(a, clean) + w * ell(a, mix))
    return out


@pytest.mark.parametrize("loss,opts", [
    ("multi_similarity", {}),
    ("multi_similarity", {"alpha": 1.5, "beta": 7.0, "base": 0.2, "mix_weight": 0.4}),
    ("contrastive", {}),
    ("contrastive", {"pos_margin": 0.1, "neg_margin": 1.2, "mix_weight": 2.0, "normalize": False}),
])
def test_metrix_matches_paper_equations(loss, opts):
    emb, labels, mixed, mlab, lam = _mix_batch(seed=3)
    ref = ref_metrix(emb, labels, mixed, mlab, lam, loss, alpha=opts.get("alpha", 2.0), beta=opts.get("beta", 50.0),
                     base=opts.get("base", 0.5), pm=opts.get("pos_margin", 0.0), nm=opts.get("neg_margin", 0.5),
                     w=opts.get("mix_weight", 1.0), normalize=opts.get("normalize", True))
    got = losskit.metrix(emb, labels, mixed, mlab, lam, loss=loss, reduction="none", **opts)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-12)  # beta = 50 amplifies rounding
    assert losskit.metrix(emb, labels, mixed, mlab, lam, loss=loss, **opts).item() == pytest.approx(sum(ref) / len(ref),
                                                                                                    rel=1e-12)


def test_metrix_without_mixing_is_pml_multi_similarity():
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    emb, labels, mixed, mlab, lam = _mix_batch(n=12, seed=5)
    for a, b, base in ((2.0, 50.0, 0.5), (1.0, 10.0, 0.1)):
        pml = MultiSimilarityLoss(alpha=a, beta=b, base=base)(emb, labels)
        for kw in ({"mix_weight": 0.0}, {}):
            args = (mixed, mlab, lam) if kw else (mixed[:0], mlab[:0], lam[:0])
            got = losskit.metrix(emb, labels, *args, alpha=a, beta=b, base=base, **kw)
            assert got.item() == pytest.approx(pml.item(), rel=1e-10)
        assert losskit.multi_similarity(emb, labels, alpha=a, beta=b, base=base, miner=None).item() == pytest.approx(
            pml.item(), rel=1e-10)


def _ref_loss_posneg_mixup(pair_dist, lam):
    """The terms of the authors' ``loss_posneg_mixup`` (billpsomas/metrix, mixup/losses.py @ 0f03b58a) on the
    anchor-to-mixed distances (the diagonal of their ``sim_mix``)."""
    pos_loss = lam * torch.nn.functional.relu(pair_dist - 0.0)
    neg_loss = (1 - lam) * torch.nn.functional.relu(0.5 - pair_dist)
    return pos_loss, neg_loss


def test_metrix_contrastive_mixed_pair_is_authors_terms():
    # one anchor, its positive p and a negative n mixed as lam p + (1 - lam) n (their embedding mixup); their
    # distance is PML's LpDistance (normalised embeddings), as loss='contrastive', normalize=True
    emb, labels, _, _, _ = _mix_batch(n=9, seed=4)
    for a, p, nidx, lam in ((0, 3, 1, 0.3), (2, 5, 0, 0.85), (4, 7, 6, 0.5)):
        assert labels[a] == labels[p] and labels[a] != labels[nidx]
        u = lam * emb[p] + (1 - lam) * emb[nidx]
        d = (torch.nn.functional.normalize(emb[a], dim=0) - torch.nn.functional.normalize(u, dim=0)).norm()
        pos_loss, neg_loss = _ref_loss_posneg_mixup(d, lam)
        kw = dict(loss="contrastive", reduction="none")
        mlab = torch.tensor([[int(labels[p]), int(labels[nidx])]])
        with_mix = losskit.metrix(emb, labels, u[None], mlab, torch.tensor([lam], dtype=torch.float64), **kw)
        clean = losskit.metrix(emb, labels, u[None, :0].reshape(0, emb.shape[1]), mlab[:0],
                               torch.zeros(0, dtype=torch.float64), **kw)
        assert (with_mix - clean)[a].item() == pytest.approx((pos_loss + neg_loss).item(), abs=1e-12)


def test_metrix_positivity_interpolates_labels():
    # a mixed example made only of the anchor's class (lam anything, both labels = y_a) is a full positive;
    # one of two other classes a full negative; lam = 1 / 0 picks one side; the mixed term is linear in v
    emb, labels, _, _, _ = _mix_batch(n=6, seed=9)
    u = emb[:1] * 0.3 + emb[1:2] * 0.7
    ya, yb = int(labels[0]), int(labels[1])
    assert ya != yb

    def mixed_term(pair, lam):
        full = losskit.metrix(emb, labels, u, torch.tensor([pair]), torch.tensor([lam], dtype=torch.float64),
                              loss="contrastive", reduction="none")
        clean = losskit.metrix(emb, labels, u[:0], torch.zeros(0, 2, dtype=torch.long),
                               torch.zeros(0, dtype=torch.float64), loss="contrastive", reduction="none")
        return (full - clean)[0].item()

    pos, neg = mixed_term((ya, ya), 0.3), mixed_term((yb, yb), 0.3)
    assert mixed_term((ya, yb), 1.0) == pytest.approx(pos, abs=1e-14)
    assert mixed_term((ya, yb), 0.0) == pytest.approx(neg, abs=1e-14)
    assert mixed_term((ya, yb), 0.25) == pytest.approx(0.25 * pos + 0.75 * neg, abs=1e-14)


def test_metrix_gradient_and_errors():
    emb, labels, mixed, mlab, lam = _mix_batch(seed=1)
    e, mx = emb.clone().requires_grad_(True), mixed.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: losskit.metrix(a, labels, b, mlab, lam), (e, mx))
    with pytest.raises(LossInputError, match="^lam"):
        losskit.metrix(emb, labels, mixed, mlab, lam + 1.5)
    with pytest.raises(LossInputError, match="^mixed_labels"):
        losskit.metrix(emb, labels, mixed, mlab[:, 0], lam)
    with pytest.raises(LossInputError, match="^loss"):
        losskit.metrix(emb, labels, mixed, mlab, lam, loss="triplet")


# ----------------------------------------------------------------------------------------------- AMCL
# Port of the authors' SimCLR objective ``AMCLNTXentLoss`` (``_direction`` / ``forward``, with ``omega`` and the
# shared ``TemperatureHead``): LeiWangR/cl, amcl/losses.py @ 755799dbee4260d2d2efc891e9e4d2c13ea2cfe4. Test
# oracle only; their temperature head is a fixed random MLP here, and its pair temperatures are what losskit takes.
class _RefAMCL:
    def __init__(self, dim, heads, beta, topk, tau_min=1e-5, tau_max=2.0, seed=0):
        torch.manual_seed(seed)
        self.phi = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim)).double()
        self.dim, self.num_heads, self.beta, self.topk = dim, heads, beta, topk
        self.tau_min, self.tau_max = tau_min, tau_max

    def score_to_temperature(self, score):
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)

    def temperature(self, z1, z2):
        return self.score_to_temperature((self.phi(z1) * self.phi(z2)).sum(dim=-1))

    def omega(self, tau, dim):
        return 0.5 * float(dim) * torch.log(tau) + torch.reciprocal(tau)

    def _direction(self, anchor, positive, negatives):
        F = torch.nn.functional
        anchor, positive, negatives = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1), F.normalize(negatives, dim=-1)
        pos_sim = (anchor * positive).sum(-1)
        tau_pos = self.temperature(anchor, positive)
        sim_neg = (anchor[:, None, :] * negatives).sum(-1)
        pa = self.phi(anchor)
        pn = self.phi(negatives.reshape(-1, negatives.size(-1))).reshape(negatives.size(0), negatives.size(1), -1)
        tau_neg = self.score_to_temperature(torch.einsum("bd,bnd->bn", pa, pn))
        k = min(self.topk, negatives.size(1))
        vals, idx = sim_neg.topk(k=k, dim=1, largest=True, sorted=False)
        tau_top = tau_neg.gather(1, idx)
        neg = (vals / tau_top).mean(dim=1)
        reg_pos = self.beta * self.omega(tau_pos, self.dim)
        reg_neg = self.beta * (torch.log(tau_top).sum(dim=1) + torch.reciprocal(tau_top).sum(dim=1))
        return (-pos_sim / tau_pos + neg + reg_pos - reg_neg).mean()

    def __call__(self, z1, z2):
        b, c, d = z1.shape
        eye = torch.eye(b, dtype=torch.bool)
        losses = []
        for h in range(c):
            a, p = z1[:, h], z2[:, h]
            same_view_other = z1[:, h].unsqueeze(0).expand(b, -1, -1)[~eye].view(b, b - 1, d)
            other_view_other = z2[:, h].unsqueeze(0).expand(b, -1, -1)[~eye].view(b, b - 1, d)
            neg_a = torch.cat([same_view_other, other_view_other], dim=1)
            neg_p = torch.cat([other_view_other, same_view_other], dim=1)
            losses.append(self._direction(a, p, neg_a))
            losses.append(self._direction(p, a, neg_p))
        return torch.stack(losses).view(c, 2).mean(dim=1).sum()

    def pair_temperatures(self, z1, z2):
        """(C, 2N, 2N): the same map on every pair of the normalised views [z1; z2]."""
        z = torch.nn.functional.normalize(torch.cat([z1, z2], 0).transpose(0, 1), dim=-1)
        p = self.phi(z)
        return self.score_to_temperature(p @ p.transpose(1, 2))


@pytest.mark.parametrize("n,c,d,beta,topk", [(6, 3, 8, 0.01, 100), (5, 2, 6, 1e-4, 3), (4, 1, 5, 0.3, 1),
                                             (7, 2, 4, 0.0, 5)])
def test_amcl_matches_authors_ntxent(n, c, d, beta, topk):
    g = torch.Generator().manual_seed(n * 10 + c)
    z1 = torch.randn(n, c, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, c, d, generator=g, dtype=torch.float64)
    ref = _RefAMCL(d, c, beta, topk, seed=n)
    za, zb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    expected = ref(za, zb)
    expected.backward()
    ya, yb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    got = losskit.amcl(ya, yb, ref.pair_temperatures(ya, yb), beta=beta, topk=topk)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    # gradients through the features and through the temperature map alike
    torch.testing.assert_close(ya.grad, za.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(yb.grad, zb.grad, rtol=1e-10, atol=1e-12)


def test_amcl_omega_minimum_and_shapes():
    d = 128
    t = torch.tensor(2.0 / d, dtype=torch.float64, requires_grad=True)
    losskit.amcl_omega(t, d).backward()
    assert abs(t.grad.item()) < 1e-9
    z1 = torch.randn(4, 6, dtype=torch.float64)
    z2 = torch.randn(4, 6, dtype=torch.float64)
    tau = torch.full((8, 8), 0.5, dtype=torch.float64)
    one = losskit.amcl(z1, z2, tau, reduction="none")
    assert one.shape == (4,)
    # two identical heads double the loss (heads are summed)
    two = losskit.amcl(torch.stack([z1, z1], 1), torch.stack([z2, z2], 1), tau, reduction="none")
    torch.testing.assert_close(two, 2 * one, rtol=1e-12, atol=1e-12)
    with pytest.raises(LossInputError, match="^tau"):
        losskit.amcl(z1, z2, tau[:6, :6])
    with pytest.raises(LossInputError, match="^tau"):
        losskit.amcl(z1, z2, tau * 0)


def _ref_amcl_moco(ref, q, k, queue):
    """The authors' ``AMCLMoCoLoss.forward`` / ``_direction`` (same file and commit as above); queue (C, D, K)."""
    F = torch.nn.functional

    def direction(anchor, positive, negative_bank):
        anchor, positive, negative_bank = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1), F.normalize(
            negative_bank, dim=-1)
        pos_sim = (anchor * positive).sum(-1)
        tau_pos = ref.temperature(anchor, positive)
        pa, pn = ref.phi(anchor), ref.phi(negative_bank)
        tau_neg = ref.score_to_temperature(pa @ pn.transpose(0, 1))
        sim_neg = anchor @ negative_bank.transpose(0, 1)
        kk = min(ref.topk, negative_bank.size(0))
        vals, idx = sim_neg.topk(k=kk, dim=1, largest=True, sorted=False)
        tau_top = tau_neg.gather(1, idx)
        neg = (vals / tau_top).mean(dim=1)
        reg_pos = ref.beta * ref.omega(tau_pos, ref.dim)
        reg_neg = ref.beta * (torch.log(tau_top).sum(dim=1) + torch.reciprocal(tau_top).sum(dim=1))
        return (-pos_sim / tau_pos + neg + reg_pos - reg_neg).mean()

    per_head = []
    for h in range(ref.num_heads):
        qh, kh = q[:, h], k[:, h]
        bank = queue[h].transpose(0, 1)
        per_head.append(0.5 * (direction(qh, kh, bank) + direction(kh, qh, bank)))
    return torch.stack(per_head).sum()


@pytest.mark.parametrize("n,c,d,kq,beta,topk", [(4, 2, 8, 16, 1e-4, 5), (5, 1, 6, 7, 0.01, 100), (3, 3, 4, 9, 0.2, 2)])
def test_amcl_queue_matches_authors_moco(n, c, d, kq, beta, topk):
    g = torch.Generator().manual_seed(kq)
    q = torch.randn(n, c, d, generator=g, dtype=torch.float64)
    k = q + 0.4 * torch.randn(n, c, d, generator=g, dtype=torch.float64)
    queue = torch.randn(c, d, kq, generator=g, dtype=torch.float64)  # the authors' (heads, dim, K) layout
    ref = _RefAMCL(d, c, beta, topk, seed=kq)
    qa = q.clone().requires_grad_(True)
    expected = _ref_amcl_moco(ref, qa, k, queue)
    expected.backward()
    qb = q.clone().requires_grad_(True)
    bank = queue.transpose(1, 2)  # (C, K, D)
    zall = torch.nn.functional.normalize(torch.cat([qb, k], 0).transpose(0, 1), dim=-1)
    cands = torch.cat([zall, torch.nn.functional.normalize(bank, dim=-1)], 1)
    tau = ref.score_to_temperature(ref.phi(zall) @ ref.phi(cands).transpose(1, 2))  # (C, 2N, 2N + K)
    got = losskit.amcl(qb, k, tau, queue=bank, beta=beta, topk=topk)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(qb.grad, qa.grad, rtol=1e-10, atol=1e-12)


def _ref_amcl_simsiam(ref, p1, z2, p2, z1):
    """The authors' ``AMCLSimSiamLoss.forward`` (same file and commit), with the test's temperature map."""
    F = torch.nn.functional
    losses = []
    for h in range(ref.num_heads):
        a = F.normalize(p1[:, h], dim=-1)
        b = F.normalize(z2[:, h].detach(), dim=-1)
        c = F.normalize(p2[:, h], dim=-1)
        d = F.normalize(z1[:, h].detach(), dim=-1)
        tau1 = ref.temperature(a, b)
        tau2 = ref.temperature(c, d)
        s1 = (a * b).sum(-1)
        s2 = (c * d).sum(-1)
        term = (-0.5 * s1 / tau1 - 0.5 * s2 / tau2 + ref.beta * ref.omega(tau1, ref.dim)
                + ref.beta * ref.omega(tau2, ref.dim))
        losses.append(term.mean())
    return torch.stack(losses).sum()


@pytest.mark.parametrize("n,c,d,beta", [(6, 3, 8, 0.01), (4, 1, 5, 0.5)])
def test_amcl_simsiam_matches_authors(n, c, d, beta):
    g = torch.Generator().manual_seed(n + c)
    p1, z2, p2, z1 = (torch.randn(n, c, d, generator=g, dtype=torch.float64) for _ in range(4))
    ref = _RefAMCL(d, c, beta, 1, seed=c)
    a = [t.clone().requires_grad_(True) for t in (p1, p2)]
    expected = _ref_amcl_simsiam(ref, a[0], z2, a[1], z1)
    expected.backward()
    b = [t.clone().requires_grad_(True) for t in (p1, p2)]
    F = torch.nn.functional
    tau1 = ref.temperature(F.normalize(b[0], dim=-1), F.normalize(z2, dim=-1))
    tau2 = ref.temperature(F.normalize(b[1], dim=-1), F.normalize(z1, dim=-1))
    got = losskit.amcl_simsiam(b[0], z2, b[1], z1, tau1, tau2, beta=beta)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    for x, y in zip(b, a):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)
    # one head, unit temperatures, beta 0: SimSiam's symmetric negative cosine
    one = torch.ones(n, dtype=torch.float64)
    simsiam = 0.5 * (losskit.negative_cosine(p1[:, 0], z2[:, 0], reduction="none")
                     + losskit.negative_cosine(p2[:, 0], z1[:, 0], reduction="none"))
    torch.testing.assert_close(losskit.amcl_simsiam(p1[:, 0], z2[:, 0], p2[:, 0], z1[:, 0], one, one, beta=0.0,
                                                    reduction="none"), simsiam, rtol=1e-12, atol=1e-12)


def _ref_amcl_barlow(z1, z2, tau, lambd, beta, dim, batch_size):
    """The authors' ``AMCLBarlowTwinsLoss.forward`` (same file and commit) given the pair temperatures (C, D, D)
    their ``BatchVectorTemperatureHead.pair_temperature_matrix`` returns."""
    losses = []
    for h in range(z1.shape[1]):
        z1h, z2h = z1[:, h], z2[:, h]
        x = (z1h - z1h.mean(0)) / (z1h.std(0, unbiased=True) + 1e-9)
        y = (z2h - z2h.mean(0)) / (z2h.std(0, unbiased=True) + 1e-9)
        corr = x.T @ y / batch_size
        t = tau[h]
        tau_pos = torch.diagonal(t)
        diag = torch.diagonal(corr)
        pos = (1.0 - diag / tau_pos).pow(2).sum()
        off_mask = ~torch.eye(dim, dtype=torch.bool)
        neg = lambd * (corr[off_mask].pow(2) / t[off_mask]).sum()
        om = lambda v: 0.5 * float(dim) * torch.log(v) + torch.reciprocal(v)  # noqa: E731
        losses.append(pos + neg + beta * om(tau_pos).sum() - beta * om(t[off_mask]).sum())
    return torch.stack(losses).sum()


@pytest.mark.parametrize("n,c,d,lambd,beta", [(8, 2, 5, 5e-3, 1e-4), (6, 1, 4, 0.1, 0.05)])
def test_amcl_barlow_twins_matches_authors(n, c, d, lambd, beta):
    g = torch.Generator().manual_seed(n * c)
    z1 = torch.randn(n, c, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, c, d, generator=g, dtype=torch.float64)
    # their map: phi on the N-dimensional channel vectors, tau = tmin + (tmax - tmin) sigmoid(-phi(x) phi(y)^T)
    torch.manual_seed(d)
    phi = torch.nn.Sequential(torch.nn.Linear(n, 7), torch.nn.ReLU(), torch.nn.Linear(7, n)).double()
    def tmap(a, b):  # (C, D, D), differentiable in the features as in their code
        return torch.stack([1e-5 + (2.0 - 1e-5) * torch.sigmoid(-(phi(a[:, h].T) @ phi(b[:, h].T).T)) for h in range(c)])

    za, zb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    expected = _ref_amcl_barlow(za, zb, tmap(za, zb), lambd, beta, d, n)
    expected.backward()
    ya, yb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    got = losskit.amcl_barlow_twins(ya, yb, tmap(ya, yb), lambd=lambd, beta=beta)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(ya.grad, za.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(yb.grad, zb.grad, rtol=1e-10, atol=1e-12)
    # unit temperatures, beta 0: plain Barlow Twins of each head (unbiased standardisation, no eps), summed
    ones = torch.ones(d, d, dtype=torch.float64)
    bt = sum(losskit.barlow_twins(z1[:, h], z2[:, h], lambd=lambd, unbiased=True, eps=0.0) for h in range(c))
    assert losskit.amcl_barlow_twins(z1, z2, ones, lambd=lambd, beta=0.0, eps=0.0).item() == pytest.approx(bt.item(),
                                                                                                         rel=1e-12)
