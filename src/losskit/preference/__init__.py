"""Preference optimisation and policy objectives for generative models, in four layers.

1. tokens (:mod:`.tokens`): chunked per-token log-probs of the selected tokens (+ entropy, KL to an anchor),
   and the token-level head SparsePO;
2. sequence scores (:mod:`.scores`): aggregation, token weights, anchors, reward shapes;
3. heads (:mod:`.heads`): pairwise heads as links of one margin, with their variants on extra inputs
   (anchors, opponents, preference probabilities), and the pointwise KTO;
4. on-policy objectives (:mod:`.policy`): the GRPO family with explicit aggregation, f-DPG, Nash-MP, DisCO.

``losskit.preference.seeds`` re-exports the objectives that used to live there (compatibility), and
``extragradient_step`` (now :func:`losskit.optim.extragradient_step`) stays importable from here.
"""

from ..optim.extragradient import extragradient_step
from .heads import *
from .heads import __all__ as _heads
from .policy import *
from .policy import __all__ as _policy
from .scores import *
from .scores import __all__ as _scores
from .tokens import *
from .tokens import __all__ as _tokens

__all__ = [n for n in _tokens + _scores + _heads + _policy if n not in ("AGGREGATIONS",)] + ["extragradient_step"]
