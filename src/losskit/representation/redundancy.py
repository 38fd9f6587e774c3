"""Redundancy-reduction objectives: Barlow Twins, VICReg and mixed-sample Barlow Twins.

These are batch-level losses (one value per batch, built from batch statistics): ``reduction``
is accepted for the common signature, and every reduction returns that one value (``'none'`` a
0-dim tensor). With ``gather=True`` the batch statistics are those of the union of every rank's
batch (autograd all-gather; exact value and gradients, see :mod:`losskit.representation.distributed`).
"""

from __future__ import annotations

import torch

from .._core import Paper, check_reduction, fail, objective
from .._core import distributed as D
from .._core.domains import FLAG, NONNEGATIVE, POSITIVE, UNIT
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, require
from ._inputs import scale_all

__all__ = ["barlow_twins", "vicreg", "mixed_barlow_twins", "BarlowTwinsLoss", "VICRegLoss",
           "MixedBarlowTwinsLoss", "cross_correlation"]

FAMILY = "representation"
BT = Paper("Barlow Twins: Self-Supervised Learning via Redundancy Reduction", 2021, "2103.03230",
           "Zbontar, Jing, Misra, LeCun, Deny")
VICREG = Paper("VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning", 2022,
               "2105.04906", "Bardes, Ponce, LeCun")
MIXBT = Paper("Guarding Barlow Twins Against Overfitting with Mixed Samples", 2023, "2312.02151",
              "Bandara, De Melo, Patel")


def _example(gen, dtype, n: int = 8, d: int = 4) -> Example:
    z1 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({"z1": z1.to(dtype), "z2": z2.to(dtype)}, grad=("z1", "z2"))


def _bad(ex: Example) -> list[BadInput]:
    z1, z2 = ex.inputs["z1"], ex.inputs["z2"]
    return [
        BadInput("batch size mismatch", ex.replace({"z2": z2[:-1]}), "z2"),
        BadInput("feature size mismatch", ex.replace({"z2": z2[:, :-1]}), "z2"),
        BadInput("no feature dimension", ex.replace({"z1": z1[:, 0], "z2": z2[:, 0]}), "z1"),
        BadInput("a single sample", ex.replace({"z1": z1[:1], "z2": z2[:1]}), "z1"),
        BadInput("integer embeddings", ex.replace({"z1": z1.round().long()}), "z1"),
    ]


TWO_BRANCHES = InputKind("two branches", "embeddings (N, D) of two augmented views, N >= 2",
                         bad_inputs=_bad, extreme=scale_all())


def _branches(*named, gather=False):
    (n0, x0) = named[0]
    if x0.dim() >= 1 and x0.shape[0] < 2 and not gather:
        raise fail(n0, "a batch of at least 2 samples (batch statistics)", f"shape {tuple(x0.shape)}")
    for name, x in named:
        check_floating(name, x)
        if x.dim() != 2:
            raise fail(name, "embeddings of shape (N, D)", f"shape {tuple(x.shape)}")
        if x.shape != x0.shape:
            raise fail(name, f"the shape of {n0} {tuple(x0.shape)}", f"shape {tuple(x.shape)}")


def _gathered(xs, gather, group):
    return [D.all_gather(x, group)[0] for x in xs] if gather else list(xs)


def _batch_level(loss, gather, group):
    """Every rank computes the whole-batch loss from gathered inputs: keep its value, give each rank
    1/world of its gradient (the gathers' backward sums the ranks)."""
    if not gather or not D.is_distributed(group):
        return loss
    ws = D.world(group)[1]
    return D.global_value(loss / ws, group)


def standardize(z: torch.Tensor, eps: float, unbiased: bool = False) -> torch.Tensor:
    """Per-feature standardisation over the batch: ``(z - mean) / sqrt(var + eps)``, with the biased
    variance (BatchNorm without affine, Barlow Twins' official code) or the unbiased one (``z.std``).

    A feature with ``var + eps == 0`` (collapsed: every sample equal, and ``eps = 0``) standardises to 0
    (value and gradient), not ``0 / 0``. The data are centred on their first sample before the mean is
    taken (the same value in exact arithmetic), so equal samples give an exactly zero variance.
    """
    zs = z - z[:1].detach()
    zc = zs - zs.mean(0)
    var = zc.pow(2).sum(0) / (z.shape[0] - 1) if unbiased else zc.pow(2).mean(0)
    v = var + eps
    pos = v > 0
    return torch.where(pos, zc / torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(zc))


def cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5, unbiased: bool = False) -> torch.Tensor:
    """C_ij = (1/N) sum_n a~_ni b~_nj with a~, b~ standardised per feature (Barlow Twins' C)."""
    return standardize(a, eps, unbiased).T @ standardize(b, eps, unbiased) / a.shape[0]


def _bt_terms(c: torch.Tensor, lambd: float) -> torch.Tensor:
    diag = torch.diagonal(c)
    off = c.pow(2).sum() - diag.pow(2).sum()
    return (1 - diag).pow(2).sum() + lambd * off


@objective(
    "barlow_twins", batch_scalar=True, family=FAMILY, input_kind=TWO_BRANCHES, example=_example, paper=BT, per_sample=False,
    sample_weight=False, properties={"nonnegative"}, module_name="BarlowTwinsLoss",
    domains={"lambd": NONNEGATIVE, "eps": NONNEGATIVE, "unbiased": FLAG},
    formula="L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,  C = z1~^T z2~ / N (standardised)",
)
def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, *, lambd: float = 5e-3, eps: float = 1e-5,
                 unbiased: bool = False, gather: bool = False, group=None, reduction: str = "mean") -> torch.Tensor:
    """Barlow Twins: the cross-correlation of the two branches is pushed to the identity.

    .. math:: \\mathcal L = \\sum_i (1 - C_{ii})^2 + \\lambda \\sum_{i \\ne j} C_{ij}^2,\\qquad
              C = \\tfrac1N \\tilde z_1^\\top \\tilde z_2

    ``z~`` standardises each feature over the batch with the biased variance plus ``eps`` (the
    official code's ``BatchNorm1d(affine=False)``). ``lambd`` = 5e-3 (the paper's value; lightly's
    default too). lightly's ``BarlowTwinsLoss`` standardises with the unbiased std and no eps: that
    is ``unbiased=True, eps=0``. ``lambd``, ``eps`` >= 0; a constant feature (zero variance, ``eps = 0``)
    standardises to 0. A batch-level loss: every reduction returns the one value.

    Paper: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", 2021, arXiv:2103.03230.
    """
    check_reduction(reduction)
    _branches(("z1", z1), ("z2", z2), gather=gather)
    a, b = _gathered((z1, z2), gather, group)
    return _batch_level(_bt_terms(cross_correlation(a, b, eps, unbiased), lambd), gather, group)


def _vicreg_var(z, gamma, eps):
    std = torch.sqrt(z.var(0) + eps)
    return torch.relu(gamma - std).mean()


def _vicreg_cov(z):
    n, d = z.shape
    zc = z - z.mean(0)
    cov = zc.T @ zc / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


@objective(
    "vicreg", batch_scalar=True, family=FAMILY, input_kind=TWO_BRANCHES, example=_example, paper=VICREG, per_sample=False,
    sample_weight=False, properties={"nonnegative"}, module_name="VICRegLoss",
    domains={"sim_coeff": NONNEGATIVE, "std_coeff": NONNEGATIVE, "cov_coeff": NONNEGATIVE, "gamma": POSITIVE,
             "eps": POSITIVE},
    formula="L = lambda mse(z1, z2) + mu [v(z1) + v(z2)] / 2 + nu [c(z1) + c(z2)],  "
            "v = mean_d relu(gamma - sqrt(Var z_d + eps)), c = sum_{i!=j} Cov_ij^2 / D",
)
def vicreg(z1: torch.Tensor, z2: torch.Tensor, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, gamma: float = 1.0, eps: float = 1e-4, gather: bool = False, group=None,
           reduction: str = "mean") -> torch.Tensor:
    """VICReg: invariance (MSE), variance (hinge on each feature's std) and covariance (off-diagonal) terms.

    .. math:: \\mathcal L = \\lambda\\, \\tfrac{1}{ND}\\lVert z_1 - z_2 \\rVert^2
              + \\mu\\, \\tfrac{v(z_1) + v(z_2)}{2} + \\nu\\, [c(z_1) + c(z_2)]

    with ``v(z) = mean_d relu(gamma - sqrt(Var(z_d) + eps))`` (unbiased variance) and
    ``c(z) = sum_{i != j} Cov(z)_ij^2 / D``. The variance term is averaged over the two branches as in
    the official code (the paper writes the sum; lightly's ``VICRegLoss`` averages too). Defaults
    lambda = mu = 25, nu = 1, gamma = 1, eps = 1e-4 (coefficients >= 0; gamma, eps > 0: eps = 0 would give an
    infinite gradient at a collapsed feature). Embeddings whose squared covariances overflow raise. A
    batch-level loss.

    Paper: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", 2022, arXiv:2105.04906.
    """
    check_reduction(reduction)
    _branches(("z1", z1), ("z2", z2), gather=gather)
    a, b = _gathered((z1, z2), gather, group)
    inv = (a - b).pow(2).mean()
    va, vb = _vicreg_var(a, gamma, eps), _vicreg_var(b, gamma, eps)
    ca, cb = _vicreg_cov(a), _vicreg_cov(b)
    # the covariance term grows as |z|^4: embeddings too large for it (float32 beyond ~1e9) raise, naming the
    # input, instead of giving inf - inf = NaN (a value check: it follows the validation mode)
    for name, x, term in (("z1", z1, va + ca), ("z2", z2, vb + cb)):
        require(name, x, lambda t=term: ~torch.isfinite(t),
                f"embeddings whose squared covariances fit in {a.dtype} (VICReg's covariance term)",
                lambda x=x: f"magnitudes up to {x.abs().max().item():.3g}")
    require("z2", z2, lambda: ~torch.isfinite(inv), f"embeddings whose squared differences from z1 fit in {a.dtype}",
            lambda: f"magnitudes up to {z2.abs().max().item():.3g}")
    var = (va + vb) / 2
    cov = ca + cb
    return _batch_level(sim_coeff * inv + std_coeff * var + cov_coeff * cov, gather, group)


def _mix_example(gen, dtype, n: int = 8, d: int = 4) -> Example:
    ex = _example(gen, dtype, n, d)
    perm = torch.randperm(n, generator=gen)
    alpha = 0.3
    z_mix = alpha * ex.inputs["z1"].double() + (1 - alpha) * ex.inputs["z2"].double()[perm]
    z_mix = z_mix + 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return Example({**ex.inputs, "z_mix": z_mix.to(dtype), "perm": perm}, options={"alpha": alpha},
                   grad=("z1", "z2", "z_mix"))


def _mix_bad(ex: Example) -> list[BadInput]:
    return _bad(ex) + [
        BadInput("mixed batch of the wrong shape", ex.replace({"z_mix": ex.inputs["z_mix"][:, :-1]}), "z_mix"),
        BadInput("perm not a permutation", ex.replace({"perm": torch.zeros_like(ex.inputs["perm"])}), "perm"),
        BadInput("alpha outside [0, 1]", ex.replace(options={"alpha": 1.5}), "alpha"),
    ]


MIXED = InputKind("two branches + mixed", "z1, z2 (N, D), embeddings z_mix of alpha x1 + (1-alpha) x2[perm], perm (N,)",
                  bad_inputs=_mix_bad, extreme=scale_all())


@objective(
    "mixed_barlow_twins", seed=True, batch_scalar=True, family=FAMILY, input_kind=MIXED, example=_mix_example, paper=MIXBT, per_sample=False,
    sample_weight=False, properties={"nonnegative"}, module_name="MixedBarlowTwinsLoss",
    domains={"alpha": UNIT, "lambd": NONNEGATIVE, "scale": NONNEGATIVE, "eps": NONNEGATIVE, "unbiased": FLAG},
    formula="L = L_BT(z1, z2) + s lambda (||C(Zm, Z1) - [a C(Z1, Z1) + (1-a) C(Z2[perm], Z1)]||^2 "
            "+ ||C(Zm, Z2) - [a C(Z1, Z2) + (1-a) C(Z2[perm], Z2)]||^2)",
)
def mixed_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, z_mix: torch.Tensor, perm: torch.Tensor, *,
                       alpha: float, lambd: float = 1 / 128, scale: float = 4.0, eps: float = 0.0,
                       unbiased: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Mixed Barlow Twins: Barlow Twins plus a regulariser asking mixed samples' features to mix linearly.

    .. math:: \\mathcal L = \\mathcal L_{BT} + s\\lambda\\left(\\lVert C(Z_M, Z_1) - [\\alpha C(Z_1, Z_1)
              + (1-\\alpha) C(Z_2^\\pi, Z_1)]\\rVert_F^2 + \\lVert C(Z_M, Z_2) - [\\alpha C(Z_1, Z_2)
              + (1-\\alpha) C(Z_2^\\pi, Z_2)]\\rVert_F^2\\right)

    ``z_mix`` are the embeddings of the mixed inputs ``alpha x1 + (1 - alpha) x2[perm]`` (x1, x2 the two
    augmented batches), ``perm`` the permutation used to mix. C is Barlow Twins' standardised
    cross-correlation, standardised as in the official code (unbiased std, ``eps = 0``); a constant
    feature (collapsed embeddings, zero variance) standardises to 0 instead of ``0 / 0``, so the loss
    stays defined (Barlow Twins' term is then D for fully collapsed branches). ``alpha`` in [0, 1];
    ``lambd``, ``scale``, ``eps`` >= 0. Defaults lambda = 1/128 (also the Barlow Twins
    off-diagonal weight here, as in the paper's CIFAR setting) and s = 4. As in the official code the
    target correlations are not detached. A batch-level loss.

    Paper: Bandara, De Melo, Patel, "Guarding Barlow Twins Against Overfitting with Mixed Samples", 2023,
    arXiv:2312.02151.
    """
    check_reduction(reduction)
    _branches(("z1", z1), ("z2", z2), ("z_mix", z_mix))
    n = z1.shape[0]
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool or tuple(perm.shape) != (n,):
        raise fail("perm", f"a permutation of range({n})", f"{perm.dtype} tensor of shape {tuple(perm.shape)}")
    require("perm", perm, lambda: (torch.sort(perm).values != torch.arange(n, device=perm.device)).any(),
            f"a permutation of range({n})", lambda: f"{perm.tolist()}, not a permutation")
    a, b, m = (standardize(x, eps, unbiased) for x in (z1, z2, z_mix))
    bp = b[perm]

    def cc(x, y):
        return x.T @ y / n

    bt = _bt_terms(cc(a, b), lambd)
    reg = (cc(m, a) - (alpha * cc(a, a) + (1 - alpha) * cc(bp, a))).pow(2).sum() \
        + (cc(m, b) - (alpha * cc(a, b) + (1 - alpha) * cc(bp, b))).pow(2).sum()
    return bt + scale * lambd * reg


BarlowTwinsLoss = barlow_twins.Module
VICRegLoss = vicreg.Module
MixedBarlowTwinsLoss = mixed_barlow_twins.Module
