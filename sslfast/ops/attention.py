"""Fused masked attention (padding, causal, variable-length). PLACEHOLDER: reference paths only.

The Triton FlashAttention-style kernels land with the attention issue; until then every backend
request resolves to the plain PyTorch path below, which defines the semantics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["attention", "varlen_attention", "unpad", "pad", "attention_reference"]


def attention_reference(q, k, v, *, attention_mask=None, causal=False, scale=None):
    """softmax(QKᵀ·scale + mask)V in the inputs' dtype; fully masked rows give 0. q (B,H,Sq,D), k/v (B,H,Sk,D)."""
    b, h, sq, d = q.shape
    sk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    keep = torch.ones(b, 1, sq, sk, dtype=torch.bool, device=q.device)
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, :]
    if causal:  # aligned bottom-right, as flash-attention
        rows = torch.arange(sq, device=q.device)[:, None] + (sk - sq)
        keep = keep & (torch.arange(sk, device=q.device)[None, :] <= rows)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Sq, Sk)
    scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    return probs @ v


def attention(q, k, v, *, attention_mask=None, causal=False, dropout_p=0.0, scale=None, backend="auto"):
    """Attention over (B, H, S, D) tensors with a (B, Sk) key-padding mask (True/1 = real token)."""
    if dropout_p:
        raise NotImplementedError("attention: dropout lands with the fused attention kernels")
    return attention_reference(q, k, v, attention_mask=attention_mask, causal=causal, scale=scale)


def unpad(x: torch.Tensor, attention_mask: torch.Tensor):
    """(B, S, ...) + mask (B, S) → packed (total, ...), indices (total,), cu_seqlens (B+1,) int32, max_seqlen."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    return x.flatten(0, 1)[indices], indices, cu_seqlens, max_seqlen


def pad(x: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad`: packed (total, ...) → (batch, seqlen, ...) with zeros at padding."""
    out = x.new_zeros(batch * seqlen, *x.shape[1:])
    out[indices] = x
    return out.view(batch, seqlen, *x.shape[1:])


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                     dropout_p=0.0, scale=None, backend="auto"):
    """Attention over packed (total, H, D) sequences delimited by int32 cumulative lengths."""
    if dropout_p:
        raise NotImplementedError("varlen_attention: dropout lands with the fused attention kernels")
    out = torch.empty_like(q)
    for i in range(cu_seqlens_q.numel() - 1):
        qs, qe = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        ks, ke = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        qi = q[qs:qe].transpose(0, 1)[None]  # (1, H, Sq, D)
        ki, vi = k[ks:ke].transpose(0, 1)[None], v[ks:ke].transpose(0, 1)[None]
        out[qs:qe] = attention_reference(qi, ki, vi, causal=causal, scale=scale)[0].transpose(0, 1)
    return out
