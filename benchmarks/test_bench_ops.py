"""pytest-benchmark over the same cases as ``sslfast bench`` (kept out of the normal test run).

Run: ``pytest benchmarks/ --benchmark-only`` (quick shapes; ``SSLFAST_BENCH_FULL=1`` for the full ones).
Each case gives two benchmarks, ``baseline`` and ``sslfast``, grouped by case so pytest-benchmark's table
shows their ratio.
"""
import os

import pytest
import torch

from sslfast.bench.registry import OPS, collect_cases, unavailable_reason

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = os.environ.get("SSLFAST_BENCH_FULL", "0") != "1"
OPS_HERE = [op for op in OPS if unavailable_reason(op) is None]
CASES = collect_cases(OPS_HERE, quick=QUICK, device=DEVICE)
_ERRORS: dict = {}  # case key -> verdict (Case.judge), measured before either side of the case is timed


@pytest.mark.parametrize("impl", ["baseline", "sslfast"])
@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_case(benchmark, case, impl):
    if case.key not in _ERRORS:  # compared first: some cases are stateful (a VQ module's EMA codebook), and
        # timing one side would move its state away from the other's
        inputs = case.make_inputs()
        _ERRORS[case.key] = case.judge(inputs, case.baseline(*case.make_inputs()), case.candidate(*case.make_inputs()))
    inputs = case.make_inputs()
    fn = case.baseline if impl == "baseline" else case.candidate
    benchmark.group = f"{case.key} [{DEVICE}]"
    if impl == "sslfast":  # a wrong kernel fails here, before it is timed
        verdict = _ERRORS[case.key]
        assert verdict["correct"], f"beyond the tolerance: {verdict['why']}"

    def step():
        out = fn(*inputs)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.pedantic(step, warmup_rounds=2, rounds=7, iterations=1)
