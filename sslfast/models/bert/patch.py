"""``sslfast.patch`` for transformers' BERT: the encoder runs unpadded on sslfast's ops, the MLM loss is fused.

The patched ``BertModel.forward`` unpads the batch once and runs the embeddings and every layer through the
same functions as :mod:`sslfast.models.bert.modeling` (``embed``, ``run_encoder``) on the transformers modules' own
weights, then returns transformers' output classes with zeros at padding positions. Calls it does not cover
(attention probabilities, cross-attention, caches, 4-D masks, a decoder config) go to the original forward,
which uses sslfast's registered attention. ``BertForMaskedLM`` / ``BertForPreTraining`` compute the MLM loss
on the labelled rows only (:func:`sslfast.models._common.lm_loss.labelled_rows_loss`); their logits are built without
labels, in eval mode, or with ``return_logits=True``.
"""
from __future__ import annotations

import types

import torch
import torch.utils.checkpoint

from sslfast.constants import IGNORE_INDEX
from sslfast.models._common.attention import register_attention
from sslfast.models._common.lm_loss import labelled_rows_loss
from sslfast.models.bert.modeling import embed, run_encoder, token_layout

__all__ = ["patch_bert", "packed_encoder", "masked_lm_pass", "needs_original", "hidden_states_wanted", "pool",
           "swap_forward", "bert_model_forward"]


def packed_encoder(bert, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                   inputs_embeds=None, output_hidden_states=False, default_position_ids=None):
    """(packed (T, D), layout, per-layer states or None) of a transformers ``BertModel`` (or a variant's:
    ``default_position_ids(layout, input_ids, inputs_embeds)`` gives its positions when none are passed;
    by default the hook a variant's patch set on the model)."""
    layout = token_layout(input_ids, inputs_embeds, attention_mask, None, None,
                          bert.embeddings.word_embeddings.num_embeddings,
                          first_token_queries=True)  # transformers' heads may read position 0 of the output
    default_position_ids = default_position_ids or getattr(bert, "_sslfast_default_position_ids", None)
    if position_ids is None and default_position_ids is not None:
        position_ids = default_position_ids(layout, input_ids, inputs_embeds)
    x = embed(bert.embeddings, layout, input_ids, token_type_ids, position_ids, inputs_embeds)  # (T, D)
    run_layer = None
    if getattr(bert.encoder, "gradient_checkpointing", False) and bert.training:
        def run_layer(fn, h):
            return torch.utils.checkpoint.checkpoint(fn, h, use_reentrant=False)
    x, states = run_encoder(bert.encoder.layer, x, layout, bert.config, bool(output_hidden_states), run_layer)
    return x, layout, states


def needs_original(model, attention_mask, kwargs) -> bool:
    """Calls the unpadded path does not cover."""
    return (getattr(model.config, "is_decoder", False) or bool(kwargs.get("output_attentions"))
            or (attention_mask is not None and attention_mask.dim() != 2)
            or any(kwargs.get(k) is not None for k in ("encoder_hidden_states", "encoder_attention_mask",
                                                       "past_key_values", "head_mask")))


def hidden_states_wanted(model, kwargs) -> bool:
    flag = kwargs.get("output_hidden_states")
    return bool(model.config.output_hidden_states if flag is None else flag)


def pool(bert, packed, layout):
    return None if bert.pooler is None else bert.pooler.activation(bert.pooler.dense(layout.first_tokens(packed)))


def bert_model_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                        inputs_embeds=None, **kwargs):
    """transformers' ``BertModel.forward`` (or a variant's: RoBERTa's), unpadded."""
    if needs_original(self, attention_mask, kwargs):
        return self._sslfast_original_forward(input_ids=input_ids, attention_mask=attention_mask,
                                              token_type_ids=token_type_ids, position_ids=position_ids,
                                              inputs_embeds=inputs_embeds, **kwargs)
    from transformers.modeling_outputs import (
        BaseModelOutputWithPoolingAndCrossAttentions,
    )
    packed, layout, states = packed_encoder(self, input_ids, attention_mask, token_type_ids, position_ids,
                                            inputs_embeds, hidden_states_wanted(self, kwargs))
    out = BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=layout.unpack(packed), pooler_output=pool(self, packed, layout),
        hidden_states=None if states is None else tuple(layout.unpack(h) for h in states))
    return out if kwargs.get("return_dict", True) is not False else out.to_tuple()


def masked_lm_pass(model, base, head, transform, input_ids, attention_mask, token_type_ids, position_ids,
                   inputs_embeds, labels, return_logits, num_items_in_batch, kwargs):
    """The shared body of a patched masked-LM forward: (packed, layout, loss, logits, hidden states) of
    ``base`` (the encoder, unpadded) and ``head`` (an LM head with ``decoder``, ``bias`` and ``transform``
    before it) with the loss fused on the labelled rows; logits only without labels, in eval mode or when
    ``return_logits`` asks."""
    packed, layout, states = packed_encoder(base, input_ids, attention_mask, token_type_ids, position_ids,
                                            inputs_embeds, hidden_states_wanted(model, kwargs),
                                            getattr(base, "_sslfast_default_position_ids", None))
    loss = None
    if labels is not None:
        layout.check("labels", labels)
        loss = labelled_rows_loss(packed, layout.pack_labels(labels, IGNORE_INDEX), head.decoder.weight,
                                  head.decoder.bias, transform=transform, projection=head.decoder,
                                  num_items_in_batch=num_items_in_batch)
    wants_logits = labels is None or (not model.training if return_logits is None else bool(return_logits))
    logits = layout.unpack(head(packed)) if wants_logits else None
    hidden = None if states is None else tuple(layout.unpack(h) for h in states)
    return packed, layout, loss, logits, hidden


def _mlm_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, labels=None, next_sentence_label=None, return_logits=None,
                 num_items_in_batch=None, **kwargs):
    """``BertForMaskedLM`` / ``BertForPreTraining`` forward: the encoder unpadded, the MLM loss fused."""
    if needs_original(self, attention_mask, kwargs):
        extra = {"next_sentence_label": next_sentence_label} if hasattr(self.cls, "seq_relationship") else {}
        return self._sslfast_original_forward(input_ids=input_ids, attention_mask=attention_mask,
                                              token_type_ids=token_type_ids, position_ids=position_ids,
                                              inputs_embeds=inputs_embeds, labels=labels, **extra, **kwargs)
    from transformers.modeling_outputs import MaskedLMOutput
    from transformers.models.bert.modeling_bert import BertForPreTrainingOutput
    head = self.cls.predictions
    pretraining = hasattr(self.cls, "seq_relationship")
    packed, layout, loss, logits, hidden = masked_lm_pass(
        self, self.bert, head, head.transform, input_ids, attention_mask, token_type_ids, position_ids,
        inputs_embeds, labels, return_logits, None if pretraining else num_items_in_batch, kwargs)
    if not pretraining:
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden)
    else:
        pair_logits = self.cls.seq_relationship(pool(self.bert, packed, layout))
        if loss is not None and next_sentence_label is not None:
            loss = loss + torch.nn.functional.cross_entropy(pair_logits.view(-1, 2), next_sentence_label.view(-1))
        else:
            loss = None  # as transformers: the pre-training loss needs both labels
        out = BertForPreTrainingOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=pair_logits,
                                       hidden_states=hidden)
    return out if kwargs.get("return_dict", True) is not False else out.to_tuple()


def swap_forward(module, forward) -> None:
    if not hasattr(module, "_sslfast_original_forward"):
        module._sslfast_original_forward = module.forward
    module.forward = types.MethodType(forward, module)


def patch_bert(model):
    """Patch a ``transformers`` BERT model (any head) in place; returns it. Idempotent."""
    if getattr(getattr(model, "config", None), "model_type", None) != "bert":
        raise TypeError(f"patch_bert expects a transformers BERT model, got {type(model).__name__}")
    register_attention(model)
    for module in model.modules():
        if type(module).__name__ == "BertModel":
            swap_forward(module, bert_model_forward)
    if type(model).__name__ in ("BertForMaskedLM", "BertForPreTraining"):
        swap_forward(model, _mlm_forward)
    model._sslfast_patched = True
    return model
