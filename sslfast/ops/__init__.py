"""sslfast's fused ops. Each takes ``backend="auto"|"triton"|"cpp"|"torch"`` (the C++ path where an op has one)."""
from sslfast.ops._dispatch import BackendUnavailableError, available_backends
from sslfast.ops.attention import attention, pad, unpad, varlen_attention
from sslfast.ops.cross_entropy import cross_entropy, linear_cross_entropy
from sslfast.ops.inference_linear import inference_linear
from sslfast.ops.kv_attention import attention_with_kvcache
from sslfast.ops.vq import vq_codebook_stats, vq_lookup, vq_lookup_reference

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "vq_lookup",
    "vq_lookup_reference",
    "vq_codebook_stats",
    "attention",
    "varlen_attention",
    "attention_with_kvcache",
    "unpad",
    "pad",
    "cross_entropy",
    "linear_cross_entropy",
    "inference_linear",
]
