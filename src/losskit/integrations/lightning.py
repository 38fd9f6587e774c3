"""Lightning: a ``LightningModule`` that trains a network with a losskit objective, regularisers and Lion-K.

Recipe (``pip install 'losskit[lightning]'``)::

    from losskit.integrations.lightning import ObjectiveModule
    module = ObjectiveModule(net, objective="focal", objective_kwargs={"gamma": 2.0},
                             regularizers={"confidence_penalty": {"beta": 0.1}},
                             optimizer="lion_k", optimizer_kwargs={"lr": 3e-4, "K": "huber"})
    lightning.Trainer(max_epochs=3).fit(module, train_loader)

:class:`ObjectiveMixin` holds the part that is not Lightning's (the objective, the regularisers on the same
outputs, the optimiser from :mod:`losskit.optim`), so it can be mixed into an existing ``LightningModule``;
:class:`ObjectiveModule` is the mixin on ``lightning.LightningModule`` with a ``(inputs, target)`` batch.
Each term is logged (``train/objective``, ``train/<regulariser>``, ``train/loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from . import require

L = require("lightning", "lightning")

from .._core import get  # noqa: E402
from ..optim import Lion, LionK  # noqa: E402

__all__ = ["ObjectiveMixin", "ObjectiveModule", "OPTIMIZERS"]

#: The optimisers by name: ``'lion'`` (:class:`losskit.optim.Lion`), ``'lion_k'`` (:class:`~losskit.optim.LionK`),
#: ``'adamw'`` (torch's, for comparison).
OPTIMIZERS = {"lion": Lion, "lion_k": LionK, "adamw": torch.optim.AdamW}


def _resolve(objective: str | Callable) -> Callable:
    return get(objective).fn if isinstance(objective, str) else objective


class ObjectiveMixin:
    """An objective, regularisers on the same outputs and a losskit optimiser, for a ``LightningModule``.

    Args:
        objective: a registered objective's name or a callable ``(outputs, target, **kwargs) -> loss``.
        objective_kwargs: its options.
        regularizers: ``{name or callable: options}``; each takes the outputs (``(outputs, **options)``) and
            is added to the objective (its own coefficient is in its options, e.g. ``beta``).
        optimizer: ``'lion'``, ``'lion_k'``, ``'adamw'`` or an optimiser class; ``optimizer_kwargs``: its options.
    """

    def setup_objective(self, objective: str | Callable, objective_kwargs: Mapping | None = None,
                        regularizers: Mapping | None = None, optimizer: str | type = "lion_k",
                        optimizer_kwargs: Mapping | None = None) -> None:
        self.objective_name = objective if isinstance(objective, str) else getattr(objective, "__name__", "objective")
        self.objective_fn, self.objective_kwargs = _resolve(objective), dict(objective_kwargs or {})
        self.regularizer_terms = [(r if isinstance(r, str) else getattr(r, "__name__", "regularizer"), _resolve(r),
                                   dict(kw or {})) for r, kw in (regularizers or {}).items()]
        self.optimizer_cls = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer
        self.optimizer_kwargs = dict(optimizer_kwargs or {})

    def objective_terms(self, outputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{'objective': ..., <regulariser>: ..., 'loss': their sum}``."""
        terms = {"objective": self.objective_fn(outputs, target, **self.objective_kwargs)}
        for name, fn, kw in self.regularizer_terms:
            terms[name] = fn(outputs, **kw)
        terms["loss"] = sum(terms.values())
        return terms

    def configure_optimizers(self):
        return self.optimizer_cls(self.parameters(), **self.optimizer_kwargs)


class ObjectiveModule(ObjectiveMixin, L.LightningModule):
    """``net`` trained on ``(inputs, target)`` batches with :class:`ObjectiveMixin`'s objective (see there)."""

    def __init__(self, net: torch.nn.Module, objective: str | Callable = "cross_entropy", **options):
        super().__init__()
        self.net = net
        self.setup_objective(objective, **options)

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage: str):
        x, target = batch
        terms = self.objective_terms(self(x), target)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value.detach(), prog_bar=name == "loss", batch_size=len(x))
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")
