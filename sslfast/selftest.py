"""Kernel self-checks: every Triton kernel variant against a float64 PyTorch reference on the machine at hand.

A generic runner over the op registry (:mod:`sslfast.ops._registry`): each op's package registers its variants
(op, dtype, size, flags: what ``auto`` looks up before it runs a kernel) and its check, which covers every
kernel the variant's calls can compile (with and without a key mask, packed, both backward paths). Each check runs the
kernel explicitly (``backend="triton"``) on fresh random inputs with odd sizes, padding holes and empty rows,
forward and (where there is one) backward, and passes when its error against float64 is within twice the
same-dtype PyTorch error (plus a small floor). ``python -m sslfast selftest`` runs them all (small and, without
``--quick``, realistic shapes), prints a table and records the results in the validation cache that ``auto``
consults before it runs a kernel on a GPU (:mod:`sslfast.ops._kernel_verdicts`).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import torch

import sslfast.ops  # noqa: F401  (importing the ops registers their specs and checks)
from sslfast._atomic import atomic_write_text
from sslfast._dtypes import DTYPES
from sslfast.ops import _kernel_verdicts
from sslfast.ops._dispatch import triton_interpreted
from sslfast.ops._kernel_verdicts import _record, op_source_hash, run_variant
from sslfast.ops._registry import Variant, specs

__all__ = ["Variant", "variants", "run_variant", "selftest", "main"]


def variants(ops: Optional[list] = None, *, auto_only: bool = False) -> list[Variant]:
    """The kernel variants of every registered op (:mod:`sslfast.ops._registry`), or of ``ops``. ``auto_only``:
    only those ``backend="auto"`` may run (fp32 attention goes to SDPA)."""
    return [v for op_spec in specs(ops) for v in op_spec.variants(auto_only)]


def _run_variant_job(v: Variant, device: str, shapes: tuple) -> list[dict]:
    """A worker's entry point: every shape of one variant (its kernels compile once)."""
    return [run_variant(v, device, big) for big in shapes]


def _load_resumable(json_path: Optional[str], platform: str) -> list[dict]:
    """The records of an earlier run on this platform (same GPU and versions) for their op's current kernel
    sources, without those that said nothing about their kernel."""
    if not (json_path and os.path.isfile(json_path)):
        return []
    try:
        with open(json_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if data.get("platform") != platform:
        return []
    known_ops = {s.name for s in specs()}
    return [r for r in data.get("records", []) if not r.get("transient") and r.get("op") in known_ops
            and r.get("source") == op_source_hash(r["op"])]  # a record of since-edited kernels is checked again


def selftest(device: str = "cuda", *, quick: bool = False, ops=None, dtypes=None, json_path: Optional[str] = None,
             resume: bool = False, jobs: int = 1, progress=print) -> list[dict]:
    """Check every variant ``auto`` may run (small shapes; realistic ones too unless ``quick``) of ``ops`` in
    ``dtypes`` (default: all), record the results in the validation cache, write them to ``json_path`` as they
    come. ``resume`` keeps the records already in ``json_path`` (same platform) and checks only the rest.
    ``jobs`` > 1 runs the variants in that many worker processes (Triton compiles on one core per process).
    Returns the records."""
    platform = _kernel_verdicts.platform_key(torch.device(device))
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
        _kernel_verdicts.remember(v.key, not failed, torch.device(device),
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
    parser.add_argument("--ops", nargs="+", choices=sorted(s.name for s in specs()), help="only these ops")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="only these dtypes")
    parser.add_argument("--json", metavar="PATH", help="write the records here (rewritten after each)")
    parser.add_argument("--resume", action="store_true", help="keep the records already in --json, check the rest")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
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
