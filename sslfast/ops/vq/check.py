"""The VQ kernels' self-checks (nearest-code lookup, codebook statistics) and their registry entries."""
from __future__ import annotations

import math

import torch

from sslfast._dtypes import DTYPES, dtype_name
from sslfast.ops._registry import OpSpec, Variant, register
from sslfast.ops.vq.api import vq_codebook_stats, vq_lookup
from sslfast.testing import worst_error

__all__ = ["LOOKUP_SPEC", "STATS_SPEC", "check_vq_lookup", "check_vq_stats"]


def lookup_variants(auto_only: bool) -> list:
    return [Variant("vq_lookup", dtype, size) for dtype in ("bf16", "fp16", "fp32")
            for size in ("d16", "d32", "d64", "d128", "d64loop")]


def lookup_variant_of(*, dtype: torch.dtype, dim: int) -> Variant:
    """One kernel per feature block; widths beyond one block share the looped kernel."""
    from sslfast.kernels.vq_lookup import lookup_block_d  # triton is optional
    block_d, one_block = lookup_block_d(dim)
    return Variant("vq_lookup", dtype_name(dtype), f"d{block_d}" if one_block else "d64loop")


def stats_variants(auto_only: bool) -> list:
    return [Variant("vq_codebook_stats", dtype, f"d{block}") for dtype in ("bf16", "fp16", "fp32")
            for block in (16, 32, 64)]


def stats_variant_of(*, dtype: torch.dtype, dim: int) -> Variant:
    """One kernel per feature block."""
    from sslfast.kernels.vq_lookup import stats_launch_config  # triton is optional
    return Variant("vq_codebook_stats", dtype_name(dtype), f"d{stats_launch_config(dim, False)['BLOCK_D']}")


def check_vq_lookup(v: Variant, device, big: bool):
    """Widths that fill the feature block and that leave a masked tail (a width divisible by 16 is another
    specialisation); beyond one block, the looped kernel."""
    dtype = DTYPES[v.dtype]
    block = 192 if v.size.endswith("loop") else int(v.size[1:])
    n, k = (65537, 1031) if big else (257, 67)
    gen = torch.Generator().manual_seed(1)
    worst = (0.0, 1.0)
    for d in (block, block - 8):
        x, c = torch.randn(n, d, generator=gen).to(device, dtype), torch.randn(k, d, generator=gen).to(device, dtype)
        idx, dist = vq_lookup(x, c, backend="triton")
        exact = torch.cdist(x.double(), c.double()).square()  # (N, K)
        best = exact.min(1).values
        chosen = exact.gather(1, idx[:, None]).squeeze(1)
        base = (x.float() @ c.float().t() * -2 + c.float().square().sum(1)).argmin(1)
        base_gap = (exact.gather(1, base[:, None]).squeeze(1) - best).abs().max().item()
        error, allowed = (chosen - best).abs().max().item(), 2 * base_gap + 1e-3 * max(1.0, best.max().item())
        if not math.isfinite(error) or error / allowed > worst[0] / worst[1]:
            worst = (error, allowed)
    return worst


def check_vq_stats(v: Variant, device, big: bool):
    """A width the feature block does not divide and one divisible by 16 (64: also a looped row)."""
    dtype, block_d = DTYPES[v.dtype], int(v.size[1:])
    n, k = (65537, 1031) if big else (257, 67)
    gen = torch.Generator().manual_seed(2)
    pairs = []
    for d in {16: (8, 16), 32: (24, 32), 64: (200, 64)}[block_d]:
        x = torch.randn(n, d, generator=gen).to(device, dtype)
        idx = torch.randint(0, k, (n,), generator=gen).to(device)
        counts, sums = vq_codebook_stats(x, idx, k, backend="triton")
        ones = torch.ones(n, dtype=torch.float64, device=device)
        ref_counts = torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, idx, ones)
        ref_sums = torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, idx, x.double())
        base_sums = torch.zeros(k, d, dtype=torch.float32, device=device).index_add_(0, idx, x.float())
        pairs += [(counts, ref_counts, ref_counts), (sums, base_sums, ref_sums)]
    return worst_error(pairs, floor=1e-4)


LOOKUP_SPEC = register(OpSpec("vq_lookup", lookup_variants, lookup_variant_of, check_vq_lookup,
                              kernel_files=("vq_lookup.py", "constants.py")))
STATS_SPEC = register(OpSpec("vq_codebook_stats", stats_variants, stats_variant_of, check_vq_stats,
                             kernel_files=("vq_lookup.py", "constants.py")))
