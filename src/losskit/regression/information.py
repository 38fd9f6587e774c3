"""The Cauchy–Schwarz divergence information bottleneck for regression (CS-IB): a kernel estimate of the
conditional CS divergence between p(y|x) and the model's q(y_hat|x) (prediction) plus beta times the CS
quadratic mutual information between the inputs and the representation (compression).

Every Gram matrix is handled through its logarithm (the Gaussian kernel's exponent), with the distance
and overflow checks of :mod:`losskit.divergences.samples`, and every sum of kernel values is a
log-sum-exp: samples far apart give large finite values, never ``log 0``.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Choice
from .._core.validate import check_floating
from ..divergences.samples import _distances, _log_kernel
from ._inputs import BOTTLENECK, bottleneck_example

__all__ = ["cs_ib_loss", "CSIBLoss", "conditional_cs_divergence", "cs_quadratic_mutual_information"]

CSIB_PAPER = Paper("Cauchy-Schwarz Divergence Information Bottleneck for Regression", 2024, "2404.17951",
                   "Yu, Yu, Løkse, Jenssen, Príncipe")


def _flat(name: str, v: torch.Tensor, n: int | None = None) -> torch.Tensor:
    check_floating(name, v)
    if v.dim() < 1 or (n is not None and v.shape[0] != n):
        want = f"a batch of {n} samples (N, *)" if n is not None else "a batch of samples (N, *)"
        raise fail(name, want, f"shape {tuple(v.shape)}")
    return v.reshape(v.shape[0], -1)


def _log_gram(a: torch.Tensor, b: torch.Tensor | None, sigma: float, name: str) -> torch.Tensor:
    """``log k(a_i, b_j)`` for the Gaussian kernel ``exp(-||a - b||^2 / (2 sigma^2))``."""
    d2 = _distances(a, a if b is None else b, name, cross=b is not None)
    return _log_kernel(d2, "gaussian", sigma)


def _conditional_cs(lk: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor, l21: torch.Tensor,
                    denominator: str) -> torch.Tensor:
    if denominator == "paper":  # (sum_i K_ji)^2
        den = 2 * torch.logsumexp(lk, 1)
    else:  # the authors' loss_cs.py: sum_i K_ji^2
        den = torch.logsumexp(2 * lk, 1)

    def term(lo):
        return torch.logsumexp(torch.logsumexp(lk + lo, 1) - den, 0)

    return term(l1) + term(l2) - 2 * term(l21)


def conditional_cs_divergence(y_hat: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *, sigma: float = 1.0,
                              denominator: str = "paper") -> torch.Tensor:
    """The CS-IB prediction term: the kernel estimate of ``D_CS(p(y|x) || q(y_hat|x))`` (paper, Proposition 1).

    .. math:: \\hat D = \\log\\sum_j\\frac{\\sum_i K_{ji}L^1_{ji}}{(\\sum_i K_{ji})^2}
              + \\log\\sum_j\\frac{\\sum_i K_{ji}L^2_{ji}}{(\\sum_i K_{ji})^2}
              - 2\\log\\sum_j\\frac{\\sum_i K_{ji}L^{21}_{ji}}{(\\sum_i K_{ji})^2}

    ``K``, ``L^1``, ``L^2``: Gaussian Gram matrices (width ``sigma``) of ``x``, ``y`` and ``y_hat``;
    ``L^{21}_{ji} = k(y_hat_j, y_i)``. Natural logarithm. Exactly 0 when ``y_hat = y``; at finite ``N``
    the plug-in estimate is not guaranteed non-negative (the weights ``K_ji / (sum_i K_ji)^2`` are not
    symmetric), so a small negative value can occur. ``denominator='authors'`` uses
    ``sum_i K_ji^2`` in place of ``(sum_i K_ji)^2``, as the authors' ``loss_cs.py`` does.
    """
    hf = _flat("y_hat", y_hat)
    yf, xf = _flat("y", y, hf.shape[0]), _flat("x", x, hf.shape[0])
    if hf.shape != yf.shape:
        raise fail("y", f"the shape of y_hat {tuple(y_hat.shape)}", f"shape {tuple(y.shape)}")
    if denominator not in ("paper", "authors"):
        raise fail("denominator", "'paper' or 'authors'", repr(denominator))
    lk = _log_gram(xf, None, sigma, "x")
    return _conditional_cs(lk, _log_gram(yf, None, sigma, "y"), _log_gram(hf, None, sigma, "y_hat"),
                           _log_gram(hf, yf, sigma, "y_hat"), denominator)


def _qmi(lk: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    # log tr(KQ)/N^2 + log (1'K1 1'Q1)/N^4 - 2 log 1'KQ1/N^3; the powers of N cancel
    cross = torch.logsumexp(torch.logsumexp(lk, 0) + torch.logsumexp(lq, 1), 0)
    return torch.logsumexp((lk + lq).reshape(-1), 0) + torch.logsumexp(lk.reshape(-1), 0) \
        + torch.logsumexp(lq.reshape(-1), 0) - 2 * cross


def cs_quadratic_mutual_information(x: torch.Tensor, t: torch.Tensor, *, sigma: float = 1.0,
                                    normalized: bool = False) -> torch.Tensor:
    """The CS-IB compression term ``I_CS(x; t) = D_CS(p(x, t) || p(x) p(t))`` (paper, Proposition 2).

    .. math:: \\hat I_{CS} = \\log\\frac{\\mathrm{tr}(KQ)}{N^2} + \\log\\frac{\\mathbf 1^\\top K\\mathbf 1\\,
              \\mathbf 1^\\top Q\\mathbf 1}{N^4} - 2\\log\\frac{\\mathbf 1^\\top KQ\\mathbf 1}{N^3}

    ``K``, ``Q``: Gaussian Gram matrices (width ``sigma``) of ``x`` and ``t``; natural logarithm, >= 0.
    ``normalized=True``: ``I(x; t) / sqrt(I(x; x) I(t; t))``, the authors' ``CS_QMI_normalized`` (unitless).
    """
    xf = _flat("x", x)
    tf = _flat("t", t, xf.shape[0])
    lk, lq = _log_gram(xf, None, sigma, "x"), _log_gram(tf, None, sigma, "t")
    i = _qmi(lk, lq)
    if normalized:
        i = i / torch.sqrt(_qmi(lk, lk) * _qmi(lq, lq))
    return i


@objective(
    "cs_ib_loss", seed=True, family="regression", input_kind=BOTTLENECK, example=bottleneck_example,
    paper=CSIB_PAPER, per_sample=False, batch_scalar=True, sample_weight=False,
    formula="L = D_CS(p(y|x) || q(y_hat|x)) + beta I_CS(x; t), both Gaussian-kernel (Gram matrix) estimates: "
            "D = log sum_j (sum_i K L1)_j/(sum_i K)_j^2 + log sum_j (K L2) - 2 log sum_j (K L21); "
            "I = log tr(KQ)/N^2 + log 1'K1 1'Q1/N^4 - 2 log 1'KQ1/N^3",
    module_name="CSIBLoss",
    domains={"beta": NONNEGATIVE, "sigma": POSITIVE, "compression": Choice("qmi", "normalized"),
             "denominator": Choice("paper", "authors")},
)
def cs_ib_loss(y_hat: torch.Tensor, y: torch.Tensor, x: torch.Tensor, t: torch.Tensor, *, beta: float = 0.01,
               sigma: float = 1.0, compression: str = "qmi", denominator: str = "paper",
               reduction: str = "mean") -> torch.Tensor:
    """Cauchy–Schwarz information bottleneck for regression: the CS prediction term plus ``beta`` times
    the CS quadratic mutual information between the inputs and the representation.

    .. math:: \\mathcal L = \\hat D_{CS}\\big(p(y\\mid x)\\,\\|\\,q_\\theta(\\hat y\\mid x)\\big)
              + \\beta\\,\\hat I_{CS}(x; t)

    ``y_hat`` the predictions and ``y`` the targets, ``(N,)`` or ``(N, d_y)``; ``x (N, *)`` the inputs;
    ``t (N, *)`` the representation the decoder reads (the bottleneck). The prediction term is
    :func:`conditional_cs_divergence` (Proposition 1: no Gaussian likelihood, so no MSE), the
    compression term :func:`cs_quadratic_mutual_information` (Proposition 2), both with Gaussian
    kernels of one width ``sigma`` (default 1.0, the authors' choice for standardized inputs) and
    natural logarithms. ``beta = 0.01`` (the authors' default; they sweep 1e-4 to 1). ``compression``:
    ``'qmi'`` (default, the paper's ``I_CS``) or ``'normalized'`` (the authors' training script divides
    by ``sqrt(I(x;x) I(t;t))``). ``denominator``: ``'paper'`` (default, ``(sum_i K_ji)^2`` as
    Proposition 1 derives from the kernel density ratio) or ``'authors'`` (``sum_i K_ji^2`` as
    ``loss_cs.py`` computes). The authors take base-2 logarithms: their loss is ``L(beta ln 2) / ln 2``
    with ``compression='normalized', denominator='authors'``. One loss for the batch (O(N^2) kernels,
    ``reduction`` has no effect); differentiable in ``y_hat`` and ``t``.

    Paper: Yu, Yu, Løkse, Jenssen, Príncipe, "Cauchy-Schwarz Divergence Information Bottleneck for
    Regression", 2024, arXiv:2404.17951.
    """
    hf = _flat("y_hat", y_hat)
    n = hf.shape[0]
    yf, xf, tf = _flat("y", y, n), _flat("x", x, n), _flat("t", t, n)
    if hf.shape != yf.shape:
        raise fail("y", f"the shape of y_hat {tuple(y_hat.shape)}", f"shape {tuple(y.shape)}")
    lk = _log_gram(xf, None, sigma, "x")
    total = _conditional_cs(lk, _log_gram(yf, None, sigma, "y"), _log_gram(hf, None, sigma, "y_hat"),
                            _log_gram(hf, yf, sigma, "y_hat"), denominator)
    if beta != 0:
        lq = _log_gram(tf, None, sigma, "t")
        i = _qmi(lk, lq)
        if compression == "normalized":
            i = i / torch.sqrt(_qmi(lk, lk) * _qmi(lq, lq))
        total = total + beta * i
    return finish(total, reduction)


CSIBLoss = cs_ib_loss.Module
