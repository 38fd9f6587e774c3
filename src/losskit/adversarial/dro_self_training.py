"""Robust self-supervised (RSS) training with out-of-domain unlabeled data (Saberi et al., ICLR 2024):
Wasserstein-DRO losses on the labeled samples and on the unlabeled ones pseudo-labelled by the model itself.

.. math:: \\hat\\theta^{RSS} = \\arg\\min_\\theta\\ \\frac1m \\sum_{i=1}^m \\phi_\\gamma(x_i, y_i; \\theta)
          + \\frac{\\lambda}{n} \\sum_{j=1}^n \\phi_{\\gamma'}\\big(x'_j, h_\\theta(x'_j); \\theta\\big),\\qquad
          \\phi_\\gamma(x, y; \\theta) = \\sup_z\\ \\ell(z, y; \\theta) - \\gamma\\, c(z, x)

with ``c(z, x) = ||z - x||^2``: ``phi_gamma`` is the Lagrangian relaxation of the worst case over a Wasserstein
ball (Sinha, Namkoong, Duchi 2018), and the unlabeled (possibly out-of-domain) points ``x'_j`` carry the
model's own labels ``h_theta(x'_j)``.

:func:`penalized_ascent` approximates the maximiser ``z*`` (gradient ascent on the penalised loss, no projection);
:func:`dro_self_training` is the objective given the logits at ``z*``. By Danskin's theorem the gradient in
``theta`` is that of ``l(theta; z*, y^)`` with ``z*`` fixed (the transport cost carries no parameter gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Choice, check_option
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, check_labels, require

__all__ = ["dro_self_training", "DROSelfTrainingLoss", "penalized_ascent"]

PAPER = Paper("Out-Of-Domain Unlabeled Data Improves Generalization", 2024, "2310.00027",
              "Saberi, Najafi, Heidari, Movasaghinia, Motahari, Khalaj")


def penalized_ascent(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *, gamma: float,
                     lr: float, steps: int, schedule: str = "harmonic",
                     loss_fn: Callable[..., torch.Tensor] | None = None,
                     eval_mode: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate ``z* = argmax_z loss(model(z), target) - gamma ||z - x||^2`` per sample by ``steps`` of gradient
    ascent from ``z = x`` (the inner problem of ``phi_gamma``; no projection, the penalty keeps ``z`` near ``x``).

    Step ``t = 0, 1, ...`` has size ``lr / (t + 1)`` (``schedule='harmonic'``, the authors' ``optimize_x_adv``) or
    ``lr`` (``'constant'``). ``target`` defaults to the model's own labels ``argmax model(x)`` (the pseudo-labels
    of the unlabeled term). ``loss_fn(outputs, target)`` (default: cross-entropy summed over samples, as the
    authors') must return a scalar summed over samples, so each sample's ascent is its own. Returns ``(z*, cost)``:
    the detached points and their transport costs ``||z* - x||^2`` per sample (flattened). The parameters' ``.grad``
    are untouched; ``eval_mode=True`` runs the ascent in eval mode and restores every module's mode.
    """
    check_option("gamma", gamma, NONNEGATIVE)
    check_option("lr", lr, POSITIVE)
    check_option("schedule", schedule, Choice("harmonic", "constant"))
    if steps < 0:
        raise fail("steps", "a number of steps >= 0", repr(steps))
    modes = [(m, m.training) for m in model.modules()]
    if eval_mode:
        model.eval()
    x0 = x.detach()
    try:
        if target is None:
            with torch.no_grad():
                target = model(x0).argmax(1)
        z = x0.clone()
        for t in range(steps):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model(z)
                loss = loss_fn(out, target) if loss_fn is not None else F.cross_entropy(out, target, reduction="sum")
                obj = loss - gamma * (z - x0).square().sum()
                (grad,) = torch.autograd.grad(obj, z)
            z = z + (lr / (t + 1) if schedule == "harmonic" else lr) * grad
    finally:
        for m, mode in modes:
            m.training = mode
    z = z.detach()
    return z, (z - x0).flatten(1).square().sum(1)


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 5, m: int = 7, k: int = 3) -> Example:
    lab = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    lcost = torch.rand(n, generator=gen, dtype=torch.float64)
    clean = 2 * torch.randn(m, k, generator=gen, dtype=torch.float64)
    adv = clean + torch.randn(m, k, generator=gen, dtype=torch.float64)
    ucost = torch.rand(m, generator=gen, dtype=torch.float64)
    return Example({"logits": lab.to(dtype), "target": y, "labeled_cost": lcost.to(dtype),
                    "unlabeled_logits": adv.to(dtype), "pseudo_logits": clean.to(dtype),
                    "unlabeled_cost": ucost.to(dtype)},
                   options={"lam": 0.5, "gamma": 2.0, "gamma_unlabeled": 1.5},
                   grad=("logits", "unlabeled_logits"))


def _with(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[0] = value
    return x


def _bad(ex: Example) -> list[BadInput]:
    lab, y, lcost = ex.inputs["logits"], ex.inputs["target"], ex.inputs["labeled_cost"]
    adv, clean, cost = ex.inputs["unlabeled_logits"], ex.inputs["pseudo_logits"], ex.inputs["unlabeled_cost"]
    k = lab.shape[1]
    return [
        BadInput("label out of range", ex.replace({"target": torch.full_like(y, k)}), "target"),
        BadInput("labels of another batch size", ex.replace({"target": y[:-1]}), "target"),
        BadInput("labeled costs of another batch size", ex.replace({"labeled_cost": lcost[:-1]}), "labeled_cost"),
        BadInput("unlabeled logits with another class count", ex.replace({"unlabeled_logits": adv[:, :-1]}),
                 "unlabeled_logits"),
        BadInput("pseudo logits of another batch", ex.replace({"pseudo_logits": clean[:-1]}), "pseudo_logits"),
        BadInput("negative transport cost", ex.replace({"unlabeled_cost": -cost}), "unlabeled_cost"),
        BadInput("transport cost of another batch", ex.replace({"unlabeled_cost": cost[:-1]}), "unlabeled_cost"),
        BadInput("+inf unlabeled logit", ex.replace({"unlabeled_logits": _with(adv, float("inf"))}),
                 "unlabeled_logits"),
        BadInput("float labels", ex.replace({"target": y.to(lab.dtype)}), "target"),
    ]


def _extreme(ex: Example) -> Example:
    out = ex.map_floats(lambda t: t.to(torch.float32))
    names = ("logits", "unlabeled_logits", "pseudo_logits")
    return out.replace({k: out.inputs[k].sign() * 1e4 + out.inputs[k] for k in names})


LABELED_UNLABELED = InputKind(
    "labeled+unlabeled logits", "logits (N, K) at the labeled points after the DRO ascent, labels (N,), transport "
    "costs (N,); logits (M, K) at the unlabeled points after the ascent, their clean logits (M, K), costs (M,)",
    bad_inputs=_bad, extreme=_extreme)


def _costs(name: str, c: torch.Tensor, n: int) -> None:
    check_floating(name, c)
    if c.shape != (n,):
        raise fail(name, f"one transport cost per point, shape ({n},)", f"shape {tuple(c.shape)}")
    require(name, c, lambda: (c < 0).any(), "non-negative transport costs", lambda: "a negative cost")


@objective(
    "dro_self_training", seed=True, family="adversarial", input_kind=LABELED_UNLABELED, example=_example, paper=PAPER,
    per_sample=False, batch_scalar=True, sample_weight=False, module_name="DROSelfTrainingLoss", allow_neg_inf=(),
    domains={"lam": NONNEGATIVE, "gamma": NONNEGATIVE, "gamma_unlabeled": NONNEGATIVE,
             "pseudo_label": Choice("hard", "soft")},
    formula="L = mean_i [CE(h(z_i), y_i) - gamma c_i] + lam mean_j [CE(h(z'_j), yhat_j) - gamma' c'_j],  "
            "z = argmax_z CE(h(z), y) - gamma ||z - x||^2 (penalized_ascent),  yhat_j = argmax h(x'_j)",
)
def dro_self_training(logits: torch.Tensor, target: torch.Tensor, labeled_cost: torch.Tensor,
                      unlabeled_logits: torch.Tensor, pseudo_logits: torch.Tensor, unlabeled_cost: torch.Tensor, *,
                      lam: float = 1.0, gamma: float = 1.0, gamma_unlabeled: float = 1.0, pseudo_label: str = "hard",
                      reduction: str = "mean") -> torch.Tensor:
    """The RSS objective of Saberi et al.: robust losses on the labeled data and on self-labelled unlabeled data.

    .. math:: \\mathcal L = \\frac1N \\sum_i \\big[\\mathrm{CE}(h(z_i), y_i) - \\gamma\\, c_i\\big]
              + \\lambda\\, \\frac1M \\sum_j \\big[\\mathrm{CE}(h(z'_j), \\hat y_j) - \\gamma'\\, c'_j\\big]

    Inputs: ``logits (N, K)`` = ``h(z_i)`` at the labeled points after :func:`penalized_ascent` (with ``gamma``),
    ``target (N,)``, ``labeled_cost (N,)`` = ``||z_i - x_i||^2``; ``unlabeled_logits (M, K)`` = ``h(z'_j)`` after the
    ascent from the unlabeled ``x'_j`` (with ``gamma_unlabeled`` and the pseudo-labels as target),
    ``pseudo_logits (M, K)`` = ``h(x'_j)``, read without gradient for the pseudo-labels ``y^_j`` (``'hard'``:
    ``argmax``, the paper's ``h_theta(x')``; ``'soft'``: the softmax distribution), ``unlabeled_cost (M,)``. Each
    bracket is ``phi_gamma`` at the ascent's point; by Danskin's theorem its parameter gradient is the loss's at that
    point, so the costs enter the value only (detached). ``lam`` weighs the unlabeled term; ``gamma``,
    ``gamma_unlabeled`` are the Lagrange multipliers of the Wasserstein balls (large = small radius; the labeled term
    is plain ERM with ``z_i = x_i``, zero cost). The defaults are neutral (1); the authors tune ``lam``, ``gamma``,
    ``gamma'`` per data set. One value per batch (``reduction`` has no effect).

    Differences from the authors' ``TrainingFlow.py``: their pseudo-label target is the raw logits
    ``model(x')`` passed to ``CrossEntropyLoss`` as class probabilities (unnormalised, not detached); losskit
    uses the paper's hard labels ``argmax h(x')`` (or ``'soft'``: their softmax), detached. They also scale the sum
    by 100, which losskit leaves to the learning rate. tests/oracles/test_misc2_objectives.py ports their ascent
    and loss and checks both.

    Paper: Saberi, Najafi, Heidari, Movasaghinia, Motahari, Khalaj, "Out-Of-Domain Unlabeled Data Improves
    Generalization", ICLR 2024, arXiv:2310.00027.
    """
    for name, z in (("logits", logits), ("unlabeled_logits", unlabeled_logits), ("pseudo_logits", pseudo_logits)):
        check_floating(name, z)
        if z.dim() != 2:
            raise fail(name, "logits of shape (batch, K)", f"shape {tuple(z.shape)}")
    k = logits.shape[1]
    if target.dim() != 1 or target.is_floating_point():
        raise fail("target", "class indices of shape (N,)", f"{target.dtype} of shape {tuple(target.shape)}")
    check_batch("target", target, logits.shape[0], "logits")
    check_labels("target", target, k)
    _costs("labeled_cost", labeled_cost, logits.shape[0])
    for name, z in (("unlabeled_logits", unlabeled_logits), ("pseudo_logits", pseudo_logits)):
        if z.shape[1] != k:
            raise fail(name, f"{k} classes (as logits)", f"shape {tuple(z.shape)}")
    m = unlabeled_logits.shape[0]
    check_batch("pseudo_logits", pseudo_logits, m, "unlabeled_logits")
    _costs("unlabeled_cost", unlabeled_cost, m)
    labeled = (F.cross_entropy(logits, target.long(), reduction="none") - gamma * labeled_cost.detach()).mean()
    pseudo = pseudo_logits.detach()
    if pseudo_label == "hard":
        unl = F.cross_entropy(unlabeled_logits, pseudo.argmax(1), reduction="none")
    else:
        unl = -(torch.softmax(pseudo, 1) * torch.log_softmax(unlabeled_logits, 1)).sum(1)
    robust = (unl - gamma_unlabeled * unlabeled_cost.detach()).mean()
    return finish(labeled + lam * robust, reduction)


DROSelfTrainingLoss = dro_self_training.Module
