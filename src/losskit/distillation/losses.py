"""Knowledge distillation: a divergence between temperature-scaled distributions, weighted per sample.

Every objective here is built from two pieces: the cross-entropy with the labels and
:func:`~losskit.divergences.categorical.categorical_divergence` between the teacher's and the
student's temperature-scaled distributions (any f-divergence; ``divergence='forward'`` is
KL(teacher ‖ student)). BD-KD is a per-sample weighting of two directions; the dual-head methods
route terms to heads.

Shapes: logits ``(N, K)`` or ``(N, K, *)`` (class axis 1, as ``cross_entropy``); labels ``(N,)`` /
``(N, *)`` class indices, ``ignore_index`` positions contribute 0 (every term) and leave the mean; an
all-ignored batch gives 0.

Rules applied to every objective here: temperatures are > 0; mixing weights (``alpha`` of
:func:`kd_loss` and :func:`ps_kd`, ``lam``, ``xi``) lie in [0, 1]; term weights (``beta``, ``gamma``, BD-KD's
``weights`` and ``delta``) are >= 0 (a negative weight would reward the divergence). A logit row whose
every entry is ``-inf`` (fully masked, no distribution) raises :class:`~losskit.LossInputError` naming
the input, unless that sample's label is ``ignore_index`` (it then contributes exactly 0, with zero
gradient).

Gradients flow into ``teacher_logits`` unless the caller detaches them (online distillation trains
both); pass ``teacher_logits.detach()`` for a frozen teacher. ``ps_kd`` detaches its (past-prediction)
targets itself, as its paper prescribes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._core import LossInputError, Paper, fail, finish, objective
from .._core.domains import (
    COUNT,
    NONNEGATIVE,
    POSITIVE,
    UNIT,
    Choice,
    Domain,
    Integer,
    Maybe,
    Seq,
    check_option,
)
from .._core.validate import check_floating, check_labels, check_rows, require
from ..divergences.categorical import categorical_divergence
from ..divergences.generators import GENERATORS, JS, KL, REVERSE_KL, FGenerator, get_generator
from ._inputs import REGRESSION_SD, STUDENT_TEACHER, kd_example, regression_sd_example
from .targets import mix_progressive, one_hot

__all__ = ["kd_loss", "bd_kd", "dual_head_kd", "dho_loss", "dho_predict", "ps_kd", "ProgressiveSelfKD",
           "gt_self_distillation", "binary_kl", "binary_kl_norm", "KDLoss", "BDKD", "DualHeadKD", "DHOLoss", "PSKD",
           "GTSelfDistillation"]


# ------------------------------------------------------------------------------------------ pieces
def _check_pair(student_logits, teacher_logits, target, ignore_index):
    check_floating("student_logits", student_logits)
    check_floating("teacher_logits", teacher_logits)
    if student_logits.dim() < 2:
        raise fail("student_logits", "logits (N, K, *) with a class dimension",
                   f"shape {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise fail("teacher_logits", f"the shape of student_logits {tuple(student_logits.shape)}",
                   f"shape {tuple(teacher_logits.shape)}")
    per_shape = (student_logits.shape[0],) + tuple(student_logits.shape[2:])
    if target is not None:
        if tuple(target.shape) != per_shape:
            raise fail("target", f"class indices of shape {per_shape}", f"shape {tuple(target.shape)}")
        check_labels("target", target, student_logits.shape[1], ignore_index)
    return per_shape


def _valid(target, ignore_index):
    """The bool mask of the samples that count (``None``: every sample, no labels)."""
    return None if target is None else target != ignore_index


def rows(name: str, logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The non-finite policy for logits ``(N, K, *)`` (class axis 1): a fully masked (all ``-inf``) row
    raises unless its sample is ignored; ignored samples' rows are replaced by zeros, so that nothing
    computed from them (a NaN softmax, its gradient) can leak into the result."""
    check_rows(name, logits, dim=1, ignored=None if valid is None else ~valid)
    if valid is None:
        return logits
    return torch.where(valid.unsqueeze(1), logits, logits.new_zeros(()))


def _cross_entropy(logits, target, ignore_index):
    """Per-sample CE and the validity mask (ignored positions give an exact 0)."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    nll = -torch.log_softmax(logits, 1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll)), valid


_DIRECTIONS = {"forward": KL, "reverse": REVERSE_KL, "js": JS}


class _DivergenceDomain(Domain):
    """A divergence: a KD direction, any generator name of :func:`~losskit.divergences.get_generator`,
    or an :class:`FGenerator`."""

    description = (f"an FGenerator or a divergence name ({', '.join(map(repr, _DIRECTIONS))} or one of "
                   f"{', '.join(map(repr, sorted(GENERATORS)))} and their aliases)")

    def contains(self, value, arguments=None) -> bool:
        if isinstance(value, FGenerator):
            return True
        if not isinstance(value, str):
            return False
        try:
            resolve_divergence(value)
        except LossInputError:
            return False
        return True

    def invalid(self) -> list:
        return ["no-such-divergence", 1.5]

    def boundaries(self) -> list:
        return list(_DIRECTIONS)


DIVERGENCE = _DivergenceDomain()


def resolve_divergence(divergence: str | FGenerator) -> FGenerator:
    """``'forward'`` KL(teacher‖student), ``'reverse'`` KL(student‖teacher), ``'js'``, any generator name
    of :func:`~losskit.divergences.get_generator`, or an :class:`FGenerator` (D_f(teacher ‖ student))."""
    if isinstance(divergence, str) and divergence in _DIRECTIONS:
        return _DIRECTIONS[divergence]
    return get_generator(divergence, "divergence")


def soft_divergence(student_logits, teacher_logits, temperature, gen) -> torch.Tensor:
    """``D_f(softmax(z_t/T) ‖ softmax(z_s/T))`` per sample (class axis 1), the KD term before T²."""
    return categorical_divergence(teacher_logits / temperature, student_logits / temperature, gen, dim=1)


def _scaled(w, x):
    """``w * x``, and an exact 0 when ``w == 0`` (a zero-weighted infinite divergence is not NaN)."""
    return w * x if w else torch.zeros_like(x)


_KD = dict(family="distillation", input_kind=STUDENT_TEACHER, allow_neg_inf=("student_logits", "teacher_logits"))


# --------------------------------------------------------------------------------------------- KD
@objective("kd_loss", paper=Paper("Distilling the Knowledge in a Neural Network", 2015, "1503.02531",
                                  "Hinton, Vinyals, Dean"),
           example=kd_example, properties=set(), module_name="KDLoss",
           formula="alpha CE(z_s, y) + beta T^2 D(softmax(z_t/T) || softmax(z_s/T)),  beta = 1 - alpha by default",
           domains={"temperature": POSITIVE, "alpha": UNIT, "beta": Maybe(NONNEGATIVE), "divergence": DIVERGENCE},
           **_KD)
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None, *,
            temperature: float = 4.0, alpha: float = 0.5, beta: float | None = None,
            divergence: str | FGenerator = "forward", ignore_index: int = -100,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Knowledge distillation with temperature: cross-entropy plus a divergence between softened outputs.

    .. math:: \\ell = \\alpha\\,\\mathrm{CE}(z_s, y) + \\beta\\,T^2\\,D\\big(\\pi(z_t/T)\\,\\|\\,\\pi(z_s/T)\\big)

    ``divergence``: ``'forward'`` = KL(teacher ‖ student) (Hinton; the default), ``'reverse'`` =
    KL(student ‖ teacher) (mode seeking), ``'js'``, any generator name (``'tv'``, ``'hellinger'``,
    ``'pearson'``, ...) or an :class:`~losskit.divergences.FGenerator` such as
    ``skew_kl_generator(0.1)`` or ``alpha_generator(0.5)``; the teacher is always the first argument
    of D. ``T > 0``, ``alpha`` in [0, 1], ``beta >= 0`` (default ``1 - alpha``, so ``alpha = 1`` is exactly
    cross-entropy). The T² factor
    keeps the gradient scale of the soft term independent of T. With ``target=None`` only the soft
    term is used. Positions whose label is ``ignore_index`` contribute 0 (both terms) and leave the
    mean.

    Paper: Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    student_logits = rows("student_logits", student_logits, valid)
    teacher_logits = rows("teacher_logits", teacher_logits, valid)
    b = 1.0 - alpha if beta is None else beta
    gen = resolve_divergence(divergence)
    per = _scaled(b * temperature ** 2, soft_divergence(student_logits, teacher_logits, temperature, gen))
    if target is not None:
        per = _scaled(alpha, _cross_entropy(student_logits, target, ignore_index)[0]) + per
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


# ------------------------------------------------------------------------------------------ BD-KD
def _entropy(logits):
    logp = torch.log_softmax(logits, 1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(1)


@objective("bd_kd", seed=True, paper=Paper("BD-KD: Balancing the Divergences for Online Knowledge Distillation", 2022,
                                "2212.12965", "Amara, Sepahvand, Meyer, Gross, Clark"),
           example=kd_example, properties=set(), module_name="BDKD",
           formula="CE(z_s, y) + T^2 [w_f KL(p_t || p_s) + w_r KL(p_s || p_t)], per-sample weights from "
                   "sign(H(p_s) - H(p_t)) when delta is set",
           domains={"temperature": POSITIVE, "weights": Seq(NONNEGATIVE, min_len=2), "delta": Maybe(NONNEGATIVE),
                    "alpha": NONNEGATIVE},
           **_KD)
def bd_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None, *,
          temperature: float = 4.0, weights: tuple[float, float] = (1.0, 1.0), delta: float | None = None,
          alpha: float = 1.0, ignore_index: int = -100, sample_weight: torch.Tensor | None = None,
          reduction: str = "mean") -> torch.Tensor:
    """BD-KD: cross-entropy plus a per-sample balance of forward and reverse KL.

    .. math:: \\ell = \\alpha\\,\\mathrm{CE}(z_s, y) + T^2\\big[w_f\\,\\mathrm{KL}(p_t\\|p_s)
              + w_r\\,\\mathrm{KL}(p_s\\|p_t)\\big],\\quad p = \\pi(z/T)

    ``weights = (w_f, w_r)``; ``(1, 0)`` is :func:`kd_loss` with ``alpha = beta = 1``. With ``delta``
    set, the weights become per-sample: where the student is *less* confident than the teacher
    (``H(p_s) > H(p_t)``) the reverse (mode-seeking, sharpening) term is multiplied by ``delta``,
    otherwise the forward (mass-covering, smoothing) term is. † The paper weights the two directions
    per sample from the entropy gap; this exact rule (which side gets ``delta``) is our reading, not
    verified against its code. The weights are computed without gradient. ``T > 0``; ``alpha`` (the CE
    weight), ``w_f``, ``w_r`` and ``delta`` are >= 0.

    Paper: BD-KD: Balancing the Divergences for Online Knowledge Distillation (Amara et al., 2022,
    arXiv:2212.12965).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    if len(weights) != 2:
        raise fail("weights", "a pair (w_forward, w_reverse)", repr(weights))
    wf, wr = float(weights[0]), float(weights[1])
    valid = _valid(target, ignore_index)
    student_logits = rows("student_logits", student_logits, valid)
    teacher_logits = rows("teacher_logits", teacher_logits, valid)
    fwd = soft_divergence(student_logits, teacher_logits, temperature, KL)
    rev = soft_divergence(student_logits, teacher_logits, temperature, REVERSE_KL)
    if delta is not None:
        with torch.no_grad():
            gap = _entropy(student_logits / temperature) - _entropy(teacher_logits / temperature)
            less_confident = gap > 0
        wf_s = torch.where(less_confident, torch.full_like(gap, wf), torch.full_like(gap, wf * delta))
        wr_s = torch.where(less_confident, torch.full_like(gap, wr * delta), torch.full_like(gap, wr))
        soft = wf_s * fwd + wr_s * rev
    else:
        soft = _scaled(wf, fwd) + _scaled(wr, rev)
    per = temperature ** 2 * soft
    if target is not None:
        per = _scaled(alpha, _cross_entropy(student_logits, target, ignore_index)[0]) + per
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


# ----------------------------------------------------------------------------------- dual-head KD
def binary_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(Bern σ(z_t) ‖ Bern σ(z_s))``: the two-point softmax of ``(z, 0)`` is (σ(z), 1-σ(z))."""
    zeros = torch.zeros_like(teacher_logits)
    return categorical_divergence(torch.stack([teacher_logits, zeros], -1),
                                  torch.stack([student_logits, zeros], -1), KL, dim=-1)


def binary_kl_norm(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise BinaryKL-Norm ``KL(Bern ½ ‖ Bern σ(z_s − z_t))``: a binary KL between the fair coin and
    the sigmoid of the logit gap (0 where the logits agree), ``½[softplus(d) + softplus(−d)] − log 2``."""
    d = student_logits - teacher_logits
    return 0.5 * (nn.functional.softplus(d) + nn.functional.softplus(-d)) - math.log(2.0)


@objective("dual_head_kd", seed=True, paper=Paper("Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an "
                                       "Auxiliary Head", 2024, "2411.08937", "Yang, Zong, Huang, Feng, An"),
           example=lambda g, d: kd_example(g, d, extra=("student_aux_logits",)), properties=set(),
           module_name="DualHeadKD",
           formula="alpha CE(h1, y) + beta T^2 KL(p_t || p_s(h1)) + gamma tau^2 sum_k B(z_t,k / tau, h2_k / tau), "
                   "B = KL(Bern 1/2 || Bern s(h2 - z_t)) ('norm', default) or KL(Bern s(z_t) || Bern s(h2)) ('kl')",
           domains={"temperature": POSITIVE, "alpha": NONNEGATIVE, "beta": NONNEGATIVE, "gamma": NONNEGATIVE,
                    "binary_temperature": POSITIVE, "binary": Choice("norm", "kl")},
           **_KD)
def dual_head_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None,
                 student_aux_logits: torch.Tensor | None = None, *, temperature: float = 4.0, alpha: float = 1.0,
                 beta: float = 0.0, gamma: float = 1.0, binary_temperature: float = 2.0, binary: str = "norm",
                 ignore_index: int = -100, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Dual-head KD: the main head gets CE (and optionally KD), an auxiliary head the logit-level binary KL.

    .. math:: \\ell = \\alpha\\,\\mathrm{CE}(h_1, y) + \\beta T^2 \\mathrm{KL}(\\pi(z_t/T)\\|\\pi(h_1/T))
              + \\gamma\\,\\tau^2 \\sum_k B\\big(z_{t,k}/\\tau,\\ h_{2,k}/\\tau\\big)

    with ``binary='norm'`` (BinaryKL-Norm, the paper's DHKD loss) ``B(t, s) = KL(Bern ½ ‖ Bern σ(s − t))``
    and with ``binary='kl'`` (plain BinaryKL) ``B(t, s) = KL(Bern σ(t) ‖ Bern σ(s))``. ``student_logits``
    is the main (linear) head ``h1``, ``student_aux_logits`` the auxiliary head ``h2`` on the same backbone
    (defaults to ``h1``: the single-head "CE + BinaryKL" setting the paper shows to collapse the classifier;
    use two heads). ``T, τ > 0``; the term weights ``alpha, beta, gamma >= 0``.

    Defaults follow the authors' code (penghui-yang/DHKD, ``train_student.py --distill dhkd``,
    ``distiller_zoo/BinaryKLNorm.py``), which produced the paper's results: the loss is ``r CE(h1, y) + a
    BinaryKLNorm(h2, z_t)`` with ``BinaryKL_T = 2`` and the ``τ²`` factor, and no probability-level KD term
    on the main head (``beta = 0``; the README runs use ``-r 1 -a 1`` on CIFAR-100, ``-a 0.1`` on
    ImageNet). ``beta > 0`` adds the classic KD term to the main head. Before this release the defaults
    were ``beta = 1, binary_temperature = 1`` with the plain BinaryKL and no ``τ²`` factor. The official
    code clamps the sigmoids to ``[1e-8, 1 - 1e-8]`` (differs once a logit gap exceeds about ``18.4 τ``);
    losskit computes the binary KL exactly (no clamping). The official gradient-alignment option (``--ga``,
    an optimiser step) is not part of the loss.

    Paper: Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an Auxiliary Head (Yang
    et al., 2024, arXiv:2411.08937).
    """
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    if student_aux_logits is not None and student_aux_logits.shape != student_logits.shape:
        raise fail("student_aux_logits", f"the shape of student_logits {tuple(student_logits.shape)}",
                   f"shape {tuple(student_aux_logits.shape)}")
    valid = _valid(target, ignore_index)
    student_logits = rows("student_logits", student_logits, valid)
    teacher_logits = rows("teacher_logits", teacher_logits, valid)
    aux = student_logits if student_aux_logits is None else student_aux_logits  # finite: the wrapper checked
    soft = _scaled(beta * temperature ** 2, soft_divergence(student_logits, teacher_logits, temperature, KL))
    term = binary_kl_norm if binary == "norm" else binary_kl
    bin_ = binary_temperature ** 2 * term(teacher_logits / binary_temperature, aux / binary_temperature).sum(1)
    per = soft + _scaled(gamma, bin_)
    if target is not None:
        per = _scaled(alpha, _cross_entropy(student_logits, target, ignore_index)[0]) + per
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


# ---------------------------------------------------------------------------------------------- DHO
@objective("dho_loss", seed=True, paper=Paper("Simple Semi-supervised Knowledge Distillation from Vision-Language Models "
                                   "via Dual-Head Optimization", 2025, "2505.07675"),
           example=lambda g, d: kd_example(g, d, extra=("student_kd_logits",)), properties=set(),
           module_name="DHOLoss",
           formula="lam CE(h_CE, y) [labelled] + (1 - lam) T^2 KL(softmax(z_t/T) || softmax(h_KD/T))",
           domains={"lam": UNIT, "temperature": POSITIVE, "unlabeled_index": Maybe(Integer())}, **_KD)
def dho_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None,
             student_kd_logits: torch.Tensor | None = None, *, lam: float = 0.5, temperature: float = 1.0,
             ignore_index: int = -100, unlabeled_index: int | None = None,
             sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Dual-head optimisation (DHO): CE on one head, KD on the other, from a shared backbone.

    .. math:: \\ell = \\lambda\\,\\mathrm{CE}(h_{CE}, y)\\,[y\\ \\text{labelled}]
              + (1-\\lambda)\\,T^2\\,\\mathrm{KL}\\big(\\pi(z_t/T)\\,\\|\\,\\pi(h_{KD}/T)\\big)

    ``student_logits`` is the CE head, ``student_kd_logits`` the KD head (defaults to the CE head,
    which makes this plain KD). ``lam`` in [0, 1], ``T > 0``. Unlabelled samples (``target`` equal to
    ``unlabeled_index``, e.g. ``unlabeled_index=-1``) contribute the KD term only and still count in
    the mean: the semi-supervised setting of the paper. Samples whose target is ``ignore_index``
    contribute nothing (0, not counted), as in every losskit objective. († the paper's split of
    labelled/unlabelled batches into separate means is not reproduced; weight samples with
    ``sample_weight`` for that: the official step (erjui/DHO, ``train_imgnet.py``: ``0.5 CE_L + 0.5 (KD_L +
    KD_U)``, each a mean over its own batch, ``T = 2``) is ``sample_weight`` ``1/L`` and ``1/U`` with
    ``reduction='sum'``, ``lam=0.5, temperature=2.0``; the default ``temperature=1.0`` is not the official
    scripts' 2.0.) At inference mix the heads with :func:`dho_predict`.

    Paper: Simple Semi-supervised Knowledge Distillation from Vision-Language Models via Dual-Head
    Optimization (Kang et al., 2025, arXiv:2505.07675).
    """
    labelled = None
    if target is not None and unlabeled_index is not None:
        if unlabeled_index == ignore_index:
            raise fail("unlabeled_index", f"a value other than ignore_index={ignore_index}", repr(unlabeled_index))
        labelled = target != unlabeled_index
        # unlabelled entries are valid samples without a class: check the labels as if they were ignored
        target = torch.where(labelled, target, torch.full_like(target, ignore_index))
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    if student_kd_logits is not None and student_kd_logits.shape != student_logits.shape:
        raise fail("student_kd_logits", f"the shape of student_logits {tuple(student_logits.shape)}",
                   f"shape {tuple(student_kd_logits.shape)}")
    valid = _valid(target, ignore_index)
    if labelled is not None:
        valid = valid | ~labelled
    student_logits = rows("student_logits", student_logits, valid)
    teacher_logits = rows("teacher_logits", teacher_logits, valid)
    kd_head = student_logits if student_kd_logits is None else student_kd_logits
    per = _scaled((1 - lam) * temperature ** 2, soft_divergence(kd_head, teacher_logits, temperature, KL))
    if target is not None:
        per = per + _scaled(lam, _cross_entropy(student_logits, target, ignore_index)[0])
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


def dho_predict(ce_logits: torch.Tensor, kd_logits: torch.Tensor, *, alpha: float = 0.5, beta: float = 1.0,
                dim: int = 1) -> torch.Tensor:
    """DHO inference mixing: ``α softmax(h_CE) + (1-α) softmax(h_KD / β)`` (probabilities).

    ``alpha`` in [0, 1]; ``beta > 0`` is the KD head's temperature at inference. Returns class
    probabilities along ``dim``.
    """
    check_option("alpha", alpha, UNIT)
    check_option("beta", beta, POSITIVE)
    if ce_logits.shape != kd_logits.shape:
        raise fail("kd_logits", f"the shape of ce_logits {tuple(ce_logits.shape)}", f"shape {tuple(kd_logits.shape)}")
    return alpha * torch.softmax(ce_logits, dim) + (1 - alpha) * torch.softmax(kd_logits / beta, dim)


# -------------------------------------------------------------------------------------------- PS-KD
@objective("ps_kd", seed=True, paper=Paper("Self-Knowledge Distillation with Progressive Refinement of Targets", 2021,
                                "2006.12000", "Kim, Ji, Yoon, Hwang"),
           example=lambda g, d: kd_example(g, d, grad_teacher=False), properties=set(), module_name="PSKD",
           formula="CE with soft target (1 - alpha_t) onehot(y) + alpha_t softmax(z_prev),  alpha_t = alpha_T t / T",
           domains={"alpha": UNIT}, **_KD)
def ps_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, *,
          alpha: float = 0.8, ignore_index: int = -100, sample_weight: torch.Tensor | None = None,
          reduction: str = "mean") -> torch.Tensor:
    """Progressive self-knowledge distillation (PS-KD): CE against a mix of the label and past predictions.

    .. math:: \\ell = -\\sum_k \\big[(1-\\alpha_t)\\,\\mathbb 1_{k=y} + \\alpha_t\\,\\pi_k(z^{(t-1)})\\big]
              \\log \\pi_k(z_s)

    ``teacher_logits`` are the model's own predictions for the same samples from the previous epoch
    (no gradient flows into them); ``alpha`` is ``α_t`` for this epoch (the paper's schedule is
    ``α_t = α_T · t / T_total`` with ``α_T = 0.8``; :class:`ProgressiveSelfKD` keeps the predictions and
    the schedule, indexed by sample ``index``). ``alpha`` in [0, 1]; ``alpha = 0`` is exactly
    cross-entropy. The targets are :func:`~losskit.progressive_targets`'s. A fully masked (all ``-inf``)
    row of ``teacher_logits`` has no past prediction to mix in: it raises (unless the sample is ignored)
    instead of silently dropping the teacher term.

    Paper: Self-Knowledge Distillation with Progressive Refinement of Targets (Kim et al., 2021,
    arXiv:2006.12000).
    """
    if target is None:
        raise fail("target", "class indices (PS-KD mixes them into its targets)", "None")
    _check_pair(student_logits, teacher_logits, target, ignore_index)
    valid = _valid(target, ignore_index)
    logq = torch.log_softmax(rows("student_logits", student_logits, valid), 1)
    past = torch.softmax(rows("teacher_logits", teacher_logits.detach(), valid), 1)
    labels = one_hot(torch.where(valid, target, torch.zeros_like(target)), logq.shape[1], logq.dtype, dim=1)
    soft = mix_progressive(labels, past, alpha)
    # 0 log 0 = 0: a masked (-inf) student class with no target mass costs nothing (and no NaN gradient)
    per = -torch.where(soft > 0, soft * logq, torch.zeros_like(logq)).sum(1)
    return finish(per, reduction, sample_weight=sample_weight, mask=valid)


class ProgressiveSelfKD(nn.Module):
    """Stateful PS-KD: stores every sample's last prediction and applies the α_t schedule.

    ``ProgressiveSelfKD(num_samples, num_classes, total_epochs, alpha_T=0.8)``; call
    ``loss = m(student_logits, target, index=idx)`` with the samples' dataset indices, and
    ``m.set_epoch(t)`` at the start of epoch ``t`` (0-based; ``α_t = α_T · (t + 1) / total_epochs``, as
    the official code, lgcnsai/PS-KD-Pytorch ``main.py``: the paper's ``t / T`` with 1-based epochs, so
    the last epoch uses ``α_T``). Each
    call reads the stored predictions of ``index`` from the previous epoch (epoch 0: none, plain CE),
    then stores the current (detached) predictions. The memory is a buffer, so it moves with
    ``.to(device)`` and round-trips through ``state_dict``. Memory: ``num_samples × num_classes``
    floats (use probabilities in float16 via ``dtype`` for large label spaces).
    """

    def __init__(self, num_samples: int, num_classes: int, total_epochs: int, alpha_T: float = 0.8,
                 ignore_index: int = -100, reduction: str = "mean", dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, v in (("num_samples", num_samples), ("num_classes", num_classes), ("total_epochs", total_epochs)):
            check_option(name, v, COUNT)
        check_option("alpha_T", alpha_T, UNIT)
        self.total_epochs, self.alpha_T = int(total_epochs), float(alpha_T)
        self.ignore_index, self.reduction = ignore_index, reduction
        self.register_buffer("predictions", torch.zeros(num_samples, num_classes, dtype=dtype))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(int(epoch))

    @property
    def alpha_t(self) -> float:
        return self.alpha_T * min(int(self.epoch) + 1, self.total_epochs) / self.total_epochs

    def forward(self, student_logits: torch.Tensor, target: torch.Tensor, *, index: torch.Tensor,
                sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        if index.dtype not in (torch.int32, torch.int64) or index.shape != student_logits.shape[:1]:
            raise fail("index", f"integer sample indices of shape {tuple(student_logits.shape[:1])}",
                       f"{index.dtype} of shape {tuple(index.shape)}")
        if student_logits.dim() != 2 or student_logits.shape[1] != self.predictions.shape[1]:
            raise fail("student_logits", f"logits (N, {self.predictions.shape[1]})",
                       f"shape {tuple(student_logits.shape)}")
        n = self.predictions.shape[0]
        require("index", index, lambda: ((index < 0) | (index >= n)).any(), f"indices in [0, {n})",
                lambda: f"{index.tolist()}")
        past = self.predictions[index].to(student_logits.dtype)
        seen = self.seen[index]
        # a sample never seen has no past prediction: uniform logits, weighted by 0 below
        past_logits = torch.where(seen[:, None], past.log(), torch.zeros_like(past))
        alpha = self.alpha_t
        loss_seen = ps_kd(student_logits, past_logits, target, alpha=alpha, ignore_index=self.ignore_index,
                          reduction="none")
        loss_new = ps_kd(student_logits, past_logits, target, alpha=0.0, ignore_index=self.ignore_index,
                         reduction="none")
        per = torch.where(seen, loss_seen, loss_new)
        with torch.no_grad():
            self.predictions[index] = torch.softmax(student_logits.detach(), 1).to(self.predictions.dtype)
            self.seen[index] = True
        return finish(per, self.reduction, sample_weight=sample_weight, mask=target != self.ignore_index)


# ----------------------------------------------------------------- self-distillation with GT weights
@objective("gt_self_distillation", seed=True, family="distillation", input_kind=REGRESSION_SD, example=regression_sd_example,
           paper=Paper("Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by "
                       "Self-Distillation", 2021, "2102.13088", "Borup, Andersen"),
           properties={"nonnegative"}, module_name="GTSelfDistillation",
           formula="xi ||y - f||^2 + (1 - xi) ||f_prev - f||^2", domains={"xi": UNIT})
def gt_self_distillation(student_outputs: torch.Tensor, teacher_outputs: torch.Tensor, target: torch.Tensor, *,
                         xi: float = 0.5, sample_weight: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """Self-distillation with ground-truth weighting: a weighted squared error to labels and past outputs.

    .. math:: \\ell = \\xi\\,\\lVert y - f(x)\\rVert^2 + (1-\\xi)\\,\\lVert f^{(t-1)}(x) - f(x)\\rVert^2

    ``teacher_outputs`` are the previous generation's outputs ``f^{(t-1)}`` (no gradient flows into
    them); ``target`` the ground truth (same shape; for classification pass one-hot targets and logits
    or probabilities as the paper's ResNet experiments do). The squared norm sums over every axis but
    the first. ``xi`` in [0, 1]: ``xi = 1`` is plain squared error, ``xi = 0`` pure self-distillation. The ℓ2 weight
    penalty of the paper is the optimiser's weight decay. † The paper's closed-form optimal ``ξ_t`` is
    for kernel ridge regression and is not computed here.

    Paper: Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by
    Self-Distillation (Borup & Andersen, 2021, arXiv:2102.13088).
    """
    check_floating("student_outputs", student_outputs)
    check_floating("teacher_outputs", teacher_outputs)
    check_floating("target", target)
    for name, x in (("teacher_outputs", teacher_outputs), ("target", target)):
        if x.shape != student_outputs.shape:
            raise fail(name, f"the shape of student_outputs {tuple(student_outputs.shape)}", f"shape {tuple(x.shape)}")
    dims = tuple(range(1, student_outputs.dim()))
    gt = (target - student_outputs).pow(2)
    sd = (teacher_outputs.detach() - student_outputs).pow(2)
    per = xi * gt + (1 - xi) * sd
    per = per.sum(dims) if dims else per
    return finish(per, reduction, sample_weight=sample_weight)


KDLoss = kd_loss.Module
BDKD = bd_kd.Module
DualHeadKD = dual_head_kd.Module
DHOLoss = dho_loss.Module
PSKD = ps_kd.Module
GTSelfDistillation = gt_self_distillation.Module

