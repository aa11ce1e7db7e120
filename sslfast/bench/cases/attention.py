"""Attention with key padding: ``F.scaled_dot_product_attention`` with a boolean mask, and an eager
softmax(QKᵀ)V, against ``sslfast.ops.attention`` (padded) and ``varlen_attention`` (packed real tokens)."""
import math

import torch
import torch.nn.functional as F

from sslfast.bench.case import Case
from sslfast.bench.cases._inputs import randint, randn
from sslfast.ops import attention, unpad, varlen_attention


def _mask(b, s, device, seed=7):
    lengths = randint(max(1, s // 4), s + 1, (b,), device="cpu", seed=seed)  # ≈ 40% padding
    return (torch.arange(s)[None, :] < lengths[:, None]).to(device)  # (B, S) True = real token


def _eager(q, k, v, mask, causal):
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, S, S)
    keep = mask[:, None, None, :]
    if causal:
        keep = keep & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), -1) @ v


def _sdpa(q, k, v, mask, causal):
    keep = mask[:, None, None, :]
    if causal:
        keep = keep & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def _real_rows_error(mask):
    def error(base, ours):
        rows = mask[:, None, :, None].expand_as(base)  # compare at real query positions
        return (base.double() - ours.double()).abs()[rows].max().item()
    return error


def _fwd_bwd(fn):
    def step(q, k, v, mask):
        q.grad = k.grad = v.grad = None
        out = fn(q, k, v, mask)
        out.backward(torch.ones_like(out))
        return out.detach()
    return step


def cases(quick: bool, device: str):
    if device == "cuda":
        shapes = [(4, 16, 1024, 64, "bf16")] if quick else \
                 [(max(1, 16384 // s), 16, s, hd, "bf16") for hd in (64, 128) for s in (512, 2048, 8192)]
    else:
        shapes = [(4, 8, 128, 64, "fp32")] if quick else [(16, 12, 128, 64, "fp32"), (8, 12, 512, 64, "fp32")]
    out = []
    for b, h, s, d, dtype in shapes:
        mask = _mask(b, s, device)

        def make_inputs(b=b, h=h, s=s, d=d, dtype=dtype, mask=mask, grad=False):
            return tuple(randn(b, h, s, d, device=device, dtype=dtype, seed=i, requires_grad=grad)
                         for i in range(3)) + (mask,)

        tol = 1e-4 if dtype == "fp32" else 3e-2
        for causal in (False, True):
            flops = 4.0 * b * h * s * s * d / (2 if causal else 1)
            tag = f"B={b} H={h} S={s} D={d} {'causal ' if causal else ''}{dtype}"
            ours = lambda q, k, v, m, c=causal: attention(q, k, v, attention_mask=m, causal=c)  # noqa: E731
            out.append(Case(op="attention", case=f"fwd {tag}", dtype=dtype, baseline_name="sdpa+bool mask",
                            make_inputs=make_inputs, baseline=lambda q, k, v, m, c=causal: _sdpa(q, k, v, m, c),
                            candidate=ours, error=_real_rows_error(mask), tolerance=tol, flops=flops))
            if not causal:
                out.append(Case(op="attention", case=f"fwd {tag} vs eager", dtype=dtype, baseline_name="eager",
                                make_inputs=make_inputs, baseline=lambda q, k, v, m: _eager(q, k, v, m, False),
                                candidate=ours, error=_real_rows_error(mask), tolerance=tol, flops=flops))
            out.append(Case(op="attention", case=f"fwd+bwd {tag}", dtype=dtype, baseline_name="sdpa+bool mask",
                            make_inputs=lambda f=make_inputs: f(grad=True),
                            baseline=_fwd_bwd(lambda q, k, v, m, c=causal: _sdpa(q, k, v, m, c)),
                            candidate=_fwd_bwd(ours), error=_real_rows_error(mask), tolerance=tol,
                            flops=3.5 * flops))

        def make_packed(b=b, h=h, s=s, d=d, dtype=dtype, mask=mask):
            q, k, v, m = make_inputs(b, h, s, d, dtype, mask)
            packed = [unpad(t.transpose(1, 2), m) for t in (q, k, v)]  # (total, H, D)
            _, indices, cu, max_len = packed[0]
            return q, k, v, m, packed[0][0], packed[1][0], packed[2][0], cu, max_len, indices

        def varlen_error(base, ours, mask=mask):
            real = base.transpose(1, 2)[mask]  # (total, H, D)
            return (real.double() - ours.double()).abs().max().item()

        out.append(Case(
            op="varlen_attention", case=f"B={b} H={h} S={s} D={d} {dtype}", dtype=dtype,
            baseline_name="sdpa+bool mask (padded)", make_inputs=make_packed,
            baseline=lambda q, k, v, m, *_: _sdpa(q, k, v, m, False),
            candidate=lambda q, k, v, m, pq, pk, pv, cu, mx, idx: varlen_attention(pq, pk, pv, cu, cu, mx, mx),
            error=varlen_error, tolerance=tol, flops=4.0 * h * d * float((mask.sum(-1).double() ** 2).sum())))
    return out
