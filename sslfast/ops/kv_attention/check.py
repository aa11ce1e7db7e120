"""The cache-attention kernels' self-check and their registry entry."""
from __future__ import annotations

import torch

from sslfast._dtypes import DTYPES, dtype_name
from sslfast.ops._registry import OpSpec, Variant, register
from sslfast.ops.kv_attention.api import (
    attention_with_kvcache,
    kvcache_attention_reference,
)
from sslfast.testing import worst_error

__all__ = ["SPEC", "check_kvcache"]


def variants(auto_only: bool) -> list:
    return [Variant("attention_with_kvcache", dtype, f"d{d}", flags) for dtype in ("bf16", "fp16", "fp32")
            for d in (64, 128) for flags in ("causal", "full")]


def variant_of(*, dtype: torch.dtype, head_dim: int, causal: bool) -> Variant:
    """One kernel per head dim and causal flag."""
    return Variant("attention_with_kvcache", dtype_name(dtype), f"d{head_dim}", "causal" if causal else "full")


def check_kvcache(v: Variant, device, big: bool):
    """Decode and multi-token appends with grouped heads, an empty row, and shapes that give one split of the
    cache and several (the split count is a compile-time constant too)."""
    dtype, d, causal = DTYPES[v.dtype], int(v.size[1:]), v.flags != "full"
    # (16-position cache: one split on any machine, every BLOCK_N being >= 16; 300 positions over two rows: several
    # splits whose partial results the combine kernel merges)
    shapes = [(8, 1, 16, 16, 2048)] if big else [(3, 2, 4, 2, 77), (2, 1, 2, 1, 300), (3, 1, 4, 2, 16)]
    pairs = []
    for i, (b, sq, h, hkv, cap) in enumerate(shapes):
        pairs += _kvcache_pairs(dtype, d, causal, b, sq, h, hkv, cap, torch.device(device), seed=5 + i)
    return worst_error(pairs, floor=1e-4 if dtype != torch.float32 else 1e-5)


def _kvcache_pairs(dtype, d, causal, b, sq, h, hkv, cap, device, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, cap - sq + 1, (b,), generator=gen, dtype=torch.int32)
    lengths[0] = 0
    kc, vc = (torch.randn(b, cap, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    q = torch.randn(b, sq, h, d, generator=gen).to(device, dtype)
    kn, vn = (torch.randn(b, sq, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    lengths = lengths.to(device)
    rows, cols = torch.arange(b, device=device)[:, None], lengths.long()[:, None] + torch.arange(sq, device=device)
    kf, vf = kc.clone(), vc.clone()
    kf[rows, cols], vf[rows, cols] = kn, vn
    out = attention_with_kvcache(q, kc, vc, lengths, kn, vn, causal=causal, backend="triton")
    ref = kvcache_attention_reference(q.double(), kf.double(), vf.double(), lengths + sq, causal=causal)
    base = kvcache_attention_reference(q, kf, vf, lengths + sq, causal=causal)
    return [(out, base, ref)]


SPEC = register(OpSpec("attention_with_kvcache", variants, variant_of, check_kvcache,
                       kernel_files=("kv_attention.py", "constants.py")))
