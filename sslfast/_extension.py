"""Loads the compiled extension ``sslfast._C`` and the Triton kernels, reporting once what is missing."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

import torch  # noqa: F401  (torch must be imported before the extension's shared object loads)

_C = None
_C_ERROR: str | None = None
try:
    from sslfast import _C as _C  # type: ignore[attr-defined,no-redef]
except ImportError as exc:  # pragma: no cover - depends on the install
    _C_ERROR = str(exc)


def _register_source_kernels() -> None:
    """In a source checkout, map this checkout's ``<repo>/kernels`` to ``sslfast.kernels`` (the other half of the
    mapping is ``setup.py``'s ``package_dir``; ``kernels/__init__.py`` explains both).

    An installed package has ``sslfast/kernels`` already; a checkout (``setup.py`` beside the package)
    imports its own kernels even when another checkout is installed in editable mode.
    """
    if "sslfast.kernels" in sys.modules:
        return
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(repo, "kernels")
    init = os.path.join(folder, "__init__.py")
    if os.path.exists(init) and os.path.exists(os.path.join(repo, "setup.py")):
        spec = importlib.util.spec_from_file_location(
            "sslfast.kernels", init, submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sslfast.kernels"] = module
        spec.loader.exec_module(module)


triton = None
TRITON_ERROR: str | None = None
try:
    import triton as triton  # noqa: F811
    _register_source_kernels()
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
