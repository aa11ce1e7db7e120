"""Which Triton kernel variants ``backend="auto"`` may run on this GPU: those that passed their self-check
(:mod:`sslfast.selftest`) on this device with this triton, torch and sslfast.

The first time a variant is about to run on a machine, its check runs once on small random inputs (a second
or two, compilation included) and the result is cached on disk under ``<cache_root>/selftest/<platform>.json``
(``sslfast.data.cache_root``: ``$SSLFAST_CACHE`` or ``~/.cache/sslfast``). A variant that failed is replaced
by the PyTorch path with one warning naming it and the error. ``SSLFAST_VALIDATE_KERNELS=0`` turns the checks
off (every kernel runs); an explicit ``backend="triton"`` always runs the kernel.
"""
from __future__ import annotations

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
    raw = f"{name}-torch{torch.__version__}-triton{triton_version}-sslfast{sslfast.__version__}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)


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
    """Record a variant's result for this platform (in memory and on disk)."""
    with _lock:
        known = _load(device)
        known[variant] = {"passed": bool(passed), **({k: v for k, v in (record or {}).items()
                                                     if k in ("max_error", "allowed", "error", "shapes")})}
        try:
            atomic_write_text(cache_file(device), json.dumps(known, indent=1, default=str))
        except OSError:
            pass  # a read-only cache: the result still holds for this process


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
    if known is None:
        record = (check or run_variant)(variant, device)
        remember(variant.key, record["passed"], device, record)
        known = _load(device)[variant.key]
    if known["passed"]:
        return True
    if variant.key not in _warned:
        _warned.add(variant.key)
        warnings.warn(f"sslfast: the Triton kernel {variant.key} failed its self-check on this GPU "
                      f"({known.get('error') or 'error %.2e > allowed %.2e' % (known.get('max_error', float('nan')), known.get('allowed', float('nan')))}); "
                      f"using the PyTorch path instead (python -m sslfast selftest shows every variant)", stacklevel=3)
    return False
