"""BERT's masked-language-model corruption: choose positions, then 80% ``[MASK]`` / 10% random / 10% kept."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from sslfast.constants import IGNORE_INDEX

__all__ = ["mask_tokens", "IGNORE_INDEX"]

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def _uniform(shape, generator: Generators, device) -> torch.Tensor:
    """float64 uniforms of ``shape``; with one generator per row, row i comes from generator i alone."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for {shape[0]} rows")
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=torch.float64, device=device) for g in generator])


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int,
                special_tokens_mask: Optional[torch.Tensor] = None, mlm_probability: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1, generator: Generators = None,
                continuation_mask: Optional[torch.Tensor] = None):
    """Corrupt ``input_ids`` for masked-LM training; returns new ``(input_ids, labels)``, input untouched.

    Each position not flagged in ``special_tokens_mask`` (bool, same shape: special tokens and padding)
    is chosen with probability ``mlm_probability`` (0.15 as BERT, 0.30 as MosaicBERT). Of the chosen,
    ``mask_fraction`` become ``mask_token_id``, ``random_fraction`` a uniformly random id in
    ``[0, vocab_size)``, the rest stay; ``labels`` holds the original id at chosen positions and -100
    elsewhere. With ``continuation_mask`` (bool, True where a token continues the previous token's word,
    e.g. WordPiece ``##`` pieces) whole words are chosen together (whole-word masking); the 80/10/10
    choice is still made per token, as in Google's BERT.

    ``generator`` is a ``torch.Generator`` or, for a 2-D batch, one generator per row, so that a row's
    corruption depends on its own seed only (the same example is masked the same way whatever batch or
    process it lands in).
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"mask_tokens: input_ids must be an int64/int32 tensor, got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mask_tokens: mlm_probability must be in [0, 1], got {mlm_probability}")
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1.0 + 1e-12:
        raise ValueError(f"mask_tokens: mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) "
                         f"must be non-negative and sum to at most 1")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_tokens: mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
    for name, m in (("special_tokens_mask", special_tokens_mask), ("continuation_mask", continuation_mask)):
        if m is not None and tuple(m.shape) != tuple(input_ids.shape):
            raise ValueError(f"mask_tokens: {name} must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(m.shape)}")
    if not isinstance(generator, (type(None), torch.Generator)) and input_ids.dim() != 2:
        raise ValueError("mask_tokens: one generator per row needs a 2-D input_ids (rows, length)")
    device = input_ids.device
    # three draws per position, interleaved: position j of a row uses its generator's values 3j..3j+2, so a
    # row's corruption does not depend on how far the batch is padded
    u_choose, u_action, u_token = _uniform(tuple(input_ids.shape) + (3,), generator, device).unbind(-1)
    if continuation_mask is not None:  # a word's pieces share the draw of its first piece
        starts = ~continuation_mask.bool()
        starts[..., 0] = True
        if special_tokens_mask is not None:  # a piece right after [CLS]/[SEP] (a cut word) starts a word
            special = special_tokens_mask.bool()
            starts |= special
            starts[..., 1:] |= special[..., :-1]
        positions = torch.arange(input_ids.shape[-1], device=device).expand_as(input_ids)
        first_piece = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=-1).values
        u_choose = u_choose.gather(-1, first_piece)
    chosen = u_choose < mlm_probability
    if special_tokens_mask is not None:
        chosen &= ~special_tokens_mask.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = chosen & (u_action < mask_fraction)
    to_random = chosen & (u_action >= mask_fraction) & (u_action < mask_fraction + random_fraction)
    random_ids = (u_token * vocab_size).long().clamp_(max=vocab_size - 1).to(input_ids.dtype)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels
