"""``sslfast.kernels``: the Triton kernels, one file per op. Their files live in the repository's top-level
``kernels/`` folder (the project's fixed layout) and are only ever imported under this name, never as a
top-level ``kernels`` module (transformers would take that for the Hub's ``kernels`` package).

One mechanism, the package's ``__path__``:
- in a source checkout (tests, ``PYTHONPATH=.``, an editable install, a second checkout beside one), Python
  finds this file, and the line below points the package at this checkout's ``kernels/`` folder, so a
  checkout always runs its own kernels;
- a built sslfast (``pip install .``, a wheel) has no copy of this file: ``setup.py`` installs ``kernels/``
  itself as ``sslfast/kernels`` (``package_dir``), where this ``__path__`` would be.
"""
import os

_CHECKOUT_KERNELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "kernels")
__path__ = [_CHECKOUT_KERNELS]
