"""Family D: knowledge distillation (KD, BD-KD, dual-head KD, DHO, PS-KD, ground-truth-weighted self-KD,
Sinkhorn KD) and the distillation target builders."""

from .logit_kd import *  # noqa: F401,F403
from .logit_kd import __all__ as _logit_kd_all
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all
from .targets import *  # noqa: F401,F403
from .targets import __all__ as _targets_all
from .transport_kd import *  # noqa: F401,F403
from .transport_kd import __all__ as _transport_kd_all

__all__ = list(_losses_all) + list(_logit_kd_all) + list(_transport_kd_all) + list(_targets_all)
