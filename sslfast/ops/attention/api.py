"""Masked attention (key padding, causal, variable-length batches).

GPU path: the Triton FlashAttention-style kernels (``sslfast.ops.attention.flash``; forward, backward,
counter-based dropout). CPU path: PyTorch's own fused ``F.scaled_dot_product_attention`` (the best CPU
kernel), with the padding, causal and varlen semantics made exact around it; its dropout draws from torch's
generator (reproducible under ``torch.manual_seed``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslfast.constants import HEAD_DIMS, supported_head_dim
from sslfast.ops._dispatch import resolve_backend
from sslfast.ops._input_checks import check_same_device, check_tensor
from sslfast.ops._kernel_verdicts import kernel_allowed
from sslfast.ops.attention.flash import (
    flash_attention,
    packed_sequence_table,
    padded_sequence_table,
)
from sslfast.ops.token_layout import TokenLayout

__all__ = ["attention", "varlen_attention", "unpad", "pad", "attention_reference", "varlen_attention_reference",
           "sdpa_exact"]



def attention_reference(q, k, v, *, attention_mask=None, causal=False, scale=None, dropout_mask=None,
                        dropout_p=0.0):
    """softmax(QKᵀ·scale + mask)V in the inputs' dtype; fully masked rows give 0. q (B,H,Sq,D), k/v (B,H,Sk,D).

    ``dropout_mask`` (B, H, Sq, Sk) bool keeps probabilities, scaled by 1/(1 - dropout_p)."""
    keep = _keep_mask(q, k, attention_mask, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Sq, Sk)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(q.dtype)
    if dropout_mask is not None:
        probs = probs * dropout_mask.to(probs.device) / (1.0 - dropout_p)
    return probs @ v


def varlen_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False):
    """Packed q (Tq, H, D), k and v (Tk, H, D): :func:`attention_reference` one sequence at a time (causal
    aligned bottom-right within each sequence pair)."""
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()

    def one(t, lo, hi):  # (1, H, L, D) view of one sequence
        return t[lo:hi].transpose(0, 1)[None]

    outs = [attention_reference(one(q, q0, q1), one(k, k0, k1), one(v, k0, k1), causal=causal)[0].transpose(0, 1)
            for q0, q1, k0, k1 in zip(starts_q[:-1], starts_q[1:], starts_k[:-1], starts_k[1:])]
    return torch.cat(outs)


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
    if not supported_head_dim(d):
        raise ValueError(f"{op}: head dim must be {HEAD_DIMS}, got {d}")
    if attention_mask is not None:
        if attention_mask.dtype not in (torch.bool, torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"{op}: attention_mask must be bool or 0/1 integers, got {attention_mask.dtype}")
        if tuple(attention_mask.shape) != (b, k.shape[2]):
            raise ValueError(f"{op}: attention_mask must be (B, Sk) = {(b, k.shape[2])}, got "
                             f"{tuple(attention_mask.shape)}")
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: scale must be positive, got {scale}")


def sdpa_exact(q, k, v, keep, scale, dropout_p=0.0):
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


def attention(q, k, v, *, attention_mask=None, causal=False, dropout_p=0.0, scale=None, deterministic=False,
              backend="auto"):
    """Attention over q (B, H, Sq, D), k and v (B, H, Sk, D), as ``F.scaled_dot_product_attention``.

    ``attention_mask`` (B, Sk) bool or 0/1: True/1 marks a real key (Hugging Face's convention).
    ``causal`` aligns the causal mask bottom-right when Sq != Sk (as flash-attention). ``scale``
    defaults to 1/sqrt(D). Query rows that see no key give 0 and get 0 gradient, never NaN.
    ``dropout_p`` drops attention probabilities (GPU: counter-based Philox seeded from torch's CUDA
    generator; CPU: SDPA's dropout on torch's generator). ``deterministic=True`` makes the GPU backward
    reproducible bit for bit: for head dims up to 64 dQ is otherwise summed with fp32 atomics, and this
    computes it in a separate pass instead (7 matmuls per tile pair instead of 5); larger head dims always
    take that pass. The CPU backward is always deterministic.
    """
    op = "attention"
    _validate(op, q, k, v, attention_mask, scale)
    _check_dropout(op, dropout_p)
    if _use_kernel(op, backend, q, causal, dropout_p):
        b, _, sq, _ = q.shape
        sk = k.shape[2]
        seqs = padded_sequence_table(b, sq, sk, attention_mask, q.device)
        key_mask = None if attention_mask is None else (attention_mask != 0).contiguous().view(torch.uint8)
        out, _ = flash_attention(q, k, v, seqs, key_mask=key_mask, max_seqlen_q=sq, max_seqlen_k=sk, packed=False,
                                 causal=causal, scale=scale, dropout_p=dropout_p, deterministic=deterministic)
        return out
    return sdpa_exact(q, k, v, _keep_mask(q, k, attention_mask, causal), scale, dropout_p)


def _use_kernel(op, backend, q, causal, dropout_p) -> bool:
    """Whether the Triton kernels run: an explicit backend decides; ``auto`` takes them on CUDA for 16-bit
    inputs whose variant passed its self-check on this GPU (fp32 goes to PyTorch's SDPA, which uses TF32 /
    cuDNN where the fp32 kernels would run on FMA units)."""
    chosen = resolve_backend(op, backend, q.device, ("triton", "torch"))
    if chosen != "triton" or backend != "auto":
        return chosen == "triton"
    if q.dtype == torch.float32:
        return False
    return kernel_allowed("attention", q.device, dtype=q.dtype, head_dim=q.shape[-1], causal=causal,
                          dropout=dropout_p > 0)


def _check_dropout(op, p):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {p}")


def unpad(x: torch.Tensor, attention_mask: torch.Tensor):
    """(B, S, ...) + mask (B, S) → packed (total, ...), indices (total,), cu_seqlens (B+1,) int32, max_seqlen."""
    layout = TokenLayout.from_mask(attention_mask, *attention_mask.shape[:2], always_index=True)
    return layout.pack(x), layout.indices, layout.cu_seqlens, layout.max_seqlen


def pad(x: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad`: packed (total, ...) → (batch, seqlen, ...) with zeros at padding."""
    return TokenLayout(batch, seqlen, indices=indices).unpack(x)


def _check_cu_seqlens(op, cu_q, cu_k, total_q, total_k, max_q, max_k, check_values):
    """dtype/shape checks; with ``check_values``, also the values of both tensors in one host sync."""
    for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        check_tensor(op, name, cu, dtypes=(torch.int32,), dim=1)
        if cu.numel() < 2:
            raise ValueError(f"{op}: {name} needs batch+1 >= 2 entries, got {cu.numel()}")
    if cu_q.numel() != cu_k.numel():
        raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k describe different batch sizes "
                         f"({cu_q.numel() - 1} and {cu_k.numel() - 1})")
    if not check_values:
        return
    stats = torch.stack([torch.stack([cu[0], cu[-1], (cu[1:] - cu[:-1]).min(), (cu[1:] - cu[:-1]).max()])
                         for cu in (cu_q, cu_k)]).tolist()  # one host sync for both
    for (first, last, shortest, longest), name, cu, total, max_seqlen in zip(
            stats, ("cu_seqlens_q", "cu_seqlens_k"), (cu_q, cu_k), (total_q, total_k), (max_q, max_k)):
        if first != 0 or shortest < 0:
            raise ValueError(f"{op}: {name} must start at 0 and never decrease, got {cu.tolist()}")
        if last != total:
            raise ValueError(f"{op}: {name} ends at {last} but the packed tensor has {total} tokens")
        if longest > max_seqlen:
            raise ValueError(f"{op}: a sequence in {name} is longer ({longest}) than max_seqlen={max_seqlen}")


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                     dropout_p=0.0, scale=None, deterministic=False, check_cu_seqlens=True, backend="auto"):
    """Attention over packed (total, H, D) sequences delimited by int32 cumulative lengths (batch+1),
    as flash-attention's varlen API: no compute spent on padding. ``causal`` aligns bottom-right within
    each sequence pair; the other options are those of :func:`attention`. Packed dropout draws equal the
    padded ones at the same positions. ``check_cu_seqlens=False`` skips the value checks of the cumulative
    lengths (one host sync per call): for callers that built them, e.g. with :func:`unpad`."""
    op = "varlen_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, dim=3)
    check_same_device(op, q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    if k.shape != v.shape or q.shape[1:] != k.shape[1:]:
        raise ValueError(f"{op}: expected q (Tq, H, D), k and v (Tk, H, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _check_dropout(op, dropout_p)
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: scale must be positive, got {scale}")
    _check_cu_seqlens(op, cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], max_seqlen_q, max_seqlen_k,
                      check_cu_seqlens)
    d = q.shape[2]
    if not supported_head_dim(d):
        raise ValueError(f"{op}: head dim must be {HEAD_DIMS}, got {d}")
    if _use_kernel(op, backend, q, causal, dropout_p):
        seqs = packed_sequence_table(cu_seqlens_q, cu_seqlens_k)
        out, _ = flash_attention(q, k, v, seqs, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, packed=True,
                                 causal=causal, scale=scale, dropout_p=dropout_p, deterministic=deterministic)
        return out
    if q.device.type == "cpu":
        return _varlen_per_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, dropout_p)
    return _varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, dropout_p)


def _varlen_per_sequence(q, k, v, cu_q, cu_k, causal, scale, dropout_p):
    """One SDPA call per sequence on views of the packed tensors: no padding computed, nothing copied in.
    (The best CPU choice: SDPA's CPU kernel runs each call on all cores.)"""
    starts_q, starts_k = torch.stack([cu_q, cu_k]).tolist()  # one host sync

    def pieces(x, starts):  # split, not slices: its backward is one cat, not a zero-filled full-size
        sizes = [b - a for a, b in zip(starts[:-1], starts[1:])]  # gradient per sequence
        if starts[-1] != x.shape[0] or starts[0] != 0:  # unchecked cu_seqlens that do not cover x
            sizes = [starts[0]] + sizes + [x.shape[0] - starts[-1]]
            return torch.split(x, sizes)[1:-1]
        return torch.split(x, sizes)

    qs, ks, vs = pieces(q, starts_q), pieces(k, starts_k), pieces(v, starts_k)
    outs = []
    for b in range(len(starts_q) - 1):
        lq, lk = starts_q[b + 1] - starts_q[b], starts_k[b + 1] - starts_k[b]
        if lq == 0:
            continue
        qb, kb, vb = (x[b].transpose(0, 1)[None] for x in (qs, ks, vs))  # (1, H, L, D) views
        if lk == 0:
            outs.append(q.new_zeros(lq, q.shape[1], q.shape[2]) + 0 * qb.sum())  # keeps q in the graph
            continue
        if causal and lq == lk:
            out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale, dropout_p=dropout_p)
        elif causal:  # bottom-right: query i sees keys j <= i + lk - lq (rows before the diagonal see none)
            keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)[None, None]
            out = sdpa_exact(qb, kb, vb, keep, scale, dropout_p)
        else:
            out = F.scaled_dot_product_attention(qb, kb, vb, scale=scale, dropout_p=dropout_p)
        outs.append(out[0].transpose(0, 1))  # (L, H, D)
    if not outs:
        return q.new_zeros(q.shape) + 0 * q.sum()
    return torch.cat(outs)


def _varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, dropout_p):
    """Pad to (B, H, max_seqlen, D) and run one masked SDPA (the fallback for CUDA without Triton)."""
    len_q, len_k = cu_seqlens_q[1:] - cu_seqlens_q[:-1], cu_seqlens_k[1:] - cu_seqlens_k[:-1]
    batch, heads, d = len_q.numel(), q.shape[1], q.shape[2]
    rows_q = TokenLayout(batch, max_seqlen_q, cu_seqlens=cu_seqlens_q, max_seqlen=max_seqlen_q,
                         packed_shape=(q.shape[0],)).grid_positions()
    rows_k = TokenLayout(batch, max_seqlen_k, cu_seqlens=cu_seqlens_k, max_seqlen=max_seqlen_k,
                         packed_shape=(k.shape[0],)).grid_positions()

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
    out = sdpa_exact(qp, kp, vp, keep, scale, dropout_p)  # (B, H, Sq, D)
    return out.transpose(1, 2).reshape(batch * max_seqlen_q, heads, d).index_select(0, rows_q)
