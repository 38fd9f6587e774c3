"""GAN regularisers on the discriminator's embedding space against mode collapse (MaF-GAN with manifold
entropy estimation, Liu et al. 2022): DLLE and DIsoMap shape the embedding, and a nearest-neighbour entropy
estimate of the embeddings is maximised."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating

__all__ = ["dlle_loss", "DLLELoss", "disomap_loss", "DIsoMapLoss", "manifold_entropy_loss", "ManifoldEntropyLoss",
           "update_entropy_bank"]

MEE_PAPER = Paper("Combating Mode Collapse in GANs via Manifold Entropy Estimation", 2022, "2208.12055",
                  "Liu, Li, Wu, Liang, Huang, Li, Ghanem, Zheng")
N, D = 6, 4


def _matrix(name: str, x: torch.Tensor) -> None:
    check_floating(name, x)
    if x.dim() != 2:
        raise fail(name, "an embedding matrix (N, D)", f"shape {tuple(x.shape)}")


def _same(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    check_floating(name, x)
    if x.shape != ref.shape:
        raise fail(name, f"the shape of {ref_name} {tuple(ref.shape)}", f"shape {tuple(x.shape)}")


def _nan_at(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[0] = float("nan")
    return x


# ---------------------------------------------------------------------------------------------- DLLE
def _pair_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    z = torch.randn(N, D, generator=gen, dtype=torch.float64)
    za = z + 0.1 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return Example({"embedding": z.to(dtype), "augmented_embedding": za.to(dtype)}, grad=("embedding",))


def _pair_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("augmented_embedding of another shape",
                 ex.replace({"augmented_embedding": i["augmented_embedding"][:, :-1]}), "augmented_embedding"),
        BadInput("embedding without a batch axis", ex.replace({"embedding": i["embedding"][0]}), "embedding"),
        BadInput("NaN augmented_embedding", ex.replace({"augmented_embedding": _nan_at(i["augmented_embedding"])}),
                 "augmented_embedding"),
        BadInput("integer embedding", ex.replace({"embedding": i["embedding"].round().long()}), "embedding"),
    ]


EMBEDDING_PAIR = InputKind("embedding + augmented embedding", "the discriminator's embeddings (N, D) of samples and "
                           "of their augmented copies (N, D)", bad_inputs=_pair_bad, extreme=scale_input("embedding"))


@objective(
    "dlle_loss", seed=True, family="generative", input_kind=EMBEDDING_PAIR, example=_pair_example, paper=MEE_PAPER,
    properties={"nonnegative"}, formula="l_i = (1/D) ||D(x_i) - sg D(aug(x_i))||^2",
)
def dlle_loss(embedding: torch.Tensor, augmented_embedding: torch.Tensor, *,
              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Deep local linear embedding (DLLE): a sample's embedding by the discriminator should equal (be
    reconstructed from) that of its near neighbour on the data manifold, an augmented copy of it.

    .. math:: \\ell_i = \\frac1D\\big\\|D(x_i) - \\mathrm{sg}\\,D(\\tilde x_i)\\big\\|_2^2

    ``embedding (N, D)`` is the discriminator's ``D``-dimensional output on real or generated samples (the
    paper's discriminator outputs a vector, ``--outcomes 8``), ``augmented_embedding`` its output on the
    augmented samples ``x~`` (the authors: a random horizontal or vertical flip plus ``0.001 N(0, 1)`` noise),
    detached by the loss. ``reduction='mean'`` is ``F.mse_loss(embedding, augmented_embedding.detach())`` of
    the authors' code, which adds the term on the real and on the generated batch. A discriminator term.

    Paper: Liu, Li, Wu, Liang, Huang, Li, Ghanem, Zheng, "Combating Mode Collapse in GANs via Manifold Entropy
    Estimation", AAAI 2023, arXiv:2208.12055.
    """
    _matrix("embedding", embedding)
    _same("augmented_embedding", augmented_embedding, "embedding", embedding)
    per = (embedding - augmented_embedding.detach()).square().mean(-1)
    return finish(per, reduction, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------- DIsoMap
def _mix_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    zr = torch.randn(N, D, generator=gen, dtype=torch.float64)
    zf = torch.randn(N, D, generator=gen, dtype=torch.float64)
    a = torch.randn(N, generator=gen, dtype=torch.float64)
    zm = a[:, None] * zr + (1 - a[:, None]) * zf + 0.1 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return Example({"mixed_embedding": zm.to(dtype), "real_embedding": zr.to(dtype), "fake_embedding": zf.to(dtype),
                    "alpha": a.to(dtype)}, grad=("mixed_embedding",))


def _mix_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("real_embedding of another shape", ex.replace({"real_embedding": i["real_embedding"][:, :-1]}),
                 "real_embedding"),
        BadInput("fake_embedding of another batch size", ex.replace({"fake_embedding": i["fake_embedding"][:-1]}),
                 "fake_embedding"),
        BadInput("alpha of another batch size", ex.replace({"alpha": i["alpha"][:-1]}), "alpha"),
        BadInput("alpha with a feature axis", ex.replace({"alpha": i["alpha"][:, None]}), "alpha"),
        BadInput("NaN alpha", ex.replace({"alpha": _nan_at(i["alpha"])}), "alpha"),
        BadInput("integer mixed_embedding", ex.replace({"mixed_embedding": i["mixed_embedding"].round().long()}),
                 "mixed_embedding"),
    ]


EMBEDDING_MIX = InputKind("embedding of a mixture", "the discriminator's embedding (N, D) of the input mixture "
                          "alpha x_real + (1 - alpha) x_fake, its embeddings of x_real and x_fake (N, D), the "
                          "mixing coefficients alpha (N,)", bad_inputs=_mix_bad, extreme=scale_input("mixed_embedding"))


@objective(
    "disomap_loss", seed=True, family="generative", input_kind=EMBEDDING_MIX, example=_mix_example, paper=MEE_PAPER,
    properties={"nonnegative"},
    formula="l_i = (1/D) ||D(a_i x_i + (1 - a_i) g_i) - sg(a_i D(x_i) + (1 - a_i) D(g_i))||^2",
)
def disomap_loss(mixed_embedding: torch.Tensor, real_embedding: torch.Tensor, fake_embedding: torch.Tensor,
                 alpha: torch.Tensor, *, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Deep isometric feature mapping (DIsoMap): the discriminator should map the segment between a real and a
    generated sample onto the segment between their embeddings, so distances along the data manifold are
    kept (geodesics become straight) in the embedding space.

    .. math:: \\ell_i = \\frac1D\\big\\|D(\\alpha_i x_i + (1-\\alpha_i) g_i) -
              \\mathrm{sg}\\big(\\alpha_i D(x_i) + (1 - \\alpha_i) D(g_i)\\big)\\big\\|_2^2

    ``mixed_embedding (N, D)`` is the discriminator's output on the input mixture (differentiable),
    ``real_embedding`` / ``fake_embedding`` its outputs on the real and generated samples, ``alpha (N,)`` the
    mixing coefficients the caller drew (the authors draw ``alpha ~ N(0, 1)``, so the mixture also
    extrapolates). The target is detached. ``reduction='mean'`` is the authors' ``F.mse_loss``; their code
    also adds ``N(0, 0.05^2)`` noise to the target, which the loss, drawing nothing, leaves to the caller (add
    it to ``mixed_embedding``'s target by shifting ``fake_embedding`` with ``noise / (1 - alpha)``, or omit it).
    A discriminator term.

    Paper: Liu, Li, Wu, Liang, Huang, Li, Ghanem, Zheng, "Combating Mode Collapse in GANs via Manifold Entropy
    Estimation", AAAI 2023, arXiv:2208.12055.
    """
    _matrix("mixed_embedding", mixed_embedding)
    _same("real_embedding", real_embedding, "mixed_embedding", mixed_embedding)
    _same("fake_embedding", fake_embedding, "mixed_embedding", mixed_embedding)
    check_floating("alpha", alpha)
    if tuple(alpha.shape) != (mixed_embedding.shape[0],):
        raise fail("alpha", f"one coefficient per sample, shape ({mixed_embedding.shape[0]},)",
                   f"shape {tuple(alpha.shape)}")
    a = alpha[:, None]
    target = (a * real_embedding + (1 - a) * fake_embedding).detach()
    per = (mixed_embedding - target).square().mean(-1)
    return finish(per, reduction, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------- entropy
def update_entropy_bank(bank: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """The first-in first-out memory of past embeddings: drop the ``N`` oldest rows of ``bank (M, D)``, append
    ``embedding (N, D)`` (detached); the size stays ``M`` (``N <= M``). The authors start it from
    ``U(-1, 1)^(M x D)``, ``M = 1024``."""
    _matrix("bank", bank)
    _matrix("embedding", embedding)
    if embedding.shape[1] != bank.shape[1] or embedding.shape[0] > bank.shape[0]:
        raise fail("embedding", f"at most {bank.shape[0]} rows of {bank.shape[1]} features",
                   f"shape {tuple(embedding.shape)}")
    return torch.cat([bank[embedding.shape[0]:], embedding.detach().to(bank.dtype)])


def _bank_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    z = torch.randn(N, D, generator=gen, dtype=torch.float64)
    bank = 2 * torch.rand(10, D, generator=gen, dtype=torch.float64) - 1
    return Example({"embedding": z.to(dtype), "bank": bank.to(dtype)}, grad=("embedding",), batched=("embedding",))


def _bank_bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("bank of another width", ex.replace({"bank": i["bank"][:, :-1]}), "bank"),
        BadInput("empty bank", ex.replace({"bank": i["bank"][:0]}), "bank"),
        BadInput("bank without rows", ex.replace({"bank": i["bank"][0]}), "bank"),
        BadInput("NaN bank", ex.replace({"bank": _nan_at(i["bank"])}), "bank"),
        BadInput("integer embedding", ex.replace({"embedding": i["embedding"].round().long()}), "embedding"),
    ]


EMBEDDING_BANK = InputKind("embedding + memory bank", "the discriminator's embeddings (N, D) of a batch and a "
                           "memory bank (M, D) of past embeddings", bad_inputs=_bank_bad,
                           extreme=scale_input("embedding"))


@objective(
    "manifold_entropy_loss", seed=True, family="generative", input_kind=EMBEDDING_BANK, example=_bank_example,
    paper=MEE_PAPER, per_sample=False, batch_scalar=True, sample_weight=False,
    formula="L = -log( (1/N) sum_i min_k (1/D) ||z_i - sg b_k||^2 )",
)
def manifold_entropy_loss(embedding: torch.Tensor, bank: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """The negative non-parametric (nearest-neighbour) entropy estimate of the embedding distribution: the
    log of the mean squared distance from each embedding to its nearest neighbour in a memory bank of past
    embeddings, to maximise (this loss is its negative).

    .. math:: \\mathcal L = -\\log\\Big(\\frac1N \\sum_i \\min_k \\frac1D\\,\\|z_i - \\mathrm{sg}\\,b_k\\|_2^2\\Big)

    ``embedding (N, D)`` are the discriminator's embeddings of the batch (the generator's samples for the
    generator's term, real samples for the discriminator's), ``bank (M, D)`` the memory of past embeddings
    (detached; :func:`update_entropy_bank` rolls it). Pushing each embedding away from its most similar
    stored one raises a nearest-neighbour (Kozachenko–Leonenko-type) entropy estimate, against mode
    collapse. The authors scale it by a warm-up ``min(epoch / 100, 1)`` (the caller's). One loss for the
    batch (``reduction`` has no effect).

    Where losskit differs from the authors' code (HaozheLiu-ST/MEE, ``enrtopy_loss``): there the bank holds
    one row per batch position and its update drops ``batch_size`` rows while appending one, so after a few
    steps each sample is compared only with the sample at its position in the previous batch; losskit
    compares every embedding with the whole bank and keeps its size. On the first step (a shared bank) the
    two agree.

    Paper: Liu, Li, Wu, Liang, Huang, Li, Ghanem, Zheng, "Combating Mode Collapse in GANs via Manifold Entropy
    Estimation", AAAI 2023, arXiv:2208.12055.
    """
    _matrix("embedding", embedding)
    _matrix("bank", bank)
    if bank.shape[1] != embedding.shape[1] or bank.shape[0] == 0:
        raise fail("bank", f"a non-empty bank of {embedding.shape[1]} features per row", f"shape {tuple(bank.shape)}")
    diff = embedding[:, None, :] - bank.detach()[None]
    # log of the mean squared distance, scaled by each pair's largest |difference| so that embeddings of any
    # magnitude give a finite value (the squares of 1e30 overflow float32)
    s = diff.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(diff.dtype).tiny)
    log_d = (2 * s[..., 0].log() + (diff / s).square().mean(-1).log()).amin(1)
    n = log_d.new_tensor(float(log_d.shape[0]))
    return finish(-(torch.logsumexp(log_d, 0) - n.log()), reduction)


DLLELoss = dlle_loss.Module
DIsoMapLoss = disomap_loss.Module
ManifoldEntropyLoss = manifold_entropy_loss.Module
