"""Kernel self-checks: every Triton kernel variant against a float64 PyTorch reference on the machine at hand.

A variant is (op, dtype, size class, flags) — what selects a separately compiled kernel. Each check runs the
kernel explicitly (``backend="triton"``) on fresh random inputs with odd sizes, padding holes and empty rows,
forward and (where there is one) backward, and passes when its error against float64 is within twice the
same-dtype PyTorch error (plus a small floor). ``python -m sslfast selftest`` runs them all (small and, without
``--quick``, realistic shapes), prints a table and records the results in the validation cache that ``auto``
consults before it runs a kernel on a GPU (:mod:`sslfast.ops._validation`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import Callable, Optional

import torch

from sslfast._dtypes import DTYPES

__all__ = ["Variant", "variants", "run_variant", "selftest", "main"]


@dataclasses.dataclass(frozen=True)
class Variant:
    op: str
    dtype: str
    size: str = ""
    flags: str = ""

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.op, self.dtype, self.size, self.flags) if p)


def _err(a, ref) -> float:
    return (a.double() - ref.double()).abs().max().item() if a.numel() else 0.0


def _compare(pairs, factor=2.0, floor=1e-5) -> tuple[float, float]:
    """(worst error / allowed ratio as (error, allowed)) over (candidate, same-dtype torch, float64) triples."""
    worst = (0.0, 1.0)
    for got, base, ref in pairs:
        scale = max(1.0, ref.double().abs().max().item() if ref.numel() else 1.0)
        allowed = factor * _err(base, ref) + floor * scale
        error = _err(got, ref)
        if not math.isfinite(error) or error / allowed > worst[0] / worst[1]:
            worst = (error, allowed)
    return worst


def _grads(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


# --- checks: each returns (error, allowed) ------------------------------------------------------------------

def _check_attention(v: Variant, device, big: bool):
    from sslfast.ops._philox import attention_dropout_keep, effective_dropout_p
    from sslfast.ops.attention import attention_reference
    from sslfast.ops.flash_attention import flash_attention, padded_sequence_table
    dtype, d = DTYPES[v.dtype], int(v.size[1:])
    causal, dropout = "causal" in v.flags, "dropout" in v.flags
    b, h, sq, sk = (2, 4, 509, 517) if big else (2, 2, 37, 45)
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, vv = (torch.randn(b, h, s, d, generator=gen).to(device, dtype) for s in (sq, sk, sk))
    mask = torch.ones(b, sk, dtype=torch.bool)
    mask[0, sk // 3: sk // 3 + 5] = False  # a hole
    mask[1, sk - 7:] = False  # right padding
    mask = mask.to(device)
    grad_out = torch.randn(b, h, sq, d, generator=gen).to(device, dtype)
    p, seed = (0.2, 12345) if dropout else (0.0, None)
    keep = attention_dropout_keep(seed, p, range(b), h, sq, sk).to(device) if dropout else None
    seqs = padded_sequence_table(b, sq, sk, mask, device)
    seed_t = torch.tensor([seed], device=device) if dropout else None
    ours = _grads(lambda *t: flash_attention(*t, seqs, key_mask=mask.view(torch.uint8), max_seqlen_q=sq,
                                             max_seqlen_k=sk, packed=False, causal=causal, dropout_p=p,
                                             seed=seed_t)[0], (q, k, vv), grad_out)
    kw = dict(attention_mask=mask, causal=causal, dropout_mask=keep, dropout_p=effective_dropout_p(p))
    ref = _grads(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, vv)], grad_out.double())
    base = _grads(lambda *t: attention_reference(*t, **kw), (q, k, vv), grad_out)
    return _compare(zip(ours, base, ref), floor=1e-4 if dtype != torch.float32 else 1e-5)


def _check_vq_lookup(v: Variant, device, big: bool):
    from sslfast.ops.vq import vq_lookup
    dtype = DTYPES[v.dtype]
    d = 192 if v.size.endswith("loop") else int(v.size[1:])  # beyond one D block: the looped kernel
    n, k = (65537, 1031) if big else (257, 67)
    gen = torch.Generator().manual_seed(1)
    x, c = torch.randn(n, d, generator=gen).to(device, dtype), torch.randn(k, d, generator=gen).to(device, dtype)
    idx, dist = vq_lookup(x, c, backend="triton")
    exact = torch.cdist(x.double(), c.double()).square()  # (N, K)
    best = exact.min(1).values
    chosen = exact.gather(1, idx[:, None]).squeeze(1)
    base = (x.float() @ c.float().t() * -2 + c.float().square().sum(1)).argmin(1)
    base_gap = (exact.gather(1, base[:, None]).squeeze(1) - best).abs().max().item()
    return (chosen - best).abs().max().item(), 2 * base_gap + 1e-3 * max(1.0, best.max().item())


def _check_vq_stats(v: Variant, device, big: bool):
    from sslfast.ops.vq import vq_codebook_stats
    dtype = DTYPES[v.dtype]
    n, d, k = (65537, 64, 1031) if big else (257, 24, 67)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(n, d, generator=gen).to(device, dtype)
    idx = torch.randint(0, k, (n,), generator=gen).to(device)
    counts, sums = vq_codebook_stats(x, idx, k, backend="triton")
    ref_counts = torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, idx, torch.ones(n, dtype=torch.float64,
                                                                                                   device=device))
    ref_sums = torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, idx, x.double())
    base_sums = torch.zeros(k, d, dtype=torch.float32, device=device).index_add_(0, idx, x.float())
    return _compare([(counts, ref_counts, ref_counts), (sums, base_sums, ref_sums)], floor=1e-4)


def _check_cross_entropy(v: Variant, device, big: bool):
    from sslfast.ops.cross_entropy import cross_entropy
    dtype = DTYPES[v.dtype]
    n, vocab = (4099, 32771) if big else (37, 1031)
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(n, vocab, generator=gen) * 3).to(device, dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[::3] = -100
    labels = labels.to(device)
    ours = _grads(lambda t: cross_entropy(t, labels, backend="triton"), (logits,), torch.tensor(1.0, device=device))
    ref = _grads(lambda t: torch.nn.functional.cross_entropy(t, labels), (logits.double(),),
                 torch.tensor(1.0, device=device, dtype=torch.float64))
    base = _grads(lambda t: torch.nn.functional.cross_entropy(t.float(), labels), (logits,),
                  torch.tensor(1.0, device=device))
    return _compare(zip(ours, base, ref), floor=1e-6)


def _check_linear_cross_entropy(v: Variant, device, big: bool):
    from sslfast.ops.cross_entropy import linear_cross_entropy
    dtype = DTYPES[v.dtype]
    n, d, vocab = (4099, 768, 50257) if big else (41, 64, 1031)
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(n, d, generator=gen).to(device, dtype)
    w = (torch.randn(vocab, d, generator=gen) / math.sqrt(d)).to(device, dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[1::4] = -100
    labels = labels.to(device)
    one = torch.tensor(1.0, device=device)
    ours = _grads(lambda a, b: linear_cross_entropy(a, b, labels, backend="triton"), (h, w), one)
    ref = _grads(lambda a, b: torch.nn.functional.cross_entropy(a @ b.t(), labels), (h.double(), w.double()),
                 one.double())
    base = _grads(lambda a, b: torch.nn.functional.cross_entropy((a @ b.t()).float(), labels), (h, w), one)
    return _compare(zip(ours, base, ref), floor=1e-5)


def _check_kvcache(v: Variant, device, big: bool):
    from sslfast.ops.kv_attention import attention_with_kvcache, kvcache_attention_reference
    dtype, d = DTYPES[v.dtype], int(v.size[1:])
    b, sq, h, hkv, cap = (8, 1, 16, 16, 2048) if big else (3, 2, 4, 2, 77)
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, cap - sq + 1, (b,), generator=gen, dtype=torch.int32)
    lengths[0] = 0
    kc, vc = (torch.randn(b, cap, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    q = torch.randn(b, sq, h, d, generator=gen).to(device, dtype)
    kn, vn = (torch.randn(b, sq, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    lengths = lengths.to(device)
    rows, cols = torch.arange(b, device=device)[:, None], lengths.long()[:, None] + torch.arange(sq, device=device)
    kf, vf = kc.clone(), vc.clone()
    kf[rows, cols], vf[rows, cols] = kn, vn
    out = attention_with_kvcache(q, kc, vc, lengths, kn, vn, backend="triton")
    ref = kvcache_attention_reference(q.double(), kf.double(), vf.double(), lengths + sq)
    base = kvcache_attention_reference(q, kf, vf, lengths + sq)
    return _compare([(out, base, ref)], floor=1e-4 if dtype != torch.float32 else 1e-5)


CHECKS: dict[str, Callable] = {"attention": _check_attention, "vq_lookup": _check_vq_lookup,
                               "vq_codebook_stats": _check_vq_stats, "cross_entropy": _check_cross_entropy,
                               "linear_cross_entropy": _check_linear_cross_entropy,
                               "attention_with_kvcache": _check_kvcache}


def variants(ops: Optional[list] = None) -> list[Variant]:
    """Every kernel variant (each a separately compiled kernel), or those of ``ops``."""
    out = []
    for dtype in ("bf16", "fp16", "fp32"):
        for d in (64, 128):
            for flags in ("full", "causal", "full+dropout", "causal+dropout"):
                out.append(Variant("attention", dtype, f"d{d}", flags))
            out.append(Variant("attention_with_kvcache", dtype, f"d{d}"))
        for size in ("d64", "d128", "d64loop"):
            out.append(Variant("vq_lookup", dtype, size))
        out += [Variant("vq_codebook_stats", dtype), Variant("cross_entropy", dtype),
                Variant("linear_cross_entropy", dtype)]
    return [v for v in out if ops is None or v.op in ops]


def run_variant(v: Variant, device, big: bool = False) -> dict:
    """Run one check; a crash is a failure with its message."""
    start = time.perf_counter()
    device_type = torch.device(device).type
    try:
        # the check may first run inside the caller's no_grad / inference_mode / autocast (an eval loop): it
        # needs its own gradients and dtypes, or a sound kernel would be recorded as failed
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            error, allowed = CHECKS[v.op](v, torch.device(device), big)
        passed, message = math.isfinite(error) and error <= allowed, None
    except Exception as exc:  # a kernel that does not compile or launch fails its check
        error, allowed, passed, message = float("nan"), float("nan"), False, f"{type(exc).__name__}: {exc}"[:300]
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return {"variant": v.key, "op": v.op, "dtype": v.dtype, "size": v.size, "flags": v.flags,
            "shapes": "realistic" if big else "small", "max_error": error, "allowed": allowed, "passed": passed,
            "seconds": round(time.perf_counter() - start, 3), "error": message}


def selftest(device: str = "cuda", *, quick: bool = False, ops=None, json_path: Optional[str] = None,
             progress=print) -> list[dict]:
    """Check every variant (small shapes; realistic ones too unless ``quick``), record the results in the
    validation cache, write them to ``json_path`` as they come. Returns the records."""
    from sslfast.ops import _validation
    records = []
    for v in variants(ops):
        for big in ((False,) if quick else (False, True)):
            record = run_variant(v, device, big)
            records.append(record)
            progress(f"{'ok  ' if record['passed'] else 'FAIL'} {record['variant']:<44} {record['shapes']:<9} "
                     f"error {record['max_error']:.2e} (allowed {record['allowed']:.2e}) {record['seconds']:.2f}s"
                     + (f"  {record['error']}" if record["error"] else ""))
            if json_path:
                with open(json_path, "w") as f:
                    json.dump({"platform": _validation.platform_key(torch.device(device)), "records": records}, f,
                              indent=1)
        results = [r for r in records if r["variant"] == v.key]
        _validation.remember(v.key, all(r["passed"] for r in results), torch.device(device), results[-1])
    return records


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="sslfast selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--ops", nargs="+", choices=sorted(CHECKS), help="only these ops")
    parser.add_argument("--json", metavar="PATH", help="write the records here (rewritten after each)")
    args = parser.parse_args(argv)
    from sslfast.ops._dispatch import triton_interpreted
    if args.device == "cuda" and not torch.cuda.is_available():
        print("sslfast selftest: no CUDA device (use --device cpu with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    if args.device == "cpu" and not triton_interpreted():
        print("sslfast selftest: --device cpu runs the kernels through the interpreter: set TRITON_INTERPRET=1",
              file=sys.stderr)
        return 2
    records = selftest(args.device, quick=args.quick or args.device == "cpu", ops=args.ops, json_path=args.json)
    failed = [r["variant"] for r in records if not r["passed"]]
    print(f"sslfast selftest: {len(records) - len(failed)}/{len(records)} passed" +
          (f"; failed: {', '.join(sorted(set(failed)))}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
