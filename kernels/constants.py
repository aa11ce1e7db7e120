"""Constants and small helpers every kernel file and launcher shares (one definition each)."""
import triton.language as tl

from sslfast._dtypes import dtype_name  # noqa: F401  the launch tables' dtype keys (one map for the package)

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x · log2 e): the kernels work in the exp2 domain


def head_dim_block(d: int) -> int:
    """The power-of-two block (at least 16) that holds a head or feature dimension ``d``."""
    return max(16, 1 << (d - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
