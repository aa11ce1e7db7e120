"""Where the real tokens of a batch are: the one pack / unpack used by the models and by ``unpad`` / ``pad``."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["TokenLayout"]


@dataclasses.dataclass
class TokenLayout:
    """The real tokens of a padded (B, S) batch or of sequences already packed as (T,) / (1, T).

    Padded input: ``indices`` (T,) are the real tokens' positions in the flattened B·S grid (``None`` when
    there is no padding). Packed input: ``packed_shape`` is the input's token shape. ``cu_seqlens`` (B+1,)
    int32 and ``max_seqlen`` describe the sequences whenever they are not all full rows (then attention
    goes through ``varlen_attention``).

    ``from_mask(..., first_token_queries=True)`` also computes position 0 of every row where it is padding (a
    left-padded row), as transformers does, for the heads that read position 0: such a token is a query only
    (``query_only`` (T,) marks it), its row attends to the real tokens (``kv_indices``, ``cu_seqlens_k``,
    ``max_seqlen_k``), and a label there is never scored."""
    batch: int
    seqlen: int
    indices: Optional[torch.Tensor] = None
    cu_seqlens: Optional[torch.Tensor] = None
    max_seqlen: int = 0
    packed_shape: Optional[tuple] = None
    query_only: Optional[torch.Tensor] = None
    kv_indices: Optional[torch.Tensor] = None
    cu_seqlens_k: Optional[torch.Tensor] = None
    max_seqlen_k: int = 0

    # --- construction ---
    @classmethod
    def from_mask(cls, attention_mask: Optional[torch.Tensor], batch: int, seqlen: int, *,
                  always_index: bool = False, first_token_queries: bool = False) -> "TokenLayout":
        """From a (B, S) mask, 1/True at real tokens (any pattern: right, left or holes). One host sync.
        ``always_index`` keeps ``indices`` and ``cu_seqlens`` even when nothing is padding;
        ``first_token_queries`` computes a padding position 0 as a query (see the class)."""
        if attention_mask is None:
            if not always_index:
                return cls(batch, seqlen)
            attention_mask = torch.ones(batch, seqlen, dtype=torch.bool)
        if tuple(attention_mask.shape) != (batch, seqlen):
            raise ValueError(f"attention_mask must be (batch, seq_len) = {(batch, seqlen)}, "
                             f"got {tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
        lengths = mask.sum(-1, dtype=torch.int32)  # (B,)
        counts = [lengths.sum(), lengths.max() if batch else lengths.sum()]
        if first_token_queries and seqlen:  # rows whose position 0 is padding, in the same host sync
            counts.append((~mask[:, 0]).sum())
        total, longest, *rest = torch.stack(counts).tolist()
        extra = rest[0] if rest else 0
        if total == batch * seqlen and not always_index:
            return cls(batch, seqlen)
        cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        if not extra:
            indices = torch.nonzero_static(mask.flatten(), size=total).flatten()
            return cls(batch, seqlen, indices, cu_seqlens, longest)
        computed = mask.clone()
        computed[:, 0] = True  # (B, S): the real tokens and every position 0
        indices = torch.nonzero_static(computed.flatten(), size=total + extra).flatten()  # (T,) in grid order
        query_only = ~mask.flatten().index_select(0, indices)  # (T,)
        kv_indices = torch.nonzero_static(~query_only, size=total).flatten()  # (total,)
        cu_q = F.pad(torch.cumsum(computed.sum(-1, dtype=torch.int32), 0, dtype=torch.int32), (1, 0))
        return cls(batch, seqlen, indices, cu_q, min(seqlen, longest + 1), query_only=query_only,
                   kv_indices=kv_indices, cu_seqlens_k=cu_seqlens, max_seqlen_k=longest)

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

    # --- properties ---
    @property
    def padded(self) -> bool:
        """True when the input is a (B, S) grid with padding positions."""
        return self.indices is not None and self.packed_shape is None

    @property
    def varlen(self) -> bool:
        """True when the sequences are not all full rows."""
        return self.cu_seqlens is not None

    @property
    def total(self) -> int:
        if self.packed_shape is not None:
            return self.packed_shape[-1]
        return self.indices.numel() if self.indices is not None else self.batch * self.seqlen

    def check(self, name: str, t: Optional[torch.Tensor]) -> None:
        """``t`` must have the input's token shape: (B, S), or (T,) / (1, T) when packed."""
        want = self.packed_shape if self.packed_shape is not None else (self.batch, self.seqlen)
        if t is not None and tuple(t.shape[:len(want)]) != tuple(want):
            raise ValueError(f"{name} must have the input's token shape {tuple(want)}, got {tuple(t.shape)}")

    # --- moving tokens ---
    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) or the packed input shape → (T, ...) real tokens."""
        if self.packed_shape is not None:
            return x.reshape(self.total, *x.shape[len(self.packed_shape):])
        flat = x.reshape(self.batch * self.seqlen, *x.shape[2:])
        return flat.index_select(0, self.indices) if self.indices is not None else flat

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(T, ...) → the input's token shape (B, S, ...), zeros at padding; packed inputs stay packed."""
        if self.packed_shape is not None:
            return x.view(*self.packed_shape, *x.shape[1:])
        if self.indices is not None:
            x = x.new_zeros(self.batch * self.seqlen, *x.shape[1:]).index_copy(0, self.indices, x)
        return x.view(self.batch, self.seqlen, *x.shape[1:])

    def real(self) -> torch.Tensor:
        """(B, S) bool, True at real tokens, for a padded layout."""
        device = self.indices.device
        flags = torch.zeros(self.batch * self.seqlen, dtype=torch.bool, device=device)
        real_indices = self.indices if self.query_only is None else self.indices[~self.query_only]
        return flags.index_fill_(0, real_indices, True).view(self.batch, self.seqlen)

    def pack_labels(self, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """:meth:`pack` for labels: a query-only padding token's label becomes ``ignore_index``."""
        packed = self.pack(labels)
        return packed if self.query_only is None else packed.masked_fill(self.query_only, ignore_index)

    def sequence_positions(self, device) -> torch.Tensor:
        """(T,) position of every real token inside its own sequence (varlen layouts)."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
        starts = torch.repeat_interleave(self.cu_seqlens[:-1].long(), lengths, output_size=self.total)
        return torch.arange(self.total, device=device) - starts

    def grid_positions(self) -> torch.Tensor:
        """(T,) row of every packed token in a (B · max_seqlen) right-padded grid (varlen layouts)."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
        batch_of = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths,
                                           output_size=self.total)
        return batch_of * self.max_seqlen + self.sequence_positions(lengths.device)

    def first_tokens(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, ...) each sequence's position 0, as HF reads it: where it is padding, its computed state when the
        layout computed it (``first_token_queries``), else 0."""
        if self.packed_shape is not None:
            return packed.index_select(0, self.cu_seqlens[:-1].long())
        if self.indices is not None:
            return self.unpack(packed)[:, 0]
        return packed.view(self.batch, self.seqlen, *packed.shape[1:])[:, 0]

    def last_tokens(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, ...) each sequence's last real token (GPT-2 sequence classification pools it)."""
        if self.cu_seqlens is None:
            return packed.view(self.batch, self.seqlen, *packed.shape[1:])[:, -1]
        return packed.index_select(0, (self.cu_seqlens[1:] - 1).long())
