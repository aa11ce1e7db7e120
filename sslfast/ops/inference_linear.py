"""``F.linear`` for inference on CPU: fp32 projections that need no gradient skip the MKL GEMM behind
``F.linear``, which is slow for the few rows of token-by-token decoding.

- Up to :data:`FEW_ROWS` rows: sslfast's C++ kernel ``sslfast::few_row_linear`` (``csrc/few_row_linear.cpp``),
  which streams the weight once, in whichever layout it is stored, at the machine's memory read rate. A
  decoding step is bound by that stream (see ``benchmarks/RESULTS.md`` for the measured ratios).
- More rows: oneDNN's inner product (PyTorch's own ``mkldnn::_linear_pointwise``, the op ``torch.compile``
  uses on CPU).

Both give ``F.linear``'s result up to fp32 rounding (they sum in another order; tested against float64 within
the error bound of fp32 summation in any order). Anything else (autograd, autocast, CUDA, other dtypes,
tracing) is plain ``F.linear``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from sslfast import _extension

__all__ = ["inference_linear", "project", "onednn_linear_available", "few_row_linear_available", "FEW_ROWS",
           "FEW_ROW_AVAILABLE"]

FEW_ROWS = 4  # at most this many rows go through the few-row kernel (more: oneDNN, faster there)


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has the oneDNN inner product (``torch.ops.mkldnn._linear_pointwise``)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def few_row_linear_available() -> bool:
    """Whether sslfast's C++ extension is built with this version of ``sslfast::few_row_linear`` (a stale build
    without its epilogue arguments counts as missing: calls then take oneDNN / F.linear). Settled at import:
    :data:`FEW_ROW_AVAILABLE`."""
    if _extension._C is None or not hasattr(torch.ops.sslfast, "few_row_linear"):
        return False
    return "residual" in str(torch.ops.sslfast.few_row_linear.default._schema)


def _few_row_layout(weight: torch.Tensor) -> bool:
    """The weight is one the few-row kernel reads in place: (out, in) rows or an (in, out) matrix's transpose."""
    n, k = weight.shape
    rows = weight.stride(1) == 1 and (n <= 1 or weight.stride(0) >= k)
    columns = weight.stride(0) == 1 and (k <= 1 or weight.stride(1) >= n)
    return rows or columns


_AVAILABLE = onednn_linear_available()
FEW_ROW_AVAILABLE = few_row_linear_available()
if FEW_ROW_AVAILABLE:
    @torch.library.register_fake("sslfast::few_row_linear")
    def _(x, weight, bias, residual=None, activation="none"):
        return x.new_empty(x.shape[0], weight.shape[0])


def _differentiation_active() -> bool:
    """Forward-mode AD or a functorch transform (jvp, vmap, grad) is running: tensors can carry tangents
    without ``requires_grad``."""
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


def _takes_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """Whether the call may leave ``F.linear`` (for the few-row kernel or oneDNN)."""
    if not (_AVAILABLE or FEW_ROW_AVAILABLE) or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False  # the op has no derivative
    if _differentiation_active():
        return False
    if weight.dim() != 2 or weight.shape[1] == 0 or x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        return False  # F.linear's own errors; oneDNN has no primitive for an empty inner dimension
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != weight.shape[:1]
                             or not bias.is_contiguous()):
        return False  # the op reads the bias as a dense vector (no broadcasting, no strides)
    if torch.is_autocast_enabled("cpu"):
        return False  # F.linear follows autocast's dtype; this op would not
    return not torch.compiler.is_compiling()


def inference_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.T + bias``, as :func:`torch.nn.functional.linear` (up to float rounding; ``weight`` is (out, in);
    a transposed view of an (in, out) matrix works without a copy). (..., in) -> (..., out)."""
    if _takes_onednn(x, weight, bias):
        rows = x.numel() // x.shape[-1]
        if FEW_ROW_AVAILABLE and rows <= FEW_ROWS and _few_row_layout(weight):
            out = torch.ops.sslfast.few_row_linear(x.reshape(rows, x.shape[-1]).contiguous(), weight, bias)
            return out.view(*x.shape[:-1], weight.shape[0])
        if _AVAILABLE:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def project(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an ``nn.Linear`` through :func:`inference_linear`; any other module (a subclass, an
    adapter, a module with hooks) is called as it is."""
    if type(module) is torch.nn.Linear and not (module._forward_hooks or module._forward_pre_hooks):
        return inference_linear(x, module.weight, module.bias)
    return module(x)
