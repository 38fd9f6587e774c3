"""Oracle tests for the generative family's distillation and adaptation objectives: ports of the Uni-Instruct
authors' generator loss (a-little-hoof/Uni_Instruct), of the phasic content fusing diffusion model's
directional distribution consistency (sjtuplayer/few-shot-diffusion) and of MaF-GAN's manifold entropy
regularisers (HaozheLiu-ST/MEE). DiDi-Instruct's released code has no training step (see its entry)."""

import math

import pytest
import torch
import torch.nn.functional as F
from oracle_meta import NoReference, Oracle

import losskit
from losskit.divergences import FGenerator
from losskit.generative import ddc_direction, phasic_weight

UNI_COMMIT = "79797b393310e64c9ac23f3be4b89b9a7d8be2e8"  # a-little-hoof/Uni_Instruct
DDC_COMMIT = "7f246c2eeb7ab4385956ddfe9300da8c3317a677"  # sjtuplayer/few-shot-diffusion (train-whole.py)
MEE_COMMIT = "f7d3d335fb083233a87d7e6cbb0aea63e0bcf6fd"  # HaozheLiu-ST/MEE (train.py)
DIDI_COMMIT = "1b43c358a32c58caf5df905d85f4cdd1541bbb84"  # haoyangzheng-ai/didi-instruct (algo.py)

ORACLES = [
    Oracle(objective="uni_instruct_loss", repo="a-little-hoof/Uni_Instruct",
           path="fsim_training/fsim_loss.py (FSIM_EDMLoss.generator_share_encoder_loss); "
                "fsim_training/fsim_training_loop.py (the divergence branches of the generator update)",
           commit=UNI_COMMIT, agreement="relation",
           differences="The authors' generator value per divergence, given the density ratio r, on EDM-shaped "
                       "(N, 3, 4, 4) inputs: Forward-KL, Jeffrey-KL (0.4 FKL + 0.6 RKL, an FGenerator in losskit) "
                       "and Chi-Square ('pearson') equal losskit's 'sum' to 1e-12; Reverse-KL is SiD's loss (the "
                       "code multiplies it by a density_ratio left from another branch); Jensen-Shannon is 2 x "
                       "losskit's (losskit's js generator is half the f-GAN one); Forward-KL with "
                       "variance_reduction=1 (ratios / (their sum + 1e-8)) is losskit's normalize=True / N (1e-8). "
                       "The code's JS and Chi-Square branches call backward() on an unreduced tensor and broadcast "
                       "the summed Diff-Instruct term over every entry, and take the Diff-Instruct norm over the "
                       "whole batch: the port sums each term once and is run one sample at a time (where the "
                       "batch norm is the sample's). The discriminator's ratio (the code maps the GAN loss l to "
                       "-l / (1 - l)) is the caller's log_ratio."),
    NoReference(objective="didi_instruct_loss",
                reason=f"haoyangzheng-ai/didi-instruct @ {DIDI_COMMIT[:12]} releases the sampler only: algo.py's "
                       "training_step, _get_rewards, _get_tau, _get_regularization and _get_jeffrey_divergence have "
                       "empty bodies (`pass`); no other implementation was found in the code index",
                checked_against="the paper's score-function identity, exactly: on a masked-diffusion toy (2 tokens "
                                "of a 2-word vocabulary) the gradient of losskit's loss over an enumeration of "
                                "(t, x, z_t) equals autograd's gradient of the integral KL (1e-12), and the grouped "
                                "normalisation by hand (tests/test_generative_instruct.py)"),
    Oracle(objective="directional_distribution_consistency_loss", repo="sjtuplayer/few-shot-diffusion",
           path="train-whole.py (feature_dir, loss_feature, alpha = dishu ** (t / 1000))", commit=DDC_COMMIT,
           agreement="1e-12",
           differences="losskit's 'none' times the phasic weight, averaged, is the authors' (alpha * "
                       "loss_feature).mean(); ddc_direction and phasic_weight are the code's feature_dir and alpha."),
    Oracle(objective="dlle_loss", repo="HaozheLiu-ST/MEE", path="train.py (training_ours: loss_dlle)",
           commit=MEE_COMMIT, agreement="1e-12",
           differences="the code adds F.mse_loss on the real and on the generated batch; losskit's 'mean' is one "
                       "of them."),
    Oracle(objective="disomap_loss", repo="HaozheLiu-ST/MEE", path="train.py (training_ours: loss_iso)",
           commit=MEE_COMMIT, agreement="1e-12",
           differences="the code adds N(0, 0.05^2) noise to the target; the port takes that draw as an input and "
                       "losskit gets it through fake_embedding + noise / (1 - alpha)."),
    Oracle(objective="manifold_entropy_loss", repo="HaozheLiu-ST/MEE",
           path="train.py (entropy_buffer, enrtopy_loss, loss_entropy = -lr * log(...))", commit=MEE_COMMIT,
           agreement="relation",
           differences="equal (1e-12, lr = 1) on the first call, where every batch position shares the bank; the "
                       "code's bank keeps one row per batch position and its update drops batch_size rows while "
                       "appending one, so it shrinks to the previous batch, compared position by position "
                       "(asserted: after the update the code compares sample i only with the previous sample i); "
                       "losskit's update_entropy_bank is a FIFO of fixed size."),
]

F64 = torch.float64


# ----------------------------------------------------------------------------------- Uni-Instruct
def ui_generator_loss(y, y_real, y_fake):
    """FSIM_EDMLoss.generator_share_encoder_loss, after the networks: the elementwise SiD-form loss."""
    with torch.no_grad():
        weight_factor = abs(y - y_real).to(torch.float32 if y.dtype != F64 else F64).mean(
            dim=[1, 2, 3], keepdim=True).clip(min=0.00001)
    return (y_real - y_fake) * (y_fake - y) / weight_factor


def ui_branch(divergence, y, y_real, y_fake, density_ratio, variance_reduction=0):
    """The generator-update branches of fsim_training_loop.py (one summed value; the loss scaling and the GAN
    term left out). ``density_ratio`` (N, 1, 1, 1) is the ratio the code derives from the discriminator."""
    loss = ui_generator_loss(y, y_real, y_fake)
    if divergence == "Forward-KL":
        with torch.no_grad():
            r = density_ratio
            if variance_reduction == 1:
                r = r / (torch.sum(r, dim=0, keepdim=True) + 1e-8)
        return (loss * r).sum()
    if divergence == "Reverse-KL":
        return loss.sum()
    if divergence == "Jeffrey-KL":
        return 0.4 * (loss * density_ratio).sum() + 0.6 * loss.sum()
    if divergence == "Jensen-Shannon":
        with torch.no_grad():
            r = density_ratio
            w_sim = r / (r + 1)
            w_diff_instruct = 2 * r ** 2 / ((r + 1) ** 3) * (y_real - y_fake) * torch.norm(y_real - y_fake, p=2)
        return (loss * w_sim).sum() + (w_diff_instruct * y).sum()
    if divergence == "Chi-Square":
        with torch.no_grad():
            r = density_ratio
            w_diff_instruct = (y_real - y_fake) * torch.norm(y_real - y_fake, p=2)
        return (r ** 2 * 2 * loss).sum() - 4 * (r ** 2 * y * w_diff_instruct).sum()
    raise ValueError(divergence)


JKL = FGenerator("jkl_0.4", f=lambda t: 0.4 * t * torch.log(t) - 0.6 * torch.log(t),
                 f_prime_log=lambda s: 0.4 * (s + 1) - 0.6 * torch.exp(-s))


def _ui_inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 3, 4, 4, generator=g, dtype=F64)
    y_real = 0.7 * y + 0.3 * torch.randn(n, 3, 4, 4, generator=g, dtype=F64)
    y_fake = 0.7 * y + 0.3 * torch.randn(n, 3, 4, 4, generator=g, dtype=F64)
    log_r = 0.8 * torch.randn(n, generator=g, dtype=F64)
    return y, y_real, y_fake, log_r


@pytest.mark.parametrize(("branch", "divergence", "factor"), [
    ("Forward-KL", "kl", 1.0), ("Reverse-KL", "reverse_kl", 1.0), ("Jeffrey-KL", JKL, 1.0),
    ("Chi-Square", "pearson", 1.0), ("Jensen-Shannon", "js", 2.0)])
def test_uni_instruct_matches_authors_branches(branch, divergence, factor):
    y, y_real, y_fake, log_r = _ui_inputs(5)
    for i in range(5):  # one sample at a time: the code's Diff-Instruct norm is over the whole batch
        s = slice(i, i + 1)
        ref = ui_branch(branch, y[s], y_real[s], y_fake[s], log_r[s].exp().reshape(-1, 1, 1, 1))
        got = losskit.uni_instruct_loss(y[s], y_real[s], y_fake[s], log_r[s], divergence=divergence,
                                        reduction="sum")
        torch.testing.assert_close(factor * got, ref, rtol=1e-12, atol=1e-12)
    if branch in ("Forward-KL", "Reverse-KL", "Jeffrey-KL"):  # no batch norm in these: the whole batch at once
        ref = ui_branch(branch, y, y_real, y_fake, log_r.exp().reshape(-1, 1, 1, 1))
        got = losskit.uni_instruct_loss(y, y_real, y_fake, log_r, divergence=divergence, reduction="sum")
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_uni_instruct_gradient_matches_authors():
    """The gradients through the generator output and the two denoisers agree too (Chi-Square: both terms)."""
    y, y_real, y_fake, log_r = _ui_inputs(1, seed=3)
    a = [t.clone().requires_grad_() for t in (y, y_real, y_fake)]
    b = [t.clone().requires_grad_() for t in (y, y_real, y_fake)]
    ui_branch("Chi-Square", *a, log_r.exp().reshape(-1, 1, 1, 1)).backward()
    losskit.uni_instruct_loss(*b, log_r, divergence="pearson", reduction="sum").backward()
    for ga, gb in zip(a, b):
        torch.testing.assert_close(gb.grad, ga.grad, rtol=1e-12, atol=1e-12)


def test_uni_instruct_variance_reduction_is_normalize():
    y, y_real, y_fake, log_r = _ui_inputs(6, seed=1)
    ref = ui_branch("Forward-KL", y, y_real, y_fake, log_r.exp().reshape(-1, 1, 1, 1), variance_reduction=1)
    got = losskit.uni_instruct_loss(y, y_real, y_fake, log_r, divergence="kl", normalize=True, reduction="sum")
    torch.testing.assert_close(got / 6, ref, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------------------------- DDC
def ddc_port(feature_target, feature_source, features_source_bank, features_target_bank, t, beta_f=1.0):
    """train-whole.py: feature_dir, loss_feature, the phasic alpha and (alpha * loss_feature).mean()."""
    features_source = features_source_bank.mean(0)
    features_target = features_target_bank.mean(0)
    feature_dir = (features_target - features_source).unsqueeze(0)
    batch_size = feature_target.shape[0]
    mse_loss = torch.nn.MSELoss(reduction="none")
    feature_source_to_target = feature_source + feature_dir.repeat(batch_size, 1)
    loss_feature = mse_loss(feature_target, feature_source_to_target).mean(-1) * beta_f
    dishu = 20
    alpha = dishu ** (t / 1000)
    return (alpha * loss_feature).mean()


def test_ddc_matches_authors():
    g = torch.Generator().manual_seed(0)
    src_bank, tgt_bank = torch.randn(40, 16, generator=g, dtype=F64), torch.randn(10, 16, generator=g, dtype=F64) + 1
    src = torch.randn(8, 16, generator=g, dtype=F64)
    feat = torch.randn(8, 16, generator=g, dtype=F64, requires_grad=True)
    t = torch.randint(0, 300, (8,), generator=g).to(F64)  # the code divides a long t (float32); float64 here
    ref = ddc_port(feat, src, src_bank, tgt_bank, t)
    w = ddc_direction(src_bank, tgt_bank)
    per = losskit.directional_distribution_consistency_loss(feat, src, w, reduction="none")
    got = (phasic_weight(t.to(F64)) * per).mean()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got2 = losskit.directional_distribution_consistency_loss(feat, src, w, sample_weight=phasic_weight(t.to(F64)),
                                                              reduction="sum") / 8
    torch.testing.assert_close(got2, ref, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(ref, feat)
    (gb,) = torch.autograd.grad(got, feat)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- MEE
def mee_entropy_buffer(base, batch_size):
    """entropy_buffer, with the U(-1, 1) draw given."""
    return torch.stack([base.detach() for _ in range(batch_size)], dim=1)


def mee_entropy_loss(batch_code, replay_buffer, batch_size):
    """enrtopy_loss (sic) of train.py."""
    batch_code_r = batch_code.unsqueeze(0)
    dist_metric = torch.mean(torch.pow((replay_buffer - batch_code_r), 2), dim=2)
    dist_min, idx = torch.min(dist_metric, dim=0)
    loss = torch.mean(dist_min)
    batch_code_s = torch.stack([batch_code.detach()], dim=0)
    replay_buffer = torch.cat((replay_buffer[batch_size:], batch_code_s), dim=0)
    return loss, replay_buffer


def test_manifold_entropy_matches_authors_on_the_first_call():
    g = torch.Generator().manual_seed(0)
    base = 2 * torch.rand(32, 8, generator=g, dtype=F64) - 1
    z = torch.randn(6, 8, generator=g, dtype=F64, requires_grad=True)
    buf = mee_entropy_buffer(base, 6)
    loss, buf2 = mee_entropy_loss(z, buf, 6)
    ref = -1.0 * torch.log(loss)
    got = losskit.manifold_entropy_loss(z, base)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(ref, z)
    (gb,) = torch.autograd.grad(got, z)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)
    # the code's update: 32 - 6 + 1 rows (27, 22, 17, 12, 7, 2, then 1), each batch position with its own column
    assert buf2.shape == (27, 6, 8)
    for _ in range(6):
        z2 = torch.randn(6, 8, generator=g, dtype=F64)
        _, buf2 = mee_entropy_loss(z2, buf2, 6)
    assert buf2.shape == (1, 6, 8)  # shrunk to the previous batch, compared position by position
    z3 = torch.randn(6, 8, generator=g, dtype=F64)
    loss3, _ = mee_entropy_loss(z3, buf2, 6)
    torch.testing.assert_close(loss3, (z3 - z2).square().mean(-1).mean())


def test_dlle_and_disomap_match_authors():
    g = torch.Generator().manual_seed(0)
    t_z, t_z_aug, f_z, f_z_aug = (torch.randn(8, 8, generator=g, dtype=F64) for _ in range(4))
    t_z.requires_grad_()
    ref = F.mse_loss(t_z, t_z_aug.detach()) + F.mse_loss(f_z, f_z_aug.detach())
    got = losskit.dlle_loss(t_z, t_z_aug) + losskit.dlle_loss(f_z, f_z_aug)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # DIsoMap: alpha ~ N(0, 1), the target mixed in embedding space plus the 0.05 noise draw
    alpha = torch.randn(8, 1, generator=g, dtype=F64)
    noise = 0.05 * torch.randn(8, 8, generator=g, dtype=F64)
    mix_out = torch.randn(8, 8, generator=g, dtype=F64, requires_grad=True)  # cls(mix_input)
    mix_z = alpha * t_z + f_z * (1 - alpha) + noise
    ref = F.mse_loss(mix_out, mix_z.detach())
    got = losskit.disomap_loss(mix_out, t_z, f_z + noise / (1 - alpha), alpha[:, 0])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(ref, mix_out)
    (gb,) = torch.autograd.grad(got, mix_out)
    torch.testing.assert_close(gb, ga, rtol=1e-12, atol=1e-12)
    assert math.isfinite(got.item())
