"""sslfast.nn.MultiHeadAttention against torch.nn.MultiheadAttention and the float64 attention reference."""
import pytest
import torch

from sslfast.nn import MultiHeadAttention
from sslfast.ops import unpad
from sslfast.ops.attention import attention_reference


def torch_twin(ours):
    twin = torch.nn.MultiheadAttention(ours.embed_dim, ours.num_heads, batch_first=True)
    with torch.no_grad():
        twin.in_proj_weight.copy_(ours.in_proj.weight)
        twin.in_proj_bias.copy_(ours.in_proj.bias)
        twin.out_proj.weight.copy_(ours.out_proj.weight)
        twin.out_proj.bias.copy_(ours.out_proj.bias)
    return twin


def random_mask(b, s):
    lengths = torch.randint(1, s + 1, (b,))
    lengths[0] = s
    return torch.arange(s)[None] < lengths[:, None]


@pytest.mark.parametrize("cross", [False, True])
def test_matches_torch_multihead_attention_with_padding(cross, seed):
    mha = MultiHeadAttention(48, 3)
    twin = torch_twin(mha)
    x = torch.randn(3, 11, 48, requires_grad=True)
    ctx = torch.randn(3, 7, 48, requires_grad=True) if cross else None
    mask = random_mask(3, 7 if cross else 11)
    ours = mha(x, ctx, attention_mask=mask)
    kv = ctx if cross else x
    ref, _ = twin(x, kv, kv, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, (x, mha.in_proj.weight), g)
    ref_grads = torch.autograd.grad(ref, (x, twin.in_proj_weight), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_causal_and_separate_context_width_match_float64_reference(seed):
    mha = MultiHeadAttention(32, 2, kv_dim=24, causal=True).double()
    x, ctx = torch.randn(2, 9, 32, dtype=torch.float64), torch.randn(2, 13, 24, dtype=torch.float64)
    q = mha.q_proj(x).unflatten(-1, (2, 16)).transpose(1, 2)
    k, v = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in mha.kv_proj(ctx).chunk(2, -1))
    ref = mha.out_proj(attention_reference(q, k, v, causal=True).transpose(1, 2).flatten(2))
    out = mha.float()(x.float(), ctx.float())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs a context"):
        mha(x.float())


def test_packed_equals_padded_on_real_tokens(seed):
    mha = MultiHeadAttention(64, 4, causal=True)
    x = torch.randn(4, 10, 64)
    mask = random_mask(4, 10)
    packed, indices, cu, max_len = unpad(x, mask)
    out_packed = mha.forward_packed(packed, cu, max_len)
    out_padded = mha(x, attention_mask=mask)  # right padding: causal + key mask = each sequence alone
    torch.testing.assert_close(out_packed, out_padded.flatten(0, 1)[indices], rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match=r"x must be \(B, S, 16\)"):
        MultiHeadAttention(16, 2)(torch.randn(2, 3, 8))
