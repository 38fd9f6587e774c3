"""Family F (regularisers): named terms to add to any loss."""

from .adamixup import *  # noqa: F401,F403
from .adamixup import __all__ as _j
from .compander import *  # noqa: F401,F403
from .compander import __all__ as _d
from .dependence import *  # noqa: F401,F403
from .dependence import __all__ as _e
from .discovery import *  # noqa: F401,F403
from .discovery import __all__ as _h
from .federated import *  # noqa: F401,F403
from .federated import __all__ as _g
from .logit_terms import *  # noqa: F401,F403
from .logit_terms import __all__ as _a
from .mixup import *  # noqa: F401,F403
from .mixup import __all__ as _c
from .outliers import *  # noqa: F401,F403
from .outliers import __all__ as _i
from .parameter_terms import *  # noqa: F401,F403
from .parameter_terms import __all__ as _b
from .quantization import *  # noqa: F401,F403
from .quantization import __all__ as _f

__all__ = list(_a) + list(_b) + list(_c) + list(_d) + list(_e) + list(_f) + list(_g) + list(_h) + list(_i) + list(_j)
