"""The short dtype names sslfast uses in launch tables, self-check variants and bench rows (one map)."""
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """"fp32" / "fp16" / "bf16" for a torch dtype."""
    return _NAMES[dtype]
