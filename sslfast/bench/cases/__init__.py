"""Benchmark cases, one module per op or model family; each names the bench ops it serves in ``BENCH_OPS``."""
