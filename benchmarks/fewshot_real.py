"""GPT few-shot on real tasks: pretrain GPT-2-mini on the news articles (causal LM), then score zero-, one- and
k-shot prompting on rt-polarity, trec-6 and sms-spam with the tasks' label words, raw and with contextual
calibration, over several draws of demonstrations (from the training split), against chance and the majority
class.

    python benchmarks/fewshot_real.py --out benchmarks/results/fewshot-real-cpu.json

Every budget is a flag (``--steps``, ``--examples`` per task, ``--shots``, ``--draws``). Writes the JSON (with
its machine) and a plot beside it, and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/fewshot-real-cpu.json")
    p.add_argument("--work", default="out/fewshot-real")
    p.add_argument("--size", default="mini")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tasks", default="rt-polarity,trec-6,sms-spam")
    p.add_argument("--examples", type=int, default=300, help="test examples per task")
    p.add_argument("--shots", default="0,1,4")
    p.add_argument("--draws", type=int, default=5, help="draws of demonstrations (seeds)")
    p.add_argument("--skip-pretrain", action="store_true", help="reuse --work's pretraining run")
    p.add_argument("--pretrain-wall-seconds", type=float, help="with --skip-pretrain: how long that run took")
    p.add_argument("--finetune-report", default="benchmarks/results/pretrain-finetune-cpu.json",
                   help="a benchmarks/pretrain_finetune.py report: its BERT-mini scores go beside (if present)")
    args = p.parse_args(argv)

    import sslfast.data as D
    from sslfast.bench.environment import environment, machine_summary
    from sslfast.data.downstream import load_task
    from sslfast.models import GPT2LMHeadModel, fewshot
    from sslfast.train import pretrain
    env = environment("cpu", ["python", "benchmarks/fewshot_real.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"kind": "fewshot-real", "config": vars(args), "machine": machine_summary(env), "environment": env,
              "started": time.strftime("%Y-%m-%d %H:%M"), "results": {}}
    run = os.path.join(args.work, "gpt2-news")
    if not args.skip_pretrain:
        start = time.perf_counter()
        summary = pretrain({"model": "gpt2", "size": args.size, "data": "news", "max_steps": args.steps,
                            "global_batch_size": args.batch, "max_length": args.max_length, "lr": args.lr,
                            "warmup": 0.06, "eval_every": max(args.steps // 4, 1), "save_every": 0, "out": run,
                            "overwrite": True})
        summary["wall_seconds"] = time.perf_counter() - start
        report["pretraining"] = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    else:  # the run in --work: its budget from its metrics.jsonl
        log = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
        last = [r for r in log if "loss" in r][-1]
        evals = [r for r in log if "eval_loss" in r]
        report["pretraining"] = {"step": last["step"], "tokens_seen": last.get("tokens_seen"), "loss": last["loss"],
                                 **({k: v for k, v in evals[-1].items() if k != "step"} if evals else {}),
                                 "wall_seconds": args.pretrain_wall_seconds}
    model = GPT2LMHeadModel.from_pretrained(os.path.join(run, "final")).eval()
    tokenizer = D.load_tokenizer(os.path.join(run, "final"))
    shots = [int(k) for k in args.shots.split(",")]

    def save():
        from sslfast._atomic import atomic_write_text
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=2))

    from tqdm.auto import tqdm
    for name in [t for t in args.tasks.split(",") if t]:
        task = load_task(name)
        test = fewshot.classification_examples(task, "test", limit=args.examples)
        pool = fewshot.classification_examples(task, "train")
        template = fewshot.TEMPLATES.get(name)
        per_k = {}
        for k in tqdm(shots, desc=name, unit="k"):
            draws = [fewshot.evaluate(model, tokenizer, test, k=k, seed=seed, pool=pool, calibrate=True,
                                      template=template, truncate=True) for seed in range(args.draws if k else 1)]
            per_k[str(k)] = {m: {"mean": statistics.fmean(d[m] for d in draws),
                                 "std": statistics.stdev(d[m] for d in draws) if len(draws) > 1 else 0.0}
                             for m in ("accuracy", "accuracy_calibrated", "accuracy_normalized")}
            per_k[str(k)]["draws"] = len(draws)
            per_k[str(k)]["truncated_prompts"] = max(d["truncated"] for d in draws)
        report["results"][name] = {"examples": len(test), "chance": draws[0]["chance"],
                                   "majority": draws[0]["majority"], "shots": per_k}
        save()
    if args.finetune_report and os.path.isfile(args.finetune_report):  # BERT-mini fine-tuned, same test splits
        fine = json.load(open(args.finetune_report))
        report["finetuned_bert"] = {
            "source": args.finetune_report, "labels": fine["config"].get("labels"),
            "scores": {t: {"pretrained": by["pretrained"]["accuracy"], "scratch": by["scratch"]["accuracy"]}
                       for t, by in fine.get("summary", {}).items() if t in report["results"]
                       and "accuracy" in by.get("pretrained", {})}}
    report["finished"] = time.strftime("%Y-%m-%d %H:%M")
    save()
    from sslfast.bench.results import fewshot_markdown
    print(fewshot_markdown(report))
    _plot(report, shots, os.path.splitext(args.out)[0] + ".png")
    return 0


def _plot(report, shots, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(report["results"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = report["results"][name]
        for key, label in (("accuracy", "raw"), ("accuracy_calibrated", "calibrated")):
            ax.errorbar(shots, [r["shots"][str(k)][key]["mean"] for k in shots],
                        yerr=[r["shots"][str(k)][key]["std"] for k in shots], marker="o", capsize=3, label=label)
        ax.axhline(r["chance"], color="gray", ls=":", label="chance")
        ax.axhline(r["majority"], color="black", ls="--", lw=0.8, label="majority")
        ax.set_title(f"{name} ({r['examples']} test examples)", fontsize=9)
        ax.set_xlabel("demonstrations (k)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
