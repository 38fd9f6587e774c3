"""Family D: knowledge distillation (KD, BD-KD, dual-head KD, DHO, PS-KD, ground-truth-weighted self-KD,
Sinkhorn KD), ranking distillation (CPRD), feature distillation (FitNets hints, attention transfer) and the
distillation target builders."""

from .features import *  # noqa: F401,F403
from .features import __all__ as _features_all
from .landmark_kd import *  # noqa: F401,F403
from .landmark_kd import __all__ as _landmark_kd_all
from .logit_kd import *  # noqa: F401,F403
from .logit_kd import __all__ as _logit_kd_all
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all
from .ranking_kd import *  # noqa: F401,F403
from .ranking_kd import __all__ as _ranking_kd_all
from .targets import *  # noqa: F401,F403
from .targets import __all__ as _targets_all
from .transport_kd import *  # noqa: F401,F403
from .transport_kd import __all__ as _transport_kd_all

__all__ = (list(_losses_all) + list(_logit_kd_all) + list(_transport_kd_all) + list(_features_all)
           + list(_targets_all) + list(_landmark_kd_all) + list(_ranking_kd_all))
