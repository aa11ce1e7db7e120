"""``sslfast.patch`` for transformers' RoBERTa: BERT's patch (the encoder unpadded on sslfast's ops) with
RoBERTa's positions, and the masked-LM loss of ``lm_head`` fused on the labelled rows."""
from __future__ import annotations

import functools

import torch.nn.functional as F

from sslfast.models._common.attention import register_attention
from sslfast.models.bert.patch import bert_model_forward, masked_lm_pass, needs_original, swap_forward
from sslfast.models.roberta.modeling import roberta_position_ids

__all__ = ["patch_roberta"]


def _default_position_ids(embeddings, layout, input_ids, inputs_embeds):
    return roberta_position_ids(layout, input_ids, inputs_embeds, embeddings.padding_idx,
                                embeddings.position_embeddings.num_embeddings)


def _mlm_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, labels=None, return_logits=None, num_items_in_batch=None, **kwargs):
    """``RobertaForMaskedLM`` forward: the encoder unpadded, the MLM loss fused on the labelled rows."""
    if needs_original(self, attention_mask, kwargs):
        return self._sslfast_original_forward(input_ids=input_ids, attention_mask=attention_mask,
                                              token_type_ids=token_type_ids, position_ids=position_ids,
                                              inputs_embeds=inputs_embeds, labels=labels, **kwargs)
    from transformers.modeling_outputs import MaskedLMOutput
    head = self.lm_head
    _, _, loss, logits, hidden = masked_lm_pass(
        self, self.roberta, head, lambda x: head.layer_norm(F.gelu(head.dense(x))), input_ids, attention_mask,
        token_type_ids, position_ids, inputs_embeds, labels, return_logits, num_items_in_batch, kwargs)
    out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden)
    return out if kwargs.get("return_dict", True) is not False else out.to_tuple()


def patch_roberta(model):
    """Patch a ``transformers`` RoBERTa model (any head) in place; returns it. Idempotent."""
    if getattr(getattr(model, "config", None), "model_type", None) != "roberta":
        raise TypeError(f"patch_roberta expects a transformers RoBERTa model, got {type(model).__name__}")
    register_attention(model)
    for module in model.modules():
        if type(module).__name__ == "RobertaModel":
            module._sslfast_default_position_ids = functools.partial(_default_position_ids, module.embeddings)
            swap_forward(module, bert_model_forward)
    if type(model).__name__ == "RobertaForMaskedLM":
        swap_forward(model, _mlm_forward)
    model._sslfast_patched = True
    return model
