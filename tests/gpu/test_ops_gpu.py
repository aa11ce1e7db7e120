"""Every Triton kernel variant on a real GPU, compiled (not interpreted), against float64: small shapes with odd
sizes, holes and empty rows, and realistic shapes. The same checks ``python -m sslfast selftest`` runs."""
import pytest
import torch

from sslfast.selftest import run_variant, variants

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("shapes", ["small", "realistic"])
@pytest.mark.parametrize("variant", variants(), ids=lambda v: v.key)
def test_kernel_variant_matches_float64(variant, shapes):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    record = run_variant(variant, "cuda", big=shapes == "realistic")
    assert record["passed"], record
