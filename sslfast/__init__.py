"""sslfast: fused GPU/CPU kernels and drop-in fast models for self-supervised learning."""
from sslfast import anomaly, models, nn, ops
from sslfast.models.patch import patch
from sslfast.models.patch_bert import patch_bert
from sslfast.ops import available_backends

__version__ = "0.1.0"

__all__ = ["ops", "nn", "models", "anomaly", "patch", "patch_bert", "available_backends", "__version__"]
