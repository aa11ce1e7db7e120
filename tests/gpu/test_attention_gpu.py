"""The Triton attention kernels compiled for a real GPU (skipped without CUDA), against float64.

Run on a GPU machine with the interpreter off: ``TRITON_INTERPRET=0 python -m pytest tests -m gpu``.
"""
import pytest
import torch

from sslfast.ops import attention, varlen_attention
from sslfast.ops._dispatch import triton_interpreted
from sslfast.ops._philox import attention_dropout_keep, effective_dropout_p
from sslfast.ops.attention import attention_reference
from sslfast.ops.attention.flash import flash_attention, padded_sequence_table
from tests.helpers import (
    assert_within_torch_error,
    fwd_bwd,
    per_sequence_attention_reference,
)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(triton_interpreted(), reason="GPU tests run compiled kernels (TRITON_INTERPRET=0)")]
GRADS = ["out", "dq", "dk", "dv"]


def padding_with_holes(b, s):
    lengths = torch.randint(1, s + 1, (b,), device="cuda")
    lengths[0], lengths[1] = s, 0
    mask = torch.arange(s, device="cuda")[None] < lengths[:, None]
    mask[2:] &= torch.rand(b - 2, s, device="cuda") > 0.2
    return mask


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic-dq", "deterministic"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("sq, sk, d", [(300, 257, 64), (1000, 1000, 128), (129, 77, 80), (200, 333, 256), (64, 64, 16)])
def test_padded_matches_float64_on_gpu(sq, sk, d, dtype, causal, deterministic, seed):
    b, h = 4, 3
    q, k, v = (torch.randn(b, h, s, d, device="cuda").to(dtype) for s in (sq, sk, sk))
    mask = padding_with_holes(b, sk)
    grad_out = torch.randn(b, h, sq, d, device="cuda").to(dtype)
    kw = dict(attention_mask=mask, causal=causal)
    ours = fwd_bwd(lambda *t: attention(*t, **kw, deterministic=deterministic, backend="triton"), (q, k, v),
                   grad_out)
    ref = fwd_bwd(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, v)], grad_out.double())
    same_dtype = fwd_bwd(lambda *t: attention_reference(*t, **kw), (q, k, v), grad_out)
    floor = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps / 2
    for name, got, want, base in zip(GRADS, ours, ref, same_dtype):
        assert torch.isfinite(got).all(), name
        assert_within_torch_error(got, base, want, floor=floor, what=f"{name} {dtype} d={d} causal={causal}")
        assert torch.equal(got[1], torch.zeros_like(got[1])), f"{name}: the all-padding sequence is not 0"


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_per_sequence_float64_on_gpu(causal, seed):
    h, d = 4, 64
    len_q = torch.tensor([700, 0, 1, 64, 333])
    len_k = len_q if causal else torch.tensor([700, 12, 90, 64, 1000])
    cu_q, cu_k = (torch.nn.functional.pad(n.cumsum(0), (1, 0)).int().cuda() for n in (len_q, len_k))
    q = torch.randn(int(cu_q[-1]), h, d, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(int(cu_k[-1]), h, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    grad_out = torch.randn_like(q)
    ours = fwd_bwd(lambda *t: varlen_attention(*t, cu_q, cu_k, int(len_q.max()), int(len_k.max()), causal=causal,
                                                    backend="triton"),
                   (q, k, v), grad_out)

    reference = per_sequence_attention_reference(cu_q, cu_k, causal)
    ref = fwd_bwd(reference, [t.double() for t in (q, k, v)], grad_out.double())
    base = fwd_bwd(reference, (q, k, v), grad_out)
    for name, got, want, b in zip(GRADS, ours, ref, base):
        assert_within_torch_error(got, b, want, floor=torch.finfo(torch.bfloat16).eps / 2, what=f"varlen {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dropout_matches_the_host_philox_mask_on_gpu(dtype, seed):
    b, h, sq, sk, d, p = 2, 3, 150, 190, 64, 0.17
    q, k, v = (torch.randn(b, h, s, d, device="cuda").to(dtype) for s in (sq, sk, sk))
    grad_out = torch.randn(b, h, sq, d, device="cuda").to(dtype)
    philox_seed = int(torch.randint(0, 2 ** 62, ()))
    keep = attention_dropout_keep(philox_seed, p, range(b), h, sq, sk).cuda()
    seqs = padded_sequence_table(b, sq, sk, None, "cuda")
    ours = fwd_bwd(lambda *t: flash_attention(*t, seqs, max_seqlen_q=sq, max_seqlen_k=sk, packed=False, causal=True,
                                              dropout_p=p, seed=torch.tensor([philox_seed], device="cuda"))[0],
                   (q, k, v), grad_out)
    kw = dict(causal=True, dropout_mask=keep, dropout_p=effective_dropout_p(p))
    ref = fwd_bwd(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, v)], grad_out.double())
    base = fwd_bwd(lambda *t: attention_reference(*t, **kw), (q, k, v), grad_out)
    floor = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps / 2
    for name, got, want, bb in zip(GRADS, ours, ref, base):
        assert_within_torch_error(got, bb, want, floor=floor, what=f"dropout {name}")


def test_deterministic_backward_is_bitwise_reproducible_on_gpu(seed):
    q, k, v = (torch.randn(2, 8, 2048, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    grad_out = torch.randn_like(q)
    fn = (lambda *t: attention(*t, causal=True, deterministic=True, backend="triton"))
    first, second = fwd_bwd(fn, (q, k, v), grad_out), fwd_bwd(fn, (q, k, v), grad_out)
    for name, x, y in zip(GRADS, first, second):
        assert torch.equal(x, y), name


def test_long_sequence_matches_sdpa_flash(seed):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (torch.randn(1, 16, 16384, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ours = attention(q, k, v, causal=True, backend="triton")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.isfinite(ours).all()
    assert (ours.float() - theirs.float()).abs().max().item() < 2e-2


def test_addresses_beyond_2_31_elements(seed):
    """Tensors of more than 2^31 elements (64-bit batch and sequence bases), padded and packed."""
    b, s, h, d = 5, 2 ** 16 + 3, 64, 128
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    assert q.numel() > 2 ** 31
    out = attention(q, k, v, backend="triton")
    tail = slice(s - 64, s)
    want = torch.nn.functional.scaled_dot_product_attention(q[-1:, :, tail], k[-1:], v[-1:])
    assert (out[-1:, :, tail].float() - want.float()).abs().max().item() < 2e-2
    cu = torch.arange(0, (b + 1) * s, s, device="cuda", dtype=torch.int32)
    packed = varlen_attention(*(t.transpose(1, 2).reshape(b * s, h, d) for t in (q, k, v)), cu, cu, s, s,
                              backend="triton")
    assert (packed[-64:].float() - want[0].transpose(0, 1).float()).abs().max().item() < 2e-2


def test_auto_runs_the_kernel_once_it_passed_its_check_and_compiles_whole(tmp_path, monkeypatch, seed):
    """``auto`` checks the variant on first use, records it, then runs the very kernel ``backend="triton"`` runs;
    under torch.compile(fullgraph=True) the decision is taken while tracing (no graph break)."""
    import json

    from sslfast.ops import _kernel_verdicts as _validation
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))
    monkeypatch.setattr(_validation, "_results", {})
    b, h, s, d = 4, 4, 128, 64
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = padding_with_holes(b, s)
    auto = attention(q, k, v, attention_mask=mask)
    stored = json.loads(open(_validation.cache_file(q.device)).read())
    assert stored["attention/bf16/d64/full"]["passed"], stored
    assert torch.equal(auto, attention(q, k, v, attention_mask=mask, backend="triton"))
    compiled = torch.compile(lambda *t: attention(*t, attention_mask=mask), backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(q, k, v), auto)
