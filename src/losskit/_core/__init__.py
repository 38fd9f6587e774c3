"""losskit's core: conventions, errors, validation and the registry."""

from .conventions import (
    compute_dtype,
    promote,
    set_validation,
    validation,
    validation_enabled,
    validation_mode,
)
from .errors import LossInputError, fail
from .reduction import REDUCTIONS, check_reduction, finish, reduce
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
    resolve_family,
    unregister,
)
