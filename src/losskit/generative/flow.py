"""Flow matching on a Gaussian probability path (conditional flow matching), with the kinetic-optimal
cond-OT path as the default."""

from __future__ import annotations

import torch

from .._core import Paper, finish, objective
from .._core.domains import Choice
from .._core.validate import require
from ._common import check_pair, per_sample_mean
from ._inputs import FLOW, flow_example
from .paths import PATHS, PREDICTIONS, WEIGHTINGS, conditional_target, path_weight

__all__ = ["flow_matching_loss", "FlowMatchingLoss"]

#: paths whose d(sigma_t)/dt is infinite at t = 1 (sigma_1 = 0 reached with an infinite slope)
SINGULAR_AT_1 = frozenset({"linear_vp", "vp"})

KO_PAPER = Paper("On Kinetic Optimal Probability Paths for Generative Models", 2023, "2306.06626",
                 "Shaul, Chen, Nickel, Le, Lipman")


@objective(
    "flow_matching_loss", seed=True, family="generative", input_kind=FLOW, example=flow_example, paper=KO_PAPER,
    properties={"nonnegative"},
    formula="L = w(t) mean_j (f_j - u_j)^2,  u = d/dt(alpha_t) x1 + d/dt(sigma_t) x0 (prediction='velocity'), "
            "x1 ('data') or x0 ('noise');  x_t = alpha_t x1 + sigma_t x0",
    domains={"path": Choice(*PATHS), "prediction": Choice(*PREDICTIONS), "weighting": Choice(*WEIGHTINGS)},
)
def flow_matching_loss(pred: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, *,
                       path: str = "cond_ot", prediction: str = "velocity", weighting: str = "uniform",
                       sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Conditional flow matching: regress the model's output at ``x_t`` on the path's conditional target.

    .. math:: x_t = \\alpha_t x_1 + \\sigma_t x_0,\\qquad
              \\ell = w(t)\\,\\frac{1}{d}\\big\\|f_\\theta(x_t, t) - (\\dot\\alpha_t x_1 + \\dot\\sigma_t x_0)\\big\\|^2

    ``pred (N, ...)`` is the network's output at ``x_t`` (:func:`~losskit.generative.interpolate` forms
    ``x_t`` from the same ``x0``, ``x1``, ``t``); ``x0`` is the noise (``N(0, I)``), ``x1`` the data, ``t (N,)``
    in [0, 1] with ``t = 1`` the data. The loss draws nothing: the caller samples ``x0`` and ``t`` (with its
    own generator), so the loss is a deterministic function of its inputs, as the conformance suite and
    reproducible training need. Minimising its expectation gives the marginal velocity field (Lipman et
    al. 2023, Theorem 2), so at the true conditional target the loss is exactly 0.

    ``path``: ``'cond_ot'`` (default; ``alpha_t = t``, ``sigma_t = 1 - t``), which Shaul et al. prove kinetic
    optimal among Gaussian paths when the data separation function is 1, the limit ``n/sqrt(d) -> 0`` of any
    normalised data set; ``'cosine'``, ``'linear_vp'``, ``'vp'`` (diffusion paths, as
    ``facebookresearch/flow_matching`` defines them). ``prediction``: ``'velocity'`` (default), ``'data'``
    (``x1``) or ``'noise'`` (``x0``, the epsilon loss of diffusion models). ``weighting``: ``'uniform'``,
    ``'snr'`` (``alpha^2/sigma^2``), ``'min_snr'`` (``min(snr, 5)``). The per-sample loss is the mean over the
    non-batch dimensions (``torch.nn.MSELoss`` when reduced with ``'mean'``). ``t = 1`` is refused where the
    target or the weight is infinite there (``'linear_vp'``, ``'vp'``, ``weighting='snr'``).

    Paper: Shaul, Chen, Nickel, Le, Lipman, "On Kinetic Optimal Probability Paths for Generative Models",
    ICML 2023, arXiv:2306.06626 (flow matching: Lipman et al., arXiv:2210.02747). The data-dependent
    kinetic-optimal schedules of the paper's Section 4 (a 1-D ODE for an estimated data separation
    function) are not built.
    """
    check_pair("pred", pred, "x0", x0, "t", t, ("x1", x1))
    if path in SINGULAR_AT_1 or weighting == "snr":
        require("t", t, lambda: (t >= 1).any(), f"times below 1 (path={path!r}, weighting={weighting!r} is "
                "infinite at t = 1)", lambda: "t = 1")
    target = conditional_target(x0, x1, t, path, prediction)
    per = per_sample_mean((pred - target) ** 2)
    if weighting != "uniform":
        per = per * path_weight(t, path, weighting)
    return finish(per, reduction, sample_weight=sample_weight)


FlowMatchingLoss = flow_matching_loss.Module
