"""Test setup: Triton kernels run on CPU tensors through the interpreter.

TRITON_INTERPRET must be set before any ``@triton.jit`` decoration runs, so it is set here, before
sslfast (and its kernels) are imported by any test module.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "triton"))
os.environ.setdefault("SSLFAST_POISON", "1")  # kernel outputs start as NaN / -7
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "SSLFAST_CACHE" not in os.environ:  # parsed corpora and tokenized caches: per test session, never $HOME
    import tempfile
    os.environ["SSLFAST_CACHE"] = tempfile.mkdtemp(prefix="sslfast-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

import sslfast  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the mark, not the word: tests/gpu/ also holds CPU tests
            item.add_marker(skip_gpu)


@pytest.fixture
def seed():
    """A fresh seed per test run (printed on failure through the test id's repr)."""
    value = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(value)
    return value


def cpu_backends(op_backends=("triton", "cpp", "torch")):
    """Backends of an op that can run on CPU tensors in this install (Triton through the interpreter)."""
    have = sslfast.ops.available_backends()
    return [b for b in op_backends if have.get(b)]
