"""Triton kernels of sslfast, one file per op (launch tables typed in ``launch.py``, shared constants in
``constants.py``). They are always imported as ``sslfast.kernels`` — never as a top-level ``kernels`` module,
which transformers would take for the Hub's ``kernels`` package.

This folder is the package ``sslfast.kernels``: installed in its place by ``setup.py``, and found through
``sslfast/kernels/__init__.py``'s ``__path__`` in a source checkout (that file explains both).
"""
