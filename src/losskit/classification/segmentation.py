"""Segmentation losses on spatial inputs: logits ``(N, C, *)`` (e.g. ``(N, C, H, W)``), class indices ``(N, *)``.

One abstraction, :func:`soft_counts`, gives the per-class soft confusion counts (TP, FP, FN) of a counting
unit; Dice, Tversky and focal-Tversky are scalar functions of them. Lovász-softmax and Lovász-hinge use the
Lovász extension of the Jaccard loss over the sorted errors of a unit.

Counting units and reductions (every loss here): ``per_image=True`` (the default) counts each image
separately, so the loss is per sample (``reduction``, ``sample_weight`` apply; an image whose pixels are all
``ignore_index`` has no loss and leaves the mean); ``per_image=False`` counts the whole batch as one unit
(smp's Dice/Tversky, the official Lovász-softmax default) and returns that scalar (``reduction`` has no
effect, ``sample_weight`` is refused). Within a unit the loss is the mean over the classes present in its
target (Lovász's ``classes='present'``); a class absent from the unit's target is left out.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import FLAG, NONNEGATIVE, POSITIVE
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, check_labels, check_rows

__all__ = ["soft_counts", "dice_loss", "DiceLoss", "tversky_loss", "TverskyLoss", "focal_tversky_loss",
           "FocalTverskyLoss", "lovasz_softmax", "LovaszSoftmaxLoss", "lovasz_hinge", "LovaszHingeLoss"]

DICE_PAPER = Paper("V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image Segmentation", 2016,
                   "1606.04797", "Milletari, Navab, Ahmadi")
TVERSKY_PAPER = Paper("Tversky loss function for image segmentation using 3D fully convolutional deep networks",
                      2017, "1706.05721", "Salehi, Erdogmus, Gholipour")
FOCAL_TVERSKY_PAPER = Paper("A Novel Focal Tversky loss function with improved Attention U-Net for lesion "
                            "segmentation", 2019, "1810.07842", "Abraham, Khan")
LOVASZ_PAPER = Paper("The Lovász-Softmax loss: A tractable surrogate for the optimization of the "
                     "intersection-over-union measure in neural networks", 2018, "1705.08790",
                     "Berman, Triki, Blaschko")


def segmentation_example(gen: torch.Generator, dtype: torch.dtype, n: int = 3, c: int = 4, h: int = 3,
                         w: int = 4) -> Example:
    z = 2 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n, h, w), generator=gen)
    y[0, 0, 0] = -100  # an ignored pixel
    return Example({"logits": z.to(dtype), "target": y}, grad=("logits",))


def binary_segmentation_example(gen: torch.Generator, dtype: torch.dtype, n: int = 3, h: int = 3,
                                w: int = 4) -> Example:
    z = 2 * torch.randn(n, h, w, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n, h, w), generator=gen)
    y[0, 0, 0] = -100
    return Example({"logits": z.to(dtype), "target": y}, grad=("logits",))


def _binary_bad(ex: Example) -> list[BadInput]:
    z, y = ex.inputs["logits"], ex.inputs["target"]
    inf = z.clone()
    inf.view(-1)[0] = float("inf")
    return [
        BadInput("target of another shape", ex.replace({"target": y[:, :-1]}), "target"),
        BadInput("label outside {0, 1}", ex.replace({"target": torch.full_like(y, 2)}), "target"),
        BadInput("float target", ex.replace({"target": y.to(z.dtype)}), "target"),
        BadInput("+inf logit", ex.replace({"logits": inf}), "logits"),
        BadInput("integer logits", ex.replace({"logits": z.round().long()}), "logits"),
    ]


def _seg_bad(ex: Example) -> list[BadInput]:
    z, y = ex.inputs["logits"], ex.inputs["target"]
    inf = z.clone()
    inf.view(-1)[1] = float("inf")
    return [
        BadInput("target of another shape", ex.replace({"target": y[:, :-1]}), "target"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(y, z.shape[1] + 2)}), "target"),
        BadInput("float target", ex.replace({"target": y.to(z.dtype)}), "target"),
        BadInput("logits without spatial dimensions", ex.replace({"logits": z[..., 0, 0]}), "logits"),
        BadInput("+inf logit", ex.replace({"logits": inf}), "logits"),
        BadInput("integer logits", ex.replace({"logits": z.round().long()}), "logits"),
    ]


SEGMENTATION = InputKind("segmentation logits+labels", "logits (N, C, d1, ...) and class indices (N, d1, ...)",
                         bad_inputs=_seg_bad, extreme=scale_input("logits"))


BINARY_SEGMENTATION = InputKind("binary segmentation", "logits (N, *) and labels in {0, 1} (or ignore_index) (N, *)",
                                bad_inputs=_binary_bad, extreme=scale_input("logits"))


def _resolve(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Class-last probabilities ``(N, P, C)``, labels ``(N, P)`` (ignored -> 0) and the valid mask ``(N, P)``."""
    check_floating("logits", logits)
    if logits.dim() < 3:
        raise fail("logits", "logits (N, C, d1, ...) with spatial dimensions", f"shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise fail("target", f"class indices of shape {(logits.shape[0], *logits.shape[2:])}",
                   f"shape {tuple(getattr(target, 'shape', ()))}")
    c = logits.shape[1]
    check_labels("target", target, c, ignore_index)
    valid = (target != ignore_index).reshape(target.shape[0], -1)
    labels = torch.where(valid, target.reshape(target.shape[0], -1), torch.zeros((), dtype=target.dtype)).long()
    z = logits.reshape(logits.shape[0], c, -1).transpose(1, 2)
    check_rows("logits", z, dim=-1, ignored=~valid)  # a pixel masked entirely raises unless ignored
    z = torch.where(valid[..., None], z, torch.zeros_like(z))  # ignored pixels: no NaN from a masked row
    return torch.softmax(z, -1), labels, valid


def _units(x: torch.Tensor, per_image: bool) -> torch.Tensor:
    """``(N, P, ...)`` -> counting units: per image as is, the whole batch as one unit ``(1, N P, ...)``."""
    return x if per_image else x.reshape(1, -1, *x.shape[2:])


def soft_counts(probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor):
    """Per-class soft confusion counts of each unit: ``TP, FP, FN`` of shape ``(U, C)`` and the class presence.

    ``probs`` ``(U, P, C)`` (rows on the simplex), ``labels`` ``(U, P)``, ``valid`` ``(U, P)``:
    ``TP_c = sum_i p_ic [y_i = c]``, ``FP_c = sum_i p_ic [y_i != c]``, ``FN_c = sum_i (1 - p_ic) [y_i = c]``
    over the valid pixels; ``present_c = [some valid pixel has y_i = c]``.
    """
    onehot = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype) * valid[..., None]
    p = probs * valid[..., None]
    tp = (p * onehot).sum(1)
    fp = p.sum(1) - tp
    fn = onehot.sum(1) - tp
    return tp, fp, fn, onehot.sum(1) > 0


def _class_mean(per_class: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the present classes of each unit and whether the unit counts (some class present)."""
    n = present.sum(-1)
    total = torch.where(present, per_class, torch.zeros_like(per_class)).sum(-1)
    return total / n.clamp(min=1).to(per_class.dtype), n > 0


def _finish_units(per: torch.Tensor, counts: torch.Tensor, per_image: bool, reduction: str, sample_weight):
    if per_image:
        return finish(per, reduction, sample_weight=sample_weight, mask=counts)
    if sample_weight is not None:
        raise fail("sample_weight", "None with per_image=False (one loss for the whole batch)", "a tensor")
    return torch.where(counts, per, torch.zeros_like(per))[0]


def _tversky(logits, target, alpha, beta, gamma, smooth, per_image, ignore_index, sample_weight, reduction):
    probs, labels, valid = _resolve(logits, target, ignore_index)
    tp, fp, fn, present = soft_counts(_units(probs, per_image), _units(labels, per_image), _units(valid, per_image))
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    one_minus = torch.clamp(1 - index, min=0.0)  # rounding can make 1 - TI = -1e-17 at a perfect prediction
    if gamma != 1:
        pos = one_minus > 0
        one_minus = torch.where(pos, torch.where(pos, one_minus, torch.ones_like(one_minus)).pow(gamma),
                                torch.zeros_like(one_minus))
    per, counts = _class_mean(one_minus, present)
    return _finish_units(per, counts, per_image, reduction, sample_weight)


_SEG = dict(family="classification", input_kind=SEGMENTATION, example=segmentation_example)


@objective("dice_loss", paper=DICE_PAPER, properties={"nonnegative", "bounded"}, module_name="DiceLoss",
           formula="L = mean_{c present} 1 - (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s),  soft counts of softmax(z)",
           domains={"smooth": NONNEGATIVE, "per_image": FLAG}, **_SEG)
def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 0.0, per_image: bool = True,
              ignore_index: int = -100, sample_weight: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """Soft Dice loss on softmax probabilities: one minus the soft Dice coefficient, averaged over classes.

    .. math:: \\ell = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C}
              1 - \\frac{2\\,TP_c + s}{2\\,TP_c + FP_c + FN_c + s}

    with the soft counts of :func:`soft_counts` (``p = softmax(z)`` over the class axis 1) and ``C`` the
    classes present in the unit's target. ``smooth = s >= 0`` (0 by default, as smp's ``DiceLoss``).
    Units (``per_image``) and reductions: see the module docstring. smp's ``DiceLoss`` (multiclass,
    ``from_logits``) counts over the batch and averages over all ``C`` classes with absent ones counted 0:
    ``per_image=False`` here times ``|present| / C``.

    Paper: Milletari, Navab, Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical
    Image Segmentation", 2016, arXiv:1606.04797.
    """
    return _tversky(logits, target, 0.5, 0.5, 1.0, smooth, per_image, ignore_index, sample_weight, reduction)


@objective("tversky_loss", paper=TVERSKY_PAPER, properties={"nonnegative", "bounded"}, module_name="TverskyLoss",
           formula="L = mean_{c present} 1 - (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)",
           domains={"alpha": NONNEGATIVE, "beta": NONNEGATIVE, "smooth": NONNEGATIVE, "per_image": FLAG}, **_SEG)
def tversky_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 0.0, per_image: bool = True, ignore_index: int = -100,
                 sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Tversky loss: Dice with separate weights on false positives (``alpha``) and false negatives (``beta``).

    .. math:: \\ell = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C}
              1 - \\frac{TP_c + s}{TP_c + \\alpha\\,FP_c + \\beta\\,FN_c + s}

    ``alpha = beta = 0.5`` is :func:`dice_loss`; defaults ``alpha=0.3, beta=0.7`` (the paper's best).
    Soft counts, units and reductions: see the module docstring.

    Paper: Salehi, Erdogmus, Gholipour, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks", 2017, arXiv:1706.05721.
    """
    return _tversky(logits, target, alpha, beta, 1.0, smooth, per_image, ignore_index, sample_weight, reduction)


@objective("focal_tversky_loss", paper=FOCAL_TVERSKY_PAPER, properties={"nonnegative", "bounded"},
           module_name="FocalTverskyLoss",
           formula="L = mean_{c present} (1 - TI_c)^gamma,  TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)",
           domains={"alpha": NONNEGATIVE, "beta": NONNEGATIVE, "gamma": POSITIVE, "smooth": NONNEGATIVE,
                    "per_image": FLAG}, **_SEG)
def focal_tversky_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 0.75, smooth: float = 1.0, per_image: bool = True, ignore_index: int = -100,
                       sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Focal Tversky loss: the per-class Tversky loss raised to ``gamma``.

    .. math:: \\ell = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C} (1 - TI_c)^{\\gamma}

    † The paper writes the exponent as ``1/gamma`` with ``gamma = 4/3``: here ``gamma`` is the exponent
    itself, default ``0.75`` (= 3/4, the paper's setting), with its ``alpha=0.3, beta=0.7`` and
    ``smooth=1``. The paper sums over classes; losskit averages (a factor ``|C|``). smp's ``TverskyLoss``
    raises the class mean to ``gamma`` instead (equal at ``gamma = 1``). ``gamma > 0``.

    Paper: Abraham, Khan, "A Novel Focal Tversky loss function with improved Attention U-Net for lesion
    segmentation", 2019, arXiv:1810.07842.
    """
    return _tversky(logits, target, alpha, beta, gamma, smooth, per_image, ignore_index, sample_weight, reduction)


# ------------------------------------------------------------------------------------------ Lovász
def _lovasz(errors: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """``sum_i e_(i) g_i`` over the last axis: errors sorted decreasingly, ``g`` the Lovász extension's
    gradient of the Jaccard loss at the sorted ground truth (Berman et al., Alg. 1). Entries with zero error
    and no ground truth (ignored pixels) do not change the value."""
    e_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    gt = fg.gather(-1, perm)
    gts = gt.sum(-1, keepdim=True)
    inter = gts - gt.cumsum(-1)
    union = gts + (1 - gt).cumsum(-1)
    jac = 1 - inter / union
    grad = torch.cat([jac[..., :1], jac[..., 1:] - jac[..., :-1]], -1)
    return (e_sorted * grad).sum(-1)


@objective("lovasz_softmax", paper=LOVASZ_PAPER, properties={"nonnegative", "bounded"},
           module_name="LovaszSoftmaxLoss",
           formula="L = mean_{c present} <sort_desc(|[y = c] - p_c|), g(sorted [y = c])>,  p = softmax(z), "
                   "g the Lovász gradient of the Jaccard loss",
           domains={"per_image": FLAG}, **_SEG)
def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, *, per_image: bool = True, ignore_index: int = -100,
                   sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Lovász-softmax: the Lovász extension of the per-class Jaccard loss on softmax errors.

    .. math:: \\ell = \\frac{1}{|\\mathcal C|} \\sum_{c \\in \\mathcal C} \\overline{\\Delta_{J_c}}(m_c),\\qquad
              m_{ic} = |[y_i = c] - p_{ic}|

    ``logits`` are scores (softmax taken here; the official function takes probabilities). ``C``: the
    classes present in the unit (the official ``classes='present'``). † Default ``per_image=True`` (the
    official default is ``per_image=False``; pass it for the official batch-level loss).

    Paper: Berman, Triki, Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the optimization
    of the intersection-over-union measure in neural networks", 2018, arXiv:1705.08790. Code:
    bermanmaxim/LovaszSoftmax (``pytorch/lovasz_losses.py``).
    """
    probs, labels, valid = _resolve(logits, target, ignore_index)
    probs, labels, valid = _units(probs, per_image), _units(labels, per_image), _units(valid, per_image)
    fg = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype) * valid[..., None]  # (U, P, C)
    errors = torch.where(valid[..., None], (fg - probs).abs(), torch.zeros_like(probs))
    per_class = _lovasz(errors.transpose(1, 2), fg.transpose(1, 2))  # (U, C)
    per, counts = _class_mean(per_class, fg.sum(1) > 0)
    return _finish_units(per, counts, per_image, reduction, sample_weight)


@objective("lovasz_hinge", family="classification", input_kind=BINARY_SEGMENTATION,
           example=binary_segmentation_example, paper=LOVASZ_PAPER, properties={"nonnegative"},
           module_name="LovaszHingeLoss",
           formula="L = <sort_desc(relu(1 - x s)), g(sorted y)>,  s = 2y - 1",
           domains={"per_image": FLAG})
def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, *, per_image: bool = True, ignore_index: int = -100,
                 sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Binary Lovász hinge: the Lovász extension of the foreground Jaccard loss on hinge errors.

    .. math:: \\ell = \\overline{\\Delta_J}(m),\\qquad m_i = [1 - x_i (2 y_i - 1)]_+

    ``logits`` ``(N, *)``, ``target`` ``(N, *)`` with labels in {0, 1} or ``ignore_index``. Per image by
    default (the official default). † An image whose pixels are all ignored leaves the mean here; the
    official code counts it as 0.

    Paper: Berman, Triki, Blaschko, 2018, arXiv:1705.08790. Code: bermanmaxim/LovaszSoftmax
    (``pytorch/lovasz_losses.py``, ``lovasz_hinge``).
    """
    check_floating("logits", logits)
    if logits.dim() < 1 or not isinstance(target, torch.Tensor) or target.shape != logits.shape:
        raise fail("target", f"labels of the logits' shape {tuple(logits.shape)}",
                   f"shape {tuple(getattr(target, 'shape', ()))}")
    check_labels("target", target, 2, ignore_index)
    n = logits.shape[0]
    valid = (target != ignore_index).reshape(n, -1)
    y = torch.where(valid, target.reshape(n, -1), torch.zeros((), dtype=target.dtype)).to(logits.dtype)
    x = logits.reshape(n, -1)
    x, y, valid = _units(x, per_image), _units(y, per_image), _units(valid, per_image)
    errors = torch.where(valid, torch.relu(1 - x * (2 * y - 1)), torch.zeros_like(x))
    per = _lovasz(errors, y * valid)
    return _finish_units(per, valid.any(-1), per_image, reduction, sample_weight)


DiceLoss = dice_loss.Module
TverskyLoss = tversky_loss.Module
FocalTverskyLoss = focal_tversky_loss.Module
LovaszSoftmaxLoss = lovasz_softmax.Module
LovaszHingeLoss = lovasz_hinge.Module
