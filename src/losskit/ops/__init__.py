"""Shared numerics: the computations several families need, written once.

* :mod:`.logsumexp`: masked log-sum-exp (empty masks give ``-inf`` with zero gradient);
* :mod:`.pairwise`: pairwise (powered) Euclidean costs with one GEMM policy, and a square root whose
  gradient at 0 is 0;
* :mod:`.budget`: the memory budgets that decide when a computation is chunked or kept dense.

``ops`` imports nothing from losskit but :mod:`losskit._core`; every family may import it.
"""

from .budget import BLOCK_ELEMS, DENSE_BYTES, FUSED_CHUNK_BYTES
from .logsumexp import masked_logsumexp
from .pairwise import pairwise_cost, safe_sqrt, sq_dist

__all__ = ["masked_logsumexp", "pairwise_cost", "sq_dist", "safe_sqrt", "BLOCK_ELEMS", "DENSE_BYTES",
           "FUSED_CHUNK_BYTES"]
