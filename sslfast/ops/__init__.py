"""sslfast's fused ops. Each takes ``backend="auto"|"triton"|"cpp"|"torch"`` (the C++ path where an op has one).

How each op is built: each lives in its own package (``attention/``, ``kv_attention/``, ``vq/``,
``cross_entropy/``: the public functions, the launchers, the float64 reference and the self-check, which
registers the op's :class:`~sslfast.ops._registry.OpSpec`). The public function validates its inputs (clear
errors, one place), then ``_dispatch.resolve_backend`` turns ``backend`` into a concrete name (on CUDA,
``auto`` also asks ``_kernel_verdicts.kernel_allowed`` whether the call's variant, from the op's spec, passed
its self-check), then a ``torch.library``
op (fake implementation for ``torch.compile``, autograd where it has gradients, ``opcheck``-tested) runs it;
its Triton launcher reads its tiles from the launch table in ``kernels/`` that the AOT check also compiles.
``vq_lookup``,
``vq_codebook_stats``, ``cross_entropy``, ``linear_cross_entropy`` and ``attention_with_kvcache`` pass the
resolved name into their op, whose implementation holds every backend. ``attention`` / ``varlen_attention``
differ in one respect: their PyTorch path is PyTorch's own SDPA op (already traced and differentiated by
PyTorch), so only the Triton path is a ``sslfast::flash_attention_*`` op.
"""
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
