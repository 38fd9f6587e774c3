"""Detection: bounding-box regression losses (GIoU, DIoU, CIoU) as ``torchvision.ops`` computes them."""

from .boxes import *  # noqa: F401,F403
from .boxes import __all__ as _boxes

__all__ = [*_boxes]
