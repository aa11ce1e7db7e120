"""GPT-2 on sslfast's fused ops: drop-in replacements for ``transformers``' GPT-2 classes.

Same module names and parameter layout (so the same state_dict: ``Conv1D`` weights stay (in, out)), forward
arguments and output fields as Hugging Face. What sslfast does underneath:
- a padded batch (left or right) is unpadded once; every block runs on the real tokens and causal attention
  goes through :func:`sslfast.ops.varlen_attention`, each sequence on its own; positions follow the attention
  mask (a sequence's first real token is at position 0, as transformers' ``generate`` places it);
- packed documents: ``input_ids`` (T,) or (1, T) with ``cu_seqlens`` train several documents per row with
  attention that never crosses a document boundary and positions restarting per document;
- the causal-LM loss shifts the labels inside each sequence and fuses the tied vocabulary projection with the
  cross-entropy on the labelled rows only (:func:`sslfast.models._common.lm_loss.labelled_rows_loss`); a training step
  with labels skips the logits, evaluation returns them;
- decoding keeps a preallocated :class:`~sslfast.models.KVCache` of the real tokens only and attends with
  :func:`sslfast.ops.attention_with_kvcache`; ``generate`` (in :mod:`sslfast.models.gpt2.generation`) drives it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn as nn

from sslfast.models._common.activations import activation
from sslfast.models._common.base import PreTrainedModel
from sslfast.models._common.classification import sequence_classification_loss
from sslfast.models._common.conv1d import Conv1D, conv1d
from sslfast.models._common.hub import KeyMap
from sslfast.models._common.inputs import (
    reject_unsupported,
    token_layout,
    unpack_states,
)
from sslfast.models._common.lm_loss import labelled_rows_loss, shifted_labels
from sslfast.models._common.outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from sslfast.models.gpt2.configuration import GPT2Config
from sslfast.models.gpt2.decode import decode_block, decode_step_in_one_call, fused_decode_allowed
from sslfast.models.gpt2.generation import GenerationMixin, default_generation_config
from sslfast.models.gpt2.kv_cache import KVCache, is_empty
from sslfast.ops.attention import attention, varlen_attention
from sslfast.ops.inference_linear import project
from sslfast.ops.kv_attention import (
    attention_with_kvcache,
    decode_attention,
    kvcache_backend,
)
from sslfast.ops.token_layout import TokenLayout

__all__ = ["GPT2Config", "GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "Conv1D"]


@dataclasses.dataclass
class CacheStep:
    """How a forward uses the key/value cache: a prompt's prefill stores each packed token at (``rows``,
    ``positions``); a decoding step (``lengths`` set) appends ``new`` tokens to each of ``batch`` rows.
    ``backend``: the attention backend, resolved once for a no-grad decoding step (its inputs already checked)."""
    cache: KVCache
    rows: Optional[torch.Tensor] = None
    positions: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    batch: int = 0
    new: int = 0
    backend: Optional[str] = None


class GPT2Attention(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) is not a multiple of n_head ({config.n_head})")
        self.num_heads, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.layer_idx = layer_idx
        self.scale = (1.0 / math.sqrt(self.head_dim) if config.scale_attn_weights else 1.0) / \
            (layer_idx + 1 if config.scale_attn_by_inverse_layer_idx else 1)
        self.c_attn = conv1d(3 * config.n_embd, config.n_embd)
        self.c_proj = conv1d(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, layout: TokenLayout, step: Optional[CacheStep] = None) -> torch.Tensor:
        """Packed (T, D) → (T, D): causal attention within each sequence, or over the cache when decoding."""
        t, d = x.shape
        q, k, v = self.c_attn(x).view(t, 3, self.num_heads, self.head_dim).unbind(1)  # (T, H, hd) each
        if step is not None and step.lengths is not None:  # decoding: append to the cache and attend over it
            b, s, h = step.batch, step.new, self.num_heads
            q, k, v = (z.view(b, s, h, -1) for z in (q, k, v))  # (B, s, H, hd)
            k_cache, v_cache = step.cache.keys[self.layer_idx], step.cache.values[self.layer_idx]
            if step.backend is not None and not torch.is_grad_enabled():
                out = decode_attention(q, k_cache, v_cache, step.lengths, k, v, self.scale, step.backend)
            else:
                out = attention_with_kvcache(q, k_cache, v_cache, step.lengths, k, v, causal=True, scale=self.scale,
                                             check_capacity=False)
            out = out.reshape(t, d)
        else:
            if step is not None:  # a prompt: its keys and values fill the cache rows
                step.cache.write_packed(self.layer_idx, k, v, step.rows, step.positions)
            p = self.attn_dropout.p if self.training else 0.0
            if layout.packed_shape is None and layout.indices is None:  # full rows: one batched call
                b, s = layout.batch, layout.seqlen
                q, k, v = (z.view(b, s, self.num_heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, H, S, hd)
                out = attention(q, k, v, causal=True, dropout_p=p, scale=self.scale).transpose(1, 2).reshape(t, d)
            else:
                cu, m = layout.cu_seqlens, layout.max_seqlen
                out = varlen_attention(q, k, v, cu, cu, m, m, causal=True, dropout_p=p, scale=self.scale,
                                       check_cu_seqlens=False).reshape(t, d)
        return self.resid_dropout(self.c_proj(out))


class GPT2MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = conv1d(inner, config.n_embd)
        self.c_proj = conv1d(config.n_embd, inner)
        self.act = activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    """Pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x, layout, step=None):  # (T, D) -> (T, D)
        x = x + self.attn(self.ln_1(x), layout, step)
        return x + self.mlp(self.ln_2(x))


_BLOCK_KINDS = (GPT2Block, GPT2Attention, GPT2MLP)  # what a block must be exactly for the fused decoding paths


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    _tied_weights = {"lm_head.weight": "transformer.wte.weight"}
    key_map = KeyMap(ignored=(r"(^|\.)attn\.bias$", r"(^|\.)attn\.masked_bias$"))  # HF's old mask buffers

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Conv1D):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    def post_init(self):
        super().post_init()
        # GPT-2's scaled init of the residual projections: std / sqrt(2 · layers)
        std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std)


UNSUPPORTED_WHY = ("the fused attention never materializes attention probabilities; GPT-2 has no "
                   "cross-attention")


def _new_columns(attention_mask, ref):
    """The mask of the input's own tokens (transformers passes past + new columns after a cache)."""
    if attention_mask is None or ref.dim() < 2:
        return attention_mask
    return attention_mask[:, -ref.shape[1]:]


def _mask_positions(attention_mask: Optional[torch.Tensor], b: int, s: int, device) -> torch.Tensor:
    """(B, S) positions following the mask: each row's first real token is at 0 (padding gets 1, unused)."""
    if attention_mask is None:
        return torch.arange(s, device=device).expand(b, s)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


class GPT2Model(GPT2PreTrainedModel):
    """``transformers.GPT2Model``: ``last_hidden_state`` (B, S, D) and, with ``use_cache``, ``past_key_values``."""

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, embeddings):
        self.wte = embeddings

    def new_cache(self, batch: int, capacity: int, dtype=None, device=None) -> KVCache:
        """An empty :class:`KVCache` for this model, in the dtype the keys are computed in (autocast's when on)."""
        c = self.config
        device = device or self.wte.weight.device
        if dtype is None:
            kind = torch.device(device).type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else self.wte.weight.dtype
        return KVCache(c.n_layer, batch, c.n_head, c.n_embd // c.n_head, capacity, dtype=dtype, device=device)

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Token-by-token decoding: ``input_ids`` (B, s) are the next real tokens of every row of a filled
        ``cache``, which they extend. Returns their final hidden states (B · s, D): no padding, layout or
        transformers cache to resolve."""
        self._make_room(input_ids, cache)
        hidden = decode_step_in_one_call(self, input_ids, cache, _BLOCK_KINDS)
        return hidden if hidden is not None else self._decode_step_by_modules(input_ids, cache)

    def decode_logits(self, input_ids: torch.Tensor, cache: KVCache, head: nn.Module) -> torch.Tensor:
        """:meth:`decode_step`, then ``head`` (an LM head) on each row's last new token: logits (B, V); the lean
        path ``generate`` runs every step. With plain modules and a plain ``nn.Linear`` head, the whole step is
        one C++ call on the CPU."""
        self._make_room(input_ids, cache)
        logits = decode_step_in_one_call(self, input_ids, cache, _BLOCK_KINDS, head=head)
        if logits is not None:
            return logits
        x = self._decode_step_by_modules(input_ids, cache)
        return project(head, x.view(input_ids.shape[0], -1, x.shape[-1])[:, -1])

    def _make_room(self, input_ids: torch.Tensor, cache: KVCache) -> None:
        b, s = input_ids.shape
        if cache.batch != b:
            raise ValueError(f"the cache holds {cache.batch} sequences, the input {b}")
        if cache.max_length + s > self.wpe.num_embeddings:
            raise ValueError(f"positions reach {cache.max_length + s - 1}, beyond n_positions="
                             f"{self.wpe.num_embeddings}")
        cache.reserve(s)

    def _decode_step_by_modules(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        b, s = input_ids.shape
        lengths = cache.lengths.clone()  # (B,) filled positions before this step
        positions = lengths.long()[:, None] + torch.arange(s, device=input_ids.device)  # (B, s)
        x = self.drop(self.wte(input_ids) + self.wpe(positions)).view(b * s, -1)  # (B·s, D)
        c = self.config
        backend = None if torch.is_grad_enabled() else kvcache_backend(x.device, cache.keys[0].dtype,
                                                                         c.n_embd // c.n_head)
        step = CacheStep(cache, lengths=lengths, batch=b, new=s, backend=backend)
        layout = TokenLayout(b, s)
        fused = fused_decode_allowed(self, x, _BLOCK_KINDS)
        for block in self.h:
            x = decode_block(block, x, step) if fused else self.run_layer(block, x, layout, step)
        cache.advance(s)
        return self.ln_f(x)

    def encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
               past_key_values=None, use_cache=False, output_hidden_states=False, cu_seqlens=None, max_seqlen=None):
        """The packed output (T, D), its :class:`TokenLayout`, every layer's (T, D) if asked, and the cache.

        Without a cache (or with an empty one) the input is a padded batch or packed sequences, each attended
        causally on its own; its keys and values fill the cache rows when there is one. After a filled cache
        the input holds new tokens for every row (a decoding step)."""
        ref = input_ids if input_ids is not None else inputs_embeds
        device = ref.device
        given = past_key_values
        cache = given
        if cache is not None and not isinstance(cache, KVCache):  # transformers' formats: converted, then back
            if is_empty(given):  # a fresh transformers cache: filled by this call
                cache, use_cache = None, True
            else:
                cache = KVCache.from_transformers(given, attention_mask, extra=ref.shape[1] if ref.dim() > 1 else 0)
        decoding = cache is not None and cache.max_length > 0
        layout = token_layout(input_ids, inputs_embeds, None if decoding else _new_columns(attention_mask, ref),
                              cu_seqlens, max_seqlen, self.wte.num_embeddings)
        packed = layout.packed_shape is not None
        b, s = (layout.batch, layout.seqlen) if not packed else (1, layout.total)
        if cache is None and use_cache:
            cache = self.new_cache(b, s)
        if cache is not None:
            if packed:
                raise NotImplementedError("a key/value cache with packed (cu_seqlens) input is not supported")
            if cache.batch != b:
                raise ValueError(f"past_key_values holds {cache.batch} sequences, the input {b}")
            cache.reserve(s)
        step = None
        if decoding:
            if attention_mask is not None and not bool(attention_mask[:, -s:].bool().all()):
                raise NotImplementedError("after a key/value cache every new token must be real (left-pad the "
                                          "prompt instead: the cache keeps only real tokens)")
            step = CacheStep(cache, lengths=cache.lengths.clone(), batch=b, new=s)
            positions = cache.lengths.long()[:, None] + torch.arange(s, device=device)  # (B, s)
            top = cache.max_length + s - 1
        else:
            if not layout.varlen:  # full rows: sequences of one packed batch, without copies
                layout = TokenLayout(b, s, cu_seqlens=torch.arange(0, (b + 1) * s, s, dtype=torch.int32,
                                                                   device=device), max_seqlen=s)
            positions = layout.sequence_positions(device) if packed else _mask_positions(attention_mask, b, s, device)
            top = layout.max_seqlen - 1
            if cache is not None:  # the prompt's tokens go to positions 0.. of their own row
                per_row = (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1]).long()
                rows = torch.repeat_interleave(torch.arange(b, device=device), per_row, output_size=layout.total)
                step = CacheStep(cache, rows=rows, positions=layout.sequence_positions(device))
        if position_ids is not None:
            positions = position_ids.expand(b, s) if not packed else position_ids
            top = int(positions.max())
        if top >= self.wpe.num_embeddings:
            raise ValueError(f"positions reach {top}, beyond n_positions={self.wpe.num_embeddings}")
        if positions.dim() == 2 or not packed:
            positions = layout.pack(positions)
        x = self.wte(layout.pack(input_ids)) if inputs_embeds is None else layout.pack(inputs_embeds)
        x = x + self.wpe(positions)
        if token_type_ids is not None:
            x = x + self.wte(layout.pack(token_type_ids.expand(b, s) if not packed else token_type_ids))
        x = self.drop(x)
        states = [x] if output_hidden_states else None
        for block in self.h:
            x = self.run_layer(block, x, layout, step)
            if output_hidden_states:
                states.append(x)
        x = self.ln_f(x)
        if output_hidden_states:
            states[-1] = x  # transformers reports the final state after ln_f
        if cache is not None:
            cache.advance(s if decoding else (layout.cu_seqlens[1:] - layout.cu_seqlens[:-1], layout.max_seqlen))
        returned = cache
        if given is not None and not isinstance(given, KVCache):
            returned = cache.to_transformers(attention_mask, given)
        return x, layout, states, returned

    def forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, use_cache=None, output_hidden_states=None, return_dict=None,
                output_attentions=None, head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache_position=None, cu_seqlens=None, max_seqlen=None, past_key_values=None):
        reject_unsupported("GPT-2", UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None,
                     encoder_hidden_states=encoder_hidden_states is not None,
                     encoder_attention_mask=encoder_attention_mask is not None)
        past = _cache_argument(cache, past_key_values)
        use_cache = self._use_cache(use_cache, cu_seqlens, past)
        x, layout, states, cache = self.encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                               past, use_cache, output_hidden_states, cu_seqlens, max_seqlen)
        return self.output(BaseModelOutputWithPast, return_dict, last_hidden_state=layout.unpack(x),
                           cache=cache if use_cache else None,
                           hidden_states=unpack_states(states, layout))

    def _use_cache(self, use_cache, cu_seqlens, past=None) -> bool:
        """transformers' default (``config.use_cache``) in eval mode or when a cache is passed; a training
        forward builds no cache unless asked."""
        if use_cache is None:
            default = bool(getattr(self.config, "use_cache", True)) and cu_seqlens is None
            return default and (not self.training or past is not None)
        return bool(use_cache)


def _cache_argument(cache, past_key_values):
    """Recent transformers call the key/value cache ``cache``, earlier versions ``past_key_values``: both work."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the key/value cache once: cache= or past_key_values=, not both")
    return cache if cache is not None else past_key_values


class GPT2LMHeadModel(GPT2PreTrainedModel, GenerationMixin):
    """``transformers.GPT2LMHeadModel``: causal-LM loss (labels shifted inside), logits (B, S, V)."""

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.generation_config = default_generation_config(config)  # transformers' GenerationConfig (or None)
        self.post_init()

    def can_generate(self) -> bool:
        return True

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, module):
        self.lm_head = module

    def forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                return_dict=None, output_attentions=None, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, cache_position=None, logits_to_keep=0, return_logits=None,
                cu_seqlens=None, max_seqlen=None, num_items_in_batch=None, past_key_values=None):
        """``labels`` as transformers (the model shifts them; -100 ignored); labels at padding positions and the
        first token of each sequence are never predicted. ``logits_to_keep=k`` returns the logits of the last
        k positions only (0: all)."""
        reject_unsupported("GPT-2", UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None,
                     encoder_hidden_states=encoder_hidden_states is not None,
                     encoder_attention_mask=encoder_attention_mask is not None)
        base = self.transformer
        past = _cache_argument(cache, past_key_values)
        use_cache = base._use_cache(use_cache, cu_seqlens, past)
        x, layout, states, cache = base.encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                               past, use_cache, output_hidden_states, cu_seqlens, max_seqlen)
        loss = None
        if labels is not None:
            layout.check("labels", labels)
            if not layout.varlen:
                raise ValueError("labels need whole sequences (no key/value cache)")
            ends = (layout.cu_seqlens[1:] - 1).long()
            target = shifted_labels(layout.pack(labels), ends)
            loss = labelled_rows_loss(x, target, self.lm_head.weight, projection=self.lm_head,
                                      num_items_in_batch=num_items_in_batch)
        logits = None
        if self.wants_logits(labels, return_logits):
            hidden = layout.unpack(x)
            if logits_to_keep:
                hidden = hidden[..., -logits_to_keep:, :] if hidden.dim() == 3 else hidden[-logits_to_keep:]
            logits = project(self.lm_head, hidden)
        return self.output(CausalLMOutputWithPast, return_dict, loss=loss, logits=logits,
                           cache=cache if use_cache else None,
                           hidden_states=unpack_states(states, layout))

    def next_token_logits(self, input_ids, attention_mask=None, cache: Optional[KVCache] = None) -> torch.Tensor:
        """(B, V) fp32 logits of each row's last real token, extending ``cache`` (used by ``generate``: only
        B rows go through the vocabulary projection)."""
        if isinstance(cache, KVCache) and cache.max_length > 0 and attention_mask is None:
            return self.transformer.decode_logits(input_ids, cache, self.lm_head).float()
        x, layout, _, _ = self.transformer.encode(input_ids, attention_mask, past_key_values=cache,
                                                  use_cache=cache is not None)
        last = layout.last_tokens(x) if layout.varlen else x.view(input_ids.shape[0], -1, x.shape[-1])[:, -1]
        return project(self.lm_head, last).float()


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """``transformers.GPT2ForSequenceClassification``: pools the last non-padding token, as transformers."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids=None, cache=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                return_dict=None, output_attentions=None, head_mask=None, num_items_in_batch=None,
                past_key_values=None):
        """The pooled position is transformers': the last token that is not ``config.pad_token_id`` (the last
        position without a pad token id). ``num_items_in_batch`` is accepted and not used, as transformers."""
        reject_unsupported("GPT-2", UNSUPPORTED_WHY, output_attentions=output_attentions,
                           head_mask=head_mask is not None)
        past = _cache_argument(cache, past_key_values)
        use_cache = self.transformer._use_cache(use_cache, None, past)
        x, layout, states, cache = self.transformer.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                                           inputs_embeds, past, use_cache, output_hidden_states)
        hidden = layout.unpack(x)  # (B, S, D)
        b, s = hidden.shape[:2]
        pad = getattr(self.config, "pad_token_id", None)
        if pad is None and b != 1:
            raise ValueError("GPT2ForSequenceClassification needs config.pad_token_id for batches larger than 1, as "
                             "transformers")
        if pad is None or input_ids is None:
            last = torch.full((b,), s - 1, device=hidden.device)
        else:
            not_pad = (input_ids != pad).int()
            last = (torch.arange(s, device=hidden.device) * not_pad).argmax(-1)
        logits = self.score(hidden[torch.arange(b, device=hidden.device), last])  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        return self.output(SequenceClassifierOutputWithPast, return_dict, loss=loss, logits=logits,
                           cache=cache if use_cache else None,
                           hidden_states=unpack_states(states, layout))
