"""scripts/gpu_check.sh without a GPU: its time budget, and an exit code that reports a failed stage."""
import os
import re
import stat
import subprocess

from tests.helpers import REPO

SCRIPT = os.path.join(REPO, "scripts", "gpu_check.sh")


def test_stage_limits_and_kill_grace_fit_in_one_device_call():
    text = open(SCRIPT).read()
    limits = [int(n) for n in re.findall(r"run_stage \w+ (\d+) ", text)]
    grace = int(re.search(r"--kill-after=(\d+)", text).group(1))
    assert len(limits) == 7, limits  # env selftest tests bench tune sanitizer finetune
    assert sum(limits) + grace * len(limits) <= 585  # a device command may run 600 s


def test_at_most_eight_result_files():  # what a device run brings back
    text = open(SCRIPT).read()
    names = set(re.findall(r"\$DEST/([\w.\-]+)", text))
    assert len(names) <= 8, sorted(names)
    finetune = text[text.index("run_stage finetune"):]
    assert "--no-plot" in finetune[:finetune.index(";;")]  # the script's JSON only, no .png beside it


def _run_with_stub_python(tmp_path, exit_code):
    """The selftest stage alone, with a ``python3`` that only exits with ``exit_code``."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    stub = stub_dir / "python3"
    stub.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / f"out{exit_code}"
    env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}", "SSLFAST_GPU_OUT": str(out)}
    proc = subprocess.run(["bash", SCRIPT, "--only", "selftest"], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc, (out / "summary.log").read_text()


def test_a_failed_stage_makes_the_script_fail(tmp_path):
    proc, summary = _run_with_stub_python(tmp_path, 1)
    assert proc.returncode == 1 and "FAILED stages" in summary and "selftest:1" in summary
    proc, summary = _run_with_stub_python(tmp_path, 0)
    assert proc.returncode == 0 and "every stage passed" in summary


def test_an_unknown_stage_is_an_error(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "--stage", "benchmark"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SSLFAST_GPU_OUT": str(tmp_path / "out")})
    assert proc.returncode == 2 and "unknown stage" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written
