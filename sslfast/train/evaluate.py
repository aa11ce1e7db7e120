"""``sslfast evaluate``: fine-tune a model on every task × seed and report the test scores, GLUE-style.

With ``--baseline scratch`` every run is repeated with the same config and tokenizer and fresh random weights,
which answers whether the pretraining helped. Writes ``results.json``, ``results.md`` and a bar plot with
error bars (``results.png``) into ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from typing import Optional

from sslfast._atomic import atomic_write_text
from sslfast.data.downstream import TASKS
from sslfast.train.config import ConfigError
from sslfast.train.finetune import FinetuneConfig, finetune
from sslfast.train.pretrain import _TYPES

__all__ = ["evaluate", "add_evaluate_parser", "summarize", "results_table"]


def evaluate(model: str, tasks: list[str], seeds: int = 3, *, baseline: Optional[str] = None,
             out: Optional[str] = "out/evaluate", plot: bool = True, **options) -> dict:
    """Fine-tune ``model`` on each of ``tasks`` with seeds 0 .. seeds-1 (``options``: FinetuneConfig fields,
    e.g. ``epochs``, ``lr``, ``max_train_examples``); ``baseline="scratch"`` adds the same runs from fresh
    weights. Returns ``{"runs": [...], "summary": {...}}`` and writes it under ``out``."""
    variants = [("pretrained", {})]
    if baseline == "scratch":
        variants.append(("scratch", {"from_scratch": True} if not model.startswith("scratch:") else {}))
    elif baseline is not None:
        raise ValueError(f"--baseline must be 'scratch', got {baseline!r}")
    runs = []
    from tqdm.auto import tqdm
    plan = [(t, s, name, extra) for t in tasks for s in range(seeds) for name, extra in variants]
    bar = tqdm(plan, desc="evaluate", unit="run", dynamic_ncols=True)
    for task, seed, name, extra in bar:
        bar.set_postfix(task=task, seed=seed, weights=name, refresh=True)
        config = FinetuneConfig(model=model, task=task, seed=seed, out=None, progress=False, plot=False,
                                **{**options, **extra})
        result = finetune(config)
        result["weights"] = name
        runs.append(result)
    report = {"model": model, "seeds": seeds, "baseline": baseline, "options": options, "runs": runs,
              "summary": summarize(runs)}
    if out is not None:
        os.makedirs(out, exist_ok=True)
        atomic_write_text(os.path.join(out, "results.json"), json.dumps(report, indent=2))
        atomic_write_text(os.path.join(out, "results.md"), results_table(report) + "\n")
        if plot:
            report["plot"] = plot_results(report, os.path.join(out, "results.png"))
    return report


def summarize(runs: list[dict]) -> dict:
    """``{task: {weights: {score: {"mean", "std", "n"}}}}`` over the seeds, test split."""
    out: dict = {}
    for run in runs:
        for score, value in run["test"].items():
            out.setdefault(run["task"], {}).setdefault(run["weights"], {}).setdefault(score, []).append(value)
    for task in out.values():
        for weights in task.values():
            for score, values in weights.items():
                weights[score] = {"mean": statistics.fmean(values), "n": len(values),
                                  "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def results_table(report: dict) -> str:
    """A Markdown table: one row per task, its metric's mean ± std per weights."""
    metrics = {run["task"]: run["metric"] for run in report["runs"]}
    weights = sorted({run["weights"] for run in report["runs"]}, key=lambda w: (w != "pretrained", w))
    lines = ["| task | metric | " + " | ".join(weights) + (" | gap |" if len(weights) == 2 else ""),
             "|---|---|" + "---|" * len(weights) + ("---|" if len(weights) == 2 else "")]
    for task, by_weights in report["summary"].items():
        metric = metrics[task]
        cells = [f"{by_weights[w][metric]['mean']:.3f} ± {by_weights[w][metric]['std']:.3f}" for w in weights]
        row = f"| {task} | {metric} | " + " | ".join(cells) + " |"
        if len(weights) == 2:
            row += f" {by_weights[weights[0]][metric]['mean'] - by_weights[weights[1]][metric]['mean']:+.3f} |"
        lines.append(row)
    return "\n".join(lines)


def plot_results(report: dict, path: str) -> Optional[str]:
    """Bars of each task's test metric per weights, error bars = std over seeds."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metrics = {run["task"]: run["metric"] for run in report["runs"]}
    tasks = list(report["summary"])
    weights = sorted({run["weights"] for run in report["runs"]}, key=lambda w: (w != "pretrained", w))
    width = 0.8 / len(weights)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(tasks)), 3.8))
    for i, w in enumerate(weights):
        means = [report["summary"][t][w][metrics[t]]["mean"] for t in tasks]
        stds = [report["summary"][t][w][metrics[t]]["std"] for t in tasks]
        ax.bar([x + i * width for x in range(len(tasks))], means, width, yerr=stds, capsize=3, label=w)
    ax.set_xticks([x + width * (len(weights) - 1) / 2 for x in range(len(tasks))])
    ax.set_xticklabels([f"{t}\n({metrics[t]})" for t in tasks], fontsize=8)
    ax.set_ylabel("test score (mean ± std over seeds)")
    ax.set_title(f"fine-tuned {os.path.basename(os.path.normpath(report['model']))}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="fine-tune on every task × seed and report test scores (optionally "
                                        "against the same model from scratch)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder, pretraining run folder, or scratch:<size>")
    p.add_argument("--tasks", default="all", help=f"comma-separated task names or files, or all ({', '.join(TASKS)})")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per task")
    p.add_argument("--baseline", choices=["scratch"], help="also fine-tune the same config and tokenizer from fresh "
                                                           "weights")
    p.add_argument("--out", default="out/evaluate", help="folder for results.{json,md,png}")
    for name in ("epochs", "lr", "global_batch_size", "max_length", "max_steps", "max_train_examples", "max_eval_examples", "precision",
                 "device", "warmup", "weight_decay", "dropout", "text_column", "text_pair_column", "label_column"):
        field = {f.name: f for f in dataclasses.fields(FinetuneConfig)}[name]
        kind = _TYPES[str(field.type)]
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=argparse.SUPPRESS,
                       help=f"as in sslfast finetune (default: {field.default})")
    p.set_defaults(func=run_evaluate_command)
    return p


def run_evaluate_command(args) -> int:
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    options = {k: v for k, v in vars(args).items() if k in fields and k not in ("model", "out")}
    report = evaluate(args.model, tasks, args.seeds, baseline=args.baseline, out=args.out, **options)
    print(results_table(report))
    print(f"wrote {os.path.join(args.out, 'results.json')}, results.md" + (", results.png" if report.get("plot") else ""))
    return 0
