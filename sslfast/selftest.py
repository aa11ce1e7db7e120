"""Kernel self-checks: every Triton kernel variant against a float64 PyTorch reference on the machine at hand.

A variant is (op, dtype, size, flags): what ``auto`` looks up before it runs a kernel (the size is the exact
head dim for the attention kernels, which compile one kernel per head dim). A check covers every kernel the
variant's calls can compile (with and without a key mask, packed, both backward paths). Each check runs the
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
import os
import sys
import time
from typing import Callable, Optional

import torch

from sslfast._atomic import atomic_write_text
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
    """Every kernel the variant's calls can compile: padded with a key mask (holes, right padding, an empty
    row), padded without one, packed (varlen, without dropout), up to head-dim block 64 both backward paths
    (atomic dQ, the default, and the deterministic dQ pass); sequence lengths that are and are not multiples
    of 16 (Triton specialises strides divisible by 16)."""
    from sslfast.kernels.constants import head_dim_block
    from sslfast.kernels.flash_attention_backward import dq_by_atomics
    dtype, d = DTYPES[v.dtype], int(v.size[1:])
    causal, dropout = "causal" in v.flags, "dropout" in v.flags
    p, seed = (0.2, 12345) if dropout else (0.0, None)
    seed_t = torch.tensor([seed], device=device) if dropout else None
    backward_paths = (False, True) if dq_by_atomics(head_dim_block(d), False) else (False,)
    gen = torch.Generator(device="cpu").manual_seed(0)
    pairs = []
    for b, h, sq, sk in [(2, 4, 509, 517)] if big else [(2, 2, 37, 45), (3, 2, 32, 48)]:
        q, k, vv = (torch.randn(b, h, s, d, generator=gen).to(device, dtype) for s in (sq, sk, sk))
        mask = torch.ones(b, sk, dtype=torch.bool)
        mask[0, sk // 3: sk // 3 + 5] = False  # a hole
        mask[1, sk - 7:] = False  # right padding
        if b > 2:
            mask[2] = False  # a row with no key: 0 output, 0 gradient
        mask = mask.to(device)
        grad_out = torch.randn(b, h, sq, d, generator=gen).to(device, dtype)
        for key_mask, deterministic in [(m, det) for m in (mask, None) for det in backward_paths]:
            pairs += _padded_attention_pairs(q, k, vv, grad_out, key_mask, causal, p, seed, seed_t, deterministic)
        if not dropout and b == 2:
            pairs += _packed_attention_pairs(q, k, vv, grad_out, mask, causal)
    return _compare(pairs, floor=1e-4 if dtype != torch.float32 else 1e-5)


def _padded_attention_pairs(q, k, vv, grad_out, key_mask, causal, p, seed, seed_t, deterministic):
    from sslfast.ops._philox import attention_dropout_keep, effective_dropout_p
    from sslfast.ops.attention import attention_reference
    from sslfast.ops.flash_attention import flash_attention, padded_sequence_table
    b, h, sq, _ = q.shape
    sk, device = k.shape[2], q.device
    keep = attention_dropout_keep(seed, p, range(b), h, sq, sk).to(device) if p > 0 else None
    seqs = padded_sequence_table(b, sq, sk, key_mask, device)
    ours = _grads(lambda *t: flash_attention(
        *t, seqs, key_mask=None if key_mask is None else key_mask.view(torch.uint8), max_seqlen_q=sq,
        max_seqlen_k=sk, packed=False, causal=causal, dropout_p=p, seed=seed_t, deterministic=deterministic)[0],
        (q, k, vv), grad_out)
    kw = dict(attention_mask=key_mask, causal=causal, dropout_mask=keep, dropout_p=effective_dropout_p(p))
    ref = _grads(lambda *t: attention_reference(*t, **kw), [t.double() for t in (q, k, vv)], grad_out.double())
    base = _grads(lambda *t: attention_reference(*t, **kw), (q, k, vv), grad_out)
    return list(zip(ours, base, ref))


def _packed_attention_pairs(q, k, vv, grad_out, mask, causal):
    """The padded batch's real tokens packed (T, H, D) with lengths from ``mask``'s row sums (one empty-free
    varlen batch), against per-sequence references."""
    from sslfast.ops.attention import varlen_attention_reference
    from sslfast.ops.flash_attention import flash_attention, packed_sequence_table
    b, h, sq, d = q.shape
    len_k = mask.sum(1).to(torch.int32)  # (B,)
    len_q = torch.minimum(len_k, torch.full_like(len_k, sq)) if causal else torch.full_like(len_k, sq)
    cu_q, cu_k = (torch.nn.functional.pad(n.cumsum(0, dtype=torch.int32), (1, 0)) for n in (len_q, len_k))
    lq, lk = len_q.tolist(), len_k.tolist()

    def pack(t, lengths):  # (B, H, S, D) -> (T, H, D): the first lengths[i] tokens of row i
        return torch.cat([t[i, :, :n].transpose(0, 1) for i, n in enumerate(lengths)])

    pq, pk, pv, pg = pack(q, lq), pack(k, lk), pack(vv, lk), pack(grad_out, lq)
    seqs = packed_sequence_table(cu_q, cu_k)
    ours = _grads(lambda *t: flash_attention(*t, seqs, max_seqlen_q=max(lq), max_seqlen_k=max(lk), packed=True,
                                             causal=causal)[0], (pq, pk, pv), pg)

    def reference(*t):
        return varlen_attention_reference(*t, cu_q, cu_k, causal=causal)

    ref = _grads(reference, [t.double() for t in (pq, pk, pv)], pg.double())
    base = _grads(reference, (pq, pk, pv), pg)
    return list(zip(ours, base, ref))


def _check_vq_lookup(v: Variant, device, big: bool):
    """Widths that fill the feature block and that leave a masked tail (a width divisible by 16 is another
    specialisation); beyond one block, the looped kernel."""
    from sslfast.ops.vq import vq_lookup
    dtype = DTYPES[v.dtype]
    block = 192 if v.size.endswith("loop") else int(v.size[1:])
    n, k = (65537, 1031) if big else (257, 67)
    gen = torch.Generator().manual_seed(1)
    worst = (0.0, 1.0)
    for d in (block, block - 8):
        x, c = torch.randn(n, d, generator=gen).to(device, dtype), torch.randn(k, d, generator=gen).to(device, dtype)
        idx, dist = vq_lookup(x, c, backend="triton")
        exact = torch.cdist(x.double(), c.double()).square()  # (N, K)
        best = exact.min(1).values
        chosen = exact.gather(1, idx[:, None]).squeeze(1)
        base = (x.float() @ c.float().t() * -2 + c.float().square().sum(1)).argmin(1)
        base_gap = (exact.gather(1, base[:, None]).squeeze(1) - best).abs().max().item()
        error, allowed = (chosen - best).abs().max().item(), 2 * base_gap + 1e-3 * max(1.0, best.max().item())
        if not math.isfinite(error) or error / allowed > worst[0] / worst[1]:
            worst = (error, allowed)
    return worst


def _check_vq_stats(v: Variant, device, big: bool):
    """A width the feature block does not divide and one divisible by 16 (64: also a looped row)."""
    from sslfast.ops.vq import vq_codebook_stats
    dtype, block_d = DTYPES[v.dtype], int(v.size[1:])
    n, k = (65537, 1031) if big else (257, 67)
    gen = torch.Generator().manual_seed(2)
    pairs = []
    for d in {16: (8, 16), 32: (24, 32), 64: (200, 64)}[block_d]:
        x = torch.randn(n, d, generator=gen).to(device, dtype)
        idx = torch.randint(0, k, (n,), generator=gen).to(device)
        counts, sums = vq_codebook_stats(x, idx, k, backend="triton")
        ones = torch.ones(n, dtype=torch.float64, device=device)
        ref_counts = torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, idx, ones)
        ref_sums = torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, idx, x.double())
        base_sums = torch.zeros(k, d, dtype=torch.float32, device=device).index_add_(0, idx, x.float())
        pairs += [(counts, ref_counts, ref_counts), (sums, base_sums, ref_sums)]
    return _compare(pairs, floor=1e-4)


def _check_cross_entropy(v: Variant, device, big: bool):
    from sslfast.ops.cross_entropy import cross_entropy
    dtype = DTYPES[v.dtype]
    n, vocab = (4099, 32771) if big else (37, 1031)
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(n, vocab, generator=gen) * 3).to(device, dtype)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[::3] = -100
    labels = labels.to(device)
    pairs = []
    for upstream in (1.0, 0.37):  # 1: the gradient is handed over untouched; else scaled in place on the device
        grad_out = torch.tensor(upstream, device=device)
        ours = _grads(lambda t: cross_entropy(t, labels, backend="triton", check_labels=upstream == 1.0), (logits,),
                      grad_out)
        ref = _grads(lambda t: torch.nn.functional.cross_entropy(t, labels), (logits.double(),), grad_out.double())
        base = _grads(lambda t: torch.nn.functional.cross_entropy(t.float(), labels), (logits,), grad_out)
        pairs += zip(ours, base, ref)
    return _compare(pairs, floor=1e-6)


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
    pairs = []
    # mean: 1/count applied inside the kernel; none: each row's upstream gradient applied inside the kernel
    for reduction, grad_out in (("mean", torch.tensor(1.0, device=device)),
                                ("none", torch.randn(n, generator=gen).to(device))):
        f = torch.nn.functional.cross_entropy
        ours = _grads(lambda a, b: linear_cross_entropy(a, b, labels, reduction=reduction, backend="triton"), (h, w),
                      grad_out)
        ref = _grads(lambda a, b: f(a @ b.t(), labels, reduction=reduction), (h.double(), w.double()),
                     grad_out.double())
        base = _grads(lambda a, b: f((a @ b.t()).float(), labels, reduction=reduction), (h, w), grad_out)
        pairs += zip(ours, base, ref)
    return _compare(pairs, floor=1e-5)


def _check_kvcache(v: Variant, device, big: bool):
    """Decode and multi-token appends with grouped heads, an empty row, and shapes that give one split of the
    cache and several (the split count is a compile-time constant too)."""
    dtype, d, causal = DTYPES[v.dtype], int(v.size[1:]), v.flags != "full"
    # (16-position cache: one split on any machine, every BLOCK_N being >= 16; 300 positions over two rows: several
    # splits whose partial results the combine kernel merges)
    shapes = [(8, 1, 16, 16, 2048)] if big else [(3, 2, 4, 2, 77), (2, 1, 2, 1, 300), (3, 1, 4, 2, 16)]
    pairs = []
    for i, (b, sq, h, hkv, cap) in enumerate(shapes):
        pairs += _kvcache_pairs(dtype, d, causal, b, sq, h, hkv, cap, torch.device(device), seed=5 + i)
    return _compare(pairs, floor=1e-4 if dtype != torch.float32 else 1e-5)


def _kvcache_pairs(dtype, d, causal, b, sq, h, hkv, cap, device, seed):
    from sslfast.ops.kv_attention import attention_with_kvcache, kvcache_attention_reference
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, cap - sq + 1, (b,), generator=gen, dtype=torch.int32)
    lengths[0] = 0
    kc, vc = (torch.randn(b, cap, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    q = torch.randn(b, sq, h, d, generator=gen).to(device, dtype)
    kn, vn = (torch.randn(b, sq, hkv, d, generator=gen).to(device, dtype) for _ in range(2))
    lengths = lengths.to(device)
    rows, cols = torch.arange(b, device=device)[:, None], lengths.long()[:, None] + torch.arange(sq, device=device)
    kf, vf = kc.clone(), vc.clone()
    kf[rows, cols], vf[rows, cols] = kn, vn
    out = attention_with_kvcache(q, kc, vc, lengths, kn, vn, causal=causal, backend="triton")
    ref = kvcache_attention_reference(q.double(), kf.double(), vf.double(), lengths + sq, causal=causal)
    base = kvcache_attention_reference(q, kf, vf, lengths + sq, causal=causal)
    return [(out, base, ref)]


CHECKS: dict[str, Callable] = {"attention": _check_attention, "vq_lookup": _check_vq_lookup,
                               "vq_codebook_stats": _check_vq_stats, "cross_entropy": _check_cross_entropy,
                               "linear_cross_entropy": _check_linear_cross_entropy,
                               "attention_with_kvcache": _check_kvcache}


def variants(ops: Optional[list] = None, *, auto_only: bool = False) -> list[Variant]:
    """The kernel variants (every op, dtype and block size; attention at the common head dims 64 and 128), or
    those of ``ops``. ``auto_only``: only those ``backend="auto"`` may run (fp32 attention goes to SDPA)."""
    out = []
    for dtype in ("bf16", "fp16", "fp32"):
        for d in (64, 128):  # the common head dims; any other is checked the first time it runs
            if not (auto_only and dtype == "fp32"):
                out += [Variant("attention", dtype, f"d{d}", flags)
                        for flags in ("full", "causal", "full+dropout", "causal+dropout")]
            out += [Variant("attention_with_kvcache", dtype, f"d{d}", flags) for flags in ("causal", "full")]
        for size in ("d16", "d32", "d64", "d128", "d64loop"):
            out.append(Variant("vq_lookup", dtype, size))
        out += [Variant("vq_codebook_stats", dtype, f"d{block}") for block in (16, 32, 64)]
        out += [Variant("cross_entropy", dtype), Variant("linear_cross_entropy", dtype)]
    return [v for v in out if ops is None or v.op in ops]


_CONTEXT_LOST: list = []  # the error after which this process's CUDA context is unusable (sticky errors)


def _record(v: Variant, big: bool, error: float, allowed: float, passed: bool, seconds: float,
            message: Optional[str], transient: bool) -> dict:
    return {"variant": v.key, "op": v.op, "dtype": v.dtype, "size": v.size, "flags": v.flags,
            "shapes": "realistic" if big else "small", "max_error": error, "allowed": allowed, "passed": passed,
            "seconds": round(seconds, 3), "error": message, "transient": transient}


def run_variant(v: Variant, device, big: bool = False) -> dict:
    """Run one check; a crash is a failure with its message (``transient`` when it says nothing about the
    kernel: out of memory, or a CUDA context an earlier check in this process had already broken)."""
    start = time.perf_counter()
    device_type = torch.device(device).type
    if _CONTEXT_LOST:
        return dict(_record(v, big, float("nan"), float("nan"), False, 0.0,
                            f"not run: an earlier check broke this process's CUDA context ({_CONTEXT_LOST[0]})"[:300],
                            True), not_run=True)
    if device_type == "cuda":
        torch.cuda.synchronize()  # a fault of the caller's earlier kernels surfaces here, not in this check
    transient = False
    try:
        # the check may first run inside the caller's no_grad / inference_mode / autocast (an eval loop): it
        # needs its own gradients and dtypes, or a sound kernel would be recorded as failed
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            error, allowed = CHECKS[v.op](v, torch.device(device), big)
            if device_type == "cuda":
                torch.cuda.synchronize()  # an asynchronous kernel fault surfaces here, in this variant's check
        passed, message = math.isfinite(error) and error <= allowed, None
    except Exception as exc:  # a kernel that does not compile, launch or finish fails its check
        error, allowed, passed, message = float("nan"), float("nan"), False, f"{type(exc).__name__}: {exc}"[:300]
        transient = isinstance(exc, torch.OutOfMemoryError)  # the machine's state, not the kernel's fault
        if device_type == "cuda":
            try:
                torch.cuda.synchronize()
            except Exception:  # a sticky error (illegal address...): later checks here cannot run
                _CONTEXT_LOST.append(message)
    return _record(v, big, error, allowed, passed, time.perf_counter() - start, message, transient)


def _run_variant_job(v: Variant, device: str, shapes: tuple) -> list[dict]:
    """A worker's entry point: every shape of one variant (its kernels compile once)."""
    return [run_variant(v, device, big) for big in shapes]


def _load_resumable(json_path: Optional[str], platform: str) -> list[dict]:
    """The records of an earlier run on this platform (same GPU, versions and kernel sources), without those
    that said nothing about their kernel."""
    if not (json_path and os.path.isfile(json_path)):
        return []
    try:
        with open(json_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if data.get("platform") != platform:
        return []
    return [r for r in data.get("records", []) if not r.get("transient")]


def selftest(device: str = "cuda", *, quick: bool = False, ops=None, dtypes=None, json_path: Optional[str] = None,
             resume: bool = False, jobs: int = 1, progress=print) -> list[dict]:
    """Check every variant ``auto`` may run (small shapes; realistic ones too unless ``quick``) of ``ops`` in
    ``dtypes`` (default: all), record the results in the validation cache, write them to ``json_path`` as they
    come. ``resume`` keeps the records already in ``json_path`` (same platform) and checks only the rest.
    ``jobs`` > 1 runs the variants in that many worker processes (Triton compiles on one core per process).
    Returns the records."""
    from sslfast.ops import _validation
    platform = _validation.platform_key(torch.device(device))
    records = _load_resumable(json_path, platform) if resume else []
    done = {(r["variant"], r["shapes"]) for r in records}
    todo = []
    for v in variants(ops, auto_only=True):
        shapes = tuple(big for big in ((False,) if quick else (False, True))
                       if (v.key, "realistic" if big else "small") not in done)
        if (not dtypes or v.dtype in dtypes) and shapes:
            todo.append((v, shapes))

    def verdict(v: Variant) -> None:  # every shape of the variant is in: its verdict goes to the validation cache
        results = [r for r in records if r["variant"] == v.key]
        failed = [r for r in results if not r["passed"]]
        conclusive_failure = next((r for r in failed if not r.get("transient")), None)
        shown = conclusive_failure or (failed[0] if failed else results[-1])
        _validation.remember(v.key, not failed, torch.device(device),
                             dict(shown, transient=bool(failed) and conclusive_failure is None))

    for v in variants(ops, auto_only=True):  # resumed variants whose shapes are all done
        if (not dtypes or v.dtype in dtypes) and v not in {t for t, _ in todo} and \
                any(r["variant"] == v.key for r in records):
            verdict(v)

    def finished(v: Variant, new: list) -> None:
        records.extend(new)
        for record in new:
            progress(f"{'ok  ' if record['passed'] else 'FAIL'} {record['variant']:<44} {record['shapes']:<9} "
                     f"error {record['max_error']:.2e} (allowed {record['allowed']:.2e}) {record['seconds']:.2f}s"
                     + (f"  {record['error']}" if record["error"] else ""))
        if json_path:  # atomically: a run killed mid-write keeps the previous file
            atomic_write_text(json_path, json.dumps({"platform": platform, "records": records}, indent=1,
                                                    default=str))
        verdict(v)

    if jobs <= 1:
        for v, shapes in todo:
            finished(v, _run_variant_job(v, device, shapes))
        return records
    import concurrent.futures
    import multiprocessing
    for attempt in range(3):  # a worker whose CUDA context broke answers "not run" to every later job: those
        retry = []            # jobs go to a fresh pool
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_variant_job, v, device, shapes): (v, shapes) for v, shapes in todo}
            for future in concurrent.futures.as_completed(futures):
                v, shapes = futures[future]
                try:
                    new = future.result()
                except Exception as exc:  # the worker died (a crash takes the pool with it): no verdict
                    new = [dict(_record(v, big, float("nan"), float("nan"), False, 0.0,
                                        f"worker process: {type(exc).__name__}: {exc}"[:300], True), not_run=True)
                           for big in shapes]
                if attempt < 2 and any(r.get("not_run") for r in new):
                    retry.append((v, shapes))
                else:
                    finished(v, new)
        todo = retry
        if not todo:
            break
    return records


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="sslfast selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--ops", nargs="+", choices=sorted(CHECKS), help="only these ops")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="only these dtypes")
    parser.add_argument("--json", metavar="PATH", help="write the records here (rewritten after each)")
    parser.add_argument("--resume", action="store_true", help="keep the records already in --json, check the rest")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    from sslfast.ops._dispatch import triton_interpreted
    if args.device == "cuda" and not torch.cuda.is_available():
        print("sslfast selftest: no CUDA device (use --device cpu with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    if args.device == "cpu" and not triton_interpreted():
        print("sslfast selftest: --device cpu runs the kernels through the interpreter: set TRITON_INTERPRET=1",
              file=sys.stderr)
        return 2
    records = selftest(args.device, quick=args.quick or args.device == "cpu", ops=args.ops, dtypes=args.dtypes,
                       json_path=args.json, resume=args.resume, jobs=args.jobs)
    failed = [r["variant"] for r in records if not r["passed"]]
    print(f"sslfast selftest: {len(records) - len(failed)}/{len(records)} passed" +
          (f"; failed: {', '.join(sorted(set(failed)))}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
