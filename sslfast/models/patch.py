"""In-place patching of existing Hugging Face models: sslfast's attention and fused MLM loss, same weights.

``sslfast.patch(model)`` is the one-line path for code that builds its models with ``transformers``: the
model object, its weights and its outputs stay; its attention calls :func:`sslfast.ops.attention` and its
masked-LM loss becomes :func:`sslfast.ops.linear_cross_entropy` on the labelled rows (the N×V logits are
built only when the forward has no labels or gets ``return_logits=True``). The swap to a fully unpadded
model is ``sslfast.models.BertForMaskedLM.from_pretrained(model)``.
"""
from __future__ import annotations

import types

import torch

from sslfast.ops.attention import attention

ATTN_NAME = "sslfast"

__all__ = ["patch", "patch_bert", "ATTN_NAME"]


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


def _register():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    AttentionInterface.register(ATTN_NAME, _sslfast_attention)
    AttentionMaskInterface.register(ATTN_NAME, flash_attention_mask)  # hands over the 2D padding mask as is


def _mlm_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, labels=None, next_sentence_label=None, return_logits=False, **kwargs):
    """BertForMaskedLM / BertForPreTraining forward with the fused loss on the labelled rows only."""
    from transformers.modeling_outputs import MaskedLMOutput
    from transformers.models.bert.modeling_bert import BertForPreTrainingOutput

    kwargs.pop("return_dict", None)
    outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
    hidden = outputs.last_hidden_state  # (B, S, D)
    head = self.cls.predictions
    loss = None
    if labels is not None:
        flat = labels.reshape(-1)
        keep = torch.nonzero(flat != -100).squeeze(1)
        rows = head.transform(hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep))
        from sslfast.ops.cross_entropy import linear_cross_entropy
        loss = linear_cross_entropy(rows, head.decoder.weight, flat.index_select(0, keep), head.bias)
    logits = head(hidden) if labels is None or return_logits else None
    if not hasattr(self.cls, "seq_relationship"):
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)
    pair_logits = self.cls.seq_relationship(outputs.pooler_output)
    if loss is not None and next_sentence_label is not None:
        loss = loss + torch.nn.functional.cross_entropy(pair_logits.view(-1, 2), next_sentence_label.view(-1))
    elif next_sentence_label is None:
        loss = None  # as transformers: the pre-training loss needs both labels
    return BertForPreTrainingOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=pair_logits,
                                    hidden_states=outputs.hidden_states, attentions=outputs.attentions)


def patch_bert(model):
    """Patch a ``transformers`` BERT model (any head) in place; returns it. Idempotent."""
    if getattr(getattr(model, "config", None), "model_type", None) != "bert":
        raise TypeError(f"patch_bert expects a transformers BERT model, got {type(model).__name__}")
    _register()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTN_NAME)
    else:
        model.config._attn_implementation = ATTN_NAME
    if type(model).__name__ in ("BertForMaskedLM", "BertForPreTraining"):
        model.forward = types.MethodType(_mlm_forward, model)
    model._sslfast_patched = True
    return model


_PATCHERS = {"bert": patch_bert}


def patch(model):
    """Patch a ``transformers`` model in place with sslfast's ops (supported: BERT); returns it."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in _PATCHERS:
        raise TypeError(f"sslfast.patch: no patch for model_type={kind!r} (supported: {sorted(_PATCHERS)})")
    return _PATCHERS[kind](model)
