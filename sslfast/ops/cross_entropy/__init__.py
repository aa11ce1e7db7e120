"""Softmax cross-entropy: over given logits (:mod:`.logits`) and fused with the LM head so the logits are
never materialized (:mod:`.linear`, over the chunked engine :mod:`.chunked`); label checks (:mod:`.labels`),
Triton launchers (:mod:`.launch`), the kernels' self-checks."""
from sslfast.ops.cross_entropy import check  # noqa: F401  (registers the ops' specs)
from sslfast.ops.cross_entropy.linear import REDUCTIONS, linear_cross_entropy
from sslfast.ops.cross_entropy.logits import cross_entropy

__all__ = ["linear_cross_entropy", "cross_entropy", "REDUCTIONS"]
