"""Triton kernels of sslfast, one file per op. Installed as ``sslfast.kernels`` (never a top-level
``kernels`` module: transformers imports any module of that name)."""
