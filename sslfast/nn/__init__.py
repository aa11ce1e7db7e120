"""sslfast's modules."""
from sslfast.nn.linear_cross_entropy import LinearCrossEntropyLoss
from sslfast.nn.vector_quantizer import VectorQuantizer

__all__ = ["LinearCrossEntropyLoss", "VectorQuantizer"]
