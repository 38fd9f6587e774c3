"""Large-vocabulary fused losses: from hidden states to the loss without the N x V logits.

One chunked pass (:mod:`losskit.fused._engine`) with pluggable per-chunk heads
(:mod:`losskit.fused._heads`); the objectives are thin layers on top (:mod:`losskit.fused.losses`).
"""

from ._engine import chunk_rows
from ._inputs import FUSED
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all
from .policy import *  # noqa: F401,F403
from .policy import __all__ as _policy_all

__all__ = [*_losses_all, *_policy_all, "chunk_rows", "FUSED"]
