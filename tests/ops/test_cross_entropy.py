"""linear_cross_entropy / cross_entropy against a float64 eager reference: values and all gradients."""
import pytest
import torch
import torch.nn.functional as F

import sslfast
from sslfast.ops import cross_entropy, linear_cross_entropy
from tests.helpers import assert_within_torch_error

IGNORE = -100


def reference_loss(logits, labels, reduction, label_smoothing, z_loss):
    """Eager F.cross_entropy plus PaLM's z-loss, in the logits' dtype (float64 for the reference)."""
    per_row = F.cross_entropy(logits, labels, ignore_index=IGNORE, label_smoothing=label_smoothing,
                              reduction="none")
    valid = labels != IGNORE
    per_row = per_row + z_loss * torch.logsumexp(logits, -1).square() * valid
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    return per_row.sum() / valid.sum().clamp_min(1)


def make_labels(n, v, ignored_fraction):
    labels = torch.randint(0, v, (n,))
    labels[torch.rand(n) < ignored_fraction] = IGNORE
    if ignored_fraction == 1.0:
        labels.fill_(IGNORE)
    return labels


def run_linear(fn, hidden, weight, bias, labels, upstream, **kw):
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    b = None if bias is None else bias.detach().clone().requires_grad_(True)
    loss = fn(h, w, b, labels, **kw)
    (loss.double() * upstream).sum().backward()
    return [loss.detach(), h.grad, w.grad] + ([] if b is None else [b.grad])


def ours_linear(h, w, b, y, **kw):
    return linear_cross_entropy(h, w, y, b, **kw)


def eager_linear(h, w, b, y, **kw):
    return reference_loss(F.linear(h, w, b).float() if h.dtype != torch.float64 else F.linear(h, w, b), y, **kw)


CASES = [  # (N, D, V, ignored fraction, reduction, smoothing, z-loss, bias)
    (37, 19, 101, 0.0, "mean", 0.0, 0.0, False),
    (53, 24, 30522, 0.2, "mean", 0.1, 0.0, True),
    (41, 16, 50257, 0.85, "sum", 0.0, 1e-3, False),
    (29, 13, 257, 0.2, "none", 0.05, 1e-4, True),
    (17, 8, 97, 1.0, "mean", 0.0, 0.0, True),
    (17, 8, 97, 1.0, "none", 0.1, 1e-4, False),
    (64, 33, 1009, 0.5, "sum", 0.2, 0.0, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}_D{}_V{}_ign{}_{}_ls{}_z{}_b{}".format(*c))
def test_linear_cross_entropy_matches_float64(case, dtype, seed):
    n, d, v, ignored, reduction, smoothing, z_loss, with_bias = case
    hidden = torch.randn(n, d).to(dtype)
    weight = (torch.randn(v, d) / d ** 0.5).to(dtype)
    bias = torch.randn(v).to(dtype) if with_bias else None
    labels = make_labels(n, v, ignored)
    kw = dict(reduction=reduction, label_smoothing=smoothing, z_loss=z_loss)
    upstream = torch.randn(n, dtype=torch.float64) if reduction == "none" else torch.tensor(1.7, dtype=torch.float64)
    ours = run_linear(ours_linear, hidden, weight, bias, labels, upstream, **kw)
    as64 = [None if t is None else t.double() for t in (hidden, weight, bias)]
    ref = run_linear(eager_linear, *as64, labels, upstream, **kw)
    same_dtype = run_linear(eager_linear, hidden.float() if dtype == torch.float16 else hidden,
                            weight.float() if dtype == torch.float16 else weight,
                            None if bias is None else (bias.float() if dtype == torch.float16 else bias),
                            labels, upstream, **kw)
    names = ["loss", "grad hidden", "grad weight", "grad bias"]
    for name, got, want, torch_path in zip(names, ours, ref, same_dtype):
        assert got.dtype == (torch.float32 if name == "loss" else dtype), name
        assert torch.isfinite(got).all(), name
        assert_within_torch_error(got.float(), torch_path.float(), want, factor=2.0, floor=1e-6 if dtype ==
                                  torch.float32 else 2e-3, what=name)
    if ignored == 1.0:
        assert all((t == 0).all() for t in ours), "all rows ignored: loss and gradients must be 0"


TRITON = [b for b in ("triton",) if sslfast.ops.available_backends()[b]]


@pytest.mark.parametrize("backend", ["torch"] + TRITON)
@pytest.mark.parametrize("upstream", ["one", "other"])  # loss.backward()'s seed 1 leaves the gradient untouched
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_cross_entropy_on_logits_matches_float64(reduction, dtype, upstream, backend, seed):
    n, v = 45, 3001
    logits = (torch.randn(n, v) * 3).to(dtype)
    labels = make_labels(n, v, 0.3)
    kw = dict(reduction=reduction, label_smoothing=0.1, z_loss=1e-4)
    if reduction == "none":
        upstream = torch.ones(n, dtype=torch.float64) if upstream == "one" else torch.randn(n, dtype=torch.float64)
    else:
        upstream = torch.tensor(1.0 if upstream == "one" else 0.6, dtype=torch.float64)

    def run(fn, z):
        z = z.detach().clone().requires_grad_(True)
        loss = fn(z)
        loss.backward(upstream.to(loss.dtype))
        return loss.detach(), z.grad

    ours = run(lambda z: cross_entropy(z, labels, backend=backend, **kw), logits)
    ref = run(lambda z: reference_loss(z, labels, **kw), logits.double())
    torch_path = run(lambda z: reference_loss(z.float(), labels, **kw), logits)
    assert ours[1].dtype == dtype  # gradient in the logits' dtype, no fp32 copy handed back
    assert (ours[1][labels == IGNORE] == 0).all(), "ignored rows get a zero gradient (outputs start poisoned)"
    for name, got, want, base in zip(["loss", "grad logits"], ours, ref, torch_path):
        assert_within_torch_error(got.float(), base.float(), want, floor=1e-6 if dtype == torch.float32 else 2e-3,
                                  what=name)


def relative_l2(got, want):
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("op", ["cross_entropy", "linear_cross_entropy"])
@pytest.mark.parametrize("backend", ["torch"] + TRITON)
def test_fp16_gradients_survive_a_loss_scale(op, backend, seed):
    """GradScaler multiplies the loss by 65536 (above fp16's largest value): the gradients must stay finite and
    as accurate as PyTorch's fp16 path, whose backward applies the scale before rounding to fp16."""
    n, d, v = 2048, 32, 512  # 1/count = 2^-11: small gradient entries sit in fp16's subnormal range
    hidden = torch.randn(n, d).half()
    weight = (torch.randn(v, d) / d ** 0.5).half()
    labels = make_labels(n, v, 0.0)
    loss_scale = 65536.0

    def grads(fn, *inputs):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        (fn(*leaves) * loss_scale).backward()
        return [t.grad for t in leaves]

    if op == "cross_entropy":
        logits = (hidden.float() @ weight.float().t()).half()
        ours = grads(lambda z: cross_entropy(z, labels, backend=backend), logits)
        ref = grads(lambda z: reference_loss(z, labels, "mean", 0.0, 0.0), logits.double())
        base = grads(lambda z: F.cross_entropy(z.float(), labels), logits)
    else:
        ours = grads(lambda h, w: linear_cross_entropy(h, w, labels, backend=backend), hidden, weight)
        ref = grads(lambda h, w: reference_loss(h @ w.t(), labels, "mean", 0.0, 0.0), hidden.double(), weight.double())
        base = grads(lambda h, w: F.cross_entropy((h @ w.t()).float(), labels), hidden, weight)
    for got, want, torch_path in zip(ours, ref, base):
        assert got.dtype == torch.float16 and torch.isfinite(got).all()
        assert relative_l2(got, want) <= 2 * relative_l2(torch_path, want) + 1e-5, \
            (relative_l2(got, want), relative_l2(torch_path, want))
        flushed = ((got == 0) & (want != 0)).sum()  # nothing rounded away that PyTorch's fp16 path keeps
        assert flushed <= ((torch_path == 0) & (want != 0)).sum(), int(flushed)


@pytest.mark.parametrize("backend", TRITON)
def test_unchecked_labels_skip_the_host_check_and_mark_bad_rows_nan(backend, seed):
    """check_labels=False: no error and no host sync on the Triton path; a bad label poisons its own row only."""
    n, v = 7, 50
    logits = torch.randn(n, v)
    labels = torch.randint(0, v, (n,))
    labels[2], labels[4], labels[5] = v, -3, IGNORE
    z = logits.clone().requires_grad_(True)
    loss = cross_entropy(z, labels, reduction="none", check_labels=False, backend=backend)
    loss.sum().backward()
    good = torch.tensor([i not in (2, 4, 5) for i in range(n)])
    assert torch.isnan(loss[[2, 4]]).all() and torch.isnan(z.grad[[2, 4]]).all()
    assert loss[5] == 0 and (z.grad[5] == 0).all()
    ref = F.cross_entropy(logits[good].double(), labels[good], reduction="none")
    torch.testing.assert_close(loss[good].double(), ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 50\)"):
        cross_entropy(logits, labels, backend=backend)  # checked by default
    with pytest.raises(ValueError, match=r"labels must be in \[0, 50\)"):
        cross_entropy(logits, labels, check_labels=False, backend="torch")  # the PyTorch path always checks


def test_leading_dimensions_and_int32_labels(seed):
    hidden, weight = torch.randn(2, 7, 12), torch.randn(50, 12)
    labels = torch.randint(0, 50, (2, 7), dtype=torch.int32)
    loss = linear_cross_entropy(hidden, weight, labels, reduction="none")
    assert loss.shape == (2, 7)
    ref = F.cross_entropy(F.linear(hidden, weight).reshape(-1, 50), labels.reshape(-1).long(), reduction="none")
    assert torch.allclose(loss.reshape(-1), ref, atol=1e-5)


def test_nan_hidden_gives_nan_loss_not_a_crash():
    hidden = torch.randn(6, 4)
    hidden[2, 1] = float("nan")
    loss = linear_cross_entropy(hidden, torch.randn(9, 4), torch.randint(0, 9, (6,)))
    assert torch.isnan(loss)


@pytest.mark.parametrize("bad_label", [9, 1000, -1, -5])
def test_labels_outside_the_vocabulary_raise(bad_label):
    labels = torch.randint(0, 9, (6,))
    labels[3] = bad_label
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\)"):
        linear_cross_entropy(torch.randn(6, 4), torch.randn(9, 4), labels)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\)"):
        cross_entropy(torch.randn(6, 9), labels)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(hidden=torch.randn(6, 5)), ValueError, "last dimension"),
        (dict(weight=torch.randn(9, 4, 1)), ValueError, "weight must have 2 dimensions"),
        (dict(labels=torch.randint(0, 9, (5,))), ValueError, "labels shape"),
        (dict(labels=torch.rand(6)), TypeError, "labels must have dtype"),
        (dict(hidden=torch.randint(0, 3, (6, 4))), TypeError, "hidden must have dtype"),
        (dict(bias=torch.randn(8)), ValueError, "bias must have V=9"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(weight=torch.randn(9, 4, device="meta")), ValueError, "same device"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = dict(hidden=torch.randn(6, 4), weight=torch.randn(9, 4), labels=torch.randint(0, 9, (6,)), bias=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_cross_entropy(**args)




@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], (23, 16, 30522, 0.6, "mean", 0.1, 1e-3, True)],
                         ids=lambda c: "N{}_D{}_V{}_ign{}_{}_ls{}_z{}_b{}".format(*c))
def test_linear_cross_entropy_triton_kernel_under_interpreter(backend, case, seed):
    n, d, v, ignored, reduction, smoothing, z_loss, with_bias = case
    hidden, weight = torch.randn(n, d), torch.randn(v, d) / d ** 0.5
    bias = torch.randn(v) if with_bias else None
    labels = make_labels(n, v, ignored)
    kw = dict(reduction=reduction, label_smoothing=smoothing, z_loss=z_loss)
    upstream = torch.randn(n, dtype=torch.float64) if reduction == "none" else torch.tensor(1.3, dtype=torch.float64)
    ours = run_linear(lambda h, w, b, y, **k: linear_cross_entropy(h, w, y, b, backend=backend, **k),
                      hidden, weight, bias, labels, upstream, **kw)
    ref = run_linear(eager_linear, hidden.double(), weight.double(), None if bias is None else bias.double(),
                     labels, upstream, **kw)
    base = run_linear(eager_linear, hidden, weight, bias, labels, upstream, **kw)
    for name, got, want, torch_path in zip(["loss", "grad hidden", "grad weight", "grad bias"], ours, ref, base):
        assert_within_torch_error(got, torch_path, want, floor=1e-6, what=name)


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_cross_entropy_triton_kernel_under_interpreter(backend, dtype, seed):
    n, v = 19, 1003
    logits = (torch.randn(n, v) * 3).to(dtype)
    labels = make_labels(n, v, 0.3)
    kw = dict(reduction="mean", label_smoothing=0.1, z_loss=1e-4)

    def run(fn, z):
        z = z.detach().clone().requires_grad_(True)
        loss = fn(z)
        loss.backward()
        return loss.detach(), z.grad

    ours = run(lambda z: cross_entropy(z, labels, backend=backend, **kw), logits)
    ref = run(lambda z: reference_loss(z, labels, **kw), logits.double())
    base = run(lambda z: reference_loss(z.float(), labels, **kw), logits)
    floor = 1e-6 if dtype == torch.float32 else 1e-2  # the gradient is stored in the logits' dtype
    for name, got, want, torch_path in zip(["loss", "grad"], ours, ref, base):
        assert_within_torch_error(got.float(), torch_path.float(), want, floor=floor, what=name)


@pytest.mark.parametrize("backend", TRITON + ["torch"])
def test_minus_infinity_logits_give_finite_losses_and_gradients(backend, seed):
    # masked vocabularies: a row whose first kernel block is all -inf, a row with one -inf logit
    n, v = 4, 3000
    logits = torch.randn(n, v)
    logits[0, :2048] = float("-inf")
    logits[1, 1700] = float("-inf")
    logits[2, :1024] = float("-inf")
    labels = torch.tensor([2500, 5, 1500, 7])
    z = logits.clone().requires_grad_(True)
    loss = cross_entropy(z, labels, reduction="none", backend=backend)
    loss.sum().backward()
    ref = F.cross_entropy(logits.double(), labels, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    torch.testing.assert_close(loss.double(), ref, rtol=0, atol=1e-5)
    ref_grad = torch.softmax(logits.double(), 1) - F.one_hot(labels, v).double()
    torch.testing.assert_close(z.grad.double(), ref_grad, rtol=0, atol=1e-6)


def test_loss_module_matches_linear_and_ties_weights(seed):
    from sslfast.nn import LinearCrossEntropyLoss
    module = LinearCrossEntropyLoss(12, 37, bias=True, label_smoothing=0.05)
    hidden, labels = torch.randn(3, 5, 12), torch.randint(0, 37, (3, 5))
    ref = F.cross_entropy(F.linear(hidden, module.weight, module.bias).reshape(-1, 37), labels.reshape(-1),
                          label_smoothing=0.05)
    assert torch.allclose(module(hidden, labels), ref, atol=1e-5)
    emb = torch.nn.Embedding(37, 12)
    tied = LinearCrossEntropyLoss(12, 37, tied_weight=emb.weight)
    tied(hidden, labels).backward()
    assert tied.weight is emb.weight and emb.weight.grad is not None
    with pytest.raises(ValueError, match="tied_weight must be"):
        LinearCrossEntropyLoss(12, 36, tied_weight=emb.weight)


@pytest.mark.parametrize("backend", ["torch"] + TRITON)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ops_are_registered_and_compile_without_graph_breaks(reduction, backend, seed):
    """Both ops are torch.library ops: torch.compile(fullgraph=True) traces forward and backward."""
    n, d, v = 37, 24, 101
    hidden = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(v, d, requires_grad=True)
    labels = torch.randint(0, v, (n,))
    labels[::3] = -100

    def fn(h, w, y):
        a = linear_cross_entropy(h, w, y, reduction=reduction, label_smoothing=0.1, backend=backend)
        b = cross_entropy(h @ w.t(), y, reduction=reduction, z_loss=1e-3, backend=backend)
        return (a + 0.5 * b).sum()

    eager = fn(hidden, weight, labels)
    g_eager = torch.autograd.grad(eager, (hidden, weight))
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out = compiled(hidden, weight, labels)
    g_out = torch.autograd.grad(out, (hidden, weight))
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_out, g_eager):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["torch"] + TRITON)
def test_opcheck_schema_fake_and_autograd_registration(backend, seed):
    n, d, v = 13, 8, 29
    hidden = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(v, d, requires_grad=True)
    bias = torch.randn(v, requires_grad=True)
    labels = torch.randint(0, v, (n,))
    labels[1] = -100
    for reduction in ("mean", "none"):
        torch.library.opcheck(torch.ops.sslfast.linear_cross_entropy.default,
                              (hidden, weight, bias, labels, -100, 0.0, 0.0, reduction, backend, True, True, True))
        # the op's gradient output is a workspace its eager backward scales in place (the N×V buffer is not
        # copied); only the public wrapper's outputs are compared eager vs compiled, in the compile test above
        torch.library.opcheck(torch.ops.sslfast.cross_entropy.default,
                              (torch.randn(n, v, requires_grad=True), labels, -100, 0.0, 0.0, reduction, backend,
                               True, True), test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_second_backward_through_the_same_graph_fails_loudly(seed):
    """cross_entropy hands its gradient buffer over in place; reusing the graph must not give stale grads."""
    logits = torch.randn(9, 17, requires_grad=True)
    loss = cross_entropy(logits, torch.randint(0, 17, (9,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
