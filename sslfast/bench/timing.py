"""Interleaved timing: baseline and candidate alternate after warm-up; the median of the repeats counts."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _timer(device: str) -> Callable[[Callable[[], object]], float]:
    if device == "cuda":
        def time_cuda(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        return time_cuda

    def time_cpu(fn):
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return time_cpu


def time_interleaved(fns: dict[str, Callable[[], object]], *, device: str = "cpu", warmup: int = 2,
                     repeats: int = 10, max_seconds: float | None = None) -> dict[str, float]:
    """Median milliseconds of each function, the functions run round-robin after ``warmup`` rounds.

    ``max_seconds`` stops repeating early (after at least 3 rounds) once the budget is spent.
    """
    timer = _timer(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if device == "cuda":
        torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    started = time.perf_counter()
    for round_ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timer(fn))
        if max_seconds is not None and round_ >= 2 and time.perf_counter() - started > max_seconds:
            break
    return {name: statistics.median(values) for name, values in samples.items()}
