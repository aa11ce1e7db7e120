"""Learning-rate schedules: linear warm-up to the peak at step ``warmup``, then linear or cosine decay towards
``min_lr_ratio`` × the peak (reached one step after the last)."""
from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "warmup_steps", "lr_multiplier", "build_scheduler"]

SCHEDULES = ("linear", "cosine", "constant")


def warmup_steps(warmup: float, total_steps: int) -> int:
    """``warmup`` in steps; a value below 1 is a fraction of ``total_steps``."""
    if warmup < 0:
        raise ValueError(f"warmup must be non-negative, got {warmup}")
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def lr_multiplier(step: int, *, warmup: int, total: int, schedule: str, min_lr_ratio: float = 0.0) -> float:
    """Factor on the peak learning rate for optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup:  # the first step already learns; the peak is reached at step ``warmup``, once
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))  # the last step keeps a small rate, as HF
    if schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(optimizer, *, warmup: int, total: int, schedule: str, min_lr_ratio: float = 0.0):
    """A ``LambdaLR`` following :func:`lr_multiplier` (its state goes into checkpoints)."""
    lr_multiplier(0, warmup=warmup, total=total, schedule=schedule)  # validates the name
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup=warmup, total=total, schedule=schedule,
                                              min_lr_ratio=min_lr_ratio))
