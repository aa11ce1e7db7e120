"""Which ops have benchmark cases: every module of ``sslfast.bench.cases`` names the bench ops it serves in
``BENCH_OPS`` and defines ``cases(quick: bool, device: str) -> list[Case]`` (and optionally
``unavailable_reason``). A new op or model family adds its own case file; nothing here changes."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import sslfast.bench.cases as cases_package
from sslfast.bench.case import Case


def _discover() -> dict[str, str]:
    """op name -> the name of the case module serving it, modules in alphabetical order."""
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(cases_package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{cases_package.__name__}.{info.name}")
        for op in module.BENCH_OPS:
            if op in found:
                raise RuntimeError(f"bench op {op!r} is claimed by cases.{found[op]} and cases.{info.name}")
            found[op] = info.name
    return found


# op name -> module in sslfast.bench.cases defining ``cases(quick: bool, device: str) -> list[Case]``
OPS = _discover()


class CasesUnavailable(Exception):
    """An op's cases cannot run in this install (e.g. a model not implemented yet, or a missing package)."""


def collect_cases(ops, *, quick: bool, device: str) -> list[Case]:
    """The cases of ``ops`` (names from :data:`OPS`), in order; unknown names raise ``ValueError``."""
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {sorted(OPS)}")
    out: list[Case] = []
    for op in ops:
        module = importlib.import_module(f"sslfast.bench.cases.{OPS[op]}")
        out.extend(c for c in module.cases(quick=quick, device=device) if c.op == op)
    return out


def unavailable_reason(op: str) -> str | None:
    """Why ``op``'s cases cannot run here, or None."""
    module = importlib.import_module(f"sslfast.bench.cases.{OPS[op]}")
    check = getattr(module, "unavailable_reason", None)
    if check is None:
        return None
    return check(op) if inspect.signature(check).parameters else check()  # a module may serve several ops
