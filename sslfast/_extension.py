"""Loads the compiled extension ``sslfast._C`` and the Triton kernels, reporting once what is missing."""
from __future__ import annotations

import importlib
import warnings

import torch  # noqa: F401  (torch must be imported before the extension's shared object loads)

_C = None
_C_ERROR: str | None = None
try:
    from sslfast import _C as _C  # type: ignore[attr-defined,no-redef]
except ImportError as exc:  # pragma: no cover - depends on the install
    _C_ERROR = str(exc)


triton = None
TRITON_ERROR: str | None = None
try:
    import triton as triton  # noqa: F811
    kernels = importlib.import_module("sslfast.kernels")
except Exception as exc:  # pragma: no cover - depends on the install
    triton, kernels = None, None
    TRITON_ERROR = f"{type(exc).__name__}: {exc}"

_warned = False


def warn_missing_once() -> None:
    """Emit one warning naming the backends this install cannot use."""
    global _warned
    if _warned:
        return
    _warned = True
    missing = []
    if _C is None:
        missing.append(f"'cpp' (sslfast._C not built: {_C_ERROR}; run pip install -e . --no-build-isolation)")
    if kernels is None:
        missing.append(f"'triton' (triton kernels not importable: {TRITON_ERROR})")
    if missing:
        warnings.warn("sslfast: unavailable backends: " + "; ".join(missing)
                      + ". Ops fall back to the other backends.", RuntimeWarning, stacklevel=3)
