"""Which Triton kernel variants ``backend="auto"`` may run on this GPU: those that passed their self-check
(:mod:`sslfast.selftest`) on this device with this triton, torch and these kernel sources.

The first time a variant is about to run on a machine, its check runs once on small random inputs (a second
or two, compilation included) and the result is cached on disk under ``<cache_root>/selftest/<platform>.json``
(``sslfast.data.cache_root``: ``$SSLFAST_CACHE`` or ``~/.cache/sslfast``). A variant that failed is replaced
by the PyTorch path with one warning naming it and the error. ``SSLFAST_VALIDATE_KERNELS=0`` turns the checks
off (every kernel runs); an explicit ``backend="triton"`` always runs the kernel.

A check that could not run for reasons outside the kernel (out of memory) is not written to disk. None can
run during CUDA-graph capture: an unchecked variant reached there raises (run the step once before capturing,
or ``python -m sslfast selftest``). Under ``torch.compile`` the decision is made once, while tracing.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import threading
import warnings
from typing import Callable, Optional

import torch

from sslfast._atomic import atomic_write_text
from sslfast._cache import cache_root

__all__ = ["platform_key", "kernel_allowed", "remember", "cache_file"]

_lock = threading.Lock()
_results: dict[str, dict] = {}  # platform -> {variant key: record}
_warned: set = set()


def platform_key(device: torch.device) -> str:
    """Device name, compute capability and the software versions a kernel's behaviour depends on."""
    if device.type == "cuda" and device.index is None:  # "cuda": the current device
        device = torch.device("cuda", torch.cuda.current_device())
    return _platform_key(device)


@functools.lru_cache(maxsize=None)  # fixed for the life of a process; kernel_allowed runs on every call of an op
def _platform_key(device: torch.device) -> str:
    import sslfast
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"{torch.cuda.get_device_name(device)}-sm{major}{minor}"
    else:
        name = "cpu-interpreter"
    raw = (f"{name}-torch{torch.__version__}-triton{triton_version}-sslfast{sslfast.__version__}"
           f"-src{kernel_sources_hash()}")
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)


@functools.lru_cache(maxsize=1)
def kernel_sources_hash() -> str:
    """Short hash of the Triton kernels, their launchers and the checks: editing any of them invalidates the
    cached results (the package version alone would not)."""
    import importlib

    import sslfast
    kernels = importlib.import_module("sslfast.kernels")  # this checkout's kernels/ (see sslfast._extension)
    files = sorted(glob.glob(os.path.join(os.path.dirname(kernels.__file__), "*.py")))
    files += sorted(glob.glob(os.path.join(os.path.dirname(__file__), "*.py")))
    files.append(os.path.join(os.path.dirname(sslfast.__file__), "selftest.py"))
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def cache_file(device: torch.device) -> str:
    return os.path.join(cache_root(), "selftest", platform_key(device) + ".json")


def _load(device: torch.device) -> dict:
    key = platform_key(device)
    if key not in _results:
        try:
            with open(cache_file(device)) as f:
                _results[key] = json.load(f)
        except (OSError, ValueError):
            _results[key] = {}
    return _results[key]


def remember(variant: str, passed: bool, device: torch.device, record: Optional[dict] = None) -> None:
    """Record a variant's result for this platform (in memory; on disk unless the check could not run for
    reasons outside the kernel: ``record["transient"]``)."""
    with _lock:
        known = _load(device)
        known[variant] = {"passed": bool(passed), **({k: v for k, v in (record or {}).items()
                                                     if k in ("max_error", "allowed", "error", "shapes")})}
        if (record or {}).get("transient"):
            return
        try:
            _merge_into_file(cache_file(device), {variant: known[variant]})
        except OSError:
            pass  # a read-only cache: the result still holds for this process


def _merge_into_file(path: str, entries: dict) -> None:
    """Add ``entries`` to the JSON cache at ``path`` under an exclusive file lock: processes checking variants
    at the same time (pytest -n 8, selftest --jobs) each add theirs instead of overwriting the others'."""
    import fcntl
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                on_disk = json.load(f)
        except (OSError, ValueError):
            on_disk = {}
        on_disk.update(entries)
        atomic_write_text(path, json.dumps(on_disk, indent=1, default=str))


def kernel_allowed(op: str, dtype: torch.dtype, size: str, flags: str, device: torch.device,
                   check: Optional[Callable] = None) -> bool:
    """True when variant (op, dtype, size, flags) passed its self-check on ``device``'s platform (checking it
    now if it never was). Only CUDA devices are checked; ``check(variant, device)`` replaces the real one in tests."""
    if device.type != "cuda" and check is None:
        return True
    if os.environ.get("SSLFAST_VALIDATE_KERNELS", "1") == "0":
        return True
    from sslfast._dtypes import dtype_name
    from sslfast.selftest import Variant, run_variant
    variant = Variant(op, dtype_name(dtype), size, flags)
    known = _load(device).get(variant.key)
    if known is None and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"sslfast: the Triton kernel {variant.key} has not been checked on this GPU yet, and its "
                           f"check cannot run during CUDA-graph capture: run the step once before capturing (or "
                           f"python -m sslfast selftest)")
    if known is None:
        record = (check or run_variant)(variant, device)
        remember(variant.key, record["passed"], device, record)
        known = _load(device)[variant.key]
    if known["passed"]:
        return True
    error = known.get("error") or "error %.2e > allowed %.2e" % (known.get("max_error", float("nan")),
                                                                 known.get("allowed", float("nan")))
    _warn_once(variant.key, f"it failed its self-check on this GPU ({error})")
    return False


# torch.compile calls kernel_allowed while tracing and keeps its answer as a constant (no graph break on the
# cache's file reads). This is what torch.compiler.assume_constant_result does; setting the mark directly
# spares ``import sslfast`` the import of torch._dynamo (~1 s). tests/test_selftest.py guards it.
kernel_allowed._dynamo_marked_constant = True


def _warn_once(variant: str, why: str) -> None:
    if (variant, why) not in _warned:
        _warned.add((variant, why))
        warnings.warn(f"sslfast: not running the Triton kernel {variant}: {why}; using the PyTorch path instead "
                      f"(python -m sslfast selftest checks every variant)", stacklevel=4)
