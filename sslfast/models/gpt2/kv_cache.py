"""A preallocated key/value cache for decoding: per layer (B, capacity, H, D) keys and values, a per-sequence
fill length, O(1) appends (no ``torch.cat`` per step), and conversion from / to transformers' cache formats."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["KVCache", "is_empty"]


class KVCache:
    """Keys and values of every layer for a batch of sequences of different lengths.

    ``lengths`` (B,) int32 counts the filled positions of each row; only real tokens are stored (a
    left-padded prompt takes as many positions as it has tokens). Rows grow by doubling when full."""

    def __init__(self, num_layers: int, batch: int, num_heads: int, head_dim: int, capacity: int, *,
                 dtype: torch.dtype, device):
        shape = (batch, max(1, capacity), num_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = torch.zeros(batch, dtype=torch.int32, device=device)
        self.max_length = 0  # host copy of lengths.max(): capacity checks need no sync

    @property
    def batch(self) -> int:
        return self.lengths.shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[1]

    def get_seq_length(self, layer: int = 0) -> int:
        """The longest filled row (transformers' ``Cache.get_seq_length``)."""
        return self.max_length

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more positions in every row (doubling, so appends stay amortised O(1))."""
        needed = self.max_length + extra
        if needed <= self.capacity:
            return
        size = max(needed, 2 * self.capacity)
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                grown = t.new_zeros(t.shape[0], size, *t.shape[2:])
                grown[:, :t.shape[1]] = t
                store[i] = grown

    def write_packed(self, layer: int, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor,
                     positions: torch.Tensor) -> None:
        """Store packed tokens (T, H, D) at (row, position) pairs (T,) of ``layer`` (a prompt's prefill)."""
        self.keys[layer][rows, positions] = k
        self.values[layer][rows, positions] = v

    def advance(self, counts) -> None:
        """Count ``counts`` (an int, or (B,) per row, with its host maximum known) new positions as filled."""
        if isinstance(counts, int):
            self.lengths += counts
            self.max_length += counts
        else:
            counts, host_max = counts
            self.lengths += counts.to(self.lengths.dtype)
            self.max_length = int(host_max)

    def appended(self, count: int) -> None:
        """Record ``count`` new positions in every row, written and counted in ``lengths`` by a kernel that
        advanced it in place (only the host maximum is left to update)."""
        self.max_length += count

    def select(self, index: torch.Tensor) -> "KVCache":
        """Rows ``index`` (e.g. ``repeat_interleave`` for several samples per prompt), in place; returns self."""
        self.keys = [t.index_select(0, index) for t in self.keys]
        self.values = [t.index_select(0, index) for t in self.values]
        self.lengths = self.lengths.index_select(0, index)
        self.max_length = int(self.lengths.max()) if self.lengths.numel() else 0
        return self

    reorder_cache = select

    # --- transformers' formats -------------------------------------------------------------------------
    @classmethod
    def from_transformers(cls, past, attention_mask: Optional[torch.Tensor], extra: int) -> "KVCache":
        """From a legacy tuple of per-layer (k, v) (B, H, P, D) or a transformers ``Cache``: the positions whose
        ``attention_mask`` column is 1 (all, without a mask) are kept, in order, ``extra`` positions of room."""
        layers = _legacy_layers(past)
        b, h, p, d = layers[0][0].shape
        if attention_mask is not None and attention_mask.shape[1] != p + extra:
            raise ValueError(f"with a transformers cache of {p} positions and {extra} new tokens, attention_mask must "
                             f"cover both: (B, {p + extra}), got {tuple(attention_mask.shape)}")
        real = torch.ones(b, p, dtype=torch.bool, device=layers[0][0].device) if attention_mask is None else \
            attention_mask[:, :p].bool()
        lengths = real.sum(1)
        cache = cls(len(layers), b, h, d, int(lengths.max()) + extra, dtype=layers[0][0].dtype,
                    device=layers[0][0].device)
        rows, cols = torch.nonzero(real, as_tuple=True)
        positions = torch.cumsum(real, 1)[rows, cols] - 1
        for i, (k, v) in enumerate(layers):
            cache.write_packed(i, k.transpose(1, 2)[rows, cols], v.transpose(1, 2)[rows, cols], rows, positions)
        cache.advance((lengths.to(torch.int32), int(lengths.max())))
        return cache

    def to_transformers(self, attention_mask: Optional[torch.Tensor], like) -> object:
        """Back to ``like``'s format (legacy tuple or a transformers ``DynamicCache``), laid out along
        ``attention_mask``'s columns: zeros at padding positions, as a transformers model would hold them."""
        b = self.batch
        width = attention_mask.shape[1] if attention_mask is not None else self.max_length
        real = torch.ones(b, width, dtype=torch.bool, device=self.lengths.device) if attention_mask is None else \
            attention_mask.bool()
        rows, cols = torch.nonzero(real, as_tuple=True)
        positions = torch.cumsum(real, 1)[rows, cols] - 1
        layers = []
        for k, v in zip(self.keys, self.values):
            kp = k.new_zeros(b, width, *k.shape[2:])
            vp = v.new_zeros(b, width, *v.shape[2:])
            kp[rows, cols] = k[rows, positions]
            vp[rows, cols] = v[rows, positions]
            layers.append((kp.transpose(1, 2).contiguous(), vp.transpose(1, 2).contiguous()))
        if isinstance(like, (tuple, list)):
            return tuple(layers)
        # a transformers Cache object: extended in place with the new columns, as transformers' models do
        new = width - like.get_seq_length()
        for i, (k, v) in enumerate(layers):
            like.update(k[:, :, width - new:], v[:, :, width - new:], i)
        return like


def is_empty(past) -> bool:
    """A transformers cache (or legacy tuple) that holds no position yet."""
    if isinstance(past, (tuple, list)):
        return len(past) == 0 or past[0][0] is None or past[0][0].shape[-2] == 0
    if hasattr(past, "get_seq_length"):
        return past.get_seq_length() == 0
    return False


def _legacy_layers(past) -> list:
    if isinstance(past, (tuple, list)):
        return [(k, v) for k, v in past]
    if hasattr(past, "layers"):  # transformers' Cache objects
        return [(layer.keys, layer.values) for layer in past.layers]
    if hasattr(past, "to_legacy_cache"):
        return list(past.to_legacy_cache())
    raise TypeError(f"past_key_values: expected sslfast.models.KVCache, a tuple of (key, value) per layer or a "
                    f"transformers Cache, got {type(past).__name__}")
