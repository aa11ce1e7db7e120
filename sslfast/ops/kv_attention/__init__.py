"""Attention over a key/value cache (decoding): C++ on the CPU, a Triton split-K kernel on a GPU, a float64
reference, the kernel's self-check."""
from sslfast.ops.kv_attention import check  # noqa: F401  (registers the op's spec)
from sslfast.ops.kv_attention.api import (
                                          CPP_KVCACHE_AVAILABLE,
                                          attention_with_kvcache,
                                          decode_attention,
                                          kvcache_attention_reference,
                                          kvcache_backend,
)

__all__ = ["attention_with_kvcache", "kvcache_attention_reference", "kvcache_backend", "decode_attention",
           "CPP_KVCACHE_AVAILABLE"]
