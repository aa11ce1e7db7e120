"""The Triton FlashAttention kernels (forward, backward, dropout) under the interpreter, against float64.

Outputs start poisoned (conftest sets SSLFAST_POISON=1), so an element a kernel never writes fails.
"""
import pytest
import torch

import sslfast
from sslfast.ops import attention, varlen_attention
from sslfast.ops._dispatch import triton_interpreted
from sslfast.ops._philox import attention_dropout_keep, effective_dropout_p
from sslfast.ops.attention import attention_reference
from sslfast.ops.attention.flash import (
    flash_attention,
    packed_sequence_table,
    padded_sequence_table,
)
from tests.helpers import (
    assert_within_torch_error,
    fwd_bwd,
    per_sequence_attention_reference,
)

pytestmark = pytest.mark.skipif(not (sslfast.available_backends()["triton"] and triton_interpreted()),
                                reason="needs Triton's interpreter (TRITON_INTERPRET=1); tests/gpu/test_attention_gpu.py "
                                       "runs the compiled kernels")

GRADS = ["out", "dq", "dk", "dv"]


def random_padding(b, s, holes):
    """(B, S) mask: a full row, an all-padding row, then random lengths (and random holes if asked)."""
    lengths = torch.randint(1, s + 1, (b,))
    lengths[0], lengths[1] = s, 0
    mask = torch.arange(s)[None] < lengths[:, None]
    if holes:
        mask &= torch.rand(b, s) > 0.3
        mask[2:, 0] = False  # left padding too: the key window starts past 0
    return mask


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic-dq", "deterministic"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sq, sk, d, holes", [(19, 23, 24, False), (37, 21, 40, True), (8, 45, 8, True)])
def test_padded_matches_float64(sq, sk, d, holes, dtype, causal, deterministic, seed):
    b, h = 4, 2
    q, k, v = (torch.randn(b, h, s, d).to(dtype) for s in (sq, sk, sk))
    mask = random_padding(b, sk, holes)
    grad_out = torch.randn(b, h, sq, d).to(dtype)
    kw = dict(attention_mask=mask, causal=causal)
    ours = fwd_bwd(lambda *t: attention(*t, **kw, deterministic=deterministic, backend="triton"), (q, k, v), grad_out)
    ref = fwd_bwd(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, v)], grad_out.double())
    same_dtype = fwd_bwd(lambda *t: attention_reference(*t, **kw), (q, k, v), grad_out)
    floor = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps / 2  # storing in fp16 costs half an ulp
    for name, got, want, base in zip(GRADS, ours, ref, same_dtype):
        assert torch.isfinite(got).all(), f"{name} has NaN/Inf"
        assert_within_torch_error(got, base, want, floor=floor, what=f"{name} {dtype} causal={causal}")
    for name, got in zip(GRADS, ours):  # the all-padding sequence: zero output, zero gradients
        assert torch.equal(got[1], torch.zeros_like(got[1])), name


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_matches_per_sequence_float64(causal, seed):
    h, d = 3, 32
    len_q = torch.tensor([7, 0, 18, 3, 33])
    len_k = torch.tensor([7, 5, 29, 9, 2])  # Sq != Sk per sequence; a sequence with no query
    cu_q, cu_k = (torch.nn.functional.pad(n.cumsum(0), (1, 0)).int() for n in (len_q, len_k))
    q, k, v = torch.randn(int(cu_q[-1]), h, d), torch.randn(int(cu_k[-1]), h, d), torch.randn(int(cu_k[-1]), h, d)
    grad_out = torch.randn_like(q)
    ours = fwd_bwd(lambda *t: varlen_attention(*t, cu_q, cu_k, int(len_q.max()), int(len_k.max()), causal=causal,
                                               backend="triton"), (q, k, v), grad_out)
    torch_path = fwd_bwd(lambda *t: varlen_attention(*t, cu_q, cu_k, int(len_q.max()), int(len_k.max()),
                                                     causal=causal, backend="torch"), (q, k, v), grad_out)

    ref = fwd_bwd(per_sequence_attention_reference(cu_q, cu_k, causal), [t.double() for t in (q, k, v)],
                  grad_out.double())
    for name, got, want, base in zip(GRADS, ours, ref, torch_path):
        assert torch.isfinite(got).all(), name
        assert_within_torch_error(got, base, want, floor=1e-5, what=f"varlen {name} causal={causal}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dropout_matches_float64_with_the_same_philox_mask(causal, seed):
    b, h, sq, sk, d, p = 3, 2, 21, 26, 16, 0.3
    q, k, v = (torch.randn(b, h, s, d) for s in (sq, sk, sk))
    mask = random_padding(b, sk, holes=True)
    grad_out = torch.randn(b, h, sq, d)
    philox_seed = int(torch.randint(0, 2 ** 62, ()))
    keep = attention_dropout_keep(philox_seed, p, range(b), h, sq, sk)
    assert abs(keep.float().mean().item() - (1 - p)) < 0.05
    seqs = padded_sequence_table(b, sq, sk, mask, "cpu")
    for deterministic in (False, True):
        ours = fwd_bwd(lambda *t: flash_attention(
            *t, seqs, key_mask=mask.view(torch.uint8), max_seqlen_q=sq, max_seqlen_k=sk, packed=False, causal=causal,
            dropout_p=p, seed=torch.tensor([philox_seed]), deterministic=deterministic)[0], (q, k, v), grad_out)
        kw = dict(attention_mask=mask, causal=causal, dropout_mask=keep, dropout_p=effective_dropout_p(p))
        ref = fwd_bwd(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, v)], grad_out.double())
        same_dtype = fwd_bwd(lambda *t: attention_reference(*t, **kw), (q, k, v), grad_out)
        for name, got, want, base in zip(GRADS, ours, ref, same_dtype):
            assert_within_torch_error(got, base, want, floor=1e-5, what=f"dropout {name}")


def test_dropout_is_seeded_reproducible_and_unbiased(seed):
    q, k, v = (torch.randn(2, 2, 24, 16) for _ in range(3))
    run = (lambda: attention(q, k, v, dropout_p=0.25, backend="triton"))
    torch.manual_seed(seed)
    first = run()
    torch.manual_seed(seed)
    again = run()
    other = run()  # the generator moved on: a new mask
    plain = attention(q, k, v, backend="triton")
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.allclose(first, plain)
    mean = torch.stack([run() for _ in range(150)]).mean(0)
    assert (mean - plain).abs().mean() < 0.06 < (first - plain).abs().mean()  # inverted dropout keeps E[out]


def test_varlen_equals_padded_on_real_tokens_with_dropout(seed):
    b, h, s, d, p = 3, 2, 20, 16, 0.2
    mask = torch.arange(s)[None] < torch.tensor([[20], [13], [6]])  # right padding: packed keys keep positions
    q, k, v = (torch.randn(b, h, s, d) for _ in range(3))
    grad_out = torch.randn(b, h, s, d) * mask[:, None, :, None]  # padding queries do not exist packed
    philox_seed = torch.tensor([int(torch.randint(0, 2 ** 62, ()))])
    seqs = padded_sequence_table(b, s, s, mask, "cpu")
    padded = fwd_bwd(lambda *t: flash_attention(*t, seqs, key_mask=mask.view(torch.uint8), max_seqlen_q=s,
                                                max_seqlen_k=s, packed=False, causal=True, dropout_p=p,
                                                seed=philox_seed)[0], (q, k, v), grad_out)

    def packed_fn(qq, kk, vv):
        (pq, idx, cu, mx), (pk, *_), (pv, *_) = (sslfast.ops.unpad(t.transpose(1, 2), mask) for t in (qq, kk, vv))
        out, _ = flash_attention(pq, pk, pv, packed_sequence_table(cu, cu), max_seqlen_q=mx, max_seqlen_k=mx,
                                 packed=True, causal=True, dropout_p=p, seed=philox_seed)
        return sslfast.ops.pad(out, idx, b, s).transpose(1, 2)

    packed = fwd_bwd(packed_fn, (q, k, v), grad_out)
    real = mask[:, None, :, None].expand(b, h, s, d)
    for name, x, y in zip(GRADS, packed, padded):
        assert torch.allclose(x[real], y[real], atol=1e-5), name


def test_deterministic_backward_is_bitwise_reproducible(seed):
    q, k, v = (torch.randn(2, 2, 35, 24) for _ in range(3))
    grad_out = torch.randn(2, 2, 35, 24)
    fn = (lambda *t: attention(*t, causal=True, deterministic=True, backend="triton"))
    first, second = fwd_bwd(fn, (q, k, v), grad_out), fwd_bwd(fn, (q, k, v), grad_out)
    atomic = fwd_bwd(lambda *t: attention(*t, causal=True, backend="triton"), (q, k, v), grad_out)
    for name, x, y, z in zip(GRADS, first, second, atomic):
        assert torch.equal(x, y), name
        assert torch.allclose(x, z, atol=1e-5), name


def test_strided_inputs_and_expanded_grad(seed):
    b, s, h, d = 2, 17, 3, 16
    qkv = torch.randn(b, s, 3, h, d)  # a fused projection's output: q, k, v are strided views
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, S, D), non-contiguous
    ours = fwd_bwd(lambda *t: attention(*t, backend="triton").sum() * torch.ones(()), (q, k, v), torch.tensor(1.0))
    ref = fwd_bwd(lambda *t: attention_reference(*t).sum(), [t.double() for t in (q, k, v)], torch.tensor(1.0))
    for name, x, y in zip(GRADS, ours, ref):
        assert torch.allclose(x.double(), y, atol=1e-4), name


def test_head_dim_256_and_causal_rows_that_see_nothing(seed):
    q, k, v = torch.randn(1, 1, 20, 256), torch.randn(1, 1, 6, 256), torch.randn(1, 1, 6, 256)
    grad_out = torch.randn(1, 1, 20, 256)
    ours = fwd_bwd(lambda *t: attention(*t, causal=True, backend="triton"), (q, k, v), grad_out)
    ref = fwd_bwd(lambda *t: attention_reference(*t, causal=True), [t.double() for t in (q, k, v)],
                  grad_out.double())
    assert (ours[0][:, :, :14] == 0).all() and (ours[1][:, :, :14] == 0).all()  # bottom-right: rows 0..13 empty
    for name, x, y in zip(GRADS, ours, ref):
        assert torch.allclose(x.double(), y, atol=2e-5), name


def test_custom_ops_pass_opcheck_and_compile(seed):
    q, k, v = (torch.randn(2, 18, 2, 16).transpose(1, 2).requires_grad_() for _ in range(3))  # strided views
    mask = torch.arange(18)[None] < torch.tensor([[18], [9]])
    seqs = padded_sequence_table(2, 18, 18, mask, "cpu")
    args = (q, k, v, seqs, mask.view(torch.uint8), torch.tensor([5]), 18, 18, False, True, 0.25, 0.1, False)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.sslfast.flash_attention_forward.default, args, test_utils=checks)
    out, lse = torch.ops.sslfast.flash_attention_forward(*args)
    grads = (torch.randn(2, 18, 2, 16).transpose(1, 2), torch.randn(2, 2, 18))
    torch.library.opcheck(torch.ops.sslfast.flash_attention_backward.default,
                          grads + (q, k, v, out, lse) + args[3:], test_utils=("test_schema", "test_faketensor"))
    fn = (lambda *t: attention(*t, attention_mask=mask, causal=True, backend="triton"))
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    grad_out = torch.randn(2, 2, 18, 16)
    for name, x, y in zip(GRADS, fwd_bwd(compiled, (q, k, v), grad_out), fwd_bwd(fn, (q, k, v), grad_out)):
        assert torch.allclose(x, y, atol=1e-6), name


def count_dots(monkeypatch):
    """Counts the tile products the interpreted kernels run (two per key tile in the forward)."""
    import triton.runtime.interpreter as interpreter
    calls = []
    original = interpreter.InterpreterBuilder.create_dot

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", counting)
    return calls


def test_padding_and_causal_tiles_are_skipped_not_masked(monkeypatch, seed):
    """Interpreter tiles are 16×16: the forward runs 2 products per visited (query tile, key tile)."""
    calls = count_dots(monkeypatch)
    q, k, v = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 80, 16), torch.randn(3, 1, 80, 16)
    mask = torch.zeros(3, 80, dtype=torch.bool)
    mask[0] = True  # 5 key tiles
    mask[1, 40:50] = True  # left and right padding: only the tiles [32, 48) and [48, 64) hold real keys
    v[:, 0][~mask] = float("nan")  # a padding value that reached a product would poison the output
    with torch.no_grad():
        out = attention(q, k, v, attention_mask=mask, backend="triton")  # row 2: all padding, no tile
    assert len(calls) == 2 * (5 + 2 + 0) and torch.isfinite(out).all()
    calls.clear()
    q = torch.randn(1, 1, 64, 16)
    with torch.no_grad():
        attention(q, q, q, causal=True, backend="triton")
    assert len(calls) == 2 * (1 + 2 + 3 + 4)  # query tile m sees key tiles 0..m, never those above the diagonal


def test_lse_is_differentiable(seed):
    b, h, sq, sk, d = 2, 2, 13, 19, 16
    q, k, v = (torch.randn(b, h, s, d) for s in (sq, sk, sk))
    mask = torch.arange(sk)[None] < torch.tensor([[19], [11]])  # every row sees a key: lse finite
    w_out, w_lse = torch.randn(b, h, sq, d), torch.randn(b, h, sq)
    seqs = padded_sequence_table(b, sq, sk, mask, "cpu")

    def ours(*t):
        out, lse = flash_attention(*t, seqs, key_mask=mask.view(torch.uint8), max_seqlen_q=sq, max_seqlen_k=sk,
                                   packed=False, causal=True)
        return (out * w_out).sum() + (lse * w_lse).sum()

    def reference(*t):
        keep = mask[:, None, None, :] & torch.ones(sq, sk, dtype=torch.bool).tril(sk - sq)
        scores = (t[0] @ t[1].transpose(-1, -2) / d ** 0.5).masked_fill(~keep, float("-inf"))
        lse = torch.logsumexp(scores, -1)
        return (attention_reference(*t, attention_mask=mask, causal=True) * w_out.double()).sum() + (
            lse * w_lse.double()).sum()

    got = fwd_bwd(ours, (q, k, v), torch.tensor(1.0))
    want = fwd_bwd(reference, [t.double() for t in (q, k, v)], torch.tensor(1.0, dtype=torch.float64))
    for name, x, y in zip(["loss", "dq", "dk", "dv"], got, want):
        assert torch.allclose(x.double(), y, atol=1e-4, rtol=1e-5), name


def test_non_contiguous_mask_empty_keys_and_extreme_dropout(seed):
    q, k, v = (torch.randn(3, 2, 11, 16) for _ in range(3))
    mask = torch.rand(3, 11) > 0.4
    strided = mask.t().contiguous().t()  # same values, column-major
    with torch.no_grad():
        assert torch.equal(attention(q, k, v, attention_mask=strided, backend="triton"),
                           attention(q, k, v, attention_mask=mask, backend="triton"))
        empty = torch.randn(3, 2, 0, 16)
        out = attention(q, empty, empty, attention_mask=torch.ones(3, 0, dtype=torch.bool), backend="triton")
        assert torch.equal(out, torch.zeros_like(q))
        with pytest.raises(ValueError, match="rounds to 1"):
            attention(q, k, v, dropout_p=0.999995, backend="triton")


def test_global_deterministic_flag_selects_the_deterministic_backward(monkeypatch, seed):
    from sslfast.kernels import flash_attention_backward as kb
    asked = []
    original = kb.dq_by_atomics
    monkeypatch.setattr(kb, "dq_by_atomics", lambda block_d, det: asked.append(det) or original(block_d, det))
    q, k, v = (torch.randn(1, 1, 9, 16, requires_grad=True) for _ in range(3))
    attention(q, k, v, backend="triton").sum().backward()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        attention(q, k, v, backend="triton").sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert asked == [False, True]
