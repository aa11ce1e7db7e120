"""``sslfast.patch`` for transformers' GPT-2: sslfast's attention and the fused causal-LM loss, in place.

The model keeps its modules, weights, cache handling and outputs. Attention goes through the registered
"sslfast" attention (:func:`sslfast.ops.attention` with causal and padding masks, the Triton kernels on a GPU).
``GPT2LMHeadModel`` computes its loss on the labelled rows only, with the tied vocabulary projection fused into
the cross-entropy (labels shifted as transformers does; ``num_items_in_batch`` honoured); its logits are built
without labels, in eval mode, or with ``return_logits=True``. (Unlike the BERT patch, the blocks still run on
the padded batch: for unpadded GPT-2 blocks use ``sslfast.models.GPT2LMHeadModel.from_pretrained(model)``.)
"""
from __future__ import annotations

import types

import torch

from sslfast.constants import IGNORE_INDEX
from sslfast.models._common.attention import register_attention
from sslfast.models._common.lm_loss import labelled_rows_loss

__all__ = ["patch_gpt2"]


def _lm_forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, return_logits=None,
                num_items_in_batch=None, **kwargs):
    from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions
    if cache is None and "past_key_values" in kwargs:
        cache = kwargs.pop("past_key_values")
    return_dict = kwargs.pop("return_dict", True)
    outputs = self.transformer(input_ids, cache=cache, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               return_dict=True, **kwargs)
    hidden = outputs.last_hidden_state  # (B, S, D)
    loss = None
    if labels is not None:
        target = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # row t predicts labels[t + 1]
        loss = labelled_rows_loss(hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1).to(hidden.device),
                                  self.lm_head.weight, projection=self.lm_head,
                                  num_items_in_batch=num_items_in_batch)
    wants = labels is None or (not self.training if return_logits is None else bool(return_logits))
    logits = None
    if wants:
        kept = hidden[:, -logits_to_keep:] if isinstance(logits_to_keep, int) and logits_to_keep else hidden
        logits = self.lm_head(kept)
    out = CausalLMOutputWithCrossAttentions(loss=loss, logits=logits, cache=getattr(outputs, "cache", None),
                                            hidden_states=outputs.hidden_states, attentions=outputs.attentions)
    return out if return_dict is not False else out.to_tuple()


def patch_gpt2(model):
    """Patch a ``transformers`` GPT-2 model (any head) in place; returns it. Idempotent."""
    if getattr(getattr(model, "config", None), "model_type", None) != "gpt2":
        raise TypeError(f"patch_gpt2 expects a transformers GPT-2 model, got {type(model).__name__}")
    register_attention(model)
    if type(model).__name__ == "GPT2LMHeadModel":
        if not hasattr(model, "_sslfast_original_forward"):
            model._sslfast_original_forward = model.forward
        model.forward = types.MethodType(_lm_forward, model)
    model._sslfast_patched = True
    return model
