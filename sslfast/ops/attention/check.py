"""The attention kernels' self-check and their registry entry: every kernel a variant's calls can compile, against
float64, within twice the same-dtype PyTorch error."""
from __future__ import annotations

import torch

from sslfast._dtypes import DTYPES, dtype_name
from sslfast.ops._philox import attention_dropout_keep, effective_dropout_p
from sslfast.ops._registry import OpSpec, Variant, register
from sslfast.ops.attention.api import attention_reference, varlen_attention_reference
from sslfast.ops.attention.flash import (
    flash_attention,
    packed_sequence_table,
    padded_sequence_table,
)
from sslfast.testing import fwd_bwd, worst_error

__all__ = ["SPEC", "check_attention"]


def variants(auto_only: bool) -> list:
    """The common head dims 64 and 128 (any other is checked the first time it runs); fp32 goes to SDPA under
    ``auto``."""
    return [Variant("attention", dtype, f"d{d}", flags) for dtype in ("bf16", "fp16", "fp32") for d in (64, 128)
            if not (auto_only and dtype == "fp32") for flags in ("full", "causal", "full+dropout", "causal+dropout")]


def variant_of(*, dtype: torch.dtype, head_dim: int, causal: bool, dropout: bool) -> Variant:
    """One kernel per head dim, causal flag and dropout flag."""
    return Variant("attention", dtype_name(dtype), f"d{head_dim}",
                   ("causal" if causal else "full") + ("+dropout" if dropout else ""))


def check_attention(v: Variant, device, big: bool):
    """Every kernel the variant's calls can compile: padded with a key mask (holes, right padding, an empty
    row), padded without one, packed (varlen, without dropout), up to head-dim block 64 both backward paths
    (atomic dQ, the default, and the deterministic dQ pass); sequence lengths that are and are not multiples
    of 16 (Triton specialises strides divisible by 16)."""
    from sslfast.kernels.constants import head_dim_block
    from sslfast.kernels.flash_attention_backward import dq_by_atomics
    dtype, d = DTYPES[v.dtype], int(v.size[1:])
    causal, dropout = "causal" in v.flags, "dropout" in v.flags
    p, seed = (0.2, 12345) if dropout else (0.0, None)
    seed_t = torch.tensor([seed], device=device) if dropout else None
    backward_paths = (False, True) if dq_by_atomics(head_dim_block(d), False) else (False,)
    gen = torch.Generator(device="cpu").manual_seed(0)
    pairs = []
    for b, h, sq, sk in [(2, 4, 509, 517)] if big else [(2, 2, 37, 45), (3, 2, 32, 48)]:
        q, k, vv = (torch.randn(b, h, s, d, generator=gen).to(device, dtype) for s in (sq, sk, sk))
        mask = torch.ones(b, sk, dtype=torch.bool)
        mask[0, sk // 3: sk // 3 + 5] = False  # a hole
        mask[1, sk - 7:] = False  # right padding
        if b > 2:
            mask[2] = False  # a row with no key: 0 output, 0 gradient
        mask = mask.to(device)
        grad_out = torch.randn(b, h, sq, d, generator=gen).to(device, dtype)
        for key_mask, deterministic in [(m, det) for m in (mask, None) for det in backward_paths]:
            pairs += _padded_attention_pairs(q, k, vv, grad_out, key_mask, causal, p, seed, seed_t, deterministic)
        if not dropout and b == 2:
            pairs += _packed_attention_pairs(q, k, vv, grad_out, mask, causal)
    return worst_error(pairs, floor=1e-4 if dtype != torch.float32 else 1e-5)


def _padded_attention_pairs(q, k, vv, grad_out, key_mask, causal, p, seed, seed_t, deterministic):
    b, h, sq, _ = q.shape
    sk, device = k.shape[2], q.device
    keep = attention_dropout_keep(seed, p, range(b), h, sq, sk).to(device) if p > 0 else None
    seqs = padded_sequence_table(b, sq, sk, key_mask, device)
    ours = fwd_bwd(lambda *t: flash_attention(
        *t, seqs, key_mask=None if key_mask is None else key_mask.view(torch.uint8), max_seqlen_q=sq,
        max_seqlen_k=sk, packed=False, causal=causal, dropout_p=p, seed=seed_t, deterministic=deterministic)[0],
        (q, k, vv), grad_out)
    kw = dict(attention_mask=key_mask, causal=causal, dropout_mask=keep, dropout_p=effective_dropout_p(p))
    ref = fwd_bwd(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, vv)], grad_out.double())
    base = fwd_bwd(lambda *t: attention_reference(*t, **kw), (q, k, vv), grad_out)
    return list(zip(ours, base, ref))


def _packed_attention_pairs(q, k, vv, grad_out, mask, causal):
    """The padded batch's real tokens packed (T, H, D) with lengths from ``mask``'s row sums (one empty-free
    varlen batch), against per-sequence references."""
    b, h, sq, d = q.shape
    len_k = mask.sum(1).to(torch.int32)  # (B,)
    len_q = torch.minimum(len_k, torch.full_like(len_k, sq)) if causal else torch.full_like(len_k, sq)
    cu_q, cu_k = (torch.nn.functional.pad(n.cumsum(0, dtype=torch.int32), (1, 0)) for n in (len_q, len_k))
    lq, lk = len_q.tolist(), len_k.tolist()

    def pack(t, lengths):  # (B, H, S, D) -> (T, H, D): the first lengths[i] tokens of row i
        return torch.cat([t[i, :, :n].transpose(0, 1) for i, n in enumerate(lengths)])

    pq, pk, pv, pg = pack(q, lq), pack(k, lk), pack(vv, lk), pack(grad_out, lq)
    seqs = packed_sequence_table(cu_q, cu_k)
    ours = fwd_bwd(lambda *t: flash_attention(*t, seqs, max_seqlen_q=max(lq), max_seqlen_k=max(lk), packed=True,
                                             causal=causal)[0], (pq, pk, pv), pg)

    def reference(*t):
        return varlen_attention_reference(*t, cu_q, cu_k, causal=causal)

    ref = fwd_bwd(reference, [t.double() for t in (pq, pk, pv)], pg.double())
    base = fwd_bwd(reference, (pq, pk, pv), pg)
    return list(zip(ours, base, ref))


SPEC = register(OpSpec("attention", variants, variant_of, check_attention,
                       kernel_files=("flash_attention.py", "flash_attention_backward.py", "flash_attention_common.py",
                                     "constants.py")))
