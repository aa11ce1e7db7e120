"""FlashAttention-style forward: online softmax over key tiles, the S×S scores never in memory.

One program per (query tile, batch·head). Every sequence is described by a start offset and a length for
queries and for keys, so one kernel serves packed varlen batches (start = cu_seqlens[b], batch stride 0)
and padded (B, H, S, D) batches (start = 0, key length = the real keys of a right-padded row): key tiles
past a sequence's length, or above the causal diagonal, are never loaded. The diagonal is given per
sequence (query i sees keys j <= i + diag): Lk - Lq for varlen, Sk - Sq for padded batches (bottom-right).
Statistics are fp32; the log-sum-exp is saved per query row for the backward (+inf for a row that sees
no key, whose output is 0).
"""
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def flash_attention_fwd_kernel(
    Q, K, V, O, LSE,
    start_q_ptr, len_q_ptr, start_k_ptr, len_k_ptr, diag_ptr,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh,
    stride_lb, stride_lt, stride_lh,
    num_heads, head_dim, scale,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    len_q = tl.load(len_q_ptr + b)
    if pid_m * BLOCK_M >= len_q:
        return
    start_q = tl.load(start_q_ptr + b).to(tl.int64)  # scalar bases in int64, tile offsets in int32
    start_k = tl.load(start_k_ptr + b).to(tl.int64)
    b64 = b.to(tl.int64)
    len_k = tl.load(len_k_ptr + b)
    diag = tl.load(diag_ptr + b)  # causal: query i sees keys j <= i + diag

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) query positions in the sequence
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < len_q
    d_ok = offs_d < head_dim
    q_ptrs = Q + (b64 * stride_qb + h * stride_qh + start_q * stride_qt) + offs_m[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    qk_scale = scale * 1.4426950408889634  # exp2 domain

    hi = len_k
    if CAUSAL:  # key tiles past the diagonal are skipped, not masked
        hi = tl.minimum(len_k, tl.maximum(0, (pid_m + 1) * BLOCK_M + diag))
    k_base = K + (b64 * stride_kb + h * stride_kh + start_k * stride_kt)
    v_base = V + (b64 * stride_vb + h * stride_vh + start_k * stride_vt)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n  # (BN,)
        col_ok = cols < len_k
        k = tl.load(k_base + cols[None, :] * stride_kt + offs_d[:, None],
                    mask=col_ok[None, :] & d_ok[:, None], other=0.0)  # (BD, BN)
        s = tl.dot(q, k, input_precision=INPUT_PRECISION) * qk_scale  # (BM, BN) fp32
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None] + diag)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet stay at exactly 0
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    o_ptrs = O + (b64 * stride_ob + h * stride_oh + start_q * stride_ot) + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) / 1.4426950408889634, float("inf"))
    tl.store(LSE + (b64 * stride_lb + h * stride_lh + start_q * stride_lt) + offs_m * stride_lt, lse, mask=row_ok)


def block_sizes(head_dim_block: int, dtype: str, interpreted: bool) -> dict:
    """Tile sizes and launch options for a head-dim block (a power of two) and an input dtype."""
    if interpreted:
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    if dtype == "fp32":  # exact fp32 products run on FMA units: small tiles keep registers in check
        if head_dim_block <= 64:
            return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=8, num_stages=1)
    if head_dim_block >= 256:
        return dict(BLOCK_M=64, BLOCK_N=16, num_warps=8, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)


def aot_configs():
    """The configurations the launcher picks on a GPU, for the ahead-of-time sm_90/sm_80 compile check."""
    configs = []
    for dtype in ("fp16", "bf16", "fp32"):
        for block_d in (16, 32, 64, 128, 256):
            for causal in (False, True):
                launch = block_sizes(block_d, dtype, interpreted=False)
                options = {"num_warps": launch.pop("num_warps"), "num_stages": launch.pop("num_stages")}
                ptr = f"*{dtype}"
                sig = {"Q": ptr, "K": ptr, "V": ptr, "O": ptr, "LSE": "*fp32", "start_q_ptr": "*i32",
                       "len_q_ptr": "*i32", "start_k_ptr": "*i32", "len_k_ptr": "*i32", "diag_ptr": "*i32"}
                sig.update({name: "i32" for name in (  # Triton passes strides < 2**31 as i32
                    "stride_qb", "stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb",
                    "stride_vt", "stride_vh", "stride_ob", "stride_ot", "stride_oh", "stride_lb", "stride_lt",
                    "stride_lh")})
                sig.update({"num_heads": "i32", "head_dim": "i32", "scale": "fp32"})
                configs.append(dict(
                    kernel=flash_attention_fwd_kernel,
                    name=f"flash_attention_fwd_{dtype}_d{block_d}{'_causal' if causal else ''}",
                    signature=sig,
                    constexprs=dict(CAUSAL=causal, BLOCK_D=block_d,
                                    INPUT_PRECISION="ieee", **launch),
                    options=options))
    return configs
