"""BERT on sslfast's fused ops: drop-in replacements for ``transformers``' BERT classes.

Same module names (so the same state_dict keys), forward arguments and output fields as Hugging Face.
Differences are all about speed:
- the batch is unpadded once at the embeddings: every layer runs on the packed real tokens and attention
  goes through :func:`sslfast.ops.varlen_attention`; padded outputs are rebuilt only where returned,
  with zeros at padding positions (Hugging Face computes values there that no loss should use);
  already-packed input (``input_ids`` (T,) with ``cu_seqlens``) is taken as is;
- the masked-LM loss runs the prediction head on the labelled rows only and fuses the vocabulary
  projection with the loss (:func:`sslfast.ops.linear_cross_entropy`); a training step with labels skips the
  N×V logits (``return_logits=True`` asks for them), evaluation returns them as Hugging Face does.

The computation is written as functions of module trees named as in transformers (``embed``,
``bert_layer``, ``run_encoder``): sslfast's modules call them, and :func:`sslfast.patch` runs a transformers
BERT through the same functions, unpadded, on its own weights.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.constants import IGNORE_INDEX
from sslfast.models._common.activations import activation
from sslfast.models._common.base import PreTrainedModel
from sslfast.models._common.classification import (
    classifier_dropout,
    sequence_classification_loss,
)
from sslfast.models._common.fast_path import fused_path_allowed
from sslfast.models._common.hub import KeyMap
from sslfast.models._common.inputs import (
    reject_unsupported,
    token_layout,
    unpack_states,
)
from sslfast.models._common.lm_loss import labelled_rows_loss
from sslfast.models._common.outputs import (
    BaseModelOutputWithPooling,
    BertForPreTrainingOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from sslfast.models.bert.configuration import BertConfig
from sslfast.ops.attention import attention, varlen_attention
from sslfast.ops.token_layout import TokenLayout

__all__ = [
    "BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice",
    "token_layout", "embed", "bert_layer", "run_encoder",
]


UNSUPPORTED_WHY = "the fused attention never materializes attention probabilities and the models are encoders"


# --- the computation, on module trees named as in transformers ----------------------------------------------

def embed(embeddings: nn.Module, layout: TokenLayout, input_ids=None, token_type_ids=None, position_ids=None,
          inputs_embeds=None) -> torch.Tensor:
    """Word + token-type + position embeddings of the real tokens, LayerNorm, dropout: (T, D)."""
    if layout.seqlen > embeddings.position_embeddings.num_embeddings:
        raise ValueError(f"sequence length {layout.seqlen} exceeds max_position_embeddings="
                         f"{embeddings.position_embeddings.num_embeddings}")
    for name, t in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if t is not None and layout.packed_shape is not None:
            layout.check(name, t)
    device = (input_ids if input_ids is not None else inputs_embeds).device
    if layout.packed_shape is not None:
        positions = layout.pack(position_ids) if position_ids is not None else layout.sequence_positions(device)
        types = layout.pack(token_type_ids) if token_type_ids is not None else None
    else:
        b, s = layout.batch, layout.seqlen
        if position_ids is None:
            position_ids = torch.arange(s, device=device).expand(b, s)
        positions = layout.pack(position_ids.expand(b, s))
        types = None if token_type_ids is None else layout.pack(token_type_ids.expand(b, s))
    x = embeddings.word_embeddings(layout.pack(input_ids)) if inputs_embeds is None else layout.pack(inputs_embeds)
    x = x + (embeddings.token_type_embeddings.weight[0] if types is None else embeddings.token_type_embeddings(types))
    x = x + embeddings.position_embeddings(positions)
    return embeddings.dropout(embeddings.LayerNorm(x))


def self_attention(module: nn.Module, x: torch.Tensor, layout: TokenLayout, num_heads: int,
                   dropout_p: float) -> torch.Tensor:
    """Multi-head self-attention of the packed tokens (T, D) within their own sequences."""
    t, d = x.shape
    if fused_path_allowed("BERT self-attention's fused QKV projection", query=module.query, key=module.key,
                          value=module.value):
        weight = torch.cat([module.query.weight, module.key.weight, module.value.weight])  # (3D, D): one GEMM
        bias = torch.cat([module.query.bias, module.key.bias, module.value.bias])
        q, k, v = F.linear(x, weight, bias).view(t, 3, num_heads, d // num_heads).unbind(1)  # (T, H, hd) each
    else:  # an adapter, hook or subclass: the modules themselves
        q, k, v = (m(x).view(t, num_heads, d // num_heads) for m in (module.query, module.key, module.value))
    p = dropout_p if module.training else 0.0
    if layout.varlen:
        cu, m = layout.cu_seqlens, layout.max_seqlen
        if layout.kv_indices is not None:  # query-only padding tokens (position 0 of left-padded rows)
            k, v = k.index_select(0, layout.kv_indices), v.index_select(0, layout.kv_indices)
            return varlen_attention(q, k, v, cu, layout.cu_seqlens_k, m, layout.max_seqlen_k, dropout_p=p,
                                    check_cu_seqlens=False).reshape(t, d)
        return varlen_attention(q, k, v, cu, cu, m, m, dropout_p=p, check_cu_seqlens=False).reshape(t, d)
    b, s = layout.batch, layout.seqlen
    q, k, v = (z.view(b, s, num_heads, d // num_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, S, hd)
    return attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(t, d)


def add_norm(output: nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """dense → dropout → + residual → LayerNorm (BertSelfOutput after attention, BertOutput after the MLP)."""
    return output.LayerNorm(output.dropout(output.dense(x)) + residual)


def bert_layer(layer: nn.Module, x: torch.Tensor, layout: TokenLayout, num_heads: int, dropout_p: float,
               act: Callable) -> torch.Tensor:
    """One post-LN transformer layer on packed tokens: (T, D) → (T, D)."""
    x = add_norm(layer.attention.output, self_attention(layer.attention.self, x, layout, num_heads, dropout_p), x)
    return add_norm(layer.output, act(layer.intermediate.dense(x)), x)


def run_encoder(layers, x: torch.Tensor, layout: TokenLayout, config, keep_all: bool = False,
                run_layer: Optional[Callable] = None, call_layer: Optional[Callable] = None):
    """Packed (T, D) through every layer; with ``keep_all``, also every layer's input and the output.
    ``call_layer(layer, x)`` runs one layer (default: :func:`bert_layer` on the module tree; sslfast's own
    layers are called as modules, so hooks such as FSDP's fire); ``run_layer(fn, x)`` may wrap each call
    (activation checkpointing)."""
    if call_layer is None:
        act = activation(config.hidden_act)

        def call_layer(layer, h):
            return bert_layer(layer, h, layout, config.num_attention_heads, config.attention_probs_dropout_prob, act)
    states = [x] if keep_all else None
    for layer in layers:
        def step(h, layer=layer):
            return call_layer(layer, h)
        x = run_layer(step, x) if run_layer is not None else step(x)
        if keep_all:
            states.append(x)
    return x, states


# --- modules (names as in transformers, so state_dict keys match) -----------------------------------------

class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    forward = embed


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size ({config.hidden_size}) is not a multiple of num_attention_heads "
                             f"({config.num_attention_heads})")
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)


class BertSelfOutput(nn.Module):
    """dense → dropout → + residual → LayerNorm (after attention; ``BertOutput`` after the MLP)."""

    def __init__(self, config, in_features=None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    forward = add_norm


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class BertOutput(BertSelfOutput):
    def __init__(self, config):
        super().__init__(config, in_features=config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)
        self.num_heads, self.dropout_p = config.num_attention_heads, config.attention_probs_dropout_prob
        self.act = activation(config.hidden_act)

    def forward(self, x, layout):  # (T, D) -> (T, D)
        return bert_layer(self, x, layout, self.num_heads, self.dropout_p, self.act)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token):  # (B, D)
        return torch.tanh(self.dense(first_token))


class BertPreTrainedModel(PreTrainedModel):
    """Initialisation as Hugging Face's ``_init_weights``, the tied MLM decoder, checkpoint I/O.

    What a BERT variant changes is data: ``base_model_prefix`` (the encoder's attribute), ``lm_head_path``
    (where the masked-LM head sits; its ``decoder`` is the output embedding, its ``bias`` the decoder's bias)
    and ``_tied_weights``."""
    config_class = BertConfig
    base_model_prefix = "bert"
    display_name = "BERT"  # how errors name the family
    lm_head_path = "cls.predictions"
    _tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                     "cls.predictions.decoder.bias": "cls.predictions.bias"}
    key_map = KeyMap(ignored=(r"embeddings\.position_ids$", r"embeddings\.token_type_ids$"))  # old HF buffers

    @property
    def mlm_head(self) -> Optional[nn.Module]:
        """The masked-LM head (at ``lm_head_path``), or None for a model without one."""
        module = self
        for name in self.lm_head_path.split("."):
            module = getattr(module, name, None)
            if module is None:
                return None
        return module

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def tie_weights(self):
        super().tie_weights()
        head = self.mlm_head
        if head is not None:
            head.decoder.bias = head.bias

    def get_output_embeddings(self):
        head = self.mlm_head
        return head.decoder if head is not None else None

    def set_output_embeddings(self, module):
        head = self.mlm_head
        head.decoder = module
        head.bias = module.bias

    def _resize_output_bias(self, size):
        head = self.mlm_head
        old = head.bias
        new = nn.Parameter(old.new_zeros(size))
        with torch.no_grad():
            new[:min(size, old.numel())] = old[:size]
        head.bias = new
        head.decoder.bias = new


class BertModel(BertPreTrainedModel):
    """``transformers.BertModel``: ``last_hidden_state`` (B, S, D), ``pooler_output`` (B, D)."""

    def __init__(self, config, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, embeddings):
        self.embeddings.word_embeddings = embeddings

    def encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
               inputs_embeds=None, output_hidden_states=False, cu_seqlens=None, max_seqlen=None,
               first_token: bool = False):
        """The packed encoder output (T, D), its :class:`TokenLayout` and, if asked, every layer's (T, D).

        Input is a padded batch (B, S) with an optional ``attention_mask``, or, with ``cu_seqlens``
        (B+1,), sequences already packed as (T,) or (1, T) (``max_seqlen``: the longest, optional).
        ``first_token``: a head reads position 0, so where it is padding (left padding) it is computed too,
        as transformers computes it (a query over the row's real tokens)."""
        layout = token_layout(input_ids, inputs_embeds, attention_mask, cu_seqlens, max_seqlen,
                              self.embeddings.word_embeddings.num_embeddings, first_token_queries=first_token)
        if position_ids is None:
            position_ids = self.default_position_ids(layout, input_ids, inputs_embeds)
        x = embed(self.embeddings, layout, input_ids, token_type_ids, position_ids, inputs_embeds)  # (T, D)
        x, states = run_encoder(self.encoder.layer, x, layout, self.config, bool(output_hidden_states),
                                self.run_layer, call_layer=lambda layer, h: layer(h, layout))
        return x, layout, states

    def default_position_ids(self, layout: TokenLayout, input_ids, inputs_embeds) -> Optional[torch.Tensor]:
        """Position ids when the caller passes none, in the input's token shape; None: 0, 1, … per sequence
        (:func:`embed`'s default). A variant with other positions (RoBERTa's) overrides this."""
        return None

    def pool(self, packed: torch.Tensor, layout: TokenLayout) -> Optional[torch.Tensor]:
        """The pooler over each sequence's first position (as HF: position 0, padding or not)."""
        return None if self.pooler is None else self.pooler(layout.first_tokens(packed))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_hidden_states=None, return_dict=None, output_attentions=None,
                head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                use_cache=None, cu_seqlens=None, max_seqlen=None):
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None, encoder_hidden_states=encoder_hidden_states is not None,
                           encoder_attention_mask=encoder_attention_mask is not None,
                           past_key_values=past_key_values is not None, use_cache=use_cache)
        packed, layout, states = self.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                             inputs_embeds, output_hidden_states, cu_seqlens, max_seqlen,
                                             first_token=self.pooler is not None)
        return self.output(BaseModelOutputWithPooling, return_dict, last_hidden_state=layout.unpack(packed),
                           pooler_output=self.pool(packed, layout), hidden_states=unpack_states(states, layout))


# --- heads ---------------------------------------------------------------------------------------------

class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):  # (..., D) -> (..., V) logits
        return self.decoder(self.transform(x))

    def loss(self, x, labels, num_items_in_batch=None):
        """CE over the labelled rows of x (T, D), the head run on those rows only, no T×V logits."""
        return labelled_rows_loss(x, labels, self.decoder.weight, self.bias, transform=self.transform,
                                  projection=self.decoder, num_items_in_batch=num_items_in_batch)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def mlm_outputs(model, head, packed, layout, labels, return_logits, num_items_in_batch=None):
    """(MLM loss or None, (B, S, V) logits or None) for a packed encoder output; labels at padding positions
    are ignored (HF would score them against padding outputs)."""
    loss = None
    if labels is not None:
        layout.check("labels", labels)
        if labels.dim() != (len(layout.packed_shape) if layout.packed_shape else 2):
            raise ValueError(f"labels must have the input's token shape, got {tuple(labels.shape)}")
        loss = head.loss(packed, layout.pack_labels(labels, IGNORE_INDEX), num_items_in_batch=num_items_in_batch)
    logits = layout.unpack(head(packed)) if model.wants_logits(labels, return_logits) else None
    return loss, logits


class BertForMaskedLM(BertPreTrainedModel):
    """``transformers.BertForMaskedLM``; a training step with labels skips the logits (see the module doc)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None,
                output_attentions=None, head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                return_logits=None, cu_seqlens=None, max_seqlen=None, num_items_in_batch=None):
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None, encoder_hidden_states=encoder_hidden_states is not None,
                           encoder_attention_mask=encoder_attention_mask is not None)
        packed, layout, states = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_hidden_states, cu_seqlens, max_seqlen)
        loss, logits = mlm_outputs(self, self.mlm_head, packed, layout, labels, return_logits,
                                   num_items_in_batch)
        return self.output(MaskedLMOutput, return_dict, loss=loss, logits=logits,
                           hidden_states=unpack_states(states, layout))


class BertForPreTraining(BertPreTrainedModel):
    """``transformers.BertForPreTraining``: MLM + the [CLS] pair head (next-sentence or sentence-order)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, next_sentence_label=None, output_hidden_states=None,
                return_dict=None, output_attentions=None, head_mask=None, return_logits=None, cu_seqlens=None,
                max_seqlen=None, num_items_in_batch=None, num_sequences_in_batch=None):
        """With ``num_items_in_batch`` (labelled tokens in the whole accumulated batch) the MLM term is a sum
        divided by it, and with ``num_sequences_in_batch`` the pair term a sum divided by that: exact means
        over a global batch split into micro-batches. Without them both terms are means, as HF."""
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        packed, layout, states = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                        inputs_embeds, output_hidden_states, cu_seqlens, max_seqlen,
                                                        first_token=True)  # the pair head reads position 0
        mlm_loss, logits = mlm_outputs(self, self.mlm_head, packed, layout, labels, return_logits,
                                       num_items_in_batch)
        pair_logits = self.cls.seq_relationship(self.base_model.pool(packed, layout))  # (B, 2)
        loss = None
        if labels is not None and next_sentence_label is not None:
            pair_loss = F.cross_entropy(pair_logits.float(), next_sentence_label.reshape(-1),
                                        reduction="mean" if num_sequences_in_batch is None else "sum")
            loss = mlm_loss + (pair_loss if num_sequences_in_batch is None else pair_loss / num_sequences_in_batch)
        return self.output(BertForPreTrainingOutput, return_dict, loss=loss, prediction_logits=logits,
                           seq_relationship_logits=pair_logits, hidden_states=unpack_states(states, layout))


class BertForSequenceClassification(BertPreTrainedModel):
    """``transformers.BertForSequenceClassification``: regression, single- or multi-label by ``problem_type``."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, packed: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(B, num_labels) logits of the packed encoder output: the pooler, dropout, the classifier."""
        return self.classifier(self.dropout(self.base_model.pool(packed, layout)))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None,
                output_attentions=None, head_mask=None, cu_seqlens=None, max_seqlen=None, num_items_in_batch=None):
        """``num_items_in_batch`` is accepted and, as in transformers, not used (the loss is a mean)."""
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        packed, layout, states = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                        inputs_embeds, output_hidden_states, cu_seqlens, max_seqlen,
                                                        first_token=True)  # the head reads position 0
        logits = self.classify(packed, layout)  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        return self.output(SequenceClassifierOutput, return_dict, loss=loss, logits=logits,
                           hidden_states=unpack_states(states, layout))


class BertForTokenClassification(BertPreTrainedModel):
    """``transformers.BertForTokenClassification``: logits (B, S, num_labels); the classifier runs on
    real tokens only, padding positions get its bias."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None,
                output_attentions=None, head_mask=None, cu_seqlens=None, max_seqlen=None, num_items_in_batch=None):
        """``num_items_in_batch`` is accepted and, as in transformers, not used (the loss is a mean)."""
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        packed, layout, states = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_hidden_states, cu_seqlens, max_seqlen)
        logits = layout.unpack(self.classifier(self.dropout(packed)))  # (B, S, C)
        if layout.padded:  # HF scores padding positions from their (meaningless) hidden states: use the bias
            logits = logits + (~layout.real())[..., None] * self.classifier.bias
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return self.output(TokenClassifierOutput, return_dict, loss=loss, logits=logits,
                           hidden_states=unpack_states(states, layout))


class BertForQuestionAnswering(BertPreTrainedModel):
    """``transformers.BertForQuestionAnswering``: start/end logits (B, S). Padding positions get
    ``-inf``-like logits (finfo.min), so a span never starts or ends in padding."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_hidden_states=None,
                return_dict=None, output_attentions=None, head_mask=None, num_items_in_batch=None):
        """``num_items_in_batch`` is accepted and, as in transformers, not used (the loss is a mean)."""
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        packed, layout, states = self.base_model.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_hidden_states)
        logits = layout.unpack(self.qa_outputs(packed))  # (B, S, 2)
        if layout.padded:
            logits = logits.masked_fill(~layout.real()[..., None], torch.finfo(logits.dtype).min)
        start_logits, end_logits = (z.squeeze(-1).contiguous() for z in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the input are ignored, as HF
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        return self.output(QuestionAnsweringModelOutput, return_dict, loss=loss, start_logits=start_logits,
                           end_logits=end_logits, hidden_states=unpack_states(states, layout))


class BertForMultipleChoice(BertPreTrainedModel):
    """``transformers.BertForMultipleChoice``: inputs (B, choices, S), logits (B, choices)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None,
                output_attentions=None, head_mask=None, num_items_in_batch=None):
        """``num_items_in_batch`` is accepted and, as in transformers, not used (the loss is a mean)."""
        reject_unsupported(self.display_name, UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None or ref.dim() < 3:
            raise ValueError(f"{type(self).__name__} expects (batch, num_choices, seq_len) inputs")
        choices = ref.shape[1]

        def flat(t, keep_last=1):
            return None if t is None else t.reshape(-1, *t.shape[-keep_last:])

        packed, layout, states = self.base_model.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                                                        flat(position_ids), flat(inputs_embeds, 2),
                                                        output_hidden_states, first_token=True)
        logits = self.classifier(self.dropout(self.base_model.pool(packed, layout))).view(-1, choices)
        loss = None if labels is None else F.cross_entropy(logits, labels.view(-1))
        return self.output(MultipleChoiceModelOutput, return_dict, loss=loss, logits=logits,
                           hidden_states=unpack_states(states, layout))
