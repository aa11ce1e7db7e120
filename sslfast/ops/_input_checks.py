"""Argument validation shared by the ops: every error names the argument and what was expected."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, t, *, dtypes=FLOAT_DTYPES, min_dim: int | None = None,
                 dim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{op}: {name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    if min_dim is not None and t.dim() < min_dim:
        raise ValueError(f"{op}: {name} must have at least {min_dim} dimension(s), got shape {tuple(t.shape)}")


def check_same_device(op: str, **tensors) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: all tensors must be on the same device, got {listed}")


def check_finite(op: str, **tensors: torch.Tensor) -> None:
    """Raise if any of ``tensors`` (name=tensor) holds NaN or Inf: one fp32 sum each (no input-sized
    temporary) and one host sync for all of them.

    A non-finite sum is confirmed element-wise, so a huge but finite input is not rejected.
    """
    named = [(name, t) for name, t in tensors.items() if t.numel()]
    if not named:
        return
    finite = torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for _, t in named])).tolist()
    for ok, (name, t) in zip(finite, named):
        if not ok and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: {name} contains NaN or Inf")
