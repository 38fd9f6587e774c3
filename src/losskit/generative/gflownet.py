"""Multi-objective GFlowNets (Jain et al. 2023): trajectory balance of a preference-conditioned GFlowNet on a
scalarised reward ``R(x | w)^beta`` (MOGFN-PC).

The objective reads per-trajectory sums (``sum_t log P_F``, ``sum_t log P_B``), the conditional ``log Z(w)``
and the objectives' log-rewards ``log R_i(x)``; how the trajectories were sampled and how ``w`` is drawn
(a Dirichlet in the paper) is the caller's.
"""

from __future__ import annotations

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import POSITIVE, Choice, Maybe, Real
from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, describe
from .._core.values import NONNEGATIVE_VALUES, Values

__all__ = ["mogfn_tb_loss", "MOGFNTBLoss", "scalarize_log_rewards", "SCALARIZATIONS", "MOGFN_TB"]

MOGFN_PAPER = Paper("Multi-Objective GFlowNets", 2023, "2210.12765",
                    "Jain, Raparthy, Hernandez-Garcia, Rector-Brooks, Bengio, Miret, Bengio")

#: the scalarisations of the paper (Section 3.1), in log space
SCALARIZATIONS = ("weighted_sum", "tchebycheff")

LOG_PROBS = Values(hi=0.0, description="log-probabilities <= 0 (sums of per-step log-probabilities)")


def scalarize_log_rewards(log_rewards: torch.Tensor, preferences: torch.Tensor,
                          scalarization: str = "weighted_sum") -> torch.Tensor:
    """``log R(x | w)`` from the objectives' log-rewards ``log R_i(x)`` ``(N, M)`` and preferences ``w (N, M)``.

    ``'weighted_sum'``: ``log sum_i w_i R_i(x)`` (a log-sum-exp of ``log w_i + log R_i``, no reward is
    exponentiated); ``'tchebycheff'``: ``log min_i w_i R_i(x) = min_i (log w_i + log R_i)``, the weighted
    Tchebycheff scalarisation for maximisation. The preferences are conditioning constants (no gradient
    reaches them); a zero weight drops an objective from the weighted sum and makes the Tchebycheff reward 0
    (``-inf``), as the formulas say.
    """
    if scalarization not in SCALARIZATIONS:
        raise fail("scalarization", f"one of {SCALARIZATIONS}", repr(scalarization))
    log_w = torch.log(preferences.detach().to(log_rewards.dtype))
    terms = log_w + log_rewards
    if scalarization == "weighted_sum":
        return torch.logsumexp(terms, -1)
    return terms.amin(-1)


# --------------------------------------------------------------------------------------- input kind
def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, m: int = 3) -> Example:
    f64 = torch.float64
    log_pf = -3.0 * torch.rand(n, generator=gen, dtype=f64) - 0.5
    log_pb = -2.0 * torch.rand(n, generator=gen, dtype=f64) - 0.1
    log_z = torch.randn(n, generator=gen, dtype=f64)
    log_r = torch.randn(n, m, generator=gen, dtype=f64)
    w = -torch.log(torch.rand(n, m, generator=gen, dtype=f64))
    w = w / w.sum(-1, keepdim=True)  # a Dirichlet(1) draw: normalised exponentials
    ins = {"log_z": log_z, "log_pf": log_pf, "log_pb": log_pb, "log_rewards": log_r, "preferences": w}
    return Example({k: v.to(dtype) for k, v in ins.items()}, grad=("log_z", "log_pf", "log_pb"))


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _bad(ex: Example) -> list[BadInput]:
    i = ex.inputs
    return [
        BadInput("log_pf of another batch size", ex.replace({"log_pf": i["log_pf"][:-1]}), "log_pf"),
        BadInput("log_z with a feature axis", ex.replace({"log_z": i["log_z"][:, None]}), "log_z"),
        BadInput("one-dimensional log_rewards", ex.replace({"log_rewards": i["log_rewards"][:, 0]}), "log_rewards"),
        BadInput("preferences of another shape", ex.replace({"preferences": i["preferences"][:, :-1]}),
                 "preferences"),
        BadInput("NaN log_pb", ex.replace({"log_pb": _with(i["log_pb"], float("nan"))}), "log_pb"),
        BadInput("positive log_pf", ex.replace({"log_pf": _with(i["log_pf"], 0.5)}), "log_pf"),
        BadInput("negative preference", ex.replace({"preferences": _with(i["preferences"], -0.2)}), "preferences"),
        BadInput("integer log_z", ex.replace({"log_z": i["log_z"].round().long()}), "log_z"),
    ]


MOGFN_TB = InputKind(
    "conditional GFlowNet trajectories",
    "log Z(w) (N,), sum_t log P_F(s_t+1 | s_t, w) (N,), sum_t log P_B(s_t | s_t+1, w) (N,), the objectives' "
    "log-rewards log R_i(x) (N, M) and the preferences w (N, M)",
    bad_inputs=_bad, extreme=scale_input("log_z"),
    values={"log_pf": LOG_PROBS, "log_pb": LOG_PROBS, "preferences": NONNEGATIVE_VALUES})


def _check(log_z, log_pf, log_pb, log_rewards, preferences) -> None:
    for name, x in (("log_z", log_z), ("log_pf", log_pf), ("log_pb", log_pb)):
        check_floating(name, x)
        if x.dim() != 1:
            raise fail(name, "one value per trajectory, shape (N,)", describe(x))
    n = log_z.shape[0]
    for name, x in (("log_pf", log_pf), ("log_pb", log_pb)):
        if x.shape[0] != n:
            raise fail(name, f"shape ({n},), the batch of log_z", describe(x))
    check_floating("log_rewards", log_rewards)
    if log_rewards.dim() != 2 or log_rewards.shape[0] != n or log_rewards.shape[1] < 1:
        raise fail("log_rewards", f"the objectives' log-rewards, shape ({n}, M)", describe(log_rewards))
    check_floating("preferences", preferences)
    if preferences.shape != log_rewards.shape:
        raise fail("preferences", f"one weight per objective, shape {tuple(log_rewards.shape)}",
                   describe(preferences))


@objective(
    "mogfn_tb_loss", seed=True, family="generative", input_kind=MOGFN_TB, example=_example,
    paper=MOGFN_PAPER, properties={"nonnegative"}, module_name="MOGFNTBLoss",
    formula="L = (log Z(w) + sum_t log P_F(s_t+1|s_t, w) - beta log R(x|w) - sum_t log P_B(s_t|s_t+1, w))^2, "
            "log R(x|w) = log sum_i w_i R_i(x) (weighted sum) or min_i (log w_i + log R_i(x)) (Tchebycheff)",
    domains={"scalarization": Choice(*SCALARIZATIONS), "beta": POSITIVE, "log_reward_min": Maybe(Real())},
)
def mogfn_tb_loss(log_z: torch.Tensor, log_pf: torch.Tensor, log_pb: torch.Tensor, log_rewards: torch.Tensor,
                  preferences: torch.Tensor, *, scalarization: str = "weighted_sum", beta: float = 1.0,
                  log_reward_min: float | None = -100.0, sample_weight: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """Trajectory balance of a preference-conditioned GFlowNet on a scalarised multi-objective reward (MOGFN-PC).

    .. math:: \\ell(\\tau; w) = \\Big(\\log Z_\\theta(w) + \\sum_t \\log P_F(s_{t+1}\\mid s_t; w)
              - \\beta \\log R(x \\mid w) - \\sum_t \\log P_B(s_t \\mid s_{t+1}; w)\\Big)^2

    for a complete trajectory ``tau = (s_0 -> ... -> x)``. ``log_z (N,)``: the conditional log-partition
    network's output at the trajectory's preference ``w``; ``log_pf``, ``log_pb (N,)``: the sums over the
    trajectory of the forward policy's and the backward policy's log-probabilities (a fixed uniform
    ``P_B`` gives ``-sum_t log(#parents)``); ``log_rewards (N, M)``: ``log R_i(x)`` of the ``M`` objectives;
    ``preferences (N, M)``: ``w`` (on the simplex in the paper, drawn from ``Dirichlet(1)``). The
    scalarisation (paper, Section 3.1; :func:`scalarize_log_rewards`) is ``'weighted_sum'``
    ``R(x|w) = sum_i w_i R_i(x)`` (default, the authors' ``MultiObjectiveWeightedPreferences``) or
    ``'tchebycheff'`` ``R(x|w) = min_i w_i R_i(x)``; ``beta`` is the reward exponent (``R(x|w)^beta``;
    the paper tunes it per task, and also conditions on it; 1 keeps the reward as is). Computed in log
    space: no reward is exponentiated. ``log_reward_min`` clips ``beta log R(x|w)`` from below (the
    authors' code clips the log-reward at -100 so that a zero reward stays finite; ``None`` keeps it).
    At the optimum, ``P_F(x | w) = R(x|w)^beta / Z(w)`` for every ``w``: one amortised sampler per
    preference. Gradients reach ``log_z``, ``log_pf``, ``log_pb`` (and ``log_rewards``, if they carry any);
    the preferences are conditioning constants.

    Paper: Jain, Raparthy, Hernandez-Garcia, Rector-Brooks, Bengio, Miret, Bengio, "Multi-Objective
    GFlowNets", ICML 2023, arXiv:2210.12765.
    """
    _check(log_z, log_pf, log_pb, log_rewards, preferences)
    target = beta * scalarize_log_rewards(log_rewards, preferences, scalarization)
    if log_reward_min is not None:
        target = target.clamp_min(log_reward_min)
    per = (log_z + log_pf - target - log_pb).square()
    return finish(per, reduction, sample_weight=sample_weight)


MOGFNTBLoss = mogfn_tb_loss.Module
