"""Masked attention (key padding, causal, variable-length batches).

CPU path: PyTorch's own fused ``F.scaled_dot_product_attention`` (the best CPU kernel), with the padding,
causal and varlen semantics made exact around it; its dropout draws from torch's generator (reproducible
under ``torch.manual_seed``). The Triton FlashAttention-style kernels (GPU, with a counter-based dropout
RNG) are pending; CUDA tensors run the same SDPA path meanwhile.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslfast.ops._checks import check_same_device, check_tensor
from sslfast.ops._dispatch import BackendUnavailableError, empty_output, resolve_backend, triton_interpreted

__all__ = ["attention", "varlen_attention", "unpad", "pad", "attention_reference"]

_HEAD_DIMS = "a multiple of 8 from 8 to 256"


def attention_reference(q, k, v, *, attention_mask=None, causal=False, scale=None):
    """softmax(QKᵀ·scale + mask)V in the inputs' dtype; fully masked rows give 0. q (B,H,Sq,D), k/v (B,H,Sk,D)."""
    keep = _keep_mask(q, k, attention_mask, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Sq, Sk)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    return probs @ v


def _keep_mask(q, k, attention_mask, causal):
    """Boolean (B or 1, 1, Sq, Sk) mask of visible keys, or None when every key is visible."""
    sq, sk = q.shape[2], k.shape[2]
    keep = None
    if attention_mask is not None:
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Sk)
    if causal:  # aligned bottom-right, as flash-attention: query i sees keys j <= i + (Sk - Sq)
        tri = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        keep = tri[None, None] if keep is None else keep & tri
    return keep


def _validate(op, q, k, v, attention_mask, scale):
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, dim=4)
    check_same_device(op, q=q, k=k, v=v, attention_mask=attention_mask)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h) or k.shape[2] != v.shape[2]:
        raise ValueError(f"{op}: expected q (B, H, Sq, D), k and v (B, H, Sk, D) with the same B and H; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[3] != d or v.shape[3] != d:
        raise ValueError(f"{op}: head dims differ: q {d}, k {k.shape[3]}, v {v.shape[3]}")
    if d % 8 or not 8 <= d <= 256:
        raise ValueError(f"{op}: head dim must be {_HEAD_DIMS}, got {d}")
    if attention_mask is not None:
        if attention_mask.dtype not in (torch.bool, torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"{op}: attention_mask must be bool or 0/1 integers, got {attention_mask.dtype}")
        if tuple(attention_mask.shape) != (b, k.shape[2]):
            raise ValueError(f"{op}: attention_mask must be (B, Sk) = {(b, k.shape[2])}, got "
                             f"{tuple(attention_mask.shape)}")
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: scale must be positive, got {scale}")


def _sdpa_exact(q, k, v, keep, scale, dropout_p=0.0):
    """SDPA with ``keep``; query rows that see no key give 0 output and 0 gradient, never NaN."""
    if keep is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, dropout_p=dropout_p)
    sees_some = keep.any(-1, keepdim=True)  # (B|1, 1, Sq, 1)
    if bool(sees_some.all()):  # the common case: no empty row, no extra pass
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, dropout_p=dropout_p)
    # unmask one key for empty rows so SDPA stays finite; their output (and so their gradient) is zeroed
    safe = keep | (~sees_some & (torch.arange(keep.shape[-1], device=keep.device) == 0))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, scale=scale, dropout_p=dropout_p)
    return out.masked_fill(~sees_some, 0.0)


def attention(q, k, v, *, attention_mask=None, causal=False, dropout_p=0.0, scale=None, backend="auto"):
    """Attention over q (B, H, Sq, D), k and v (B, H, Sk, D), as ``F.scaled_dot_product_attention``.

    ``attention_mask`` (B, Sk) bool or 0/1: True/1 marks a real key (Hugging Face's convention).
    ``causal`` aligns the causal mask bottom-right when Sq != Sk (as flash-attention). ``scale``
    defaults to 1/sqrt(D). Query rows that see no key give 0, never NaN.
    """
    op = "attention"
    _validate(op, q, k, v, attention_mask, scale)
    _check_dropout(op, dropout_p)
    resolve_backend(op, backend, q.device, ("triton", "torch"))
    if backend == "triton":  # explicit only: "auto" keeps SDPA until the kernels are measured on a GPU
        _triton_supported(op, dropout_p, q, k, v)
        key_lengths = None if attention_mask is None else _right_padded_lengths(op, attention_mask)
        return _flash_forward_padded(q, k, v, key_lengths, causal, scale)
    return _sdpa_exact(q, k, v, _keep_mask(q, k, attention_mask, causal), scale, dropout_p)


def _triton_supported(op, dropout_p, *tensors):
    if dropout_p:
        raise BackendUnavailableError(f"{op}: the Triton kernel has no dropout yet; use backend='torch'")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise BackendUnavailableError(f"{op}: the Triton kernel is forward-only so far (inference); use "
                                      f"backend='torch' for training")


def _right_padded_lengths(op, attention_mask):
    """(B,) int32 real-key counts of a right-padded mask (True/1 then False/0); raises for other patterns."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1, dtype=torch.int32)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not bool((prefix == mask).all()):
        raise BackendUnavailableError(f"{op}: the Triton kernel takes right-padded masks only; use backend='torch' "
                                      f"for masks with holes")
    return lengths


def _launch_flash_forward(q, k, v, out, lse, starts_q, lens_q, starts_k, lens_k, diag, strides, batch, max_q,
                          causal, scale):
    from sslfast.kernels.flash_attention import block_sizes, flash_attention_fwd_kernel
    heads, d = q.shape[-2] if q.dim() == 3 else q.shape[1], q.shape[-1]
    block_d = max(16, triton_next_power_of_2(d))
    dtype = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[q.dtype]
    launch = block_sizes(block_d, dtype, triton_interpreted())
    grid = (max(1, -(-max_q // launch["BLOCK_M"])), batch * heads)
    flash_attention_fwd_kernel[grid](
        q, k, v, out, lse, starts_q, lens_q, starts_k, lens_k, diag, *strides, heads, d, float(scale), CAUSAL=causal,
        BLOCK_D=block_d, INPUT_PRECISION="ieee",  # fp32: exact products, as the PyTorch fp32 path
        **launch)


def triton_next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _flash_forward_padded(q, k, v, key_lengths, causal, scale):
    """Triton forward on (B, H, S, D): out like q, lse (B, H, Sq) fp32 (+inf where a row sees no key)."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    b, h, sq, d = q.shape
    sk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = empty_output(q.shape, dtype=q.dtype, device=q.device)
    lse = empty_output((b, h, sq), dtype=torch.float32, device=q.device)
    zeros = torch.zeros(b, dtype=torch.int32, device=q.device)
    lens_q = torch.full((b,), sq, dtype=torch.int32, device=q.device)
    lens_k = torch.full((b,), sk, dtype=torch.int32, device=q.device) if key_lengths is None else key_lengths
    strides = (q.stride(0), q.stride(2), q.stride(1), k.stride(0), k.stride(2), k.stride(1),
               v.stride(0), v.stride(2), v.stride(1), out.stride(0), out.stride(2), out.stride(1),
               lse.stride(0), lse.stride(2), lse.stride(1))
    diag = torch.full((b,), sk - sq, dtype=torch.int32, device=q.device)  # bottom-right on the padded lengths
    _launch_flash_forward(q, k, v, out, lse, zeros, lens_q, zeros, lens_k, diag, strides, b, sq, causal, scale)
    return out


def _flash_forward_varlen(q, k, v, cu_q, cu_k, max_q, causal, scale):
    """Triton forward on packed (T, H, D): out like q, lse (H, Tq) fp32."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = empty_output(q.shape, dtype=q.dtype, device=q.device)
    lse = empty_output((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
    starts_q, starts_k = cu_q[:-1].contiguous(), cu_k[:-1].contiguous()
    lens_q, lens_k = (cu_q[1:] - cu_q[:-1]).contiguous(), (cu_k[1:] - cu_k[:-1]).contiguous()
    strides = (0, q.stride(0), q.stride(1), 0, k.stride(0), k.stride(1), 0, v.stride(0), v.stride(1),
               0, out.stride(0), out.stride(1), 0, lse.stride(1), lse.stride(0))
    _launch_flash_forward(q, k, v, out, lse, starts_q, lens_q, starts_k, lens_k, (lens_k - lens_q).contiguous(),
                          strides, starts_q.numel(), max_q, causal, scale)
    return out


def _check_dropout(op, p):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {p}")


def unpad(x: torch.Tensor, attention_mask: torch.Tensor):
    """(B, S, ...) + mask (B, S) → packed (total, ...), indices (total,), cu_seqlens (B+1,) int32, max_seqlen."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    return x.flatten(0, 1)[indices], indices, cu_seqlens, max_seqlen


def pad(x: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad`: packed (total, ...) → (batch, seqlen, ...) with zeros at padding."""
    out = x.new_zeros(batch * seqlen, *x.shape[1:])
    out = out.index_copy(0, indices, x)
    return out.view(batch, seqlen, *x.shape[1:])


def _check_cu_seqlens(op, name, cu, total, max_seqlen):
    check_tensor(op, name, cu, dtypes=(torch.int32,), dim=1)
    if cu.numel() < 2:
        raise ValueError(f"{op}: {name} needs batch+1 >= 2 entries, got {cu.numel()}")
    lengths = cu[1:] - cu[:-1]
    if int(cu[0]) != 0 or bool((lengths < 0).any()):
        raise ValueError(f"{op}: {name} must start at 0 and never decrease, got {cu.tolist()}")
    if int(cu[-1]) != total:
        raise ValueError(f"{op}: {name} ends at {int(cu[-1])} but the packed tensor has {total} tokens")
    if int(lengths.max()) > max_seqlen:
        raise ValueError(f"{op}: a sequence in {name} is longer ({int(lengths.max())}) than max_seqlen={max_seqlen}")
    return lengths


def _padded_positions(cu, lengths, max_seqlen):
    """Row of every packed token in a (B * max_seqlen) padded layout."""
    total = int(cu[-1])
    batch_of = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths.long(),
                                       output_size=total)
    return batch_of * max_seqlen + (torch.arange(total, device=cu.device) - cu[:-1].long()[batch_of])


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                     dropout_p=0.0, scale=None, backend="auto"):
    """Attention over packed (total, H, D) sequences delimited by int32 cumulative lengths (batch+1),
    as flash-attention's varlen API. ``causal`` aligns bottom-right within each sequence pair."""
    op = "varlen_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, dim=3)
    check_same_device(op, q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    if k.shape != v.shape or q.shape[1:] != k.shape[1:]:
        raise ValueError(f"{op}: expected q (Tq, H, D), k and v (Tk, H, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    _check_dropout(op, dropout_p)
    len_q = _check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q)
    len_k = _check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)
    if len_q.numel() != len_k.numel():
        raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k describe different batch sizes")
    resolve_backend(op, backend, q.device, ("triton", "torch"))
    batch, heads, d = len_q.numel(), q.shape[1], q.shape[2]
    if d % 8 or not 8 <= d <= 256:
        raise ValueError(f"{op}: head dim must be {_HEAD_DIMS}, got {d}")
    if backend == "triton":  # explicit only, as in attention()
        _triton_supported(op, dropout_p, q, k, v)
        return _flash_forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, scale)
    if q.device.type == "cpu":
        return _varlen_per_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, dropout_p)
    return _varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, len_q, len_k, max_seqlen_q, max_seqlen_k, causal,
                          scale, dropout_p)


def _varlen_per_sequence(q, k, v, cu_q, cu_k, causal, scale, dropout_p):
    """One SDPA call per sequence on views of the packed tensors: no padding computed, nothing copied in.
    (The best CPU choice: SDPA's CPU kernel runs each call on all cores.)"""
    starts_q, starts_k = torch.stack([cu_q, cu_k]).tolist()  # one host sync
    outs = []
    for b in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_k[b], starts_k[b + 1]
        if q1 == q0:
            continue
        qb, kb, vb = (x[lo:hi].transpose(0, 1)[None] for x, lo, hi in ((q, q0, q1), (k, k0, k1), (v, k0, k1)))
        lq, lk = q1 - q0, k1 - k0  # (1, H, L, D) views
        if lk == 0:
            outs.append(q.new_zeros(lq, q.shape[1], q.shape[2]) + 0 * qb.sum())  # keeps q in the graph
            continue
        if causal and lq == lk:
            out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale, dropout_p=dropout_p)
        elif causal:  # bottom-right: query i sees keys j <= i + lk - lq (rows before the diagonal see none)
            keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)[None, None]
            out = _sdpa_exact(qb, kb, vb, keep, scale, dropout_p)
        else:
            out = F.scaled_dot_product_attention(qb, kb, vb, scale=scale, dropout_p=dropout_p)
        outs.append(out[0].transpose(0, 1))  # (L, H, D)
    if not outs:
        return q.new_zeros(q.shape) + 0 * q.sum()
    return torch.cat(outs)


def _varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, len_q, len_k, max_seqlen_q, max_seqlen_k, causal, scale,
                   dropout_p):
    """Pad to (B, H, max_seqlen, D) and run one masked SDPA (the fallback for CUDA without Triton)."""
    batch, heads, d = len_q.numel(), q.shape[1], q.shape[2]
    rows_q = _padded_positions(cu_seqlens_q, len_q, max_seqlen_q)
    rows_k = _padded_positions(cu_seqlens_k, len_k, max_seqlen_k)

    def to_padded(x, rows, seqlen):  # (total, H, D) -> (B, H, S, D)
        out = x.new_zeros(batch * seqlen, heads, d).index_copy(0, rows, x)
        return out.view(batch, seqlen, heads, d).transpose(1, 2)

    qp = to_padded(q, rows_q, max_seqlen_q)
    kp, vp = to_padded(k, rows_k, max_seqlen_k), to_padded(v, rows_k, max_seqlen_k)
    key_mask = torch.arange(max_seqlen_k, device=q.device)[None, :] < len_k[:, None]  # (B, Sk)
    keep = key_mask[:, None, None, :]
    if causal:  # bottom-right within each pair: query i of a length-Lq sequence sees keys j <= i + Lk - Lq
        i = torch.arange(max_seqlen_q, device=q.device)[None, :, None]
        j = torch.arange(max_seqlen_k, device=q.device)[None, None, :]
        keep = keep & (j <= i + (len_k - len_q)[:, None, None])[:, None]
    out = _sdpa_exact(qp, kp, vp, keep, scale, dropout_p)  # (B, H, Sq, D)
    return out.transpose(1, 2).reshape(batch * max_seqlen_q, heads, d).index_select(0, rows_q)
