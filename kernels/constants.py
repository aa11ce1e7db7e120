"""Constants and small helpers every kernel file and launcher shares (one definition each)."""
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x · log2 e): the kernels work in the exp2 domain
DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def dtype_name(dtype) -> str:
    """"fp32" / "fp16" / "bf16" for a torch dtype (the launch tables' keys)."""
    return DTYPE_NAMES[str(dtype)]


def head_dim_block(d: int) -> int:
    """The power-of-two block (at least 16) that holds a head or feature dimension ``d``."""
    return max(16, 1 << (d - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
