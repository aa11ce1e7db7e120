"""Ahead-of-time compile of every Triton kernel configuration for real GPUs, without a GPU.

Each module in ``sslfast.kernels`` lists its launch configurations in ``aot_configs()``, each with the
architectures it is tuned for (``archs``: sm_90 Hopper for every kernel; sm_80 Ampere where a table has entries
for it: VQ and cross-entropy). This compiles them and reads registers and spills from ``ptxas -v``, so a kernel
that cannot compile for a real GPU fails here. ``python -m sslfast.aot --json PATH`` writes the table.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib
import json
import multiprocessing
import os
import pkgutil
import re
import subprocess
import tempfile

ARCHS = (90, 80)


def _kernel_modules():
    import sslfast.kernels as kernels
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"sslfast.kernels.{info.name}")
        if hasattr(module, "aot_configs"):
            yield info.name, module


def all_configs():
    """Every (module name, config) pair the kernels declare."""
    return [(name, cfg) for name, module in _kernel_modules() for cfg in module.aot_configs()]


def _as_jit_function(kernel):
    from triton.runtime.jit import JITFunction
    if isinstance(kernel, JITFunction):
        return kernel
    return JITFunction(kernel.fn)  # under TRITON_INTERPRET=1 the decorator returns an interpreted wrapper


def _ptxas_usage(ptx: str, arch: int) -> dict:
    from triton.backends.nvidia import compiler as nv
    ptxas = nv.get_ptxas(arch).path if hasattr(nv, "get_ptxas") else "ptxas"
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, f"-arch=sm_{arch}{suffix}", "-v", path, "-o", os.devnull],
                              capture_output=True, text=True, check=True)
    text = proc.stderr + proc.stdout
    regs = re.search(r"Used (\d+) registers", text)
    spill_st = re.search(r"(\d+) bytes spill stores", text)
    spill_ld = re.search(r"(\d+) bytes spill loads", text)
    return {"registers": int(regs.group(1)) if regs else None,
            "spill_stores": int(spill_st.group(1)) if spill_st else 0,
            "spill_loads": int(spill_ld.group(1)) if spill_ld else 0}


def _int_specialization(value: int) -> str:
    """What Triton's launcher makes of an integer argument: "1" (a compile-time constant), "D" (divisible by 16)
    or "" (Triton's own rule where this triton exposes it)."""
    try:
        from triton.backends.compiler import BaseBackend
        from triton.runtime.jit import native_specialize_impl
        kind, spec = native_specialize_impl(BaseBackend, value, False, True, True)
        return "1" if kind == "constexpr" else spec
    except (ImportError, TypeError):
        return "1" if value == 1 else "D" if value % 16 == 0 else ""


def runtime_specialization(fn, cfg: dict) -> tuple[dict, dict]:
    """The specialisation a launch on real tensors gets, as (``attrs``, integer arguments turned constant).
    Triton marks every pointer to a 16-byte aligned allocation, and every integer divisible by 16, with
    ``tt.divisibility = 16`` (wider loads, other register use), and compiles an integer equal to 1 as a constant.
    Pointers are aligned and strides divisible by 16 whenever rows hold a multiple of 16 elements (head dims
    64/128, hidden sizes), so that is what the tables must keep spill-free. ``cfg["values"]`` gives the
    representative value of an integer argument (default: 16 for strides, 17 for other integers);
    ``cfg["unaligned"]`` lists pointers that are not aligned."""
    unknown = set(cfg.get("values", {})) - set(cfg["signature"])
    if unknown:
        raise ValueError(f"{cfg['name']}: values for arguments not in the signature: {sorted(unknown)}")
    attrs, ones = {}, {}
    for name, kind in cfg["signature"].items():
        if name in cfg["constexprs"]:
            continue
        if kind.startswith("*"):
            spec = "" if name in cfg.get("unaligned", ()) else "D"
        elif kind in ("i32", "i64"):
            spec = _int_specialization(cfg.get("values", {}).get(name, 16 if name.startswith("stride") else 17))
        else:
            continue
        if spec == "1":
            ones[name] = 1
        elif spec == "D":
            attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
    return attrs, ones


def compile_config(cfg: dict, arch: int) -> dict:
    """Compile one configuration for ``sm_<arch>``; returns registers, spills, shared memory, wgmma use."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _as_jit_function(cfg["kernel"])
    attrs, ones = runtime_specialization(fn, cfg)
    signature = {name: "constexpr" if name in ones else kind for name, kind in cfg["signature"].items()}
    src = ASTSource(fn, signature, {**cfg["constexprs"], **ones}, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(cfg.get("options", {})))
    record = {"name": cfg["name"], "arch": f"sm_{arch}", "shared_bytes": compiled.metadata.shared,
              "uses_wgmma": "wgmma" in compiled.asm["ptx"]}
    record.update(_ptxas_usage(compiled.asm["ptx"], arch))
    return record


@functools.lru_cache(maxsize=1)
def _configs_in_this_process():
    return all_configs()


def _compile_one(index: int, arch: int) -> dict:
    name, cfg = _configs_in_this_process()[index]
    return dict(module=name, **compile_config(cfg, arch))


def compile_all(archs=ARCHS, jobs: int | None = None) -> list[dict]:
    """Compile every configuration for every arch, ``jobs`` processes at a time (default: one per core)."""
    work = [(i, arch) for i, (_, cfg) in enumerate(all_configs()) for arch in archs
            if arch in cfg.get("archs", archs)]
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return [_compile_one(i, arch) for i, arch in work]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_compile_one, *zip(*work)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the records to this path")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: one per core)")
    args = parser.parse_args(argv)
    records = compile_all(jobs=args.jobs)
    for r in records:
        print(f"{r['name']:<58} {r['arch']}  regs={r['registers']:<4} spills={r['spill_stores']}/"
              f"{r['spill_loads']}  smem={r['shared_bytes']}  wgmma={r['uses_wgmma']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
