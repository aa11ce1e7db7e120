"""BERT on sslfast's fused ops: drop-in replacements for ``transformers``' BERT classes.

Same module names (so the same state_dict keys), forward arguments and output fields as Hugging Face.
Differences are all about speed:
- the batch is unpadded once at the embeddings: every layer runs on the packed real tokens and attention
  goes through :func:`sslfast.ops.varlen_attention`; padded outputs are rebuilt only where returned,
  with zeros at padding positions (Hugging Face computes values there that no loss should use);
- the masked-LM loss runs the prediction head on the labelled rows only and fuses the vocabulary
  projection with the loss (:func:`sslfast.ops.linear_cross_entropy`): the N×V logits are built only
  when asked for (``return_logits=True``, or a forward without labels).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.models.hub import PretrainedMixin
from sslfast.models.outputs import ModelOutput
from sslfast.ops.attention import attention, varlen_attention
from sslfast.ops.cross_entropy import linear_cross_entropy

__all__ = [
    "BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice",
]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


@dataclasses.dataclass
class TokenLayout:
    """Where the real tokens of a batch are. Padded input (B, S): ``indices`` (T,) into the flattened B*S
    positions (``None`` when there is no padding). Packed input (T,) or (1, T) with ``cu_seqlens``:
    ``packed_shape`` is that leading shape. ``cu_seqlens`` (B+1,) int32 and ``max_seqlen`` describe the
    sequences whenever they are not all full rows."""
    batch: int
    seqlen: int
    indices: Optional[torch.Tensor] = None
    cu_seqlens: Optional[torch.Tensor] = None
    max_seqlen: int = 0
    packed_shape: Optional[tuple] = None

    @classmethod
    def from_mask(cls, attention_mask: Optional[torch.Tensor], batch: int, seqlen: int) -> "TokenLayout":
        if attention_mask is None:
            return cls(batch, seqlen)
        if tuple(attention_mask.shape) != (batch, seqlen):
            raise ValueError(f"attention_mask must be (batch, seq_len) = {(batch, seqlen)}, "
                             f"got {tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
        lengths = mask.sum(-1, dtype=torch.int32)  # (B,)
        counts = torch.stack([lengths.sum(), lengths.max() if batch else lengths.sum()]).tolist()  # one sync
        if counts[0] == batch * seqlen:
            return cls(batch, seqlen)
        indices = torch.nonzero_static(mask.flatten(), size=counts[0]).flatten()
        cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        return cls(batch, seqlen, indices, cu_seqlens, counts[1])

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, max_seqlen: Optional[int], packed_shape: tuple,
                        device) -> "TokenLayout":
        """Packed sequences: tokens (T,) or (1, T) delimited by ``cu_seqlens`` (B+1,), checked in one sync."""
        total = packed_shape[-1]
        if len(packed_shape) == 2 and packed_shape[0] != 1:
            raise ValueError(f"packed input_ids must be (total,) or (1, total) with cu_seqlens, got {packed_shape}")
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D tensor of batch+1 >= 2 cumulative lengths")
        if cu_seqlens.dtype.is_floating_point:
            raise TypeError(f"cu_seqlens must hold integers, got {cu_seqlens.dtype}")
        cu = cu_seqlens.to(device=device, dtype=torch.int32)
        lengths = cu[1:] - cu[:-1]
        first, last, shortest, longest = torch.stack([cu[0], cu[-1], lengths.min(), lengths.max()]).tolist()
        if first != 0 or shortest < 1 or last != total:
            raise ValueError(f"cu_seqlens must start at 0, increase (no empty sequence) and end at the {total} "
                             f"packed tokens; got start {first}, end {last}, shortest sequence {shortest}")
        if max_seqlen is not None and longest > max_seqlen:
            raise ValueError(f"a sequence is longer ({longest}) than max_seqlen={max_seqlen}")
        return cls(cu.numel() - 1, longest, None, cu, longest, tuple(packed_shape))

    @property
    def padded(self) -> bool:
        """True when the input is a (B, S) grid with padding positions."""
        return self.indices is not None

    @property
    def varlen(self) -> bool:
        """True when the sequences are not all full rows (attention goes through ``varlen_attention``)."""
        return self.cu_seqlens is not None

    @property
    def total(self) -> int:
        if self.packed_shape is not None:
            return self.packed_shape[-1]
        return self.indices.numel() if self.padded else self.batch * self.seqlen

    def check(self, name: str, t: Optional[torch.Tensor]) -> None:
        """``t`` must have the input's token shape (B, S), or (T,) / (1, T) when packed."""
        want = self.packed_shape if self.packed_shape is not None else (self.batch, self.seqlen)
        if t is not None and tuple(t.shape[:len(want)]) != tuple(want):
            raise ValueError(f"{name} must have the input's token shape {tuple(want)}, got {tuple(t.shape)}")

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) or the packed input shape → (T, ...) real tokens."""
        if self.packed_shape is not None:
            return x.reshape(self.total, *x.shape[len(self.packed_shape):])
        flat = x.reshape(self.batch * self.seqlen, *x.shape[2:])
        return flat.index_select(0, self.indices) if self.padded else flat

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) → the input's token shape (B, S, ...), zeros at padding; packed inputs stay packed."""
        if self.packed_shape is not None:
            return x.view(*self.packed_shape, *x.shape[1:])
        if self.padded:
            x = x.new_zeros(self.batch * self.seqlen, *x.shape[1:]).index_copy(0, self.indices, x)
        return x.view(self.batch, self.seqlen, *x.shape[1:])

    def sequence_positions(self, device) -> torch.Tensor:
        """(T,) position of every packed token inside its sequence (packed input only)."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
        starts = torch.repeat_interleave(self.cu_seqlens[:-1].long(), lengths, output_size=self.total)
        return torch.arange(self.total, device=device) - starts

    def first_tokens(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, ...) each sequence's position 0 (as HF: position 0 even where it is padding, which gives 0)."""
        if self.packed_shape is not None:
            return packed.index_select(0, self.cu_seqlens[:-1].long())
        if self.padded:
            return self.unpack(packed)[:, 0]
        return packed.view(self.batch, self.seqlen, *packed.shape[1:])[:, 0]


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, layout: TokenLayout, input_ids=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None) -> torch.Tensor:
        """Embeddings of the real tokens only: (T, D)."""
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if layout.seqlen > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {layout.seqlen} exceeds max_position_embeddings="
                             f"{self.position_embeddings.num_embeddings}")
        if layout.packed_shape is not None:
            positions = layout.pack(position_ids) if position_ids is not None else layout.sequence_positions(device)
            types = layout.pack(token_type_ids) if token_type_ids is not None else None
        else:
            b, s = layout.batch, layout.seqlen
            if position_ids is None:
                position_ids = torch.arange(s, device=device).expand(b, s)
            positions = layout.pack(position_ids.expand(b, s))
            types = None if token_type_ids is None else layout.pack(token_type_ids.expand(b, s))
        x = self.word_embeddings(layout.pack(input_ids)) if inputs_embeds is None else layout.pack(inputs_embeds)
        if types is None:  # all zeros: one row of the table
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(types)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size ({config.hidden_size}) is not a multiple of num_attention_heads "
                             f"({config.num_attention_heads})")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        t, d = x.shape  # (T, D)
        h, hd = self.num_heads, self.head_dim
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3D, D): one GEMM
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, weight, bias).view(t, 3, h, hd).unbind(1)  # (T, H, hd) each
        p = self.dropout_p if self.training else 0.0
        if layout.varlen:
            cu, m = layout.cu_seqlens, layout.max_seqlen
            out = varlen_attention(q, k, v, cu, cu, m, m, dropout_p=p, check_cu_seqlens=False)  # (T, H, hd)
            return out.reshape(t, d)
        b, s = layout.batch, layout.seqlen
        q, k, v = (z.view(b, s, h, hd).transpose(1, 2) for z in (q, k, v))  # (B, H, S, hd)
        return attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(t, d)


class BertSelfOutput(nn.Module):
    """dense → dropout → + residual → LayerNorm (after attention; ``BertOutput`` after the MLP)."""

    def __init__(self, config, in_features=None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, layout):
        return self.output(self.self(x, layout), x)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(BertSelfOutput):
    def __init__(self, config):
        super().__init__(config, in_features=config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, layout):  # (T, D) -> (T, D)
        x = self.attention(x, layout)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, x, layout, keep_all=False):
        """Packed (T, D) through every layer; with ``keep_all``, also every layer's input and the output."""
        states = [x] if keep_all else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, layout, use_reentrant=False)
            else:
                x = layer(x, layout)
            if keep_all:
                states.append(x)
        return x, states


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token):  # (B, D)
        return torch.tanh(self.dense(first_token))


class BertPreTrainedModel(PretrainedMixin, nn.Module):
    """Shared initialisation (as Hugging Face's ``_init_weights``) and checkpoint I/O."""
    base_model_prefix = "bert"
    _tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                     "cls.predictions.decoder.bias": "cls.predictions.bias"}

    def __init__(self, config):
        super().__init__()
        self.config = config

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def post_init(self):
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self):
        """Share the MLM decoder's weight with the word embeddings (``config.tie_word_embeddings``)."""
        cls = getattr(self, "cls", None)
        if cls is None or not hasattr(cls, "predictions"):
            return
        if getattr(self.config, "tie_word_embeddings", True):
            cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        cls.predictions.decoder.bias = cls.predictions.bias

    def gradient_checkpointing_enable(self, **_):
        for module in self.modules():
            if isinstance(module, BertEncoder):
                module.gradient_checkpointing = True


def _check_no_unsupported(**kwargs):
    for name, value in kwargs.items():
        if value:
            raise NotImplementedError(f"sslfast BERT: {name} is not supported (the fused attention never "
                                      f"materializes attention probabilities and the models are encoders)")


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

    def encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
               inputs_embeds=None, output_hidden_states=False, cu_seqlens=None, max_seqlen=None):
        """The packed encoder output (T, D), its :class:`TokenLayout` and, if asked, every layer's (T, D).

        Input is a padded batch (B, S) with an optional ``attention_mask``, or, with ``cu_seqlens``
        (B+1,), sequences already packed as (T,) or (1, T) (``max_seqlen``: the longest, optional)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        ref = input_ids if input_ids is not None else inputs_embeds
        token_dims = ref.dim() - (0 if input_ids is not None else 1)
        if cu_seqlens is not None:
            if attention_mask is not None:
                raise ValueError("pass either attention_mask (padded batch) or cu_seqlens (packed), not both")
            if token_dims not in (1, 2):
                raise ValueError(f"packed input_ids must be (total,) or (1, total), got {tuple(ref.shape)}")
        elif token_dims != 2:
            raise ValueError(f"input_ids must be (batch, seq_len) / inputs_embeds (batch, seq_len, hidden), got "
                             f"{tuple(ref.shape)}")
        if ref.numel() == 0:
            raise ValueError(f"empty batch: input shape {tuple(ref.shape)}")
        if input_ids is not None:
            vocab = self.embeddings.word_embeddings.num_embeddings
            lo_hi = torch.stack([input_ids.min(), input_ids.max()]).tolist()
            if lo_hi[0] < 0 or lo_hi[1] >= vocab:
                raise ValueError(f"input_ids must be in [0, {vocab}), got values in [{lo_hi[0]}, {lo_hi[1]}]")
        if cu_seqlens is not None:
            layout = TokenLayout.from_cu_seqlens(cu_seqlens, max_seqlen, tuple(ref.shape[:token_dims]), ref.device)
        else:
            layout = TokenLayout.from_mask(attention_mask, *ref.shape[:2])
        for name, t in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
            if layout.packed_shape is not None:
                layout.check(name, t)
        x = self.embeddings(layout, input_ids, token_type_ids, position_ids, inputs_embeds)  # (T, D)
        x, states = self.encoder(x, layout, keep_all=output_hidden_states)
        return x, layout, states

    def pool(self, packed: torch.Tensor, layout: TokenLayout) -> Optional[torch.Tensor]:
        """The pooler over each sequence's first position (as HF: position 0, padding or not)."""
        if self.pooler is None:
            return None
        return self.pooler(layout.first_tokens(packed))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_hidden_states=None, return_dict=None, output_attentions=None,
                head_mask=None, encoder_hidden_states=None, past_key_values=None, use_cache=None, cu_seqlens=None,
                max_seqlen=None, **unused):
        _check_no_unsupported(output_attentions=output_attentions, head_mask=head_mask is not None,
                              encoder_hidden_states=encoder_hidden_states is not None,
                              past_key_values=past_key_values is not None, use_cache=use_cache)
        packed, layout, states = self.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                             inputs_embeds, bool(output_hidden_states), cu_seqlens, max_seqlen)
        out = ModelOutput(last_hidden_state=layout.unpack(packed), pooler_output=self.pool(packed, layout),
                          hidden_states=None if states is None else tuple(layout.unpack(h) for h in states))
        return out if return_dict is not False else out.to_tuple()


# --- heads ---------------------------------------------------------------------------------------------

class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
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

    def loss(self, x, labels, ignore_index=-100, num_items_in_batch=None):
        """CE over rows of x (T, D) whose label is not ``ignore_index``, without the T×V logits: their mean,
        or their sum divided by ``num_items_in_batch`` (Hugging Face's gradient-accumulation convention)."""
        keep = torch.nonzero(labels != ignore_index).squeeze(1)  # (M,)
        h = self.transform(x.index_select(0, keep))  # the head runs on the labelled rows only
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = linear_cross_entropy(h, self.decoder.weight, labels.index_select(0, keep), self.bias,
                                    ignore_index=ignore_index, reduction=reduction)
        return loss if num_items_in_batch is None else loss / num_items_in_batch


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _mlm_outputs(model, packed, layout, labels, return_logits, num_items_in_batch=None):
    """(MLM loss or None, padded (B, S, V) logits or None) for the packed encoder output."""
    head = model.cls.predictions
    loss = None
    if labels is not None:
        layout.check("labels", labels)
        if labels.dim() != (len(layout.packed_shape) if layout.packed_shape else 2):
            raise ValueError(f"labels must have the input's token shape, got {tuple(labels.shape)}")
        loss = head.loss(packed, layout.pack(labels), num_items_in_batch=num_items_in_batch)
        # labels at padding positions are ignored here (HF would score them against padding outputs)
    logits = layout.unpack(head(packed)) if labels is None or return_logits else None
    return loss, logits


def _ce(logits, labels):
    return F.cross_entropy(logits.float(), labels.reshape(-1))


class BertForMaskedLM(BertPreTrainedModel):
    """``transformers.BertForMaskedLM``; logits only without labels or with ``return_logits=True``."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None,
                return_logits=False, cu_seqlens=None, max_seqlen=None, num_items_in_batch=None, **unsupported):
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        packed, layout, states = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, bool(output_hidden_states), cu_seqlens, max_seqlen)
        loss, logits = _mlm_outputs(self, packed, layout, labels, return_logits, num_items_in_batch)
        out = ModelOutput(loss=loss, logits=logits, hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()


def _padded_states(states, layout):
    return None if states is None else tuple(layout.unpack(h) for h in states)


class BertForPreTraining(BertPreTrainedModel):
    """``transformers.BertForPreTraining``: MLM + the [CLS] pair head (next-sentence or sentence-order)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, next_sentence_label=None, output_hidden_states=None,
                return_dict=None, return_logits=False, cu_seqlens=None, max_seqlen=None, num_items_in_batch=None,
                num_sequences_in_batch=None, **unsupported):
        """With ``num_items_in_batch`` (labelled tokens in the whole accumulated batch) the MLM term is a sum
        divided by it, and with ``num_sequences_in_batch`` the pair term a sum divided by that: exact means
        over a global batch split into micro-batches. Without them, both terms are means, as HF."""
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        packed, layout, states = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, bool(output_hidden_states), cu_seqlens, max_seqlen)
        mlm_loss, logits = _mlm_outputs(self, packed, layout, labels, return_logits, num_items_in_batch)
        pair_logits = self.cls.seq_relationship(self.bert.pool(packed, layout))  # (B, 2)
        loss = None
        if labels is not None and next_sentence_label is not None:
            if num_sequences_in_batch is None:
                pair_loss = _ce(pair_logits, next_sentence_label)
            else:
                pair_loss = F.cross_entropy(pair_logits.float(), next_sentence_label.reshape(-1),
                                            reduction="sum") / num_sequences_in_batch
            loss = mlm_loss + pair_loss
        out = ModelOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=pair_logits,
                          hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()


def _classifier_dropout(config):
    p = getattr(config, "classifier_dropout", None)
    return nn.Dropout(config.hidden_dropout_prob if p is None else p)


class BertForSequenceClassification(BertPreTrainedModel):
    """``transformers.BertForSequenceClassification``: regression, single- or multi-label by ``problem_type``."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None, **unsupported):
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        packed, layout, states = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, bool(output_hidden_states))
        logits = self.classifier(self.dropout(self.bert.pool(packed, layout)))  # (B, num_labels)
        loss = None if labels is None else self._loss(logits, labels)
        out = ModelOutput(loss=loss, logits=logits, hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()

    def _loss(self, logits, labels):
        if self.config.problem_type is None:  # chosen on first use, as Hugging Face does
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        kind = self.config.problem_type
        if kind == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if kind == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if kind == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(f"unknown problem_type {kind!r}")


class BertForTokenClassification(BertPreTrainedModel):
    """``transformers.BertForTokenClassification``: logits (B, S, num_labels); the classifier runs on
    real tokens only, padding positions get its bias."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None, **unsupported):
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        packed, layout, states = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, bool(output_hidden_states))
        logits = layout.unpack(self.classifier(self.dropout(packed)))  # (B, S, C)
        if layout.padded:  # HF scores padding positions from their (meaningless) hidden states: use the bias
            logits = logits + (~_real(layout))[..., None] * self.classifier.bias
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        out = ModelOutput(loss=loss, logits=logits, hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()


def _real(layout):
    """(B, S) bool: True at real tokens."""
    real = torch.zeros(layout.batch * layout.seqlen, dtype=torch.bool, device=layout.indices.device)
    return real.index_fill_(0, layout.indices, True).view(layout.batch, layout.seqlen)


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
                return_dict=None, **unsupported):
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        packed, layout, states = self.bert.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, bool(output_hidden_states))
        logits = layout.unpack(self.qa_outputs(packed))  # (B, S, 2)
        if layout.padded:
            logits = logits.masked_fill(~_real(layout)[..., None], torch.finfo(logits.dtype).min)
        start_logits, end_logits = (z.squeeze(-1).contiguous() for z in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the input are ignored, as HF
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        out = ModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                          hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()


class BertForMultipleChoice(BertPreTrainedModel):
    """``transformers.BertForMultipleChoice``: inputs (B, choices, S), logits (B, choices)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=None, return_dict=None, **unsupported):
        _check_no_unsupported(**{k: v for k, v in unsupported.items() if v is not None})
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None or ref.dim() < 3:
            raise ValueError("BertForMultipleChoice expects (batch, num_choices, seq_len) inputs")
        choices = ref.shape[1]

        def flat(t, keep_last=1):
            return None if t is None else t.reshape(-1, *t.shape[-keep_last:])

        packed, layout, states = self.bert.encode(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                                                  flat(position_ids), flat(inputs_embeds, 2),
                                                  bool(output_hidden_states))
        logits = self.classifier(self.dropout(self.bert.pool(packed, layout))).view(-1, choices)
        loss = None if labels is None else F.cross_entropy(logits, labels.view(-1))
        out = ModelOutput(loss=loss, logits=logits, hidden_states=_padded_states(states, layout))
        return out if return_dict is not False else out.to_tuple()
