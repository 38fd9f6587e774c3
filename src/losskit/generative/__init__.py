"""Generative-model training objectives on one abstraction: a Gaussian probability path
(``alpha_t``, ``sigma_t``), a model prediction parameterisation and a weighting
(:mod:`losskit.generative.paths`). Flow matching with the kinetic-optimal cond-OT path, consistency
training (iCT) and its latent Cauchy variant, PFGM++'s perturbation objective, and f-distill's
f-divergence distribution matching (the divergences family's generators give its weighting)."""

from .adaptation import *  # noqa: F401,F403
from .adaptation import __all__ as _adaptation
from .consistency import *  # noqa: F401,F403
from .consistency import __all__ as _consistency
from .distribution_matching import *  # noqa: F401,F403
from .distribution_matching import __all__ as _dm
from .ebm import *  # noqa: F401,F403
from .ebm import __all__ as _ebm
from .flow import *  # noqa: F401,F403
from .flow import __all__ as _flow
from .gan import *  # noqa: F401,F403
from .gan import __all__ as _gan
from .gflownet import *  # noqa: F401,F403
from .gflownet import __all__ as _gflownet
from .instruct import *  # noqa: F401,F403
from .instruct import __all__ as _instruct
from .marginalization import *  # noqa: F401,F403
from .marginalization import __all__ as _mam
from .paths import GaussianPath, conditional_target, convert, interpolate, path_weight
from .pfgm import *  # noqa: F401,F403
from .pfgm import __all__ as _pfgm

# the path helpers stay under losskit.generative (``interpolate``, ``convert`` are too generic for ``losskit.``)
__all__ = [*_flow, *_consistency, *_pfgm, *_dm, *_instruct, *_adaptation, *_gan, *_gflownet, *_mam, *_ebm]
