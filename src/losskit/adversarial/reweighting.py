"""Instance-reweighted adversarial training: the objectives take what an attack (:func:`pgd`) produced --
per-sample adversarial losses, or the logits of natural and adversarial inputs -- and weight the samples.

* ``doubly_robust_at``: KL-regularised DRO weights over the adversarial losses (closed form);
* ``weat``: energy-based weights, from the natural inputs' energies ``-logsumexp(logits)``;
* ``srat``: class-reweighted adversarial cross-entropy plus a feature-separation term, for imbalanced data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, Choice, Maybe, Tensor
from .._core.validate import check_batch, check_floating, check_labels, check_same_shape, require
from ..ops.pairwise import safe_sqrt, sq_dist
from ._inputs import ADV_FEATURES, LOSSES, NAT_ADV, adv_features_example, losses_example, nat_adv_example

__all__ = ["dro_weights", "doubly_robust_at", "DoublyRobustATLoss", "logit_energy", "weat_weights", "weat", "WEATLoss",
           "srat", "SRATLoss"]

FAMILY = "adversarial"

DONE = Paper("Doubly Robust Instance-Reweighted Adversarial Training", 2023, "2308.00311",
             "Sow, Lin, Wang, Liang")
WEAT = Paper("Shedding More Light on Robust Classifiers under the lens of Energy-based Models", 2024, "2407.06315",
             "Mirza, Briglia, Beadini, Masi")
SRAT = Paper("Imbalanced Adversarial Training with Reweighting", 2021, "2107.13639",
             "Wang, Xu, Liu, Li, Thuraisingham, Tang")


def _losses(losses: torch.Tensor) -> None:
    check_floating("losses", losses)
    if losses.dim() != 1:
        raise fail("losses", "one loss per sample, shape (N,)", f"shape {tuple(losses.shape)}")


# ------------------------------------------------------------------------------- doubly robust AT
def dro_weights(losses: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The KL-regularised DRO weights ``w = softmax(losses / tau)``: the maximiser over the simplex of
    ``sum_i w_i l_i - tau KL(w || uniform)`` (closed form). Detached (weights, not a loss)."""
    _losses(losses)
    return torch.softmax(losses.detach() / tau, 0)


@objective(
    "doubly_robust_at", seed=True, family=FAMILY, input_kind=LOSSES, example=losses_example, paper=DONE,
    per_sample=False, batch_scalar=True, sample_weight=False, module_name="DoublyRobustATLoss",
    domains={"tau": POSITIVE},
    formula="L = max_{w in simplex} sum_i w_i l_i - tau KL(w || 1/N) = tau log (1/N) sum_i exp(l_i / tau);  "
            "grad L = sum_i w_i grad l_i,  w = softmax(l / tau)",
)
def doubly_robust_at(losses: torch.Tensor, *, tau: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Doubly robust instance-reweighted adversarial training: the KL-regularised DRO objective over the
    per-sample adversarial losses.

    .. math:: \\mathcal L = \\max_{w \\in \\Delta_N} \\sum_i w_i \\ell_i - \\tau\\, \\mathrm{KL}(w \\,\\|\\, \\tfrac1N \\mathbf 1)
              = \\tau \\log \\frac1N \\sum_i e^{\\ell_i / \\tau},\\qquad
              \\nabla \\mathcal L = \\sum_i w_i \\nabla \\ell_i,\\quad w = \\mathrm{softmax}(\\ell / \\tau)

    ``losses (N,)`` are the samples' adversarial losses (e.g. ``cross_entropy(model(pgd(model, x, y, ...)),
    y, reduction='none')``). The inner maximisation has the closed form ``w = softmax(l / tau)``
    (:func:`dro_weights`), so the value is the log-mean-exp and its gradient is exactly the importance-weighted
    adversarial gradient the paper trains with (Danskin): the most vulnerable samples weigh most. ``tau`` is the
    KL regularisation (the paper's ``r``): large ``tau`` tends to the plain mean (standard AT), small ``tau`` to the
    maximum loss. One loss for the batch (``reduction`` has no effect).

    The paper ("Codes will be available soon") published no code we could find; the tests check the closed
    form against a numerical maximisation over the simplex and the gradient against the weighted sum.

    Paper: Sow, Lin, Wang, Liang, "Doubly Robust Instance-Reweighted Adversarial Training", 2023,
    arXiv:2308.00311.
    """
    _losses(losses)
    n = losses.shape[0]
    loss = tau * (torch.logsumexp(losses / tau, 0) - torch.log(losses.new_tensor(float(n))))
    return finish(loss, reduction)


DoublyRobustATLoss = doubly_robust_at.Module


# ------------------------------------------------------------------------------------------- WEAT
def logit_energy(logits: torch.Tensor) -> torch.Tensor:
    """The energy of each input under the classifier read as an energy-based model: ``-logsumexp(logits, 1)``."""
    return -torch.logsumexp(logits, 1)


def weat_weights(nat_logits: torch.Tensor) -> torch.Tensor:
    """WEAT's sample weights ``1 / log(1 + exp(|E(x)|))`` from the natural inputs' energies (detached)."""
    return 1.0 / F.softplus(logit_energy(nat_logits.detach()).abs())


def _two_logits(nat_logits, adv_logits, target):
    check_floating("nat_logits", nat_logits)
    check_floating("adv_logits", adv_logits)
    if nat_logits.dim() != 2:
        raise fail("nat_logits", "logits of shape (N, K)", f"shape {tuple(nat_logits.shape)}")
    check_same_shape("adv_logits", adv_logits, "nat_logits", nat_logits)
    check_batch("target", target, nat_logits.shape[0], "nat_logits")
    if target.dim() != 1:
        raise fail("target", "class indices of shape (N,)", f"shape {tuple(target.shape)}")
    check_labels("target", target, nat_logits.shape[1])


@objective(
    "weat", seed=True, family=FAMILY, input_kind=NAT_ADV, example=nat_adv_example, paper=WEAT, module_name="WEATLoss",
    allow_neg_inf=(), domains={"beta": NONNEGATIVE, "ce_on": Choice("adv", "nat")},
    formula="l_i = w_i (CE(z_i^adv or z_i^nat, y_i) + beta KL(softmax(z_i^nat) || softmax(z_i^adv))),  "
            "w_i = 1 / log(1 + exp(|E_i|)),  E_i = -logsumexp(z_i^nat)  (w detached)",
)
def weat(nat_logits: torch.Tensor, adv_logits: torch.Tensor, target: torch.Tensor, *, beta: float = 7.0,
         ce_on: str = "adv", sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Weighted Energy Adversarial Training: TRADES-style terms weighted by the natural inputs' energies.

    .. math:: \\ell_i = w_i\\Big(\\mathrm{CE}(z_i, y_i) + \\beta\\,
              \\mathrm{KL}\\big(\\mathrm{softmax}(z^{nat}_i) \\,\\|\\, \\mathrm{softmax}(z^{adv}_i)\\big)\\Big),\\qquad
              w_i = \\frac{1}{\\log(1 + e^{|E(x_i)|})},\\quad E(x_i) = -\\log\\sum_k e^{z^{nat}_{ik}}

    Reading the classifier as an energy-based model, samples of high energy magnitude (far from the data
    manifold as the model sees it) are down-weighted. ``z_i`` in the cross-entropy is the adversarial logit
    (``ce_on='adv'``, the paper's WEAT-adv, default ``beta=7``) or the natural one (``ce_on='nat'``, WEAT-nat,
    the authors use ``beta=6``). ``adv_logits`` come from the model on :func:`pgd` inputs (the authors'
    attack maximises the KL term, TRADES-style: ``pgd(model, x, loss_fn=...)``). The weights are detached (as
    in the authors' code): gradients reach both logits through the CE and KL terms only. ``'none'``: (N,);
    ``'mean'`` divides by N, as the authors' ``1 / batch_size``.

    Differences from the authors' ``WEAT_loss.py``: the KL uses ``log_softmax`` instead of
    ``log(softmax + 1e-12)`` and the weight ``softplus(|E|)`` instead of ``log(1 + exp(|E|))`` (equal up to
    rounding; finite for any energy): tests/oracles compares the two.

    Paper: Mirza, Briglia, Beadini, Masi, "Shedding More Light on Robust Classifiers under the lens of
    Energy-based Models", ECCV 2024, arXiv:2407.06315.
    """
    _two_logits(nat_logits, adv_logits, target)
    w = weat_weights(nat_logits)
    logp_nat = F.log_softmax(nat_logits, 1)
    logp_adv = F.log_softmax(adv_logits, 1)
    kl = (logp_nat.exp() * (logp_nat - logp_adv)).sum(1)
    ce_logp = logp_adv if ce_on == "adv" else logp_nat
    ce = -ce_logp.gather(1, target[:, None]).squeeze(1)
    return finish(w * (ce + beta * kl), reduction, sample_weight=sample_weight)


WEATLoss = weat.Module


# ------------------------------------------------------------------------------------------- SRAT
def _batch_hard_triplet(features: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    # distances computed at a detached scale (exactly ||h_i - h_j||, no overflow for huge features)
    scale = features.detach().abs().amax().clamp_min(torch.finfo(features.dtype).tiny)
    d = safe_sqrt(sq_dist(features / scale, features / scale, expand=False)) * scale
    same = target[:, None] == target[None, :]
    eye = torch.eye(len(target), dtype=torch.bool, device=features.device)
    pos, neg = same & ~eye, ~same
    d_ap = torch.where(pos, d, torch.full_like(d, -torch.inf)).amax(1)
    d_an = torch.where(neg, d, torch.full_like(d, torch.inf)).amin(1)
    ok = pos.any(1) & neg.any(1)
    gap = torch.where(ok, d_ap - d_an, torch.zeros_like(d_ap))
    return torch.where(ok, F.relu(gap + margin), torch.zeros_like(d_ap))


@objective(
    "srat", seed=True, family=FAMILY, input_kind=ADV_FEATURES, example=adv_features_example, paper=SRAT,
    per_sample=False, module_name="SRATLoss", allow_neg_inf=(),
    domains={"class_weight": Maybe(Tensor("class weights (K,), non-negative")), "lam": NONNEGATIVE,
             "margin": NONNEGATIVE},
    formula="l_i = w_{y_i} CE(z_i^adv, y_i) + lam max(0, max_{j: y_j = y_i} ||h_i - h_j|| "
            "- min_{k: y_k != y_i} ||h_i - h_k|| + margin)",
)
def srat(adv_logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor, *,
         class_weight: torch.Tensor | None = None, lam: float = 1.0, margin: float = 1.0,
         sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Separable reweighted adversarial training (SRAT): class-reweighted adversarial cross-entropy plus a
    feature-separation term that pulls each class's adversarial features together and pushes other classes'
    away.

    .. math:: \\ell_i = w_{y_i}\\, \\mathrm{CE}(z^{adv}_i, y_i) + \\lambda \\Big[\\max_{j:\\,y_j = y_i} \\|h_i - h_j\\|
              - \\min_{k:\\,y_k \\ne y_i} \\|h_i - h_k\\| + m\\Big]_+

    ``adv_logits (N, K)`` and ``features (N, D)`` (the penultimate representation) of the adversarial inputs,
    ``target (N,)``. ``class_weight (K,)``: the reweighting (e.g. inverse class frequency, or ones for the
    first epochs and the re-weights after, as deferred re-weighting); ``None`` is uniform. The paper's point is
    that re-weighting alone fails in imbalanced adversarial training because adversarial features are poorly
    separable; the separation term (a batch-hard triplet loss on the features, weight ``lam``, margin
    ``margin``) restores separability. A sample without a positive or a negative in the batch gets no
    separation term. Batch-coupled (the separation term compares samples); ``'none'``: (N,).

    Our reading: the paper's text and code were not available to us, and losskit implements the objective as
    its abstract and our notes describe it (re-weighted CE + a triplet feature-separation loss); its exact
    separation loss and weighting schedule may differ. The tests check the formula against a direct loop.

    Paper: Wang, Xu, Liu, Li, Thuraisingham, Tang, "Imbalanced Adversarial Training with Reweighting", 2021
    (ICDM 2022), arXiv:2107.13639.
    """
    check_floating("adv_logits", adv_logits)
    if adv_logits.dim() != 2:
        raise fail("adv_logits", "logits of shape (N, K)", f"shape {tuple(adv_logits.shape)}")
    n, k = adv_logits.shape
    check_batch("target", target, n, "adv_logits")
    if target.dim() != 1:
        raise fail("target", "class indices of shape (N,)", f"shape {tuple(target.shape)}")
    check_labels("target", target, k)
    check_floating("features", features)
    if features.dim() != 2:
        raise fail("features", "features of shape (N, D)", f"shape {tuple(features.shape)}")
    check_batch("features", features, n, "adv_logits")
    ce = F.cross_entropy(adv_logits, target, reduction="none")
    if class_weight is not None:
        check_floating("class_weight", class_weight)
        if tuple(class_weight.shape) != (k,):
            raise fail("class_weight", f"one weight per class, shape ({k},)", f"shape {tuple(class_weight.shape)}")
        require("class_weight", class_weight, lambda: ~((class_weight >= 0) & torch.isfinite(class_weight)).all(),
                "non-negative finite class weights", lambda: f"{class_weight.tolist()}")
        ce = ce * class_weight.to(ce.dtype)[target]
    sep = _batch_hard_triplet(features, target, margin) if lam else torch.zeros_like(ce)
    return finish(ce + lam * sep, reduction, sample_weight=sample_weight)


SRATLoss = srat.Module
