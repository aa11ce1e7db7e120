"""Subprocess side of the CPU peak-memory measurement (see ``sslfast.bench.memory``)."""
from __future__ import annotations

import argparse
import json
import resource

import torch

from sslfast.bench.registry import collect_cases


def _probe(op: str, case: str, impl: str, quick: bool) -> float:
    matches = [c for c in collect_cases([op], quick=quick, device="cpu") if c.case == case]
    if not matches:
        raise SystemExit(f"no case {op}/{case}")
    c = matches[0]
    inputs = c.make_inputs()
    torch.ones(64, 64) @ torch.ones(64, 64)  # start torch's thread pool before the measurement
    fn = c.baseline if impl == "baseline" else c.candidate
    fn(*inputs)  # warm-up: one-time allocations are not the step's
    for t in inputs:  # gradients the warm-up left on the inputs are part of the step's own memory
        if isinstance(t, torch.Tensor) and t.grad is not None:
            t.grad = None
    if _reset_high_water_mark():
        before = _status_kib("VmRSS")
        fn(*inputs)
        return (_status_kib("VmHWM") - before) / 1024.0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(*inputs)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0  # KiB on Linux


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="measure one case's extra peak RSS (internal)")
    parser.add_argument("--op", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--impl", choices=["baseline", "sslfast"], required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps({"extra_peak_mb": _probe(args.op, args.case, args.impl, args.quick)}))


if __name__ == "__main__":
    main()
