"""The op registry: one :class:`OpSpec` per op with a Triton kernel, registered by the op's own package.

A spec owns the op's kernel variants (:class:`Variant`: op, dtype, size, flags), how a call's arguments map to
one (``variant_of``), the self-check that validates one (``check``), and the ``kernels/`` files whose source a
cached verdict is keyed on. ``backend="auto"`` (:mod:`sslfast.ops._kernel_verdicts`), ``sslfast selftest``,
the GPU tests and the bench read it. This module imports nothing from the ops: importing an op registers it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional

__all__ = ["Variant", "OpSpec", "register", "spec", "specs"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled kernel family of an op: what ``auto`` checks before it runs a Triton kernel."""
    op: str
    dtype: str
    size: str = ""
    flags: str = ""

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.op, self.dtype, self.size, self.flags) if p)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """``variants(auto_only)``: the variants ``sslfast selftest`` checks (``auto_only``: only those ``auto`` may
    run); ``variant_of(**call)``: the variant of a call; ``check(variant, device, realistic)`` → (error,
    allowed) against float64; ``kernel_files``: file names under ``kernels/``."""
    name: str
    variants: Callable[[bool], list]
    variant_of: Callable[..., Variant]
    check: Callable[..., tuple]
    kernel_files: tuple = ()


_SPECS: dict[str, OpSpec] = {}


def register(op_spec: OpSpec) -> OpSpec:
    """Add ``op_spec`` (its package calls this on import); registering a name twice is an error."""
    if op_spec.name in _SPECS and _SPECS[op_spec.name] is not op_spec:
        raise ValueError(f"op {op_spec.name!r} is registered twice")
    _SPECS[op_spec.name] = op_spec
    return op_spec


def spec(name: str) -> OpSpec:
    """The spec of op ``name``."""
    if name not in _SPECS:
        raise KeyError(f"no registered op {name!r} (registered: {sorted(_SPECS)}); import sslfast.ops first")
    return _SPECS[name]


def specs(names: Optional[Iterable[str]] = None) -> list[OpSpec]:
    """Every registered spec (in registration order), or those named."""
    if names is None:
        return list(_SPECS.values())
    return [spec(n) for n in names]

