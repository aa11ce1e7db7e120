from sslfast.nn.vector_quantizer import VectorQuantizer

__all__ = ["VectorQuantizer"]
