"""Thin interface over the Triton FlashAttention kernels: sequence tables, launches, torch.library ops.

``sslfast::flash_attention_forward`` returns (out, lse) and ``sslfast::flash_attention_backward`` returns
(dq, dk, dv); autograd is registered between them, so ``torch.compile`` traces both without graph breaks.
Layouts: padded q (B, H, Sq, D), k/v (B, H, Sk, D), lse (B, H, Sq); packed q (Tq, H, D), k/v (Tk, H, D),
lse (H, Tq). Any strides with a unit last stride.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from sslfast.ops._dispatch import empty_output, triton_interpreted
from sslfast.ops._philox import dropout_threshold, effective_dropout_p

__all__ = ["padded_sequence_table", "packed_sequence_table", "flash_attention", "new_dropout_seed"]



def padded_sequence_table(batch: int, sq: int, sk: int, attention_mask: Optional[torch.Tensor],
                          device) -> torch.Tensor:
    """(B, 7) int32 table for padded batches; the key window spans the mask's first to last real key
    (computed on the device, no host sync)."""
    if attention_mask is None or sk == 0:
        k_lo = torch.zeros(batch, dtype=torch.int64, device=device)
        k_hi = torch.full((batch,), sk, dtype=torch.int64, device=device)
    else:
        real = attention_mask != 0  # (B, Sk)
        any_real = real.any(-1)
        k_lo = torch.where(any_real, real.byte().argmax(-1), 0)
        k_hi = torch.where(any_real, sk - real.flip(-1).byte().argmax(-1), 0)
    zeros = torch.zeros_like(k_lo)
    cols = [zeros, zeros + sq, zeros, zeros + sk, k_lo, k_hi, zeros + (sk - sq)]
    return torch.stack(cols, 1).to(torch.int32).contiguous()


def packed_sequence_table(cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor) -> torch.Tensor:
    """(B, 7) int32 table for packed batches delimited by cumulative lengths."""
    len_q = cu_seqlens_q[1:] - cu_seqlens_q[:-1]
    len_k = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
    cols = [cu_seqlens_q[:-1], len_q, cu_seqlens_k[:-1], len_k, torch.zeros_like(len_k), len_k, len_k - len_q]
    return torch.stack(cols, 1).to(torch.int32).contiguous()


def new_dropout_seed(device) -> torch.Tensor:
    """A (1,) int64 Philox seed drawn from torch's generator for ``device`` (reproducible under
    ``torch.manual_seed``; no host sync on CUDA)."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=device)


def _bth(t: torch.Tensor, packed: bool) -> tuple[int, int, int]:
    """(batch, token, head) strides: padded (B, H, S, D) or packed (T, H, D); lse (B, H, S) or (H, T)."""
    if packed:
        return (0, t.stride(0), t.stride(1)) if t.dim() == 3 else (0, t.stride(1), t.stride(0))
    return t.stride(0), t.stride(2), t.stride(1)


def _lse_shape(q: torch.Tensor, packed: bool) -> tuple[int, ...]:
    """Log-sum-exp per query row: (H, Tq) packed, (B, H, Sq) padded."""
    return (q.shape[1], q.shape[0]) if packed else tuple(q.shape[:3])


def _kernel_ready(t: torch.Tensor, max_len: int, packed: bool) -> torch.Tensor:
    """``t`` with a unit last stride whose offsets inside one batch entry (heads × head stride + max_len ×
    token stride) fit the kernels' 32-bit arithmetic; a padded view is made contiguous if that is what it takes."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    token_stride = t.stride(0) if packed else t.stride(2)
    span = (t.shape[1] - 1) * t.stride(1) + max(max_len - 1, 0) * token_stride + t.shape[-1]
    if span < 2 ** 31:
        return t
    if not packed and not t.is_contiguous():
        return _kernel_ready(t.contiguous(), max_len, packed)
    raise ValueError(f"flash attention: one batch entry spans {span} elements (shape {tuple(t.shape)}, strides "
                     f"{t.stride()}, {max_len} tokens), beyond the kernels' 32-bit offsets (2^31); split the "
                     f"sequence or the heads")


def _launch_params(q, dropout_p, scale):
    d = q.shape[-1]
    from sslfast.kernels.constants import dtype_name, head_dim_block
    return dict(HEAD_DIM=d, BLOCK_D=head_dim_block(d), INPUT_PRECISION="ieee"), dtype_name(q.dtype), float(scale), \
        _dropout_args(dropout_p)


def _dropout_args(dropout_p: float):
    return dropout_threshold(dropout_p), 1.0 / (1.0 - effective_dropout_p(dropout_p))


def _grid(seqs, q, tiles):
    """(tiles, heads, batch): heads = q.shape[1] in both layouts; batch and heads each up to 65535."""
    batch, heads = seqs.shape[0], q.shape[1]
    if batch > 65535 or heads > 65535:
        raise ValueError(f"flash attention: batch ({batch}) and heads ({heads}) must each be <= 65535")
    return (max(1, tiles), heads, batch)


def _forward_impl(q, k, v, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed, causal, scale, dropout_p):
    from sslfast.kernels.constants import cdiv
    from sslfast.kernels.flash_attention import (
        flash_attention_fwd_kernel,
        forward_config,
    )
    q = _kernel_ready(q, max_seqlen_q, packed)
    k, v = (_kernel_ready(t, max_seqlen_k, packed) for t in (k, v))
    out = empty_output(q.shape, dtype=q.dtype, device=q.device)
    if packed and q.shape[0] * q.shape[1] >= 2 ** 31:
        raise ValueError(f"flash attention: {q.shape[0]} packed tokens × {q.shape[1]} heads of statistics exceed "
                         f"the kernels' 32-bit offsets; split the batch")
    lse = empty_output(_lse_shape(q, packed), dtype=torch.float32, device=q.device)
    consts, dtype, scale, (threshold, drop_scale) = _launch_params(q, dropout_p, scale)
    launch = forward_config(consts["BLOCK_D"], dtype, dropout_p > 0, triton_interpreted())
    grid = _grid(seqs, q, cdiv(max_seqlen_q, launch["BLOCK_M"]))
    flash_attention_fwd_kernel[grid](
        q, k, v, out, lse, seqs, seqs if key_mask is None else key_mask, seqs if seed is None else seed,
        *_bth(q, packed), *_bth(k, packed), *_bth(v, packed), *_bth(out, packed), *_bth(lse, packed),
        0 if key_mask is None else key_mask.stride(0), q.shape[1], scale, threshold, drop_scale,
        CAUSAL=causal, HAS_KEY_MASK=key_mask is not None, DROPOUT=dropout_p > 0, **consts, **launch)
    return out, lse


def _backward_impl(dout, dlse, q, k, v, out, lse, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed, causal,
                   scale, dropout_p, deterministic):
    """dS = P∘(dP − delta) with delta_i = Σ_d dO·O; a gradient reaching lse adds P∘dlse, i.e. delta − dlse."""
    from sslfast.kernels import flash_attention_backward as kb
    from sslfast.kernels.constants import cdiv
    dout, q, out = (_kernel_ready(t, max_seqlen_q, packed) for t in (dout, q, out))
    k, v = (_kernel_ready(t, max_seqlen_k, packed) for t in (k, v))
    consts, dtype, scale, (threshold, drop_scale) = _launch_params(q, dropout_p, scale)
    interpreted = triton_interpreted()
    heads = q.shape[1]
    mask_arg = seqs if key_mask is None else key_mask
    mask_stride = 0 if key_mask is None else key_mask.stride(0)
    seed_arg = seqs if seed is None else seed
    flags = dict(CAUSAL=causal, HAS_KEY_MASK=key_mask is not None, DROPOUT=dropout_p > 0)

    delta = torch.empty_like(lse)
    pre = kb.backward_config("preprocess", consts["BLOCK_D"], dtype, False, interpreted)
    kb.flash_attention_bwd_preprocess_kernel[_grid(seqs, q, cdiv(max_seqlen_q, pre["BLOCK_M"]))](
        out, dout, delta, seqs, *_bth(out, packed), *_bth(dout, packed), *_bth(lse, packed), heads,
        HEAD_DIM=consts["HEAD_DIM"], BLOCK_D=consts["BLOCK_D"], **pre)
    if dlse is not None:
        delta = delta - dlse

    dk = empty_output(k.shape, dtype=k.dtype, device=k.device)
    dv = empty_output(v.shape, dtype=v.dtype, device=v.device)
    atomic = kb.dq_by_atomics(consts["BLOCK_D"], deterministic)
    if atomic:  # fp32 accumulator for the atomic adds
        dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    else:
        dq_acc = empty_output(q.shape, dtype=q.dtype, device=q.device)
    cfg = kb.backward_config("dkdv_atomic" if atomic else "dkdv", consts["BLOCK_D"], dtype, dropout_p > 0,
                             interpreted)
    kb.flash_attention_bwd_dkdv_kernel[_grid(seqs, q, cdiv(max_seqlen_k, cfg["BLOCK_N"]))](
        q, k, v, dout, lse, delta, dq_acc, dk, dv, seqs, mask_arg, seed_arg,
        *_bth(q, packed), *_bth(k, packed), *_bth(v, packed), *_bth(dout, packed), *_bth(lse, packed),
        *_bth(dq_acc, packed), *_bth(dk, packed), *_bth(dv, packed), mask_stride, heads, scale, threshold,
        drop_scale, ATOMIC_DQ=atomic, **flags, **consts, **cfg)
    if atomic:
        return dq_acc.to(q.dtype), dk, dv
    cfg = kb.backward_config("dq", consts["BLOCK_D"], dtype, dropout_p > 0, interpreted)
    kb.flash_attention_bwd_dq_kernel[_grid(seqs, q, cdiv(max_seqlen_q, cfg["BLOCK_M"]))](
        q, k, v, dout, lse, delta, dq_acc, seqs, mask_arg, seed_arg,
        *_bth(q, packed), *_bth(k, packed), *_bth(v, packed), *_bth(dout, packed), *_bth(lse, packed),
        *_bth(dq_acc, packed), mask_stride, heads, scale, threshold, drop_scale, **flags, **consts, **cfg)
    return dq_acc, dk, dv


@torch.library.custom_op("sslfast::flash_attention_forward", mutates_args=())
def _forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqs: torch.Tensor,
                key_mask: Optional[torch.Tensor], seed: Optional[torch.Tensor], max_seqlen_q: int,
                max_seqlen_k: int, packed: bool, causal: bool, scale: float, dropout_p: float,
                deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(q, k, v, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed, causal, scale,
                         dropout_p)


@_forward_op.register_fake
def _(q, k, v, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed, causal, scale, dropout_p, deterministic):
    return q.new_empty(q.shape), q.new_empty(_lse_shape(q, packed), dtype=torch.float32)  # contiguous, as the real


@torch.library.custom_op("sslfast::flash_attention_backward", mutates_args=())
def _backward_op(dout: torch.Tensor, dlse: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, seqs: torch.Tensor,
                 key_mask: Optional[torch.Tensor], seed: Optional[torch.Tensor], max_seqlen_q: int, max_seqlen_k: int,
                 packed: bool, causal: bool, scale: float, dropout_p: float, deterministic: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(dout, dlse, q, k, v, out, lse, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed,
                          causal, scale, dropout_p, deterministic)


@_backward_op.register_fake
def _(dout, dlse, q, k, v, out, lse, seqs, key_mask, seed, max_seqlen_q, max_seqlen_k, packed, causal, scale,
      dropout_p, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)  # contiguous, as the real ones


def _setup_context(ctx, inputs, output):
    q, k, v, seqs, key_mask, seed, max_q, max_k, packed, causal, scale, dropout_p, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, seqs, key_mask, seed)
    ctx.args = (max_q, max_k, packed, causal, scale, dropout_p, deterministic)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, seqs, key_mask, seed = ctx.saved_tensors
    max_q, max_k, packed, causal, scale, dropout_p, deterministic = ctx.args
    if grad_out is None:  # only lse was used downstream
        grad_out = torch.zeros_like(out)
    dq, dk, dv = _backward_op(grad_out, grad_lse, q, k, v, out, lse, seqs, key_mask, seed, max_q, max_k, packed,
                              causal, scale, dropout_p, deterministic)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def flash_attention(q, k, v, seqs, *, key_mask=None, max_seqlen_q, max_seqlen_k, packed, causal=False, scale=None,
                    dropout_p=0.0, seed=None, deterministic=False):
    """Triton attention over a sequence table; returns (out, lse), both differentiable. Inputs are assumed
    validated. ``torch.use_deterministic_algorithms(True)`` implies ``deterministic=True``.

    ``key_mask`` (B, Sk) uint8 for padded batches with holes; ``seed`` (1,) int64 Philox seed (drawn from
    torch's generator when dropout is on and none is given).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if dropout_threshold(dropout_p) >= 1 << 16:
        raise ValueError(f"flash attention: dropout_p={dropout_p} rounds to 1 at the kernels' 2^-16 resolution")
    deterministic = deterministic or torch.are_deterministic_algorithms_enabled()
    if dropout_p > 0 and seed is None:
        seed = new_dropout_seed(q.device)
    return _forward_op(q, k, v, seqs, key_mask, seed if dropout_p > 0 else None, int(max_seqlen_q),
                       int(max_seqlen_k), bool(packed), bool(causal), scale, float(dropout_p), bool(deterministic))
