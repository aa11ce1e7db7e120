"""attention / varlen_attention (CPU SDPA path) against a float64 softmax(QKᵀ)V reference, fwd and bwd."""
import pytest
import torch

from sslfast.ops import attention, pad, unpad, varlen_attention
from sslfast.ops.attention import attention_reference
from tests.helpers import assert_within_torch_error, fwd_bwd


def random_mask(b, s, all_padding_row=True):
    lengths = torch.randint(1, s + 1, (b,))
    if all_padding_row and b > 1:
        lengths[-1] = 0  # an all-padding sequence
    return torch.arange(s)[None, :] < lengths[:, None]  # (B, S) True = real token


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("b, h, sq, sk, d", [(3, 2, 13, 13, 16), (2, 3, 7, 19, 24), (2, 1, 21, 9, 40), (1, 2, 33, 33, 64)])
def test_attention_matches_float64(b, h, sq, sk, d, causal, seed):
    q, k, v = torch.randn(b, h, sq, d), torch.randn(b, h, sk, d), torch.randn(b, h, sk, d)
    mask = random_mask(b, sk)
    grad_out = torch.randn(b, h, sq, d)
    ours = fwd_bwd(lambda *t: attention(*t, attention_mask=mask, causal=causal), (q, k, v), grad_out)
    ref = fwd_bwd(lambda *t: attention_reference(*t, attention_mask=mask, causal=causal),
                  (q.double(), k.double(), v.double()), grad_out.double())
    eager32 = fwd_bwd(lambda *t: attention_reference(*t, attention_mask=mask, causal=causal), (q, k, v), grad_out)
    for name, got, want, base in zip(["out", "dq", "dk", "dv"], ours, ref, eager32):
        assert torch.isfinite(got).all(), f"{name} has NaN/Inf"
        assert_within_torch_error(got, base, want, floor=1e-5, what=name)
    if b > 1:  # random_mask made the last sequence all padding: zero output and zero gradients
        assert (ours[0][-1] == 0).all() and (ours[1][-1] == 0).all()


def test_fully_masked_rows_from_causal_alignment_are_zero(seed):
    q, k, v = torch.randn(1, 2, 9, 16), torch.randn(1, 2, 4, 16), torch.randn(1, 2, 4, 16)
    out = attention(q, k, v, causal=True)  # bottom-right: the first 5 queries see no key
    assert (out[:, :, :5] == 0).all() and (out[:, :, 5:] != 0).any()


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_equals_padded_on_real_tokens(causal, seed):
    b, h, s, d = 4, 2, 17, 32
    mask = random_mask(b, s, all_padding_row=False)
    q, k, v = (torch.randn(b, h, s, d) for _ in range(3))
    # padding queries attend in the padded layout but do not exist packed: give them no upstream gradient
    grad_out = torch.randn(b, h, s, d) * mask[:, None, :, None]
    padded = fwd_bwd(lambda *t: attention(*t, attention_mask=mask, causal=causal), (q, k, v), grad_out)

    def packed_fn(qq, kk, vv):
        (pq, idx, cu, mx), (pk, _, _, _), (pv, _, _, _) = (unpad(t.transpose(1, 2), mask) for t in (qq, kk, vv))
        out = varlen_attention(pq, pk, pv, cu, cu, mx, mx, causal=causal)  # (total, H, D)
        return pad(out, idx, b, s).transpose(1, 2)  # back to (B, H, S, D), zeros at padding

    packed = fwd_bwd(packed_fn, (q, k, v), grad_out)
    real = mask[:, None, :, None].expand(b, h, s, d)
    for name, x, y in zip(["out", "dq", "dk", "dv"], packed, padded):
        assert torch.allclose(x[real], y[real], atol=2e-5), name


def test_unpad_pad_round_trip(seed):
    x, mask = torch.randn(3, 11, 5), random_mask(3, 11, all_padding_row=True)
    packed, idx, cu, mx = unpad(x, mask)
    assert cu.dtype == torch.int32 and cu.tolist()[-1] == packed.shape[0] == int(mask.sum())
    assert torch.equal(pad(packed, idx, 3, 11), x * mask[..., None])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(k=torch.randn(2, 3, 5, 16)), ValueError, "same B and H"),
        (dict(v=torch.randn(2, 2, 5, 24)), ValueError, "head dims differ"),
        (dict(q=torch.randn(2, 2, 5, 12), k=torch.randn(2, 2, 5, 12), v=torch.randn(2, 2, 5, 12)), ValueError,
         "multiple of 8"),
        (dict(attention_mask=torch.ones(2, 6, dtype=torch.bool)), ValueError, r"attention_mask must be \(B, Sk\)"),
        (dict(attention_mask=torch.ones(2, 5)), TypeError, "bool or 0/1 integers"),
        (dict(q=torch.randn(2, 5, 16)), ValueError, "q must have 4 dimensions"),
        (dict(k=torch.randn(2, 2, 5, 16, device="meta")), ValueError, "same device"),
        (dict(dropout_p=1.0), ValueError, r"dropout_p must be in \[0, 1\)"),
    ],
)
def test_attention_bad_inputs(change, error, match):
    args = dict(q=torch.randn(2, 2, 5, 16), k=torch.randn(2, 2, 5, 16), v=torch.randn(2, 2, 5, 16),
                attention_mask=None)
    args.update(change)
    with pytest.raises(error, match=match):
        attention(**args)


@pytest.mark.parametrize(
    "cu, match",
    [
        (torch.tensor([0, 3, 7], dtype=torch.int64), "cu_seqlens_q must have dtype"),
        (torch.tensor([0, 5, 3, 7], dtype=torch.int32), "never decrease"),
        (torch.tensor([0, 3, 6], dtype=torch.int32), "packed tensor has 7 tokens"),
        (torch.tensor([0, 1, 7], dtype=torch.int32), "longer"),
    ],
)
def test_varlen_bad_cu_seqlens(cu, match):
    q = torch.randn(7, 2, 16)
    with pytest.raises((ValueError, TypeError), match=match):
        varlen_attention(q, q, q, cu, cu, 5, 5)


def test_varlen_bad_inputs_and_unchecked_values():
    q, cu = torch.randn(7, 2, 16), torch.tensor([0, 3, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match="different batch sizes"):
        varlen_attention(q, q, q, cu, torch.tensor([0, 7], dtype=torch.int32), 7, 7)
    with pytest.raises(TypeError, match="share a dtype"):
        varlen_attention(q, q.half(), q, cu, cu, 4, 4)
    with pytest.raises(ValueError, match="head dim"):
        varlen_attention(q[..., :12], q[..., :12], q[..., :12], cu, cu, 4, 4)
    # the caller vouches for the values: no host sync, and the result is the checked one
    assert torch.equal(varlen_attention(q, q, q, cu, cu, 4, 4, check_cu_seqlens=False),
                       varlen_attention(q, q, q, cu, cu, 4, 4))


def test_cpu_dropout_is_seeded_unbiased_and_keeps_empty_rows_zero(seed):
    q, k, v = (torch.randn(2, 3, 9, 16) for _ in range(3))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1] = False  # an all-padding sequence: its rows stay exactly 0 under dropout
    torch.manual_seed(seed)
    a = attention(q, k, v, attention_mask=mask, dropout_p=0.3)
    torch.manual_seed(seed)
    b = attention(q, k, v, attention_mask=mask, dropout_p=0.3)
    plain = attention(q, k, v, attention_mask=mask)
    assert torch.equal(a, b) and not torch.allclose(a[0], plain[0])
    assert torch.equal(a[1], torch.zeros_like(a[1]))
    mean = torch.stack([attention(q, k, v, attention_mask=mask, dropout_p=0.3) for _ in range(400)]).mean(0)
    assert (mean[0] - plain[0]).abs().max() < 0.25  # inverted dropout keeps the expectation


def test_kernel_offsets_stay_32_bit_or_are_refused():
    from sslfast.ops.attention.flash import _kernel_ready
    s = 2 ** 17  # q from a fused (B, S, 3, H, D) projection: one batch entry spans 3 × S × H × D = 3 · 2^30
    view = torch.empty(1, s, 3, 64, 128, device="meta")[:, :, 0].transpose(1, 2)
    ready = _kernel_ready(view, s, packed=False)
    assert ready.is_contiguous()  # copied to (B, H, S, D): S × H × D = 2^30 fits
    assert _kernel_ready(ready, s, packed=False) is ready
    with pytest.raises(ValueError, match="32-bit"):
        _kernel_ready(torch.empty(4 * s, 64, 128, device="meta"), 4 * s, packed=True)  # one packed sequence: 2^32
    with pytest.raises(ValueError, match="32-bit"):  # contiguous, but H × S × D per batch entry is 2^32
        _kernel_ready(torch.empty(1, 64, 4 * s, 128, device="meta"), 4 * s, packed=False)
