"""Kernel self-checks and the validation cache that gates ``backend="auto"`` on a GPU."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import sslfast
from sslfast.ops import _kernel_verdicts as _validation
from sslfast.ops import _registry
from sslfast.ops._dispatch import triton_interpreted
from sslfast.selftest import Variant, run_variant, variants
from tests.helpers import REPO


def replace_check(monkeypatch, op, check):
    """Register ``op`` with ``check`` in place of its real self-check, for this test."""
    import dataclasses
    monkeypatch.setitem(_registry._SPECS, op, dataclasses.replace(_registry.spec(op), check=check))


needs_interpreter = pytest.mark.skipif(not (sslfast.available_backends()["triton"] and triton_interpreted()),
                                       reason="needs Triton's interpreter (TRITON_INTERPRET=1)")


@needs_interpreter
@pytest.mark.parametrize("variant", [Variant("cross_entropy", "fp32"), Variant("linear_cross_entropy", "fp16"),
                                     Variant("vq_lookup", "fp32", "d64"), Variant("vq_codebook_stats", "bf16", "d32"),
                                     Variant("vq_codebook_stats", "fp32", "d64"),
                                     Variant("attention_with_kvcache", "fp32", "d64", "causal"),
                                     Variant("attention_with_kvcache", "fp16", "d40", "full"),
                                     Variant("attention", "fp32", "d64", "causal+dropout"),
                                     Variant("attention", "fp16", "d40", "causal")],
                         ids=lambda v: v.key)
def test_checks_pass_on_the_interpreted_kernels(variant):
    record = run_variant(variant, "cpu")
    assert record["passed"], record
    assert 0 <= record["max_error"] <= record["allowed"]


@needs_interpreter
def test_a_check_first_reached_inside_no_grad_inference_mode_or_autocast_still_passes():
    # an eval loop is where a variant is often first used: its check needs its own gradients and dtypes
    for context in (torch.no_grad, torch.inference_mode, lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
        with context():
            for variant in (Variant("cross_entropy", "fp32"), Variant("linear_cross_entropy", "fp32")):
                record = run_variant(variant, "cpu")
                assert record["passed"], (context, record)


def test_a_wrong_result_fails_its_check(monkeypatch):
    def broken(v, device, big):
        return 1.0, 1e-3  # error beyond what is allowed
    replace_check(monkeypatch, "cross_entropy", broken)
    assert not run_variant(Variant("cross_entropy", "fp32"), "cpu")["passed"]

    def crashes(v, device, big):
        raise RuntimeError("out of resources")
    replace_check(monkeypatch, "cross_entropy", crashes)
    record = run_variant(Variant("cross_entropy", "fp32"), "cpu")
    assert not record["passed"] and "out of resources" in record["error"]


def test_validation_cache_runs_each_check_once_and_warns_once_for_a_failed_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))
    monkeypatch.setattr(_validation, "_results", {})
    monkeypatch.setattr(_validation, "_warned", set())
    calls = []

    def check(variant, device):
        calls.append(variant.key)
        return {"passed": variant.dtype == "fp32", "max_error": 0.5, "allowed": 0.01, "error": None}
    device = torch.device("cpu")
    assert _validation.kernel_allowed("cross_entropy", device, dtype=torch.float32, check=check)
    with pytest.warns(UserWarning, match="cross_entropy/bf16: it failed its self-check.*PyTorch path"):
        assert not _validation.kernel_allowed("cross_entropy", device, dtype=torch.bfloat16, check=check)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: no check, no warning
        assert not _validation.kernel_allowed("cross_entropy", device, dtype=torch.bfloat16, check=check)
    assert calls == ["cross_entropy/fp32", "cross_entropy/bf16"]
    stored = json.loads(open(_validation.cache_file(device)).read())
    assert stored["cross_entropy/fp32"]["passed"] and not stored["cross_entropy/bf16"]["passed"]
    monkeypatch.setattr(_validation, "_results", {})  # a new process reads the file instead of checking again
    assert _validation.kernel_allowed("cross_entropy", device, dtype=torch.float32, check=check)
    assert calls == ["cross_entropy/fp32", "cross_entropy/bf16"]
    monkeypatch.setenv("SSLFAST_VALIDATE_KERNELS", "0")
    assert _validation.kernel_allowed("cross_entropy", device, dtype=torch.bfloat16, check=check)
    key = _validation.platform_key(device)
    assert "torch" in key and "triton" in key
    # a verdict holds for the op's kernel sources it was recorded with: another source means a new check
    monkeypatch.setenv("SSLFAST_VALIDATE_KERNELS", "1")
    assert stored["cross_entropy/fp32"]["source"] == _validation.op_source_hash("cross_entropy")
    stored["cross_entropy/fp32"]["source"] = "another-kernel"
    open(_validation.cache_file(device), "w").write(json.dumps(stored))
    monkeypatch.setattr(_validation, "_results", {})
    assert _validation.kernel_allowed("cross_entropy", device, dtype=torch.float32, check=check)
    assert calls == ["cross_entropy/fp32", "cross_entropy/bf16", "cross_entropy/fp32"]


def test_a_check_that_could_not_run_is_not_cached_on_disk(tmp_path, monkeypatch):
    """Out of memory says nothing about the kernel: the next process checks the variant again."""
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))
    monkeypatch.setattr(_validation, "_results", {})
    monkeypatch.setattr(_validation, "_warned", set())

    def out_of_memory(v, device, big):
        raise torch.OutOfMemoryError("CUDA out of memory")
    replace_check(monkeypatch, "cross_entropy", out_of_memory)
    device = torch.device("cpu")
    with pytest.warns(UserWarning, match="out of memory"):
        assert not _validation.kernel_allowed("cross_entropy", device, dtype=torch.float32,
                                              check=lambda v, d: run_variant(v, d))
    assert not os.path.exists(_validation.cache_file(device))
    monkeypatch.setattr(_validation, "_results", {})  # a new process
    assert _validation.kernel_allowed("cross_entropy", device, dtype=torch.float32,
                                      check=lambda v, d: {"passed": True, "error": None})


def test_the_decision_is_made_once_while_compiling_without_a_graph_break(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))
    monkeypatch.setattr(_validation, "_results", {})
    calls = []

    def check(variant, device):
        calls.append(variant.key)
        return {"passed": True, "error": None}

    def fn(x):
        if _validation.kernel_allowed("cross_entropy", x.device, dtype=x.dtype, check=check):
            return x + 1
        return x - 1
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(torch.zeros(3)), torch.ones(3))
    assert torch.equal(compiled(torch.zeros(3)), torch.ones(3))
    assert calls == ["cross_entropy/fp32"]


def test_every_op_with_a_kernel_has_variants():
    ops = {v.op for v in variants()}
    assert ops == {"attention", "attention_with_kvcache", "vq_lookup", "vq_codebook_stats", "cross_entropy",
                   "linear_cross_entropy"}


@needs_interpreter
def test_selftest_command_writes_its_table_and_json(tmp_path):
    out = tmp_path / "selftest.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "SSLFAST_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "sslfast", "selftest", "--device", "cpu", "--ops", "vq_codebook_stats",
                           "--json", str(out), "--jobs", "2"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert "9/9 passed" in proc.stdout
    records = json.loads(out.read_text())["records"]
    assert sorted((r["dtype"], r["size"]) for r in records) == [(t, f"d{b}") for t in ("bf16", "fp16", "fp32")
                                                                 for b in (16, 32, 64)]  # two workers: any order
    assert all(r["passed"] for r in records)
    cached = json.loads(next((tmp_path / "cache" / "selftest").glob("*.json")).read_text())
    assert len(cached) == 9 and all(r["passed"] for r in cached.values())
    proc = subprocess.run([sys.executable, "-m", "sslfast", "selftest", "--device", "cpu"], cwd=REPO,
                          env={**env, "TRITON_INTERPRET": "0"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "TRITON_INTERPRET=1" in proc.stderr


def test_codebook_statistics_refuse_indices_outside_the_codebook():
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\)"):
        sslfast.ops.vq_codebook_stats(x, torch.tensor([0, 1, 2, 3, 0, 1]), 3)
    counts, _ = sslfast.ops.vq_codebook_stats(x, torch.tensor([0, 1, 2, 2, 0, 1]), 3)
    assert counts.tolist() == [2.0, 2.0, 2.0]


def _add_entries(path, worker, start):
    start.wait(60)  # every process writes at the same time
    for j in range(100):
        _validation._merge_into_file(path, {f"variant-{worker}-{j}": {"passed": True}})


def test_processes_recording_at_once_keep_each_others_results(tmp_path):
    """pytest -n 8 workers and selftest --jobs record into one cache file: none may overwrite another's entries."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    path = str(tmp_path / "selftest" / "platform.json")
    workers = [context.Process(target=_add_entries, args=(path, w, start)) for w in range(4)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(600)  # four spawned interpreters importing torch: slow on a loaded machine, never hung
    assert all(p.exitcode == 0 for p in workers)
    assert len(json.loads(open(path).read())) == 400


@needs_interpreter
def test_resume_keeps_only_this_platforms_conclusive_records(tmp_path, monkeypatch):
    from sslfast.selftest import selftest
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_validation, "_results", {})
    out = tmp_path / "selftest.json"
    checked = []
    kw = dict(ops=["vq_codebook_stats"], dtypes=["fp32"], quick=True, json_path=str(out), resume=True,
              progress=checked.append)
    first = selftest("cpu", **kw)
    assert len(first) == 3 and all(r["passed"] for r in first) and len(checked) == 3
    data = json.loads(out.read_text())
    data["records"][0]["transient"] = True  # said nothing about its kernel: checked again
    out.write_text(json.dumps(data))
    again = selftest("cpu", **kw)
    assert len(again) == 3 and len(checked) == 4 and again[-1]["variant"] == first[0]["variant"]
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path / "fresh-cache"))  # nothing to rerun: the verdicts still
    monkeypatch.setattr(_validation, "_results", {})                      # reach the validation cache
    assert len(selftest("cpu", **kw)) == 3 and len(checked) == 4
    assert len(json.loads(open(_validation.cache_file(torch.device("cpu"))).read())) == 3
    data["platform"] = "another-gpu"  # another platform's results are not resumed
    out.write_text(json.dumps(data))
    assert len(selftest("cpu", **kw)) == 3 and len(checked) == 7
    data = json.loads(out.read_text())
    data["records"][1]["source"] = "edited-kernel"  # recorded for other kernel sources: checked again
    out.write_text(json.dumps(data))
    assert len(selftest("cpu", **kw)) == 3 and len(checked) == 8
