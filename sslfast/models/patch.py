"""In-place patching of existing Hugging Face models with sslfast's ops, same weights, same outputs.

``sslfast.patch(model)`` is the one-line path for code that builds its models with ``transformers`` (or
receives them from a client such as sentence-transformers): the model object, its weights and its outputs
stay; what runs underneath is sslfast's. Each family's patch lives in its folder (``bert/patch.py``) and is
named by its family record (:mod:`sslfast.models.families`).
"""
from __future__ import annotations

from sslfast.models._common.attention import ATTN_NAME, register_attention
from sslfast.models.families import FAMILIES

__all__ = ["patch", "PATCHES", "register_attention", "ATTN_NAME"]

PATCHES = {f.model_type: f.patch for f in FAMILIES.values() if f.patch is not None}  # model_type -> patch


def patch(model):
    """Patch a ``transformers`` model in place with sslfast's ops (supported: BERT, RoBERTa, GPT-2); returns it."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in PATCHES:
        raise TypeError(f"sslfast.patch: no patch for model_type={kind!r} (supported: {sorted(PATCHES)})")
    return PATCHES[kind](model)
