"""The CPU inference projection: oneDNN's inner product where no gradient is needed, ``F.linear`` otherwise."""
import importlib

import pytest
import torch
import torch.nn.functional as F

il = importlib.import_module("sslfast.ops.inference_linear")  # the module; sslfast.ops.inference_linear is the op

needs_onednn = pytest.mark.skipif(not il.onednn_linear_available(), reason="PyTorch built without oneDNN")


def _errors(out, ref):
    diff = out.double() - ref
    return diff.pow(2).mean().sqrt().item(), diff.abs().max().item()


@needs_onednn
@pytest.mark.parametrize("rows, d_in, d_out", [(1, 7, 13), (8, 64, 1001), (37, 33, 5), (3, 768, 96)])
@pytest.mark.parametrize("shape", ["2d", "3d", "transposed_weight", "no_bias"])
def test_matches_float64_within_the_error_of_f_linear(rows, d_in, d_out, shape, seed):
    x = torch.randn(rows, d_in)
    w = torch.randn(d_out, d_in)
    b = None if shape == "no_bias" else torch.randn(d_out)
    if shape == "3d":
        x = torch.randn(2, rows, d_in)
    if shape == "transposed_weight":  # an (in, out) matrix, as GPT-2's Conv1D stores it
        w = torch.randn(d_in, d_out).t()
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    torch_rms, torch_max = _errors(F.linear(x, w, b), ref)
    with torch.no_grad():
        assert il._takes_onednn(x, w, b)
        out = il.inference_linear(x, w, b)
    assert out.shape == ref.shape and out.dtype == torch.float32
    rms, largest = _errors(out, ref)
    # oneDNN sums in another order than MKL: its fp32 rms error is 1.0-2.2x F.linear's (worst of 300 seeds at
    # 3x768x96: 1.8x); the largest error of a few hundred outputs is noisier (worst of those seeds: 4.0x)
    assert rms <= 2.5 * torch_rms + 1e-7 and largest <= 6 * torch_max + 1e-6, (rms, torch_rms, largest, torch_max)


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
