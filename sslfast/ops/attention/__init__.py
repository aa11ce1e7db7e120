"""Masked attention: padded (``attention``) and packed (``varlen_attention``), PyTorch's SDPA on the CPU, the
Triton FlashAttention kernels (:mod:`.flash`) on a GPU; float64 references; the kernels' self-check."""
from sslfast.ops.attention import check  # noqa: F401  (registers the op's spec)
from sslfast.ops.attention.api import (
                                       attention,
                                       attention_reference,
                                       pad,
                                       sdpa_exact,
                                       unpad,
                                       varlen_attention,
                                       varlen_attention_reference,
)

__all__ = ["attention", "varlen_attention", "unpad", "pad", "attention_reference", "varlen_attention_reference",
           "sdpa_exact"]
