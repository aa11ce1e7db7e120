"""The install: kernels ship as ``sslfast.kernels``, never as a top-level ``kernels`` module."""
import os
import shutil
import subprocess
import sys

import pytest

import sslfast
from tests.helpers import REPO

_ROOT_CHECK = """
import sys
import torch, transformers
from transformers.utils.import_utils import is_kernels_available
import sslfast
assert not is_kernels_available(), "transformers took the repo's kernels/ folder for the hub `kernels` package"
config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64)
hf = transformers.BertModel(config).eval()
ids = torch.randint(0, 97, (2, 7))
mask = torch.ones(2, 7, dtype=torch.long)
mask[1, 5:] = 0
with torch.no_grad():
    want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    ours = sslfast.models.BertModel.from_pretrained(hf)(input_ids=ids, attention_mask=mask).last_hidden_state
    sslfast.patch(hf)
    patched = hf(input_ids=ids, attention_mask=mask).last_hidden_state
real = mask.bool()
assert (ours[real] - want[real]).abs().max() < 1e-5 and (patched[real] - want[real]).abs().max() < 1e-5
print("ok")
"""


@pytest.mark.parametrize("where", ["repo root", "a folder named sslfast-*"])
def test_transformers_and_bert_run_where_a_kernels_folder_shadows_the_hub_package(where, tmp_path):
    """From the repo root (or any folder holding a copy of our kernels/, here one whose path contains
    "sslfast", as a `git clone .../sslfast` gives), Python can import our kernels/ as a top-level `kernels`.
    transformers probes that name for the Hub's `kernels` package: it must not take ours for it, and BERT
    (transformers', sslfast's, and a patched one) must import and run there."""
    cwd = REPO
    if where != "repo root":
        cwd = tmp_path / "sslfast-clone"
        shutil.copytree(os.path.join(REPO, "kernels"), cwd / "kernels")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO}
    env.pop("TRITON_INTERPRET", None)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('kernels').origin)"],
                           cwd=cwd, capture_output=True, text=True, env=env)
    assert os.path.realpath(probe.stdout.strip()) == os.path.realpath(os.path.join(str(cwd), "kernels", "__init__.py")), \
        "the shadowing this test is about did not happen: " + probe.stdout + probe.stderr
    proc = subprocess.run([sys.executable, "-c", _ROOT_CHECK], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_kernels_are_a_subpackage():
    import sslfast.kernels.vq_lookup as mod
    assert mod.__name__ == "sslfast.kernels.vq_lookup"
    here = os.path.dirname(os.path.dirname(os.path.abspath(sslfast.__file__)))
    assert os.path.samefile(mod.__file__, os.path.join(here, "kernels", "vq_lookup.py")), \
        "a checkout must run its own kernels/ folder"


def test_a_build_ships_kernels_as_sslfast_kernels_only(tmp_path):
    """What ``pip install .`` copies: every file of kernels/ under sslfast/kernels, no top-level kernels."""
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["sslfast"]
    shipped = {f for f in os.listdir(tmp_path / "sslfast" / "kernels") if f.endswith(".py")}
    assert shipped == {f for f in os.listdir(os.path.join(REPO, "kernels")) if f.endswith(".py")}
    with open(tmp_path / "sslfast" / "kernels" / "__init__.py") as built, \
            open(os.path.join(REPO, "kernels", "__init__.py")) as source:
        assert built.read() == source.read(), "the checkout's path stub was installed instead of kernels/"


def test_available_backends_reports_cpp_and_torch():
    have = sslfast.available_backends()
    assert set(have) == {"triton", "cpp", "torch"}
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
