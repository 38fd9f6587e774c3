"""Binary, batch-coupled surrogates: AnyLoss (soft confusion-matrix metrics) and EnsLoss (random calibrated
loss-derivatives)."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, REAL, Choice, Maybe, Tensor
from .._core.inputs import BINARY_LOGITS, binary_example
from .._core.validate import check_floating, check_same_shape, require

__all__ = ["anyloss", "AnyLoss", "ensloss", "EnsLoss", "ANYLOSS_METRICS"]

ANYLOSS_PAPER = Paper("AnyLoss: Transforming Classification Metrics into Loss Functions", 2024, "2405.14745",
                      "Han, Moniz, Chawla")
ENSLOSS_PAPER = Paper("EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification",
                      2024, "2409.00908", "Dai")

ANYLOSS_METRICS = ("accuracy", "f1", "fbeta", "gmean", "gmean_sqrt", "balanced_accuracy", "mcc")


def _binary_inputs(logits, target):
    check_floating("logits", logits)
    check_floating("target", target)
    check_same_shape("target", target, "logits", logits)  # values in [0, 1]: declared (BINARY_LOGITS)
    return target.to(logits.dtype)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0/0 := 0`` (a rate undefined for this batch contributes nothing)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


@objective(
    "anyloss", seed=True, batch_scalar=True, family="classification", input_kind=BINARY_LOGITS, example=binary_example, paper=ANYLOSS_PAPER,
    properties={"nonnegative", "bounded"}, per_sample=False, sample_weight=False,
    formula="A = sigmoid(L (sigmoid(z) - 1/2)); TP = sum y A, FN = sum y (1 - A), FP = sum (1 - y) A, "
            "TN = sum (1 - y)(1 - A); loss = 1 - metric(TP, FN, FP, TN)",
    module_name="AnyLoss", domains={"metric": Choice(*ANYLOSS_METRICS), "L": POSITIVE, "beta": POSITIVE},
)
def anyloss(logits: torch.Tensor, target: torch.Tensor, *, metric: str = "f1", L: float = 73.0, beta: float = 1.0,
            reduction: str = "mean") -> torch.Tensor:
    """AnyLoss: one minus a confusion-matrix metric computed on amplified probabilities.

    .. math:: A_i = \\sigma\\big(L(\\sigma(z_i) - \\tfrac12)\\big),\\ TP = \\sum_i y_i A_i,\\
              FN = \\sum_i y_i (1 - A_i),\\ FP = \\sum_i (1 - y_i) A_i,\\ TN = \\sum_i (1-y_i)(1-A_i),
              \\qquad \\ell = 1 - M(TP, FN, FP, TN)

    ``metric``: ``'accuracy'`` (TP+TN)/N; ``'f1'`` 2TP/(2TP+FN+FP); ``'fbeta'``
    (1+b²)TP/((1+b²)TP + b²FN + FP) with ``beta``; ``'gmean'`` TPR·TNR = TP·TN/(n₁·n₀);
    ``'gmean_sqrt'`` sqrt(TPR·TNR); ``'balanced_accuracy'`` (TPR+TNR)/2; ``'mcc'``
    (TP·TN − FP·FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) (so the loss lies in [0, 2]). ``L > 0``,
    ``beta > 0``. A rate whose denominator is 0 in this batch (e.g. no negatives) is taken as 0, never NaN.
    † ``'gmean'`` is the authors' G-mean loss, 1 − TP·TN/(n₁·n₀), without the square root of the
    G-mean itself (``Any_Gmean`` in the first author's code, doheonhan/anyloss_extension, ``README.md`` /
    ``AnyLoss_Code.ipynb``): the same maximiser, but other values (0.26–0.53 relative on random
    batches of 64) and gradient scale; ``'gmean_sqrt'`` is 1 − sqrt(TPR·TNR). The authors' code adds
    ``s = 1e-5`` to every denominator; losskit does not (a relative difference of at most
    ``1e-5 / denominator``).
    Batch-coupled: the loss is one number for the batch, whatever ``reduction`` says.
    † ``L = 73`` is the paper's amplification scale, chosen so that ``A`` maps the probability range the
    authors consider to within a small distance of 0/1 while keeping gradients usable; MCC is losskit's
    addition (the paper treats accuracy, Fβ, G-mean and balanced accuracy).

    Paper: Han, Moniz, Chawla, "AnyLoss: Transforming Classification Metrics into Loss Functions",
    2024, arXiv:2405.14745. Code: doheonhan/anyloss_extension (the first author's; ``AnyLoss_Code.ipynb``).
    """
    y = _binary_inputs(logits, target)
    a = torch.sigmoid(L * (torch.sigmoid(logits) - 0.5))
    tp = (y * a).sum()
    fn = (y * (1 - a)).sum()
    fp = ((1 - y) * a).sum()
    tn = ((1 - y) * (1 - a)).sum()
    if metric == "accuracy":
        m = (tp + tn) / (tp + tn + fp + fn)
    elif metric in ("f1", "fbeta"):
        b2 = 1.0 if metric == "f1" else beta ** 2
        m = _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)
    elif metric == "gmean":
        m = _ratio(tp, tp + fn) * _ratio(tn, tn + fp)
    elif metric == "gmean_sqrt":
        prod = _ratio(tp, tp + fn) * _ratio(tn, tn + fp)
        m = torch.sqrt(torch.where(prod > 0, prod, torch.ones_like(prod))) * (prod > 0)
    elif metric == "balanced_accuracy":
        m = (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2
    else:
        den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        m = _ratio(tp * tn - fp * fn, torch.sqrt(torch.where(den > 0, den, torch.ones_like(den))) * (den > 0))
    return 1 - m


@objective(
    "ensloss", seed=True, family="classification", input_kind=BINARY_LOGITS, example=lambda gen, dtype: binary_example(
        gen, dtype).replace(options={"noise": torch.randn(8, generator=gen, dtype=torch.float64).to(dtype)}),
    paper=ENSLOSS_PAPER, properties=set(), per_sample=False, sample_weight=False, gradcheck=False,
    formula="m = (2y - 1) z;  g = -clip(BoxCox^{-1}(eps), max=1), eps ~ N(0, 1), sorted ascending and "
            "assigned to the sorted margins;  g <- g / m for m > 1;  loss = mean(sg(g) m)",
    module_name="EnsLoss", allow_neg_inf=(),
    skip_reasons={"gradcheck": "the value sg(g) m holds a stop-gradient: its gradient is the random calibrated "
                               "derivative g by design, not the finite-difference derivative of the value"},
    domains={"noise": Maybe(Tensor("a tensor of N(0, 1) draws, shape (N,)")), "boxcox_lambda": REAL},
)
def ensloss(logits: torch.Tensor, target: torch.Tensor, *, noise: torch.Tensor | None = None,
            boxcox_lambda: float = 0.0, generator: torch.Generator | None = None,
            reduction: str = "mean") -> torch.Tensor:
    """EnsLoss: a random convex, calibrated loss per batch, given by its derivative (doubly stochastic SGD).

    .. math:: m_i = (2y_i - 1) z_i,\\quad g = \\mathrm{sort}\\big(\\max(-B^{-1}_\\lambda(\\varepsilon), -1)\\big)
              \\text{ assigned to } \\mathrm{sort}(m),\\quad g_i \\leftarrow g_i / m_i\\ (m_i > 1),\\quad
              \\ell = \\tfrac1N \\sum_i \\mathrm{sg}(g_i)\\, m_i

    ``B^{-1}_lambda`` is the inverse Box-Cox transform (``lambda = 0``: ``exp``), ``eps ~ N(0, 1)``.
    Sorting the (negative) derivatives in the order of the margins makes the implied loss convex
    (non-decreasing derivative) and ``g < 0`` at 0 makes it calibrated; the ``1/m`` tail keeps the
    implied loss bounded below. The value is a surrogate whose *gradient* is the random calibrated
    derivative, ``d loss / d m_i = g_i / N``; the value itself is not a loss to compare across batches
    (hence no float64 gradcheck: finite differences see the resampling, by design). Pass ``noise``
    (the ``eps`` draws, shape ``(N,)``) for reproducibility, or a ``generator``. ``target`` in {0, 1}.
    Logits must be finite (``-inf`` is refused): at an infinite margin the surrogate value
    ``sg(g) m`` would be ``-inf``.
    † Following the authors' code: derivatives clipped at -1, then shifted by ``-1e-6`` so that they
    are strictly negative. 'none' returns the per-sample terms ``sg(g_i) m_i``.

    Paper: Dai, "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in
    Classification", 2024, arXiv:2409.00908 (ICML 2025).
    """
    y = _binary_inputs(logits, target)
    require("target", y, lambda: ((y != 0) & (y != 1)).any(), "binary labels in {0, 1}",
            lambda: f"soft values (e.g. {y[(y != 0) & (y != 1)][0].item():.4g})")
    if logits.dim() != 1:
        raise fail("logits", "shape (N,) (one score per sample)", f"shape {tuple(logits.shape)}")
    n = logits.shape[0]
    if noise is None:
        noise = torch.randn(n, generator=generator, dtype=torch.float64).to(logits.device, logits.dtype)
    elif tuple(noise.shape) != (n,):
        raise fail("noise", f"shape ({n},) (one N(0, 1) draw per sample)", f"shape {tuple(noise.shape)}")
    m = (2 * y - 1) * logits
    with torch.no_grad():
        eps = noise.to(logits.dtype)
        if boxcox_lambda == 0:
            inv = torch.exp(eps)
        else:
            base = 1 + boxcox_lambda * eps
            inv = torch.where(base > 0, base, torch.zeros_like(base)).pow(1 / boxcox_lambda)
        g_sorted = torch.sort(-inv).values.clamp(min=-1.0)
        order = torch.argsort(m.detach())
        g = torch.empty_like(g_sorted).scatter_(0, order, g_sorted)
        md = m.detach()
        g = torch.where(md > 1, g / torch.where(md > 1, md, torch.ones_like(md)), g) - 1e-6
    return finish(g * m, reduction)


AnyLoss = anyloss.Module
EnsLoss = ensloss.Module
