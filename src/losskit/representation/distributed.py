"""Compatibility path: the distributed helpers live in :mod:`losskit._core.distributed` (one place for
every family); this module re-exports them for code that imported ``losskit.representation.distributed``."""

from .._core.distributed import (  # noqa: F401
    _AllGather,
    _gather_padded,
    _sizes,
    all_gather,
    all_gather_nograd,
    all_reduce,
    ddp_scale,
    global_sum,
    global_value,
    is_distributed,
    world,
)

__all__ = ["is_distributed", "world", "all_gather", "all_gather_nograd", "global_value", "global_sum",
           "ddp_scale"]
