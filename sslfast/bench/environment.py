"""The environment block of a results file: what ran, where, when, with which command."""
from __future__ import annotations

import datetime
import platform
import subprocess
import sys

import torch

import sslfast.ops  # noqa: F401  (registers every op's spec)
from sslfast.ops._kernel_verdicts import op_source_hash
from sslfast.ops._registry import specs


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    """The vector extensions that decide which CPU kernels run (oneDNN's, MKL's and sslfast's): e.g.
    "avx2 fma avx512f amx_tile"."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(w for w in wanted if w in flags)
    except OSError:
        pass
    return platform.machine()


def machine_summary(env: dict) -> str:
    """One line naming the machine of a results file: the device, or the CPU with its threads and extensions."""
    if env.get("device") == "cuda":
        return f"{env.get('device_name')} (CUDA {env.get('cuda')})"
    features = f", {env['cpu_features']}" if env.get("cpu_features") else ""
    return f"{env.get('cpu_model')}, {env.get('cpu_threads')} threads{features}"


PEERS = ("transformers", "liger-kernel", "cut-cross-entropy", "vector-quantize-pytorch", "faiss-cpu", "faiss-gpu")


def _peer_versions() -> dict:
    """Versions of the optional peers the bench compares against, where installed (the rows they give)."""
    from importlib import metadata
    versions = {}
    for name in PEERS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def environment(device: str, command: list[str] | None = None) -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    env = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_features": cpu_features(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "command": " ".join(command if command is not None else sys.argv),
        "peers": _peer_versions(),
        # which kernel sources (and checks) the rows measured: the hash auto's cached verdicts key on
        "kernel_sources": {op.name: op_source_hash(op.name) for op in specs()},
    }
    if device == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def main(argv=None) -> int:
    """``python -m sslfast.bench.environment --device cuda --json env.json``: the block, printed and written."""
    import argparse
    import json
    parser = argparse.ArgumentParser(description="print (and write) the environment block of a results file")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    env = environment(args.device)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
    print(json.dumps(env, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(env, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
