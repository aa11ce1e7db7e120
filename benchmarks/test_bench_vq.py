"""pytest-benchmark: vq_lookup against torch.cdist(x, c).argmin(-1), the usual user baseline.

Run: ``pytest benchmarks/test_bench_vq.py --benchmark-only`` (kept out of the normal test run).
"""
import pytest
import torch

from sslfast.ops import vq_lookup

CPU_CASE = dict(n=65536, k=1024, d=64)


def _inputs(device, dtype, n, k, d):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, d, generator=g).to(device, dtype), torch.randn(k, d, generator=g).to(device, dtype))


def cdist_argmin(x, c):
    return torch.cdist(x, c).argmin(-1)


@pytest.mark.benchmark(group="vq_lookup cpu N=65536 K=1024 D=64 fp32")
@pytest.mark.parametrize("impl", ["cdist_argmin", "sslfast"])
def test_vq_cpu(benchmark, impl):
    x, c = _inputs("cpu", torch.float32, **CPU_CASE)
    fn = cdist_argmin if impl == "cdist_argmin" else (lambda a, b: vq_lookup(a, b)[0])
    benchmark.pedantic(fn, args=(x, c), warmup_rounds=2, rounds=9, iterations=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.benchmark(group="vq_lookup cuda N=262144 K=16384 D=128")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", ["cdist_argmin", "sslfast"])
def test_vq_cuda(benchmark, impl, dtype):
    x, c = _inputs("cuda", dtype, n=262144, k=16384, d=128)
    fn = cdist_argmin if impl == "cdist_argmin" else (lambda a, b: vq_lookup(a, b)[0])

    def run():
        out = fn(x, c)
        torch.cuda.synchronize()
        return out

    benchmark.pedantic(run, warmup_rounds=3, rounds=20, iterations=1)
