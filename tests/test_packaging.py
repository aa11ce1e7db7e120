"""The install: kernels ship as ``sslfast.kernels``, never as a top-level ``kernels`` module."""
import os
import subprocess
import sys

import sslfast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_transformers_bert_imports_from_repo_root():
    # transformers probes for a module named `kernels`; the repo's kernels/ folder must not be it
    code = "import sslfast, transformers; from transformers import BertModel; import importlib.util as u; " \
           "spec = u.find_spec('kernels'); " \
           "assert spec is None or 'sslfast' not in str(spec.origin), spec.origin; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_kernels_are_a_subpackage():
    import sslfast.kernels.vq_lookup as mod
    assert mod.__name__ == "sslfast.kernels.vq_lookup"


def test_available_backends_reports_cpp_and_torch():
    have = sslfast.available_backends()
    assert set(have) == {"triton", "cuda", "cpp", "torch"}
    assert have["torch"] is True
    assert have["cpp"] is True, "the C++ extension sslfast._C was not built"


def test_public_api_is_listed():
    for name in sslfast.__all__:
        assert hasattr(sslfast, name), name
    for name in sslfast.ops.__all__:
        assert hasattr(sslfast.ops, name), name


def test_without_the_extension_sslfast_imports_and_warns_once():
    code = r'''
import sys, warnings, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sslfast._C":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import torch, sslfast
from sslfast.ops import vq_lookup, BackendUnavailableError
assert sslfast.available_backends()["cpp"] is False
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    x, c = torch.randn(9, 3), torch.randn(4, 3)
    vq_lookup(x, c); vq_lookup(x, c)
msgs = [str(w.message) for w in caught if "unavailable backends" in str(w.message)]
assert len(msgs) == 1 and "'cpp'" in msgs[0], msgs
try:
    vq_lookup(x, c, backend="cpp")
except BackendUnavailableError as e:
    assert "not available" in str(e)
else:
    raise AssertionError("explicit cpp backend did not raise")
print("ok")
'''
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
