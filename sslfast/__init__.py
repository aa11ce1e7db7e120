"""sslfast: fused GPU/CPU kernels and drop-in fast models for self-supervised learning."""
from sslfast import nn, ops
from sslfast.ops import available_backends

__version__ = "0.1.0"

__all__ = ["ops", "nn", "available_backends", "__version__"]
