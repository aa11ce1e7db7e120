"""FlashAttention-style forward: online softmax over key tiles, the S×S scores never in memory.

One program per (query tile, batch·head). Each batch entry is described by a row of the sequence table
(``flash_attention_common``), so one kernel serves padded and packed varlen batches. Key tiles outside the
sequence's key window [k_lo, k_hi) or above the causal diagonal are never loaded; key tiles are aligned to
their block size, and tiles strictly inside the window and below the diagonal run without masking. An
optional (B, Sk) key mask covers padding with holes. Batch and sequence bases are 64-bit; offsets inside a
batch entry are 32-bit (the launcher checks they fit). Statistics are fp32; the natural-log log-sum-exp of
every query row is saved for the backward (+inf for a row that sees no key, whose output is 0). Dropout
zeroes probabilities with a counter-based Philox draw, so the backward regenerates the same mask.
"""
import triton
import triton.language as tl

from .constants import LOG2E, head_dim_block
from .flash_attention_common import (
    AOT_ARCHS,
    AOT_CASES,
    PHILOX_ROUNDS,
    dropout_keep,
    key_tile_bounds,
    load_sequence,
    query_tile_program,
    row_pointer,
    runtime_values,
)
from .launch import INTERPRETED_TILE, Precision, Tile, signature, split_options, strides


@triton.jit
def _attend_key_tiles(acc, l_i, m_i, q, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d,
                      stride_kt, stride_vt, lo, hi, k_lo, k_hi, diag, qk_scale, drop_threshold,
                      EDGE: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
                      DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                      INPUT_PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr):
    """Online-softmax update of (acc, l_i, m_i) with key tiles starting at lo, lo+BN, ... < hi (lo a
    multiple of BN). EDGE tiles may cross the key window or the causal diagonal and are masked element-wise."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BN,) key positions
        col_ok = (cols >= k_lo) & (cols < k_hi)
        k_ptrs = k_base + cols[None, :] * stride_kt + offs_d[:, None]
        if EDGE:
            kt = tl.load(k_ptrs, mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # (BD, BN)
        else:
            kt = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
        s = tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale  # (BM, BN) fp32, log2 domain
        if EDGE or HAS_KEY_MASK:
            keep = col_ok[None, :] & (offs_m[:, None] >= 0)  # (BM, BN)
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + diag)
            if HAS_KEY_MASK:
                real = tl.load(mask_row + cols, mask=col_ok, other=0) != 0
                keep = keep & real[None, :]
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet stay exactly 0
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])  # (BM, BN)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:  # the normalizer sums every probability; only the kept ones reach the output
            p = tl.where(dropout_keep(seed, bh, offs_m, start_n, drop_threshold, BLOCK_N, N_ROUNDS), p, 0.0)
        v_ptrs = v_base + cols[:, None] * stride_vt + offs_d[None, :]
        if EDGE:
            v = tl.load(v_ptrs, mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        else:
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def flash_attention_fwd_kernel(
    Q, K, V, O, LSE, SEQS, KEY_MASK, SEED,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh,
    stride_lb, stride_lt, stride_lh, stride_mb,
    num_heads, scale, drop_threshold, drop_scale,
    CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    pid_m, h, b, bh = query_tile_program(num_heads, CAUSAL)
    q_start, q_len, k_start, k_len, k_lo, k_hi, diag = load_sequence(SEQS, b)
    m_lo = pid_m * BLOCK_M
    if m_lo >= q_len:
        return
    offs_m = m_lo + tl.arange(0, BLOCK_M)  # (BM,) query positions in the sequence
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    q = tl.load(row_pointer(Q, b, h, q_start, stride_qb, stride_qh, stride_qt) + offs_m[:, None] * stride_qt
                + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    qk_scale = scale * LOG2E  # exp2 domain
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)

    first_lo, first_hi, full_lo, full_end, hi = key_tile_bounds(k_lo, k_hi, m_lo, diag, CAUSAL, BLOCK_M, BLOCK_N)
    k_base = row_pointer(K, b, h, k_start, stride_kb, stride_kh, stride_kt)
    v_base = row_pointer(V, b, h, k_start, stride_vb, stride_vh, stride_vt)
    mask_row = KEY_MASK + b.to(tl.int64) * stride_mb
    acc, l_i, m_i = _attend_key_tiles(
        acc, l_i, m_i, q, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d, stride_kt, stride_vt,
        first_lo, first_hi, k_lo, k_hi, diag, qk_scale, drop_threshold, True, CAUSAL,
        HAS_KEY_MASK, DROPOUT, HEAD_DIM, BLOCK_N, INPUT_PRECISION, PHILOX_ROUNDS)
    acc, l_i, m_i = _attend_key_tiles(
        acc, l_i, m_i, q, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d, stride_kt, stride_vt,
        full_lo, full_end, k_lo, k_hi, diag, qk_scale, drop_threshold, False, CAUSAL, HAS_KEY_MASK, DROPOUT,
        HEAD_DIM, BLOCK_N, INPUT_PRECISION, PHILOX_ROUNDS)
    acc, l_i, m_i = _attend_key_tiles(
        acc, l_i, m_i, q, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d, stride_kt, stride_vt,
        full_end, hi, k_lo, k_hi, diag, qk_scale, drop_threshold, True, CAUSAL, HAS_KEY_MASK, DROPOUT,
        HEAD_DIM, BLOCK_N, INPUT_PRECISION, PHILOX_ROUNDS)

    seen = l_i > 0.0
    out = acc * (drop_scale / tl.where(seen, l_i, 1.0))[:, None]
    tl.store(row_pointer(O, b, h, q_start, stride_ob, stride_oh, stride_ot) + offs_m[:, None] * stride_ot
             + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) / LOG2E, float("inf"))
    tl.store(row_pointer(LSE, b, h, q_start, stride_lb, stride_lh, stride_lt) + offs_m * stride_lt, lse, mask=row_ok)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) by (input precision, head-dim block, dropout): the largest tiles
# that compile without register spills on sm_90, the Hopper GPUs sslfast targets (``python -m sslfast.aot``
# checks every entry; Ampere is not tuned). Picked by register counts only: GPU timings are pending.
# 16-bit inputs run their dots on tensor cores; fp32 inputs take exact (IEEE) products on FMA units.
FORWARD_CONFIGS = {
    (Precision.HALF, 16, False): Tile(128, 64, 4, 3), (Precision.HALF, 16, True): Tile(128, 64, 8, 3),
    (Precision.HALF, 32, False): Tile(128, 64, 4, 3), (Precision.HALF, 32, True): Tile(128, 64, 8, 3),
    (Precision.HALF, 64, False): Tile(128, 64, 8, 3), (Precision.HALF, 64, True): Tile(128, 64, 8, 3),
    (Precision.HALF, 128, False): Tile(128, 64, 8, 3), (Precision.HALF, 128, True): Tile(128, 32, 8, 3),
    (Precision.HALF, 256, False): Tile(128, 32, 8, 2), (Precision.HALF, 256, True): Tile(128, 32, 8, 2),
    (Precision.SINGLE, 16, False): Tile(64, 32, 8, 2), (Precision.SINGLE, 16, True): Tile(64, 32, 8, 2),
    (Precision.SINGLE, 32, False): Tile(64, 32, 8, 2), (Precision.SINGLE, 32, True): Tile(64, 32, 8, 2),
    (Precision.SINGLE, 64, False): Tile(64, 16, 8, 2), (Precision.SINGLE, 64, True): Tile(64, 16, 8, 2),
    (Precision.SINGLE, 128, False): Tile(16, 16, 4, 1), (Precision.SINGLE, 128, True): Tile(16, 16, 4, 1),
    (Precision.SINGLE, 256, False): Tile(16, 16, 4, 1), (Precision.SINGLE, 256, True): Tile(16, 16, 4, 1),
}


def forward_config(block_d: int, dtype: str, dropout: bool, interpreted: bool) -> dict:
    """Tile sizes and launch options for a head-dim block (a power of two), input dtype and dropout."""
    if interpreted:
        return INTERPRETED_TILE.launch()
    return FORWARD_CONFIGS[(Precision.of(dtype), block_d, dropout)].launch()


def aot_configs():
    """The forward configurations the launcher picks on a GPU, for the sm_90 compile check (attention is not
    tuned for sm_80): each table entry with its lightest and heaviest flags (plain, causal + key mask; dropout
    adds the Philox draws)."""
    configs = []
    for dtype, head_dim in AOT_CASES:
        block_d = head_dim_block(head_dim)
        ptr = f"*{dtype}"
        sig = signature(
            {"Q": ptr, "K": ptr, "V": ptr, "O": ptr, "LSE": "*fp32", "SEQS": "*i32", "KEY_MASK": "*u8",
             "SEED": "*i64"},
            strides("q", "k", "v", "o", "l") + ("stride_mb", "num_heads", "drop_threshold"), ("scale", "drop_scale"))
        for causal, masked, dropout in ((False, False, False), (True, True, False), (False, False, True),
                                        (True, True, True)):
            launch, options = split_options(forward_config(block_d, dtype, dropout, interpreted=False))
            tag = f"{'_causal_mask' if causal else ''}{'_dropout' if dropout else ''}"
            configs.append(dict(
                kernel=flash_attention_fwd_kernel, name=f"flash_attention_fwd_{dtype}_d{head_dim}{tag}", signature=sig,
                constexprs=dict(CAUSAL=causal, HAS_KEY_MASK=masked, DROPOUT=dropout, HEAD_DIM=head_dim,
                                BLOCK_D=block_d, INPUT_PRECISION="ieee", **launch),
                options=options, archs=AOT_ARCHS, values=runtime_values(masked, dropout)))
    return configs
