"""Peak memory of one step of a case, beyond the memory its inputs already hold.

CPU: each (case, implementation) runs in a fresh subprocess: one warm-up step (so one-time costs such as
thread pools and per-thread BLAS buffers are not charged to the step; the gradients it left on the inputs
are dropped, so the measured step allocates its own), then, just before the measured
step, the process's resident-set high-water mark is reset (Linux: ``/proc/self/clear_refs``) and its
current resident set read; the high-water mark after the step minus that is the step's extra peak. glibc
is told to return freed memory to the system at once (fixed ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_``), so the warm-up's freed buffers cannot hide the step's peak, and a fresh process
per measurement keeps one implementation's cached memory from hiding the other's. Resolution: one page. Where the
reset is not possible, the growth of ``ru_maxrss`` is used (it can under-report a step whose peak stays
below an earlier one, e.g. the imports').

CUDA: in-process, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the memory
allocated before the step.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def cuda_extra_peak_mb(fn, inputs) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn(*inputs)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def cpu_extra_peak_mb(op: str, case: str, impl: str, quick: bool, timeout: float = 600) -> float:
    """Run ``impl`` ("baseline" or "sslfast") of one case in a subprocess; its extra peak RSS in MiB."""
    cmd = [sys.executable, "-m", "sslfast.bench.memory_probe", "--op", op, "--case", case, "--impl", impl]
    if quick:
        cmd.append("--quick")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {op}/{case} [{impl}] failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["extra_peak_mb"]
