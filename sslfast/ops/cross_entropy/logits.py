"""``cross_entropy`` over given logits: one fused pass per row (Triton) or the PyTorch path, as a
``torch.library`` op whose backward hands over the gradient computed in the forward."""
from __future__ import annotations

import torch

from sslfast.constants import IGNORE_INDEX
from sslfast.ops._dispatch import empty_output, resolve_backend
from sslfast.ops._input_checks import check_same_device, check_tensor
from sslfast.ops._kernel_verdicts import kernel_allowed
from sslfast.ops.cross_entropy.chunked import _chunk_rows, _loss_and_dlogits  # noqa: F401
from sslfast.ops.cross_entropy.labels import (  # noqa: F401
    _check_label_range,
    _keep_rows,
    _validate_labels,
)
from sslfast.ops.cross_entropy.launch import _scale_unless_one, _triton_rows
from sslfast.ops.cross_entropy.linear import REDUCTIONS, _empty

__all__ = ["cross_entropy"]


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

def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
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
    if name == "triton" and backend == "auto" and not kernel_allowed(op, logits.device, dtype=logits.dtype):
        name = "torch"
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    flat_y = labels.reshape(-1).long()
    with torch.autocast(logits.device.type, enabled=False):  # the op computes in fp32 itself
        loss, *_ = _ce_op(flat if flat.stride(-1) == 1 else flat.contiguous(), flat_y, int(ignore_index),
                         float(label_smoothing), float(z_loss), reduction, name,
                         torch.is_grad_enabled() and logits.requires_grad, bool(check_labels))
    return loss.reshape(lead) if reduction == "none" else loss
