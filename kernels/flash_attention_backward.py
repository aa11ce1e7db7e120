"""FlashAttention-style backward: scores recomputed tile by tile from the saved log-sum-exp.

Three kernels over the same sequence table as the forward:
- ``flash_attention_bwd_preprocess_kernel``: delta_i = Σ_d dO·O per query row (fp32).
- ``flash_attention_bwd_dkdv_kernel``: one program per (key tile, batch·head) keeps dK, dV in registers and
  walks the query tiles that see it (causal: from the diagonal on). With ATOMIC_DQ it also adds each
  tile's dQ contribution into an fp32 buffer with atomics (5 matmuls per tile pair, order-dependent sums);
  without, dQ comes from
- ``flash_attention_bwd_dq_kernel``: one program per (query tile, batch·head) walks the key tiles and
  writes dQ once (deterministic: 2 more matmuls per tile pair).
Dropout masks are regenerated from the same Philox counters as the forward.
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
def flash_attention_bwd_preprocess_kernel(
    O, DO, DELTA, SEQS,
    stride_ob, stride_ot, stride_oh, stride_gb, stride_gt, stride_gh, stride_lb, stride_lt, stride_lh,
    num_heads, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, q_len, _, _, _, _, _ = load_sequence(SEQS, b)
    if pid_m * BLOCK_M >= q_len:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    ok = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(row_pointer(O, b, h, q_start, stride_ob, stride_oh, stride_ot) + offs_m[:, None] * stride_ot
                + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    do = tl.load(row_pointer(DO, b, h, q_start, stride_gb, stride_gh, stride_gt) + offs_m[:, None] * stride_gt
                 + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(row_pointer(DELTA, b, h, q_start, stride_lb, stride_lh, stride_lt) + offs_m * stride_lt,
             tl.sum(o * do, axis=1), mask=row_ok)


@triton.jit
def _dkdv_query_tiles(dk, dv, k, v, live, q_base, do_base, lse_base, delta_base, dq_base, seed, bh,
                      n_lo, cols, offs_m, offs_d, stride_qt, stride_gt, stride_lt, stride_dqt, lo, hi, q_len, diag,
                      qk_scale, scale, drop_threshold, drop_scale,
                      EDGE: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
                      DROPOUT: tl.constexpr, ATOMIC_DQ: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                      N_ROUNDS: tl.constexpr):
    """dK, dV (BN, BD) fp32 accumulated over query tiles lo, lo+BM, ... < hi. EDGE tiles are masked
    element-wise (causal diagonal, dead keys); the others see every key of the tile."""
    d_ok = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BM,) query positions
        row_ok = rows < q_len
        # 32-bit offsets inside the sequence (the host checks they fit), 64-bit sequence bases
        qt = tl.load(q_base + rows[None, :] * stride_qt + offs_d[:, None], mask=row_ok[None, :] & d_ok[:, None],
                     other=0.0)  # (BD, BM)
        do = tl.load(do_base + rows[:, None] * stride_gt + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                     other=0.0)  # (BM, BD)
        lse = tl.load(lse_base + rows * stride_lt, mask=row_ok, other=float("inf")) * LOG2E
        delta = tl.load(delta_base + rows * stride_lt, mask=row_ok, other=0.0)
        st = tl.dot(k, qt, input_precision=INPUT_PRECISION)  # (BN, BM) scores, transposed
        pt = tl.exp2(st * qk_scale - lse[None, :])  # rows that see no key have lse = +inf: p = 0
        if EDGE or HAS_KEY_MASK:
            keep = live[:, None] & row_ok[None, :]
            if CAUSAL:
                keep = keep & (cols[:, None] <= rows[None, :] + diag)
            pt = tl.where(keep, pt, 0.0)
        if DROPOUT:
            kept = tl.trans(dropout_keep(seed, bh, rows, n_lo, drop_threshold, BLOCK_N, N_ROUNDS))  # (BN, BM)
            zt = tl.where(kept, pt * drop_scale, 0.0)
        else:
            zt = pt
        dv += tl.dot(zt.to(do.dtype), do, input_precision=INPUT_PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)  # (BN, BM)
        if DROPOUT:
            dpt = tl.where(kept, dpt * drop_scale, 0.0)
        dst = pt * (dpt - delta[None, :])  # (BN, BM) dS transposed
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=INPUT_PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(dst.to(k.dtype)), k, input_precision=INPUT_PRECISION) * scale  # (BM, BD)
            tl.atomic_add(dq_base + rows[:, None] * stride_dqt + offs_d[None, :], dq,
                          mask=row_ok[:, None] & d_ok[None, :], sem="relaxed")
    return dk, dv


@triton.jit
def flash_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DK, DV, SEQS, KEY_MASK, SEED,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_gb, stride_gt, stride_gh, stride_lb, stride_lt, stride_lh, stride_dqb, stride_dqt, stride_dqh,
    stride_dkb, stride_dkt, stride_dkh, stride_dvb, stride_dvt, stride_dvh, stride_mb,
    num_heads, scale, drop_threshold, drop_scale,
    CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, DROPOUT: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    bh = b * num_heads + h  # the dropout counter's batch·head word
    q_start, q_len, k_start, k_len, k_lo, k_hi, diag = load_sequence(SEQS, b)
    n_lo = pid_n * BLOCK_N
    if n_lo >= k_len:
        return
    cols = n_lo + tl.arange(0, BLOCK_N)  # (BN,) key positions
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    owned = cols < k_len
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    if (n_lo < k_hi) & (n_lo + BLOCK_N > k_lo):  # some key of the tile may be real; else dK = dV = 0
        live = (cols >= k_lo) & (cols < k_hi)
        if HAS_KEY_MASK:
            live = live & (tl.load(KEY_MASK + b.to(tl.int64) * stride_mb + cols, mask=live, other=0) != 0)
        k = tl.load(row_pointer(K, b, h, k_start, stride_kb, stride_kh, stride_kt) + cols[:, None] * stride_kt
                    + offs_d[None, :], mask=owned[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        v = tl.load(row_pointer(V, b, h, k_start, stride_vb, stride_vh, stride_vt) + cols[:, None] * stride_vt
                    + offs_d[None, :], mask=owned[:, None] & d_ok[None, :], other=0.0)
        q_base = row_pointer(Q, b, h, q_start, stride_qb, stride_qh, stride_qt)
        do_base = row_pointer(DO, b, h, q_start, stride_gb, stride_gh, stride_gt)
        lse_base = row_pointer(LSE, b, h, q_start, stride_lb, stride_lh, stride_lt)
        delta_base = row_pointer(DELTA, b, h, q_start, stride_lb, stride_lh, stride_lt)
        dq_base = row_pointer(DQ, b, h, q_start, stride_dqb, stride_dqh, stride_dqt)
        seed = 0
        if DROPOUT:
            seed = tl.load(SEED)
        qk_scale = scale * LOG2E
        lo = 0
        if CAUSAL:
            lo = tl.maximum(0, n_lo - diag)  # the first query row that sees key n_lo
        # rows from `full` on see every key of the tile: no element-wise mask needed there
        full = lo
        if CAUSAL:
            full = tl.maximum(lo, n_lo + BLOCK_N - 1 - diag)
        edge_end = q_len  # a tile with dead keys (or a key mask) is masked throughout
        if not HAS_KEY_MASK:
            if (n_lo >= k_lo) & (n_lo + BLOCK_N <= k_hi):
                edge_end = tl.minimum(q_len, lo + (full - lo + BLOCK_M - 1) // BLOCK_M * BLOCK_M)
        dk, dv = _dkdv_query_tiles(
            dk, dv, k, v, live, q_base, do_base, lse_base, delta_base, dq_base, seed, bh, n_lo, cols, offs_m,
            offs_d, stride_qt, stride_gt, stride_lt, stride_dqt, lo, edge_end, q_len, diag, qk_scale, scale,
            drop_threshold, drop_scale, True, CAUSAL, HAS_KEY_MASK, DROPOUT, ATOMIC_DQ, HEAD_DIM, BLOCK_M,
            BLOCK_N, INPUT_PRECISION, PHILOX_ROUNDS)
        dk, dv = _dkdv_query_tiles(
            dk, dv, k, v, live, q_base, do_base, lse_base, delta_base, dq_base, seed, bh, n_lo, cols, offs_m,
            offs_d, stride_qt, stride_gt, stride_lt, stride_dqt, edge_end, q_len, q_len, diag, qk_scale, scale,
            drop_threshold, drop_scale, False, CAUSAL, HAS_KEY_MASK, DROPOUT, ATOMIC_DQ, HEAD_DIM, BLOCK_M,
            BLOCK_N, INPUT_PRECISION, PHILOX_ROUNDS)
    out_ok = owned[:, None] & d_ok[None, :]
    tl.store(row_pointer(DK, b, h, k_start, stride_dkb, stride_dkh, stride_dkt) + cols[:, None] * stride_dkt
             + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=out_ok)
    tl.store(row_pointer(DV, b, h, k_start, stride_dvb, stride_dvh, stride_dvt) + cols[:, None] * stride_dvt
             + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=out_ok)


@triton.jit
def _dq_key_tiles(dq, q, do, lse, delta, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d,
                  stride_kt, stride_vt, lo, hi, k_lo, k_hi, diag, qk_scale, drop_threshold, drop_scale,
                  EDGE: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, DROPOUT: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                  N_ROUNDS: tl.constexpr):
    """dQ (BM, BD) fp32 accumulated over key tiles lo, lo+BN, ... < hi (EDGE tiles masked)."""
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = (cols >= k_lo) & (cols < k_hi)
        if EDGE:
            ld_ok = d_ok[:, None] & col_ok[None, :]
        else:
            ld_ok = d_ok[:, None] & (cols >= 0)[None, :]
        kt = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None], mask=ld_ok, other=0.0)  # (BD, BN)
        vt = tl.load(v_base + cols[None, :] * stride_vt + offs_d[:, None], mask=ld_ok, other=0.0)
        s = tl.dot(q, kt, input_precision=INPUT_PRECISION)  # (BM, BN)
        p = tl.exp2(s * qk_scale - lse[:, None])
        if EDGE or HAS_KEY_MASK:
            keep = col_ok[None, :] & (offs_m[:, None] >= 0)
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + diag)
            if HAS_KEY_MASK:
                keep = keep & (tl.load(mask_row + cols, mask=col_ok, other=0) != 0)[None, :]
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, vt, input_precision=INPUT_PRECISION)  # (BM, BN)
        if DROPOUT:
            dp = tl.where(dropout_keep(seed, bh, offs_m, start_n, drop_threshold, BLOCK_N, N_ROUNDS),
                          dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=INPUT_PRECISION)
    return dq


@triton.jit
def flash_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, SEQS, KEY_MASK, SEED,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_gb, stride_gt, stride_gh, stride_lb, stride_lt, stride_lh, stride_dqb, stride_dqt, stride_dqh,
    stride_mb, num_heads, scale, drop_threshold, drop_scale,
    CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    pid_m, h, b, bh = query_tile_program(num_heads, CAUSAL)
    q_start, q_len, k_start, k_len, k_lo, k_hi, diag = load_sequence(SEQS, b)
    m_lo = pid_m * BLOCK_M
    if m_lo >= q_len:
        return
    offs_m = m_lo + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    ok = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(row_pointer(Q, b, h, q_start, stride_qb, stride_qh, stride_qt) + offs_m[:, None] * stride_qt
                + offs_d[None, :], mask=ok, other=0.0)  # (BM, BD)
    do = tl.load(row_pointer(DO, b, h, q_start, stride_gb, stride_gh, stride_gt) + offs_m[:, None] * stride_gt
                 + offs_d[None, :], mask=ok, other=0.0)
    lse = tl.load(row_pointer(LSE, b, h, q_start, stride_lb, stride_lh, stride_lt) + offs_m * stride_lt, mask=row_ok,
                  other=float("inf")) * LOG2E
    delta = tl.load(row_pointer(DELTA, b, h, q_start, stride_lb, stride_lh, stride_lt) + offs_m * stride_lt,
                    mask=row_ok, other=0.0)
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    qk_scale = scale * LOG2E

    first_lo, first_hi, full_lo, full_end, hi = key_tile_bounds(k_lo, k_hi, m_lo, diag, CAUSAL, BLOCK_M, BLOCK_N)
    k_base = row_pointer(K, b, h, k_start, stride_kb, stride_kh, stride_kt)
    v_base = row_pointer(V, b, h, k_start, stride_vb, stride_vh, stride_vt)
    mask_row = KEY_MASK + b.to(tl.int64) * stride_mb
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    dq = _dq_key_tiles(dq, q, do, lse, delta, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d,
                       stride_kt, stride_vt, first_lo, first_hi, k_lo, k_hi, diag, qk_scale,
                       drop_threshold, drop_scale, True, CAUSAL, HAS_KEY_MASK, DROPOUT, HEAD_DIM, BLOCK_N,
                       INPUT_PRECISION, PHILOX_ROUNDS)
    dq = _dq_key_tiles(dq, q, do, lse, delta, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d,
                       stride_kt, stride_vt, full_lo, full_end, k_lo, k_hi, diag, qk_scale, drop_threshold,
                       drop_scale, False, CAUSAL, HAS_KEY_MASK, DROPOUT, HEAD_DIM, BLOCK_N, INPUT_PRECISION,
                       PHILOX_ROUNDS)
    dq = _dq_key_tiles(dq, q, do, lse, delta, k_base, v_base, mask_row, seed, bh, offs_m, offs_n, offs_d,
                       stride_kt, stride_vt, full_end, hi, k_lo, k_hi, diag, qk_scale, drop_threshold,
                       drop_scale, True, CAUSAL, HAS_KEY_MASK, DROPOUT, HEAD_DIM, BLOCK_N, INPUT_PRECISION,
                       PHILOX_ROUNDS)
    tl.store(row_pointer(DQ, b, h, q_start, stride_dqb, stride_dqh, stride_dqt) + offs_m[:, None] * stride_dqt
             + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=ok)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) by (kernel, input precision, head-dim block, dropout): BLOCK_N is
# the resident key tile of the dK/dV kernels, BLOCK_M the resident query tile of the dQ kernel. Largest tiles
# without register spills on sm_90 (``python -m sslfast.aot`` checks every entry; Ampere is not tuned). dQ by atomics
# only where its extra (BLOCK_M, D) fp32 tile still fits beside dK and dV: head-dim blocks up to 64.
ATOMIC_DQ_MAX_BLOCK_D = 64
BACKWARD_CONFIGS = {
    ("dkdv_atomic", Precision.HALF, 16): (Tile(64, 128, 8, 2), Tile(64, 128, 8, 2)),
    ("dkdv_atomic", Precision.HALF, 32): (Tile(64, 128, 8, 2), Tile(64, 128, 8, 2)),
    ("dkdv_atomic", Precision.HALF, 64): (Tile(64, 128, 8, 2), Tile(32, 128, 8, 2)),
    ("dkdv", Precision.HALF, 16): (Tile(64, 128, 8, 2), Tile(64, 128, 8, 2)),
    ("dkdv", Precision.HALF, 32): (Tile(64, 128, 8, 2), Tile(64, 128, 8, 2)),
    ("dkdv", Precision.HALF, 64): (Tile(64, 128, 8, 2), Tile(32, 128, 8, 2)),
    ("dkdv", Precision.HALF, 128): (Tile(32, 128, 8, 2), Tile(32, 128, 8, 2)),
    ("dkdv", Precision.HALF, 256): (Tile(16, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dq", Precision.HALF, 16): (Tile(128, 64, 8, 2), Tile(128, 64, 8, 2)),
    ("dq", Precision.HALF, 32): (Tile(128, 64, 8, 2), Tile(128, 64, 8, 2)),
    ("dq", Precision.HALF, 64): (Tile(128, 64, 8, 2), Tile(128, 64, 8, 2)),
    ("dq", Precision.HALF, 128): (Tile(128, 64, 8, 2), Tile(128, 64, 8, 2)),
    ("dq", Precision.HALF, 256): (Tile(16, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dkdv_atomic", Precision.SINGLE, 16): (Tile(32, 32, 8, 1), Tile(32, 32, 8, 1)),
    ("dkdv_atomic", Precision.SINGLE, 32): (Tile(32, 32, 4, 1), Tile(32, 32, 4, 1)),
    ("dkdv_atomic", Precision.SINGLE, 64): (Tile(32, 32, 8, 1), Tile(32, 32, 8, 1)),
    ("dkdv", Precision.SINGLE, 16): (Tile(32, 32, 4, 1), Tile(32, 32, 4, 1)),
    ("dkdv", Precision.SINGLE, 32): (Tile(32, 32, 4, 1), Tile(32, 32, 8, 1)),
    ("dkdv", Precision.SINGLE, 64): (Tile(32, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dkdv", Precision.SINGLE, 128): (Tile(16, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dkdv", Precision.SINGLE, 256): (Tile(16, 32, 8, 1), Tile(16, 16, 8, 1)),
    ("dq", Precision.SINGLE, 16): (Tile(32, 32, 4, 1), Tile(32, 32, 4, 1)),
    ("dq", Precision.SINGLE, 32): (Tile(16, 32, 4, 1), Tile(32, 32, 8, 1)),
    ("dq", Precision.SINGLE, 64): (Tile(32, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dq", Precision.SINGLE, 128): (Tile(16, 32, 8, 1), Tile(16, 32, 8, 1)),
    ("dq", Precision.SINGLE, 256): (Tile(16, 32, 8, 1), Tile(16, 16, 4, 1)),
}


def dq_by_atomics(block_d: int, deterministic: bool) -> bool:
    """Whether dQ is accumulated with atomics in the dK/dV kernel (else: the separate dQ kernel)."""
    return not deterministic and block_d <= ATOMIC_DQ_MAX_BLOCK_D


def backward_config(kind: str, block_d: int, dtype: str, dropout: bool, interpreted: bool) -> dict:
    """Tiles and launch options of one backward kernel: ``preprocess``, ``dkdv`` (dQ separate),
    ``dkdv_atomic`` (dQ by atomics) or ``dq``."""
    if kind == "preprocess":  # (BLOCK_M, D) rows of O and dO: 2048 elements per tile
        return dict(BLOCK_M=16 if interpreted else max(16, 2048 // block_d), num_warps=1 if interpreted else 4,
                    num_stages=1)
    if interpreted:
        return INTERPRETED_TILE.launch()
    return BACKWARD_CONFIGS[(kind, Precision.of(dtype), block_d)][int(dropout)].launch()


def aot_configs():
    """The backward configurations the launcher picks on a GPU, for the sm_90 compile check (attention is not
    tuned for sm_80): each table entry with its lightest and heaviest flags (plain, causal + key mask; dropout
    adds the Philox draws)."""
    configs = []
    for dtype, head_dim in AOT_CASES:
        ptr = f"*{dtype}"
        block_d = head_dim_block(head_dim)
        pre, pre_options = split_options(backward_config("preprocess", block_d, dtype, False, interpreted=False))
        configs.append(dict(
            kernel=flash_attention_bwd_preprocess_kernel, name=f"flash_attention_bwd_pre_{dtype}_d{head_dim}",
            signature=signature({"O": ptr, "DO": ptr, "DELTA": "*fp32", "SEQS": "*i32"},
                                 strides("o", "g", "l") + ("num_heads",), ()),
            constexprs=dict(HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=pre["BLOCK_M"]),
            options=pre_options, archs=AOT_ARCHS,
            values={"stride_lt": runtime_values()["stride_lt"]}))
        kinds = ("dkdv", "dq") + (("dkdv_atomic",) if block_d <= ATOMIC_DQ_MAX_BLOCK_D else ())
        for kind in kinds:
            for causal, masked, dropout in ((False, False, False), (True, True, False), (False, False, True),
                                            (True, True, True)):
                launch, options = split_options(backward_config(kind, block_d, dtype, dropout, interpreted=False))
                flags = dict(CAUSAL=causal, HAS_KEY_MASK=masked, DROPOUT=dropout)
                common = {"Q": ptr, "K": ptr, "V": ptr, "DO": ptr, "LSE": "*fp32", "DELTA": "*fp32"}
                if kind == "dq":
                    kernel = flash_attention_bwd_dq_kernel
                    ptrs = dict(common, DQ=ptr, SEQS="*i32", KEY_MASK="*u8", SEED="*i64")
                    ints = strides("q", "k", "v", "g", "l", "dq") + ("stride_mb", "num_heads", "drop_threshold")
                else:
                    kernel = flash_attention_bwd_dkdv_kernel
                    flags["ATOMIC_DQ"] = kind == "dkdv_atomic"
                    dq_ptr = "*fp32" if kind == "dkdv_atomic" else ptr
                    ptrs = dict(common, DQ=dq_ptr, DK=ptr, DV=ptr, SEQS="*i32", KEY_MASK="*u8", SEED="*i64")
                    ints = (strides("q", "k", "v", "g", "l", "dq", "dk", "dv")
                            + ("stride_mb", "num_heads", "drop_threshold"))
                tag = f"{'_causal_mask' if causal else ''}{'_dropout' if dropout else ''}"
                configs.append(dict(
                    kernel=kernel, name=f"flash_attention_bwd_{kind}_{dtype}_d{head_dim}{tag}",
                    signature=signature(ptrs, ints, ("scale", "drop_scale")),
                    constexprs=dict(**flags, HEAD_DIM=head_dim, BLOCK_D=block_d, INPUT_PRECISION="ieee", **launch),
                    options=options, archs=AOT_ARCHS, values=runtime_values(masked, dropout)))
    return configs
