"""Dual RL (Sikchi, Zheng, Zhang, Niekum 2024): the f-DVL value losses, the dual-V objective of offline RL with a
choice of f-divergence. They replace XQL's Gumbel regression (the reverse-KL member of the family) by the
conjugates of the Pearson chi-square and total-variation generators of :mod:`losskit.divergences`.

The value loss reads ``Q(s, a)`` of the (target) critic and ``V(s)`` at the dataset's pairs; the critic's
own loss (a squared TD error to ``r + gamma V(s')``) and the policy extraction stay with the caller.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, UNIT, Choice, Maybe
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe
from ..divergences.generators import get_generator

__all__ = ["f_dvl_value_loss", "FDVLValueLoss", "f_dvl_conjugate", "F_DVL_DIVERGENCES"]

DUAL_RL_PAPER = Paper("Dual RL: Unification and New Methods for Reinforcement and Imitation Learning", 2024,
                      "2302.08560", "Sikchi, Zheng, Zhang, Niekum")

#: the authors' three choices (their ``--f``): chi-square, total variation, reverse KL (= XQL's Gumbel loss)
F_DVL_DIVERGENCES = ("chi2", "tv", "reverse_kl")
_ALIASES = {"chi-square": "chi2", "pearson": "chi2", "total-variation": "tv", "total_variation": "tv",
            "reverse-kl": "reverse_kl", "gumbel": "reverse_kl"}


def _name(divergence: str) -> str:
    key = _ALIASES.get(divergence, divergence) if isinstance(divergence, str) else divergence
    if key not in F_DVL_DIVERGENCES:
        raise fail("divergence", f"one of {F_DVL_DIVERGENCES} (or {sorted(_ALIASES)})", repr(divergence))
    return key


def f_dvl_conjugate(y: torch.Tensor, divergence: str = "chi2") -> torch.Tensor:
    """The conjugate term of f-DVL at ``y = Q - V``, as the authors' code evaluates it: ``max(f*(y), 0)``.

    ``'chi2'``: the Pearson generator ``f(t) = (t - 1)^2`` of :mod:`losskit.divergences`, ``f*(y) = y + y^2/4``;
    ``'tv'``: the total-variation generator, ``f*(y) = y``. Both clipped below at 0 (``max(., 0)``: the value
    only moves where the conjugate is positive, i.e. ``V < Q`` for TV, and ``V < Q`` or ``V > Q + 4`` for
    chi-square). ``'reverse_kl'`` is XQL's Gumbel loss, not of this form (:func:`f_dvl_value_loss`).
    """
    key = _name(divergence)
    if key == "reverse_kl":
        raise fail("divergence", "'chi2' or 'tv' (the Gumbel loss has no clipped conjugate)", repr(divergence))
    gen = get_generator("pearson" if key == "chi2" else "tv")
    return gen.conjugate(y).clamp_min(0.0)


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 8) -> Example:
    q = torch.randn(n, generator=gen, dtype=torch.float64)
    v = q + torch.tensor([-2.5, -1.0, -0.4, 0.3, 0.8, 1.5, 5.0, -0.7], dtype=torch.float64)[:n]
    return Example({"q": q.to(dtype), "v": v.to(dtype)}, grad=("v",))


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _bad(ex: Example) -> list[BadInput]:
    q, v = ex.inputs["q"], ex.inputs["v"]
    return [
        BadInput("v of another batch size", ex.replace({"v": v[:-1]}), "v"),
        BadInput("NaN q", ex.replace({"q": _with(q, float("nan"))}), "q"),
        BadInput("+inf v", ex.replace({"v": _with(v, float("inf"))}), "v"),
        BadInput("integer v", ex.replace({"v": v.round().long()}), "v"),
    ]


VALUE_KIND = InputKind("critic and value estimates", "Q(s, a) (N,) of the (target) critic and V(s) (N,) at the "
                       "dataset's state-action pairs (any equal shapes)", bad_inputs=_bad, extreme=scale_input("v"))


@objective(
    "f_dvl_value_loss", seed=True, family="preference", input_kind=VALUE_KIND, example=_example,
    paper=DUAL_RL_PAPER, module_name="FDVLValueLoss",
    formula="y = Q(s,a) - V(s);  chi2 / tv: L = lam max(f*(y), 0) - (1 - lam) y,  f*(y) = y + y^2/4 (chi2), y (tv);  "
            "reverse_kl (XQL): L = e^z - z - 1, z = min(y / temperature, max_clip)",
    domains={"divergence": Choice(*F_DVL_DIVERGENCES, *_ALIASES), "lam": UNIT, "temperature": POSITIVE,
             "max_clip": Maybe(POSITIVE)},
)
def f_dvl_value_loss(q: torch.Tensor, v: torch.Tensor, *, divergence: str = "chi2", lam: float = 1.0,
                     temperature: float = 1.0, max_clip: float | None = None,
                     sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """f-DVL: the dual-V value loss of offline RL for an f-divergence regulariser.

    .. math:: \\min_V\\; \\mathbb E_{(s,a)\\sim d^O}\\Big[\\lambda\\, \\max\\big(f^*(Q(s,a) - V(s)), 0\\big)
              - (1-\\lambda)\\,\\big(Q(s,a) - V(s)\\big)\\Big]

    Dual RL writes regularised offline RL as the dual of a linear program over visitation distributions;
    with the semi-gradient (``Q`` from a target critic, held fixed) the value's problem is the line above:
    ``(1 - lam) E[V]`` pushes ``V`` down, the conjugate of the f-divergence pushes it up toward an upper
    expectile-like statistic of ``Q``, as XQL's Gumbel regression does for the KL member. ``q`` and ``v``
    (any equal shapes, ``(N,)`` typically): ``Q(s, a)`` (the authors take the minimum of twin target
    critics; gradient-free in practice) and ``V(s)``. ``divergence``:

    * ``'chi2'`` (default, the authors' locomotion runs): the Pearson generator's conjugate
      ``f*(y) = y + y^2/4``, clipped at 0 (the ``f_dvl_conjugate``, as the authors' ``chi_square_loss``);
    * ``'tv'`` (their AntMaze runs): total variation, ``max(y, 0)`` (``total_variation_loss``);
    * ``'reverse_kl'``: XQL's Gumbel regression ``e^z - z - 1`` at ``z = y / temperature`` (their Kitchen
      and Adroit runs; ``temperature`` is the code's ``--temp`` there, 8 in their Adroit command),
      with ``z`` clipped at ``max_clip`` when given (the authors pass 5). ``lam`` is not used there.

    ``lam`` in ``[0, 1]`` is the code's ``--temp`` for ``'chi2'``/``'tv'`` (1 in their locomotion command,
    0.8 in AntMaze): the weight of the conjugate term. The authors' reverse-KL also divides the loss by
    ``e^{max z}`` over the batch (an adaptive step size that couples the batch); losskit returns the
    unscaled loss (a per-sample objective), so rescale the learning rate instead. ``(1 - lam) E[V]`` is
    written ``-(1 - lam) y``, equal in its gradient in ``V`` (the code's form; it keeps the value near 0 at
    ``V = Q``). ReCOIL, the paper's imitation method, is not here (see docs/preference.md).

    Paper: Sikchi, Zheng, Zhang, Niekum, "Dual RL: Unification and New Methods for Reinforcement and
    Imitation Learning", ICLR 2024, arXiv:2302.08560 (code: hari-sikchi/DVL, ``offline/critic.py``).
    """
    key = _name(divergence)
    check_floating("q", q)
    check_floating("v", v)
    if v.shape != q.shape:
        raise fail("v", f"the shape of q {tuple(q.shape)}", describe(v))
    y = q - v
    if key == "reverse_kl":
        z = y / temperature
        if max_clip is not None:
            z = z.clamp_max(max_clip)
        per = torch.expm1(z) - z
    else:
        per = lam * f_dvl_conjugate(y, key) - (1 - lam) * y
    return finish(per, reduction, sample_weight=sample_weight)


FDVLValueLoss = f_dvl_value_loss.Module
