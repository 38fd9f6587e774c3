"""Where users train: losskit's objectives inside Hugging Face ``transformers``/TRL trainers and Lightning.

Each submodule needs an optional extra and is never imported by ``import losskit``:

* :mod:`losskit.integrations.transformers` (``pip install 'losskit[hf]'``): a ``compute_loss_func`` for
  ``transformers.Trainer`` computing :func:`losskit.fused_linear_cross_entropy` from the last hidden state and
  the LM head (no logits materialised);
* :mod:`losskit.integrations.trl` (``pip install 'losskit[hf]'``): any registered pairwise preference head
  inside TRL's ``DPOTrainer``;
* :mod:`losskit.integrations.lightning` (``pip install 'losskit[lightning]'``): a ``LightningModule`` mixin
  (an objective, regularisers, :class:`losskit.optim.Lion`).

A missing extra raises :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import importlib

__all__ = ["require"]


def require(extra: str, *modules: str):
    """Import ``modules`` (returned in order), or raise :class:`ImportError` saying which extra to install."""
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ImportError as e:
            raise ImportError(f"losskit.integrations needs {name!r} ({e}): pip install 'losskit[{extra}]'") from e
    return out[0] if len(out) == 1 else tuple(out)
