"""``linear_cross_entropy``: softmax cross-entropy of ``hidden @ weight.T (+ bias)`` without the N×V logits,
as a ``torch.library`` op (forward, fake, autograd) over the chunked engine (:mod:`.chunked`)."""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.constants import IGNORE_INDEX
from sslfast.ops._dispatch import resolve_backend
from sslfast.ops._input_checks import check_same_device, check_tensor
from sslfast.ops._kernel_verdicts import kernel_allowed
from sslfast.ops.cross_entropy.chunked import _chunked_pass
from sslfast.ops.cross_entropy.labels import _keep_rows, _validate_labels

__all__ = ["linear_cross_entropy", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


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


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None, *, ignore_index: int = IGNORE_INDEX,
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
    if name == "triton" and backend == "auto" and not kernel_allowed(op, hidden.device, dtype=hidden.dtype):
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
