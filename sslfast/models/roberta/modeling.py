"""RoBERTa on sslfast's fused ops: drop-in replacements for ``transformers``' RoBERTa classes, written as the
delta on BERT they are (as transformers' ``modular_roberta.py``):

- positions are counted over the non-padding tokens of ``input_ids`` and start at ``pad_token_id + 1``
  (padding tokens get ``pad_token_id``); with ``inputs_embeds`` they run ``pad_token_id + 1, …``;
- the masked-LM head is ``lm_head`` (``dense`` → GELU → ``layer_norm`` → ``decoder``), fused with the loss on
  the labelled rows as BERT's;
- sequence classification reads the first token through ``dense``, tanh and ``out_proj`` (no pooler);
- there is no next-sentence head.

Everything else (the unpadded encoder, the fused attention, outputs, checkpoints) is BERT's.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.models._common.classification import classifier_dropout
from sslfast.models.bert.modeling import (
    BertEmbeddings,
    BertEncoder,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLMPredictionHead,
    BertModel,
    BertPooler,
    BertPreTrainedModel,
)
from sslfast.models.roberta.configuration import RobertaConfig
from sslfast.ops.token_layout import TokenLayout

__all__ = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
           "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMultipleChoice",
           "roberta_position_ids"]


def roberta_position_ids(layout: TokenLayout, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor],
                         padding_idx: int, num_positions: int) -> torch.Tensor:
    """RoBERTa's position ids in the input's token shape: ``padding_idx + 1 + (non-padding tokens before)`` for
    tokens that are not ``padding_idx``, ``padding_idx`` for those that are; from ``inputs_embeds``, sequential
    from ``padding_idx + 1``. Raises if the longest sequence needs more than ``num_positions`` rows."""
    if layout.seqlen + padding_idx + 1 > num_positions:
        raise ValueError(f"sequence length {layout.seqlen} needs {layout.seqlen + padding_idx + 1} position rows "
                         f"(positions start at pad_token_id + 1 = {padding_idx + 1}); max_position_embeddings="
                         f"{num_positions}")
    if input_ids is None:
        if layout.packed_shape is not None:  # (T,) counting within each sequence
            return (layout.sequence_positions(inputs_embeds.device) + padding_idx + 1).view(layout.packed_shape)
        b, s = inputs_embeds.shape[:2]
        return torch.arange(padding_idx + 1, s + padding_idx + 1, device=inputs_embeds.device).expand(b, s)
    real = input_ids.ne(padding_idx).long()
    if layout.packed_shape is None:  # (B, S)
        return real.cumsum(-1) * real + padding_idx
    flat = real.reshape(-1)  # (T,): the count restarts at each sequence
    counts = flat.cumsum(0)
    starts = layout.cu_seqlens[:-1].long()
    before = (counts - flat).index_select(0, starts)  # real tokens before each sequence
    lengths = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).long()
    counts = counts - before.repeat_interleave(lengths, output_size=flat.numel())
    return (counts * flat + padding_idx).view(input_ids.shape)


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings; the position table has a padding row (``pad_token_id``), as transformers'."""

    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)


class RobertaPreTrainedModel(BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"
    display_name = "RoBERTa"
    lm_head_path = "lm_head"
    _tied_weights = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
                     "lm_head.decoder.bias": "lm_head.bias"}  # the head's bias is zeroed as BERT's (a subclass)


class RobertaModel(RobertaPreTrainedModel, BertModel):
    """``transformers.RobertaModel``: ``last_hidden_state`` (B, S, D), ``pooler_output`` (B, D)."""

    def __init__(self, config, add_pooling_layer: bool = True):
        RobertaPreTrainedModel.__init__(self, config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def default_position_ids(self, layout, input_ids, inputs_embeds):
        return roberta_position_ids(layout, input_ids, inputs_embeds, self.embeddings.padding_idx,
                                    self.embeddings.position_embeddings.num_embeddings)


class RobertaLMHead(BertLMPredictionHead):
    """dense → GELU → layer_norm → decoder (tied to the word embeddings), with its own bias: BERT's head (its
    forward and fused loss) with RoBERTa's module names and its fixed GELU."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def transform(self, x):  # (..., D) -> (..., D)
        return self.layer_norm(F.gelu(self.dense(x)))


class RobertaClassificationHead(nn.Module):
    """First token → dropout → dense → tanh → dropout → out_proj."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = classifier_dropout(config)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first_tokens):  # (B, D) -> (B, num_labels)
        x = torch.tanh(self.dense(self.dropout(first_tokens)))
        return self.out_proj(self.dropout(x))


class RobertaForMaskedLM(RobertaPreTrainedModel, BertForMaskedLM):
    """``transformers.RobertaForMaskedLM``; a training step with labels skips the logits (as BERT's)."""

    def __init__(self, config):
        RobertaPreTrainedModel.__init__(self, config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.post_init()


class RobertaForSequenceClassification(RobertaPreTrainedModel, BertForSequenceClassification):
    """``transformers.RobertaForSequenceClassification``: the classification head on the first token."""

    def __init__(self, config):
        RobertaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def classify(self, packed, layout):
        return self.classifier(layout.first_tokens(packed))


class RobertaForTokenClassification(RobertaPreTrainedModel, BertForTokenClassification):
    """``transformers.RobertaForTokenClassification``."""

    def __init__(self, config):
        RobertaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.dropout = classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class RobertaForQuestionAnswering(RobertaPreTrainedModel, BertForQuestionAnswering):
    """``transformers.RobertaForQuestionAnswering``."""

    def __init__(self, config):
        RobertaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class RobertaForMultipleChoice(RobertaPreTrainedModel, BertForMultipleChoice):
    """``transformers.RobertaForMultipleChoice``: inputs (B, choices, S), logits (B, choices)."""

    def __init__(self, config):
        RobertaPreTrainedModel.__init__(self, config)
        self.roberta = RobertaModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()
