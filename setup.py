"""Build sslfast: the Python package, its Triton kernels and the C++ extension.

The C++ extension ``sslfast._C`` (pybind11 through torch's cpp_extension, OpenMP) holds the CPU kernels and
is built on every machine; the GPU kernels are Triton, compiled at run time. The repository's
``kernels/`` folder ships as ``sslfast.kernels`` (``package_dir``) so it is never importable as a top-level
``kernels`` module (transformers imports any module of that name); in a source checkout the package
``sslfast/kernels/__init__.py`` points there itself.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch  # noqa: F401  (a build requirement: fail with a clear message without it)
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:  # pragma: no cover - torch is a build requirement
    sys.exit("sslfast needs torch installed before it is built: pip install torch, then "
             "pip install -e . --no-build-isolation")

HERE = os.path.dirname(os.path.abspath(__file__))


def _extension():
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cxx_flags = ["-O3", "-fopenmp", "-std=c++17"]
    if os.environ.get("SSLFAST_NATIVE", "0") == "1":
        cxx_flags.append("-march=native")
    return CppExtension("sslfast._C", cpp_sources, extra_compile_args=cxx_flags, extra_link_args=["-fopenmp"])


setup(
    name="sslfast",
    version="0.1.0",
    description="Fused GPU/CPU kernels and drop-in fast models for self-supervised learning",
    python_requires=">=3.10",
    packages=find_packages(include=["sslfast", "sslfast.*"]),  # sslfast.kernels included
    package_dir={"sslfast": "sslfast", "sslfast.kernels": "kernels"},  # see sslfast/kernels/__init__.py
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=["torch>=2.11", "numpy", "tokenizers>=0.20", "tqdm", "pyyaml", "safetensors"],
    extras_require={"triton": ["triton>=3.6"], "hf": ["transformers>=4.40", "safetensors"],
                    "images": ["scikit-learn"], "plots": ["matplotlib"],
                    "data": ["pyarrow"], "finetune": ["scikit-learn", "scipy"]},
    entry_points={"console_scripts": ["sslfast=sslfast.cli:main"]},
)
