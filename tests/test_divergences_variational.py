"""Variational bounds: tight at their known optimal critics (exact on atoms), bounds elsewhere."""

import math

import numpy as np
import pytest
import scipy.special
import torch

import losskit
from losskit import LossInputError
from losskit.divergences import generators as G

P = np.array([0.5, 0.3, 0.2])
Q = np.array([0.2, 0.2, 0.6])
# samples on 3 atoms with multiplicities 5:3:2 (P) and 2:2:6 (Q): empirical expectations are exact
IDX_P = np.repeat(np.arange(3), [5, 3, 2])
IDX_Q = np.repeat(np.arange(3), [2, 2, 6])
KL = float(scipy.special.rel_entr(P, Q).sum())


def _critic(values):
    v = torch.tensor(values, dtype=torch.float64)
    return v[torch.tensor(IDX_P)], v[torch.tensor(IDX_Q)]


def test_dv_and_nwj_are_tight_at_their_optimal_critics():
    r = np.log(P / Q)
    assert losskit.dv_bound(*_critic(r + 3.7)).item() == pytest.approx(KL, abs=1e-12)  # any shift c
    assert losskit.nwj_bound(*_critic(1 + r)).item() == pytest.approx(KL, abs=1e-12)
    assert KL == pytest.approx(0.360062, abs=1e-6)  # the catalogue's value


def test_bounds_are_below_kl_for_other_critics_and_dv_dominates_nwj():
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = rng.normal(size=3) * 2
        dv = losskit.dv_bound(*_critic(t)).item()
        nwj = losskit.nwj_bound(*_critic(t)).item()
        assert nwj <= dv + 1e-12 and dv <= KL + 1e-12


_GENS = [("kl", G.KL), ("reverse_kl", G.REVERSE_KL), ("js", G.JS), ("hellinger", G.HELLINGER),
         ("pearson", G.PEARSON), ("neyman", G.NEYMAN), ("jeffreys", G.JEFFREYS),
         ("alpha(0.3)", G.alpha_generator(0.3)), ("alpha(2)", G.alpha_generator(2.0))]


@pytest.mark.parametrize(("name", "gen"), _GENS, ids=[n for n, _ in _GENS])
def test_fgan_bound_is_tight_at_f_prime_of_the_ratio(name, gen):
    t = gen.f_prime(torch.tensor(P / Q))
    got = losskit.fgan_bound(*_critic(t.numpy()), generator=gen, activation=False).item()
    ref = float((Q * gen.f(torch.tensor(P / Q)).numpy()).sum())  # D_f(P || Q) = sum q f(p/q)
    assert got == pytest.approx(ref, abs=1e-10)
    assert ref == pytest.approx(losskit.f_divergence(torch.tensor(P)[None], torch.tensor(Q)[None], generator=gen,
                                                     input_space="probs").item(), abs=1e-12)
    # other critics (through the activation) give no more than the divergence
    rng = np.random.default_rng(1)
    for _ in range(20):
        v = rng.normal(size=3) * 2
        assert losskit.fgan_bound(*_critic(v), generator=gen).item() <= ref + 1e-10


def test_fgan_js_is_the_gan_discriminator_objective():
    rng = np.random.default_rng(2)
    vp, vq = rng.normal(size=7), rng.normal(size=5)
    ref = math.log(2) - 0.5 * (np.logaddexp(0, -vp).mean() + np.logaddexp(0, vq).mean())
    got = losskit.fgan_bound(torch.tensor(vp), torch.tensor(vq), generator="js")
    assert got.item() == pytest.approx(ref, abs=1e-12)
    # saturated critics stay finite through the closed-form conjugate
    sat = losskit.fgan_bound(torch.tensor([1e4, -1e4]), torch.tensor([1e4, -1e4]), generator="js")
    assert torch.isfinite(sat)


def test_infonce_bound_by_hand_and_at_most_log_n():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(6, 6))
    ref = math.log(6) + np.mean(np.diag(s) - scipy.special.logsumexp(s, axis=1))
    assert losskit.infonce_bound(torch.tensor(s)).item() == pytest.approx(ref, abs=1e-12)
    sharp = torch.tensor(s) + 100 * torch.eye(6, dtype=torch.float64)
    assert losskit.infonce_bound(sharp).item() == pytest.approx(math.log(6), abs=1e-12)
    assert losskit.infonce_bound(sharp * 10).item() <= math.log(6)


def _bilinear(w):
    return lambda a, b: a @ w @ b.T


def test_wpc_bound_penalty_by_hand():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, generator=g, dtype=torch.float64)
    # s_ij = x_i W y_j: grad wrt x_i of s_ii is W y_i, wrt y_i is W^T x_i
    norm = torch.sqrt(((y @ w.T) ** 2).sum(1) + ((x @ w) ** 2).sum(1))
    scores = x @ w @ y.T
    for one_sided in (True, False):
        pen = (torch.relu(norm - 1) if one_sided else norm - 1) ** 2
        ref = losskit.infonce_bound(scores) - 2.5 * pen.mean()
        got = losskit.wpc_bound(x, y, _bilinear(w), penalty_weight=2.5, one_sided=one_sided)
        torch.testing.assert_close(got, ref)
    # a 1-Lipschitz critic pays no one-sided penalty: the bound is InfoNCE
    small = w / (10 * torch.linalg.matrix_norm(w, 2) * (x.norm(dim=1).max() + y.norm(dim=1).max()))
    torch.testing.assert_close(losskit.wpc_bound(x, y, _bilinear(small)), losskit.infonce_bound(x @ small @ y.T))
    # gradients reach the critic's parameters through the penalty (double backward)
    wp = w.clone().requires_grad_(True)
    losskit.wpc_bound(x, y, _bilinear(wp)).backward()
    assert torch.isfinite(wp.grad).all() and wp.grad.abs().sum() > 0


def test_variational_bad_inputs():
    s = torch.randn(4, dtype=torch.float64)
    with pytest.raises(LossInputError, match="^scores_q:"):
        losskit.dv_bound(s, s[:0])
    with pytest.raises(LossInputError, match="^generator:"):
        losskit.fgan_bound(s, s, generator=losskit.FGenerator("f", f=lambda t: t * t - 1))
    with pytest.raises(LossInputError, match="^critic:"):
        losskit.wpc_bound(torch.randn(3, 2), torch.randn(3, 2), lambda a, b: a @ b.T[:, :2])
