"""Family B: divergences and information measures."""

from .categorical import *  # noqa: F401,F403
from .categorical import __all__ as _categorical_all
from .clustering import KLClusteringLoss, clustering_target, kl_clustering_loss
from .generators import FGenerator, alpha_generator, get_generator, skew_js_generator, skew_kl_generator
from .samples import *  # noqa: F401,F403
from .samples import __all__ as _samples_all
from .variational import *  # noqa: F401,F403
from .variational import __all__ as _variational_all

__all__ = list(_categorical_all) + list(_samples_all) + list(_variational_all) + [
    "kl_clustering_loss", "clustering_target", "KLClusteringLoss", "FGenerator", "alpha_generator", "get_generator", "skew_js_generator", "skew_kl_generator"]
