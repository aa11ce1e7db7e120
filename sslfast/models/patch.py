"""In-place patching of existing Hugging Face models with sslfast's ops, same weights, same outputs.

``sslfast.patch(model)`` is the one-line path for code that builds its models with ``transformers`` (or
receives them from a client such as sentence-transformers): the model object, its weights and its outputs
stay; what runs underneath is sslfast's. Each family's patch lives in its own file (``patch_bert.py``).
"""
from __future__ import annotations

import torch

from sslfast.ops.attention import attention

ATTN_NAME = "sslfast"

__all__ = ["patch", "register_attention", "ATTN_NAME"]


def _sslfast_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                       **kwargs):
    """transformers' attention-function contract: q, k, v (B, H, S, D) → ((B, S, H, D), no weights)."""
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    if attention_mask is not None and attention_mask.dim() == 4:  # a prepared/custom 4D mask: SDPA handles it
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    else:  # None or the 2D (B, Sk) padding mask
        out = attention(query, key, value, attention_mask=attention_mask, causal=causal and query.shape[2] > 1,
                        dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register_attention(model) -> None:
    """Register sslfast's attention with transformers and make ``model`` use it (the path left for calls
    the unpadded forward does not take, e.g. ``output_attentions``-free fallbacks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    AttentionInterface.register(ATTN_NAME, _sslfast_attention)
    AttentionMaskInterface.register(ATTN_NAME, flash_attention_mask)  # hands over the 2D padding mask as is
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTN_NAME)
    else:
        model.config._attn_implementation = ATTN_NAME


def _patchers():
    from sslfast.models.patch_bert import patch_bert
    from sslfast.models.patch_gpt2 import patch_gpt2
    return {"bert": patch_bert, "gpt2": patch_gpt2}


def patch(model):
    """Patch a ``transformers`` model in place with sslfast's ops (supported: BERT, GPT-2); returns it."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    patchers = _patchers()
    if kind not in patchers:
        raise TypeError(f"sslfast.patch: no patch for model_type={kind!r} (supported: {sorted(patchers)})")
    return patchers[kind](model)
