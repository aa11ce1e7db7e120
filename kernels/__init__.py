"""Triton kernels of sslfast, one file per op (launch tables typed in ``launch.py``, shared constants in
``constants.py``). They are always imported as ``sslfast.kernels`` — never as a top-level ``kernels`` module,
which transformers would take for the Hub's ``kernels`` package.

How this folder becomes ``sslfast.kernels`` (one mapping, two halves):
- installed (wheel or ``pip install -e .``): ``setup.py``'s ``package_dir={"sslfast.kernels": "kernels"}``;
- a source checkout on ``sys.path`` (tests, ``PYTHONPATH=.``, a second checkout beside an editable install):
  ``sslfast/_extension.py`` registers this checkout's folder under that name before any op imports it, so a
  checkout always runs its own kernels.
"""
