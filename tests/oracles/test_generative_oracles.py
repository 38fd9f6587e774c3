"""Oracle tests for the generative family: ports of facebookresearch/flow_matching's schedulers and affine
path (flow matching), of Kinyugo/consistency_models' improved consistency training (iCT), and of the
PFGM++ authors' EDMLoss(pfgmv2=True) branch."""

import math

import numpy as np
import torch
from oracle_meta import NoReference, Oracle

import losskit
from losskit.generative import paths as P
from losskit.generative.consistency import (
    consistency_scalings,
    ict_noise_probs,
    ict_num_steps,
    karras_sigmas,
    pseudo_huber_c,
)

FM_COMMIT = "11568d37f8d5a080e12aa7b5305d9c35ae07d136"  # facebookresearch/flow_matching
KINYUGO_COMMIT = "07683cc10e854dabbe9e86fd79784a1f9d38f15a"  # Kinyugo/consistency_models
PFGMPP_COMMIT = "140465e2b6a9cae99257024bd3f9cebf6020512f"  # Newbeeer/pfgmpp
SLCT_COMMIT = "3f750d7c7fb2c727aeca54c33736f01ace713d16"  # quandao10/sLCT (README only)
FASTGEN_COMMIT = "34f30e8ff1a563555fc0c7d59f1c1409dacd8af2"  # NVlabs/FastGen

ORACLES = [
    Oracle(objective="flow_matching_loss", repo="facebookresearch/flow_matching",
           path="flow_matching/path/scheduler/scheduler.py (CondOTScheduler, CosineScheduler, LinearVPScheduler, "
                "VPScheduler); flow_matching/path/affine.py (AffineProbPath.sample, velocity_to_target, "
                "epsilon_to_target)", commit=FM_COMMIT, agreement="1e-12", source="peer",
           differences="the flow-matching library of Meta's group (Lipman, Chen, Shaul among its authors); the KO "
                       "paper released no separate code. Its usage loss is MSELoss(path_sample.dx_t, model(x_t, t)): "
                       "losskit's 'mean' with prediction='velocity'. The 'vp' sigma_t is written "
                       "sqrt(-expm1(-T)) (the library: sqrt(1 - exp(-T))), equal to 1e-12 away from t = 1."),
    Oracle(objective="consistency_training_loss", repo="Kinyugo/consistency_models",
           path="consistency_models/consistency_models.py (improved_timesteps_schedule, karras_schedule, "
                "lognormal_timestep_distribution, improved_loss_weighting, pseudo_huber_loss, skip_scaling, "
                "output_scaling, ImprovedConsistencyTraining)", commit=KINYUGO_COMMIT, agreement="relation",
           source="peer",
           differences="OpenAI released no iCT code; this is the most used reimplementation. Its pseudo_huber_loss "
                       "is elementwise, sqrt((a - b)^2 + c^2) - c with c = 0.00054 sqrt(d), then a mean over all "
                       "entries; the paper (and losskit) take d(a, b) = sqrt(||a - b||^2 + c^2) - c over the whole "
                       "sample. Relation asserted to 1e-12: losskit on the entries as samples of one entry, "
                       "pred.reshape(-1, 1) with c = 0.00054 sqrt(d) and each sample's weight repeated, reduced "
                       "with 'mean', equals the reimplementation's loss; the schedule, curriculum, lognormal "
                       "probabilities, weights and c_skip / c_out agree to 1e-12."),
    NoReference(objective="latent_consistency_loss",
                reason=f"the authors' repository quandao10/sLCT holds only a README at {SLCT_COMMIT[:12]} (no code "
                       "released); GitHub searched for a Cauchy consistency loss",
                checked_against="the closed forms: log1p(||a - b||^2 / (2 c^2)) on hand inputs and the iCT "
                                "inputs/weighting shared with consistency_training_loss (tests/test_generative.py)"),
    Oracle(objective="pfgmpp_loss", repo="Newbeeer/pfgmpp", path="training/loss.py (EDMLoss.__call__, pfgmv2=True)",
           commit=PFGMPP_COMMIT, agreement="relation",
           differences="the official loss returns weight * (D_yn - y)^2 per entry (EDM's training loop sums it); "
                       "losskit's per-sample loss is its mean over the entries (asserted to 1e-12 on the authors' "
                       "perturbed input, built from injected Beta and normal draws). The authors draw the radius "
                       "r sqrt(b / (1 - b)), b ~ Beta(N/2, D/2), times a uniform direction with NumPy; losskit's "
                       "pfgmpp_perturbation draws the same law as sigma sqrt(D) g / ||h|| (normal draws only, for "
                       "a torch generator): the identity is asserted on shared draws, the law by a KS test."),
    Oracle(objective="f_distill_loss", repo="NVlabs/FastGen",
           path="fastgen/methods/distribution_matching/f_distill.py (all_f_div_weighting_function, "
                "FdistillModel._get_f_div_weighting_h); fastgen/methods/common_loss.py "
                "(variational_score_distillation_loss)", commit=FASTGEN_COMMIT, agreement="relation",
           differences="NVIDIA's distillation library led by two of the paper's authors (Nie, Vahdat), with "
                       "f-distill. It works in x0-predictions on the clean generated sample with DMD's normaliser "
                       "w = 1/(mean|gen - teacher_x0| + 1e-6) and returns 1/2 mse(gen, sg(gen - w h (fake_x0 - "
                       "teacher_x0))), a mean over all B x d entries; its weighting table omits constant factors "
                       "(js r/(1+r), sh sqrt(r), neyman 1/r: losskit's generators give 1/2, 1/2, 2 times these) "
                       "and always divides h by (its batch mean + 1e-6). Relation asserted (1e-6, the epsilon): "
                       "with normalize=True, x_t = gen, scores = the x0-predictions and sample_weight = w, the "
                       "gradient of losskit's 'sum' is B d times the library's, for rkl, kl, js, sh, neyman, jf "
                       "(the time-binned EMA ratio normalisation and the ratio clamps are the training loop's). The "
                       "library's rkl weighting returns a 0-d tensor, on which its h.sum() / len(h) raises "
                       "TypeError; the port expands it to the batch."),
]


# ------------------------------------------------------------------ facebookresearch/flow_matching
def fm_scheduler(name, t):
    """(alpha_t, sigma_t, d_alpha_t, d_sigma_t) as the library's schedulers compute them."""
    if name == "cond_ot":
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)
    if name == "cosine":
        pi = torch.pi
        return (torch.sin(pi / 2 * t), torch.cos(pi / 2 * t), pi / 2 * torch.cos(pi / 2 * t),
                -pi / 2 * torch.sin(pi / 2 * t))
    if name == "linear_vp":
        return t, (1 - t ** 2) ** 0.5, torch.ones_like(t), -t / (1 - t ** 2) ** 0.5
    b, B = 0.1, 20.0  # VPScheduler defaults
    T = 0.5 * (1 - t) ** 2 * (B - b) + (1 - t) * b
    dT = -(1 - t) * (B - b) - b
    return (torch.exp(-0.5 * T), torch.sqrt(1 - torch.exp(-T)), -0.5 * dT * torch.exp(-0.5 * T),
            0.5 * dT * torch.exp(-T) / torch.sqrt(1 - torch.exp(-T)))


def fm_sample(name, x_0, x_1, t):
    """AffineProbPath.sample: x_t = sigma_t x_0 + alpha_t x_1, dx_t = d_sigma_t x_0 + d_alpha_t x_1."""
    a, s, da, ds = (c.reshape(-1, *([1] * (x_1.dim() - 1))) for c in fm_scheduler(name, t))
    return s * x_0 + a * x_1, ds * x_0 + da * x_1


def fm_velocity_to_target(name, velocity, x_t, t):
    a, s, da, ds = (c.reshape(-1, *([1] * (x_t.dim() - 1))) for c in fm_scheduler(name, t))
    return -ds / (da * s - ds * a) * x_t + s / (da * s - ds * a) * velocity


def fm_epsilon_to_target(name, epsilon, x_t, t):
    a, s, _, _ = (c.reshape(-1, *([1] * (x_t.dim() - 1))) for c in fm_scheduler(name, t))
    return 1 / a * x_t - s / a * epsilon


def _draws(seed, n=7, shape=(2, 3)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g, dtype=torch.float64),
            1 + torch.randn(n, *shape, generator=g, dtype=torch.float64),
            0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64),
            torch.randn(n, *shape, generator=g, dtype=torch.float64))


def test_flow_matching_against_facebookresearch_flow_matching():
    for path in sorted(P.PATHS):
        x0, x1, t, model = _draws(0)
        for got, want in zip(P.PATHS[path].coefficients(t), fm_scheduler(path, t)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        x_t, dx_t = fm_sample(path, x0, x1, t)
        torch.testing.assert_close(P.interpolate(x0, x1, t, path), x_t, rtol=1e-12, atol=1e-12)
        ours = losskit.flow_matching_loss(model, x0, x1, t, path=path)
        torch.testing.assert_close(ours, torch.nn.functional.mse_loss(model, dx_t), rtol=1e-12, atol=1e-12)
        pred = model.clone().requires_grad_(True)
        ref = model.clone().requires_grad_(True)
        losskit.flow_matching_loss(pred, x0, x1, t, path=path).backward()
        torch.nn.functional.mse_loss(ref, dx_t).backward()
        torch.testing.assert_close(pred.grad, ref.grad, rtol=1e-12, atol=1e-12)
        # the parameterisation conversions
        torch.testing.assert_close(P.convert(model, x_t, t, path=path, source="velocity", target="data"),
                                   fm_velocity_to_target(path, model, x_t, t), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(P.convert(model, x_t, t, path=path, source="noise", target="data"),
                                   fm_epsilon_to_target(path, model, x_t, t), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- Kinyugo/consistency_models
def kin_improved_timesteps_schedule(current_training_step, total_training_steps, initial_timesteps=10,
                                    final_timesteps=1280):
    total_training_steps_prime = math.floor(
        total_training_steps / (math.log2(math.floor(final_timesteps / initial_timesteps)) + 1))
    num_timesteps = initial_timesteps * math.pow(2, math.floor(current_training_step / total_training_steps_prime))
    return min(num_timesteps, final_timesteps) + 1


def kin_karras_schedule(num_timesteps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    rho_inv = 1.0 / rho
    steps = torch.arange(num_timesteps, dtype=torch.float64) / max(num_timesteps - 1, 1)
    sigmas = sigma_min ** rho_inv + steps * (sigma_max ** rho_inv - sigma_min ** rho_inv)
    return sigmas ** rho


def kin_lognormal_pdf(sigmas, mean=-1.1, std=2.0):
    pdf = torch.erf((torch.log(sigmas[1:]) - mean) / (std * math.sqrt(2))) - torch.erf(
        (torch.log(sigmas[:-1]) - mean) / (std * math.sqrt(2)))
    return pdf / pdf.sum()


def kin_improved_loss_weighting(sigmas):
    return 1 / (sigmas[1:] - sigmas[:-1])


def kin_pseudo_huber_loss(input, target):
    c = 0.00054 * math.sqrt(math.prod(input.shape[1:]))
    return torch.sqrt((input - target) ** 2 + c ** 2) - c


def kin_skip_scaling(sigma, sigma_data=0.5, sigma_min=0.002):
    return sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)


def kin_output_scaling(sigma, sigma_data=0.5, sigma_min=0.002):
    return (sigma_data * (sigma - sigma_min)) / (sigma_data ** 2 + sigma ** 2) ** 0.5


def test_ict_schedule_against_kinyugo():
    K = 400_000
    for k in (0, 1, 50_000, 99_999, 100_000, 250_000, 399_999, 800_000):
        assert ict_num_steps(k, K) == kin_improved_timesteps_schedule(k, K)
    for n in (11, 21, 1281):
        s = karras_sigmas(n)
        torch.testing.assert_close(s, kin_karras_schedule(n), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ict_noise_probs(s), kin_lognormal_pdf(s), rtol=1e-12, atol=1e-15)
        c_skip, c_out = consistency_scalings(s)
        torch.testing.assert_close(c_skip, kin_skip_scaling(s), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(c_out, kin_output_scaling(s), rtol=1e-12, atol=1e-15)


def test_ict_loss_against_kinyugo():
    """ImprovedConsistencyTraining's loss on shared draws: (pseudo_huber_loss(next_x, current_x) * w).mean()."""
    g = torch.Generator().manual_seed(3)
    n, shape = 6, (2, 4, 4)
    sigmas = karras_sigmas(ict_num_steps(150_000, 400_000))
    idx = torch.multinomial(kin_lognormal_pdf(sigmas), n, replacement=True, generator=g)
    next_x = torch.randn(n, *shape, generator=g, dtype=torch.float64)  # the student's f at sigmas[idx + 1]
    current_x = next_x + 0.01 * torch.randn(n, *shape, generator=g, dtype=torch.float64)  # the target at sigmas[idx]
    w = kin_improved_loss_weighting(sigmas)[idx].reshape(n, 1, 1, 1)
    ref = (kin_pseudo_huber_loss(next_x, current_x) * w).mean()
    d = math.prod(shape)
    ours = losskit.consistency_training_loss(
        next_x.reshape(-1, 1), current_x.reshape(-1, 1), sigmas[idx].repeat_interleave(d),
        sigmas[idx + 1].repeat_interleave(d), c=pseudo_huber_c(d))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)
    # and the paper's per-sample norm is what losskit computes by default
    per = losskit.consistency_training_loss(next_x, current_x, sigmas[idx], sigmas[idx + 1], reduction="none")
    sq = (next_x - current_x).flatten(1).square().sum(1)
    c = 0.00054 * math.sqrt(d)
    torch.testing.assert_close(per, (torch.sqrt(sq + c * c) - c) * w.flatten(), rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------------------------ Newbeeer/pfgmpp
def pfgmpp_authors(denoiser_out, images, rnd_normal, samples_norm_beta, gaussian, D, N, P_mean=-1.2, P_std=1.2,
                   sigma_data=0.5):
    """EDMLoss.__call__ with pfgmv2=True, stf=False; the random draws injected (rnd_normal, the
    np.random.beta draws, the direction's torch.randn), denoiser_out the network's output on y + n."""
    sigma = (rnd_normal * P_std + P_mean).exp()
    sigma_ = sigma.reshape((len(sigma), 1, 1, 1))
    weight = (sigma_ ** 2 + sigma_data ** 2) / (sigma_ * sigma_data) ** 2
    r = sigma.double() * np.sqrt(D).astype(np.float64)
    inverse_beta = samples_norm_beta / (1 - samples_norm_beta)
    inverse_beta = torch.from_numpy(inverse_beta).double()
    samples_norm = r * torch.sqrt(inverse_beta)
    samples_norm = samples_norm.view(len(samples_norm), -1)
    unit_gaussian = gaussian / torch.norm(gaussian, p=2, dim=1, keepdim=True)
    perturbation_x = unit_gaussian * samples_norm
    y = images
    n = perturbation_x.view_as(y)
    D_yn = denoiser_out(y + n, sigma_)
    return weight * ((D_yn - y) ** 2), sigma, y + n


def test_pfgmpp_against_the_authors():
    g = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(0)
    B, shape, D = 5, (3, 4, 4), 128
    N = math.prod(shape)
    images = torch.randn(B, *shape, generator=g, dtype=torch.float64)
    rnd_normal = torch.randn(B, generator=g, dtype=torch.float64)
    beta = rng.beta(N / 2.0, D / 2.0, size=B)
    gaussian = torch.randn(B, N, generator=g, dtype=torch.float64)
    W = torch.randn(shape[0], shape[0], generator=g, dtype=torch.float64) * 0.3

    def net(y, sigma):  # a toy denoiser: EDM-style skip + a channel mix
        c_skip = 0.25 / (sigma ** 2 + 0.25)
        return c_skip * y + torch.einsum("ij,bjhw->bihw", W, y) / (1 + sigma)

    ref, sigma, y = pfgmpp_authors(net, images, rnd_normal, beta, gaussian, D, N)
    out = net(y, sigma.reshape(-1, 1, 1, 1))
    ours = losskit.pfgmpp_loss(out, images, sigma, reduction="none")
    torch.testing.assert_close(ours, ref.flatten(1).mean(1), rtol=1e-12, atol=1e-14)
    # the same perturbation from losskit's parameterisation: b / (1 - b) = ||g||^2 / ||h||^2
    h2 = gaussian.square().sum(1) * (1 - torch.from_numpy(beta)) / torch.from_numpy(beta)
    ours_n = (sigma * math.sqrt(D) / h2.sqrt())[:, None] * gaussian
    torch.testing.assert_close(ours_n.view_as(images), y - images, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------ NVlabs/FastGen
FASTGEN_H = {
    "rkl": lambda r: torch.tensor(1, dtype=r.dtype, device=r.device),
    "kl": lambda r: r,
    "js": lambda r: 1 - 1 / (1 + r),
    "neyman": lambda r: 1 / torch.clamp(r, min=1e-8),
    "sh": lambda r: r ** 0.5,
    "jf": lambda r: 1 + r,
}
LOSSKIT_NAME = {"rkl": "reverse_kl", "kl": "kl", "js": "js", "neyman": "neyman", "sh": "hellinger", "jf": "jeffreys"}


def fastgen_f_distill(gen_data, teacher_x0, fake_score_x0, fake_logits, f_div):
    """_get_f_div_weighting_h (ratio_normalization=False, single process) then
    variational_score_distillation_loss(..., additional_scale=h)."""
    ratio = torch.exp(torch.clamp(fake_logits.mean(dim=1), min=-10.0, max=10.0)).detach()
    h = FASTGEN_H[f_div](ratio).expand_as(ratio)  # rkl's is 0-d: len(h) below raises in the library itself
    h = h / (h.sum() / len(h) + 1e-6)
    dims = tuple(range(1, teacher_x0.ndim))
    with torch.no_grad():
        w = 1 / ((gen_data - teacher_x0).abs().mean(dim=dims, keepdim=True) + 1e-6)
        w = w * h.reshape(-1, *([1] * (gen_data.ndim - 1)))
        pseudo_target = gen_data - (fake_score_x0 - teacher_x0) * w
    return 0.5 * torch.nn.functional.mse_loss(gen_data, pseudo_target, reduction="mean")


def test_f_distill_against_fastgen():
    g = torch.Generator().manual_seed(9)
    B, shape = 6, (3, 4, 4)
    gen = torch.randn(B, *shape, generator=g, dtype=torch.float64)
    teacher = gen + 0.3 * torch.randn(B, *shape, generator=g, dtype=torch.float64)
    fake = gen + 0.3 * torch.randn(B, *shape, generator=g, dtype=torch.float64)
    logits = torch.randn(B, 1, generator=g, dtype=torch.float64)
    w = 1 / ((gen - teacher).abs().flatten(1).mean(1) + 1e-6)
    for f_div, name in LOSSKIT_NAME.items():
        ref_x = gen.clone().requires_grad_(True)
        fastgen_f_distill(ref_x, teacher, fake, logits, f_div).backward()
        x = gen.clone().requires_grad_(True)
        losskit.f_distill_loss(x, teacher, fake, logits.mean(1), divergence=name, normalize=True, sample_weight=w,
                               reduction="sum").backward()
        torch.testing.assert_close(x.grad / gen.numel(), ref_x.grad, rtol=1e-5, atol=1e-12)
