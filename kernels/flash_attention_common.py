"""Pieces shared by the FlashAttention forward and backward kernels: the sequence table and dropout.

Sequence table: one int32 row of 7 fields per batch entry, so one kernel serves padded (B, H, S, D)
batches and packed varlen (T, H, D) batches alike:

    q_start  token offset of the sequence's queries (cu_seqlens_q[b] packed, 0 padded)
    q_len    query rows the sequence owns (its length packed, Sq padded)
    k_start  token offset of its keys
    k_len    key rows it owns (gradients are written for all of them, zeros where no query looks)
    k_lo     first key position that may be real (keys outside [k_lo, k_hi) are never loaded)
    k_hi     one past the last key position that may be real
    diag     causal alignment: query i sees keys j <= i + diag (Lk - Lq: bottom-right, as flash-attention)

Positions are relative to the sequence's start; dropout draws are keyed by them, so a padded batch and its
packed (varlen) form drop the same probabilities.
"""
import triton
import triton.language as tl

SEQUENCE_FIELDS = 7
PHILOX_ROUNDS = tl.constexpr(7)  # Philox4x32-7: crush-resistant (Salmon et al., 2011), 30% cheaper than the default 10


@triton.jit
def load_sequence(SEQS, b):
    """The table row of batch entry ``b``: q_start, q_len, k_start, k_len, k_lo, k_hi, diag (int32)."""
    row = SEQS + b * 7
    return (tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3), tl.load(row + 4),
            tl.load(row + 5), tl.load(row + 6))


@triton.jit
def row_pointer(PTR, b, h, row, stride_b, stride_h, stride_t):
    """``PTR`` advanced to token ``row`` of batch entry ``b``, head ``h``: batch and token terms in 64-bit
    arithmetic (a whole tensor, or a packed batch, may exceed 2^31 elements); the head term and offsets inside
    a sequence stay 32-bit, which the launcher checks (32-bit offsets keep registers free)."""
    return PTR + (b.to(tl.int64) * stride_b + h * stride_h + row.to(tl.int64) * stride_t)


@triton.jit
def query_tile_program(num_heads, CAUSAL: tl.constexpr):
    """(query tile, head, batch entry, batch·head) of a program on the (tiles, heads, batch) grid. Causal
    programs take their tiles last first: the last query tiles see the most keys, so they start first."""
    pid_m = tl.program_id(0)
    if CAUSAL:
        pid_m = tl.num_programs(0) - 1 - pid_m
    h = tl.program_id(1)
    b = tl.program_id(2)
    return pid_m, h, b, b * num_heads + h


@triton.jit
def key_tile_bounds(k_lo, k_hi, m_lo, diag, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles (aligned to BLOCK_N) that the query rows [m_lo, m_lo + BLOCK_M) visit, in three ranges:
    [first_lo, first_hi): at most one masked tile holding an unaligned k_lo; [full_lo, full_end): tiles every
    row sees whole, run unmasked; [full_end, hi): masked edge tiles (window end, causal diagonal). Tiles
    outside the key window or wholly above the diagonal are in none of them."""
    hi = k_hi
    full_hi = k_hi
    if CAUSAL:
        hi = tl.minimum(k_hi, m_lo + BLOCK_M + diag)  # past the last row's diagonal: skipped
        full_hi = tl.minimum(k_hi, m_lo + diag + 1)  # up to the first row's diagonal: every key visible
    first_lo = k_lo // BLOCK_N * BLOCK_N
    full_lo = (k_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    full_end = full_lo + tl.maximum(0, full_hi - full_lo) // BLOCK_N * BLOCK_N
    return first_lo, tl.minimum(full_lo, hi), full_lo, full_end, hi


@triton.jit
def dropout_keep(seed, bh, q_pos, k_start, threshold, BLOCK_K: tl.constexpr, N_ROUNDS: tl.constexpr):
    """(len(q_pos), BLOCK_K) keep mask for query positions ``q_pos`` (int32) and keys k_start + [0, BLOCK_K).

    One Philox4x32 call per 8 keys: counter = (key // 8, query, batch·head, 0); key j uses the 16-bit half
    j % 2 (low first) of word (j % 8) // 2 and is kept when it is >= ``threshold`` = round(p·2^16).
    ``k_start`` must be a multiple of 8 (key tiles are aligned to their block size).
    """
    groups = k_start // 8 + tl.arange(0, BLOCK_K // 8)  # (G,)
    c0 = groups[None, :] + q_pos[:, None] * 0  # (BQ, G)
    c1 = q_pos[:, None] + groups[None, :] * 0
    zero = c0 * 0
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, zero + bh, zero, N_ROUNDS)
    # key 8g + 4·b2 + 2·b1 + b0 takes half b0 of word 2·b2 + b1; each join selects the next-lower bit
    lo0, lo1, lo2, lo3 = w0 & 0xFFFF, w1 & 0xFFFF, w2 & 0xFFFF, w3 & 0xFFFF
    hi0, hi1, hi2, hi3 = w0 >> 16, w1 >> 16, w2 >> 16, w3 >> 16
    lows = tl.join(tl.join(lo0, lo2), tl.join(lo1, lo3))  # (BQ, G, 2, 2): [b2, b1]
    highs = tl.join(tl.join(hi0, hi2), tl.join(hi1, hi3))
    bits = tl.reshape(tl.join(lows, highs), (q_pos.shape[0], BLOCK_K))  # (BQ, BK)
    return bits.to(tl.int32) >= threshold


# (dtype, head dim) pairs the AOT check compiles for the forward and backward kernels: every head-dim block in
# bf16 and fp32 (fp16 shares bf16's table), plus a head dim that is not a power of two
AOT_ARCHS = (90,)
AOT_CASES = ([("bf16", d) for d in (16, 32, 64, 80, 128, 256)] + [("fp16", d) for d in (64, 128)]
             + [("fp32", d) for d in (16, 32, 64, 128, 256)])


def runtime_values(masked: bool = False, dropout: bool = False) -> dict:
    """Representative values of the integer arguments whose specialisation is known (``sslfast.aot``): the
    statistics (lse, delta) are contiguous along tokens (stride 1, a constant to Triton); without a key mask
    its stride is passed as 0, without dropout the threshold is 0 (both divisible by 16)."""
    return {"stride_lt": 1, "stride_mb": 16 if masked else 0, "drop_threshold": 17 if dropout else 0}
