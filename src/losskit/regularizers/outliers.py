"""OVOR's virtual outlier regularisation: an energy-margin penalty that tightens the classifier's
decision boundaries, for rehearsal-free class-incremental learning.

With the free energy ``E(z) = -log sum_k exp z_k`` of a logit vector, in-distribution features (the
current task's) are pushed below an energy threshold and virtual outliers (synthesised features near,
but outside, the in-distribution region) above another:

    R = lam * ( mean_i h([E(z_i) - tau_id]_+) + mean_j h([tau_ood - E(o_j)]_+) ),

``h`` the Huber function (delta 1) or the square. Keeping the outliers' logits low makes the classifier
of each task confident only near its own classes, which reduces the confusion between classes of
different tasks that a single (rehearsal-free) prompt otherwise suffers.

Paper: Huang, Chen, Hsu, "OVOR: OnePrompt with Virtual Outlier Regularization for Rehearsal-Free
Class-Incremental Learning", ICLR 2024, arXiv:2402.04129.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, REAL, Choice
from .._core.validate import check_floating
from .._core.values import LOGIT_ROWS

__all__ = ["virtual_outlier_regularization", "VirtualOutlierRegularization"]

OVOR = Paper("OVOR: OnePrompt with Virtual Outlier Regularization for Rehearsal-Free Class-Incremental Learning",
             2024, "2402.04129", "Huang, Chen, Hsu")


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 7, m: int = 5, k: int = 6) -> Example:
    id_logits = 6 + 4 * torch.randn(n, k, generator=gen, dtype=torch.float64)   # energies around -15 +- a few
    ood_logits = -2 + 3 * torch.randn(m, k, generator=gen, dtype=torch.float64)  # energies around -3
    return Example({"id_logits": id_logits.to(dtype), "ood_logits": ood_logits.to(dtype)},
                   grad=("id_logits", "ood_logits"))


def _bad(ex: Example) -> list[BadInput]:
    a, b = ex.inputs["id_logits"], ex.inputs["ood_logits"]
    return [BadInput("class counts differ", ex.replace({"ood_logits": b[:, :-1]}), "ood_logits"),
            BadInput("1-d logits", ex.replace({"id_logits": a[:, 0]}), "id_logits"),
            BadInput("integer logits", ex.replace({"id_logits": a.round().long()}), "id_logits")]


ID_OOD = InputKind("in-distribution + virtual-outlier logits",
                   "logits of in-distribution samples (N, K) and of virtual outliers (M, K)", bad_inputs=_bad,
                   extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
                   values={"id_logits": LOGIT_ROWS, "ood_logits": LOGIT_ROWS})


@objective("virtual_outlier_regularization", seed=True, family="regularizer", input_kind=ID_OOD, example=_example,
           paper=OVOR, per_sample=False, batch_scalar=True, sample_weight=False, properties={"nonnegative"},
           module_name="VirtualOutlierRegularization",
           formula="R = lam (mean_i h([E(z_i) - tau_id]_+) + mean_j h([tau_ood - E(o_j)]_+)),  E(z) = -logsumexp(z), "
                   "h = Huber(delta=1) or square",
           domains={"lam": NONNEGATIVE, "tau_id": REAL, "tau_ood": REAL, "penalty": Choice("huber", "square")})
def virtual_outlier_regularization(id_logits: torch.Tensor, ood_logits: torch.Tensor, *, lam: float = 0.1,
                                   tau_id: float = -15.0, tau_ood: float = -3.0, penalty: str = "huber",
                                   reduction: str = "mean") -> torch.Tensor:
    """OVOR's virtual outlier regulariser: energy margins for in-distribution samples and outliers.

    .. math:: R = \\lambda\\Big(\\frac1N\\sum_i h\\big([E(z_i) - \\tau_{id}]_+\\big)
              + \\frac1M\\sum_j h\\big([\\tau_{ood} - E(o_j)]_+\\big)\\Big),\\qquad E(z) = -\\log\\sum_k e^{z_k}

    ``id_logits (N, K)``: the classifier's logits on the current task's samples; ``ood_logits (M, K)``:
    its logits on virtual outliers (features synthesised around the in-distribution features, e.g. by
    NPOS-style sampling, and passed through the same head). ``penalty``: ``'huber'`` (``h`` the Huber
    function with delta 1, torch's ``HuberLoss``; the authors' default) or ``'square'`` (their MSE
    variant, ``h(d) = d²``). Defaults are the authors' (``configs/common.yaml``): ``lam`` 0.1,
    ``tau_id`` -15, ``tau_ood`` -3. Add it to the task's cross-entropy. The outlier *generation* is a
    data-synthesis step and is left to the training loop. One value per batch: ``reduction`` has no
    effect.

    Paper: Huang, Chen, Hsu, "OVOR: OnePrompt with Virtual Outlier Regularization for Rehearsal-Free
    Class-Incremental Learning", ICLR 2024, arXiv:2402.04129.
    """
    check_floating("id_logits", id_logits)
    check_floating("ood_logits", ood_logits)
    if id_logits.dim() != 2 or id_logits.shape[0] < 1:
        raise fail("id_logits", "logits of shape (N, K), N >= 1", f"shape {tuple(id_logits.shape)}")
    if ood_logits.dim() != 2 or ood_logits.shape[0] < 1 or ood_logits.shape[1] != id_logits.shape[1]:
        raise fail("ood_logits", f"logits of shape (M, {id_logits.shape[1]}), M >= 1", f"shape {tuple(ood_logits.shape)}")
    dtype = torch.promote_types(id_logits.dtype, ood_logits.dtype)
    e_id = -torch.logsumexp(id_logits.to(dtype), 1)
    e_ood = -torch.logsumexp(ood_logits.to(dtype), 1)
    d_id, d_ood = F.relu(e_id - tau_id), F.relu(tau_ood - e_ood)
    if penalty == "huber":
        h_id = F.huber_loss(d_id, torch.zeros_like(d_id), delta=1.0)
        h_ood = F.huber_loss(d_ood, torch.zeros_like(d_ood), delta=1.0)
    else:
        h_id, h_ood = d_id.square().mean(), d_ood.square().mean()
    return finish(lam * (h_id + h_ood), reduction)


VirtualOutlierRegularization = virtual_outlier_regularization.Module
