"""The ``sslfast`` command: ``bench``, ``pretrain``, ``selftest`` and ``plot-metrics``."""
from __future__ import annotations

import argparse
import os
import sys

from sslfast import __version__
from sslfast.bench.environment import environment
from sslfast.bench.registry import OPS, collect_cases, unavailable_reason
from sslfast.bench.report import plot, print_table, to_markdown, write_json
from sslfast.bench.runner import run_cases
from sslfast.data.corpus import CorpusError
from sslfast.models._common.hub import CheckpointError
from sslfast.ops._dispatch import BackendUnavailableError
from sslfast.selftest import main as selftest_main
from sslfast.train.config import ConfigError
from sslfast.train.evaluate import add_evaluate_parser
from sslfast.train.finetune import add_finetune_parser
from sslfast.train.metrics import plot_metrics
from sslfast.train.pretrain import add_pretrain_parser


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark sslfast's ops and models against their baselines")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--ops", nargs="+", default=None, choices=sorted(OPS), metavar="OP",
                   help=f"ops to run (default: all): {', '.join(sorted(OPS))}")
    p.add_argument("--quick", action="store_true", help="small shapes (under 2 minutes on 2 CPU cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5 quick, 10 full)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="PATH", help="write records + environment as JSON")
    p.add_argument("--resume", action="store_true",
                   help="keep the records already in --json and run only the cases it lacks (a run cut short)")
    p.add_argument("--plot", metavar="PATH.png", help="write a plot of speedups and memory ratios")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    import torch


    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("sslfast bench: --device cuda requested but no CUDA device is available", file=sys.stderr)
        return 2
    ops = args.ops or list(OPS)
    for op in list(ops):
        reason = unavailable_reason(op)
        if reason:
            print(f"sslfast bench: skipping {op}: {reason}")
            ops.remove(op)
    env = environment(device, ["sslfast"] + sys.argv[1:] if sys.argv and not sys.argv[0].endswith("sslfast")
                      else sys.argv)
    env["quick"] = args.quick

    cases = collect_cases(ops, quick=args.quick, device=device)
    done = _records_to_keep(args) if args.resume else []
    kept = {(r.get("op"), r.get("case")) for r in done}
    todo = [c for c in cases if (c.op, c.case) not in kept]
    if done:
        print(f"sslfast bench: resuming {args.json}: {len(cases) - len(todo)} of {len(cases)} cases already there")

    def save_so_far(records):  # the JSON grows row by row: a run cut short keeps what it measured
        if args.json:
            write_json(args.json, done + records, {**env, "complete": len(records) == len(todo)})

    repeats = args.repeats or (5 if args.quick else 10)
    records = done + run_cases(todo, device=device, quick=args.quick, repeats=repeats, warmup=args.warmup,
                               memory=not args.no_memory, max_seconds=10.0 if args.quick else 60.0,
                               on_record=save_so_far)
    print_table(records)
    save_so_far(records[len(done):])
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write(to_markdown(records, env))
    if args.plot:
        plot(args.plot, records, env)
    failing = [f"{r.get('op')}/{r.get('case')}" for r in records if not r.get("correct")]
    if failing:
        print(f"sslfast bench: {len(failing)} of {len(records)} rows incorrect: {'; '.join(failing)}")
        return 1
    exact = sum(r.get("reference") == "float64" for r in records)
    print(f"sslfast bench: all {len(records)} rows correct ({exact} judged against float64 references, "
          f"{len(records) - exact} against their baseline)")
    return 0


def _records_to_keep(args) -> list:
    """The records of an earlier run into ``--json`` (none when there is no file or it is not a bench JSON)."""
    import json
    if not args.json or not os.path.isfile(args.json):
        return []
    try:
        with open(args.json) as f:
            records = json.load(f)["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"sslfast bench --resume: {args.json} is not a bench JSON ({exc})")
    return [r for r in records if isinstance(r, dict) and "op" in r and "case" in r]


def _add_plot(sub) -> None:
    p = sub.add_parser("plot-metrics", help="plot a pretraining run's metrics.jsonl (loss, eval, throughput, LR)")
    p.add_argument("run", help="the run's --out folder (or a metrics.jsonl)")
    p.add_argument("--png", help="where to write the plot (default: <run>/metrics.png)")
    p.set_defaults(func=_run_plot)


def _run_plot(args) -> int:
    path = args.run if args.run.endswith(".jsonl") else os.path.join(args.run, "metrics.jsonl")
    if not os.path.isfile(path):
        print(f"sslfast plot-metrics: no metrics.jsonl at {path}", file=sys.stderr)
        return 2
    png = args.png or os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.png")
    print(plot_metrics(path, png))
    return 0


def _user_error(exc: BaseException) -> bool:
    """A mistake in what the user gave (options, files, data, checkpoints), not a bug: one line, exit 2."""
    return isinstance(exc, (ConfigError, CorpusError, CheckpointError, BackendUnavailableError, FileNotFoundError,
                            IsADirectoryError, NotADirectoryError, PermissionError))


def build_parser() -> argparse.ArgumentParser:
    """The ``sslfast`` command line: one subcommand per job (``selftest`` brings its own parser)."""
    parser = argparse.ArgumentParser(prog="sslfast", description="sslfast: fused kernels for self-supervised learning")
    parser.add_argument("--version", action="version", version=f"sslfast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    add_pretrain_parser(sub)
    add_finetune_parser(sub)
    add_evaluate_parser(sub)
    _add_plot(sub)
    selftest = sub.add_parser("selftest", add_help=False,
                              help="check every Triton kernel variant against float64 on this machine "
                                   "(see: sslfast selftest --help)")
    selftest.set_defaults(func=None)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # anywhere: sslfast --debug pretrain ... or sslfast pretrain ... --debug
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["selftest"]:  # its own parser: python -m sslfast selftest [--device cuda] [--json FILE] ...
        return selftest_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"sslfast {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not _user_error(exc):
            raise  # a bug: the traceback is what a report needs
        print(f"sslfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
