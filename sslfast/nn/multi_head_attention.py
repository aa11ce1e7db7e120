"""Multi-head attention module on sslfast's fused attention ops (self- and cross-attention, padded or packed)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.ops.attention import attention, varlen_attention


class MultiHeadAttention(nn.Module):
    """Multi-head attention with one fused QKV projection and an output projection.

    Args:
        embed_dim: model width E (queries and outputs). num_heads: E must be a multiple of it; the head
            dim E / num_heads must be a multiple of 8 up to 256.
        kv_dim: width of the cross-attention context, if it differs from E (then keys and values get their
            own projection ``kv_proj``; otherwise ``in_proj`` (3E, E) holds q, k, v rows, as
            ``torch.nn.MultiheadAttention.in_proj_weight``).
        dropout: attention-probability dropout, applied in training mode. causal: default causal masking.

    ``forward(x, context=None, *, attention_mask=None, causal=None)``: x (B, Sq, E); context (B, Sk, kv_dim)
    for cross-attention (None: self-attention); attention_mask (B, Sk) bool/0-1, True = real key.
    ``forward_packed(x, cu_seqlens, max_seqlen, *, causal=None)``: self-attention over packed (T, E) tokens.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, kv_dim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.causal = dropout, causal
        self.separate_kv = kv_dim is not None and kv_dim != embed_dim
        if self.separate_kv:
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.kv_proj = nn.Linear(kv_dim, 2 * embed_dim, bias=bias)
        else:
            self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, S, E) -> (B, H, S, hd)
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _project(self, x, context):
        """q (..., E), k (..., E), v (..., E)."""
        e = self.embed_dim
        if self.separate_kv:
            if context is None:
                raise ValueError("this module has kv_dim != embed_dim: it needs a context (cross-attention)")
            return (self.q_proj(x), *self.kv_proj(context).chunk(2, dim=-1))
        w, b = self.in_proj.weight, self.in_proj.bias
        if context is None:  # one GEMM for q, k and v
            return F.linear(x, w, b).chunk(3, dim=-1)
        q = F.linear(x, w[:e], None if b is None else b[:e])
        k, v = F.linear(context, w[e:], None if b is None else b[e:]).chunk(2, dim=-1)
        return q, k, v

    def forward(self, x, context=None, *, attention_mask=None, causal=None):
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (B, S, {self.embed_dim}), got {tuple(x.shape)}")
        q, k, v = (self._heads(t) for t in self._project(x, context))  # (B, H, S, hd)
        out = attention(q, k, v, attention_mask=attention_mask, causal=self.causal if causal is None else causal,
                        dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, Sq, E)

    def forward_packed(self, x, cu_seqlens, max_seqlen, *, causal=None):
        if x.dim() != 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be packed (T, {self.embed_dim}), got {tuple(x.shape)}")
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in self._project(x, None))  # (T, H, hd)
        out = varlen_attention(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                               causal=self.causal if causal is None else causal,
                               dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.flatten(1))  # (T, E)
