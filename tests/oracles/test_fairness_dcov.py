"""Distance-covariance fairness regularisers (Lee et al. 2025, arXiv:2509.08163).

References: the definitions of Székely, Rizzo, Bakirov (2007) written as float64 NumPy loops over pairs
(V-statistic) and Székely & Rizzo (2014, "Partial distance correlation", Sec. 2.3: U-centring) for the
U-statistic; JdCov (Chakraborty & Zhang 2019) against its expansion over subsets of variables; and the
intersectional ("gerrymandering") case the paper is about, where exact empirical pairwise independence
hides a joint dependence.
"""

import itertools

import numpy as np
import pytest
import torch
from oracle_meta import NoReference

import losskit

ORACLES = [
    NoReference("distance_covariance",
                "no authors' code cited or used for Lee et al. 2025 (arXiv:2509.08163); the tests use the "
                "definitions instead",
                checked_against="float64 NumPy loops over pairs of Szekely, Rizzo, Bakirov (2007) (V-statistic) and "
                                "Szekely & Rizzo (2014) U-centring (U-statistic), 1e-12 absolute; invariances"),
    NoReference("joint_distance_covariance",
                "no authors' code cited or used for Lee et al. 2025 (arXiv:2509.08163); the tests use the "
                "definition instead",
                checked_against="JdCov (Chakraborty & Zhang 2019) against its expansion over subsets of variables "
                                "in float64 (1e-12 absolute), and dCov^2 for two variables (1e-12)"),
]



def _dist(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = len(x)
    return np.array([[np.sqrt(((x[k] - x[l]) ** 2).sum()) for l in range(n)] for k in range(n)])


def _dc(a):
    return a - a.mean(0, keepdims=True) - a.mean(1, keepdims=True) + a.mean()


def _uc(a):
    n = len(a)
    out = np.zeros_like(a)
    for k in range(n):
        for l in range(n):
            if k != l:
                out[k, l] = a[k, l] - a[k].sum() / (n - 2) - a[:, l].sum() / (n - 2) + a.sum() / ((n - 1) * (n - 2))
    return out


def dcov_v(x, y):
    return float((_dc(_dist(x)) * _dc(_dist(y))).mean())


def dcov_u(x, y):
    n = len(x)
    return float((_uc(_dist(x)) * _uc(_dist(y))).sum() / (n * (n - 3)))


def _data(n=23, seed=0):
    rng = np.random.default_rng(seed)
    s_cont = rng.normal(size=(n, 1))
    s_cat = np.eye(3)[rng.integers(0, 3, n)]
    pred = np.tanh(s_cont[:, 0]) + s_cat[:, 2] * 0.7 + 0.3 * rng.normal(size=n)
    return pred, np.concatenate([s_cont, s_cat], 1)


@pytest.mark.parametrize("estimator,ref", [("biased", dcov_v), ("unbiased", dcov_u)])
def test_dcov_matches_definition(estimator, ref):
    pred, s = _data()
    got = losskit.distance_covariance(torch.tensor(pred), torch.tensor(s), estimator=estimator)
    assert abs(got.item() - ref(pred, s)) < 1e-12
    # 2-d predictions (e.g. class probabilities) as well
    p2 = np.stack([pred, pred ** 2], 1)
    got = losskit.distance_covariance(torch.tensor(p2), torch.tensor(s[:, :1]), estimator=estimator)
    assert abs(got.item() - ref(p2, s[:, :1])) < 1e-12


def test_dcov_invariances():
    pred, s = _data(seed=1)
    x, y = torch.tensor(pred), torch.tensor(s)
    base = losskit.distance_covariance(x, y)
    torch.testing.assert_close(losskit.distance_covariance(-3 * x + 5, y), 3 * base)  # |a| dCov², shift-free
    q = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]  # rotation invariance of the distances
    torch.testing.assert_close(losskit.distance_covariance(x, y @ q), base)


def test_ccdcov_catches_intersectional_dependence():
    # two balanced binary attributes; the prediction is their XOR: independent of each attribute
    # (exactly, empirically) but a function of the pair, i.e. unfair to the intersectional subgroups
    a = np.repeat([[0, 0], [0, 1], [1, 0], [1, 1]], 5, axis=0).astype(float)
    pred = torch.tensor((a[:, 0] != a[:, 1]).astype(float))
    s = torch.tensor(a)
    for j in range(2):
        assert abs(losskit.distance_covariance(pred, s[:, j]).item()) < 1e-15
    cc = losskit.distance_covariance(pred, s)  # CCdCov: the attributes concatenated
    assert cc.item() > 1e-2
    assert abs(cc.item() - dcov_v(pred.numpy(), a)) < 1e-12
    # JdCov also sees it, though every pair is independent
    j = losskit.joint_distance_covariance(pred, s)
    assert j.item() > 1e-3
    # and a prediction independent of both attributes jointly gets 0 from both measures
    fair = torch.tensor(np.tile([0.0, 1.0, 2.0, 3.0, 4.0], 4))
    assert abs(losskit.distance_covariance(fair, s).item()) < 1e-14
    assert abs(losskit.joint_distance_covariance(fair, s).item()) < 1e-14


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_jdcov_equals_its_expansion(c):
    pred, s = _data(n=17, seed=2)
    blocks = [pred, s[:, :1], s[:, 1:]]  # continuous + one one-hot categorical attribute
    # Chakraborty & Zhang's U(x, x') = E|x - X'| + E|X - x'| - |x - x'| - E|X - X'|, from its definition
    mats = []
    for b in blocks:
        a = _dist(b)
        mats.append(a.mean(1, keepdims=True) + a.mean(0, keepdims=True) - a - a.mean())
    d = len(mats)
    ref = 0.0
    for r in range(2, d + 1):  # singletons vanish: a double-centred matrix sums to 0
        for sub in itertools.combinations(range(d), r):
            ref += c ** (d - r) * np.prod([mats[i] for i in sub], axis=0).mean()
    got = losskit.joint_distance_covariance(torch.tensor(pred), torch.tensor(s), c=c, groups=(1, 3))
    assert abs(got.item() - ref) < 1e-12
    # two variables: JdCov = dCov²
    got2 = losskit.joint_distance_covariance(torch.tensor(pred), torch.tensor(s[:, :1]), c=c)
    assert abs(got2.item() - dcov_v(pred, s[:, :1])) < 1e-12


def test_gradient_reduces_dependence():
    pred, s = _data(n=40, seed=3)
    x = torch.tensor(pred, requires_grad=True)
    y = torch.tensor(s)
    opt = torch.optim.SGD([x], lr=0.5)
    first = None
    for _ in range(50):
        loss = losskit.distance_covariance(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losskit.distance_covariance(x, y).item() < 0.6 * first


def test_bad_groups_and_sizes():
    pred, s = _data(n=6)
    with pytest.raises(losskit.LossInputError, match="groups"):
        losskit.joint_distance_covariance(torch.tensor(pred), torch.tensor(s), groups=(1, 2))
    with pytest.raises(losskit.LossInputError, match="pred"):
        losskit.distance_covariance(torch.tensor(pred[:3]), torch.tensor(s[:3]), estimator="unbiased")
