"""Preference optimisation and policy objectives for generative models, in four layers.

1. tokens (:mod:`.tokens`): chunked per-token log-probs of the selected tokens (+ entropy, KL to an anchor);
2. sequence scores (:mod:`.scores`): aggregation, token weights, anchors, reward shapes;
3. heads (:mod:`.heads`, :mod:`.seeds`): pairwise heads as links of one margin, pointwise and group heads;
4. policy-gradient surrogates (:mod:`.policy`): the GRPO family with explicit aggregation, f-DPG.
"""

from .heads import *
from .heads import __all__ as _heads
from .policy import *
from .policy import __all__ as _policy
from .scores import *
from .scores import __all__ as _scores
from .seeds import *
from .seeds import __all__ as _seeds
from .tokens import *
from .tokens import __all__ as _tokens

__all__ = [n for n in _tokens + _scores + _heads + _seeds + _policy if n not in ("AGGREGATIONS",)]
