"""Benchmark harness: every op and model against the baseline a user would otherwise pick.

``sslfast bench`` (or ``python -m sslfast bench``) runs the registered cases, timing baseline and sslfast
interleaved in one process and measuring their peak memory, and writes a table, JSON, Markdown and a plot.
"""
from sslfast.bench.case import Case
from sslfast.bench.registry import OPS, collect_cases
from sslfast.bench.runner import run_cases

__all__ = ["Case", "OPS", "collect_cases", "run_cases"]
