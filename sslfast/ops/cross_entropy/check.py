"""The cross-entropy kernels' self-checks (over logits, fused with the LM head) and their registry entries."""
from __future__ import annotations

import math

import torch

from sslfast._dtypes import DTYPES, dtype_name
from sslfast.constants import IGNORE_INDEX
from sslfast.ops._registry import OpSpec, Variant, register
from sslfast.ops.cross_entropy.linear import linear_cross_entropy
from sslfast.ops.cross_entropy.logits import cross_entropy
from sslfast.testing import fwd_bwd, worst_error

__all__ = ["CROSS_ENTROPY_SPEC", "LINEAR_CROSS_ENTROPY_SPEC", "check_cross_entropy", "check_linear_cross_entropy"]


def _variants(op):
    return lambda auto_only: [Variant(op, dtype) for dtype in ("bf16", "fp16", "fp32")]


def _variant_of(op):
    def variant_of(*, dtype: torch.dtype) -> Variant:
        """One kernel per dtype."""
        return Variant(op, dtype_name(dtype))
    return variant_of


def check_cross_entropy(v: Variant, device, big: bool):
    dtype = DTYPES[v.dtype]
    n, vocab = (4099, 32771) if big else (37, 1031)
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(n, vocab, generator=gen) * 3).to(device, dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[::3] = IGNORE_INDEX
    labels = labels.to(device)
    pairs = []
    for upstream in (1.0, 0.37):  # 1: the gradient is handed over untouched; else scaled in place on the device
        grad_out = torch.tensor(upstream, device=device)
        ours = fwd_bwd(lambda t: cross_entropy(t, labels, backend="triton", check_labels=upstream == 1.0), (logits,),
                      grad_out)
        ref = fwd_bwd(lambda t: torch.nn.functional.cross_entropy(t, labels), (logits.double(),), grad_out.double())
        base = fwd_bwd(lambda t: torch.nn.functional.cross_entropy(t.float(), labels), (logits,), grad_out)
        pairs += zip(ours, base, ref)
    return worst_error(pairs, floor=1e-6)


def check_linear_cross_entropy(v: Variant, device, big: bool):
    dtype = DTYPES[v.dtype]
    n, d, vocab = (4099, 768, 50257) if big else (41, 64, 1031)
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(n, d, generator=gen).to(device, dtype)
    w = (torch.randn(vocab, d, generator=gen) / math.sqrt(d)).to(device, dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[1::4] = IGNORE_INDEX
    labels = labels.to(device)
    pairs = []
    # mean: 1/count applied inside the kernel; none: each row's upstream gradient applied inside the kernel
    for reduction, grad_out in (("mean", torch.tensor(1.0, device=device)),
                                ("none", torch.randn(n, generator=gen).to(device))):
        f = torch.nn.functional.cross_entropy
        ours = fwd_bwd(lambda a, b: linear_cross_entropy(a, b, labels, reduction=reduction, backend="triton"), (h, w),
                      grad_out)
        ref = fwd_bwd(lambda a, b: f(a @ b.t(), labels, reduction=reduction), (h.double(), w.double()),
                     grad_out.double())
        base = fwd_bwd(lambda a, b: f((a @ b.t()).float(), labels, reduction=reduction), (h, w), grad_out)
        pairs += zip(ours, base, ref)
    return worst_error(pairs, floor=1e-5)


CROSS_ENTROPY_SPEC = register(OpSpec("cross_entropy", _variants("cross_entropy"), _variant_of("cross_entropy"),
                                     check_cross_entropy, kernel_files=("cross_entropy.py", "constants.py")))
LINEAR_CROSS_ENTROPY_SPEC = register(OpSpec("linear_cross_entropy", _variants("linear_cross_entropy"),
                                            _variant_of("linear_cross_entropy"), check_linear_cross_entropy,
                                            kernel_files=("cross_entropy.py", "constants.py")))
