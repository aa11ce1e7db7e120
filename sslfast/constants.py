"""Constants every part of sslfast agrees on."""
from __future__ import annotations

__all__ = ["IGNORE_INDEX", "HEAD_DIMS", "supported_head_dim"]

# the label that no loss scores (transformers' and PyTorch's convention)
IGNORE_INDEX = -100

# the attention head dims every attention op takes (the Triton kernels' tiles; PyTorch's paths take the same)
HEAD_DIMS = "a multiple of 8 from 8 to 256"


def supported_head_dim(d: int) -> bool:
    """Whether the attention ops take head dim ``d`` (:data:`HEAD_DIMS`)."""
    return d % 8 == 0 and 8 <= d <= 256
