"""The Triton FlashAttention forward under the interpreter, against the float64 reference."""
import pytest
import torch

import sslfast
from sslfast.ops import BackendUnavailableError, attention, varlen_attention
from sslfast.ops.attention import attention_reference
from tests.helpers import assert_within_torch_error

pytestmark = pytest.mark.skipif(not sslfast.available_backends()["triton"], reason="Triton not available")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sq, sk, d", [(19, 23, 24), (21, 13, 16)])
def test_padded_forward_matches_float64(sq, sk, d, dtype, causal, seed):
    b, h = 3, 2
    q, k, v = (torch.randn(b, h, s, d).to(dtype) for s in (sq, sk, sk))
    lengths = torch.randint(1, sk + 1, (b,))
    lengths[0], lengths[1] = sk, 0  # a full row and an all-padding row
    mask = torch.arange(sk)[None] < lengths[:, None]
    with torch.no_grad():
        out = attention(q, k, v, attention_mask=mask, causal=causal, backend="triton")
    ref = attention_reference(q.double(), k.double(), v.double(), attention_mask=mask, causal=causal)
    same_dtype = attention_reference(q, k, v, attention_mask=mask, causal=causal)
    assert not out.isnan().any()
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # sees no key: exactly 0
    assert_within_torch_error(out, same_dtype, ref, what=f"out {dtype} causal={causal}")


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_forward_matches_per_sequence_reference(causal, seed):
    h, d = 2, 32
    len_q = torch.tensor([7, 0, 18, 3])
    len_k = torch.tensor([7, 5, 18, 9]) if not causal else len_q.clone()
    cu_q = torch.nn.functional.pad(len_q.cumsum(0), (1, 0)).int()
    cu_k = torch.nn.functional.pad(len_k.cumsum(0), (1, 0)).int()
    q, k, v = torch.randn(int(cu_q[-1]), h, d), torch.randn(int(cu_k[-1]), h, d), torch.randn(int(cu_k[-1]), h, d)
    with torch.no_grad():
        out = varlen_attention(q, k, v, cu_q, cu_k, int(len_q.max()), int(len_k.max()), causal=causal,
                               backend="triton")
        torch_out = varlen_attention(q, k, v, cu_q, cu_k, int(len_q.max()), int(len_k.max()), causal=causal)
    for i in range(4):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        if q1 == q0:
            continue
        per = (lambda t, lo, hi: t[lo:hi].transpose(0, 1)[None].double())
        ref = attention_reference(per(q, q0, q1), per(k, k0, k1), per(v, k0, k1), causal=causal)[0].transpose(0, 1)
        assert_within_torch_error(out[q0:q1], torch_out[q0:q1], ref, what=f"sequence {i}")


def test_triton_backend_says_what_it_cannot_do_yet():
    q = torch.randn(1, 1, 5, 16, requires_grad=True)
    with pytest.raises(BackendUnavailableError, match="forward-only"):
        attention(q, q, q, backend="triton")
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match="right-padded"):
        attention(q, q, q, attention_mask=torch.tensor([[1, 0, 1, 1, 1]]), backend="triton")
