"""Smooth adversarial comp-sum losses (Mao, Mohri, Zhong 2023): a comp-sum loss on the natural logits plus a
smooth term that bounds how far an adversarial perturbation can move the margin vector.

The adversarial comp-sum loss ``sup_{||x' - x|| <= gamma} Phi_tau(sum_{k != y} e^{(h(x',k) - h(x',y))/rho})``
is not smooth in ``h`` and has no useful consistency guarantee; the paper replaces it by the upper bound

.. math:: \\tilde\\ell(h, x, y) = \\Phi_\\tau\\Big(\\sum_{k \\ne y} e^{(h(x,k) - h(x,y))/\\rho}\\Big)
          + \\nu \\sup_{\\|x' - x\\|_p \\le \\gamma} \\big\\|\\bar\\Delta_h(x', y) - \\bar\\Delta_h(x, y)\\big\\|_2,
          \\qquad \\bar\\Delta_h(x, y) = \\big(h(x, k) - h(x, y)\\big)_{k}

which holds whenever ``nu`` is at least the ell-2 Lipschitz constant of the margin map (``1/rho`` for
``tau >= 1``; tests/oracles/test_misc2_objectives.py checks the inequality). The supremum over ``x'`` is the
attack's job (:func:`losskit.pgd` with ``loss_fn=smooth_adv_term``, as TRADES maximises its KL term); the objective here takes
the logits of the natural and of the attacked inputs.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, POSITIVE
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, check_labels, check_same_shape
from ..ops.pairwise import safe_sqrt
from .margins import comp_sum_transform, margin_logsumexp

__all__ = ["smooth_adv_comp_sum", "SmoothAdvCompSumLoss", "smooth_adv_term"]

PAPER = Paper("Cross-Entropy Loss Functions: Theoretical Analysis and Applications", 2023, "2304.07288",
              "Mao, Mohri, Zhong")


def _with(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[0] = value
    return x


def nat_adv_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    nat = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    adv = nat + torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=gen)
    return Example({"nat_logits": nat.to(dtype), "adv_logits": adv.to(dtype), "target": target},
                   options={"tau": 1.5, "nu": 0.5}, grad=("nat_logits", "adv_logits"))


def _bad(ex: Example) -> list[BadInput]:
    nat, adv, target = ex.inputs["nat_logits"], ex.inputs["adv_logits"], ex.inputs["target"]
    k = nat.shape[1]
    return [
        BadInput("adversarial logits of another shape", ex.replace({"adv_logits": adv[:, :-1]}), "adv_logits"),
        BadInput("logits without a class axis", ex.replace({"nat_logits": nat[:, 0], "adv_logits": adv[:, 0]}),
                 "nat_logits"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(target, k + 1)}), "target"),
        BadInput("float labels", ex.replace({"target": target.to(nat.dtype)}), "target"),
        BadInput("labels of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("+inf logit", ex.replace({"adv_logits": _with(adv, float("inf"))}), "adv_logits"),
        BadInput("NaN natural logit", ex.replace({"nat_logits": _with(nat, float("nan"))}), "nat_logits"),
    ]


def _extreme(ex: Example) -> Example:
    out = ex.map_floats(lambda t: t.to(torch.float32))
    return out.replace({k: out.inputs[k].sign() * 1e4 + out.inputs[k] for k in ("nat_logits", "adv_logits")})


NAT_ADV_LOGITS = InputKind("natural+perturbed logits+labels (comp-sum)",
                           "logits (N, K) of the natural inputs, logits (N, K) of their perturbed versions, labels (N,)",
                           bad_inputs=_bad, extreme=_extreme)


def _check(nat_logits, adv_logits, target) -> None:
    check_floating("nat_logits", nat_logits)
    check_floating("adv_logits", adv_logits)
    if nat_logits.dim() != 2:
        raise fail("nat_logits", "logits of shape (N, K)", f"shape {tuple(nat_logits.shape)}")
    check_same_shape("adv_logits", adv_logits, "nat_logits", nat_logits)
    check_batch("target", target, nat_logits.shape[0], "nat_logits")
    if target.dim() != 1 or target.is_floating_point():
        raise fail("target", "class indices of shape (N,)", f"{target.dtype} of shape {tuple(target.shape)}")
    check_labels("target", target, nat_logits.shape[1])


def smooth_adv_term(nat_logits: torch.Tensor, adv_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||Delta(x') - Delta(x)||_2`` per sample, ``Delta(x)_k = h(x, k) - h(x, y)``: shape ``(N,)``.

    The term the attack maximises over ``x'`` (``pgd(model, x, target, loss_fn=lambda out, y:
    smooth_adv_term(nat_logits.detach(), out, y).sum(), ...)``). Equal to ``||d - d_y 1||_2`` with
    ``d = h(x') - h(x)``; value and gradient 0 where ``d`` is constant across classes (no perturbation effect).
    """
    idx = target.long()[:, None]
    d = adv_logits - nat_logits
    dm = d - d.gather(1, idx)
    return safe_sqrt(dm.square().sum(1))


@objective(
    "smooth_adv_comp_sum", seed=True, family="classification", input_kind=NAT_ADV_LOGITS, example=nat_adv_example,
    paper=PAPER, properties={"nonnegative"}, module_name="SmoothAdvCompSumLoss", allow_neg_inf=(),
    domains={"tau": NONNEGATIVE, "rho": POSITIVE, "nu": NONNEGATIVE},
    formula="l = Phi_tau(sum_{k!=y} e^{(z_k - z_y)/rho}) + nu ||(z'_k - z'_y)_k - (z_k - z_y)_k||_2,  "
            "z = h(x), z' = h(x') (x' attacked),  Phi_tau(u) = ((1+u)^{1-tau} - 1)/(1-tau)",
)
def smooth_adv_comp_sum(nat_logits: torch.Tensor, adv_logits: torch.Tensor, target: torch.Tensor, *,
                        tau: float = 1.0, rho: float = 1.0, nu: float = 1.0,
                        sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """The smooth adversarial comp-sum loss: comp-sum on the natural logits plus the smooth adversarial term.

    .. math:: \\tilde\\ell = \\Phi_\\tau\\Big(\\sum_{k \\ne y} e^{(z_k - z_y)/\\rho}\\Big)
              + \\nu\\, \\big\\|\\bar\\Delta(z', y) - \\bar\\Delta(z, y)\\big\\|_2,\\qquad
              \\bar\\Delta(z, y)_k = z_k - z_y

    ``nat_logits`` ``z = h(x)``, ``adv_logits`` ``z' = h(x')`` for the attacked input ``x'`` (the paper takes the
    supremum over the ``gamma``-ball; in training ``x'`` comes from PGD on :func:`smooth_adv_term`), ``target``
    class indices ``(N,)``. Options in the paper's notation: ``tau`` the comp-sum parameter (0 sum-exp, 1
    cross-entropy, (1, 2) GCE, 2 MAE; :func:`comp_sum`), ``rho > 0`` the margin (the comp-sum term reads
    ``z / rho``), ``nu >= 0`` the weight of the smooth term. ``nu = 0`` gives ``comp_sum(z / rho, y; tau)``.
    With ``tau >= 1`` and ``nu >= 1/rho`` the loss upper-bounds the comp-sum loss of the attacked point,
    ``comp_sum(z' / rho)`` (the margin map is ``1/rho``-Lipschitz in ell-2): the paper's reason the surrogate
    inherits H-consistency bounds in the adversarial setting. ``'none'``: (N,).

    Defaults ``tau = 1`` (cross-entropy, the paper's ADV-COMP-SUM with the logistic loss) and ``rho = 1``;
    ``nu`` is a trade-off the paper selects per data set (like TRADES' beta): tune it.

    Our reading: the paper's text was not available to us while writing this; the formula follows its
    definition as we know it (comp-sum rho-margin loss plus ``nu sup ||Delta(x') - Delta(x)||_2``) and the
    tests check the stated relations (reduction to comp-sum at ``nu = 0``, the upper bound for
    ``nu >= 1/rho``), not a port of the authors' code (none is public).

    Paper: Mao, Mohri, Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and Applications", ICML 2023,
    arXiv:2304.07288.
    """
    _check(nat_logits, adv_logits, target)
    idx = target.long()
    z = nat_logits if rho == 1.0 else nat_logits / rho
    s = margin_logsumexp.at(z, idx)  # -log_softmax(z / rho)_y
    comp = comp_sum_transform(s, tau)
    per = comp + nu * smooth_adv_term(nat_logits, adv_logits, idx)
    return finish(per, reduction, sample_weight=sample_weight)


SmoothAdvCompSumLoss = smooth_adv_comp_sum.Module
