"""Fused nearest-codebook lookup: ||x - c||² over code tiles with a running argmin in registers.

Each program owns ``BLOCK_N`` rows of ``x``; it walks the codebook in ``BLOCK_K`` tiles, forms the
cross term with ``tl.dot`` (looping over ``D`` in ``BLOCK_D`` chunks), and keeps the best distance and
index per row. The N×K distance matrix never leaves registers.
"""
import triton
import triton.language as tl

from .constants import head_dim_block


@triton.jit
def vq_lookup_kernel(
    x_ptr, code_ptr, code_norm_ptr, idx_ptr, dist_ptr,
    N, K, D,
    stride_xn, stride_cn,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
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

    if ONE_D_BLOCK:  # D <= BLOCK_D: the row tile stays in registers for the whole code loop
        x_tile = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xn + dims[None, :],
                         mask=row_ok[:, None] & (dims < D)[None, :], other=0.0)  # (BN, BD)
        if UPCAST:
            x_tile = x_tile.to(tl.float32)

    best = tl.full((BLOCK_N,), float("inf"), dtype=tl.float32)
    best_idx = tl.zeros((BLOCK_N,), dtype=tl.int32)
    codes_base = tl.arange(0, BLOCK_K)  # (BK,)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + codes_base
        code_ok = codes < K
        cross = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)  # x·cᵀ
        if ONE_D_BLOCK:
            ct = tl.load(code_ptr + codes[None, :].to(tl.int64) * stride_cn + dims[:, None],
                         mask=code_ok[None, :] & (dims < D)[:, None], other=0.0)  # (BD, BK)
            if UPCAST:
                ct = ct.to(tl.float32)
            if x_tile.dtype == tl.float32:
                cross = tl.dot(x_tile, ct, cross, input_precision=INPUT_PRECISION)
            else:
                cross = tl.dot(x_tile, ct, cross)
        for d0 in range(0, D if not ONE_D_BLOCK else 0, BLOCK_D):
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
        # codes past K load an infinite norm (and a zero cross term), so they never win
        c_norm = tl.load(code_norm_ptr + codes, mask=code_ok, other=float("inf"))  # (BK,)
        partial = c_norm[None, :] - 2.0 * cross  # (BN, BK): ||c||² - 2 x·c
        tile_best, tile_idx = tl.min(partial, axis=1, return_indices=True, return_indices_tie_break_left=True)
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


INTERPRETED_CONFIG = dict(BLOCK_N=16, BLOCK_K=16, INPUT_PRECISION="ieee", num_warps=1, num_stages=1)


def launch_config(dtype: str, block_d: int, one_d_block: bool, arch: int, interpreted: bool = False) -> dict:
    """Tile sizes for a dtype ("fp32"/"fp16"/"bf16"), D block and arch: all spill-free in the AOT check
    (``interpreted``: the small tiles the CPU interpreter runs quickly)."""
    if interpreted:
        return dict(INTERPRETED_CONFIG)
    if dtype == "fp32" and arch < 90:  # IEEE fp32 dots (3xTF32 spills on Ampere)
        return dict(BLOCK_N=16, BLOCK_K=64, INPUT_PRECISION="ieee", num_warps=4, num_stages=2)
    precision = "tf32x3"
    if not one_d_block:  # fp32 keeps one stage: two spill with aligned (16-byte) pointers
        return dict(BLOCK_N=64, BLOCK_K=64, INPUT_PRECISION=precision, num_warps=8,
                    num_stages=1 if dtype == "fp32" else 2)
    if dtype == "fp32":
        block_n = 128 if block_d <= 64 else 64
        return dict(BLOCK_N=block_n, BLOCK_K=64, INPUT_PRECISION=precision, num_warps=8, num_stages=3)
    block_n = 128 if block_d <= 64 else 64
    return dict(BLOCK_N=block_n, BLOCK_K=128, INPUT_PRECISION=precision, num_warps=8, num_stages=3)


def lookup_block_d(d: int) -> tuple[int, bool]:
    """D block for a row width ``d``, and whether one block covers it."""
    block_d = head_dim_block(d)
    if block_d <= 128:
        return block_d, True
    return 64, False


def stats_launch_config(d: int, interpreted: bool) -> dict:
    """Tiles of the codebook-statistics kernel for feature dim ``d`` (rows of x per program, feature block);
    also what the AOT check compiles (at d = 64)."""
    return dict(BLOCK_N=16 if interpreted else 32, BLOCK_D=min(64, head_dim_block(d)))


def aot_configs():
    """Kernel configurations the launchers use, for the ahead-of-time sm_90/sm_80 compile check."""
    configs = []
    signature = {"code_norm_ptr": "*fp32", "idx_ptr": "*i64", "dist_ptr": "*fp32", "N": "i32", "K": "i32",
                 "D": "i32", "stride_xn": "i32", "stride_cn": "i32"}
    for dtype in ("fp32", "fp16", "bf16"):
        for arch in (90, 80):
            for block_d, one in ((16, True), (64, True), (128, True), (64, False)):
                launch = launch_config(dtype, block_d, one, arch)
                options = {"num_warps": launch.pop("num_warps"), "num_stages": launch.pop("num_stages")}
                configs.append(dict(
                    kernel=vq_lookup_kernel, archs=(arch,),
                    name=f"vq_lookup_{dtype}_d{block_d}{'' if one else '_dloop'}",
                    signature={"x_ptr": f"*{dtype}", "code_ptr": f"*{dtype}", **signature},
                    constexprs=dict(launch, BLOCK_D=block_d, UPCAST=False, ONE_D_BLOCK=one),
                    options=options))
        configs.append(dict(
            kernel=vq_codebook_stats_kernel, name=f"vq_codebook_stats_{dtype}",
            signature={"x_ptr": f"*{dtype}", "idx_ptr": "*i64", "count_ptr": "*fp32", "sum_ptr": "*fp32",
                       "N": "i32", "D": "i32", "stride_xn": "i32"},
            constexprs=stats_launch_config(64, interpreted=False),
            options={"num_warps": 4, "num_stages": 1}))
    return configs
