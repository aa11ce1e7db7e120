"""The CPU inference projection: oneDNN's inner product where no gradient is needed, ``F.linear`` otherwise."""
import importlib

import pytest
import torch
import torch.nn.functional as F

il = importlib.import_module("sslfast.ops.inference_linear")  # the module; sslfast.ops.inference_linear is the op

needs_onednn = pytest.mark.skipif(not il.onednn_linear_available(), reason="PyTorch built without oneDNN")


def _fp32_summation_bounds(x, w, b):
    """Error bounds of an fp32 ``x @ w.T + b`` against float64, for any summation order (MKL, oneDNN and
    sslfast's kernel each sum in their own): the rigorous worst case γ_(K+1) · (Σ|x||w| + |b|) for the
    largest error, and the probabilistic sqrt(K+1) · u · rms(Σ|x||w| + |b|) for the rms error (Higham & Mary,
    2019; a sweep of 300 seeds over these shapes put every implementation within half of it)."""
    u = 2.0 ** -24
    k = x.shape[-1] + 1
    magnitude = x.double().abs() @ w.double().abs().t() + (0 if b is None else b.double().abs())
    largest = (k * u / (1 - k * u)) * magnitude.max().item()
    rms = k ** 0.5 * u * magnitude.pow(2).mean().sqrt().item()
    return rms, largest


def _errors(out, ref):
    diff = out.double() - ref
    return diff.pow(2).mean().sqrt().item(), diff.abs().max().item()


def _inputs(rows, d_in, d_out, shape):
    x = torch.randn(2, rows, d_in) if shape == "3d" else torch.randn(rows, d_in)
    w = torch.randn(d_in, d_out).t() if shape == "transposed_weight" else torch.randn(d_out, d_in)
    b = None if shape == "no_bias" else torch.randn(d_out)
    return x, w, b  # transposed_weight: an (in, out) matrix seen as (out, in), as GPT-2's Conv1D stores it


def _assert_within_fp32_bounds(out, x, w, b):
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert out.shape == ref.shape and out.dtype == torch.float32
    rms_bound, largest_bound = _fp32_summation_bounds(x.reshape(-1, x.shape[-1]), w, b)
    torch_rms, torch_largest = _errors(F.linear(x, w, b), ref)
    # the bounds hold for PyTorch's own fp32 result on the same inputs: they are not tighter than fp32 allows
    assert torch_rms <= rms_bound and torch_largest <= largest_bound
    rms, largest = _errors(out, ref)
    assert rms <= rms_bound and largest <= largest_bound, (rms, rms_bound, largest, largest_bound, torch_rms)


@needs_onednn
@pytest.mark.parametrize("rows, d_in, d_out", [(1, 7, 13), (8, 64, 1001), (37, 33, 5), (3, 768, 96)])
@pytest.mark.parametrize("shape", ["2d", "3d", "transposed_weight", "no_bias"])
def test_matches_float64_within_fp32_summation_error(rows, d_in, d_out, shape, seed):
    x, w, b = _inputs(rows, d_in, d_out, shape)
    with torch.no_grad():
        assert il._takes_onednn(x, w, b)
        out = il.inference_linear(x, w, b)
    _assert_within_fp32_bounds(out, x, w, b)


needs_few_row = pytest.mark.skipif(not il.few_row_linear_available(), reason="sslfast's C++ extension is not built")


@needs_few_row
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, 17])  # 9 and 17: the kernel's 8-row chunks plus a rest
@pytest.mark.parametrize("d_in, d_out", [(7, 13), (64, 1001), (768, 96), (771, 35), (3072, 40)])
@pytest.mark.parametrize("layout", ["out_in", "in_out"])
@pytest.mark.parametrize("bias", [True, False])
def test_few_row_kernel_matches_float64_in_both_weight_layouts(rows, d_in, d_out, layout, bias, seed):
    x = torch.randn(rows, d_in)
    w = torch.randn(d_out, d_in) if layout == "out_in" else torch.randn(d_in, d_out).t()
    b = torch.randn(d_out) if bias else None
    out = torch.ops.sslfast.few_row_linear(x, w, b)
    _assert_within_fp32_bounds(out, x, w, b)


@needs_few_row
@pytest.mark.parametrize("layout", ["out_in", "in_out"])
@pytest.mark.parametrize("rows", [1, 3, 9])
def test_few_row_kernel_epilogue_activation_and_residual(layout, rows, seed):
    # the fused GELU (tanh) and residual add: what F.gelu(linear) + residual computes, within the fp32 bounds
    # of the product carried through the activation (|gelu'| <= 1.13) plus a few roundings of the result
    x, residual = torch.randn(rows, 96), torch.randn(rows, 70)
    w = torch.randn(70, 96) if layout == "out_in" else torch.randn(96, 70).t()
    b = torch.randn(70)
    out = torch.ops.sslfast.few_row_linear(x, w, b, residual, "gelu_tanh")
    exact = F.gelu(F.linear(x.double(), w.double(), b.double()), approximate="tanh") + residual.double()
    torch_path = F.gelu(F.linear(x, w, b), approximate="tanh") + residual
    _, largest_bound = _fp32_summation_bounds(x, w, b)
    bound = 1.13 * largest_bound + 8 * 2.0 ** -24 * exact.abs().max().item()
    assert (torch_path.double() - exact).abs().max().item() <= bound  # the bound holds for PyTorch's own path
    assert (out.double() - exact).abs().max().item() <= bound
    plain = torch.ops.sslfast.few_row_linear(x, w, b, residual)  # residual alone
    torch.testing.assert_close(plain, torch.ops.sslfast.few_row_linear(x, w, b) + residual, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="activation must be"):
        torch.ops.sslfast.few_row_linear(x, w, b, None, "relu6")
    with pytest.raises(RuntimeError, match="residual must be"):
        torch.ops.sslfast.few_row_linear(x, w, b, residual.t(), "none")


@needs_few_row
def test_few_row_kernel_is_what_decoding_calls_and_rejects_what_it_cannot_read():
    x, w, b = torch.randn(1, 40), torch.randn(30, 40), torch.randn(30)
    real = torch.ops.sslfast.few_row_linear

    def ops_run(rows):
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            il.inference_linear(torch.randn(rows, 40), w, b)
        return {e.key for e in prof.key_averages()}

    assert "sslfast::few_row_linear" in ops_run(1) and "sslfast::few_row_linear" in ops_run(il.FEW_ROWS)
    more = ops_run(il.FEW_ROWS + 1)
    assert "sslfast::few_row_linear" not in more and "mkldnn::_linear_pointwise" in more
    with pytest.raises(RuntimeError, match="unit stride"):
        real(x, torch.randn(40, 60)[:, ::2].t(), None)
    with pytest.raises(RuntimeError, match="bias must be"):
        real(x, w, torch.randn(31))
    with pytest.raises(RuntimeError, match="expected x"):
        real(torch.randn(1, 41), w, None)
    assert real(torch.randn(0, 40), w, b).shape == (0, 30)
    torch.testing.assert_close(real(torch.randn(2, 0), torch.randn(5, 0), torch.arange(5.0)),
                               torch.arange(5.0).expand(2, 5))


def test_gradients_and_other_dtypes_take_f_linear():
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(5, 6, requires_grad=True)
    assert not il._takes_onednn(x, w, None)
    il.inference_linear(x, w).sum().backward()
    assert torch.allclose(x.grad, w.detach().sum(0).expand(4, 6))
    assert torch.allclose(w.grad, x.detach().sum(0).expand(5, 6))
    assert not il._takes_onednn(torch.randn(4, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64), None)
    with torch.no_grad():
        assert not il._takes_onednn(torch.randn(4, 6).bfloat16(), torch.randn(5, 6).bfloat16(), None)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast picks the dtype: F.linear
            assert il.inference_linear(torch.randn(4, 6), torch.randn(5, 6)).dtype == torch.bfloat16


@needs_onednn
def test_no_rows_gives_an_empty_result():
    with torch.no_grad():
        assert il.inference_linear(torch.randn(0, 6), torch.randn(5, 6), torch.randn(5)).shape == (0, 5)


def test_project_calls_modules_it_cannot_see_into():
    linear = torch.nn.Linear(6, 5)
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert torch.allclose(il.project(linear, x), linear(x), atol=1e-6)
        seen = []
        linear.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        il.project(linear, x)
    assert seen == [torch.Size([3, 5])]  # the hook ran: the module was called


@needs_onednn
def test_biases_the_inner_product_cannot_read_and_empty_inputs_take_f_linear():
    x, w = torch.randn(5, 8), torch.randn(13, 8)
    with torch.no_grad():
        for bias in (torch.randn(26)[::2], torch.randn(1).expand(13), torch.randn(1)):  # strided, stride 0, broadcast
            assert not il._takes_onednn(x, w, bias)
            torch.testing.assert_close(il.inference_linear(x, w, bias), F.linear(x, w, bias), rtol=0, atol=0)
        bias = torch.randn(13)
        torch.testing.assert_close(il.inference_linear(torch.randn(5, 0), torch.randn(13, 0), bias),
                                   bias.expand(5, 13))  # an empty inner dimension: only the bias
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # F.linear's error, not oneDNN's
            il.inference_linear(torch.randn(5, 7), w)


def test_forward_mode_and_functorch_tangents_are_f_linear_s():
    x, w, b, tangent = torch.randn(3, 6), torch.randn(4, 6), torch.randn(4), torch.randn(3, 6)
    with torch.no_grad():  # tangents need no requires_grad: the inner product would drop them
        _, jvp_out = torch.func.jvp(lambda v: il.inference_linear(v, w, b), (x,), (tangent,))
    torch.testing.assert_close(jvp_out, F.linear(tangent, w))
    import torch.autograd.forward_ad as fwad
    with fwad.dual_level(), torch.no_grad():
        out = il.inference_linear(fwad.make_dual(x, tangent), w, b)
        assert fwad.unpack_dual(out).tangent is not None
        torch.testing.assert_close(fwad.unpack_dual(out).tangent, F.linear(tangent, w))
