"""What every model does with its inputs first: check them and find the real tokens; and the arguments it
refuses."""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.ops.token_layout import TokenLayout

__all__ = ["token_layout", "reject_unsupported", "unpack_states"]


def token_layout(input_ids, inputs_embeds, attention_mask, cu_seqlens, max_seqlen, vocab_size, *,
                 first_token_queries: bool = False) -> TokenLayout:
    """Check the inputs (exactly one of ids / embeddings, shapes, ids in range) and find the real tokens
    (``first_token_queries``: and a padding position 0, for heads that read it; see :class:`TokenLayout`)."""
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
        lo, hi = torch.stack([input_ids.min(), input_ids.max()]).tolist()
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"input_ids must be in [0, {vocab_size}), got values in [{lo}, {hi}]")
    if cu_seqlens is not None:
        return TokenLayout.from_cu_seqlens(cu_seqlens, max_seqlen, tuple(ref.shape[:token_dims]), ref.device)
    return TokenLayout.from_mask(attention_mask, *ref.shape[:2], first_token_queries=first_token_queries)


def reject_unsupported(family: str, why: str, **flags) -> None:
    """Raise NotImplementedError naming the ``family``, the first of ``flags`` that is set, and ``why`` it is not
    supported."""
    for name, value in flags.items():
        if value:
            raise NotImplementedError(f"sslfast {family}: {name} is not supported ({why})")


def unpack_states(states: Optional[list], layout: TokenLayout) -> Optional[tuple]:
    """Per-layer packed (T, D) states back to the input's token shape (zeros at padding), or None."""
    return None if states is None else tuple(layout.unpack(h) for h in states)
