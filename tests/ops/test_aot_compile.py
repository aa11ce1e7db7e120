"""Every Triton kernel configuration compiles ahead of time for sm_90 and sm_80, without a GPU."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def aot_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, don't interpret
    proc = subprocess.run([sys.executable, "-m", "sslfast.aot", "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(proc.stdout)
    return json.loads(out.read_text())


def test_every_kernel_compiles_for_hopper_and_ampere(aot_records):
    from sslfast.aot import all_configs
    configs = [cfg for _, cfg in all_configs()]
    assert configs, "no kernel declares aot_configs()"
    for arch in (90, 80):
        expected = {cfg["name"] for cfg in configs if arch in cfg.get("archs", (90, 80))}
        assert {r["name"] for r in aot_records if r["arch"] == f"sm_{arch}"} == expected


def test_no_register_spills_and_shared_memory_fits(aot_records):
    for r in aot_records:
        assert r["registers"] is not None and r["registers"] <= 255, r
        assert r["shared_bytes"] <= 227 * 1024, r  # H100 max dynamic shared memory per block
    spilling = [f"{r['name']} {r['arch']}: {r['spill_stores']}/{r['spill_loads']} bytes" for r in aot_records
                if r["spill_stores"] or r["spill_loads"]]
    assert spilling == []


def test_hopper_dots_use_wgmma(aot_records):
    dot_kernels = [r for r in aot_records if r["arch"] == "sm_90" and r["name"].startswith("vq_lookup_")
                   and "fp32" not in r["name"]]
    assert dot_kernels and all(r["uses_wgmma"] for r in dot_kernels)
    # 16-bit attention at the head dims that matter (64, 128): every kernel with dots runs them on wgmma
    attention = [r for r in aot_records if r["arch"] == "sm_90" and r["name"].startswith("flash_attention_")
                 and "_pre_" not in r["name"] and "fp32" not in r["name"]
                 and any(f"_d{d}" in r["name"] for d in (64, 128))]
    assert attention and [r["name"] for r in attention if not r["uses_wgmma"]] == []
    # head dim 256: the forward too; the backward's spill-free tiles are too small for wgmma (README says so)
    forward_256 = [r for r in aot_records if r["arch"] == "sm_90" and r["name"].startswith("flash_attention_fwd_")
                   and "_d256" in r["name"] and "fp32" not in r["name"]]
    assert forward_256 and [r["name"] for r in forward_256 if not r["uses_wgmma"]] == []
