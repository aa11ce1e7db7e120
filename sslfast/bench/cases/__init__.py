"""Benchmark cases, one module per op family."""
