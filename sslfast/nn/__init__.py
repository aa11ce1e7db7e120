"""sslfast's modules."""
from sslfast.nn.linear_cross_entropy import LinearCrossEntropyLoss
from sslfast.nn.multi_head_attention import MultiHeadAttention
from sslfast.nn.vector_quantize import VectorQuantize
from sslfast.nn.vector_quantizer import VectorQuantizer

__all__ = ["LinearCrossEntropyLoss", "MultiHeadAttention", "VectorQuantizer", "VectorQuantize"]
