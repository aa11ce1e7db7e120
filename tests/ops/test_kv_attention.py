"""``attention_with_kvcache`` (decoding attention over a key/value cache): every backend against float64, rows
of any length, errors, the C++ kernel, the registered op."""
import pytest
import torch

from sslfast.ops import attention_with_kvcache
from sslfast.ops._dispatch import BackendUnavailableError
from sslfast.ops.kv_attention import (
    CPP_KVCACHE_AVAILABLE,
    kvcache_attention_reference,
    kvcache_backend,
)
from tests.conftest import cpu_backends


@pytest.mark.parametrize("backend", cpu_backends(("triton", "cpp", "torch")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(3, 1, 4, 4, 32, 40), (2, 5, 4, 2, 64, 37), (1, 3, 2, 2, 16, 16)])
def test_attention_with_kvcache_against_float64(backend, dtype, shape, seed):
    if backend == "cpp" and dtype != torch.float32:
        pytest.skip("the C++ kernel is fp32 (tested to refuse other dtypes below)")
    b, sq, h, hkv, d, capacity = shape
    lengths = torch.randint(0, capacity - sq + 1, (b,), dtype=torch.int32)
    lengths[0] = 0  # an empty cache row: it sees only its new keys
    k_cache, v_cache = (torch.randn(b, capacity, hkv, d, dtype=dtype) for _ in range(2))
    q, k_new, v_new = torch.randn(b, sq, h, d, dtype=dtype), *(torch.randn(b, sq, hkv, d, dtype=dtype) for _ in range(2))
    rows, cols = torch.arange(b)[:, None], lengths.long()[:, None] + torch.arange(sq)
    k_full, v_full = k_cache.clone(), v_cache.clone()
    k_full[rows, cols], v_full[rows, cols] = k_new, v_new
    for causal in (True, False):
        kc, vc = k_cache.clone(), v_cache.clone()
        out = attention_with_kvcache(q, kc, vc, lengths, k_new, v_new, causal=causal, backend=backend)
        assert torch.equal(kc, k_full) and torch.equal(vc, v_full), "the new keys were not appended in place"
        ref = kvcache_attention_reference(q.double(), k_full.double(), v_full.double(), lengths + sq, causal=causal)
        same_dtype = kvcache_attention_reference(q, k_full, v_full, lengths + sq, causal=causal)
        from tests.helpers import assert_within_torch_error
        assert_within_torch_error(out, same_dtype, ref, what=f"{backend} {dtype} causal={causal}")
    no_new = attention_with_kvcache(q, k_full.clone(), v_full.clone(), lengths + sq, causal=False, backend=backend)
    torch.testing.assert_close(no_new.double(), kvcache_attention_reference(q.double(), k_full.double(),
                               v_full.double(), lengths + sq, causal=False), rtol=0, atol=2e-2 if dtype != torch.float32
                               else 1e-5)


@pytest.mark.parametrize("b, sq, start", [(1, 1, 9), (3, 1, 20), (2, 4, 7), (2, 6, 0), (1, 5, 0)])
def test_attention_with_kvcache_rows_of_equal_length_against_float64(b, sq, start, seed):
    # every row at the same length takes the CPU's unmasked / built-in-causal SDPA path and a slice append
    h, d, capacity = 4, 32, 33
    lengths = torch.full((b,), start, dtype=torch.int32)
    k_cache, v_cache = torch.randn(b, capacity, h, d), torch.randn(b, capacity, h, d)
    q, k_new, v_new = (torch.randn(b, sq, h, d) for _ in range(3))
    k_full, v_full = k_cache.clone(), v_cache.clone()
    k_full[:, start:start + sq], v_full[:, start:start + sq] = k_new, v_new
    for causal in (True, False):
        kc, vc = k_cache.clone(), v_cache.clone()
        out = attention_with_kvcache(q, kc, vc, lengths, k_new, v_new, causal=causal, backend="torch")
        assert torch.equal(kc, k_full) and torch.equal(vc, v_full), "the new keys were not appended in place"
        ref = kvcache_attention_reference(q.double(), k_full.double(), v_full.double(), lengths + sq, causal=causal)
        same_dtype = kvcache_attention_reference(q, k_full, v_full, lengths + sq, causal=causal)
        from tests.helpers import assert_within_torch_error
        assert_within_torch_error(out, same_dtype, ref, what=f"equal lengths causal={causal}")


def test_attention_with_kvcache_errors_and_empty_rows():
    q = torch.randn(2, 1, 2, 16)
    cache = torch.randn(2, 8, 2, 16)
    zero = attention_with_kvcache(q, cache.clone(), cache.clone(), torch.zeros(2, dtype=torch.int32), causal=False)
    assert torch.equal(zero, torch.zeros_like(q))  # nothing to attend to: 0, never NaN
    with pytest.raises(ValueError, match="leave room"):
        attention_with_kvcache(q, cache, cache.clone(), torch.tensor([8, 2], dtype=torch.int32), torch.randn(2, 1, 2, 16),
                               torch.randn(2, 1, 2, 16))
    with pytest.raises(TypeError, match="cache_seqlens must have dtype"):
        attention_with_kvcache(q, cache, cache.clone(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="both k_new and v_new"):
        attention_with_kvcache(q, cache, cache.clone(), torch.tensor([1, 2], dtype=torch.int32), torch.randn(2, 1, 2, 16))
    with pytest.raises(ValueError, match="multiple of cache heads"):
        attention_with_kvcache(torch.randn(2, 1, 3, 16), cache, cache.clone(), torch.tensor([1, 2], dtype=torch.int32))


@pytest.mark.skipif(not CPP_KVCACHE_AVAILABLE, reason="the C++ extension is not built")
def test_attention_with_kvcache_cpp_kernel_is_the_cpu_default_and_checks_its_inputs():
    assert kvcache_backend(torch.device("cpu"), torch.float32, 64) == "cpp"
    assert kvcache_backend(torch.device("cpu"), torch.bfloat16, 64) == "torch"  # fp32 only: auto falls back
    with pytest.raises(BackendUnavailableError, match="fp32"):
        kvcache_backend(torch.device("cpu"), torch.float16, 64, backend="cpp")
    q, cache = torch.randn(2, 1, 2, 16), torch.randn(2, 8, 2, 16)
    full = torch.tensor([8, 2], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="do not fit"):  # the op itself refuses an append past the end
        torch.ops.sslfast.kvcache_attention_cpp(q, cache, cache.clone(), full, q.clone(), q.clone(), True, 0.25)
    zero = torch.ops.sslfast.kvcache_attention_cpp(q, cache, cache.clone(), torch.zeros(2, dtype=torch.int32), None,
                                                   None, True, 0.25)
    assert torch.equal(zero, torch.zeros_like(q))  # no key to attend to: 0, never NaN
    args = (q, cache.clone(), cache.clone(), torch.tensor([1, 3], dtype=torch.int32), q.clone(), q.clone(), True, 0.25)
    torch.library.opcheck(torch.ops.sslfast.kvcache_attention_cpp.default, args,
                          test_utils=("test_schema", "test_faketensor"))


def test_attention_with_kvcache_is_a_registered_op():
    q = torch.randn(2, 2, 2, 16)
    k_cache, v_cache = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16)
    args = (q, k_cache, v_cache, torch.tensor([1, 3], dtype=torch.int32), torch.randn(2, 2, 2, 16),
            torch.randn(2, 2, 2, 16), True, 0.25, "torch")
    with pytest.raises(RuntimeError, match="no derivative"):  # never an output silently without gradients
        torch.ops.sslfast.attention_with_kvcache(args[0].clone().requires_grad_(), *args[1:])
    torch.library.opcheck(torch.ops.sslfast.attention_with_kvcache.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("backend", cpu_backends(("triton", "cpp", "torch")))
def test_attention_with_kvcache_many_splits_long_queries_odd_head_dims_and_bf16(backend, seed):
    cases = [(1, 1, 1, 1, 40, 100, torch.float32),  # one (batch, head): the cache is split over programs
             (2, 20, 2, 1, 24, 60, torch.float32),  # more queries than a tile, grouped heads
             (1, 3, 2, 2, 32, 80, torch.bfloat16)]
    for b, sq, h, hkv, d, capacity, dtype in cases:
        if backend == "cpp" and dtype != torch.float32:
            continue
        lengths = torch.randint(0, capacity - sq + 1, (b,), dtype=torch.int32)
        k_cache, v_cache = (torch.randn(b, capacity, hkv, d, dtype=dtype) for _ in range(2))
        q = torch.randn(b, sq, h, d, dtype=dtype)
        k_new, v_new = (torch.randn(b, sq, hkv, d, dtype=dtype) for _ in range(2))
        rows, cols = torch.arange(b)[:, None], lengths.long()[:, None] + torch.arange(sq)
        k_full, v_full = k_cache.clone(), v_cache.clone()
        k_full[rows, cols], v_full[rows, cols] = k_new, v_new
        out = attention_with_kvcache(q, k_cache, v_cache, lengths, k_new, v_new, backend=backend)
        ref = kvcache_attention_reference(q.double(), k_full.double(), v_full.double(), lengths + sq)
        same = kvcache_attention_reference(q, k_full, v_full, lengths + sq)
        from tests.helpers import assert_within_torch_error
        # bf16 outputs: both paths round to bf16, so one ulp of the output is the floor of a fair bound
        floor = 2 ** -8 if dtype == torch.bfloat16 else 1e-6
        assert_within_torch_error(out, same, ref, floor=floor, what=f"{backend} {dtype} d={d} sq={sq}")
    from sslfast.kernels.kv_attention import num_splits
    assert num_splits(100, 1, 16, 4) > 1  # the first case runs several splits under the interpreter
