"""Collators: a list of examples (and one seed per example) → the tensors a model's forward takes.

Every collator returns either a padded batch (``attention_mask`` (B, L)) or, with ``packed=True``, the
unpadded form sslfast's models take directly: tokens concatenated with ``cu_seqlens`` (B+1,) int32 and
``max_seqlen``, so no FLOP and no byte is spent on padding. Random choices (the MLM corruption) come from
one generator per example seeded by the loader from (seed, epoch, example index): an example is corrupted
the same way whatever batch, padding length, rank or resume it lands in.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from sslfast.data.masking import IGNORE_INDEX, mask_tokens
from sslfast.data.tokenizer import SpecialTokens, load_tokenizer, tokenizer_kind

__all__ = ["MLMCollator", "CausalLMCollator", "ImageCollator", "continuation_table", "pad_rows"]


def continuation_table(tokenizer) -> np.ndarray:
    """(vocab,) bool: True for WordPiece pieces that continue a word (``##…``), for whole-word masking."""
    tokenizer = load_tokenizer(tokenizer)
    if tokenizer_kind(tokenizer) != "wordpiece":
        raise ValueError("whole-word masking needs a WordPiece tokenizer (its '##' pieces mark word continuations)")
    table = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=bool)
    for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        table[token_id] = token.startswith("##")
    return table


def pad_rows(rows: Sequence[np.ndarray], value: int, multiple_of: Optional[int] = None):
    """(B, L) int64 tensor of the rows padded with ``value`` and the (B,) int64 lengths."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out), torch.from_numpy(lengths)


def _generators(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _pack(tensors: dict, attention_mask: torch.Tensor, lengths: torch.Tensor) -> dict:
    """Padded (B, L) entries → packed (T,) entries, plus ``cu_seqlens`` and ``max_seqlen``."""
    keep = attention_mask.bool()
    packed = {name: t[keep] for name, t in tensors.items()}
    packed["cu_seqlens"] = torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    packed["max_seqlen"] = int(lengths.max()) if len(lengths) else 0
    return packed


class MLMCollator:
    """BERT batches: masked-LM corruption (+ ``next_sentence_label`` when the examples carry it).

    Examples are dicts with ``input_ids`` (``[CLS]``/``[SEP]`` included) and optionally ``token_type_ids``
    and ``next_sentence_label`` (:class:`~sslfast.data.MaskedLMDataset`,
    :class:`~sslfast.data.SentencePairDataset`). Special tokens and padding are never chosen. Output
    (padded): ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (B, L), and
    ``next_sentence_label`` (B,); packed: the same tokens as (T,) tensors with ``cu_seqlens`` and
    ``max_seqlen`` (and no ``attention_mask``). ``whole_word`` takes a :func:`continuation_table`.
    """

    def __init__(self, special: SpecialTokens, vocab_size: int, *, mlm_probability: float = 0.15,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1, whole_word: Optional[np.ndarray] = None,
                 packed: bool = False, pad_to_multiple_of: Optional[int] = None):
        special.require("mask", "pad", purpose="masked-LM batches")
        self.special, self.vocab_size = special, vocab_size
        self.mlm_probability, self.mask_fraction, self.random_fraction = mlm_probability, mask_fraction, random_fraction
        self.continuation = None if whole_word is None else torch.from_numpy(np.asarray(whole_word, dtype=bool))
        self.packed, self.pad_to_multiple_of = packed, pad_to_multiple_of
        self._special_ids = torch.tensor(special.ids, dtype=torch.int64)

    def __call__(self, examples: Sequence[dict], seeds: Sequence[int]) -> dict:
        if not examples:
            raise ValueError("MLMCollator: empty batch")
        ids, lengths = pad_rows([e["input_ids"] for e in examples], self.special.pad, self.pad_to_multiple_of)
        attention_mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, L)
        if "token_type_ids" in examples[0]:
            token_type_ids, _ = pad_rows([e["token_type_ids"] for e in examples], 0, self.pad_to_multiple_of)
        else:
            token_type_ids = torch.zeros_like(ids)
        special_mask = torch.isin(ids, self._special_ids) | ~attention_mask.bool()
        continuation = None if self.continuation is None else self.continuation[ids]
        input_ids, labels = mask_tokens(ids, mask_token_id=self.special.mask, vocab_size=self.vocab_size,
                                        special_tokens_mask=special_mask, mlm_probability=self.mlm_probability,
                                        mask_fraction=self.mask_fraction, random_fraction=self.random_fraction,
                                        generator=_generators(seeds), continuation_mask=continuation)
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "labels": labels}
        if self.packed:
            batch = _pack(batch, attention_mask, lengths)
        else:
            batch["attention_mask"] = attention_mask
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([int(e["next_sentence_label"]) for e in examples])
        return batch


class CausalLMCollator:
    """GPT batches; ``labels`` follow Hugging Face (equal to ``input_ids``, the model shifts them).

    Packed rows (:class:`~sslfast.data.CausalLMDataset` with ``packed=True``) give ``input_ids`` (B, S),
    ``position_ids`` restarting at every document, ``cu_seqlens`` over the B·S tokens (document pieces,
    never crossing rows) and ``max_seqlen``; the first token of every piece is labelled -100, so nothing
    is predicted across a document boundary. Per-document examples are padded (``pad`` or else the
    end-of-text id) with ``attention_mask`` and -100 labels at padding.
    """

    def __init__(self, special: SpecialTokens, *, pad_to_multiple_of: Optional[int] = None):
        special.require("eos", purpose="causal-LM batches")
        self.special, self.pad_to_multiple_of = special, pad_to_multiple_of

    def __call__(self, examples: Sequence[dict], seeds: Sequence[int] = ()) -> dict:
        if not examples:
            raise ValueError("CausalLMCollator: empty batch")
        if "cu_seqlens" in examples[0]:
            return self._packed(examples)
        pad = self.special.pad if self.special.pad is not None else self.special.eos
        ids, lengths = pad_rows([e["input_ids"] for e in examples], pad, self.pad_to_multiple_of)
        attention_mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        labels = ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}

    @staticmethod
    def _packed(examples) -> dict:
        ids = torch.from_numpy(np.stack([np.asarray(e["input_ids"], dtype=np.int64) for e in examples]))  # (B, S)
        b, s = ids.shape
        labels = ids.clone().view(-1)
        cu_rows = []
        for r, e in enumerate(examples):
            c = np.unique(np.asarray(e["cu_seqlens"], dtype=np.int64))  # empty pieces dropped
            if c[-1] < s:  # a padded last row (pack_documents(drop_last=False)): padding is its own piece
                labels[r * s + c[-1]:(r + 1) * s] = IGNORE_INDEX
                c = np.append(c, s)
            cu_rows.append(c)
        cu = np.concatenate([[0]] + [r * s + c[1:] for r, c in enumerate(cu_rows)])  # over the B*S tokens
        piece_lengths = np.diff(cu)
        starts = np.repeat(cu[:-1], piece_lengths)  # (B*S,) start of each token's piece
        position_ids = torch.from_numpy(np.arange(b * s) - starts).view(b, s)
        labels[torch.from_numpy(cu[:-1])] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels.view(b, s), "position_ids": position_ids,
                "cu_seqlens": torch.from_numpy(cu.astype(np.int32)), "max_seqlen": int(piece_lengths.max())}


class ImageCollator:
    """Image batches: ``pixel_values`` (B, C, H, W) or (B, D) float32 and ``labels`` (B,) when known."""

    def __call__(self, examples: Sequence[dict], seeds: Sequence[int] = ()) -> dict:
        if not examples:
            raise ValueError("ImageCollator: empty batch")
        batch = {"pixel_values": torch.from_numpy(np.stack([e["pixel_values"] for e in examples]))}
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([int(e["labels"]) for e in examples])
        return batch
