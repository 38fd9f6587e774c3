"""losskit: training objectives for PyTorch, one API, each checked against an independent reference.

>>> import losskit, torch
>>> logits, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
>>> loss = losskit.focal(logits, target, gamma=2.0)          # functional
>>> loss = losskit.FocalLoss(gamma=2.0)(logits, target)      # module
>>> losskit.list(family="classification")                    # registry
>>> losskit.get("focal").properties

Your own objective: :func:`losskit.register` (:mod:`losskit.extend`). Conventions (reduction, weights, ignore_index, dtype and NaN policy): :mod:`losskit._core.conventions`.
"""

from __future__ import annotations

from ._core import (
    PROPERTIES,
    REDUCTIONS,
    STANDARD,
    BadInput,
    Example,
    InputKind,
    LossInputError,
    Objective,
    Paper,
    families,
    get,
    make_module,
    objective,
    objectives,
    register_property,
    set_validation,
    validation,
    validation_enabled,
)
from ._core import list_objectives as list  # noqa: A001  (losskit.list(), as the docs promise)
from .adversarial import *  # noqa: F401,F403
from .classification import *  # noqa: F401,F403
from .detection import *  # noqa: F401,F403
from .distillation import *  # noqa: F401,F403
from .divergences import *  # noqa: F401,F403
from .extend import register, unregister
from .fused import *  # noqa: F401,F403
from .generative import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .preference import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .regularizers import *  # noqa: F401,F403
from .representation import *  # noqa: F401,F403
from .transport import *  # noqa: F401,F403

__version__ = "0.1.0"


def _export_modules() -> None:
    """Every registered objective's Module class is importable from ``losskit`` under its class name (the
    naming rule: :func:`losskit._core.registry.module_class_name`), and under its pre-rule alias if any."""
    g = globals()
    for entry in objectives():
        for cls_name in (entry.module.__name__, *entry.module_aliases):
            if g.get(cls_name, entry.module) is not entry.module:
                raise ImportError(f"two objects named losskit.{cls_name}")
            g[cls_name] = entry.module


_export_modules()


def check(fn, *args, **kwargs):
    """Run the property checks on a registered objective (by name) or on a user's callable.

    See :mod:`losskit.checks`.
    """
    from .checks import check as _check

    return _check(fn, *args, **kwargs)
