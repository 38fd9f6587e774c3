"""UBA: the Unified Budget-Aware learning-rate schedule, a ``torch.optim.lr_scheduler.LRScheduler``.

Within a phase of length ``T_k`` starting at step ``s_k`` (one phase by default: the whole budget),
with ``c = 1 + cos(pi (t - s_k) / T_k)``,

    eta_t = eta_min + (eta_max^(k) - eta_min) * 2 c / (2 phi + (2 - phi) c)

so ``eta = eta_max^(k)`` at the phase start (c = 2), ``eta_min + (eta_max^(k) - eta_min) * 2 / (2 + phi)``
at its middle (c = 1) and ``eta_min`` at its end (c = 0). ``phi`` is the schedule's one hyper-parameter:
``phi = 2`` is cosine annealing, smaller ``phi`` keeps the rate high longer, larger ``phi`` decays it
sooner (the paper ties ``phi`` to the landscape's condition number).

No code of the authors was found; the formula is the paper's as we read it (an independent
implementation in the public code index writes the same expression). The tests check it at the phase
boundaries and middles, step by step, and its ``phi = 2`` case against ``CosineAnnealingLR``.

Paper: Tang, Dong, Zeng, Zhou, Lin, "Stepsize anything: A unified learning rate schedule for
budgeted-iteration training", NeurIPS 2025, arXiv:2505.24452.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["UBA", "uba_factor"]


def uba_factor(progress: float, phi: float) -> float:
    """The UBA multiplier ``2c / (2 phi + (2 - phi) c)``, ``c = 1 + cos(pi progress)``, for progress in [0, 1]."""
    c = 1.0 + math.cos(math.pi * progress)
    return 2.0 * c / (2.0 * phi + (2.0 - phi) * c)


class UBA(LRScheduler):
    """The UBA schedule over a budget of ``total_steps`` scheduler steps.

    Args:
        optimizer: the wrapped optimiser; each group's initial ``lr`` is its peak ``eta_max``.
        total_steps: the iteration budget ``T`` (the number of ``scheduler.step()`` calls planned).
        phi: the UBA hyper-parameter (> 0); ``phi = 2`` gives cosine annealing.
        min_lr: ``eta_min``, reached at the end of every phase (and held after the budget).
        phases: the number of equal phases (an int) or their lengths (summing to ``total_steps``);
            the schedule restarts at the start of each phase.
        peak_scale: one factor per phase multiplying the groups' peak rates (default all 1), for
            restarts at decreasing peaks.

    ``state_dict()`` / ``load_state_dict()`` are the ``LRScheduler`` ones (everything but the optimiser).

    Paper: Tang, Dong, Zeng, Zhou, Lin, "Stepsize anything: A unified learning rate schedule for
    budgeted-iteration training", 2025, arXiv:2505.24452.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, *, phi: float, min_lr: float = 0.0,
                 phases: int | Sequence[int] = 1, peak_scale: Sequence[float] | None = None,
                 last_epoch: int = -1):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not (isinstance(phi, (int, float)) and math.isfinite(phi) and phi > 0):
            raise ValueError(f"phi must be a finite number > 0, got {phi!r}")
        if not (math.isfinite(min_lr) and min_lr >= 0):
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        if isinstance(phases, int):
            if phases < 1 or phases > total_steps:
                raise ValueError(f"phases must be in [1, total_steps], got {phases}")
            base, extra = divmod(total_steps, phases)
            lengths = [base + (1 if k < extra else 0) for k in range(phases)]
        else:
            lengths = [int(n) for n in phases]
            if not lengths or min(lengths) < 1 or sum(lengths) != total_steps:
                raise ValueError(f"phase lengths must be positive and sum to total_steps={total_steps}, "
                                 f"got {list(phases)}")
        scale = [1.0] * len(lengths) if peak_scale is None else [float(s) for s in peak_scale]
        if len(scale) != len(lengths) or min(scale) < 0:
            raise ValueError(f"peak_scale needs one non-negative factor per phase ({len(lengths)}), got {scale}")
        self.total_steps = total_steps
        self.phi = float(phi)
        self.min_lr = float(min_lr)
        self.phase_lengths = lengths
        self.peak_scale = scale
        super().__init__(optimizer, last_epoch)

    def phase_of(self, step: int) -> tuple[int, int]:
        """(phase index, the phase's first step) of ``step`` (the last phase after the budget)."""
        start = 0
        for k, n in enumerate(self.phase_lengths):
            if step < start + n:
                return k, start
            start += n
        return len(self.phase_lengths) - 1, start - self.phase_lengths[-1]

    def lr_at(self, step: int, base_lr: float) -> float:
        """The closed-form rate at ``step`` for a group whose peak is ``base_lr``."""
        if step >= self.total_steps:
            return self.min_lr
        k, start = self.phase_of(step)
        peak = base_lr * self.peak_scale[k]
        progress = (step - start) / self.phase_lengths[k]
        return self.min_lr + (peak - self.min_lr) * uba_factor(progress, self.phi)

    def get_lr(self) -> list[float]:  # the closed form: no recursion, so a resumed run is exact
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
