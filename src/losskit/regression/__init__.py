"""Regression, ordinal and survival objectives: quantile (pinball) loss and the weighted interval score
with monotone rearrangement, the (weighted) Cox partial likelihood, cumulative-logit ordinal losses
(proportional odds and PRESTO), proximal matching, the Cauchy–Schwarz information bottleneck, and
VaGraM's value-gradient weighted model loss, and CoLiDE's concomitant linear-DAG score with the log-det
acyclicity penalty."""

from .dag import *  # noqa: F401,F403
from .dag import __all__ as _dag
from .information import *  # noqa: F401,F403
from .information import __all__ as _information
from .ordinal import *  # noqa: F401,F403
from .ordinal import __all__ as _ordinal
from .proximal import *  # noqa: F401,F403
from .proximal import __all__ as _proximal
from .quantile import *  # noqa: F401,F403
from .quantile import __all__ as _quantile
from .survival import *  # noqa: F401,F403
from .survival import __all__ as _survival
from .vagram import *  # noqa: F401,F403
from .vagram import __all__ as _vagram

__all__ = [*_quantile, *_survival, *_ordinal, *_proximal, *_information, *_vagram, *_dag]
