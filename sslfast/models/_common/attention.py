"""sslfast's attention registered with transformers (``attn_implementation="sslfast"``): the path a patched
transformers model takes for the calls sslfast's unpadded forward does not cover."""
from __future__ import annotations

import torch

from sslfast.ops.attention import attention

__all__ = ["register_attention", "ATTN_NAME"]

ATTN_NAME = "sslfast"


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
