"""vq_lookup / vq_codebook_stats against a float64 reference, on every backend this install has."""
import pytest
import torch

from sslfast.ops import BackendUnavailableError, vq_codebook_stats, vq_lookup
from tests.conftest import cpu_backends
from tests.helpers import assert_within_torch_error

BACKENDS = cpu_backends()

SHAPES = [  # (N, K, D): odd sizes, K=1, D=1
    (37, 19, 13),
    (101, 1, 7),
    (53, 29, 1),
    (1, 5, 3),
    (130, 67, 45),
    (64, 33, 130),  # D over one Triton D-block
]


def float64_lookup(x, codebook):
    sq = torch.cdist(x.double(), codebook.double()).pow(2)  # (N, K) exact enough in float64
    return sq


def check_lookup(idx, dist, x, codebook, dtype):
    sq64 = float64_lookup(x, codebook)
    best64 = sq64.min(-1).values
    chosen64 = sq64.gather(-1, idx.view(-1, 1)).squeeze(-1)
    # fp32 PyTorch path on the same inputs, for the error budget
    x32, c32 = x.float(), codebook.float()
    torch_sq = (x32.pow(2).sum(-1, keepdim=True) - 2 * x32 @ c32.t() + c32.pow(2).sum(-1)).clamp_min(0)
    torch_best, torch_idx = torch_sq.min(-1)
    torch_chosen64 = sq64.gather(-1, torch_idx.view(-1, 1)).squeeze(-1)
    # the chosen code is as near as the float64 optimum, up to the fp32 path's own slack: twice the cost of the
    # torch path's own choices, plus twice the rigorous error of an fp32 distance ‖x‖² - 2x·c + ‖c‖² summed in
    # any order (γ_(D+2) (‖x‖ + ‖c‖)²): a choice can flip on a near-tie only within what its distances may err
    d = x.shape[-1]
    gamma = (d + 2) * 2.0 ** -24 / (1 - (d + 2) * 2.0 ** -24)
    norms = x.double().norm(dim=-1).max() + codebook.double().norm(dim=-1).max()
    slack = 2 * (torch_chosen64 - best64).abs().max().item() + 2 * gamma * norms.item() ** 2 + 1e-12
    assert (chosen64 - best64).abs().max().item() <= slack
    assert_within_torch_error(dist, torch_best, chosen64, what="sqdist")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_lookup_matches_float64(backend, shape, seed):
    n, k, d = shape
    x, codebook = torch.randn(n, d), torch.randn(k, d)
    idx, dist = vq_lookup(x, codebook, backend=backend)
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert idx.shape == (n,) and dist.shape == (n,)
    assert int(idx.min()) >= 0 and int(idx.max()) < k
    check_lookup(idx, dist, x, codebook, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lookup_half_precision(backend, dtype, seed):
    x, codebook = torch.randn(45, 24).to(dtype), torch.randn(31, 24).to(dtype)
    idx, dist = vq_lookup(x, codebook, backend=backend)
    assert dist.dtype == torch.float32
    check_lookup(idx, dist, x, codebook, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_output_written_and_leading_shape(backend, seed):
    # conftest sets SSLFAST_POISON=1: outputs start as NaN / -7, so an unwritten element fails here
    x = torch.randn(3, 5, 7, 16)
    codebook = torch.randn(23, 16)
    idx, dist = vq_lookup(x, codebook, backend=backend)
    assert idx.shape == (3, 5, 7) and dist.shape == (3, 5, 7)
    ref_idx, ref_dist = vq_lookup(x, codebook, backend="torch")
    assert torch.isfinite(dist).all() and (dist >= 0).all() and (idx >= 0).all()
    assert torch.allclose(dist, ref_dist, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_lowest_index(backend, seed):
    base = torch.randn(9, 12)
    codebook = torch.cat([base, base, base])  # every code appears three times
    x = base[torch.randint(0, 9, (40,))] + 0.01 * torch.randn(40, 12)
    idx, _ = vq_lookup(x, codebook, backend=backend)
    assert int(idx.max()) < 9, "a duplicate code with a higher index was chosen"
    x_exact = torch.randn(17, 12)
    far = torch.full((6, 12), 50.0)
    idx2, _ = vq_lookup(x_exact, torch.cat([torch.zeros(1, 12), far, torch.zeros(1, 12)]), backend=backend)
    assert (idx2 == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs(backend, seed):
    x = torch.randn(40, 30)[:, ::2]  # non-contiguous (40, 15)
    codebook = torch.randn(15, 22).t()  # (22, 15) transposed view
    idx, dist = vq_lookup(x, codebook, backend=backend)
    check_lookup(idx, dist, x.contiguous(), codebook.contiguous(), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_x_gives_empty_outputs(backend):
    idx, dist = vq_lookup(torch.randn(0, 4), torch.randn(3, 4), backend=backend)
    assert idx.shape == (0,) and dist.shape == (0,)
    idx, dist = vq_lookup(torch.randn(2, 0, 4), torch.randn(3, 4), backend=backend)
    assert idx.shape == (2, 0)


@pytest.mark.parametrize(
    "x, codebook, error, match",
    [
        (torch.randn(5, 4), torch.randn(3, 5), ValueError, "last dimension"),
        (torch.randn(5, 4), torch.randn(3, 4, 1), ValueError, "codebook must have 2 dimensions"),
        (torch.randn(5, 4), torch.randn(0, 4), ValueError, "codebook is empty"),
        (torch.randint(0, 5, (5, 4)), torch.randn(3, 4), TypeError, "x must have dtype"),
        (torch.randn(5, 4), torch.randint(0, 5, (3, 4)), TypeError, "codebook must have dtype"),
        (torch.randn(5, 4), torch.randn(3, 4).double(), TypeError, "codebook must have dtype"),
        (torch.randn(5, 4), torch.randn(3, 4).half(), TypeError, "same dtype"),
        (torch.tensor(1.0), torch.randn(3, 4), ValueError, "at least 1"),
        (torch.tensor([[1.0, float("nan")]]), torch.randn(3, 2), ValueError, "x contains NaN"),
        (torch.randn(2, 2), torch.tensor([[1.0, float("inf")]]), ValueError, "codebook contains NaN or Inf"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, codebook, error, match):
    with pytest.raises(error, match=match):
        vq_lookup(x, codebook)


def test_device_mismatch_is_reported():
    meta = torch.randn(3, 4, device="meta")
    with pytest.raises(ValueError, match="same device"):
        vq_lookup(torch.randn(5, 4), meta)


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="backend must be one of"):
        vq_lookup(torch.randn(5, 4), torch.randn(3, 4), backend="fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        vq_lookup(torch.randn(5, 4), torch.randn(3, 4), backend="cuda")  # the device picks CUDA, not the backend
    with pytest.raises(BackendUnavailableError):  # statistics have no C++ implementation
        vq_codebook_stats(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), 3, backend="cpp")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("triton", "torch")])
@pytest.mark.parametrize("n, k, d", [(57, 13, 9), (200, 3, 33), (5, 40, 2)])
def test_codebook_stats_match_one_hot(backend, n, k, d, seed):
    x = torch.randn(n, d)
    idx = torch.randint(0, k, (n,))
    counts, sums = vq_codebook_stats(x, idx, k, backend=backend)
    one_hot = torch.nn.functional.one_hot(idx, k).double()  # (N, K), reference only
    assert torch.allclose(counts.double(), one_hot.sum(0))
    assert torch.allclose(sums.double(), one_hot.t() @ x.double(), atol=1e-5)


def test_codebook_stats_bad_inputs():
    with pytest.raises(ValueError, match="indices shape"):
        vq_codebook_stats(torch.randn(4, 3), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="indices must have dtype"):
        vq_codebook_stats(torch.randn(4, 3), torch.zeros(4, dtype=torch.int32), 2)


def test_torch_compile_traces_without_graph_breaks():
    x, codebook = torch.randn(33, 8), torch.randn(7, 8)

    def fn(a, c):
        idx, dist = vq_lookup(a, c, check_finite_inputs=False)
        return idx, dist * 2

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    idx, dist = compiled(x, codebook)
    ref_idx, ref_dist = vq_lookup(x, codebook)
    assert torch.equal(idx, ref_idx) and torch.allclose(dist, ref_dist * 2)


def test_huge_finite_inputs_are_not_mistaken_for_nan():
    x = torch.full((4, 3), 3e38)  # the fp32 sum overflows, the values do not
    idx, _ = vq_lookup(x, torch.randn(5, 3))
    assert idx.shape == (4,)


def test_vq_ops_are_registered_custom_ops():
    x, codebook = torch.randn(37, 16), torch.randn(11, 16)
    torch.library.opcheck(torch.ops.sslfast.vq_lookup.default, (x, codebook, "torch"),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    idx = torch.randint(0, 11, (37,))
    torch.library.opcheck(torch.ops.sslfast.vq_codebook_stats.default, (x, idx, 11, "torch"),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
