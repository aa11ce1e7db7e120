"""Softmax cross-entropy without the N×V logits: the LM-head matmul fused with the loss, chunked over rows.

Rows whose label is ``ignore_index`` are dropped before the matmul. For ``reduction="mean"|"sum"`` the
gradients are computed chunk by chunk during the forward (the upstream gradient of a scalar loss only
scales them), so neither the logits nor their softmax are ever stored whole; for ``reduction="none"``
the backward recomputes each chunk's logits from the saved log-sum-exp. Accumulation is fp32 whatever
the input dtype. On CUDA each chunk's logits come from one cuBLAS matmul and a fused Triton kernel
(``kernels/cross_entropy.py``) turns them into loss, log-sum-exp and gradient in place. On the CPU in fp32
they come from oneDNN's inner product (:mod:`sslfast.ops.inference_linear`): for a (640, 768) x (768, 50257)
chunk it runs at ~175 GFLOP/s on 2 cores where the MKL GEMM behind ``F.linear`` reaches ~125.
"""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.ops._checks import check_same_device, check_tensor
from sslfast.ops._dispatch import empty_output, resolve_backend, triton_interpreted
from sslfast.ops._validation import kernel_allowed
from sslfast.ops.inference_linear import inference_linear

__all__ = ["linear_cross_entropy", "cross_entropy", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")
# fp32 logits of one chunk of rows. GPU: large chunks, fewer passes over grad_w (V × D) and fewer launches.
# CPU: the step time is flat from 32 to 128 MiB (measured: 2048 x 768 x 50257, 2.90 s vs 2.94 s) while the peak
# memory grows with it, so the smallest.
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


def _triton_rows(logits, labels, ignore_index, label_smoothing, z_loss, grad_scale, grad=None):
    """Fused Triton pass over every row of ``logits`` (M, V): per-row loss and lse (fp32; 0 at ignored rows) and,
    unless ``grad_scale`` ((1,) or (M,) fp32) is None, ``grad_scale`` times the gradient into ``grad`` (default:
    in place over ``logits``; zero rows where the label is ignored)."""
    from sslfast.kernels.cross_entropy import cross_entropy_kernel, launch_config
    m = logits.shape[0]
    losses = empty_output(m, dtype=torch.float32, device=logits.device)  # poisoned under SSLFAST_POISON=1
    lses = empty_output(m, dtype=torch.float32, device=logits.device)
    grad = logits if grad is None else grad
    if m == 0:
        return losses, lses, grad
    want_grad = grad_scale is not None
    cross_entropy_kernel[(m,)](
        logits, logits.stride(0), labels, losses, lses, grad, grad.stride(0), grad_scale if want_grad else losses,
        logits.shape[1], int(ignore_index), float(label_smoothing), float(z_loss), WANT_GRAD=want_grad,
        SCALE_PER_ROW=want_grad and grad_scale.numel() > 1, **launch_config(triton_interpreted()))
    return losses, lses, grad


def _scale_unless_one(x, scale, backend):
    """``x * scale`` for a device scalar ``scale``, in place; nothing is touched when ``scale`` is 1 (the seed of
    ``loss.backward()``). Triton decides that on the device; the CPU reads the scalar (no sync to speak of);
    PyTorch on CUDA multiplies (one pass, no sync)."""
    if torch.compiler.is_compiling():
        return x * scale
    if backend == "triton" and x.numel():
        from sslfast.kernels.constants import cdiv
        from sslfast.kernels.cross_entropy import scale_launch_config, scale_unless_one_kernel
        launch = scale_launch_config(triton_interpreted())
        scale_unless_one_kernel[(cdiv(x.numel(), launch["BLOCK"]),)](
            x, scale.float().reshape(1), x.numel(), **launch)
        return x
    if x.device.type == "cpu" and float(scale) == 1.0:
        return x
    return x.mul_(scale)  # fp32 scalar: the product is computed in fp32, then rounded


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
        with torch.no_grad():  # the gradients below are explicit; CPU fp32 takes oneDNN (~1.4x MKL at this shape)
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


# The ops are registered with torch.library so torch.compile traces them as single graph nodes (the
# kept-row count is data-dependent, which is fine inside an opaque op). For mean/sum the forward also
# returns the gradients of the reduced loss (empty when not needed); the backward only scales them.

def _empty(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(0)


@torch.library.custom_op("sslfast::linear_cross_entropy", mutates_args=())
def _linear_ce_op(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], labels: torch.Tensor,
                  ignore_index: int, label_smoothing: float, z_loss: float, reduction: str, backend: str,
                  grad_hidden: bool, grad_weight: bool, grad_bias: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # hidden (N, D), labels (N,) -> loss fp32 (() or (N,)), d loss / d (hidden, weight, bias) or (0,)
    n = hidden.shape[0]
    indices, n_keep = _keep_rows("linear_cross_entropy", labels, weight.shape[0], ignore_index)
    kept_h = hidden.index_select(0, indices)  # (M, D): ignored rows never reach the matmul
    kept_y = labels.index_select(0, indices)
    needs = (grad_hidden, grad_weight, grad_bias and bias is not None)
    fuse_grads = reduction != "none" and any(needs)
    scale = 1.0 / max(n_keep, 1) if reduction == "mean" else 1.0
    losses, _, g_h, g_w, g_b = _chunked_pass(kept_h, weight, bias, kept_y, label_smoothing, z_loss, needs,
                                             scale if fuse_grads else None, backend)
    if reduction == "none":
        return hidden.new_zeros(n, dtype=torch.float32).index_copy_(0, indices, losses), \
            _empty(hidden), _empty(weight), _empty(weight)
    loss = losses.sum() * scale
    held = _held_dtype(hidden)
    out_h = _empty(hidden) if g_h is None else \
        hidden.new_zeros(n, hidden.shape[1], dtype=held).index_copy_(0, indices, g_h.to(held))
    out_w = _empty(weight) if g_w is None else g_w.to(_held_dtype(weight))
    out_b = _empty(weight) if g_b is None else g_b.to(_held_dtype(bias))
    return loss, out_h, out_w, out_b


def _held_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a gradient is held in until the backward: the input's, but fp32 for fp16 inputs (already
    divided by the mean's count, their small entries would round to 0 before a loss scale restores them)."""
    return torch.float32 if t.dtype == torch.float16 else t.dtype


@_linear_ce_op.register_fake
def _(hidden, weight, bias, labels, ignore_index, label_smoothing, z_loss, reduction, backend,
      grad_hidden, grad_weight, grad_bias):
    fused = reduction != "none"
    loss = hidden.new_empty(() if fused else (hidden.shape[0],), dtype=torch.float32)
    out_h = torch.empty_like(hidden, dtype=_held_dtype(hidden)) if fused and grad_hidden else _empty(hidden)
    out_w = torch.empty_like(weight, dtype=_held_dtype(weight)) if fused and grad_weight else _empty(weight)
    out_b = torch.empty_like(bias, dtype=_held_dtype(bias)) if fused and grad_bias and bias is not None \
        else _empty(weight)
    return loss, out_h, out_w, out_b


@torch.library.custom_op("sslfast::linear_cross_entropy_backward", mutates_args=())
def _linear_ce_backward_op(grad_losses: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                           bias: Optional[torch.Tensor], labels: torch.Tensor, ignore_index: int,
                           label_smoothing: float, z_loss: float, backend: str, grad_hidden: bool,
                           grad_weight: bool, grad_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # reduction="none": recompute each chunk's logits and weight its rows by grad_losses (N,)
    keep = labels != ignore_index
    indices = torch.nonzero(keep).squeeze(1)  # labels were range-checked in the forward
    needs = (grad_hidden, grad_weight, grad_bias and bias is not None)
    _, _, g_h, g_w, g_b = _chunked_pass(hidden.index_select(0, indices), weight, bias,
                                        labels.index_select(0, indices), label_smoothing, z_loss, needs,
                                        grad_losses.float().index_select(0, indices), backend)
    out_h = _empty(hidden) if g_h is None else \
        hidden.new_zeros(hidden.shape).index_copy_(0, indices, g_h.to(hidden.dtype))
    out_w = _empty(weight) if g_w is None else g_w.to(weight.dtype)
    out_b = _empty(weight) if g_b is None else g_b.to(bias.dtype)
    return out_h, out_w, out_b


@_linear_ce_backward_op.register_fake
def _(grad_losses, hidden, weight, bias, labels, ignore_index, label_smoothing, z_loss, backend,
      grad_hidden, grad_weight, grad_bias):
    return (torch.empty_like(hidden) if grad_hidden else _empty(hidden),
            torch.empty_like(weight) if grad_weight else _empty(weight),
            torch.empty_like(bias) if grad_bias and bias is not None else _empty(weight))


def _linear_ce_setup_context(ctx, inputs, output):
    hidden, weight, bias, labels, ignore_index, label_smoothing, z_loss, reduction, backend, *flags = inputs
    ctx.reduction, ctx.flags = reduction, flags
    ctx.args = (ignore_index, label_smoothing, z_loss, backend)
    ctx.has_bias = bias is not None
    ctx.dtypes = (hidden.dtype, weight.dtype, weight.dtype if bias is None else bias.dtype)
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no zero-filled incoming gradients for the gradient outputs
    if reduction == "none":
        ctx.save_for_backward(hidden, weight, bias, labels)
    else:
        ctx.save_for_backward(*output[1:])


def _linear_ce_backward(ctx, grad_loss, _gh, _gw, _gb):
    if ctx.reduction == "none":
        hidden, weight, bias, labels = ctx.saved_tensors
        grads = _linear_ce_backward_op(grad_loss, hidden, weight, bias, labels, *ctx.args, *ctx.flags)
    else:
        # d(scalar loss) scales every gradient; multiplied in fp32 (a loss scale of 65536 overflows fp16)
        grads = [(g * grad_loss).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
    g_h, g_w, g_b = (g if flag else None for g, flag in zip(grads, ctx.flags))
    if not ctx.has_bias:
        g_b = None
    return g_h, g_w, g_b, None, None, None, None, None, None, None, None, None


_linear_ce_op.register_autograd(_linear_ce_backward, setup_context=_linear_ce_setup_context)

def _validate_labels(op, labels, lead_shape):
    check_tensor(op, "labels", labels, dtypes=(torch.int64, torch.int32))
    if tuple(labels.shape) != tuple(lead_shape):
        raise ValueError(f"{op}: labels shape {tuple(labels.shape)} must equal the leading shape {tuple(lead_shape)}")


def _keep_rows(op, labels, v, ignore_index):
    """Indices of the non-ignored rows and their count; raises on labels outside [0, V). One host sync."""
    keep = labels != ignore_index
    bad = keep & ((labels < 0) | (labels >= v))
    n_bad, n_keep = torch.stack([bad.sum(), keep.sum()]).tolist()
    _raise_if_bad(op, labels, bad, n_bad, v, ignore_index)
    return torch.nonzero_static(keep, size=n_keep).squeeze(1), n_keep


def _check_label_range(op, labels, v, ignore_index):
    """Raises on labels outside [0, V) that are not ``ignore_index``. One host sync."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= v))
    _raise_if_bad(op, labels, bad, int(bad.sum()), v, ignore_index)


def _raise_if_bad(op, labels, bad, n_bad, v, ignore_index):
    if n_bad:
        first = labels[bad][0].item()
        raise ValueError(f"{op}: labels must be in [0, {v}) or equal ignore_index={ignore_index}; "
                         f"found {n_bad} outside, e.g. {first}")


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None, *, ignore_index: int = -100,
                         label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
                         backend: str = "auto") -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, ...)`` without the N×V logits.

    Args:
        hidden: (..., D) float32/float16/bfloat16. weight: (V, D) as in ``nn.Linear``; bias: (V,) or None.
        labels: (...) int64 class indices in ``[0, V)`` or ``ignore_index`` (those rows cost nothing).
        reduction: "mean" (over non-ignored rows; 0 when all are ignored), "sum" or "none" (per row,
            0 at ignored rows). z_loss: adds ``z_loss * logsumexp(logits)²`` per counted row (PaLM).
        backend: "auto" | "triton" (cuBLAS chunks + fused Triton loss kernel, CUDA) | "torch" (chunked
            PyTorch, any device).

    Raises ``ValueError`` for labels outside the vocabulary. NaN/Inf in ``hidden`` give a NaN loss.
    """
    op = "linear_cross_entropy"
    check_tensor(op, "hidden", hidden, min_dim=1)
    check_tensor(op, "weight", weight, dim=2)
    if bias is not None:
        check_tensor(op, "bias", bias, dim=1)
    check_same_device(op, hidden=hidden, weight=weight, labels=labels, bias=bias)
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: hidden's last dimension ({hidden.shape[-1]}) must equal weight's D "
                         f"({weight.shape[1]}); weight is (V, D) as in nn.Linear, got {tuple(weight.shape)}")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"{op}: bias must have V={weight.shape[0]} elements, got {tuple(bias.shape)}")
    if weight.shape[0] == 0:
        raise ValueError(f"{op}: weight has V=0 classes")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    _validate_labels(op, labels, hidden.shape[:-1])
    name = resolve_backend(op, backend, hidden.device, ("triton", "torch"))
    if name == "triton" and backend == "auto" and not kernel_allowed(op, hidden.dtype, "", "", hidden.device):
        name = "torch"
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # the matmul in autocast's dtype, as F.linear would run it
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    lead = hidden.shape[:-1]
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_y = labels.reshape(-1).long()
    grad_on = torch.is_grad_enabled()
    with torch.autocast(device_type, enabled=False):  # the op manages its own precision (fp32 accumulation)
        loss, *_ = _linear_ce_op(flat_h, weight, bias, flat_y, int(ignore_index), float(label_smoothing),
                                 float(z_loss), reduction, name, grad_on and hidden.requires_grad,
                                 grad_on and weight.requires_grad, grad_on and bias is not None and bias.requires_grad)
    return loss.reshape(lead) if reduction == "none" else loss


@torch.library.custom_op("sslfast::cross_entropy", mutates_args=())
def _ce_op(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, label_smoothing: float, z_loss: float,
           reduction: str, backend: str, want_grad: bool, check_labels: bool
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # logits (N, V), labels (N,) -> loss fp32 (() or (N,)); when wanted, the gradient (N, V) in the logits'
    # dtype (else (0,)); the part of its scale still to apply, fp32 () on the device. For mean/sum in 32-bit
    # and bf16 the kernel has already applied the mean's 1/count (pending 1: the backward multiplies only by
    # an upstream gradient other than 1); fp16 stores the unscaled gradient (1/count could push entries below
    # fp16's smallest subnormal before a loss scale brings them back) and leaves 1/count pending
    n, v = logits.shape
    grad = empty_output(logits.shape, dtype=logits.dtype, device=logits.device) if want_grad else _empty(logits)
    fold = reduction != "none" and logits.dtype != torch.float16  # apply 1/count inside the pass
    if backend == "triton":  # every row in one launch; ignored rows write zeros; no host sync unless checking
        if check_labels:
            _check_label_range("cross_entropy", labels, v, ignore_index)
        count = (labels != ignore_index).sum().clamp_min(1).float()  # () on the device
        inv_count = 1.0 / count if reduction == "mean" else torch.ones_like(count)  # ("none": 1)
        in_pass, pending = (inv_count, torch.ones_like(count)) if fold else (torch.ones_like(count), inv_count)
        losses, _, _ = _triton_rows(logits, labels, ignore_index, label_smoothing, z_loss,
                                    in_pass.reshape(1) if want_grad else None, grad if want_grad else logits)
        return (losses if reduction == "none" else losses.sum() * inv_count), grad, pending
    indices, n_keep = _keep_rows("cross_entropy", labels, v, ignore_index)
    inv_count = 1.0 / max(n_keep, 1) if reduction == "mean" else 1.0  # ("none": 1)
    in_pass, pending = (inv_count, 1.0) if fold else (1.0, inv_count)
    if want_grad and n_keep < n:  # the only N×V buffer: kept rows are written below, only ignored ones zeroed
        ignored = torch.nonzero_static(labels == ignore_index, size=n - n_keep).squeeze(1)
        grad.index_fill_(0, ignored, 0)
    kept_y = labels.index_select(0, indices)
    losses = logits.new_empty(indices.numel(), dtype=torch.float32)
    step = _chunk_rows(v, logits.device)
    for s in range(0, indices.numel(), step):
        rows = indices[s:s + step]
        chunk = logits.index_select(0, rows).float()  # (c, V) fp32
        loss, _, dlogits = _loss_and_dlogits(chunk, kept_y[s:s + step], label_smoothing, z_loss,
                                             in_pass if want_grad else None)
        losses[s:s + step] = loss
        if want_grad:
            grad.index_copy_(0, rows, dlogits.to(grad.dtype))
    pending = logits.new_full((), pending, dtype=torch.float32)
    if reduction == "none":
        return logits.new_zeros(n, dtype=torch.float32).index_copy_(0, indices, losses), grad, pending
    return losses.sum() * inv_count, grad, pending


@_ce_op.register_fake
def _(logits, labels, ignore_index, label_smoothing, z_loss, reduction, backend, want_grad, check_labels):
    loss = logits.new_empty(() if reduction != "none" else (logits.shape[0],), dtype=torch.float32)
    return loss, torch.empty_like(logits) if want_grad else _empty(logits), logits.new_empty((), dtype=torch.float32)


def _ce_setup_context(ctx, inputs, output):
    ctx.reduction, ctx.backend = inputs[5], inputs[6]
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # else autograd hands backward a zero-filled N×V tensor
    if torch.compiler.is_compiling() or type(output[1]) is not torch.Tensor:  # traced: stay functional
        ctx.save_for_backward(*output[1:])
        ctx.workspace = None
    else:  # eager: the backward takes the only reference, so its result becomes .grad without a copy
        ctx.workspace = list(output[1:])


def _ce_backward(ctx, grad_loss, _grad, _pending):
    # the upstream gradient stays fp32 until the multiplication (a loss scale of 65536 overflows fp16)
    if ctx.workspace is None:
        grad, pending = ctx.saved_tensors
        if ctx.reduction == "none":
            return (grad * grad_loss[:, None]).to(grad.dtype), *[None] * 8
        return grad * (grad_loss * pending), *[None] * 8
    if not ctx.workspace:
        raise RuntimeError("cross_entropy: backward through the same graph a second time is not supported "
                           "(the gradient buffer is scaled in place and handed over); recompute the loss")
    grad, pending = ctx.workspace
    ctx.workspace.clear()
    if ctx.reduction == "none":
        return grad.mul_(grad_loss[:, None]), *[None] * 8
    return _scale_unless_one(grad, grad_loss * pending, ctx.backend), *[None] * 8


_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup_context)

def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100,
                  label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
                  backend: str = "auto", check_labels: bool = True) -> torch.Tensor:
    """``F.cross_entropy(logits.float(), labels, ...)`` (plus PaLM's z-loss) for callers holding logits.

    One pass over the rows (fp32 whatever the logits' dtype, no fp32 copy of the whole tensor); the gradient,
    already divided by the mean's count, is written in that pass into one buffer of the logits' dtype, and
    ``loss.backward()`` hands it over without another pass over it (fp16 logits: the count and the upstream
    gradient are applied together in the backward, so a loss scale acts before fp16 rounding, as in PyTorch). Same arguments as
    :func:`linear_cross_entropy`; ``logits`` (..., V), ``labels`` (...).

    ``check_labels=False`` skips the label range check, the Triton path's only host synchronization: for
    callers whose labels are valid by construction. A label outside ``[0, V)`` that is not ``ignore_index``
    then gives a NaN loss (and NaN gradient row) instead of an error. The PyTorch path always checks (it
    must count the kept rows on the host anyway).
    """
    op = "cross_entropy"
    check_tensor(op, "logits", logits, min_dim=1)
    check_same_device(op, logits=logits, labels=labels)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if logits.shape[-1] == 0:
        raise ValueError(f"{op}: logits have V=0 classes")
    _validate_labels(op, labels, logits.shape[:-1])
    name = resolve_backend(op, backend, logits.device, ("triton", "torch"))
    if name == "triton" and backend == "auto" and not kernel_allowed(op, logits.dtype, "", "", logits.device):
        name = "torch"
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    flat_y = labels.reshape(-1).long()
    with torch.autocast(logits.device.type, enabled=False):  # the op computes in fp32 itself
        loss, *_ = _ce_op(flat if flat.stride(-1) == 1 else flat.contiguous(), flat_y, int(ignore_index),
                         float(label_smoothing), float(z_loss), reduction, name,
                         torch.is_grad_enabled() and logits.requires_grad, bool(check_labels))
    return loss.reshape(lead) if reduction == "none" else loss
