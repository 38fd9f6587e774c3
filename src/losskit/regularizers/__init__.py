"""Family F (regularisers): named terms to add to any loss."""

from .adamixup import *  # noqa: F401,F403
from .adamixup import __all__ as _e
from .compander import *  # noqa: F401,F403
from .compander import __all__ as _d
from .logit_terms import *  # noqa: F401,F403
from .logit_terms import __all__ as _a
from .mixup import *  # noqa: F401,F403
from .mixup import __all__ as _c
from .parameter_terms import *  # noqa: F401,F403
from .parameter_terms import __all__ as _b

__all__ = list(_a) + list(_b) + list(_c) + list(_d) + list(_e)
