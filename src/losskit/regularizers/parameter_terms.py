"""Regularisers on parameters and training trajectories: EATA's Fisher penalty, sharpness-aware training
for free (SAF and its EMA-teacher variant MESA), and Hessian/gradient alignment across environments.

Options are checked against their domains (:mod:`losskit._core.domains`): penalty weights (``beta``,
``lam``, ``alpha``) are >= 0, temperatures > 0, counts >= 1, an EMA decay lies in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .._core import fail, finish
from .._core.domains import COUNT, NONNEGATIVE, POSITIVE, UNIT, Choice, check_option
from .._core.validate import check_floating

__all__ = ["fisher_diagonal", "fisher_penalty", "SAF", "ema_update", "hessian_gradient_alignment"]


# ------------------------------------------------------------------------------- EATA anti-forgetting
def fisher_diagonal(model: nn.Module, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """Diagonal Fisher estimate ``omega_i = mean over batches of (d loss / d theta_i)^2``.

    ``loss_fn(model, batch)`` returns the scalar loss whose gradient is squared (EATA uses the
    entropy of the model's predictions on in-distribution samples, with pseudo-labels).
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise fail("batches", "at least one batch", "an empty iterable")
    return {n: a / count for n, a in acc.items()}


def fisher_penalty(model: nn.Module, anchors: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor],
                   beta: float = 2000.0) -> torch.Tensor:
    """EATA's anti-forgetting term ``beta * sum_i omega_i (theta_i - theta_i^0)^2``.

    ``anchors`` are the parameters before adaptation (``{n: p.detach().clone()}``), ``fisher`` the
    diagonal from :func:`fisher_diagonal`. Parameters missing from ``fisher`` are not penalised.
    β = 2000 is the paper's ImageNet setting (Niu et al. 2022, arXiv:2204.02610); ``beta >= 0``.
    """
    check_option("beta", beta, NONNEGATIVE)
    total = None
    for n, p in model.named_parameters():
        if n in fisher:
            if n not in anchors:
                raise fail("anchors", f"an anchor for every parameter in fisher ({n!r} missing)", "none")
            term = (fisher[n] * (p - anchors[n]) ** 2).sum()
            total = term if total is None else total + term
    if total is None:
        raise fail("fisher", "entries for the model's parameters", "no matching names")
    return beta * total


# -------------------------------------------------------------------------------------- SAF / MESA
def _tempered_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float) -> torch.Tensor:
    lt = torch.log_softmax(teacher_logits / tau, -1)
    ls = torch.log_softmax(student_logits / tau, -1)
    pt = lt.exp()
    return torch.where(pt > 0, pt * (lt - ls), torch.zeros_like(pt)).sum(-1)


class SAF(nn.Module):
    """Sharpness-Aware training for Free: a trajectory loss on outputs stored ``lag`` epochs ago.

    .. math:: L_{\\mathrm{tra}} = \\frac{\\lambda}{|B|}\\sum_{i\\in B}
              \\mathrm{KL}\\big(\\mathrm{softmax}(\\hat y_i^{(e-\\tilde E)}/\\tau)\\,\\big\\|\\,
              \\mathrm{softmax}(f_\\theta(x_i)/\\tau)\\big)

    Use: ``reg = saf(logits, index=idx)`` every step (``idx``: dataset indices of the batch), add
    ``reg`` to the task loss, and call ``saf.end_epoch()`` after every epoch. The module keeps one
    (num_samples, num_classes) output buffer per epoch of lag (in ``state_dict``); the term is 0 until
    ``lag`` epochs of outputs exist. With ``mode='mesa'`` pass the EMA teacher's logits as
    ``teacher_logits`` instead (MESA, the memory-efficient variant; see :func:`ema_update`).

    Defaults λ = 0.3, τ = 5, lag Ẽ = 3 follow the paper's ImageNet setting †: tune them per task.

    Paper: Du, Zhou, Feng, Tan, Zhou, "Sharpness-Aware Training for Free", 2022, arXiv:2205.14083.
    """

    def __init__(self, num_samples: int, num_classes: int, *, lam: float = 0.3, tau: float = 5.0, lag: int = 3,
                 mode: str = "saf"):
        super().__init__()
        check_option("mode", mode, Choice("saf", "mesa"))
        check_option("lag", lag, COUNT)
        check_option("lam", lam, NONNEGATIVE)
        check_option("tau", tau, POSITIVE)
        self.lam, self.tau, self.lag, self.mode = lam, tau, lag, mode
        self.register_buffer("outputs", torch.zeros(lag + 1, num_samples, num_classes) if mode == "saf"
                             else torch.zeros(0))
        self.register_buffer("seen", torch.zeros(lag + 1, num_samples, dtype=torch.bool) if mode == "saf"
                             else torch.zeros(0, dtype=torch.bool))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def end_epoch(self) -> None:
        self.epoch += 1
        if self.mode == "saf":
            slot = int(self.epoch) % (self.lag + 1)
            self.seen[slot] = False

    def forward(self, logits: torch.Tensor, index: torch.Tensor | None = None,
                teacher_logits: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        check_floating("logits", logits)
        if self.mode == "mesa":
            if teacher_logits is None:
                raise fail("teacher_logits", "the EMA teacher's logits (mode='mesa')", "None")
            kl = _tempered_kl(teacher_logits.detach(), logits, self.tau)
            return self.lam * finish(kl, reduction)
        if index is None or index.shape != logits.shape[:1]:
            raise fail("index", f"dataset indices of shape ({logits.shape[0]},)",
                       "None" if index is None else f"shape {tuple(index.shape)}")
        e = int(self.epoch)
        cur = e % (self.lag + 1)
        with torch.no_grad():
            self.outputs[cur, index] = logits.detach().to(self.outputs.dtype)
            self.seen[cur, index] = True
        if e < self.lag:
            return logits.sum() * 0.0 if reduction != "none" else logits.new_zeros(logits.shape[0])
        past = (e - self.lag) % (self.lag + 1)
        mask = self.seen[past, index]
        kl = _tempered_kl(self.outputs[past, index].to(logits.dtype), logits, self.tau)
        return self.lam * finish(kl, reduction, mask=mask)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float = 0.9995) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student``, parameters and floating buffers (MESA);
    ``decay`` in [0, 1]."""
    check_option("decay", decay, UNIT)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s, 1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.lerp_(s, 1 - decay)
        else:
            t.copy_(s)


# ---------------------------------------------------------------------------- Hessian alignment
def hessian_gradient_alignment(env_losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor], *,
                               alpha: float = 1.0, beta: float = 1.0, mode: str = "exact",
                               num_probes: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradient and Hessian(-gradient) alignment across environments (a domain-generalisation penalty).

    .. math:: \\sum_e R_e + \\alpha \\|\\nabla R_e - \\overline{\\nabla R}\\|^2
              + \\beta \\|H_e \\nabla R_e - \\overline{H \\nabla R}\\|^2

    ``mode='exact'``: the Hessian-gradient products ``H_e g_e`` by double backpropagation (HGP).
    ``mode='hutchinson'``: the Hessian diagonal ``diag(H_e)`` estimated with Rademacher probes
    ``E[v * (H_e v)]`` and aligned instead (the paper's Hutchinson variant, † the penalty is
    ``||diag(H_e) - mean_e diag(H_e)||^2`` in place of the HGP term). Returns the full objective
    (sum of risks plus penalties), differentiable w.r.t. ``params``. ``alpha, beta >= 0``,
    ``num_probes >= 1``.

    Paper: Hemati, Zhang, Tavanapong, Yang, "Understanding Hessian Alignment for Domain
    Generalization", 2023, arXiv:2308.11778.
    """
    if len(env_losses) < 2:
        raise fail("env_losses", "losses of at least 2 environments", f"{len(env_losses)}")
    check_option("mode", mode, Choice("exact", "hutchinson"))
    check_option("alpha", alpha, NONNEGATIVE)
    check_option("beta", beta, NONNEGATIVE)
    check_option("num_probes", num_probes, COUNT)
    params = list(params)
    grads, second = [], []
    for loss in env_losses:
        g = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([x.reshape(-1) for x in g])
        grads.append(flat)
        if mode == "exact":
            hg = torch.autograd.grad(flat, params, grad_outputs=flat.detach(), create_graph=True)
            second.append(torch.cat([x.reshape(-1) for x in hg]))
        else:
            est = torch.zeros_like(flat)
            for _ in range(num_probes):
                v = (torch.randint(0, 2, flat.shape, generator=generator) * 2 - 1).to(flat)
                hv = torch.autograd.grad(flat, params, grad_outputs=v, create_graph=True)
                est = est + v * torch.cat([x.reshape(-1) for x in hv])
            second.append(est / num_probes)
    g_bar = torch.stack(grads).mean(0)
    s_bar = torch.stack(second).mean(0)
    total = sum(env_losses)
    for g, s in zip(grads, second):
        total = total + alpha * (g - g_bar).square().sum() + beta * (s - s_bar).square().sum()
    return total
