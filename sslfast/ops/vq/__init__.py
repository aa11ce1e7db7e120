"""Nearest-codebook lookup and codebook statistics without the N×K matrix: C++ / PyTorch on the CPU, Triton on
a GPU, a float64 reference, the kernels' self-checks."""
from sslfast.ops.vq import check  # noqa: F401  (registers the ops' specs)
from sslfast.ops.vq.api import vq_codebook_stats, vq_lookup, vq_lookup_reference

__all__ = ["vq_lookup", "vq_codebook_stats", "vq_lookup_reference"]
