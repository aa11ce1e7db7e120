"""The benchmark harness reports honestly: a slow op is slower, a wrong op is wrong, the JSON is complete."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from sslfast.bench import Case, run_cases
from sslfast.bench.environment import environment
from sslfast.bench.memory import cpu_extra_peak_mb
from sslfast.bench.report import plot, to_markdown, write_json
from sslfast.bench.results import build
from sslfast.bench.timing import time_interleaved
from tests.helpers import REPO


def _case(candidate, *, error=lambda a, b: (a - b).abs().max().item()):
    return Case(op="fake", case="x=64", dtype="fp32", baseline_name="torch.sin",
                make_inputs=lambda: (torch.randn(64),), baseline=lambda x: torch.sin(x),
                candidate=candidate, error=error, tolerance=1e-6)


def test_interleaved_timing_orders_fast_and_slow():
    times = time_interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.01)}, warmup=1, repeats=5)
    assert times["slow"] > 9.0 and times["fast"] < times["slow"] / 5  # no bound on a busy machine's wake-ups


def test_a_slow_op_is_reported_slower():
    def slow_sin(x):
        time.sleep(0.005)
        return torch.sin(x)
    (record,) = run_cases([_case(slow_sin)], repeats=5, memory=False, progress=False)
    assert record["correct"] is True
    assert record["speedup"] < 0.5 and record["sslfast_ms"] > record["baseline_ms"]


def test_a_wrong_op_is_reported_incorrect():
    (record,) = run_cases([_case(lambda x: torch.cos(x))], repeats=3, memory=False, progress=False)
    assert record["correct"] is False and record["max_error"] > 1e-3
    assert record["reference"] == "float64" and "exceeds the tolerance" in record["why"]


def test_rows_are_judged_against_float64_with_the_baselines_own_error():
    # a baseline as wrong as the candidate does not make the candidate right, and an fp32 candidate within
    # twice the fp32 baseline's own float64 error passes even where the two fp32 results disagree
    rounded = _case(lambda x: torch.sin(x.half()).float())  # ~1e-3 error; the fp32 baseline ~1e-8
    (record,) = run_cases([rounded], repeats=3, memory=False, progress=False)
    assert record["correct"] is False and record["baseline_error"] < 1e-6 < record["max_error"]
    noisy_baseline = Case(op="fake", case="x=64", dtype="fp32", baseline_name="sin in fp16",
                          make_inputs=lambda: (torch.randn(64),), baseline=lambda x: torch.sin(x.half()).float(),
                          candidate=lambda x: torch.sin(x), error=lambda a, b: (a - b).abs().max().item(),
                          tolerance=1e-7, reference=lambda x: torch.sin(x.double()))
    (record,) = run_cases([noisy_baseline], repeats=3, memory=False, progress=False)
    assert record["correct"] is True and record["max_error"] < 1e-6 < record["baseline_error"]


def test_vq_rows_judge_chosen_codes_by_float64_distances():
    # an index output is judged by how much farther (in float64) its chosen code is than the nearest one,
    # relative to the row's scale: exact ties cost nothing, a wrong code costs its whole excess distance
    from sslfast.bench.cases.vq import NearestCode
    from sslfast.ops import vq_lookup
    g = torch.Generator().manual_seed(0)
    codebook, x = torch.randn(512, 16, generator=g), torch.randn(4096, 16, generator=g)
    x[:8] = codebook[:8]  # exact hits
    fp32_matmul_form = torch.cdist(x, codebook).argmin(-1)  # the baseline a row's tolerance comes from
    nearest = NearestCode()
    truth = nearest.reference(x, codebook)
    ours = nearest.error(truth, vq_lookup(x, codebook))
    off_by_one = nearest.error(truth, (vq_lookup(x, codebook)[0] + 1) % 512)
    allowed = 2 * nearest.error(truth, fp32_matmul_form) + 1e-6  # Case.judge's rule
    assert ours <= allowed < off_by_one


def test_a_crashing_op_is_a_failed_row():
    def broken(x):
        raise RuntimeError("kaput")
    (record,) = run_cases([_case(broken)], repeats=3, memory=False, progress=False)
    assert record["correct"] is False and "kaput" in record["error"]


def test_json_markdown_plot_and_results_page(tmp_path):
    records = run_cases([_case(lambda x: torch.sin(x))], repeats=3, memory=False, progress=False)
    env = environment("cpu", ["sslfast", "bench", "--test"])
    path = tmp_path / "results" / "cpu-test.json"
    write_json(str(path), records, env)
    data = json.loads(path.read_text())
    for key in ("op", "case", "device", "dtype", "baseline", "baseline_ms", "sslfast_ms", "speedup",
                "baseline_peak_mb", "sslfast_peak_mb", "memory_ratio", "correct"):
        assert key in data["records"][0], key
    for key in ("device", "device_name", "torch", "triton", "date", "git_commit", "command", "cpu_model"):
        assert key in data["environment"], key
    assert data["environment"]["command"] == "sslfast bench --test"
    from sslfast.ops._kernel_verdicts import op_source_hash
    from sslfast.ops._registry import specs
    sources = data["environment"]["kernel_sources"]  # ties the file to the kernel sources it measured
    assert set(sources) == {op.name for op in specs()} and len(sources) >= 4
    assert all(sources[name] == op_source_hash(name) and len(sources[name]) == 12 for name in sources)
    assert "| fake | x=64 |" in to_markdown(records, env)
    plot(str(tmp_path / "p.png"), records, env)
    assert (tmp_path / "p.png").stat().st_size > 1000
    tune = {"environment": {"device": "NVIDIA H100"}, "records": [{"kind": "fwd", "config": [128, 64, 8, 3]}]}
    (tmp_path / "results" / "gpu-tune.json").write_text(json.dumps(tune))  # a tuner file is not a bench run
    (tmp_path / "results" / "gpu-selftest.json").write_text(json.dumps({"platform": "x", "records": []}))
    page = build(str(tmp_path / "results"))
    assert "cpu-test.json" in page and "No GPU run" in page
    assert "gpu-tune.json" not in page and "gpu-selftest.json" not in page


def test_cpu_peak_memory_sees_the_materialized_distance_matrix():
    case = "N=8192 K=512 D=64 fp32"  # cdist materializes 8192x512 fp32 = 16 MiB
    base = cpu_extra_peak_mb("vq", case, "baseline", quick=True)
    ours = cpu_extra_peak_mb("vq", case, "sslfast", quick=True)
    assert base > 12.0, base
    # ours: the (N,) outputs plus one 256 KiB scratch tile per thread of the C++ kernel, whatever the core count
    threads = os.cpu_count() or 1
    assert ours < 8192 * 12 / 2**20 + threads * 0.25 + 1.0 and ours < base / 3, (ours, base, threads)


def test_cli_quick_run_writes_its_files(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "sslfast", "bench", "--ops", "vq", "--quick", "--no-memory",
                           "--repeats", "3", "--json", str(out), "--markdown", str(tmp_path / "b.md")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["records"] and all(r["op"] == "vq" and r["correct"] for r in data["records"])
    rows = len(data["records"])  # cdist+argmin, and FAISS where installed
    assert "bench --ops vq" in data["environment"]["command"]
    # --resume keeps the rows already measured and runs only the missing ones (here: none)
    data["records"][0]["baseline_ms"] = 123456.0
    out.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "sslfast", "bench", "--ops", "vq", "--quick", "--no-memory",
                           "--json", str(out), "--resume"], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0 and f"{rows} of {rows} cases already there" in proc.stdout, \
        proc.stdout + proc.stderr[-2000:]
    assert json.loads(out.read_text())["records"][0]["baseline_ms"] == 123456.0
    out.write_text("not json")
    proc = subprocess.run([sys.executable, "-m", "sslfast", "bench", "--ops", "vq", "--quick", "--json", str(out),
                           "--resume"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0 and "is not a bench JSON" in proc.stderr


def test_bench_ops_are_found_from_the_case_files():
    """`--ops` names are a CLI contract: every one stays, each served by the case file that claims it."""
    import importlib

    from sslfast.bench.registry import OPS
    assert set(OPS) >= {"vq", "vq_module", "vqvae", "linear_cross_entropy", "cross_entropy", "attention",
                        "varlen_attention", "bert", "roberta", "gpt2", "peft", "pretrain", "sentence_transformers",
                        "fewshot"}
    for op, module in OPS.items():
        assert op in importlib.import_module(f"sslfast.bench.cases.{module}").BENCH_OPS


def test_cli_rejects_unknown_op():
    proc = subprocess.run([sys.executable, "-m", "sslfast", "bench", "--ops", "nope"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("kind", ["padded fwd+bwd", "varlen fwd+bwd"])
def test_attention_gradient_rows_compare_the_same_upstream_gradient(kind):
    # a padded batch's fwd+bwd row (and the packed varlen one against it) must agree within the row's
    # tolerance: same upstream gradient at real query rows, none at padding rows
    from sslfast.bench.cases import attention as cases
    mask = cases._mask(3, 24, "cpu", seed=2, low=3)
    if kind == "varlen fwd+bwd":
        case = cases._varlen_case(3, 2, 24, 16, "fp32", "cpu", mask, backend="torch", tol=1e-4, grad=True)
    else:
        case = next(c for c in cases._cpu_cases(True, "cpu") if c.case.startswith("fwd+bwd"))
    inputs = case.make_inputs()
    base, ours = case.baseline(*inputs), case.candidate(*inputs)
    assert len(base) == len(ours) == 4  # the output and three input gradients
    assert 0 < max(float(g.abs().max()) for g in ours[1:])  # the gradients are there to compare
    verdict = case.judge(inputs, base, ours)
    assert verdict["correct"] and verdict["reference"] == "float64", verdict


def test_pytest_benchmark_suite_runs_stateful_cases(tmp_path):
    # the VQ module case updates its EMA codebooks on every call: the suite compares both sides before timing
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_bench_ops.py", "-k", "vq_module or vq/",
                           "-q", "--benchmark-disable", "-p", "no:cacheprovider"], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_pytest_benchmark_suite_fails_a_wrong_kernel(tmp_path):
    """A plugin swaps the VQ lookup for one that returns the next code: the sslfast rows must fail, untimed."""
    (tmp_path / "wrong_vq_kernel.py").write_text(
        "import sslfast.bench.cases.vq as cases\n"
        "real = cases.vq_lookup\n"
        "def wrong(x, c, **kw):\n"
        "    idx, dist = real(x, c, **kw)\n"
        "    return (idx + 1) % c.shape[0], dist\n"
        "cases.vq_lookup = wrong\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), REPO] + env.get("PYTHONPATH", "").split(os.pathsep))
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_bench_ops.py", "-p", "wrong_vq_kernel",
                           "-k", "vq/ and not FAISS", "-q", "--benchmark-disable", "-p", "no:cacheprovider"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "beyond the tolerance" in proc.stdout and "failed" in proc.stdout, proc.stdout[-3000:]


def test_vq_lookup_rows_include_faiss_and_agree_with_it():
    pytest.importorskip("faiss")
    from sslfast.bench.cases import vq
    case = next(c for c in vq.cases(True, "cpu") if c.baseline_name == "FAISS IndexFlatL2")
    inputs = case.make_inputs()
    assert case.judge(inputs, case.baseline(*inputs), case.candidate(*inputs))["correct"]


def test_readme_tables_are_generated_from_their_results_files():
    # a figure table in the README is what `python -m sslfast.bench.results` writes from the named file
    from sslfast.bench.results import _BLOCK, fill_tables
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert _BLOCK.search(readme), "the README has no generated bench table"
    assert fill_tables(readme, os.path.join(REPO, "benchmarks", "results")) == readme, \
        "README bench tables differ from their results files: run python -m sslfast.bench.results"


def test_a_pretrain_finetune_report_renders_its_gap_and_curves():
    from sslfast.bench.results import fill_tables, finetune_markdown
    from sslfast.train.evaluate import summarize
    runs = [{"task": "rt-polarity", "metric": "accuracy", "weights": w, "seed": s,
             "test": {"accuracy": base + 0.01 * s}} for w, base in (("pretrained", 0.80), ("scratch", 0.70))
            for s in range(3)]
    report = {"config": {"batch": 32, "max_length": 128, "labels": 1000, "epochs": 3.0, "lr": 3e-4, "ft_batch": 32,
                         "ft_max_length": 64, "seeds": 3, "curve_task": "rt-polarity", "curve_seeds": 2},
              "machine": "a test machine", "runs": runs, "summary": summarize(runs),
              "pretraining": {"step": 600, "tokens_seen": 2.4e6, "wall_seconds": 600, "eval_mlm_accuracy": 0.2},
              "labels_curve": {"100": {"pretrained": {"mean": 0.6, "std": 0.02}, "scratch": {"mean": 0.5, "std": 0.01}}}}
    text = finetune_markdown(report)
    assert "| rt-polarity | accuracy | 0.810 ± 0.010 | 0.710 ± 0.010 | +0.100 | yes |" in text
    assert "| 100 | 0.600 ± 0.020 | 0.500 ± 0.010 |" in text and "2.40 M tokens" in text
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "r.json"), "w") as f:
            json.dump(report, f)
        filled = fill_tables("x\n<!-- bench-table: r.json -->\nold\n<!-- /bench-table -->\n", folder)
    assert "old" not in filled and "+0.100" in filled


def test_anomaly_and_fewshot_reports_render_their_tables(tmp_path):
    import json
    import sys
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from anomaly_real import summarize

    from sslfast.bench.results import anomaly_markdown, fewshot_markdown, fill_tables
    runs = [{"protocol": "one-class", "class": c, "model": m, "seed": s,
             "auroc": {"error": base + 0.01 * c + 0.02 * s, "latent_knn": 0.5}}
            for c in range(2) for m, base, seeds in (("pca", 0.9, 1), ("ae", 0.8, 2)) for s in range(seeds)]
    summary = summarize(runs)
    # per seed the mean over classes (ae: 0.805 and 0.825), then mean ± std over seeds
    assert summary["one-class"]["ae"]["error"]["mean"] == pytest.approx(0.815)
    assert summary["one-class"]["ae"]["error"]["std"] == pytest.approx(0.02 / 2 ** 0.5)
    assert summary["one-class"]["pca"]["error"]["per_class"] == {"0": 0.9, "1": 0.91}
    report = {"kind": "anomaly-detection", "data": "digits", "machine": "a test machine", "runs": runs,
              "summary": summary, "config": {"channels": [16, 32], "latent_dim": 16, "steps": 200, "batch": 64,
                                             "seeds": 2, "classes": "0,1"}}
    text = anomaly_markdown(report)
    assert "| pca | 0.905 | 0.500 |" in text and "| ae | 0.815 ± 0.014 | 0.500 ± 0.000 |" in text
    assert "over the 2 classes" in text
    fewshot = {"kind": "fewshot-real", "machine": "m", "pretraining": {"step": 10, "tokens_seen": 2e6},
               "config": {"shots": "0,4", "size": "mini", "batch": 8, "max_length": 128, "examples": 50, "draws": 5},
               "results": {"rt-polarity": {"chance": 0.5, "majority": 0.52, "shots": {
                   "0": {"accuracy": {"mean": 0.55, "std": 0.0}, "accuracy_calibrated": {"mean": 0.6, "std": 0.0},
                         "draws": 1},
                   "4": {"accuracy": {"mean": 0.57, "std": 0.01}, "accuracy_calibrated": {"mean": 0.61, "std": 0.02},
                         "draws": 5}}}}}
    assert "| rt-polarity | 0.500 | 0.520 | 0.550 | 0.600 | 0.570 ± 0.010 | 0.610 ± 0.020 |" in fewshot_markdown(fewshot)
    for name, data in (("a.json", report), ("f.json", fewshot)):
        (tmp_path / name).write_text(json.dumps(data))
    filled = fill_tables("<!-- bench-table: a.json -->\nold\n<!-- /bench-table -->\n"
                         "<!-- bench-table: f.json -->\nold\n<!-- /bench-table -->\n", str(tmp_path))
    assert "old" not in filled and "| ae | 0.815" in filled and "0.570 ± 0.010" in filled


@pytest.mark.parametrize("op", ["fewshot", "vqvae"])
def test_new_rows_are_judged_correct_and_a_wrong_result_is_caught(op):
    from sslfast.bench.registry import collect_cases, unavailable_reason
    if unavailable_reason(op):
        pytest.skip(unavailable_reason(op))
    cases = collect_cases([op], quick=True, device="cpu")
    assert len(cases) >= 2
    for case in cases:
        inputs = case.make_inputs()
        base, ours = case.baseline(*inputs), case.candidate(*inputs)
        assert case.judge(inputs, base, ours)["correct"], case.key
        wrong = ours + 0.01 if op == "vqvae" else ours.clone().index_put_((torch.tensor(0), torch.tensor(0)),
                                                                         ours[0, 0] + 0.01)
        verdict = case.judge(inputs, base, wrong)
        assert not verdict["correct"] and verdict["why"], case.key


def test_a_probe_row_reports_the_whole_call_and_each_later_step_against_the_machine_limit(monkeypatch):
    """A decoding row: the call's time per step against the probe, and (with ``first_call``) each step after the
    first alone: (call - first step) / (steps - 1) / probe. Times are injected; what is checked is the
    arithmetic, the fields and the report line."""
    import sslfast.bench.runner as runner
    from sslfast.bench.runner import run_case
    called = []
    times = {"baseline": 1000.0, "sslfast": 500.0, "probe": 3.0, "baseline_first": 100.0, "sslfast_first": 20.0}

    def fake_timing(steps, **_):
        for fn in steps.values():
            fn()
        called.extend(steps)
        return times
    monkeypatch.setattr(runner, "time_interleaved", fake_timing)
    case = _case(lambda x: torch.sin(x))
    case.extra = {"probe": ("reading", lambda: None, 101),
                  "first_call": (lambda x: torch.sin(x[:1]), lambda x: torch.sin(x[:1]))}
    record = run_case(case, device="cpu", quick=True, repeats=1, warmup=0, memory=False)
    assert sorted(called) == sorted(times)
    assert record["bound_ratio"] == pytest.approx(500 / (101 * 3.0))
    assert record["step_ratio"] == pytest.approx((500 - 20) / (100 * 3.0))
    assert record["baseline_step_ratio"] == pytest.approx((1000 - 100) / (100 * 3.0))
    line = [ln for ln in to_markdown([record]).splitlines() if ln.startswith("- fake/")]
    assert len(line) == 1 and "1.65× and the baseline 3.30×" in line[0] and "1.60× and 3.00×" in line[0], line
