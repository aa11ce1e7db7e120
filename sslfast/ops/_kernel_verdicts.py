"""Which Triton kernel variants ``backend="auto"`` may run on this GPU: those that passed their self-check
(registered with the op, :mod:`sslfast.ops._registry`) on this device with this triton and torch, and whose
recorded source hash is that of the op's kernel sources now (its ``kernels/`` files and the op's package:
editing another op, a model or a docstring elsewhere keeps the verdict).

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
import math
import os
import re
import sys
import threading
import time
import warnings
from typing import Callable, Optional

import torch

import sslfast.kernels as kernel_sources  # the package only: it imports no kernel, nor triton
from sslfast._atomic import atomic_write_text
from sslfast._cache import cache_root
from sslfast._version import __version__
from sslfast.ops._registry import Variant, spec

__all__ = ["platform_key", "kernel_allowed", "remember", "cache_file", "op_source_hash", "run_variant"]

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
    raw = f"{name}-torch{torch.__version__}-triton{triton_version}-sslfast{__version__}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)


@functools.lru_cache(maxsize=None)
def op_source_hash(op: str) -> str:
    """Short hash of what op ``op``'s kernels are and how they are judged: its ``kernels/`` files (the spec's
    ``kernel_files``), its package under ``sslfast/ops/`` (launchers, the check) and what every check shares
    (``sslfast/testing.py``'s tolerance, the dropout reference, this runner). Editing any of them invalidates its
    cached verdicts."""
    op_spec = spec(op)
    # the kernels' folder: this checkout's kernels/ or the installed one (see sslfast/kernels/__init__.py)
    files = [os.path.join(kernel_sources.__path__[0], name) for name in op_spec.kernel_files]
    package = os.path.dirname(sys.modules[op_spec.check.__module__].__file__)
    files += sorted(glob.glob(os.path.join(package, "*.py")))
    here = os.path.dirname(os.path.abspath(__file__))  # what every check shares: the judge and the runner
    files += [os.path.join(here, "_philox.py"), os.path.abspath(__file__),
              os.path.join(os.path.dirname(here), "testing.py")]
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
        known[variant] = {"passed": bool(passed), "source": op_source_hash(variant.split("/")[0]),
                          **({k: v for k, v in (record or {}).items()
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


def kernel_allowed(op: str, device: torch.device, *, check: Optional[Callable] = None, **call) -> bool:
    """True when the variant of this call of ``op`` (its spec's ``variant_of(**call)``) passed its self-check on
    ``device``'s platform with the op's current sources (checking it now if it never was). Only CUDA devices
    are checked; ``check(variant, device)`` replaces the real one in tests."""
    if device.type != "cuda" and check is None:
        return True
    if os.environ.get("SSLFAST_VALIDATE_KERNELS", "1") == "0":
        return True
    variant = spec(op).variant_of(**call)
    known = _load(device).get(variant.key)
    if known is not None and known.get("source") != op_source_hash(variant.op):
        known = None  # recorded for other kernel sources
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
# spares ``import sslfast`` the import of torch._dynamo (benchmarks/RESULTS.md, "Design measurements").
# tests/ops/test_selftest.py guards it.
kernel_allowed._dynamo_marked_constant = True


def _warn_once(variant: str, why: str) -> None:
    if (variant, why) not in _warned:
        _warned.add((variant, why))
        warnings.warn(f"sslfast: not running the Triton kernel {variant}: {why}; using the PyTorch path instead "
                      f"(python -m sslfast selftest checks every variant)", stacklevel=4)


_CONTEXT_LOST: list = []  # the error after which this process's CUDA context is unusable (sticky errors)


def _record(v: Variant, big: bool, error: float, allowed: float, passed: bool, seconds: float,
            message: Optional[str], transient: bool) -> dict:
    return {"variant": v.key, "op": v.op, "source": op_source_hash(v.op), "dtype": v.dtype, "size": v.size,
            "flags": v.flags, "shapes": "realistic" if big else "small", "max_error": error, "allowed": allowed, "passed": passed,
            "seconds": round(seconds, 3), "error": message, "transient": transient}


def run_variant(v: Variant, device, big: bool = False) -> dict:
    """Run one check; a crash is a failure with its message (``transient`` when it says nothing about the
    kernel: out of memory, or a CUDA context an earlier check in this process had already broken)."""
    start = time.perf_counter()
    device_type = torch.device(device).type
    if _CONTEXT_LOST:
        return dict(_record(v, big, float("nan"), float("nan"), False, 0.0,
                            f"not run: an earlier check broke this process's CUDA context ({_CONTEXT_LOST[0]})"[:300],
                            True), not_run=True)
    if device_type == "cuda":
        torch.cuda.synchronize()  # a fault of the caller's earlier kernels surfaces here, not in this check
    transient = False
    try:
        # the check may first run inside the caller's no_grad / inference_mode / autocast (an eval loop): it
        # needs its own gradients and dtypes, or a sound kernel would be recorded as failed
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            error, allowed = spec(v.op).check(v, torch.device(device), big)
            if device_type == "cuda":
                torch.cuda.synchronize()  # an asynchronous kernel fault surfaces here, in this variant's check
        passed, message = math.isfinite(error) and error <= allowed, None
    except Exception as exc:  # a kernel that does not compile, launch or finish fails its check
        error, allowed, passed, message = float("nan"), float("nan"), False, f"{type(exc).__name__}: {exc}"[:300]
        transient = isinstance(exc, torch.OutOfMemoryError)  # the machine's state, not the kernel's fault
        if device_type == "cuda":
            try:
                torch.cuda.synchronize()
            except Exception:  # a sticky error (illegal address...): later checks here cannot run
                _CONTEXT_LOST.append(message)
    return _record(v, big, error, allowed, passed, time.perf_counter() - start, message, transient)
