"""CW-BASS: confidence-weighted, boundary-aware pseudo-label loss for semi-supervised semantic
segmentation, with its pseudo-label builder (dynamic threshold, confidence decay, boundary detection).

For an unlabelled image a (mean-)teacher's softmax gives per-pixel pseudo-labels ``y`` (argmax) and
confidences ``w`` (max probability). Pixels below a dynamic threshold ``tau`` are ignored, and the student
is trained on

    L = sum_valid w^gamma CE(z, y) / #valid + boundary_weight * sum_{valid ∩ B} CE(z, y) / #(valid ∩ B),

``B`` the pixels on a boundary of the pseudo-label map (Sobel filter of its one-hot channels),
``tau = clamp(base / (1 + exp(-beta (mean w - 0.5))), 0.3, 0.8)`` (the more confident the teacher, the
higher the bar), and optional confidence decay ``w <- decay * w``.

Paper: Tarubinga, Kalafatovich, Lee, "Confidence-Weighted Boundary-Aware Learning for Semi-Supervised
Semantic Segmentation", 2025, arXiv:2502.15152.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, UNIT, Integer
from .._core.validate import check_floating, check_labels
from .._core.values import LOGIT_ROWS_DIM1, UNIT_VALUES

__all__ = ["cw_bass_loss", "CWBASSLoss", "cw_bass_pseudo_labels", "label_boundaries"]

CWBASS = Paper("Confidence-Weighted Boundary-Aware Learning for Semi-Supervised Semantic Segmentation", 2025,
               "2502.15152", "Tarubinga, Kalafatovich, Lee")

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def label_boundaries(labels: torch.Tensor, num_classes: int, ignore_index: int | None = None,
                     padding: str = "replicate") -> torch.Tensor:
    """Bool boundary mask (N, H, W) of a label map (N, H, W): pixels where the Sobel gradient of some
    class's one-hot channel is non-zero (a different class in the 3x3 neighbourhood).

    ``padding='replicate'`` (default) repeats the edge pixels, so an image's border is not a boundary;
    ``'zeros'`` is the authors' ``detect_boundaries`` (zero padding: every border pixel is marked).
    ``ignore_index`` pixels get an all-zero one-hot (the authors clamp them into class ``num_classes - 1``).
    """
    if labels.dim() != 3:
        raise fail("labels", "a label map of shape (N, H, W)", f"shape {tuple(labels.shape)}")
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    one_hot = F.one_hot(torch.where(valid, labels, 0).long().clamp(0, num_classes - 1), num_classes)
    one_hot = (one_hot * valid[..., None]).permute(0, 3, 1, 2).to(torch.float32)
    sx = torch.tensor(_SOBEL_X, device=labels.device)
    kernel = torch.stack([sx, sx.t()])[:, None].repeat(num_classes, 1, 1, 1)  # (2C, 1, 3, 3): x and y
    if padding == "replicate":
        edges = F.conv2d(F.pad(one_hot, (1, 1, 1, 1), mode="replicate"), kernel, groups=num_classes)
    elif padding == "zeros":
        edges = F.conv2d(one_hot, kernel, padding=1, groups=num_classes)
    else:
        raise fail("padding", "'replicate' or 'zeros'", repr(padding))
    return (edges != 0).any(1)


@torch.no_grad()
def cw_bass_pseudo_labels(teacher_logits: torch.Tensor, *, base_threshold: float = 0.6, beta: float = 0.5,
                          min_threshold: float = 0.3, max_threshold: float = 0.8, decay_factor: float = 1.0,
                          ignore_index: int = 255, padding: str = "replicate"
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CW-BASS pseudo-labels from a teacher's logits (N, C, H, W): ``(target, confidence, boundary)``.

    ``confidence`` = max softmax probability (times ``decay_factor``, the confidence decay; 1 = off, the
    authors' default, 0.9 when on), ``target`` = argmax with the pixels at or below the dynamic threshold
    ``clamp(base / (1 + exp(-beta (mean confidence - 0.5))), min, max)`` set to ``ignore_index``, and
    ``boundary`` = :func:`label_boundaries` of the argmax map before thresholding (as the authors').
    """
    check_floating("teacher_logits", teacher_logits)
    if teacher_logits.dim() != 4:
        raise fail("teacher_logits", "logits of shape (N, C, H, W)", f"shape {tuple(teacher_logits.shape)}")
    probs = torch.softmax(teacher_logits.float(), 1)
    confidence, pseudo = probs.max(1)
    boundary = label_boundaries(pseudo, teacher_logits.shape[1], padding=padding)
    tau = (base_threshold / (1 + torch.exp(-beta * (confidence.mean() - 0.5)))).clamp(min_threshold, max_threshold)
    target = torch.where(confidence > tau, pseudo, torch.full_like(pseudo, ignore_index))
    return target, confidence * decay_factor, boundary


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 2, c: int = 3, h: int = 5, w: int = 4) -> Example:
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[0, 0, :2] = 255
    confidence = torch.rand(n, h, w, generator=gen, dtype=torch.float64)
    boundary = label_boundaries(target, c, ignore_index=255)
    return Example({"logits": logits.to(dtype), "target": target, "confidence": confidence.to(dtype),
                    "boundary": boundary}, grad=("logits",))


def _bad(ex: Example) -> list[BadInput]:
    z, t, w = ex.inputs["logits"], ex.inputs["target"], ex.inputs["confidence"]
    return [BadInput("label out of range", ex.replace({"target": torch.where(t == 255, t, t + 7)}), "target"),
            BadInput("confidence of the wrong shape", ex.replace({"confidence": w[:, :-1]}), "confidence"),
            BadInput("boundary of the wrong shape", ex.replace({"boundary": ex.inputs["boundary"][:, :-1]}), "boundary"),
            BadInput("2-d logits", ex.replace({"logits": z[:, :, 0, 0]}), "logits"),
            BadInput("float labels", ex.replace({"target": t.double()}), "target")]


PSEUDO_SEG = InputKind("segmentation logits + pseudo-labels + confidences",
                       "logits (N, C, H, W), pseudo-labels (N, H, W) with ignore_index, confidences in [0, 1] "
                       "(N, H, W), an optional bool boundary mask (N, H, W)", bad_inputs=_bad,
                       extreme=lambda ex: ex.map_floats(lambda t: t.float()).replace(
                           {"logits": (ex.inputs["logits"] * 1e4).float()}),
                       values={"logits": LOGIT_ROWS_DIM1, "confidence": UNIT_VALUES})


@objective("cw_bass_loss", seed=True, family="classification", input_kind=PSEUDO_SEG, example=_example,
           paper=CWBASS, per_sample=False, batch_scalar=True, sample_weight=False, properties={"nonnegative"},
           module_name="CWBASSLoss",
           formula="L = sum_valid w^gamma CE / #valid + boundary_weight sum_{valid & B} CE / #(valid & B)",
           domains={"gamma": NONNEGATIVE, "boundary_weight": NONNEGATIVE, "ignore_index": Integer(),
                    "decay_factor": UNIT})
def cw_bass_loss(logits: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor,
                 boundary: torch.Tensor | None = None, *, gamma: float = 1.0, boundary_weight: float = 0.5,
                 decay_factor: float = 1.0, ignore_index: int = 255, reduction: str = "mean") -> torch.Tensor:
    """CW-BASS's confidence-weighted, boundary-aware pseudo-label cross-entropy (one value per batch).

    .. math:: L = \\frac{\\sum_{p\\in V} w_p^{\\gamma}\\,\\mathrm{CE}_p}{|V|}
              + \\lambda_B\\,\\frac{\\sum_{p\\in V\\cap B}\\mathrm{CE}_p}{|V\\cap B|},
              \\qquad \\mathrm{CE}_p = -\\log\\mathrm{softmax}(z_p)_{y_p}

    ``logits (N, C, H, W)`` the student's, ``target (N, H, W)`` pseudo-labels with ``ignore_index`` (255,
    the authors') on filtered pixels ``∉ V``, ``confidence (N, H, W)`` the teacher's per-pixel confidence
    ``w`` in [0, 1] (no gradient), ``boundary (N, H, W)`` bool boundary pixels ``B`` (``None``: computed
    from ``target`` by :func:`label_boundaries`). :func:`cw_bass_pseudo_labels` builds all three from a
    teacher's logits exactly as the authors do. ``gamma`` (γ, 1), ``boundary_weight`` (λ_B, 0.5 in the
    authors' ``boundary_loss``), ``decay_factor`` multiplies the confidences (confidence decay; 1 = off).
    Empty denominators count as 1 (a batch with no valid pixel gives 0), as in the authors' code. One
    value per batch: ``reduction`` has no effect.

    Paper: Tarubinga, Kalafatovich, Lee, "Confidence-Weighted Boundary-Aware Learning for
    Semi-Supervised Semantic Segmentation", 2025, arXiv:2502.15152.
    """
    check_floating("logits", logits)
    check_floating("confidence", confidence)
    if logits.dim() != 4:
        raise fail("logits", "logits of shape (N, C, H, W)", f"shape {tuple(logits.shape)}")
    n, c, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise fail("target", f"pseudo-labels of shape ({n}, {h}, {w})", f"shape {tuple(target.shape)}")
    check_labels("target", target, c, ignore_index)
    if tuple(confidence.shape) != (n, h, w):
        raise fail("confidence", f"per-pixel confidences of shape ({n}, {h}, {w})", f"shape {tuple(confidence.shape)}")
    if boundary is None:
        boundary = label_boundaries(target, c, ignore_index=ignore_index)
    elif boundary.dtype != torch.bool or tuple(boundary.shape) != (n, h, w):
        raise fail("boundary", f"a bool mask of shape ({n}, {h}, {w})", f"{boundary.dtype} {tuple(boundary.shape)}")
    valid = target != ignore_index
    logp = torch.log_softmax(logits, 1)
    picked = logp.gather(1, torch.where(valid, target, 0).long()[:, None])[:, 0]
    ce = torch.where(valid, -picked, torch.zeros_like(picked))
    wts = (confidence.detach().to(ce.dtype) * decay_factor) ** gamma
    b = valid & boundary
    base = (wts * ce).sum() / valid.sum().clamp_min(1)
    edge = torch.where(b, ce, torch.zeros_like(ce)).sum() / b.sum().clamp_min(1)
    return finish(base + boundary_weight * edge, reduction)


CWBASSLoss = cw_bass_loss.Module
