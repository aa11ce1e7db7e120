"""Attention over a preallocated key/value cache, for decoding: append the new keys in place, attend.

``attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new, v_new)`` follows flash-attention's
``flash_attn_with_kvcache``: every sequence of the batch has its own cache length, so a batch of prompts of
different lengths needs no padding inside attention. GPU: a split-over-keys Triton kernel
(``kernels/kv_attention.py``, flash-decoding). CPU, fp32: sslfast's C++ kernel (``csrc/kv_attention.cpp``:
append and attend in one call, no masks); otherwise PyTorch's SDPA over the used part of the cache.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from sslfast import _extension
from sslfast.constants import HEAD_DIMS, supported_head_dim
from sslfast.ops._dispatch import (
    BackendUnavailableError,
    empty_output,
    resolve_backend,
    triton_interpreted,
)
from sslfast.ops._input_checks import check_same_device, check_tensor
from sslfast.ops._kernel_verdicts import kernel_allowed
from sslfast.ops.attention.api import sdpa_exact

__all__ = ["attention_with_kvcache", "kvcache_attention_reference", "kvcache_backend", "decode_attention",
           "CPP_KVCACHE_AVAILABLE"]

# The C++ kernel is in this build of the extension (a stale build without it counts as missing).
CPP_KVCACHE_AVAILABLE = _extension._C is not None and hasattr(torch.ops.sslfast, "kvcache_attention_cpp")
if CPP_KVCACHE_AVAILABLE:
    @torch.library.register_fake("sslfast::kvcache_attention_cpp")
    def _(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale):
        return torch.empty_like(q, memory_format=torch.contiguous_format)


def kvcache_attention_reference(q, k_cache, v_cache, lengths, *, causal=True, scale=None):
    """Plain PyTorch (in the inputs' dtype, or float64 for tests): q (B, Sq, H, D) over the first
    ``lengths[b]`` keys of each cache row; rows that see no key give 0."""
    b, sq, h, d = q.shape
    group = h // k_cache.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    outs = []
    for i in range(b):
        n = int(lengths[i])
        k = k_cache[i, :n].repeat_interleave(group, dim=1).transpose(0, 1)  # (H, n, D)
        v = v_cache[i, :n].repeat_interleave(group, dim=1).transpose(0, 1)
        scores = (q[i].transpose(0, 1) @ k.transpose(-1, -2)) * scale  # (H, Sq, n)
        if causal:
            visible = torch.arange(n, device=q.device)[None, :] <= (n - sq + torch.arange(sq, device=q.device))[:, None]
            scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores.float(), -1).nan_to_num(0.0).to(q.dtype)
        outs.append((probs @ v).transpose(0, 1))  # (Sq, H, D)
    return torch.stack(outs)


def _validate(q, k_cache, v_cache, cache_seqlens, k_new, v_new, scale):
    op = "attention_with_kvcache"
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(op, name, t, dim=4)
    check_tensor(op, "cache_seqlens", cache_seqlens, dtypes=(torch.int32,), dim=1)
    check_same_device(op, q=q, k_cache=k_cache, v_cache=v_cache, cache_seqlens=cache_seqlens, k_new=k_new,
                      v_new=v_new)
    b, sq, h, d = q.shape
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != b or k_cache.shape[3] != d:
        raise ValueError(f"{op}: expected q (B, Sq, H, D) and k_cache / v_cache (B, S_max, Hkv, D) alike; got q "
                         f"{tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}")
    if h % k_cache.shape[2]:
        raise ValueError(f"{op}: query heads ({h}) must be a multiple of cache heads ({k_cache.shape[2]})")
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise TypeError(f"{op}: q and the caches must share a dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if not supported_head_dim(d):
        raise ValueError(f"{op}: head dim must be {HEAD_DIMS}, got {d}")
    if cache_seqlens.shape[0] != b:
        raise ValueError(f"{op}: cache_seqlens must be (B,) = ({b},), got {tuple(cache_seqlens.shape)}")
    if (k_new is None) != (v_new is None):
        raise ValueError(f"{op}: pass both k_new and v_new, or neither")
    if k_new is not None:
        want = (b, sq, k_cache.shape[2], d)
        for name, t in (("k_new", k_new), ("v_new", v_new)):
            check_tensor(op, name, t, dim=4)
            if tuple(t.shape) != want or t.dtype != q.dtype:
                raise ValueError(f"{op}: {name} must be (B, Sq, Hkv, D) = {want} in {q.dtype}, got "
                                 f"{tuple(t.shape)} {t.dtype}")
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: scale must be positive, got {scale}")


# Defined with the schema API rather than ``torch.library.custom_op``: decoding outside GPT-2's one-call step
# calls this once per layer and token, and the Python wrapper custom_op puts around an op with mutated arguments
# costs more than the op itself at batch 1 on the CPU (benchmarks/RESULTS.md, "Design measurements").
torch.library.define(
    "sslfast::attention_with_kvcache",
    "(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor cache_seqlens, Tensor? k_new, Tensor? v_new, "
    "bool causal, float scale, str backend) -> Tensor")


def _kvcache_impl(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
                  k_new: Optional[torch.Tensor], v_new: Optional[torch.Tensor], causal: bool, scale: float,
                  backend: str) -> torch.Tensor:
    # q (B, Sq, H, D), caches (B, S_max, Hkv, D), cache_seqlens (B,) int32 before the append -> (B, Sq, H, D)
    if backend == "cpp" and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1:
        q, k_new, v_new = (t if t is None or t.stride(-1) == 1 else t.contiguous() for t in (q, k_new, v_new))
        return torch.ops.sslfast.kvcache_attention_cpp(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale)
    b, sq = q.shape[:2]
    on_host = q.device.type == "cpu"
    starts = cache_seqlens.tolist() if on_host else None  # free on the CPU: lets equal lengths skip masks
    lengths = cache_seqlens
    if k_new is not None:
        if starts and min(starts) == max(starts):  # one length for all rows: a slice copy, no index tensors
            k_cache[:, starts[0]:starts[0] + sq] = k_new
            v_cache[:, starts[0]:starts[0] + sq] = v_new
        else:
            rows = torch.arange(b, device=q.device)[:, None]
            positions = cache_seqlens.long()[:, None] + torch.arange(sq, device=q.device)  # (B, Sq)
            k_cache[rows, positions] = k_new
            v_cache[rows, positions] = v_new
        lengths = cache_seqlens + sq
    if backend == "triton":
        return _triton_impl(q, k_cache, v_cache, lengths.to(torch.int32).contiguous(), causal, scale)
    host_lengths = [n + (sq if k_new is not None else 0) for n in starts] if on_host else None
    return _torch_impl(q, k_cache, v_cache, lengths, causal, scale, host_lengths)


torch.library.impl("sslfast::attention_with_kvcache", "CompositeExplicitAutograd", _kvcache_impl)


def _kvcache_autograd(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale, backend):
    """The op has no derivative: refuse inputs that need one (the public function routes those through a
    differentiable path) rather than return outputs without gradients."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k_cache, v_cache, k_new, v_new)):
        raise RuntimeError("sslfast::attention_with_kvcache has no derivative; call sslfast.ops.attention_with_kvcache, "
                           "which differentiates through a PyTorch path")
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.sslfast.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale,
                                                        backend)


torch.library.impl("sslfast::attention_with_kvcache", "Autograd", _kvcache_autograd)


@torch.library.register_fake("sslfast::attention_with_kvcache")
def _(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale, backend):
    return torch.empty_like(q)


def _torch_impl(q, k_cache, v_cache, lengths, causal, scale, host_lengths=None):
    """SDPA over the used part of the caches with a per-sequence length (and causal) mask.

    ``host_lengths``: ``lengths`` as a Python list when known without a device sync; when every row has the
    same length the mask is dropped (one query per row, or no causal mask) or is SDPA's own causal mask (the
    queries are the whole cache), which is what decoding a batch of equal-length prompts needs.
    """
    b, sq, h, d = q.shape
    if host_lengths is not None:
        used = max(host_lengths, default=0)
    else:
        used = int(lengths.max()) if b else 0
    if used == 0:  # no sequence has a key yet
        return torch.zeros_like(q)
    group = h // k_cache.shape[2]
    k = k_cache[:, :used].transpose(1, 2)  # (B, Hkv, L, D)
    v = v_cache[:, :used].transpose(1, 2)
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if host_lengths is not None and min(host_lengths) == used and (sq == 1 or not causal or sq == used):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, scale=scale,
                                             is_causal=causal and sq > 1)  # (B, H, Sq, D)
        return out.transpose(1, 2).contiguous()
    j = torch.arange(used, device=q.device)
    keep = j[None, :] < lengths[:, None].long()  # (B, L)
    keep = keep[:, None, :].expand(b, sq, used)
    if causal:
        limit = lengths[:, None].long() - sq + torch.arange(sq, device=q.device)[None, :]  # (B, Sq)
        keep = keep & (j[None, None, :] <= limit[:, :, None])
    out = sdpa_exact(q.transpose(1, 2), k, v, keep[:, None], scale)  # (B, H, Sq, D)
    return out.transpose(1, 2).contiguous()


def _triton_impl(q, k_cache, v_cache, lengths, causal, scale):
    from sslfast.kernels.kv_attention import (
        COMBINE_CONFIG,
        kv_attention_combine_kernel,
        kv_attention_split_kernel,
        num_splits,
        split_config,
    )
    b, sq, h, d = q.shape
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("attention_with_kvcache: the caches need a unit stride in the head dim")
    from sslfast.kernels.constants import cdiv, dtype_name, head_dim_block
    block_d = head_dim_block(d)
    launch = split_config(block_d, dtype_name(q.dtype), triton_interpreted())
    m_tiles = cdiv(sq, launch["BLOCK_M"])
    sms = 4 if triton_interpreted() else torch.cuda.get_device_properties(q.device).multi_processor_count
    splits = num_splits(k_cache.shape[1], b * h * m_tiles, launch["BLOCK_N"], sms)
    chunk = cdiv(cdiv(k_cache.shape[1], splits), launch["BLOCK_N"]) * launch["BLOCK_N"]  # whole key tiles per split
    o_part = empty_output((b, h, splits, sq, d), dtype=torch.float32, device=q.device)
    l_part = empty_output((b, h, splits, sq), dtype=torch.float32, device=q.device)
    upcast = triton_interpreted() and q.dtype == torch.bfloat16  # the interpreter's bf16 arithmetic is wrong
    kv_attention_split_kernel[(m_tiles * splits, h, b)](
        q, k_cache, v_cache, lengths, o_part, l_part,
        q.stride(0), q.stride(1), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3),
        l_part.stride(0), l_part.stride(1), l_part.stride(2),
        sq, h // k_cache.shape[2], chunk, float(scale),
        CAUSAL=causal, HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=splits, UPCAST=upcast, INPUT_PRECISION="ieee",
        **launch)
    out = empty_output(q.shape, dtype=q.dtype, device=q.device)
    combine = dict(COMBINE_CONFIG)
    kv_attention_combine_kernel[(cdiv(sq, combine["BLOCK_M"]), h, b)](
        o_part, l_part, out,
        o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3),
        l_part.stride(0), l_part.stride(1), l_part.stride(2), out.stride(0), out.stride(1), out.stride(2),
        sq, HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=splits, **combine)
    return out


def attention_with_kvcache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           cache_seqlens: torch.Tensor, k_new: Optional[torch.Tensor] = None,
                           v_new: Optional[torch.Tensor] = None, *, causal: bool = True, scale: Optional[float] = None,
                           check_capacity: bool = True, backend: str = "auto") -> torch.Tensor:
    """Attend ``q`` (B, Sq, H, D) over each sequence's cache; returns (B, Sq, H, D).

    ``k_cache`` / ``v_cache`` (B, S_max, Hkv, D), H a multiple of Hkv (grouped queries). ``cache_seqlens``
    (B,) int32: how many positions of each row are filled. With ``k_new`` / ``v_new`` (B, Sq, Hkv, D) the new
    keys and values are first written **in place** at positions ``cache_seqlens[b] ...`` of row b (the caller
    then adds Sq to ``cache_seqlens``), and row b attends over ``cache_seqlens[b] + Sq`` keys; ``causal``
    aligns the mask bottom-right, so new query i sees the cache and new keys up to its own. A row that sees no
    key gives 0. ``check_capacity`` verifies (one host sync) that the appended rows fit in S_max.
    """
    _validate(q, k_cache, v_cache, cache_seqlens, k_new, v_new, scale)
    if check_capacity and q.shape[0]:
        longest, low = torch.stack([cache_seqlens.max(), cache_seqlens.min()]).tolist()  # one host sync
        needed = longest + (q.shape[1] if k_new is not None else 0)
        if low < 0 or needed > k_cache.shape[1]:
            raise ValueError(f"attention_with_kvcache: cache_seqlens must be >= 0 and leave room for the new keys: "
                             f"needs {needed} positions, the cache has {k_cache.shape[1]}")
    name = kvcache_backend(q.device, q.dtype, q.shape[-1], causal, backend)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k_new, v_new, k_cache, v_cache)):
        return _differentiable(q, k_cache, v_cache, cache_seqlens, k_new, v_new, bool(causal), scale)
    return torch.ops.sslfast.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new, v_new, bool(causal),
                                                    scale, name)


def kvcache_backend(device: torch.device, dtype: torch.dtype, head_dim: int, causal: bool = True,
                    backend: str = "auto") -> str:
    """The backend :func:`attention_with_kvcache` runs for these inputs (``auto``: the Triton kernel on CUDA
    where its variant passed the self-check, the C++ kernel for fp32 on the CPU, PyTorch otherwise). Decoding
    loops resolve it once per step."""
    if backend == "auto" and device.type == "cpu" and not (CPP_KVCACHE_AVAILABLE and dtype == torch.float32):
        return "torch"
    name = resolve_backend("attention_with_kvcache", backend, device, ("triton", "cpp", "torch"))
    if name == "cpp" and not (CPP_KVCACHE_AVAILABLE and dtype == torch.float32):
        raise BackendUnavailableError("attention_with_kvcache: backend 'cpp' runs fp32 CPU tensors with a build of "
                                      f"the extension that has it; got {dtype}"
                                      + ("" if CPP_KVCACHE_AVAILABLE else " (not in this build)"))
    if name == "triton" and backend == "auto":
        if not kernel_allowed("attention_with_kvcache", device, dtype=dtype, head_dim=head_dim, causal=causal):
            name = "torch"
    return name


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
                     k_new: torch.Tensor, v_new: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    """:func:`attention_with_kvcache` (causal, new keys appended) for a decoding loop that checked its inputs
    once and resolved ``backend`` with :func:`kvcache_backend` for the step, and needs no gradient: the op is
    called directly (the C++ kernel's own op on the CPU), without the per-call checks and Python layers."""
    if backend == "cpp":
        return torch.ops.sslfast.kvcache_attention_cpp(q, k_cache, v_cache, cache_seqlens, k_new, v_new, True, scale)
    return torch.ops.sslfast.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new, v_new, True, scale,
                                                    backend)


def _differentiable(q, k_cache, v_cache, cache_seqlens, k_new, v_new, causal, scale):
    """Gradients through a cached step (prefix tuning, RL on continuations): the new keys are placed into
    copies of the caches (autograd sees them), attention runs in PyTorch, and the caches are then updated in
    place with detached values."""
    lengths = cache_seqlens
    k_all, v_all = k_cache, v_cache
    if k_new is not None:
        b, sq = q.shape[:2]
        rows = torch.arange(b, device=q.device)[:, None]
        positions = cache_seqlens.long()[:, None] + torch.arange(sq, device=q.device)
        k_all, v_all = k_cache.clone(), v_cache.clone()
        k_all = k_all.index_put((rows, positions), k_new)
        v_all = v_all.index_put((rows, positions), v_new)
        with torch.no_grad():
            k_cache[rows, positions] = k_new.detach()
            v_cache[rows, positions] = v_new.detach()
        lengths = cache_seqlens + sq
    return _torch_impl(q, k_all, v_all, lengths, causal, scale)
