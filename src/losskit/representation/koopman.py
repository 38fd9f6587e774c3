"""The information-theoretic regulariser of Koopman latents (Cheng et al., "Information Shapes Koopman
Representation").

Two terms on a batch of latent trajectories ``z`` ``(B, T, H)``: a temporal InfoNCE whose positives are
each step's ``k`` neighbours on either side (the latent mutual-information term, "simplicity") and the von
Neumann entropy of the trace-normalised latent covariance (mode diversity, "expressiveness"). The
Koopman prediction and reconstruction errors of the paper's full objective are the model's own MSE
terms and are added by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import Paper, check_reduction, fail, objective
from .._core.domains import COUNT, FLAG, POSITIVE, REAL, Real
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating

__all__ = ["koopman_information_loss", "KoopmanInformationLoss", "temporal_info_nce", "von_neumann_entropy"]

PAPER = Paper("Information Shapes Koopman Representation", 2025, "2510.13025",
              "Cheng, Yuan, Yang, Zhang, Cheng, He, Sun")


def _scale(x: torch.Tensor) -> torch.Tensor:
    s = x.detach().abs().amax()
    return torch.where(s > 0, s, torch.ones_like(s))


def temporal_info_nce(z: torch.Tensor, k: int = 3, temperature: float = 0.07) -> torch.Tensor:
    """Multi-positive InfoNCE along time: for each anchor step ``n`` in ``[k, T - k)`` the positives are
    ``z_{n±i}``, ``1 <= i <= k``, the negatives every other step of the same trajectory; cosine
    similarities over ``temperature``. Returns the mean over trajectories and anchors."""
    b, t, _ = z.shape
    zn = F.normalize(z / _scale(z), dim=-1)  # cosine: scale-free; prescaled so huge latents do not overflow
    sim = zn @ zn.transpose(1, 2) / temperature  # (B, T, T)
    idx = torch.arange(t, device=z.device)
    gap = (idx[:, None] - idx[None, :]).abs()
    anchors = idx[k:t - k]
    sim = sim[:, anchors]  # (B, A, T)
    g = gap[anchors]
    neg_inf = torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device)
    pos = torch.logsumexp(torch.where((g >= 1) & (g <= k), sim, neg_inf), dim=-1)
    every = torch.logsumexp(torch.where(g >= 1, sim, neg_inf), dim=-1)
    return (every - pos).mean()


def von_neumann_entropy(z: torch.Tensor, center: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``S(rho) = -sum_i lambda_i log lambda_i``, ``lambda`` the eigenvalues of ``rho = Sigma / tr Sigma``,
    ``Sigma`` the (unbiased) covariance of every latent ``z`` ``(..., H)`` pooled, plus ``eps I``;
    eigenvalues are clamped at ``eps`` before the log."""
    x = z.reshape(-1, z.shape[-1])
    # rho is scale-free: work with x / s (s = max |x|, a constant) so that the covariance cannot overflow,
    # and scale eps by 1 / s^2 to keep exactly Sigma + eps I and the eps floor of the trace
    s = _scale(x)
    x = x / s
    e = eps / s.pow(2)
    if center:
        x = x - x.mean(0, keepdim=True)
    sigma = x.T @ x / (x.shape[0] - 1)
    sigma = sigma + e * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    rho = sigma / torch.maximum(torch.trace(sigma), e)
    lam = torch.linalg.eigvalsh(rho).clamp_min(eps)
    return -(lam * lam.log()).sum()


def _example(gen, dtype, b: int = 3, t: int = 10, h: int = 4) -> Example:
    steps = torch.arange(t, dtype=torch.float64)
    freq = 0.3 + torch.rand(b, 1, h, generator=gen, dtype=torch.float64)
    phase = 6.3 * torch.rand(b, 1, h, generator=gen, dtype=torch.float64)
    z = torch.sin(freq * steps[None, :, None] + phase) + 0.2 * torch.randn(b, t, h, generator=gen,
                                                                          dtype=torch.float64)
    return Example({"z": z.to(dtype)}, options={"k": 2}, grad=("z",))


def _bad(ex: Example) -> list[BadInput]:
    z = ex.inputs["z"]
    return [
        BadInput("no time axis", ex.replace({"z": z[:, 0]}), "z"),
        BadInput("trajectories too short for k", ex.replace({"z": z[:, :5]}), "z"),
        BadInput("integer latents", ex.replace({"z": z.round().long()}), "z"),
        BadInput("temperature 0", ex.replace(options={"temperature": 0.0}), "temperature"),
    ]


TRAJECTORIES = InputKind("latent trajectories", "Koopman latents z (B, T, H) of B trajectories of T steps",
                         bad_inputs=_bad, extreme=lambda ex: ex.map_floats(lambda x: (x * 1e3).float()))


@objective(
    "koopman_information_loss", batch_scalar=True, family="representation", input_kind=TRAJECTORIES,
    example=_example, paper=PAPER, per_sample=False, sample_weight=False, module_name="KoopmanInformationLoss",
    domains={"mi_weight": REAL, "entropy_weight": REAL, "k": COUNT, "temperature": POSITIVE, "center": FLAG,
             "eps": Real(0.0, None, lo_open=True)},
    formula="L = alpha InfoNCE_k(z) - beta S(rho),  rho = Cov(z) / tr Cov(z),  S = -tr(rho log rho)",
)
def koopman_information_loss(z: torch.Tensor, *, mi_weight: float = 2.0, entropy_weight: float = 0.1, k: int = 3,
                             temperature: float = 0.07, center: bool = True, eps: float = 1e-8,
                             reduction: str = "mean") -> torch.Tensor:
    """Information-theoretic Koopman regulariser: latent mutual information (temporal InfoNCE) traded
    against the von Neumann entropy of the latent covariance.

    .. math:: \\mathcal L = \\alpha\\,\\mathcal L_{\\mathrm{NCE}}(z) - \\beta\\, S(\\rho),\\qquad
              \\rho = \\frac{\\Sigma_z + \\epsilon I}{\\operatorname{tr}(\\Sigma_z + \\epsilon I)},\\quad
              S(\\rho) = -\\sum_i \\lambda_i(\\rho) \\log \\lambda_i(\\rho)

    ``z`` ``(B, T, H)``: the encoder's latents of ``B`` trajectories of ``T`` steps. ``L_NCE`` (see
    :func:`temporal_info_nce`) maximises a lower bound on the mutual information between a latent and
    its ``k`` temporal neighbours on either side (the other steps of the trajectory are the negatives;
    anchors ``n`` in ``[k, T - k)``, cosine similarity over ``temperature``); ``S`` (see
    :func:`von_neumann_entropy`) is the entropy of the eigenvalues of the trace-normalised covariance of
    every latent in the batch (centred; ``eps`` added to the covariance and as the eigenvalue floor). The
    paper's full objective is ``L_fwd + lambda L_id + L`` with the model's prediction and reconstruction
    MSEs, which the caller adds.

    ``mi_weight`` = alpha = 2, ``k`` = 3, ``temperature`` = 0.07: the official cylinder-flow
    configuration (``Wenxuan52/InformationKoopman``, ``train_scripts/physical_simulation/cylinder``).
    **Sign of the entropy term.** The paper argues that the von Neumann entropy prevents the collapse
    onto a few dominant modes that an overemphasised MI term causes, so losskit *maximises* it
    (``- beta S`` with ``entropy_weight`` = beta = 0.1 > 0). The official trainer (``trainer.py`` at
    commit 32f52a1) adds ``+ beta * S`` to the loss it minimises; to reproduce that code pass
    ``entropy_weight=-0.1``. Both weights accept any real number. The official code computes the InfoNCE
    ratio with ``+ 1e-8`` in its denominator; losskit uses exact log-sum-exps (agreement ~1e-8).
    Requires ``T >= 2k + 2`` (every anchor then has a negative); the official code returns 0 for
    shorter trajectories, losskit raises. The eigen-decomposition's gradient is undefined where the
    covariance has repeated eigenvalues (e.g. fully collapsed latents). A batch-level loss: every
    reduction returns the one value.

    Paper: Cheng, Yuan, Yang, Zhang, Cheng, He, Sun, "Information Shapes Koopman Representation",
    2025, arXiv:2510.13025.
    """
    check_reduction(reduction)
    check_floating("z", z)
    if z.dim() != 3:
        raise fail("z", "latent trajectories of shape (B, T, H)", f"shape {tuple(z.shape)}")
    if z.shape[1] < 2 * k + 2:
        raise fail("z", f"trajectories of at least 2k + 2 = {2 * k + 2} steps (k = {k})", f"shape {tuple(z.shape)}")
    nce = temporal_info_nce(z, k, temperature)
    ent = von_neumann_entropy(z, center, eps)
    return mi_weight * nce - entropy_weight * ent


KoopmanInformationLoss = koopman_information_loss.Module
