"""Sample-based divergences against float64 brute force (NumPy), SciPy and the catalogue's CS value."""

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch

import losskit
from losskit import LossInputError


def _np_kernel(d, kernel, s):
    if kernel == "gaussian":
        return np.exp(-d ** 2 / (2 * s * s))
    if kernel == "laplacian":
        return np.exp(-d / s)
    if kernel == "imq":
        return 1 / np.sqrt(1 + d ** 2 / (s * s))
    return -d


def _np_mmd(x, y, kernel, sigmas, estimator):
    dxx, dyy, dxy = (scipy.spatial.distance.cdist(a, b) for a, b in ((x, x), (y, y), (x, y)))
    kxx, kyy, kxy = (sum(_np_kernel(d, kernel, s) for s in sigmas) for d in (dxx, dyy, dxy))
    m, n = len(x), len(y)
    if estimator == "unbiased":
        return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2 * kxy.mean())
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def _np_median(x, y):
    z = np.concatenate([x, y])
    return np.median(scipy.spatial.distance.pdist(z))


def _samples(seed=0, m=23, n=17, d=3, shift=0.5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), rng.normal(size=(n, d)) * 1.2 + shift


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "imq", "energy"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("block_size", [4, 1024])
def test_mmd_matches_float64_brute_force(kernel, estimator, block_size):
    x, y = _samples()
    med = _np_median(x, y)
    for bw, sigmas in (("median", (med,)), (0.8, (0.8,)), ((0.5, 2.0), (0.5, 2.0))):
        got = losskit.mmd(torch.tensor(x), torch.tensor(y), kernel=kernel, bandwidth=bw, estimator=estimator,
                          block_size=block_size)
        ref = _np_mmd(x, y, kernel, sigmas if kernel != "energy" else (1.0,), estimator)
        # (kernels of the distance itself take sqrt of matmul-formula squared distances: 1e-8)
        assert got.item() == pytest.approx(ref, rel=1e-8 if kernel in ("energy", "laplacian") else 1e-10, abs=1e-12), (kernel, bw)


def test_linear_time_mmd_by_hand():
    x, y = _samples(m=20, n=20)
    s = 1.3
    k = lambda a, b: np.exp(-((a - b) ** 2).sum(-1) / (2 * s * s))  # noqa: E731
    h = k(x[0::2], x[1::2]) + k(y[0::2], y[1::2]) - k(x[0::2], y[1::2]) - k(x[1::2], y[0::2])
    got = losskit.mmd(torch.tensor(x), torch.tensor(y), bandwidth=s, estimator="linear")
    assert got.item() == pytest.approx(h.mean(), rel=1e-12)
    with pytest.raises(LossInputError, match="^y:"):
        losskit.mmd(torch.tensor(x), torch.tensor(y[:-1]), estimator="linear")


def test_unbiased_mmd_has_mean_zero_for_equal_distributions():
    g = torch.Generator().manual_seed(0)
    reps = [losskit.mmd(torch.randn(16, 2, generator=g, dtype=torch.float64),
                        torch.randn(16, 2, generator=g, dtype=torch.float64), bandwidth=1.0, estimator=e)
            for _ in range(200) for e in ("unbiased", "biased")]
    u = torch.stack(reps[0::2])
    b = torch.stack(reps[1::2])
    se = u.std() / np.sqrt(len(u))
    assert abs(u.mean().item()) < 4 * se.item()       # unbiased: E = 0 = MMD^2
    assert b.mean().item() > 10 * se.item()            # the V-statistic is biased upwards
    assert (u < 0).any()                               # and the U-statistic does go negative
    # and detects a shift
    shifted = losskit.mmd(torch.randn(200, 2, generator=g, dtype=torch.float64),
                          torch.randn(200, 2, generator=g, dtype=torch.float64) + 1.0, bandwidth=1.0)
    assert shifted.item() > 0.1


def test_energy_distance_matches_scipy_1d():
    rng = np.random.default_rng(3)
    for m, n in ((30, 30), (25, 41)):
        u, v = rng.normal(size=m), rng.exponential(size=n)
        got = losskit.energy_distance(torch.tensor(u)[:, None], torch.tensor(v)[:, None], block_size=7)
        assert np.sqrt(got.item()) == pytest.approx(scipy.stats.energy_distance(u, v), rel=1e-10)


def test_energy_distance_unbiased_and_multivariate_brute_force():
    x, y = _samples(seed=4)
    for est in ("biased", "unbiased"):
        got = losskit.energy_distance(torch.tensor(x), torch.tensor(y), estimator=est)
        assert got.item() == pytest.approx(_np_mmd(x, y, "energy", (1.0,), est), rel=1e-9)


def test_kernel_cs_brute_force_and_properties():
    x, y = _samples(seed=5)
    s = 1.1
    kxx, kyy, kxy = (np.exp(-scipy.spatial.distance.cdist(a, b) ** 2 / (2 * s * s)) for a, b in
                     ((x, x), (y, y), (x, y)))
    ref = -2 * np.log(kxy.mean()) + np.log(kxx.mean()) + np.log(kyy.mean())
    tx, ty = torch.tensor(x), torch.tensor(y)
    got = losskit.kernel_cauchy_schwarz_divergence(tx, ty, bandwidth=s, block_size=5)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    assert got.item() > 0
    assert losskit.kernel_cauchy_schwarz_divergence(ty, tx, bandwidth=s).item() == pytest.approx(got.item())
    assert abs(losskit.kernel_cauchy_schwarz_divergence(tx, tx, bandwidth=s).item()) < 1e-12
    # far apart: log-domain sums stay finite (a dense exp would underflow to log 0)
    far = losskit.kernel_cauchy_schwarz_divergence(tx, ty + 1e3, bandwidth=1.0)
    assert torch.isfinite(far) and far.item() > 1e5


def test_kernel_cs_on_atoms_reproduces_the_catalogue_value():
    # samples on 3 well-separated atoms with multiplicities 5:3:2 and 2:2:6, a narrow kernel: the Gram
    # sums become sums of products of counts, so the estimate is the categorical CS divergence.
    atoms = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    x = atoms.repeat_interleave(torch.tensor([5, 3, 2]), 0)
    y = atoms.repeat_interleave(torch.tensor([2, 2, 6]), 0)
    got = losskit.kernel_cauchy_schwarz_divergence(x, y, bandwidth=0.05)
    assert got.item() == pytest.approx(0.757366, abs=1e-6)


@pytest.mark.parametrize("fn", ["mmd", "energy_distance", "kernel_cauchy_schwarz_divergence"])
def test_blocked_gradients_equal_dense(fn):
    x, y = _samples(seed=6, m=13, n=11)
    opts = {} if fn == "energy_distance" else {"bandwidth": 0.9}
    grads = []
    for block in (3, 4096):
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.tensor(y, requires_grad=True)
        getattr(losskit, fn)(tx, ty, block_size=block, **opts).backward()
        grads.append((tx.grad, ty.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


def test_sample_bad_inputs():
    x = torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(LossInputError, match="^estimator:"):
        losskit.mmd(x, x, estimator="quadratic")
    with pytest.raises(LossInputError, match="^kernel:"):
        losskit.kernel_cauchy_schwarz_divergence(x, x, kernel="energy")
    with pytest.raises(LossInputError, match="^x:"):
        losskit.mmd(torch.ones(4, 2), torch.ones(4, 2))  # median bandwidth of identical points is 0
    with pytest.raises(LossInputError, match="^block_size:"):
        losskit.mmd(x, x, bandwidth=1.0, block_size=0)


def test_unbiased_mmd_mean_is_the_closed_form_population_value_for_gaussians():
    # X ~ N(0, s1^2 I), Y ~ N(mu, s2^2 I), Gaussian kernel of bandwidth sigma: E k has a closed form
    d, s1, s2, sigma = 2, 1.0, 1.5, 1.2
    mu = torch.tensor([0.7, -0.4], dtype=torch.float64)

    def ek(var, shift2=0.0):
        c = sigma ** 2 / (sigma ** 2 + var)
        return c ** (d / 2) * np.exp(-shift2 / (2 * (sigma ** 2 + var)))

    pop = ek(2 * s1 ** 2) + ek(2 * s2 ** 2) - 2 * ek(s1 ** 2 + s2 ** 2, float(mu @ mu))
    g = torch.Generator().manual_seed(7)
    vals = torch.stack([losskit.mmd(s1 * torch.randn(12, d, generator=g, dtype=torch.float64),
                                    mu + s2 * torch.randn(15, d, generator=g, dtype=torch.float64),
                                    bandwidth=sigma) for _ in range(250)])
    se = vals.std().item() / np.sqrt(len(vals))
    assert abs(vals.mean().item() - pop) < 4 * se


def test_energy_distance_1d_is_twice_the_cdf_l2_integral():
    rng = np.random.default_rng(9)
    u, v = rng.normal(size=13), rng.normal(size=8) + 0.4
    pts = np.sort(np.concatenate([u, v]))
    fu = np.searchsorted(np.sort(u), pts[:-1], side="right") / len(u)
    fv = np.searchsorted(np.sort(v), pts[:-1], side="right") / len(v)
    ref = 2 * np.sum((fu - fv) ** 2 * np.diff(pts))
    got = losskit.energy_distance(torch.tensor(u)[:, None], torch.tensor(v)[:, None])
    assert got.item() == pytest.approx(ref, rel=1e-10)


def test_biased_mmd_and_energy_match_geomloss():
    geomloss = pytest.importorskip("geomloss")
    x, y = _samples(seed=10, m=30, n=25)
    tx, ty = torch.tensor(x), torch.tensor(y)
    for name, kernel in (("gaussian", "gaussian"), ("laplacian", "laplacian"), ("energy", "energy")):
        peer = geomloss.SamplesLoss(name, blur=0.9, backend="tensorized")(tx, ty)
        ours = losskit.mmd(tx, ty, kernel=kernel, bandwidth=0.9, estimator="biased")
        # GeomLoss reports MMD^2 / 2 and clamps (scaled) squared distances at 1e-8, so its diagonal
        # distances are 1e-4, not 0: k(x, x) = exp(-1e-4) (Laplacian) and -1e-4 (energy). Undo that exactly.
        diag = {"gaussian": 0.0, "laplacian": 1 - np.exp(-1e-4), "energy": 1e-4}[name]
        expected = 2 * peer.item() + diag * (1 / len(x) + 1 / len(y))
        assert ours.item() == pytest.approx(expected, rel=1e-8), name  # sqrt kernels: see above
