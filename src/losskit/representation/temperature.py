"""Individualised temperatures: iSogCLR (per-sample temperatures and moving-average state) and the
temperature network (TempNet) with its DRO loss. Both rest on the contrastive core's ``'negatives'``
mode, which gives ``log sum_{z in S_i^-} exp((s(x_i, z) - s(x_i, x_i^+)) / tau_i)`` per anchor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._core import Paper, fail, finish, objective
from .._core import distributed as D
from .._core.domains import FLAG, NONNEGATIVE, Choice, Domain
from .._core.inputs import LOGITS_LABELS
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_batch, check_floating, check_labels
from .._core.values import LOGIT_ROWS_DIM1, Values
from ._inputs import pair_example, scale_all
from .contrastive import _everything, _index_positive, _pair, _supcon_rows
from .core import contrast, embed

__all__ = ["ISogCLRState", "isogclr", "ISogCLRLoss", "TempNet", "tempnet_dro", "TempNetDROLoss",
           "tempnet_lm", "TempNetLMLoss"]

FAMILY = "representation"
ISOG = Paper("Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic "
             "Temperature Individualization", 2023, "2305.11965", "Qiu, Hu, Yuan, Zhou, Wang, Yang")
TEMPNET = Paper("To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO", 2024,
                "2404.04575", "Qiu, Guo, Yang et al.")


def _log_mean_exp_h(z1, z2, tau_rows, normalize, gather=False, group=None):
    """Per (sample, view) anchor: log mean_{z in S^-} exp((s(x, z) - s(x, x+)) / tau), shape (N, 2)."""
    x = embed("z1", torch.stack([z1, z2], 1), normalize)
    n = x.shape[0]
    if gather and D.is_distributed(group):  # gather only: the global batch size (all_gather syncs sizes anyway)
        n = int(D.global_sum(torch.tensor(float(n), device=x.device), group).item())
    if n < 2:
        raise fail("z1", "a batch of at least 2 samples (the negatives are the other samples)", f"shape {tuple(z1.shape)}")
    lse, _ = _supcon_rows(x, None, tau_rows, "negatives", gather=gather, group=group, block_size=None)
    return lse - math.log(2 * n - 2)


def _cross_log_mean_exp_h(z1, z2, tau1, tau2, normalize, gather=False, group=None):
    """Cross-modal anchors: log mean_{j != i} exp((s(a_i, b_j) - s(a_i, b_i)) / tau) for a = z1 against
    b = z2 and for a = z2 against b = z1 (the negatives are the other samples of the *other* view), (N, 2)."""
    a, b = embed("z1", z1, normalize), embed("z2", z2, normalize)
    n = a.shape[0]
    if gather and D.is_distributed(group):
        n = int(D.global_sum(torch.tensor(float(n), device=a.device), group).item())
    if n < 2:
        raise fail("z1", "a batch of at least 2 samples (the negatives are the other samples)", f"shape {tuple(z1.shape)}")
    out = []
    for anc, cand, t in ((a, b, tau1), (b, a, tau2)):
        cands, offset = D.all_gather(cand, group) if gather else (cand, 0)
        m = cands.shape[0]
        ids = torch.arange(m, device=cands.device)
        lse, _ = contrast(anc, cands, tau=t, positives=_index_positive(offset, ids),
                          den_mask=_everything(m, cands.device), mode="negatives")
        out.append(lse)
    return torch.stack(out, 1) - math.log(n - 1)


POSITIVE_TEMPERATURES = Values(0.0, lo_open=True, description="positive temperatures")


def _check_tau(tau: torch.Tensor, n: int, what: str, per_view: bool = False) -> None:
    """``tau`` (n,) (or (n, 2) with ``per_view``): positive temperatures (a value check: the validation
    mode, no host synchronisation)."""
    check_floating("tau", tau)
    if tuple(tau.shape) != (n,) and not (per_view and tuple(tau.shape) == (n, 2)):
        shapes = f"shape ({n},)" + (f" or ({n}, 2) (one per view)" if per_view else "")
        raise fail("tau", f"one temperature per {what}, {shapes}", f"shape {tuple(tau.shape)}")
    # positive values: the declared domain of the objectives' ``tau`` input (POSITIVE_VALUES), checked by the wrapper


class ISogCLRState(nn.Module):
    """Per-sample state of :func:`isogclr`: temperatures ``tau`` (a parameter, one per dataset sample)
    and the moving averages ``log_u`` (buffer, one per sample and view). Save it with ``state_dict``.

    Train ``tau`` with any optimiser (the official code: momentum 0.9 on the clipped gradient, a
    small step) and call :meth:`project_` after each step to keep it in ``[tau_min, tau_max]`` (the
    paper's projection). ``tau_init`` = 0.07 as in the official code.
    """

    def __init__(self, num_samples: int, *, tau_init: float = 0.07, tau_min: float = 0.05, tau_max: float = 0.7,
                 gamma: float = 0.9, dtype=torch.float32):
        super().__init__()
        if not 0 < tau_min <= tau_init <= tau_max:
            raise fail("tau_init", f"a value in [tau_min, tau_max] = [{tau_min}, {tau_max}] with tau_min > 0",
                       repr(tau_init))
        if not 0 < gamma <= 1:
            raise fail("gamma", "a moving-average weight in (0, 1]", repr(gamma))
        self.tau_min, self.tau_max, self.gamma = tau_min, tau_max, gamma
        self.tau = nn.Parameter(torch.full((num_samples,), float(tau_init), dtype=dtype))
        self.register_buffer("log_u", torch.zeros(num_samples, 2, dtype=dtype))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    @torch.no_grad()
    def project_(self) -> None:
        self.tau.clamp_(self.tau_min, self.tau_max)

    @torch.no_grad()
    def sync_grad_(self, group=None) -> None:
        """With ``isogclr(gather=True)``: sum ``tau.grad`` over ranks (each rank holds the gradient of
        its own samples' temperatures), so that every replica takes the same optimiser step."""
        if self.tau.grad is not None and D.is_distributed(group):
            torch.distributed.all_reduce(self.tau.grad, group=group)

    @property
    def num_samples(self) -> int:
        return self.tau.shape[0]


def _isog_example(gen, dtype) -> Example:
    ex = pair_example(gen, dtype)
    n = ex.inputs["z1"].shape[0]
    state = ISogCLRState(10, dtype=torch.float64)
    with torch.no_grad():
        state.tau.copy_(0.1 + 0.5 * torch.rand(10, generator=gen, dtype=torch.float64))
        state.log_u.copy_(2 * torch.randn(10, 2, generator=gen, dtype=torch.float64))
        state.seen.fill_(True)
    index = torch.randperm(10, generator=gen)[:n]
    return Example({**ex.inputs, "index": index}, options={"state": state, "update": False}, grad=("z1", "z2"))


def _isog_bad(ex: Example) -> list[BadInput]:
    idx, z2 = ex.inputs["index"], ex.inputs["z2"]
    return [
        BadInput("index out of range", ex.replace({"index": idx + 100}), "index"),
        BadInput("index of the wrong length", ex.replace({"index": idx[:-1]}), "index"),
        BadInput("float index", ex.replace({"index": idx.double()}), "index"),
        BadInput("batch size mismatch", ex.replace({"z2": z2[:-1]}), "z2"),
        BadInput("no state", ex.replace(options={"state": None}), "state"),
    ]


class _StateDomain(Domain):
    """An :class:`ISogCLRState`. ``None`` (the signature's placeholder default: the state is required) passes
    the domain and is refused by :func:`isogclr` with the same description."""

    description = "an ISogCLRState(num_samples) holding the per-sample temperatures"

    def contains(self, value, arguments=None) -> bool:
        return value is None or isinstance(value, ISogCLRState)

    def invalid(self) -> list:
        return ["not-a-state"]


_STATE = _StateDomain()

ISOG_KIND = InputKind("embedding pair + dataset index", "z1, z2 (N, D) and the samples' dataset indices (N,)",
                      bad_inputs=_isog_bad, extreme=scale_all())


@objective(
    "isogclr", seed=True, family=FAMILY, input_kind=ISOG_KIND, example=_isog_example, paper=ISOG, per_sample=False,
    module_name="ISogCLRLoss", domains={"state": _STATE, "rho": NONNEGATIVE, "update": FLAG, "normalize": FLAG},
    formula="F_i = tau_i log E_{z in S_i^-} exp((s(x_i, z) - s(x_i, x_i^+)) / tau_i) + tau_i rho; g_i = E exp(s/tau_i) "
            "estimated by a per-sample moving average u_i; value tau_i (g_i/u_i - 1 + log u_i + rho) - s(x_i, x_i^+)",
)
def isogclr(z1: torch.Tensor, z2: torch.Tensor, index: torch.Tensor, *, state: ISogCLRState | None = None,
            rho: float = 0.3, update: bool = True, normalize: bool = True, gather: bool = False, group=None,
            sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """iSogCLR: robust (DRO) contrastive loss with one learned temperature per dataset sample.

    .. math:: F_i(w, \\tau_i) = \\tau_i \\log \\mathbb E_{z \\in S_i^-}
              \\exp\\!\\Big(\\frac{s(x_i, z) - s(x_i, x_i^+)}{\\tau_i}\\Big) + \\tau_i \\rho
              = \\tau_i \\log g_i - s(x_i, x_i^+) + \\tau_i \\rho,\\quad
              g_i = \\mathbb E_{z \\in S_i^-} e^{s(x_i, z)/\\tau_i}

    As in the official code, ``g_i`` is estimated by a moving average ``u_i <- (1 - gamma) u_i +
    gamma g_i`` kept in ``state`` (:class:`ISogCLRState`, indexed by the samples' dataset ``index``;
    first visit: ``u_i = g_i``; ``update=False`` freezes it). The value returned per anchor is
    ``tau_i (g_i / u_i - 1 + log u_i + rho) - s(x_i, x_i^+)``, the first-order expansion of ``F_i``
    around ``u_i``: its gradient in the embeddings is exactly the algorithm's estimator
    ``(1/u_i) E[e^{s/tau_i} grad s] - grad s(x_i, x_i^+)``; its gradient in ``tau_i`` is the
    algorithm's ``log u_i + rho - E[e^{s/tau_i} s/tau_i] / u_i`` plus ``g_i/u_i - 1`` (zero once
    ``u_i`` has caught up with ``g_i``). Temperatures are ``state.tau[index]``, shared by a sample's
    two views as in the official code (learnable: any optimiser, then ``state.project_()``; the
    official code uses momentum SGD with gradient clipping). Anchors are both views of each sample,
    negatives the 2N - 2 views of the other samples. One moving average per (sample, view) (the
    official code stores their mean). Defaults rho = 0.3, gamma = 0.9, tau in [0.05, 0.7].
    ``'none'`` returns (N, 2). ``gather=True``: negatives from every rank, whole-batch value and
    gradients; the updated moving averages of every rank are written into every rank's ``state``
    (replicas stay identical), and ``state.sync_grad_()`` before the optimiser step sums the
    temperatures' gradients over ranks.

    Paper: Qiu, Hu, Yuan, Zhou, Wang, Yang, "Not All Semantics are Created Equal: Contrastive
    Self-supervised Learning with Automatic Temperature Individualization", 2023, arXiv:2305.11965.
    """
    _pair(z1, z2)
    if not isinstance(state, ISogCLRState):
        raise fail("state", _STATE.description, repr(type(state)))
    n = z1.shape[0]
    check_labels("index", index, state.num_samples)
    check_batch("index", index, n, "the batch of z1")
    tau_all, log_u_all, seen_all = state.tau, state.log_u, state.seen
    if tau_all.device != z1.device:
        if not z1.is_meta:
            raise fail("state", f"an ISogCLRState on the device of z1 ({z1.device}; move it with state.to(...))",
                       f"a state on {tau_all.device}")
        # meta inputs (shape propagation): a meta view of the state (nothing can be read or recorded)
        tau_all, log_u_all, seen_all = (t.to("meta") for t in (tau_all, log_u_all, seen_all))
    tau = tau_all[index].to(z1.dtype)
    t = tau.unsqueeze(1)
    a, b = (torch.nn.functional.normalize(x, dim=-1) if normalize else x for x in (z1, z2))
    s_pos = (a * b).sum(-1, keepdim=True)  # s(x_i, x_i^+), the same for both views
    # log g_i = log E exp((s - s+)/tau) + s+/tau, from the core's 'negatives' mode
    lg = _log_mean_exp_h(z1, z2, tau.repeat_interleave(2), normalize, gather, group) + s_pos / t  # (N, 2)
    log_u = log_u_all[index].to(lg.dtype)
    fresh = ~seen_all[index]
    if update:
        with torch.no_grad():
            g = lg.detach()
            mixed = torch.logaddexp(math.log1p(-state.gamma) + log_u if state.gamma < 1 else
                                    torch.full_like(log_u, float("-inf")), math.log(state.gamma) + g)
            log_u = torch.where(fresh.unsqueeze(1), g, mixed)
            new_index, new_log_u = index, log_u.to(log_u_all.dtype)
            if gather:  # every rank records every rank's samples
                new_index = D.all_gather_nograd(index, group)
                new_log_u = D.all_gather_nograd(new_log_u, group)
            log_u_all[new_index] = new_log_u
            seen_all[new_index] = True
    else:
        log_u = torch.where(fresh.unsqueeze(1), lg.detach(), log_u)
    loss = t * (torch.exp(lg - log_u) - 1 + log_u + rho) - s_pos
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


# ------------------------------------------------------------------------------------- TempNet
class TempNet(nn.Module):
    """The temperature network: a small head predicting one temperature per input.

    ``x`` is L2-normalised, projected to ``hidden`` features ``h`` (linear, sigmoid, dropout,
    linear), ``h`` is pooled against its own softmax (with a learned scale ``s``):
    ``v = w . ((softmax(h / e^s) - 1/hidden) * h) + b`` (``w`` initialised to ones, ``b`` to 0), and
    ``tau = tau_min + (tau_max - tau_min) sigmoid(v)``. This is the architecture of the authors'
    published LLM TempNet (tau in [0.01, 1.2] there); its input is a feature vector per sample, e.g.
    the logits of a token or the embedding of an image or text.
    """

    def __init__(self, in_features: int, hidden: int = 256, *, tau_min: float = 0.01, tau_max: float = 1.2,
                 dropout: float = 0.5):
        super().__init__()
        if not 0 < tau_min < tau_max:
            raise fail("tau_min", f"0 < tau_min < tau_max = {tau_max}", repr(tau_min))
        self.tau_min, self.tau_max, self.hidden = tau_min, tau_max, hidden
        self.proj = nn.Sequential(nn.Linear(in_features, hidden), nn.Sigmoid(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden))
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.out.weight.fill_(1.0)
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.nn.functional.normalize(x, dim=-1))
        attn = torch.softmax(h / self.log_scale.exp(), dim=-1)
        v = self.out((attn - 1.0 / self.hidden) * h).squeeze(-1)
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(v)


def _tempnet_example(gen, dtype) -> Example:
    ex = pair_example(gen, dtype)
    n = ex.inputs["z1"].shape[0]
    tau = (0.1 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)
    return Example({**ex.inputs, "tau": tau}, grad=("z1", "z2", "tau"))


def _tempnet_bad(ex: Example) -> list[BadInput]:
    tau = ex.inputs["tau"]
    return [
        BadInput("negative temperature", ex.replace({"tau": -tau}), "tau"),
        BadInput("temperatures of the wrong length", ex.replace({"tau": tau[:-1]}), "tau"),
        BadInput("batch size mismatch", ex.replace({"z2": ex.inputs["z2"][:-1]}), "z2"),
    ]


TEMP_KIND = InputKind("embedding pair + temperatures", "z1, z2 (N, D) and one temperature per sample (N,)",
                      bad_inputs=_tempnet_bad, extreme=lambda ex: scale_all()(ex).replace(
                          {"tau": ex.inputs["tau"].float()}))


@objective(
    "tempnet_dro", seed=True, family=FAMILY, input_kind=TEMP_KIND, example=_tempnet_example, paper=TEMPNET, per_sample=False,
    values={"tau": POSITIVE_TEMPERATURES},
    module_name="TempNetDROLoss", domains={"rho": NONNEGATIVE, "normalize": FLAG, "negatives": Choice("cross", "all")},
    formula="l_i = tau_i log mean_{z in S_i^-} exp((s(x_i, z) - s(x_i, x_i^+)) / tau_i) + rho tau_i",
)
def tempnet_dro(z1: torch.Tensor, z2: torch.Tensor, tau: torch.Tensor, *, rho: float = 0.1,
                negatives: str = "cross", normalize: bool = True, gather: bool = False, group=None,
                sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """The DRO contrastive loss that trains a temperature network (TempNet) jointly with the model.

    .. math:: \\ell_i = \\tau_i \\log \\frac{1}{|S_i^-|} \\sum_{z \\in S_i^-}
              \\exp\\!\\Big(\\frac{s(x_i, z) - s(x_i, x_i^+)}{\\tau_i}\\Big) + \\rho\\, \\tau_i

    ``tau``: (N,), one temperature per sample, or (N, 2), one per sample and view (the authors' code
    has one temperature network per modality), typically ``TempNet(...)(features)`` -- gradients flow
    into the network. Anchors are both views (z1 as anchors against z2 and z2 against z1).
    ``negatives='cross'`` (default): the N - 1 other samples of the *other* view, as in the authors'
    code (zhqiu/TempNet, ``Bimodal_CL/models/losses.py``, ``iSogCLR_TempNet_Loss``: image-text pairs,
    the setting of the paper's contrastive results); ``'all'``: the 2N - 2 views of the other samples
    (the unimodal form of :func:`isogclr`, whose moving-average estimator this loss replaces by the
    minibatch mean). The authors' code estimates the inner mean by a moving average across steps
    (first epoch: the minibatch mean, which is this loss).
    ``rho`` is the KL-constraint radius (a hyper-parameter; 0.1 is our default, †: tune it; the
    authors' CLIP runs use 8.0 with tau in [0.005, 0.05]).
    ``'none'`` returns (N, 2). ``gather=True``: negatives from every rank (each rank passes the
    temperatures of its own samples), exact whole-batch value and gradients.

    Paper: Qiu, Guo, Yang et al., "To Cool or not to Cool? Temperature Network Meets Large Foundation
    Models via DRO", 2024, arXiv:2404.04575.
    """
    _pair(z1, z2)
    n = z1.shape[0]
    if negatives not in ("cross", "all"):
        raise fail("negatives", "'cross' or 'all'", repr(negatives))
    _check_tau(tau, n, "sample", per_view=True)
    t = tau.to(z1.dtype)
    t2 = t if t.dim() == 2 else t.unsqueeze(1).expand(n, 2)
    if negatives == "all":
        lg = _log_mean_exp_h(z1, z2, t2.reshape(-1), normalize, gather, group)
    else:
        lg = _cross_log_mean_exp_h(z1, z2, t2[:, 0], t2[:, 1], normalize, gather, group)
    loss = t2 * (lg + rho)
    return finish(loss, reduction, sample_weight=sample_weight, gathered=gather, group=group)


def _lm_example(gen, dtype, n: int = 6, k: int = 5) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=gen)
    tau = 0.3 + torch.rand(n, generator=gen, dtype=torch.float64)
    return Example({"logits": logits.to(dtype), "target": target, "tau": tau.to(dtype)}, grad=("logits", "tau"))


@objective(
    "tempnet_lm", seed=True, family=FAMILY, input_kind=LOGITS_LABELS, example=_lm_example, paper=TEMPNET,
    module_name="TempNetLMLoss", domains={"rho": NONNEGATIVE},
    values={"logits": LOGIT_ROWS_DIM1, "tau": POSITIVE_TEMPERATURES},
    formula="l_i = tau_i CE(z_i / tau_i, y_i) + (rho - log K) tau_i",
)
def tempnet_lm(logits: torch.Tensor, target: torch.Tensor, tau: torch.Tensor, *, rho: float = 8.0,
               sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """TempNet's DRO objective for language models: temperature-scaled cross-entropy with a tau penalty.

    .. math:: \\ell_i = \\tau_i\\, \\mathrm{CE}(z_i / \\tau_i, y_i) + (\\rho - \\log K)\\, \\tau_i

    ``logits`` (N, K) (tokens flattened), ``target`` (N,), ``tau`` (N,) per-token temperatures from a
    temperature network (as the authors' code: ``tau * CE(logits / tau) + (rho - log K) * tau``).
    ``rho`` is the KL-constraint radius (our default 8.0 is a placeholder; †: choose it per
    vocabulary, it acts only through the tau-gradient). ``'none'``: (N,).

    Paper: Qiu, Guo, Yang et al., "To Cool or not to Cool? Temperature Network Meets Large Foundation
    Models via DRO", 2024, arXiv:2404.04575.
    """
    check_floating("logits", logits)
    if logits.dim() != 2:
        raise fail("logits", "logits of shape (N, K)", f"shape {tuple(logits.shape)}")
    n, k = logits.shape
    check_labels("target", target, k)
    check_batch("target", target, n, "the batch of logits")
    if target.dim() != 1:
        raise fail("target", f"class indices of shape ({n},)", f"shape {tuple(target.shape)}")
    _check_tau(tau, n, "row")
    # logits: LOGIT_ROWS_DIM1 (no NaN/+inf, no row masked entirely), checked by the wrapper
    t = tau.to(logits.dtype).unsqueeze(1)
    scaled = logits / t
    ce = torch.logsumexp(scaled, 1) - scaled.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = tau.to(logits.dtype) * (ce + rho - math.log(k))
    return finish(loss, reduction, sample_weight=sample_weight)


ISogCLRLoss = isogclr.Module
TempNetDROLoss = tempnet_dro.Module
TempNetLMLoss = tempnet_lm.Module
