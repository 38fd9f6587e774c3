"""Survival: the (weighted) Cox proportional-hazards negative log partial likelihood, Breslow or Efron ties."""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core.domains import Choice, Maybe, Tensor
from .._core.validate import check_floating, require
from ._inputs import SURVIVAL, survival_example

__all__ = ["cox_ph_loss", "CoxPHLoss"]

BIOFUSION_PAPER = Paper("BioFusionNet: Deep Learning-Based Survival Risk Stratification in ER+ Breast Cancer "
                        "Through Multifeature and Multimodal Data Fusion", 2024, "2402.10717",
                        "Mondol, Millar, Sowmya, Meijering")


def _survival_inputs(risk, time, event, weight):
    check_floating("risk", risk)
    if risk.dim() != 1:
        raise fail("risk", "one log-hazard score per sample, shape (N,)", f"shape {tuple(risk.shape)}")
    n = risk.shape[0]
    check_floating("time", time)
    if tuple(time.shape) != (n,):
        raise fail("time", f"one time per sample, shape ({n},)", f"shape {tuple(time.shape)}")
    if tuple(event.shape) != (n,):
        raise fail("event", f"one event indicator per sample, shape ({n},)", f"shape {tuple(event.shape)}")
    if event.dtype != torch.bool:
        require("event", event, lambda: ((event != 0) & (event != 1)).any(), "event indicators in {0, 1}",
                lambda: f"values {sorted(set(event.detach().reshape(-1).tolist()))[:5]}")
    if weight is not None:
        check_floating("weight", weight)
        if tuple(weight.shape) != (2,):
            raise fail("weight", "class weights (censored, event), shape (2,)", f"shape {tuple(weight.shape)}")
        require("weight", weight, lambda: ~((weight >= 0) & torch.isfinite(weight)).all(),
                "non-negative finite class weights", lambda: f"{weight.tolist()}")
    return event != 0


@objective(
    "cox_ph_loss", seed=True, family="regression", input_kind=SURVIVAL, example=survival_example,
    paper=BIOFUSION_PAPER, per_sample=False, batch_scalar=True, sample_weight=False,
    formula="L = -(1 / sum_i w_i d_i) sum_i w_i d_i (h_i - log sum_{j: t_j >= t_i} w_j exp(h_j)),  "
            "w_i = weight[d_i] (Breslow ties; Efron: the tied events' risk set shrinks by l/d of their mass)",
    module_name="CoxPHLoss",
    domains={"weight": Maybe(Tensor("class weights (censored, event), shape (2,)")),
             "ties": Choice("breslow", "efron")},
)
def cox_ph_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, *, weight: torch.Tensor | None = None,
                ties: str = "breslow", reduction: str = "mean") -> torch.Tensor:
    """Negative Cox partial log-likelihood, with BioFusionNet's class weights for imbalanced events.

    .. math:: \\mathcal L = -\\frac{1}{\\sum_i w_i\\delta_i}\\sum_{i:\\,\\delta_i = 1} w_i\\Big(h_i -
              \\log\\sum_{j:\\,t_j \\ge t_i} w_j e^{h_j}\\Big),\\qquad w_i = \\texttt{weight}[\\delta_i]

    ``risk (N,)`` are the predicted log hazard ratios ``h``, ``time (N,)`` the observed times (>= 0),
    ``event (N,)`` 1 (bool ``True``) for an observed event and 0 for a censored sample. ``weight``:
    ``None`` (default, the standard Cox loss averaged over the events) or the class weights
    ``(w_censored, w_event)`` of BioFusionNet's weighted Cox loss (the paper up-weights the rarer events:
    ``weight = torch.tensor([1.0, event_weight])``); a sample's weight scales both its own term and its
    share of every risk set, as in the authors' code. ``ties``: ``'breslow'`` (default; every event at a
    tied time sees the full risk set) or ``'efron'`` (the ``l``-th of ``d`` tied events sees the risk set
    less ``l/d`` of the tied events' mass; with weights each of the ``d`` terms carries the tied events'
    mean weight, as R's ``coxph``). One loss for the batch (``reduction`` has no effect); a batch without
    events gives 0 with zero gradient. Sorting by time and a reversed cumulative log-sum-exp: O(N log N).

    The authors' ``loss_function.py`` orders the risk sets by predicted risk rather than by time; losskit
    orders them by time as the partial likelihood (and the paper) defines, so the two agree when the risk
    order is the reverse of the time order (the relation tests/oracles checks).

    Paper: Mondol, Millar, Sowmya, Meijering, "BioFusionNet: Deep Learning-Based Survival Risk
    Stratification in ER+ Breast Cancer Through Multifeature and Multimodal Data Fusion", 2024,
    arXiv:2402.10717.
    """
    ev = _survival_inputs(risk, time, event, weight)
    h = risk
    w = torch.ones_like(h) if weight is None else weight.to(h.dtype)[ev.long()]
    order = torch.argsort(time, stable=True)
    t, h, e, w = time[order], h[order], ev[order], w[order]
    a = torch.log(w) + h  # log of each sample's risk-set mass (-inf for a zero weight)
    first = torch.searchsorted(t, t)  # first sorted position of each sample's tie group: R_i = [first_i, N)
    log_s = torch.logcumsumexp(a.flip(0), 0).flip(0)[first]
    we = torch.where(e, w, torch.zeros_like(w))  # event weights (0 for the censored)
    if ties == "efron":
        ef = e.to(h.dtype)
        d = torch.zeros_like(h).index_add(0, first, ef)[first]  # tied events in the group
        rank = (ef.cumsum(0) - ef)  # events before this one in sorted order
        rank = rank - rank[first]  # ... within its group
        a_e = torch.where(e, a, torch.full_like(a, -math.inf))
        m = torch.full_like(h, -math.inf).scatter_reduce(0, first, a_e.detach(), "amax", include_self=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        mass = torch.zeros_like(h).index_add(0, first, torch.exp(a_e - m[first]))[first]
        log_d = torch.log(torch.where(mass > 0, mass, torch.ones_like(mass))) + m[first]
        d_safe = torch.where(d > 0, d, torch.ones_like(d))
        frac = torch.where(e, rank / d_safe, torch.zeros_like(rank))
        # D <= S exactly; the clamp only removes rounding above 0 (log_d - log_s is <= 1e-15 there)
        log_den = log_s + torch.log1p(-frac * torch.exp(torch.clamp(log_d - log_s, max=0.0)))
        wbar = torch.zeros_like(h).index_add(0, first, we)[first] / d_safe
        den_w = wbar
    else:
        log_den = log_s
        den_w = we
    # events only: a censored term (or one of weight 0) contributes an exact 0 (no -inf * 0)
    term = torch.where(e & (we > 0), we * h - den_w * log_den, torch.zeros_like(h))
    total, count = term.sum(), we.sum()
    loss = -total / torch.where(count == 0, torch.ones_like(count), count)
    return finish(loss, reduction)


CoxPHLoss = cox_ph_loss.Module
