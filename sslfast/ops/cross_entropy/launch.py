"""The Triton launchers of the cross-entropy ops: the fused per-row loss / gradient pass and the in-place
scale; their launch configs come from ``kernels/cross_entropy.py``."""
from __future__ import annotations

import torch

from sslfast.ops._dispatch import empty_output, triton_interpreted

__all__ = ["_triton_rows", "_scale_unless_one"]


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
        from sslfast.kernels.cross_entropy import (
            scale_launch_config,
            scale_unless_one_kernel,
        )
        launch = scale_launch_config(triton_interpreted())
        scale_unless_one_kernel[(cdiv(x.numel(), launch["BLOCK"]),)](
            x, scale.float().reshape(1), x.numel(), **launch)
        return x
    if x.device.type == "cpu" and float(scale) == 1.0:
        return x
    return x.mul_(scale)  # fp32 scalar: the product is computed in fp32, then rounded
