"""Attention cases.

CPU: ``sslfast.ops.attention`` against ``F.scaled_dot_product_attention`` with a boolean key mask and an
eager softmax(QKᵀ)V; ``varlen_attention`` on the packed real tokens against the padded masked SDPA.

CUDA (bf16, flash-attention's FLOP count, so TFLOP/s compare across implementations):
- dense batches, B·S = 16k tokens, 2048 channels (H = 2048 / D), D 64 and 128, S 512–16k, causal and not,
  forward and forward+backward, against SDPA's flash and memory-efficient backends and, where installed,
  flash-attn;
- a BERT-shaped batch with 50% padding (lengths uniform in 1..S): ``varlen_attention`` on the real tokens
  and ``attention`` with the mask, against SDPA with the boolean mask (counted flops: real tokens only).
The candidate is the Triton kernel (``backend="triton"``) whatever ``auto`` would pick.
"""
import math

import torch
import torch.nn.functional as F

from sslfast.bench.case import Case, float64_copies
from sslfast.bench.cases._inputs import randint, randn
from sslfast.ops import attention, unpad, varlen_attention

BENCH_OPS = ("attention", "varlen_attention")  # the `sslfast bench --ops` names these cases serve


def _mask(b, s, device, seed=7, low=None):
    lengths = randint(max(1, s // 4) if low is None else low, s + 1, (b,), device="cpu", seed=seed)
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


def _relative(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-6)).item()


def _with_grads(output_error, grad_view=lambda g: g):
    """A case's error over the output (``output_error``) and, for fwd+bwd steps, every input gradient
    (relative to the baseline's largest; ``grad_view`` maps a baseline gradient to the candidate's layout)."""
    def error(base, ours):
        if not isinstance(base, tuple):
            return output_error(base, ours)
        worst = output_error(base[0], ours[0])
        if len(base) != len(ours):
            return float("inf")
        for b, o in zip(base[1:], ours[1:]):
            worst = max(worst, _relative(o, grad_view(b)))
        return worst
    return error


def _real_rows_error(mask):
    def error(base, ours):
        rows = mask[:, None, :, None].expand_as(base)  # compare at real query positions
        return (base.double() - ours.double()).abs()[rows].max().item()
    return _with_grads(error, lambda g: g * mask[:, None, :, None])  # padding keys get no gradient


def _max_error(base, ours):
    return (base.double() - ours.double()).abs().max().item()


_max_error_with_grads = _with_grads(_max_error)


def _upstream(shape, device, dtype):
    return torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(device, dtype)


def _padded_upstream(real_rows):
    """The upstream gradient of a padded (B, H, S, D) output, zero at padding query rows: a loss never reads
    them, and what each side computes there differs, so the gradients compare what a training step uses."""
    def make(out):
        return _upstream(out.shape, out.device, out.dtype) * real_rows[:, None, :, None].to(out.dtype)
    return make


def _packed_upstream(real_rows, heads, head_dim):
    """The same upstream gradient for a packed (total, H, D) output: the padded one at the real positions."""
    def make(out):
        b, s = real_rows.shape
        padded = _upstream((b, heads, s, head_dim), out.device, out.dtype)
        return padded.transpose(1, 2)[real_rows]
    return make


def _fwd_bwd(fn, upstream=None):
    """Forward + backward with a fixed upstream gradient (``upstream(out)``, default seeded normal noise);
    returns (output, gradients of the inputs used)."""
    def step(*inputs):
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        for t in leaves:
            t.grad = None
        out = fn(*inputs)
        out.backward(upstream(out) if upstream is not None else _upstream(out.shape, out.device, out.dtype))
        return (out.detach(),) + tuple(t.grad for t in leaves if t.grad is not None)
    return step


def cases(quick: bool, device: str):
    return _gpu_cases(quick, device) if device == "cuda" else _cpu_cases(quick, device)


def _cpu_cases(quick, device):
    shapes = [(4, 8, 128, 64, "fp32")] if quick else [(16, 12, 128, 64, "fp32"), (8, 12, 512, 64, "fp32")]
    out = []
    for b, h, s, d, dtype in shapes:
        mask = _mask(b, s, device)

        def make_inputs(b=b, h=h, s=s, d=d, dtype=dtype, mask=mask, grad=False):
            return tuple(randn(b, h, s, d, device=device, dtype=dtype, seed=i, requires_grad=grad)
                         for i in range(3)) + (mask,)

        tol = 1e-5  # the floor: tolerance = 2 × the baseline's float64 error + this
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
                            baseline=_fwd_bwd(lambda q, k, v, m, c=causal: _sdpa(q, k, v, m, c),
                                              _padded_upstream(mask)),
                            candidate=_fwd_bwd(ours, _padded_upstream(mask)), error=_real_rows_error(mask),
                            tolerance=tol,
                            flops=3.5 * flops))
        out.append(_varlen_case(b, h, s, d, dtype, device, mask, backend="auto", tol=tol, grad=False))
    return out


def _varlen_case(b, h, s, d, dtype, device, mask, *, backend, tol, grad, tag=""):
    """varlen_attention on the packed real tokens against SDPA with the boolean mask on the padded batch."""
    def make_packed():
        q, k, v = (randn(b, h, s, d, device=device, dtype=dtype, seed=i) for i in range(3))
        (pq, _, cu, max_len), (pk, *_), (pv, *_) = (unpad(t.transpose(1, 2), mask) for t in (q, k, v))
        return tuple(t.requires_grad_(grad) for t in (q, k, v)) + (mask,) + tuple(
            t.contiguous().requires_grad_(grad) for t in (pq, pk, pv)) + (cu, max_len)

    def packed_view(t):  # padded (B, H, S, D) -> packed (total, H, D)
        return t.transpose(1, 2)[mask]

    varlen_error = _with_grads(lambda base, ours: (packed_view(base).double() - ours.double()).abs().max().item(),
                               packed_view)

    def baseline(q, k, v, m, *_):
        return _sdpa(q, k, v, m, False)

    def candidate(q, k, v, m, pq, pk, pv, cu, mx):
        return varlen_attention(pq, pk, pv, cu, cu, mx, mx, backend=backend)

    flops = 4.0 * h * d * float((mask.sum(-1).double() ** 2).sum())  # real tokens only
    if grad:
        baseline = _fwd_bwd(baseline, _padded_upstream(mask))
        candidate, flops = _fwd_bwd(candidate, _packed_upstream(mask, h, d)), 3.5 * flops
    reference = _float64_reference(lambda q, k, v, m, *_: _exact(q, k, v, m, False), mask if grad else None) \
        if device == "cuda" else None  # CPU: the baseline itself on float64 copies
    return Case(op="varlen_attention", case=f"{'fwd+bwd ' if grad else ''}B={b} H={h} S={s} D={d} {dtype}{tag}",
                dtype=dtype, baseline_name="sdpa+bool mask (padded)", make_inputs=make_packed, baseline=baseline,
                candidate=candidate, error=varlen_error, baseline_error=_real_rows_error(mask), tolerance=tol,
                flops=flops, reference=reference)


def _exact(q, k, v, mask, causal):
    """Attention head by head (float64 on the GPU, where SDPA's fused backends have no float64 and a whole
    batch's float64 score matrix may not fit)."""
    outs = []
    for i in range(q.shape[0]):
        heads = [_eager(q[i:i + 1, j:j + 1], k[i:i + 1, j:j + 1], v[i:i + 1, j:j + 1],
                        mask[i:i + 1] if mask is not None else torch.ones(1, k.shape[2], dtype=torch.bool,
                                                                         device=q.device), causal)
                 for j in range(q.shape[1])]
        outs.append(torch.cat(heads, 1))
    return torch.cat(outs, 0)


def _float64_reference(fn, padded_mask=None, grad=None):
    """The float64 reference of a GPU case: ``fn`` (forward) or its forward+backward on float64 copies."""
    def run(*inputs):
        inputs = float64_copies(inputs)
        if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
            return fn(*inputs)
        return _fwd_bwd(fn, _padded_upstream(padded_mask) if padded_mask is not None else None)(*inputs)
    return run


def _sdpa_backend(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def _flash_attn():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None

    def run(q, k, v, causal):  # flash-attn takes (B, S, H, D)
        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal).transpose(1, 2)
    return run


def _gpu_cases(quick, device):
    # cuDNN's fused attention first: the fastest SDPA backend on Hopper, the anchor to beat
    baselines = {"sdpa-cudnn": _sdpa_backend("cudnn"), "sdpa-flash": _sdpa_backend("flash"),
                 "sdpa-efficient": _sdpa_backend("efficient")}
    if _flash_attn() is not None:
        baselines["flash-attn"] = _flash_attn()
    dtype, tol = "bf16", 1e-2
    grid = [(64, 1024), (128, 4096)] if quick else [(hd, s) for hd in (64, 128)
                                                    for s in (512, 1024, 2048, 4096, 8192, 16384)]
    out = []
    for hd, s in grid:
        b, h = max(1, 16384 // s), 2048 // hd

        def make_inputs(b=b, h=h, s=s, hd=hd, grad=False):
            return tuple(randn(b, h, s, hd, device=device, dtype=dtype, seed=i, requires_grad=grad)
                         for i in range(3))

        for causal in (False, True):
            fwd_flops = 4.0 * b * h * s * s * hd / (2 if causal else 1)
            tag = f"B={b} H={h} S={s} D={hd} {'causal ' if causal else ''}{dtype}"
            ours = lambda q, k, v, c=causal: attention(q, k, v, causal=c, backend="triton")  # noqa: E731
            for name, base in baselines.items():
                base_fn = lambda q, k, v, c=causal, f=base: f(q, k, v, c)  # noqa: E731
                exact = _float64_reference(lambda q, k, v, c=causal: _exact(q, k, v, None, c))
                out.append(Case(op="attention", case=f"fwd {tag} vs {name}", dtype=dtype, baseline_name=name,
                                make_inputs=make_inputs, baseline=base_fn, candidate=ours, error=_max_error,
                                tolerance=tol, flops=fwd_flops, reference=exact))
                out.append(Case(op="attention", case=f"fwd+bwd {tag} vs {name}", dtype=dtype, baseline_name=name,
                                make_inputs=lambda f=make_inputs: f(grad=True), baseline=_fwd_bwd(base_fn),
                                candidate=_fwd_bwd(ours), error=_max_error_with_grads, tolerance=tol,
                                flops=3.5 * fwd_flops, reference=exact))
    # BERT-shaped: 50% padding on average
    for b, h, s, hd in ([(32, 12, 512, 64)] if quick else [(32, 12, 512, 64), (64, 16, 512, 64), (8, 16, 2048, 128)]):
        mask = _mask(b, s, device, seed=11, low=1)
        for grad in (False, True):
            out.append(_varlen_case(b, h, s, hd, dtype, device, mask, backend="triton", tol=tol, grad=grad,
                                    tag=" 50% padding"))

            def make_padded(b=b, h=h, s=s, hd=hd, mask=mask, grad=grad):
                return tuple(randn(b, h, s, hd, device=device, dtype=dtype, seed=i, requires_grad=grad)
                             for i in range(3)) + (mask,)

            base_fn = lambda q, k, v, m: _sdpa(q, k, v, m, False)  # noqa: E731
            ours = lambda q, k, v, m: attention(q, k, v, attention_mask=m, backend="triton")  # noqa: E731
            flops = 4.0 * h * hd * float((mask.sum(-1).double() * s).sum())  # every query row, real keys
            out.append(Case(
                op="attention", case=f"{'fwd+bwd' if grad else 'fwd'} B={b} H={h} S={s} D={hd} {dtype} 50% padding",
                dtype=dtype, baseline_name="sdpa+bool mask", make_inputs=make_padded,
                baseline=_fwd_bwd(base_fn, _padded_upstream(mask)) if grad else base_fn,
                candidate=_fwd_bwd(ours, _padded_upstream(mask)) if grad else ours,
                error=_real_rows_error(mask), tolerance=tol, flops=3.5 * flops if grad else flops,
                reference=_float64_reference(lambda q, k, v, m: _exact(q, k, v, m, False), mask)))
    return out
