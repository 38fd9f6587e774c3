"""VaGraM (Voelcker, Liao, Garg, Farahmand 2022): the value-gradient weighted model loss of model-based RL. The
dynamics model's next-state error is measured along the directions the value function is sensitive to,
``(s_hat' - s')^T diag(grad V(s')^2) (s_hat' - s')``, instead of uniformly (MSE / maximum likelihood)."""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import Choice, Maybe, Real
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe

__all__ = ["vagram_loss", "VaGraMLoss", "clip_value_gradients"]

VAGRAM_PAPER = Paper("Value Gradient weighted Model-Based Reinforcement Learning", 2022, "2204.01464",
                     "Voelcker, Liao, Garg, Farahmand")


def clip_value_gradients(value_grad: torch.Tensor, quantile: float) -> torch.Tensor:
    """Rescale the value gradients ``(..., N, D)`` whose norm reaches the batch's ``quantile`` of norms down to
    that norm (per value function), as the authors' ``bound_clipping`` (``np.quantile`` of the norms; linear
    interpolation, ``torch.quantile``'s default too). Detached."""
    g = value_grad.detach()
    norms = g.norm(dim=-1, keepdim=True)
    bound = torch.quantile(norms.flatten(-2).to(torch.float64), quantile, dim=-1).to(g.dtype)
    bound = bound[..., None, None]
    return torch.where(norms < bound, g, bound / norms.clamp_min(torch.finfo(g.dtype).tiny) * g)


def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, d: int = 4) -> Example:
    f64 = torch.float64
    target = torch.randn(n, d, generator=gen, dtype=f64)
    pred = target + 0.4 * torch.randn(n, d, generator=gen, dtype=f64)
    g = torch.randn(n, d, generator=gen, dtype=f64)
    return Example({"pred": pred.to(dtype), "target": target.to(dtype), "value_grad": g.to(dtype)}, grad=("pred",))


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("target of another shape", ex.replace({"target": i["target"][:, :-1]}), "target"),
        BadInput("value_grad of another state size", ex.replace({"value_grad": i["value_grad"][:, :-1]}),
                 "value_grad"),
        BadInput("one-dimensional pred", ex.replace({"pred": i["pred"][:, 0], "target": i["target"][:, 0]}), "pred"),
        BadInput("NaN value_grad", ex.replace({"value_grad": _with(i["value_grad"], float("nan"))}), "value_grad"),
        BadInput("integer pred", ex.replace({"pred": i["pred"].round().long()}), "pred"),
    ]


def _extreme(ex: Example) -> Example:
    out = ex.map_floats(lambda t: t.to(torch.float32))
    p = out.inputs["pred"]
    return out.replace({"pred": p.sign() * 1e4 + p})


VAGRAM_KIND = InputKind(
    "next-state prediction + value gradient",
    "predicted next states (N, D), true next states (N, D), the value function's gradient at the true next "
    "states (N, D), or (K, N, D) for K value functions",
    bad_inputs=_bad, extreme=_extreme)


@objective(
    "vagram_loss", seed=True, family="regression", input_kind=VAGRAM_KIND, example=_example, paper=VAGRAM_PAPER,
    properties={"nonnegative"}, module_name="VaGraMLoss",
    formula="L = mean_k sum_j (g_kj (s_hat'_j - s'_j))^2,  g_k = grad_s V_k(s') (detached);  "
            "form='taylor': mean_k (g_k . (s_hat' - s'))^2",
    domains={"form": Choice("diagonal", "taylor"), "clip_quantile": Maybe(Real(0.0, 1.0, lo_open=True))},
)
def vagram_loss(pred: torch.Tensor, target: torch.Tensor, value_grad: torch.Tensor, *, form: str = "diagonal",
                clip_quantile: float | None = None, sample_weight: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
    """VaGraM: the model's next-state error weighted by the value function's gradient at the true next state.

    .. math:: \\ell = (\\hat s' - s')^\\top \\mathrm{diag}\\big(\\nabla_s V(s')\\big)^2 (\\hat s' - s')
              = \\sum_j \\Big(\\frac{\\partial V}{\\partial s_j}(s')\\,(\\hat s'_j - s'_j)\\Big)^2

    The value-aware model loss ``(V(s_hat') - V(s'))^2`` is what matters for planning with the model, but it
    is flat along directions ``V`` ignores and unstable to optimise; VaGraM's bound replaces it by the
    error along each state dimension scaled by the value's sensitivity to that dimension (the paper's
    Eq. 6, the authors' ``use_scaling`` branch): a model need not be accurate in irrelevant dimensions
    (distractors). ``pred (N, D)``: the model's next state ``s_hat'``; ``target (N, D)``: the observed
    ``s'``; ``value_grad``: ``grad_s V(s')`` at the observed next state, ``(N, D)``, or ``(K, N, D)`` for
    ``K`` value functions (the authors average over the critics). The gradient is a constant weight
    (detached). ``form='taylor'``: the first-order VAML loss ``(grad V(s') . (s_hat' - s'))^2`` instead
    (the code's ``use_vaml``), which the paper shows to be degenerate (a plane of minimisers).
    ``clip_quantile``: rescale value gradients whose norm reaches that quantile of the batch's norms
    (the authors' ``bound_clipping``, 0.95 when on; :func:`clip_value_gradients`; it couples the batch).
    Per sample, the sum over the ``D`` dimensions (the quadratic form; the authors' tensor is per dimension
    and averaged later, a factor ``D``). Reward prediction, if the model makes one, is a separate MSE term
    (as the authors add it).

    Paper: Voelcker, Liao, Garg, Farahmand, "Value Gradient weighted Model-Based Reinforcement Learning",
    ICLR 2022, arXiv:2204.01464 (code: the first author's cvoelcker/mbrl-lib, ``mbrl/models/vaml_mlp.py``).
    """
    check_floating("pred", pred)
    check_floating("target", target)
    check_floating("value_grad", value_grad)
    if pred.dim() != 2:
        raise fail("pred", "next states of shape (N, D)", describe(pred))
    if target.shape != pred.shape:
        raise fail("target", f"the shape of pred {tuple(pred.shape)}", describe(target))
    if value_grad.shape[-2:] != pred.shape or value_grad.dim() not in (2, 3):
        raise fail("value_grad", f"shape {tuple(pred.shape)} or (K, {pred.shape[0]}, {pred.shape[1]})",
                   describe(value_grad))
    if form not in ("diagonal", "taylor"):
        raise fail("form", "'diagonal' or 'taylor'", repr(form))
    g = value_grad.detach().to(pred.dtype)
    if g.dim() == 2:
        g = g.unsqueeze(0)
    if clip_quantile is not None:
        g = clip_value_gradients(g, clip_quantile)
    err = pred - target.to(pred.dtype)
    if form == "diagonal":
        per = (g * err).square().sum(-1)
    else:
        per = (g * err).sum(-1).square()
    return finish(per.mean(0), reduction, sample_weight=sample_weight)


VaGraMLoss = vagram_loss.Module
