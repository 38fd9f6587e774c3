"""Memory budgets, in one place: when a computation is kept whole, and how big its chunks are.

* :data:`DENSE_BYTES`: a transport cost matrix up to this size is formed once and kept (reading it back
  beats recomputing a d = 64 GEMM each iteration); larger problems run online, by row blocks.
* :data:`BLOCK_ELEMS`: entries per row block of an online (blocked) pass over an ``n x m`` matrix.
* :data:`SWEEP_BLOCK_ELEMS`: entries per row block of a Sinkhorn sweep (a cache-sized buffer: the
  block's exponentials are reused for the column sums while still in cache).
* :data:`FUSED_CHUNK_BYTES`: the logits buffer of one chunk of the fused linear losses (the
  ``(c, V)`` block formed from hidden states, never the whole ``N x V``).
"""

DENSE_BYTES = 2 * 2**30
BLOCK_ELEMS = 1 << 20
SWEEP_BLOCK_ELEMS = 1 << 19
FUSED_CHUNK_BYTES = 64 * 2**20

__all__ = ["DENSE_BYTES", "BLOCK_ELEMS", "SWEEP_BLOCK_ELEMS", "FUSED_CHUNK_BYTES"]
