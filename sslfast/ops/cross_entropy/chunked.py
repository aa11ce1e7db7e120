"""The chunked engine behind :func:`linear_cross_entropy`: the LM-head matmul fused with the loss, chunk by chunk.

Rows whose label is ``ignore_index`` are dropped before the matmul. For ``reduction="mean"|"sum"`` the
gradients are computed chunk by chunk during the forward (the upstream gradient of a scalar loss only
scales them), so neither the logits nor their softmax are ever stored whole; for ``reduction="none"``
the backward recomputes each chunk's logits from the saved log-sum-exp. Accumulation is fp32 whatever
the input dtype. On CUDA each chunk's logits come from one cuBLAS matmul and a fused Triton kernel
(``kernels/cross_entropy.py``) turns them into loss, log-sum-exp and gradient in place. On the CPU in fp32
they come from oneDNN's inner product (:mod:`sslfast.ops.inference_linear`), faster than the GEMM behind
``F.linear`` at these shapes (``benchmarks/RESULTS.md``, "Design measurements").
"""
from __future__ import annotations

import torch

from sslfast.ops._dispatch import empty_output
from sslfast.ops.cross_entropy.launch import _scale_unless_one, _triton_rows  # noqa: F401
from sslfast.ops.inference_linear import inference_linear

__all__ = ["_chunked_pass", "_chunk_rows"]

# fp32 logits of one chunk of rows. GPU: large chunks, fewer passes over grad_w (V × D) and fewer launches.
# CPU: the step time is flat from 32 to 128 MiB while the peak memory grows with it, so the smallest
# (benchmarks/RESULTS.md, "Design measurements").
_CHUNK_BYTES = {"cuda": 128 * 2**20, "cpu": 32 * 2**20}


def _chunk_rows(v: int, device: torch.device) -> int:
    """Rows per chunk: a few tens of MiB of fp32 logits, a multiple of 128 (whole GEMM tiles)."""
    budget = _CHUNK_BYTES.get(device.type, _CHUNK_BYTES["cpu"])
    return max(128, budget // (4 * max(v, 1)) // 128 * 128)


def _loss_and_dlogits(logits, labels, label_smoothing, z_loss, grad_scale=None):
    """Per-row loss (M,), log-sum-exp (M,) and, unless ``grad_scale`` is None, ``grad_scale`` (a float or (M,))
    times d loss_row / d logits (M, V) fp32."""
    v = logits.shape[1]
    logp = torch.log_softmax(logits, dim=1)  # (M, V): one fused pass
    target_logp = logp.gather(1, labels[:, None]).squeeze(1)  # (M,)
    lse = logits.gather(1, labels[:, None]).squeeze(1) - target_logp
    loss = -target_logp
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(dim=1)
    if z_loss:
        loss = loss + z_loss * lse.square()
    if grad_scale is None:
        return loss, lse, None
    del logits
    per_row = isinstance(grad_scale, torch.Tensor)
    probs = logp.exp_()  # softmax, in place of the log-probabilities
    factor = (1 + 2 * z_loss * lse) if z_loss else None  # (M,): z-loss and scale in one pass over the chunk
    if per_row or grad_scale != 1.0:
        factor = grad_scale if factor is None else factor * grad_scale
    if factor is not None:
        probs.mul_(factor[:, None] if isinstance(factor, torch.Tensor) else factor)
    row_scale = grad_scale[:, None] if per_row else torch.full_like(lse[:, None], grad_scale)  # (M, 1)
    probs.scatter_add_(1, labels[:, None], -(1 - label_smoothing) * row_scale)
    if label_smoothing:
        probs.sub_((label_smoothing / v) * row_scale)
    return loss, lse, probs


def _grad_hidden_into(out, dlogits, w32):
    """out (c, D) = dlogits (c, V) @ w32 (V, D). BLAS handles a row count's remainder modulo 8 with a
    sequential fp32 sum over all V classes (error growing with V), so those rows go through an 8-row,
    zero-padded product instead."""
    rows = out.shape[0]
    full = rows - rows % 8
    if full:
        torch.mm(dlogits[:full], w32, out=out[:full])
    if full < rows:
        padded = dlogits.new_zeros(8, dlogits.shape[1])
        padded[: rows - full] = dlogits[full:]
        out[full:] = (padded @ w32)[: rows - full]


def _accumulate_grad_weight(grad_w, dlogits, h):
    """grad_w (V, D) fp32 += dlogits.T (V, c) @ h (c, D), in place: no V x D temporary. 16-bit chunks on CUDA
    use the matmul's fp32 output dtype (``out_dtype``, cuBLAS accumulating into fp32); where this PyTorch lacks
    it, the product is added from a temporary."""
    if dlogits.dtype == grad_w.dtype and h.dtype == grad_w.dtype:
        grad_w.addmm_(dlogits.t(), h)
        return
    if grad_w.is_cuda and _OUT_DTYPE_ADDMM[0]:
        try:
            torch.addmm(grad_w, dlogits.t(), h, out_dtype=torch.float32, out=grad_w)
            return
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_ADDMM[0] = False  # not in this build: stop trying
    grad_w.add_(dlogits.t() @ h)


_OUT_DTYPE_ADDMM = [True]


def _chunked_pass(hidden, weight, bias, labels, label_smoothing, z_loss, needs, row_scale, backend):
    """Losses (M,), lse (M,) and, for the inputs flagged in ``needs`` (hidden, weight, bias), fp32 gradients
    of sum_i row_scale_i * loss_i, one chunk of rows at a time. ``row_scale``: None (no gradients), a float
    (the same for every row: the mean's 1/count) or an (M,) tensor."""
    m, d = hidden.shape
    v = weight.shape[0]
    dev = hidden.device
    want_grad = row_scale is not None
    per_row = isinstance(row_scale, torch.Tensor)
    losses = empty_output(m, dtype=torch.float32, device=dev)  # poisoned under SSLFAST_POISON=1
    lses = empty_output(m, dtype=torch.float32, device=dev)
    grad_h = empty_output((m, d), dtype=torch.float32, device=dev) if want_grad and needs[0] else None
    grad_w = torch.zeros(v, d, dtype=torch.float32, device=dev) if want_grad and needs[1] else None
    grad_b = torch.zeros(v, dtype=torch.float32, device=dev) if want_grad and needs[2] else None
    fused = backend == "triton"
    # Triton: logits in the input dtype (cuBLAS accumulates in fp32), the kernel upcasts and applies the row
    # scale for free. torch: fp32 logits. A scalar scale goes into the kernel, or once onto the (smaller)
    # gradients at the end: on the torch path, and for fp16 chunks (1/count could push their gradients below
    # fp16's smallest subnormal before the matmuls).
    w_mm = weight if fused else weight.float()
    b_mm = None if bias is None else (bias if fused else bias.float())
    scale_at_end = want_grad and not per_row and (not fused or hidden.dtype == torch.float16)
    in_pass = 1.0 if scale_at_end else row_scale  # None, a float or (M,)
    if fused and isinstance(in_pass, float):
        in_pass = torch.full((1,), in_pass, device=dev)  # the kernel reads its scale from the device
    step = _chunk_rows(v, dev)  # a multiple of 8 (see _grad_hidden_into)
    for s in range(0, m, step):
        h = hidden[s:s + step] if fused else hidden[s:s + step].float()  # (c, D)
        y = labels[s:s + step]
        with torch.no_grad():  # the gradients below are explicit; CPU fp32 takes oneDNN (faster than MKL here)
            logits = inference_linear(h, w_mm, b_mm)  # (c, V)
        chunk_scale = in_pass[s:s + step] if per_row else in_pass
        if fused:  # labels are kept ones: no row is ignored (-1 never matches)
            loss, lse, dlogits = _triton_rows(logits, y, -1, label_smoothing, z_loss, chunk_scale)
        else:
            loss, lse, dlogits = _loss_and_dlogits(logits, y, label_smoothing, z_loss, chunk_scale)
        losses[s:s + step] = loss
        lses[s:s + step] = lse
        if not want_grad:
            continue
        if grad_h is not None:
            if fused:
                grad_h[s:s + step] = dlogits @ w_mm
            else:
                _grad_hidden_into(grad_h[s:s + step], dlogits, w_mm)
        if grad_w is not None:  # fp32 accumulation across chunks whatever the input dtype
            _accumulate_grad_weight(grad_w, dlogits, h)
        if grad_b is not None:
            grad_b.add_(dlogits.sum(0, dtype=torch.float32))
    if scale_at_end and row_scale != 1.0:
        for g in (grad_h, grad_w, grad_b):
            if g is not None:
                g.mul_(row_scale)
    return losses, lses, grad_h, grad_w, grad_b
