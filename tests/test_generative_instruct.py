"""References for the generative family's distillation, adaptation and GAN-regulariser objectives that are
not ports: DiDi-Instruct's score-function identity checked exactly on an enumerable masked diffusion,
Uni-Instruct's weights (closed forms against forward-mode derivatives of the generators) and its limits,
and the closed forms of the DDC and MaF-GAN terms."""

import itertools

import pytest
import torch

import losskit
from losskit import LossInputError
from losskit.divergences import FGenerator
from losskit.divergences.generators import GENERATORS
from losskit.generative import f_distill_weight, uni_instruct_weights, update_entropy_bank

F64 = torch.float64


# ---------------------------------------------------------------------------------- DiDi-Instruct
MASK = 2  # vocabulary {0, 1}, and the mask token


def _marginal(p_x, xs, zs, alpha):
    """q_t(z) = sum_x p(x) prod_l Q_t(z_l | x_l), Q_t keeps a token w.p. alpha, masks it w.p. 1 - alpha."""
    q = torch.zeros(len(zs), dtype=F64)
    trans = torch.zeros(len(xs), len(zs), dtype=F64)
    for i, x in enumerate(xs):
        for j, z in enumerate(zs):
            pr = 1.0
            for xl, zl in zip(x, z):
                pr *= alpha if zl == xl else (1 - alpha) if zl == MASK else 0.0
            trans[i, j] = pr
    q = p_x @ trans
    return q, trans


def test_didi_instruct_gradient_is_the_integral_kl_gradient():
    """sum over an enumeration of (t, x ~ p_nu, z_t ~ Q_t(.|x)) with weights omega(t) p(x) Q(z|x) of
    sg(log q_nu/q_theta)(z) * log p_nu(x) has exactly the gradient of int omega KL(q_nu,t || q_theta,t)."""
    xs = list(itertools.product((0, 1), repeat=2))
    zs = list(itertools.product((0, 1, MASK), repeat=2))
    g = torch.Generator().manual_seed(0)
    nu = torch.randn(4, generator=g, dtype=F64, requires_grad=True)
    p_teacher = torch.softmax(torch.randn(4, generator=g, dtype=F64), 0)
    ts = torch.tensor([0.1, 0.35, 0.6, 0.85], dtype=F64)   # quadrature nodes, alpha_t = 1 - t
    omega = torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=F64)

    p_student = torch.softmax(nu, 0)
    ikl = 0.0
    for t, w in zip(ts, omega):
        q_s, _ = _marginal(p_student, xs, zs, 1 - t.item())
        q_t, _ = _marginal(p_teacher, xs, zs, 1 - t.item())
        keep = q_s > 0
        ikl = ikl + w * (q_s[keep] * (q_s[keep].log() - q_t[keep].log())).sum()
    (want,) = torch.autograd.grad(ikl, nu)

    log_prob, log_ratio, weight = [], [], []
    logp = torch.log_softmax(nu, 0)
    for t, w in zip(ts, omega):
        q_s, trans = _marginal(p_student.detach(), xs, zs, 1 - t.item())
        q_t, _ = _marginal(p_teacher, xs, zs, 1 - t.item())
        for i in range(len(xs)):
            for j in range(len(zs)):
                if trans[i, j] > 0:
                    log_prob.append(logp[i])
                    log_ratio.append((q_s[j] / q_t[j]).log())
                    weight.append(w * p_student[i].detach() * trans[i, j])
    loss = losskit.didi_instruct_loss(torch.stack(log_prob), torch.stack(log_ratio), normalize=False,
                                      sample_weight=torch.stack(weight), reduction="sum")
    (got,) = torch.autograd.grad(loss, nu)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert want.abs().max() > 1e-3  # a real gradient, not a vanishing one


def test_didi_instruct_grouped_normalisation_by_hand():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(8, generator=g, dtype=F64) * 10
    lr = torch.randn(8, generator=g, dtype=F64)
    reward = -lr.reshape(2, 4)
    adv = ((reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + 1e-8)).reshape(8)
    want = (-adv * logp).mean()
    got = losskit.didi_instruct_loss(logp, lr, group_size=4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    whole = (-lr - (-lr).mean()) / ((-lr).std() + 1e-8)
    torch.testing.assert_close(losskit.didi_instruct_loss(logp, lr, group_size=None), (-whole * logp).mean(),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.didi_instruct_loss(logp, lr), want)  # default G = 4
    # the gradient pushes down the sequences whose corrupted states the student over-represents
    x = logp.clone().requires_grad_()
    losskit.didi_instruct_loss(x, lr, normalize=False, reduction="sum").backward()
    torch.testing.assert_close(x.grad, lr)
    with pytest.raises(LossInputError, match="group_size"):
        losskit.didi_instruct_loss(logp, lr, group_size=3)


# ----------------------------------------------------------------------------------- Uni-Instruct
@pytest.mark.parametrize("name", ["reverse_kl", "kl", "jeffreys", "js", "hellinger", "pearson", "neyman"])
def test_uni_instruct_weights_closed_forms_match_forward_mode(name):
    """The closed forms of h = r^2 f'' and c = -r^2 h'' against forward-mode derivatives of the generator's
    f' (the FGenerator path, which knows nothing of the table)."""
    gen = GENERATORS[name]
    clone = FGenerator(name + "_clone", f=gen.f, f_prime_log=gen.f_prime_log)
    s = torch.linspace(-3, 3, 13, dtype=F64)
    h1, c1 = uni_instruct_weights(s, name)
    h2, c2 = uni_instruct_weights(s, clone)
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c1, c2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h1, f_distill_weight(s, name))
    # by finite differences in r: c = -r^2 h''(r)
    r = s.exp()
    eps = 1e-4 * r

    def h_of(rr):
        return f_distill_weight(rr.log(), name)

    h2nd = (h_of(r + eps) - 2 * h_of(r) + h_of(r - eps)) / eps ** 2
    torch.testing.assert_close(c1, -r ** 2 * h2nd, rtol=1e-5, atol=1e-6)


def _inputs(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, 3, generator=g, dtype=F64)
    real = 0.8 * x0 + 0.3 * torch.randn(n, 2, 3, generator=g, dtype=F64)
    fake = 0.8 * x0 + 0.3 * torch.randn(n, 2, 3, generator=g, dtype=F64)
    return x0, real, fake, 0.6 * torch.randn(n, generator=g, dtype=F64)


def test_uni_instruct_reverse_kl_is_sid():
    """h = 1, c = 0: SiD's generator loss (Zhou et al. 2024, Eq. 14 with alpha), by hand."""
    x0, real, fake, lr = _inputs()
    for alpha in (1.0, 1.2):
        wf = (x0 - real).abs().mean((1, 2))
        want = ((real - fake) * ((real - x0) - alpha * (real - fake))).sum((1, 2)) / wf
        got = losskit.uni_instruct_loss(x0, real, fake, lr, alpha=alpha, reduction="none")
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # forward KL is the ratio-weighted SiD loss, Jeffreys the sum of the two
    rkl = losskit.uni_instruct_loss(x0, real, fake, lr, reduction="none")
    torch.testing.assert_close(losskit.uni_instruct_loss(x0, real, fake, lr, divergence="kl", reduction="none"),
                               lr.exp() * rkl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.uni_instruct_loss(x0, real, fake, lr, divergence="jeffreys",
                                                         reduction="none"), (lr.exp() + 1) * rkl)


def test_uni_instruct_gradchecks_in_the_denoisers_and_is_zero_at_a_matched_student():
    x0, real, fake, lr = _inputs(3)
    # in the fake denoiser (SiD's normaliser reads x0 and the teacher only; the f-weights read log_ratio only)
    for div in ("reverse_kl", "kl"):
        assert torch.autograd.gradcheck(lambda b, div=div: losskit.uni_instruct_loss(x0, real, b, lr, divergence=div),
                                        (fake.clone().requires_grad_(),))
    # in the teacher with the normaliser held fixed: d/dD_p of h (D_p - D_q).((D_p - x0) - alpha (D_p - D_q)) / wf
    rr = real.clone().requires_grad_()
    losskit.uni_instruct_loss(x0, rr, fake, lr, divergence="kl", reduction="sum").backward()
    wf = (x0 - real).abs().mean((1, 2))[:, None, None]
    d = real - fake
    want = lr.exp()[:, None, None] * ((real - x0) + (1 - 2 * 1.0) * d) / wf  # (D_p - x0) + (1 - 2 alpha) d
    torch.testing.assert_close(rr.grad, want, rtol=1e-12, atol=1e-12)
    # the student's score equals the teacher's: the loss and its gradient in x0 vanish for every divergence
    for div in ("reverse_kl", "kl", "js", "pearson", "hellinger", "neyman"):
        x = x0.clone().requires_grad_()
        v = losskit.uni_instruct_loss(x, real, real, lr, divergence=div, reduction="sum")
        v.backward()
        assert v.item() == 0.0 and x.grad.abs().max().item() == 0.0


def test_uni_instruct_per_sample_norm_and_normalize():
    x0, real, fake, lr = _inputs(4)
    whole = losskit.uni_instruct_loss(x0, real, fake, lr, divergence="js", reduction="none")
    parts = torch.cat([losskit.uni_instruct_loss(x0[i:i + 1], real[i:i + 1], fake[i:i + 1], lr[i:i + 1],
                                                 divergence="js", reduction="none") for i in range(4)])
    torch.testing.assert_close(whole, parts, rtol=1e-12, atol=1e-12)
    h, c = uni_instruct_weights(lr, "hellinger")
    base = losskit.uni_instruct_loss(x0, real, fake, lr, divergence="hellinger", reduction="none")
    norm = losskit.uni_instruct_loss(x0, real, fake, lr, divergence="hellinger", normalize=True, reduction="none")
    torch.testing.assert_close(norm, base / h.mean(), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------- DDC
def test_ddc_zero_on_the_translated_source_and_gradient():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(5, 7, generator=g, dtype=F64)
    w = torch.randn(7, generator=g, dtype=F64)
    assert losskit.directional_distribution_consistency_loss(src + w, src, w).item() == 0.0
    f = torch.randn(5, 7, generator=g, dtype=F64, requires_grad=True)
    s = src.clone().requires_grad_()
    losskit.directional_distribution_consistency_loss(f, s, w, reduction="sum").backward()
    torch.testing.assert_close(f.grad, 2 * (f.detach() - src - w) / 7)
    assert s.grad is None or s.grad.abs().max() == 0  # the source side is a target
    with pytest.raises(LossInputError, match="direction"):
        losskit.directional_distribution_consistency_loss(f, src, w[:-1])


# ------------------------------------------------------------------------------------------- MaF-GAN
def test_manifold_entropy_closed_form_scale_and_bank():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, generator=g, dtype=F64)
    bank = torch.randn(9, 4, generator=g, dtype=F64)
    d = torch.cdist(z, bank).square().amin(1) / 4
    torch.testing.assert_close(losskit.manifold_entropy_loss(z, bank), -d.mean().log(), rtol=1e-12, atol=1e-12)
    # scaling the embedding space by c shifts the estimate by -2 log c, at any magnitude (no overflow)
    for c in (1e-20, 1e20):
        got = losskit.manifold_entropy_loss((c * z).float(), (c * bank).float())
        torch.testing.assert_close(got.double(), -d.mean().log() - 2 * torch.log(torch.tensor(c, dtype=F64)),
                                   rtol=1e-5, atol=1e-4)
    # a FIFO bank of fixed size
    b2 = update_entropy_bank(bank, z)
    assert b2.shape == bank.shape
    torch.testing.assert_close(b2[:3], bank[6:])
    torch.testing.assert_close(b2[3:], z)


def test_disomap_and_dlle_closed_forms():
    g = torch.Generator().manual_seed(0)
    zr, zf = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    a = torch.rand(5, generator=g, dtype=F64)
    lin = a[:, None] * zr + (1 - a[:, None]) * zf
    assert losskit.disomap_loss(lin, zr, zf, a).item() == 0.0  # an isometric (affine) embedding costs nothing
    m = lin + 1.0
    torch.testing.assert_close(losskit.disomap_loss(m, zr, zf, a, reduction="none"), torch.ones(5, dtype=F64))
    torch.testing.assert_close(losskit.dlle_loss(zr, zr + 2.0, reduction="none"), torch.full((5,), 4.0, dtype=F64))


def test_uni_instruct_reverse_kl_alpha_half_is_the_fisher_divergence_gradient():
    """At one noise level, SiD's identity: with the exact fake denoiser (its parameters held fixed) the expected
    gradient of the reverse-KL loss with alpha = 1/2 is sigma^4 / 2 times the gradient of the Fisher divergence
    E_{q_t} (s_p - s_q)^2 of the student's noisy marginal; alpha = 1 (the authors' code) and 1.2 (SiD's paper)
    are not (1-D Gaussians, Gauss-Hermite quadrature over the generator's z and the noise)."""
    import numpy as np

    nodes, w = np.polynomial.hermite_e.hermegauss(40)
    z1, w1 = torch.tensor(nodes, dtype=F64), torch.tensor(w / w.sum(), dtype=F64)
    zz, ee = (t.reshape(-1) for t in torch.meshgrid(z1, z1, indexing="ij"))
    ww = (w1[:, None] * w1[None, :]).reshape(-1)
    m, v = 0.7, 1.69  # teacher N(m, v); student G(z) = mu + s z
    for sig in (0.3, 1.0, 2.5):
        th = torch.tensor([0.2, 0.8], dtype=F64, requires_grad=True)
        big_v, big_w = th[1] ** 2 + sig ** 2, v + sig ** 2
        a, b = 1 / big_v - 1 / big_w, m / big_w - th[0] / big_v        # s_p - s_q = a x + b
        fisher = a ** 2 * (big_v + th[0] ** 2) + 2 * a * b * th[0] + b ** 2
        (want,) = torch.autograd.grad(fisher, th)
        ratios = {}
        for alpha in (0.5, 1.0, 1.2):
            t2 = th.detach().clone().requires_grad_()
            x0 = (t2[0] + t2[1] * zz)[:, None]
            xt = x0 + sig * ee[:, None]
            real = xt - sig ** 2 * (xt - m) / big_w
            fake = xt - sig ** 2 * (xt - th[0].detach()) / big_v.detach()
            wf = (x0 - real).detach().abs()[:, 0].clamp_min(1e-5)        # cancel SiD's normaliser
            loss = losskit.uni_instruct_loss(x0, real, fake, torch.zeros(len(zz), dtype=F64), alpha=alpha,
                                             sample_weight=ww * wf, reduction="sum")
            (got,) = torch.autograd.grad(loss, t2)
            ratios[alpha] = got / (want * sig ** 4)
        torch.testing.assert_close(ratios[0.5], torch.full((2,), 0.5, dtype=F64), rtol=1e-9, atol=1e-12)
        assert (ratios[1.0] - 0.5).abs().max() > 1e-2 and (ratios[1.2] - 0.5).abs().max() > 1e-2
