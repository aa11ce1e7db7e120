"""Vector-quantization ops: fused nearest-codebook lookup and per-code statistics."""
from __future__ import annotations

import torch

from sslfast import _extension
from sslfast.ops._dispatch import empty_output, resolve_backend, triton_interpreted
from sslfast.ops._input_checks import check_finite, check_same_device, check_tensor
from sslfast.ops._kernel_verdicts import kernel_allowed

__all__ = ["vq_lookup", "vq_codebook_stats", "vq_lookup_reference"]

_LOOKUP_BACKENDS = ("triton", "cpp", "torch")


def vq_lookup_reference(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch lookup (materializes N×K): the reference the kernels are tested against."""
    x32, c32 = x.float(), codebook.float()
    sq = (x32.pow(2).sum(-1, keepdim=True) - 2.0 * x32 @ c32.t() + c32.pow(2).sum(-1)).clamp_min_(0.0)
    dist, idx = sq.min(-1)  # min returns the first index of the minimum
    return idx, dist


def _lookup_cpp(x, codebook):
    idx = empty_output(x.shape[0], dtype=torch.int64, device=x.device)
    dist = empty_output(x.shape[0], dtype=torch.float32, device=x.device)
    _extension._C.vq_lookup_cpu(x.float().contiguous(), codebook.float().contiguous(), idx, dist)
    return idx, dist


def _lookup_triton(x, codebook):
    from sslfast.kernels.constants import cdiv, dtype_name
    from sslfast.kernels.vq_lookup import (
        launch_config,
        lookup_block_d,
        vq_lookup_kernel,
    )
    n, d = x.shape
    k = codebook.shape[0]
    idx = empty_output(n, dtype=torch.int64, device=x.device)
    dist = empty_output(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return idx, dist
    code_norm = codebook.float().pow(2).sum(-1).contiguous()  # (K,)
    block_d, one_d_block = lookup_block_d(d)
    major, minor = (0, 0) if triton_interpreted() else torch.cuda.get_device_capability(x.device)
    launch = launch_config(dtype_name(x.dtype), block_d, one_d_block, 10 * major + minor, triton_interpreted())
    grid = (cdiv(n, launch["BLOCK_N"]),)
    vq_lookup_kernel[grid](
        x, codebook, code_norm, idx, dist, n, k, d, x.stride(0), codebook.stride(0), BLOCK_D=block_d,
        UPCAST=triton_interpreted() and x.dtype == torch.bfloat16, ONE_D_BLOCK=one_d_block, **launch)
    return idx, dist


@torch.library.custom_op("sslfast::vq_lookup", mutates_args=())
def _vq_lookup_op(x: torch.Tensor, codebook: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "triton":
        return _lookup_triton(x, codebook)
    if backend == "cpp":
        return _lookup_cpp(x, codebook)
    return vq_lookup_reference(x, codebook)


@_vq_lookup_op.register_fake
def _(x, codebook, backend):
    n = x.shape[0]
    return x.new_empty(n, dtype=torch.int64), x.new_empty(n, dtype=torch.float32)


def _validate_lookup(x, codebook):
    op = "vq_lookup"
    check_tensor(op, "x", x, min_dim=1)
    check_tensor(op, "codebook", codebook, dim=2)
    check_same_device(op, x=x, codebook=codebook)
    if codebook.shape[0] == 0:
        raise ValueError(f"{op}: codebook is empty (shape {tuple(codebook.shape)}); expected (K, D) with K >= 1")
    if x.shape[-1] != codebook.shape[1]:
        raise ValueError(f"{op}: x's last dimension ({x.shape[-1]}) must equal codebook's D "
                         f"({codebook.shape[1]}); got x {tuple(x.shape)}, codebook {tuple(codebook.shape)}")
    if x.dtype != codebook.dtype:
        raise TypeError(f"{op}: x ({x.dtype}) and codebook ({codebook.dtype}) must have the same dtype")


def vq_lookup(x: torch.Tensor, codebook: torch.Tensor, *, backend: str = "auto",
              check_finite_inputs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of every row of ``x`` by squared L2 distance, without the N×K distance matrix.

    Args:
        x: (..., D) float32/float16/bfloat16.
        codebook: (K, D), same dtype and device as ``x``.
        backend: ``"auto"`` (Triton on CUDA tensors, C++ on CPU), ``"triton"``, ``"cpp"`` or ``"torch"``
            (the plain reference).
        check_finite_inputs: raise on NaN/Inf in ``x`` or ``codebook`` (one sum each, one host sync).

    Returns:
        ``indices`` int64 (...) of the nearest code (ties: lowest index) and ``sqdist`` float32 (...),
        its squared distance, accumulated in fp32.
    """
    _validate_lookup(x, codebook)
    if check_finite_inputs:
        check_finite("vq_lookup", x=x, codebook=codebook)
    name = resolve_backend("vq_lookup", backend, x.device, _LOOKUP_BACKENDS)
    if name == "triton" and backend == "auto":
        if not kernel_allowed("vq_lookup", x.device, dtype=x.dtype, dim=x.shape[-1]):
            name = "torch"
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    code = codebook if codebook.stride(-1) == 1 else codebook.contiguous()
    idx, dist = _vq_lookup_op(flat, code, name)
    return idx.reshape(lead), dist.reshape(lead)


# --- per-code statistics -------------------------------------------------------------------------

def _stats_triton(x, indices, num_codes):
    from sslfast.kernels.constants import cdiv
    from sslfast.kernels.vq_lookup import stats_launch_config, vq_codebook_stats_kernel
    n, d = x.shape
    counts = torch.zeros(num_codes, dtype=torch.float32, device=x.device)
    sums = torch.zeros(num_codes, d, dtype=torch.float32, device=x.device)
    if n == 0:
        return counts, sums
    launch = stats_launch_config(d, triton_interpreted())
    vq_codebook_stats_kernel[(cdiv(n, launch["BLOCK_N"]),)](
        x, indices, counts, sums, n, d, x.stride(0), **launch)
    return counts, sums


def _stats_torch(x, indices, num_codes):
    counts = torch.zeros(num_codes, dtype=torch.float32, device=x.device)
    counts.index_add_(0, indices, torch.ones_like(indices, dtype=torch.float32))
    sums = torch.zeros(num_codes, x.shape[1], dtype=torch.float32, device=x.device)
    sums.index_add_(0, indices, x.float())
    return counts, sums


@torch.library.custom_op("sslfast::vq_codebook_stats", mutates_args=())
def _vq_stats_op(x: torch.Tensor, indices: torch.Tensor, num_codes: int,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "triton":
        return _stats_triton(x, indices, num_codes)
    return _stats_torch(x, indices, num_codes)


@_vq_stats_op.register_fake
def _(x, indices, num_codes, backend):
    return (x.new_empty(num_codes, dtype=torch.float32),
            x.new_empty(num_codes, x.shape[1], dtype=torch.float32))


def vq_codebook_stats(x: torch.Tensor, indices: torch.Tensor, num_codes: int, *, backend: str = "auto",
                      check_indices: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code assignment counts (K,) and sums of assigned rows (K, D), both float32.

    ``x`` (..., D) and ``indices`` (...) int64 in ``[0, num_codes)``, as returned by :func:`vq_lookup`.
    On CUDA the sums are accumulated with atomics (Triton); on CPU with ``index_add_`` (PyTorch's own
    kernel is the best CPU path). No one-hot N×K matrix is formed. ``check_indices`` verifies the index
    range (one host sync); callers passing :func:`vq_lookup`'s output may skip it.
    """
    op = "vq_codebook_stats"
    check_tensor(op, "x", x, min_dim=1)
    check_tensor(op, "indices", indices, dtypes=(torch.int64,))
    check_same_device(op, x=x, indices=indices)
    if tuple(indices.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"{op}: indices shape {tuple(indices.shape)} must equal x's leading shape "
                         f"{tuple(x.shape[:-1])}")
    if num_codes < 1:
        raise ValueError(f"{op}: num_codes must be >= 1, got {num_codes}")
    if check_indices and indices.numel():
        lo, hi = torch.stack([indices.min(), indices.max()]).tolist()
        if lo < 0 or hi >= num_codes:
            raise ValueError(f"{op}: indices must be in [0, {num_codes}), got values in [{lo}, {hi}]")
    name = resolve_backend(op, backend, x.device, ("triton", "torch"))
    if name == "triton" and backend == "auto":
        if not kernel_allowed(op, x.device, dtype=x.dtype, dim=x.shape[-1]):
            name = "torch"
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _vq_stats_op(flat, indices.reshape(-1).contiguous(), int(num_codes), name)
