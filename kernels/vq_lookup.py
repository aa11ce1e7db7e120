"""Fused nearest-codebook lookup: ||x - c||² over code tiles with a running argmin in registers.

Each program owns ``BLOCK_N`` rows of ``x``; it walks the codebook in ``BLOCK_K`` tiles, forms the
cross term with ``tl.dot`` (looping over ``D`` in ``BLOCK_D`` chunks), and keeps the best distance and
index per row. The N×K distance matrix never leaves registers.
"""
import triton
import triton.language as tl


@triton.jit
def vq_lookup_kernel(
    x_ptr, code_ptr, code_norm_ptr, idx_ptr, dist_ptr,
    N, K, D,
    stride_xn, stride_cn,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    row_ok = rows < N
    dims = tl.arange(0, BLOCK_D)  # (BD,)

    x_norm = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d_ok = (d0 + dims) < D
        xt = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xn + (d0 + dims)[None, :],
                     mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        x_norm += tl.sum(xt * xt, axis=1)

    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
    codes_base = tl.arange(0, BLOCK_K)  # (BK,)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + codes_base
        code_ok = codes < K
        cross = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)  # x·cᵀ
        for d0 in range(0, D, BLOCK_D):
            d_ok = (d0 + dims) < D
            xt = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xn + (d0 + dims)[None, :],
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
            ct = tl.load(code_ptr + codes[None, :].to(tl.int64) * stride_cn + (d0 + dims)[:, None],
                         mask=code_ok[None, :] & d_ok[:, None], other=0.0)  # (BD, BK)
            if UPCAST:  # the interpreter computes bf16 wrongly: do its dots in fp32
                xt = xt.to(tl.float32)
                ct = ct.to(tl.float32)
            if xt.dtype == tl.float32:
                cross = tl.dot(xt, ct, cross, input_precision=INPUT_PRECISION)
            else:
                cross = tl.dot(xt, ct, cross)
        c_norm = tl.load(code_norm_ptr + codes, mask=code_ok, other=float("inf"))  # (BK,)
        partial = c_norm[None, :] - 2.0 * cross  # (BN, BK)
        partial = tl.where(code_ok[None, :], partial, float("inf"))
        tile_best = tl.min(partial, axis=1)
        tile_idx = tl.argmin(partial, axis=1, tie_break_left=True)
        better = tile_best < best  # strict: ties keep the lowest index
        best_idx = tl.where(better, tile_idx + k0, best_idx)
        best = tl.where(better, tile_best, best)

    dist = tl.maximum(x_norm + best, 0.0)
    tl.store(idx_ptr + rows, best_idx.to(tl.int64), mask=row_ok)
    tl.store(dist_ptr + rows, dist, mask=row_ok)


@triton.jit
def vq_codebook_stats_kernel(
    x_ptr, idx_ptr, count_ptr, sum_ptr,
    N, D, stride_xn,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """counts[idx[n]] += 1 and sums[idx[n], :] += x[n, :] with fp32 atomics (no one-hot N×K)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    idx = tl.load(idx_ptr + rows, mask=row_ok, other=0)  # (BN,)
    tl.atomic_add(count_ptr + idx, tl.full((BLOCK_N,), 1.0, tl.float32), mask=row_ok)
    dims = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        d_ok = (d0 + dims) < D
        mask = row_ok[:, None] & d_ok[None, :]
        xt = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xn + (d0 + dims)[None, :],
                     mask=mask, other=0.0).to(tl.float32)
        tl.atomic_add(sum_ptr + idx[:, None] * D + (d0 + dims)[None, :], xt, mask=mask)


def aot_configs():
    """Kernel configurations the launchers use, for the ahead-of-time sm_90/sm_80 compile check."""
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for block_d in (16, 64):
            # fp32 dots: 3xTF32 on Hopper's tensor cores; plain IEEE fp32 on Ampere (3xTF32 spills there)
            precisions = [("tf32x3", (90,)), ("ieee", (80,))] if dtype == "fp32" else [("tf32x3", (90, 80))]
            for precision, archs in precisions:
                configs.append(dict(
                    kernel=vq_lookup_kernel, name=f"vq_lookup_{dtype}_d{block_d}_{precision}", archs=archs,
                    signature={"x_ptr": f"*{dtype}", "code_ptr": f"*{dtype}", "code_norm_ptr": "*fp32",
                               "idx_ptr": "*i64", "dist_ptr": "*fp32", "N": "i32", "K": "i32", "D": "i32",
                               "stride_xn": "i32", "stride_cn": "i32"},
                    constexprs={"BLOCK_N": 16 if precision == "ieee" else 64, "BLOCK_K": 64, "BLOCK_D": block_d,
                                "INPUT_PRECISION": precision, "UPCAST": False},
                    options={"num_warps": 4 if precision == "ieee" else 8, "num_stages": 2}))
        configs.append(dict(
            kernel=vq_codebook_stats_kernel, name=f"vq_codebook_stats_{dtype}",
            signature={"x_ptr": f"*{dtype}", "idx_ptr": "*i64", "count_ptr": "*fp32", "sum_ptr": "*fp32",
                       "N": "i32", "D": "i32", "stride_xn": "i32"},
            constexprs={"BLOCK_N": 32, "BLOCK_D": 64},
            options={"num_warps": 4, "num_stages": 1}))
    return configs
