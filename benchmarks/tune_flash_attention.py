"""Time candidate tiles of the Triton attention kernels on a GPU and print the fastest per
launch-table entry (``kernels/flash_attention.py: FORWARD_CONFIGS``, ``flash_attention_backward.py:
BACKWARD_CONFIGS``). The tables were picked by register counts alone; run this on the first lent GPU:

    TRITON_INTERPRET=0 python benchmarks/tune_flash_attention.py --head-dims 64 128 --json out/tune.json
    (add --resume to continue a run cut short: the timings already in the JSON are kept)

Only the entries a call actually runs are timed (up to head dim 64 the backward uses the atomic kernel, so its
dK/dV and dQ entries are not); ``--head-dims`` / ``--directions`` / ``--causal`` select what to time, and
``--dropout`` times the dropout entries instead of the plain ones.

A candidate that fails to launch is recorded with its error; one that spills registers is timed like the
others (and loses); before adopting a winner, ``python -m sslfast.aot`` must still pass. Forward entries are
timed on the forward; backward entries on forward+backward with the other tables unchanged.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

CANDIDATES = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 32, 8, 3), (128, 32, 4, 3),
              (64, 128, 8, 2), (64, 64, 4, 3), (64, 64, 8, 2), (64, 32, 4, 2), (32, 128, 8, 2), (32, 64, 8, 2),
              (16, 64, 8, 2), (64, 16, 4, 2), (64, 16, 8, 2), (32, 32, 8, 1)]


def _time_ms(fn) -> float:
    import triton.testing
    return float(triton.testing.do_bench(fn, warmup=25, rep=100))


def _case(head_dim, causal, seqlen=4096, tokens=16384, dtype=torch.bfloat16):
    heads = 2048 // head_dim
    q, k, v = (torch.randn(tokens // seqlen, heads, seqlen, head_dim, device="cuda", dtype=dtype,
                           requires_grad=True) for _ in range(3))
    return q, k, v, causal


def entries_that_run(head_dim: int, directions) -> list[str]:
    """The launch-table kinds a bf16 call at this head dim actually uses: the forward; for the backward, the
    atomic dK/dV(+dQ) kernel up to head dim 64 (the default, non-deterministic path), else dK/dV and dQ."""
    kinds = ["fwd"] if "fwd" in directions else []
    if "bwd" in directions:
        kinds += ["dkdv_atomic"] if head_dim <= 64 else ["dkdv", "dq"]
    return kinds


def main(argv=None) -> None:
    from sslfast._atomic import atomic_write_text
    from sslfast.kernels import flash_attention as fwd_module
    from sslfast.kernels import flash_attention_backward as bwd_module
    from sslfast.kernels.constants import head_dim_block
    from sslfast.kernels.launch import Precision, Tile
    from sslfast.ops import attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every timing here (rewritten after each, so a cut-short run keeps them)")
    parser.add_argument("--seqlen", type=int, default=4096)
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--directions", nargs="+", choices=["fwd", "bwd"], default=["fwd", "bwd"])
    parser.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    parser.add_argument("--resume", action="store_true", help="keep the timings already in --json, time the rest")
    parser.add_argument("--dropout", action="store_true",
                        help="time the dropout entries (calls with dropout_p=0.1) instead of the plain ones")
    args = parser.parse_args(argv)
    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    records = []
    if args.resume and args.json and os.path.isfile(args.json):
        with open(args.json) as f:
            records = json.load(f)["records"]
    done = {(r["kind"], r["head_dim"], r["causal"], r.get("dropout", False), tuple(r["config"])) for r in records}
    p = 0.1 if args.dropout else 0.0

    def save():
        if args.json:
            atomic_write_text(args.json, json.dumps({"environment": env, "records": records}, indent=1))

    causal_options = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    for head_dim in args.head_dims:
        block_d = head_dim_block(head_dim)
        for causal in causal_options:
            q, k, v, _ = _case(head_dim, causal, args.seqlen)
            grad = torch.randn_like(q)

            def forward():
                with torch.no_grad():
                    attention(q, k, v, causal=causal, dropout_p=p, backend="triton")  # never an SDPA fallback

            def forward_backward():
                q.grad = k.grad = v.grad = None
                attention(q, k, v, causal=causal, dropout_p=p, backend="triton").backward(grad)

            for kind in entries_that_run(head_dim, args.directions):
                half = Precision.HALF
                table, key, fn = ((fwd_module.FORWARD_CONFIGS, (half, block_d, args.dropout), forward)
                                  if kind == "fwd" else (bwd_module.BACKWARD_CONFIGS, (kind, half, block_d),
                                                         forward_backward))
                slot = int(args.dropout)  # a backward entry holds (plain, dropout) tiles
                if key not in table:
                    continue
                original = table[key]
                for cand in CANDIDATES:
                    if (kind, head_dim, causal, args.dropout, cand) in done:
                        continue
                    tile = Tile(*cand)
                    if kind == "fwd":
                        table[key] = tile
                    else:
                        table[key] = (tile, original[1]) if slot == 0 else (original[0], tile)
                    try:
                        ms = _time_ms(fn)
                    except Exception as exc:  # out of resources, launch failure: not a candidate here
                        ms, error = None, f"{type(exc).__name__}: {str(exc)[:120]}"
                    else:
                        error = None
                    records.append(dict(kind=kind, head_dim=head_dim, causal=causal, dropout=args.dropout,
                                        seqlen=args.seqlen, config=cand, ms=ms, error=error, current=tile == (
                                            original if kind == "fwd" else original[slot])))
                    print(records[-1], flush=True)
                    save()
                table[key] = original
                timed = [r for r in records if r["kind"] == kind and r["head_dim"] == head_dim
                         and r["causal"] == causal and r.get("dropout", False) == args.dropout and r["ms"] is not None]
                if timed:
                    best = min(timed, key=lambda r: r["ms"])
                    print(f"BEST {kind} d={head_dim} causal={causal}: {best['config']} {best['ms']:.3f} ms "
                          f"(table: {original})", flush=True)
    save()


if __name__ == "__main__":
    main()
