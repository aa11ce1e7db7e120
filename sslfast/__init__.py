"""sslfast: fused GPU/CPU kernels and drop-in fast models for self-supervised learning."""
from sslfast import anomaly, models, nn, ops
from sslfast._version import __version__
from sslfast.models.bert.patch import patch_bert
from sslfast.models.patch import patch
from sslfast.ops import available_backends

__all__ = ["ops", "nn", "models", "anomaly", "patch", "patch_bert", "available_backends", "__version__"]
