"""Backend names, availability and the ``backend="auto"`` choice shared by every op."""
from __future__ import annotations

import os

import torch

from sslfast import _extension

BACKENDS = ("auto", "triton", "cpp", "torch")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here (not built, or wrong device)."""


def triton_interpreted() -> bool:
    """True when Triton kernels run on CPU tensors through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> dict[str, bool]:
    """What this install can run: ``{"triton": .., "cpp": .., "torch": True}``."""
    has_triton = _extension.kernels is not None and (torch.cuda.is_available() or triton_interpreted())
    return {"triton": has_triton, "cpp": _extension._C is not None, "torch": True}


def resolve_backend(op: str, backend: str, device: torch.device, supported: tuple[str, ...]) -> str:
    """Turn ``backend`` into a concrete backend for a tensor on ``device``.

    ``supported`` lists the backends ``op`` implements, fastest first for each device kind.
    Raises :class:`BackendUnavailableError` if an explicit backend cannot run on ``device``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    have = available_backends()
    if backend == "auto":
        gpu = device.type == "cuda"
        preferred = [n for n in supported if (n == "triton") == gpu and n != "torch"]
        for name in preferred:
            if have[name]:
                return name
        if preferred:  # the fast path for this device is missing from this install: say so once
            _extension.warn_missing_once()
        return "torch"
    if backend not in supported:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not implemented for this op "
                                      f"(implemented: {', '.join(supported)})")
    if not have[backend]:
        _extension.warn_missing_once()
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not available in this install "
                                      f"(available: {[k for k, v in have.items() if v]})")
    if backend == "cpp" and device.type != "cpu":
        raise BackendUnavailableError(f"{op}: backend 'cpp' runs on CPU tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not triton_interpreted():
        raise BackendUnavailableError(f"{op}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 "
                                      f"for CPU tensors), got {device}")
    return backend


def poison_outputs() -> bool:
    """True when ``SSLFAST_POISON=1``: kernel outputs start filled with garbage so unwritten elements fail tests."""
    return os.environ.get("SSLFAST_POISON", "0") == "1"


def empty_output(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty`` for a kernel's output; poisoned (NaN for floats, -7 for integers) under SSLFAST_POISON=1."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if poison_outputs():
        out.fill_(float("nan") if dtype.is_floating_point else -7)
    return out
