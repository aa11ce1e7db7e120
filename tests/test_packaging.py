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
