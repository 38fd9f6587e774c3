"""Preference optimisation and policy objectives for generative models, in four layers.

1. tokens (:mod:`.tokens`): chunked per-token log-probs of the selected tokens (+ entropy, KL to an anchor),
   and the token-level head SparsePO;
2. sequence scores (:mod:`.scores`): aggregation, token weights, anchors, reward shapes;
3. heads (:mod:`.heads`): pairwise heads as links of one margin, with their variants on extra inputs
   (anchors, opponents, preference probabilities), and the pointwise KTO;
4. on-policy objectives (:mod:`.policy`): the GRPO family with explicit aggregation, f-DPG, Nash-MP, DisCO;
   and beside them (:mod:`.rl`) the advantage estimators (RLOO, REINFORCE++, GAE), RLOO, REINFORCE++, PPO's
   policy and value losses, the Bradley-Terry reward-model loss, Nash-MD and XPO; and (:mod:`.selection`) the
   masks of which rollouts and tokens those losses train on (D^3S, Scaf-GRPO's hint tokens); (:mod:`.imitation`)
   SequenceMatch's inverse soft-Q imitation loss on an autoregressive model's logits.

``losskit.preference.seeds`` re-exports the objectives that used to live there (compatibility), and
``extragradient_step`` (now :func:`losskit.optim.extragradient_step`) stays importable from here.
"""

from .dual_rl import *
from .dual_rl import __all__ as _dual_rl
from .heads import *
from .heads import __all__ as _heads
from .imitation import *
from .imitation import __all__ as _imitation
from .policy import *
from .policy import __all__ as _policy
from .rl import *
from .rl import __all__ as _rl
from .scores import *
from .scores import __all__ as _scores
from .selection import *
from .selection import __all__ as _selection
from .tokens import *
from .tokens import __all__ as _tokens

__all__ = [n for n in _tokens + _scores + _heads + _policy + _rl + _selection + _imitation + _dual_rl
           if n not in ("AGGREGATIONS",)]


def __getattr__(name):
    # Compatibility: ``extragradient_step`` moved to losskit.optim (an optimiser step, not a loss). Resolved
    # lazily, so the preference family does not import the optimisers (the layering contract).
    if name == "extragradient_step":
        import importlib
        import warnings

        warnings.warn("losskit.preference.extragradient_step moved to losskit.optim.extragradient_step",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module("losskit.optim").extragradient_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
