"""Attention of a few new queries over a key/value cache, split over the keys (flash-decoding).

Layouts (flash-attention's): q (B, Sq, H, D); k/v cache (B, S_max, Hkv, D) with H a multiple of Hkv;
``LENS`` (B,) int32 holds each sequence's key count *after* the new keys were appended. Query row i of
sequence b sees keys j < LENS[b], and with ``CAUSAL`` only j <= LENS[b] - Sq + i (bottom-right aligned).

``kv_attention_split_kernel`` runs on a (query tiles × splits, H, B) grid: each program takes one tile of
query rows and one contiguous chunk of the cache, runs an online softmax over it and writes its partial
output and log-sum-exp (fp32). ``kv_attention_combine_kernel`` then merges the splits of every row; a row
that saw no key gives 0. Splitting the keys keeps every SM busy when a single sequence decodes one token.
"""
import triton
import triton.language as tl

from .constants import LOG2E, cdiv, head_dim_block
from .launch import INTERPRETED_TILE, Precision, Tile, split_options


@triton.jit
def kv_attention_split_kernel(
    Q, K, V, LENS, O_PART, L_PART,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_oh, stride_os, stride_ot,
    stride_lb, stride_lh, stride_ls,
    Sq, group, chunk, scale,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    m_tile = pid // NUM_SPLITS
    split = pid % NUM_SPLITS
    h = tl.program_id(1)
    b = tl.program_id(2)
    kh = h // group
    total = tl.load(LENS + b)  # keys of this sequence, the new ones included
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    d_ok = offs_d < HEAD_DIM
    k_start = split * chunk
    k_stop = tl.minimum(k_start + chunk, total)
    if CAUSAL:  # the last row of the tile sees keys up to total - Sq + its index
        k_stop = tl.minimum(k_stop, total - Sq + tl.minimum(m_tile * BLOCK_M + BLOCK_M, Sq))

    q = tl.load(Q + b.to(tl.int64) * stride_qb + offs_m[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = scale * LOG2E  # exp2 domain
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    k_base = K + b.to(tl.int64) * stride_kb + kh * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kh * stride_vh
    for n0 in range(k_start, k_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < k_stop
        k = tl.load(k_base + offs_n[None, :].to(tl.int64) * stride_kt + offs_d[:, None],
                    mask=key_ok[None, :] & d_ok[:, None], other=0.0)  # (BD, BN)
        v = tl.load(v_base + offs_n[:, None].to(tl.int64) * stride_vt + offs_d[None, :],
                    mask=key_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=INPUT_PRECISION) * qk_scale  # (BM, BN); fp32: IEEE, not TF32
        visible = key_ok[None, :] & row_ok[:, None]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= (total - Sq + offs_m)[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet stay finite
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i / LOG2E + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
    o_ptr = O_PART + b.to(tl.int64) * stride_ob + h * stride_oh + split * stride_os
    tl.store(o_ptr + offs_m[:, None] * stride_ot + offs_d[None, :], out, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(L_PART + b.to(tl.int64) * stride_lb + h * stride_lh + split * stride_ls + offs_m, lse, mask=row_ok)


@triton.jit
def kv_attention_combine_kernel(
    O_PART, L_PART, OUT,
    stride_ob, stride_oh, stride_os, stride_ot,
    stride_lb, stride_lh, stride_ls,
    stride_yb, stride_yt, stride_yh,
    Sq,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, NUM_SPLITS: tl.constexpr,
):
    m_tile = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    d_ok = offs_d < HEAD_DIM
    l_base = L_PART + b.to(tl.int64) * stride_lb + h * stride_lh
    o_base = O_PART + b.to(tl.int64) * stride_ob + h * stride_oh
    lse_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    for s in range(NUM_SPLITS):
        lse = tl.load(l_base + s * stride_ls + offs_m, mask=row_ok, other=float("-inf"))
        lse_max = tl.maximum(lse_max, lse)
    safe_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for s in range(NUM_SPLITS):
        lse = tl.load(l_base + s * stride_ls + offs_m, mask=row_ok, other=float("-inf"))
        w = tl.exp(lse - safe_max)  # 0 for a split that saw no key
        part = tl.load(o_base + s * stride_os + offs_m[:, None] * stride_ot + offs_d[None, :],
                       mask=row_ok[:, None] & d_ok[None, :] & (lse > float("-inf"))[:, None], other=0.0)
        acc += w[:, None] * part
        total += w
    out = acc / tl.where(total > 0, total, 1.0)[:, None]
    tl.store(OUT + b.to(tl.int64) * stride_yb + offs_m[:, None] * stride_yt + h * stride_yh + offs_d[None, :],
             out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


# Launch table: (BLOCK_M, BLOCK_N, num_warps, num_stages) by head-dim block, for 16-bit and fp32 inputs.
# BLOCK_M = 16 (tl.dot's minimum): a decoding step has one query row per sequence.
# 16-bit entries picked from an sm_90 sweep of BLOCK_N × warps as the widest spill-free tiles (d64: 244
# registers at 64×4 warps, 128-wide spills; d128: 152 at 32×8, 64×4 spills); not yet timed on a GPU.
SPLIT_CONFIGS = {
    (Precision.HALF, 16): Tile(16, 64, 4, 2), (Precision.HALF, 32): Tile(16, 64, 4, 2), (Precision.HALF, 64): Tile(16, 64, 4, 2),
    (Precision.HALF, 128): Tile(16, 32, 8, 2), (Precision.HALF, 256): Tile(16, 32, 4, 2),
    (Precision.SINGLE, 16): Tile(16, 64, 4, 2), (Precision.SINGLE, 32): Tile(16, 64, 4, 2), (Precision.SINGLE, 64): Tile(16, 64, 4, 2),
    (Precision.SINGLE, 128): Tile(16, 32, 4, 2), (Precision.SINGLE, 256): Tile(16, 16, 4, 1),
}
COMBINE_CONFIG = dict(BLOCK_M=16, num_warps=4, num_stages=1)
MAX_SPLITS = 32


def split_config(block_d: int, dtype: str, interpreted: bool) -> dict:
    """Tile sizes and launch options of the split kernel for a head-dim block and input dtype."""
    if interpreted:
        return INTERPRETED_TILE.launch()
    return SPLIT_CONFIGS[(Precision.of(dtype), block_d)].launch()


def num_splits(capacity: int, programs: int, block_n: int, multiprocessors: int) -> int:
    """Splits of the cache so that about two programs run per multiprocessor, each with at least one key tile."""
    by_work = max(1, cdiv(capacity, block_n))
    by_occupancy = max(1, cdiv(2 * multiprocessors, max(programs, 1)))
    return int(min(by_work, by_occupancy, MAX_SPLITS))


AOT_ARCHS = (90,)


def aot_configs():
    """The split and combine configurations the launcher uses (sm_90 compile check)."""
    configs = []
    ints = ("stride_qb", "stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb", "stride_vt",
            "stride_vh", "stride_ob", "stride_oh", "stride_os", "stride_ot", "stride_lb", "stride_lh", "stride_ls",
            "Sq", "group", "chunk")
    for dtype in ("bf16", "fp16", "fp32"):
        for head_dim in (32, 64, 128, 256):
            block_d = head_dim_block(head_dim)
            launch, options = split_options(split_config(block_d, dtype, False))
            ptr = f"*{dtype}"
            signature = {"Q": ptr, "K": ptr, "V": ptr, "LENS": "*i32", "O_PART": "*fp32", "L_PART": "*fp32",
                         **{n: "i32" for n in ints}, "scale": "fp32"}
            # multi-token appends (full and causal), and one-token decode steps, where Triton turns Sq = 1, the
            # partial statistics' split stride (= Sq) and, without grouped queries, group = 1 into constants
            for causal, decode in ((False, False), (True, False), (True, True)):
                configs.append(dict(kernel=kv_attention_split_kernel, archs=AOT_ARCHS,
                                    name=f"kv_attention_split_{dtype}_d{head_dim}{'_causal' if causal else ''}"
                                         f"{'_decode' if decode else ''}",
                                    signature=signature, values=_DECODE_VALUES if decode else _VALUES,
                                    constexprs=dict(launch, CAUSAL=causal, HEAD_DIM=head_dim, BLOCK_D=block_d,
                                                    NUM_SPLITS=8, UPCAST=False, INPUT_PRECISION="ieee"),
                                    options=options))
            combine, c_options = split_options(COMBINE_CONFIG)
            for decode in (False, True):
                configs.append(dict(
                    kernel=kv_attention_combine_kernel, archs=AOT_ARCHS,
                    name=f"kv_attention_combine_{dtype}_d{head_dim}{'_decode' if decode else ''}",
                    signature={"O_PART": "*fp32", "L_PART": "*fp32", "OUT": ptr,
                               **{n: "i32" for n in ("stride_ob", "stride_oh", "stride_os", "stride_ot", "stride_lb",
                                                     "stride_lh", "stride_ls", "stride_yb", "stride_yt", "stride_yh",
                                                     "Sq")}},
                    values=_DECODE_COMBINE_VALUES if decode else {},
                    constexprs=dict(combine, HEAD_DIM=head_dim, BLOCK_D=block_d, NUM_SPLITS=8), options=c_options))
    return configs


# representative integer values (sslfast.aot): a split's key range (chunk) is whole key tiles; in a decode step
# Sq = 1 and so the partial statistics' split stride, the head stride is NUM_SPLITS (8), and without grouped
# queries group = 1
_VALUES = {"chunk": 64}
_DECODE_VALUES = {"chunk": 64, "Sq": 1, "stride_ls": 1, "stride_lh": 8, "group": 1}
_DECODE_COMBINE_VALUES = {"Sq": 1, "stride_ls": 1, "stride_lh": 8}
