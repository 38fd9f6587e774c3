"""losskit's core: conventions, errors, validation and the registry."""

from .conventions import (
    REDUCTIONS,
    check_reduction,
    compute_dtype,
    promote,
    reduce,
    set_validation,
    validation,
    validation_enabled,
)
from .errors import LossInputError, fail
from .registry import (
    PROPERTIES,
    STANDARD,
    BadInput,
    Example,
    InputKind,
    Objective,
    Paper,
    families,
    get,
    list_objectives,
    make_module,
    objective,
    objectives,
    register_property,
    unregister,
)
