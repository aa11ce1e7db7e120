"""Token generation for sslfast's causal LMs: a prompt prefilled once (unpadded), then one token per step
over a preallocated key/value cache; greedy or sampled (temperature, top-k, top-p), repetition penalty,
EOS stopping, several samples per prompt, a seeded generator, streaming."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = ["GenerationMixin", "process_logits", "default_generation_config"]


def process_logits(logits: torch.Tensor, tokens: torch.Tensor, *, step: int, min_new_tokens: int,
                   eos: Sequence[int], do_sample: bool, temperature: float, top_k: Optional[int],
                   top_p: Optional[float], repetition_penalty: float, logits_processor=None) -> torch.Tensor:
    """The scores the next token is picked from, in transformers' order: repetition penalty over every token so
    far (prompt included), EOS forbidden before ``min_new_tokens``, the caller's ``logits_processor`` (called
    as ``(tokens, scores)``), then (sampling only) temperature, top-k and top-p (nucleus) filtering.
    (B, V) fp32 in, (B, V) out."""
    if repetition_penalty != 1.0:
        seen = logits.gather(1, tokens)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        logits = logits.scatter(1, tokens, seen)
    if step < min_new_tokens and eos:
        logits = logits.clone()
        logits[:, list(eos)] = float("-inf")
    if logits_processor is not None:
        logits = logits_processor(tokens, logits)
    if not do_sample:
        return logits
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(logits, descending=False)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - top_p
        drop[:, -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


# transformers' defaults for a GenerationConfig field left None (transformers 5 resolves them the same way)
_DEFAULTS = {"max_length": 20, "min_length": 0, "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
             "repetition_penalty": 1.0, "num_return_sequences": 1, "num_beams": 1}
# GenerationConfig fields generate() has no implementation for, with the values that mean "off" (transformers 5
# leaves them None; transformers 4 used 0 / 1.0 / False): set to anything else, they raise instead of being
# silently ignored
_OFF_BY = {
    "num_beams": (None, 1), "num_beam_groups": (None, 1), "penalty_alpha": (None, 0.0),
    "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
    "force_words_ids": (None,), "constraints": (None,), "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0), "min_p": (None, 0.0), "diversity_penalty": (None, 0.0),
    "exponential_decay_length_penalty": (None,), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
    "sequence_bias": (None,), "guidance_scale": (None, 1.0), "watermarking_config": (None,),
    "assistant_model": (None,), "prompt_lookup_num_tokens": (None,), "output_attentions": (None, False),
    "output_hidden_states": (None, False), "renormalize_logits": (None, False), "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,), "stop_strings": (None,), "top_h": (None,), "max_time": (None,),
    "encoder_repetition_penalty": (None, 1.0), "remove_invalid_values": (None, False), "token_healing": (None, False),
    "dola_layers": (None,),
}


def _is_off(value, off_values) -> bool:
    return any(value is off or (off is not None and type(value) is type(off) and value == off)
               or (isinstance(off, float) and type(value) is int and value == off) for off in off_values)


def default_generation_config(config):
    """transformers' ``GenerationConfig`` for a model config (None without transformers)."""
    try:
        from transformers import GenerationConfig
    except ImportError:
        return None
    if hasattr(config, "get_text_config"):  # a transformers config
        return GenerationConfig.from_model_config(config)
    return GenerationConfig(**{k: getattr(config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                               if getattr(config, k, None) is not None})


class GenerationMixin:
    """``generate`` for models with ``next_token_logits(input_ids, attention_mask, cache)`` and ``new_cache``,
    taking transformers' ``GenerationConfig`` (``model.generation_config`` by default), its keyword arguments,
    ``logits_processor``, ``stopping_criteria`` and ``return_dict_in_generate`` / ``output_scores`` /
    ``output_logits``; what it does not implement (beam search, ...) raises an error naming it."""

    def can_generate(self) -> bool:
        return True

    @torch.no_grad()
    def generate(self, input_ids: Union[torch.Tensor, Sequence[Sequence[int]], None] = None, attention_mask=None, *,
                 generation_config=None, logits_processor=None, stopping_criteria=None, streamer=None,
                 generator: Optional[torch.Generator] = None, **kwargs):
        """Continue each prompt by up to ``max_new_tokens`` tokens; returns (B · num_return_sequences,
        prompt length + new) ids: the prompts as given (left-padded) followed by the new tokens, ``pad_token_id``
        after a sequence's EOS. Generation stops early once every sequence has ended, as transformers'.

        ``input_ids``: (B, S) left-padded with ``attention_mask``, or a list of token lists (left-padded here).
        Options come from ``generation_config`` (default ``model.generation_config``), overridden by keyword
        arguments, as in transformers: ``max_new_tokens`` / ``max_length``, ``min_new_tokens`` / ``min_length``,
        ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``eos_token_id`` (an id or a
        list), ``pad_token_id``, ``num_return_sequences``, ``return_dict_in_generate``, ``output_scores``,
        ``output_logits``. ``logits_processor`` (transformers' ``LogitsProcessorList`` or any
        ``(input_ids, scores) -> scores``) runs after the built-in processing; ``stopping_criteria`` (a
        ``StoppingCriteriaList`` or ``(input_ids, scores) -> bool / (B,) bool``) ends rows. A seeded ``generator``
        reproduces a sampled run. ``streamer``: an object with ``put`` / ``end`` (transformers' streamers: ``put``
        gets the prompts, then each step's (B,) tokens) or a callable given each step's tokens.
        """
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise ValueError("generate: pass input_ids (the prompts)")
        options = self._generation_options(generation_config, kwargs)
        if options.pop("use_cache", True) is False:
            raise NotImplementedError("generate: use_cache=False is not supported (decoding always keeps the cache)")
        config = self.config
        eos = options["eos_token_id"]
        if eos is None and "eos_token_id" not in kwargs and generation_config is None \
                and getattr(self, "generation_config", None) is None:
            eos = getattr(config, "eos_token_id", None)  # no GenerationConfig at all: the model config's
        if eos is None:
            eos = []
        elif isinstance(eos, torch.Tensor):
            eos = [int(e) for e in eos.flatten().tolist()]
        else:
            eos = [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]
        pad = options["pad_token_id"] if options["pad_token_id"] is not None else getattr(config, "pad_token_id", None)
        pad = pad if pad is not None else (eos[0] if eos else 0)
        device = next(self.parameters()).device
        input_ids, attention_mask = _as_left_padded(input_ids, attention_mask, pad, device)
        max_new_tokens, min_new_tokens = _lengths(options, input_ids.shape[1])
        do_sample, temperature, top_k, top_p = (options["do_sample"], options["temperature"], options["top_k"],
                                                options["top_p"])
        repetition_penalty, num_return_sequences = options["repetition_penalty"], options["num_return_sequences"]
        _check_generation_args(self, input_ids, attention_mask, max_new_tokens, min_new_tokens, do_sample,
                               temperature, top_k, top_p, repetition_penalty, num_return_sequences)
        if num_return_sequences > 1:
            input_ids = input_ids.repeat_interleave(num_return_sequences, 0)
            attention_mask = attention_mask.repeat_interleave(num_return_sequences, 0)
        b = input_ids.shape[0]
        longest = int(attention_mask.sum(1).max())
        cache = self.transformer.new_cache(b, longest + max_new_tokens)
        tokens = input_ids
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        eos_t = torch.tensor(eos, device=device, dtype=torch.long)
        keep_scores, keep_logits = options["output_scores"], options["output_logits"]
        scores_seen, logits_seen = [], []
        if streamer is not None and hasattr(streamer, "put"):
            streamer.put(input_ids.cpu())
        logits = self.next_token_logits(input_ids, attention_mask, cache)  # the prompt, unpadded
        for step in range(max_new_tokens):
            scores = process_logits(logits, tokens, step=step, min_new_tokens=min_new_tokens, eos=eos,
                                    do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                    repetition_penalty=repetition_penalty, logits_processor=logits_processor)
            if keep_scores:
                scores_seen.append(scores)
            if keep_logits:
                logits_seen.append(logits)
            if do_sample:
                chosen = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
            else:
                chosen = scores.argmax(-1)
            if len(eos):  # as transformers: rows ended by EOS continue with padding (by criteria alone, not)
                chosen = torch.where(finished, torch.full_like(chosen, pad), chosen)
            tokens = torch.cat([tokens, chosen[:, None]], 1)
            if streamer is not None:
                streamer.put(chosen.cpu()) if hasattr(streamer, "put") else streamer(chosen)
            if len(eos):
                finished |= torch.isin(chosen, eos_t)
            if stopping_criteria is not None:
                stop = stopping_criteria(tokens, scores)
                finished |= torch.as_tensor(stop, device=device).expand(b).bool()
            if (len(eos) or stopping_criteria is not None) and bool(finished.all()):
                break
            if step + 1 < max_new_tokens:
                logits = self.next_token_logits(chosen[:, None], None, cache)
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
        if not options["return_dict_in_generate"]:
            return tokens
        from transformers.generation.utils import GenerateDecoderOnlyOutput
        return GenerateDecoderOnlyOutput(sequences=tokens, scores=tuple(scores_seen) if keep_scores else None,
                                         logits=tuple(logits_seen) if keep_logits else None)

    def _generation_options(self, generation_config, kwargs) -> dict:
        """Every option generate() reads: the config's value (transformers' default where None), then the
        keyword arguments; an option it does not implement raises, as does an unknown keyword."""
        base = generation_config if generation_config is not None else getattr(self, "generation_config", None)
        values = {} if base is None else {k: v for k, v in base.to_dict().items()}
        unknown = []
        for key, value in kwargs.items():
            if base is not None and not hasattr(base, key) and key not in ("max_new_tokens", "min_new_tokens"):
                unknown.append(key)
            values[key] = value
        if unknown:
            raise TypeError(f"generate: unexpected argument(s) {unknown}")
        for key, off_values in _OFF_BY.items():
            value = values.get(key)
            if not _is_off(value, off_values):
                raise NotImplementedError(f"generate: {key}={value!r} is not supported by sslfast's generate "
                                          "(greedy and sampling with temperature / top-k / top-p, repetition "
                                          "penalty, logits processors and stopping criteria are)")
        options = {}
        for key in ("max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature",
                    "top_k", "top_p", "repetition_penalty", "eos_token_id", "pad_token_id", "num_return_sequences",
                    "return_dict_in_generate", "output_scores", "output_logits", "use_cache"):
            value = values.get(key)
            options[key] = _DEFAULTS.get(key) if value is None and base is not None else value
        if base is None:  # no transformers: sslfast's own defaults
            options.update({k: v for k, v in (("do_sample", False), ("temperature", 1.0), ("repetition_penalty", 1.0),
                                               ("num_return_sequences", 1)) if options[k] is None})
        for flag in ("return_dict_in_generate", "output_scores", "output_logits"):
            options[flag] = bool(options[flag])
        if options["return_dict_in_generate"]:
            try:
                import transformers  # noqa: F401
            except ImportError as exc:
                raise NotImplementedError("generate: return_dict_in_generate needs transformers installed") from exc
        return options


def _lengths(options, prompt_width):
    """(max_new_tokens, min_new_tokens) from either form (``max_length`` counts the prompt, as in transformers)."""
    new = options["max_new_tokens"]
    if new is None:
        if options["max_length"] is None:
            raise ValueError("generate: pass max_new_tokens (or max_length)")
        new = options["max_length"] - prompt_width
    least = options["min_new_tokens"]
    if least is None:
        least = max(0, (options["min_length"] or 0) - prompt_width)
    return int(new), int(least)


def _as_left_padded(input_ids, attention_mask, pad, device):
    """(B, S) ids and mask; a list of token lists is left-padded with ``pad``."""
    if not isinstance(input_ids, torch.Tensor):
        rows = [list(r) for r in input_ids]
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("generate: every prompt needs at least one token")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids.to(device), mask.to(device)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return input_ids.to(device), attention_mask.to(device)


def _check_generation_args(model, input_ids, attention_mask, max_new_tokens, min_new_tokens, do_sample, temperature,
                           top_k, top_p, repetition_penalty, num_return_sequences) -> None:
    if input_ids.numel() == 0 or input_ids.shape[1] == 0:
        raise ValueError("generate: the prompt is empty")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"generate: attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}")
    lengths = attention_mask.sum(1)
    if bool((lengths == 0).any()):
        raise ValueError("generate: a prompt has no real token (its attention_mask row is all 0)")
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("generate: prompts must be left-padded (the last column of attention_mask must be 1)")
    vocab = model.get_input_embeddings().num_embeddings
    lo, hi = torch.stack([input_ids.min(), input_ids.max()]).tolist()
    if lo < 0 or hi >= vocab:
        raise ValueError(f"generate: input_ids must be in [0, {vocab}), got values in [{lo}, {hi}]")
    if max_new_tokens < 1 or min_new_tokens < 0:
        raise ValueError(f"generate: need 1 <= max_new_tokens and 0 <= min_new_tokens, got "
                         f"{max_new_tokens} and {min_new_tokens}")
    limit = getattr(model.config, "n_positions", None)
    if limit is not None and int(lengths.max()) + max_new_tokens > limit:
        raise ValueError(f"generate: the longest prompt ({int(lengths.max())} tokens) + max_new_tokens "
                         f"({max_new_tokens}) exceeds n_positions={limit}")
    if do_sample and not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0 when sampling, got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"generate: top_k must be >= 0, got {top_k}")
    if not repetition_penalty > 0:
        raise ValueError(f"generate: repetition_penalty must be > 0, got {repetition_penalty}")
    if num_return_sequences < 1 or (num_return_sequences > 1 and not do_sample):
        raise ValueError("generate: num_return_sequences > 1 needs do_sample=True (greedy would repeat the same "
                         f"sequence), got {num_return_sequences}")
