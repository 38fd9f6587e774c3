"""LegoGCD's anti-forgetting terms for generalized category discovery: local entropy regularisation (LER)
on likely known-class unlabelled samples and the dual-view KL constraint (DKL).

In GCD a classifier over ``K`` classes (the first ``num_known`` seen with labels, the rest novel) is
trained on labelled and unlabelled images, two augmented views each. SimGCD-style self-distillation
drifts on the known classes; LegoGCD adds, per image with views ``a`` and ``b``,

    L = ler_weight * (LER(z_a) + LER(z_b)) / 2 + dkl_weight * KL(p_a || p_b),

    LER(z) = m(z) * CE(softmax(z / tau_e), softmax(z / tau_e + alpha log q)),
    m(z) = 1[unlabelled] * 1[max softmax(z / tau_s) >= threshold] * 1[argmax z < num_known],
    p_v = softmax(z_v / tau_s),

where ``q`` is a running estimate of the class marginal (``alpha log q`` debiases the pseudo-label
towards rare classes; with ``q`` uniform LER is the entropy of ``softmax(z / tau_e)``). Minimising
LER sharpens the predictions of unlabelled samples the model already places, confidently, in a known
class, so they keep their known-class knowledge while novel classes are learned; the KL makes the two
views agree, which makes that selection reliable.

Paper: Cao, Zheng, Wang, Yu, Shen, Li, Lu, Tian, "Solving the Catastrophic Forgetting Problem in
Generalized Category Discovery", CVPR 2024, arXiv:2501.05272.
"""

from __future__ import annotations

import torch

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE, UNIT, Integer, Maybe
from .._core.validate import check_floating
from .._core.values import LOGIT_ROWS

__all__ = ["legogcd", "LegoGCDLoss"]

LEGO = Paper("Solving the Catastrophic Forgetting Problem in Generalized Category Discovery", 2024, "2501.05272",
             "Cao, Zheng, Wang, Yu, Shen, Li, Lu, Tian")


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, k: int = 6) -> Example:
    za = torch.randn(n, k, generator=gen, dtype=torch.float64) * 0.3
    za[:, 0] += torch.linspace(0.0, 0.6, n, dtype=torch.float64)  # some confident in a known class (T = 0.1)
    zb = za + 0.1 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    labeled = torch.arange(n) % 3 == 0
    return Example({"logits_a": za.to(dtype), "logits_b": zb.to(dtype), "labeled": labeled},
                   options={"num_known": 3}, grad=("logits_a", "logits_b"))


def _bad(ex: Example) -> list[BadInput]:
    za, zb, lab = ex.inputs["logits_a"], ex.inputs["logits_b"], ex.inputs["labeled"]
    return [BadInput("views of different shapes", ex.replace({"logits_b": zb[:, :-1]}), "logits_b"),
            BadInput("labeled mask of the wrong size", ex.replace({"labeled": lab[:-1]}), "labeled"),
            BadInput("float labeled mask", ex.replace({"labeled": lab.double()}), "labeled"),
            BadInput("1-d logits", ex.replace({"logits_a": za[:, 0], "logits_b": zb[:, 0]}), "logits_a"),
            BadInput("num_known above K", ex.replace(options={"num_known": za.shape[1] + 1}), "num_known")]


TWO_VIEWS = InputKind("two views' logits + labelled mask",
                      "logits of two views (N, K), a bool mask (N,) of labelled samples", bad_inputs=_bad,
                      extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
                      values={"logits_a": LOGIT_ROWS, "logits_b": LOGIT_ROWS})


@objective("legogcd", family="regularizer", input_kind=TWO_VIEWS, example=_example, paper=LEGO, seed=True,
           module_name="LegoGCDLoss", properties={"nonnegative"},
           formula="L = ler_weight (LER(z_a) + LER(z_b))/2 + dkl_weight KL(softmax(z_a/tau_s) || softmax(z_b/tau_s)); "
                   "LER(z) = m(z) CE(softmax(z/tau_e), softmax(z/tau_e + alpha log q)), m = unlabelled & "
                   "max softmax(z/tau_s) >= threshold & argmax z < num_known",
           domains={"num_known": Maybe(Integer(1)), "threshold": UNIT, "tau_select": POSITIVE,
                    "tau_entropy": POSITIVE, "alpha": NONNEGATIVE, "ler_weight": NONNEGATIVE,
                    "dkl_weight": NONNEGATIVE})
def legogcd(logits_a: torch.Tensor, logits_b: torch.Tensor, labeled: torch.Tensor, prior: torch.Tensor | None = None,
            *, num_known: int | None = None, threshold: float = 0.7, tau_select: float = 0.1,
            tau_entropy: float = 0.05, alpha: float = 0.4, ler_weight: float = 2.0, dkl_weight: float = 1.0,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """LegoGCD: local entropy regularisation (LER) + dual-view KL (DKL), per image.

    .. math:: L_i = \\frac{w_{ler}}{2}\\sum_{v\\in\\{a,b\\}} m(z_{iv})\\,
              \\mathrm{CE}\\big(\\sigma(z_{iv}/\\tau_e),\\ \\sigma(z_{iv}/\\tau_e + \\alpha\\log q)\\big)
              + w_{dkl}\\,\\mathrm{KL}\\big(\\sigma(z_{ia}/\\tau_s)\\,\\|\\,\\sigma(z_{ib}/\\tau_s)\\big)

    ``logits_a``, ``logits_b`` (N, K): the classifier's logits for two views of the same N images (the
    authors' cosine head, whose logits lie in [-1, 1]: hence the small temperatures). ``labeled`` (N,)
    bool: images with a label (never selected by LER). ``prior`` (K,) or (1, K): the running class
    marginal ``q`` (the authors update it every step as ``q <- 0.999 q + 0.001 mean softmax(z)``, starting
    uniform); ``None`` is the uniform prior, under which LER is the entropy of ``softmax(z / tau_e)``.
    ``num_known``: the classes ``0 .. num_known-1`` are the known (labelled) ones; ``None`` counts every
    class as known. The selection ``m`` (unlabelled, confident at ``tau_select`` above ``threshold``,
    predicted known) is a mask without gradient; the pseudo-label inside LER is not detached (as in the
    authors' code). Defaults are the authors' (``thr`` 0.7, temperatures 0.1 / 0.05, ``alpha`` 0.4, LER weight 2,
    DKL weight 1). ``'mean'`` over images equals the authors' ``2 * nll_loss.mean()`` (over both views)
    plus their ``loss_entropy.mean()``.

    Where losskit differs from the authors' code on purpose: their DKL term
    (Cliffia123/LegoGCD ``model.py``, ``DistillLoss``) is ``sum p_a * (log_softmax(p_a) - log_softmax(p_b))``,
    a log-softmax applied to the probabilities ``p`` rather than to the logits; that is not the KL
    divergence of the paper (it is nearly flat in the logits). losskit computes ``KL(p_a || p_b)``.

    Paper: Cao, Zheng, Wang, Yu, Shen, Li, Lu, Tian, "Solving the Catastrophic Forgetting Problem in
    Generalized Category Discovery", CVPR 2024, arXiv:2501.05272.
    """
    check_floating("logits_a", logits_a)
    check_floating("logits_b", logits_b)
    if logits_a.dim() != 2:
        raise fail("logits_a", "shape (N, K)", f"shape {tuple(logits_a.shape)}")
    if logits_b.shape != logits_a.shape:
        raise fail("logits_b", f"the shape of logits_a {tuple(logits_a.shape)}", f"shape {tuple(logits_b.shape)}")
    n, k = logits_a.shape
    if labeled.dtype != torch.bool or labeled.shape != (n,):
        raise fail("labeled", f"a bool mask of shape ({n},)", f"{labeled.dtype} of shape {tuple(labeled.shape)}")
    known = k if num_known is None else num_known
    if known > k:
        raise fail("num_known", f"at most the number of classes ({k})", f"{num_known}")
    dtype = torch.promote_types(logits_a.dtype, logits_b.dtype)
    za, zb = logits_a.to(dtype), logits_b.to(dtype)
    if prior is None:
        log_q = torch.zeros(k, dtype=dtype, device=za.device)
    else:
        check_floating("prior", prior)
        if prior.numel() != k:
            raise fail("prior", f"a class marginal of {k} entries", f"shape {tuple(prior.shape)}")
        log_q = prior.detach().reshape(k).to(dtype).log()

    def ler(z):
        with torch.no_grad():
            conf, pred = torch.softmax(z / tau_select, -1).max(-1)
            m = (~labeled) & (conf >= threshold) & (pred < known)
        zt = z / tau_entropy
        pseudo = torch.softmax(zt, -1)
        ce = -(pseudo * torch.log_softmax(zt + alpha * log_q, -1)).sum(-1)
        return torch.where(m, ce, torch.zeros_like(ce))

    lpa, lpb = torch.log_softmax(za / tau_select, -1), torch.log_softmax(zb / tau_select, -1)
    pa = lpa.exp()
    kl = torch.where(pa > 0, pa * (lpa - lpb), torch.zeros_like(pa)).sum(-1)
    per = ler_weight * (ler(za) + ler(zb)) / 2 + dkl_weight * kl
    return finish(per, reduction, sample_weight=sample_weight)


LegoGCDLoss = legogcd.Module
