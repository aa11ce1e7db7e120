"""Which ops have benchmark cases: one module per op under ``sslfast.bench.cases``."""
from __future__ import annotations

import importlib

from sslfast.bench.case import Case

# op name -> module in sslfast.bench.cases defining ``cases(quick: bool, device: str) -> list[Case]``
OPS = {
    "vq": "vq",
    "vq_module": "vq_modules",
    "vqvae": "vq_modules",
    "linear_cross_entropy": "cross_entropy",
    "cross_entropy": "cross_entropy",
    "attention": "attention",
    "varlen_attention": "attention",
    "bert": "bert",
    "roberta": "roberta",
    "gpt2": "gpt2",
    "peft": "peft",
    "pretrain": "pretrain",
    "sentence_transformers": "sentence_transformers",
    "fewshot": "fewshot",
}


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
    import inspect
    return check(op) if inspect.signature(check).parameters else check()  # a module may serve several ops
