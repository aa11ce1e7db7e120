"""Runs cases: correctness check, interleaved timing, peak memory; one record per case."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sslfast.bench.case import Case
from sslfast.bench.memory import cpu_extra_peak_mb, cuda_extra_peak_mb
from sslfast.bench.timing import time_interleaved


def run_case(case: Case, *, device: str, quick: bool, repeats: int, warmup: int, memory: bool,
             max_seconds: float | None = None) -> dict:
    inputs = case.make_inputs()
    base_out = case.baseline(*inputs)
    ours_out = case.candidate(*inputs)
    verdict = case.judge(inputs, base_out, ours_out)
    del base_out, ours_out
    steps = {"baseline": lambda: case.baseline(*inputs), "sslfast": lambda: case.candidate(*inputs)}
    probe = case.extra.get("probe")  # (name, fn, calls): a machine limit timed in the same interleaved rounds
    if probe is not None:
        steps["probe"] = probe[1]
    first = case.extra.get("first_call")  # (baseline, sslfast): the same call cut to its first step (a prefill)
    if first is not None:
        steps["baseline_first"] = lambda: first[0](*inputs)
        steps["sslfast_first"] = lambda: first[1](*inputs)
    times = time_interleaved(steps, device=device, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    record = {
        "op": case.op, "case": case.case, "device": device, "dtype": case.dtype,
        "baseline": case.baseline_name, "baseline_ms": times["baseline"], "sslfast_ms": times["sslfast"],
        "speedup": times["baseline"] / times["sslfast"], **verdict,
        "baseline_peak_mb": None, "sslfast_peak_mb": None, "memory_ratio": None,
    }
    if probe is not None:  # e.g. decoding against the time to read the weights it streams
        name, _, calls = probe
        record.update(probe=name, probe_ms=times["probe"], bound_ratio=times["sslfast"] / (calls * times["probe"]),
                      baseline_bound_ratio=times["baseline"] / (calls * times["probe"]))
        if first is not None and calls > 1:  # each later step alone: what is left once the first step is paid
            record.update(step_ratio=(times["sslfast"] - times["sslfast_first"]) / ((calls - 1) * times["probe"]),
                          baseline_step_ratio=(times["baseline"] - times["baseline_first"])
                          / ((calls - 1) * times["probe"]),
                          sslfast_first_ms=times["sslfast_first"], baseline_first_ms=times["baseline_first"])
    items = case.extra.get("items")  # (name, count): throughput, e.g. candidates scored per second
    if items is not None:
        name, count = items
        record.update(items=name, baseline_items_per_s=count / times["baseline"] * 1e3,
                      sslfast_items_per_s=count / times["sslfast"] * 1e3)
    if case.flops is not None and device == "cuda":
        record["baseline_tflops"] = case.flops / times["baseline"] / 1e9
        record["sslfast_tflops"] = case.flops / times["sslfast"] / 1e9
    if memory:
        if device == "cuda":
            base_mb = cuda_extra_peak_mb(case.baseline, inputs)
            ours_mb = cuda_extra_peak_mb(case.candidate, inputs)
        else:  # two subprocesses at once: each measures its own peak RSS, and nothing is timed meanwhile
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(2) as pool:
                base, ours = (pool.submit(cpu_extra_peak_mb, case.op, case.case, impl, quick)
                              for impl in ("baseline", "sslfast"))
                base_mb, ours_mb = base.result(), ours.result()
        record.update(baseline_peak_mb=base_mb, sslfast_peak_mb=ours_mb,
                      memory_ratio=ours_mb / base_mb if base_mb > 0 else None)
    return record


def run_cases(cases: list[Case], *, device: str = "cpu", quick: bool = False, repeats: int = 10,
              warmup: int = 2, memory: bool = True, max_seconds: float | None = None,
              progress: bool = True, on_record=None) -> list[dict]:
    """Run every case; ``on_record(records)`` after each one (the CLI rewrites its JSON there, so a run cut
    short keeps what it measured)."""
    records = []
    bar = tqdm(cases, desc="sslfast bench", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.key[:60])
        try:
            records.append(run_case(case, device=device, quick=quick, repeats=repeats, warmup=warmup,
                                    memory=memory, max_seconds=max_seconds))
        except Exception as exc:  # a failing case is a failed row, not a crashed report
            records.append({"op": case.op, "case": case.case, "device": device, "dtype": case.dtype,
                            "baseline": case.baseline_name, "baseline_ms": None, "sslfast_ms": None,
                            "speedup": None, "baseline_peak_mb": None, "sslfast_peak_mb": None,
                            "memory_ratio": None, "correct": False, "error": f"{type(exc).__name__}: {exc}"})
        if on_record is not None:
            on_record(records)
        if device == "cuda":
            torch.cuda.empty_cache()
    return records
