"""Does our pretraining help? Pretrain BERT-mini on the news articles, fine-tune it on the downstream tasks with
several seeds, and compare with the same config and tokenizer from fresh weights.

    python benchmarks/pretrain_finetune.py --out benchmarks/results/pretrain-finetune-cpu.json

What it runs (every budget is a flag; the defaults fit about 45 minutes on 2 CPU cores):
1. ``sslfast pretrain --model bert --size mini --objective mlm --data news`` for ``--pretrain-steps`` steps of
   ``--batch`` × ``--max-length`` tokens, a checkpoint every ``--checkpoint-every`` steps;
2. each of ``--tasks`` fine-tuned from the final model and from scratch, ``--seeds`` seeds, on at most
   ``--labels`` training examples (the scarce-label regime the lecture's argument is about);
3. the labels curve: ``--curve-task`` at ``--curve-labels`` examples, pretrained and scratch;
4. the tokens curve: ``--curve-task`` fine-tuned from each checkpoint along the pretraining run;
5. one fine-tuning run timed against transformers' ``BertForSequenceClassification`` under its ``Trainer`` with
   the same recipe (seconds per step).

Writes the JSON (every run, with its machine), a plot next to it (``.png``: the task bars, both curves) and
prints the Markdown table the README shows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from sslfast.train.evaluate import results_table, summarize  # noqa: E402
from sslfast.train.finetune import FinetuneConfig, finetune  # noqa: E402


def _finetune(model, task, seed, labels, args, **extra):
    config = FinetuneConfig(model=model, task=task, seed=seed, out=None, progress=False, plot=False,
                            max_train_examples=labels, epochs=args.epochs, lr=args.lr, max_length=args.ft_max_length,
                            global_batch_size=args.ft_batch, device=args.device, precision=args.precision,
                            max_eval_examples=args.max_eval_examples or None, **extra)
    result = finetune(config)
    return {k: result[k] for k in ("task", "metric", "seed", "train_examples", "steps", "best_step", "validation",
                                   "test", "train_seconds", "seconds_per_step")}


def pretrain_news(args, out_dir):
    from sslfast.train.pretrain import pretrain
    start = time.perf_counter()
    summary = pretrain({"model": "bert", "size": "mini", "objective": "mlm", "data": "news",
                        "max_steps": args.pretrain_steps, "global_batch_size": args.batch, "max_length": args.max_length,
                        "lr": args.pretrain_lr, "warmup": 0.06, "eval_every": args.checkpoint_every,
                        "save_every": args.checkpoint_every, "keep_checkpoints": 100, "out": out_dir,
                        "overwrite": True, "progress": True, "device": args.device, "precision": args.precision})
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def checkpoint_models(run_dir):
    """(step, a folder transformers-format) for each checkpoint of the run, written from its state."""
    import sslfast.data as D
    from sslfast.models import BertConfig, BertForMaskedLM
    from sslfast.models._common.hub import load_config
    from sslfast.train import checkpoint as ckpt
    final = os.path.join(run_dir, "final")
    config = load_config(final, BertConfig)
    tokenizer = D.load_tokenizer(final)
    out = []
    for path in sorted(ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))):
        step = int(os.path.basename(path).split("-")[-1])
        target = os.path.join(run_dir, "models", f"step-{step:08d}")
        if not os.path.isfile(os.path.join(target, "config.json")):
            model = BertForMaskedLM(config)
            model.load_state_dict(ckpt.load_state(path)["model"], strict=True)
            model.save_pretrained(target)
            D.save_tokenizer(tokenizer, target, model_max_length=512)
        out.append((step, target))
    return out


def trainer_comparison(model_dir, task_name, args):
    """Seconds per fine-tuning step: sslfast finetune against transformers' Trainer, same data and recipe."""
    import transformers

    import sslfast.data as D
    from sslfast.data.downstream import load_task
    from sslfast.train.tasks.finetune import FinetuneTask, _Collate, _Examples
    from sslfast.train.trainer import Trainer
    steps = args.timing_steps
    config = FinetuneConfig(model=model_dir, task=task_name, out=None, progress=False, plot=False,
                            max_train_examples=args.ft_batch * steps, max_steps=steps, lr=args.lr,
                            max_length=args.ft_max_length, global_batch_size=args.ft_batch)
    ours = Trainer(config, task_factory=FinetuneTask).setup()
    batches = ours.loader.forever()
    our_times = []
    for _ in range(steps):  # the loop's own training step: forward, backward, clipping, AdamW, schedule
        micro = [next(batches) for _ in range(ours.accumulation)]
        start = time.perf_counter()
        ours.train_step(micro)
        our_times.append(time.perf_counter() - start)
    batches.close()
    task = load_task(task_name)
    tokenizer = D.load_tokenizer(model_dir)
    data = _Examples(tokenizer, task["train"].subset(args.ft_batch * steps), task.kind, args.ft_max_length)
    collate = _Collate(D.special_tokens(tokenizer).pad, task.kind)
    hf = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=task.num_labels,
                                                                    attn_implementation="sdpa")
    times = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)
    training = transformers.TrainingArguments(output_dir=os.path.join(args.work, "hf-trainer"), max_steps=steps,
                                              per_device_train_batch_size=args.ft_batch, learning_rate=args.lr,
                                              warmup_steps=max(1, steps // 10), weight_decay=0.01, logging_steps=1000,
                                              save_strategy="no", report_to=[], use_cpu=True,
                                              dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=hf, args=training, train_dataset=data,
                                   data_collator=lambda examples: collate(examples), callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    return {"steps": steps, "batch": args.ft_batch, "max_length": args.ft_max_length,
            "sslfast_median_step_seconds": statistics.median(our_times[2:]),
            "transformers_trainer_median_step_seconds": statistics.median(times[2:]),
            "transformers_trainer_seconds_per_step": total / steps,
            "what": "median over steps 3..N of each loop's training step (forward, backward, clipping, AdamW) on "
                    "the same padded batches of the same examples; transformers' BertForSequenceClassification "
                    "(sdpa) under its Trainer, sslfast's under sslfast's loop"}


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    summary = report["summary"]
    tasks = list(summary)
    metric = {r["task"]: r["metric"] for r in report["runs"]}
    for i, weights in enumerate(("pretrained", "scratch")):
        means = [summary[t][weights][metric[t]]["mean"] for t in tasks]
        stds = [summary[t][weights][metric[t]]["std"] for t in tasks]
        axes[0].bar([x + 0.4 * i for x in range(len(tasks))], means, 0.4, yerr=stds, capsize=3, label=weights)
    axes[0].set_xticks([x + 0.2 for x in range(len(tasks))])
    axes[0].set_xticklabels([f"{t}\n({metric[t]})" for t in tasks], fontsize=8)
    axes[0].set_title(f"test score, ≤{report['config']['labels']} labels, {report['config']['seeds']} seeds", fontsize=9)
    axes[0].legend(fontsize=8)
    curve = report.get("labels_curve", {})
    for weights in ("pretrained", "scratch"):
        points = sorted((int(n), v[weights]["mean"], v[weights]["std"]) for n, v in curve.items())
        if points:
            axes[1].errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                             marker="o", capsize=3, label=weights)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("labelled training examples")
    axes[1].set_title(f"{report['config']['curve_task']}: score vs labels", fontsize=9)
    axes[1].legend(fontsize=8)
    tokens = report.get("tokens_curve", [])
    if tokens:
        axes[2].errorbar([p["tokens"] for p in tokens], [p["mean"] for p in tokens], yerr=[p["std"] for p in tokens],
                         marker="o", capsize=3)
    axes[2].set_xlabel("pretraining tokens seen")
    axes[2].set_title(f"{report['config']['curve_task']}: score vs pretraining", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/pretrain-finetune-cpu.json")
    p.add_argument("--work", default="out/pretrain-finetune", help="run folders (pretraining, checkpoints)")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--tasks", default="rt-polarity,trec-6,sms-spam,movie-sentiment,dialog-reply,trec-50")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labels", type=int, default=1000, help="training examples per task (all: 0)")
    p.add_argument("--max-eval-examples", type=int, default=2000,
                   help="validation and test examples scored per task (0: all; only dialog-reply has more)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument("--ft-max-length", type=int, default=64)
    p.add_argument("--curve-task", default="rt-polarity")
    p.add_argument("--curve-labels", default="100,300,3000", help="more label counts for the labels curve")
    p.add_argument("--curve-seeds", type=int, default=2)
    p.add_argument("--tokens-curve-seeds", type=int, default=2)
    p.add_argument("--timing-steps", type=int, default=30)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--resume", action="store_true", help="keep the fine-tuning runs already in --out")
    p.add_argument("--no-plot", action="store_true", help="no .png beside --out")
    p.add_argument("--skip-pretrain", action="store_true", help="reuse --work's pretraining run")
    p.add_argument("--pretrain-wall-seconds", type=float, help="with --skip-pretrain: how long that run took")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    os.makedirs(args.work, exist_ok=True)
    run_dir = os.path.join(args.work, "pretrain-news")
    labels = args.labels or None
    from sslfast.bench.environment import environment, machine_summary
    env = environment(args.device, ["python", "benchmarks/pretrain_finetune.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"config": vars(args), "machine": machine_summary(env), "environment": env,
              "started": time.strftime("%Y-%m-%d %H:%M")}
    if not args.skip_pretrain:
        report["pretraining"] = pretrain_news(args, run_dir)
    else:  # the run in --work: its budget from its metrics.jsonl (wall time as measured then, if given)
        log = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
        last_step = [r for r in log if "loss" in r][-1]
        last_eval = [r for r in log if "eval_mlm_accuracy" in r][-1]
        report["pretraining"] = {"step": last_step["step"], "tokens_seen": last_step["tokens_seen"],
                                 "loss": last_step["loss"], **{k: v for k, v in last_eval.items() if k != "step"},
                                 "wall_seconds": args.pretrain_wall_seconds}
    final = os.path.join(run_dir, "final")

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        from sslfast._atomic import atomic_write_text
        atomic_write_text(args.out, json.dumps(report, indent=2))

    runs = []
    done = {}
    previous = {}
    if args.resume and os.path.isfile(args.out):  # keep the runs and curves an earlier or cut-short run wrote
        previous = json.load(open(args.out))
        recipe = ("labels", "epochs", "lr", "ft_batch", "ft_max_length", "pretrain_steps", "batch", "max_length",
                  "pretrain_lr", "device", "precision")
        changed = [k for k in recipe if k in previous.get("config", {}) and previous["config"][k] != vars(args)[k]]
        if changed or not args.skip_pretrain:
            raise SystemExit(f"--resume keeps {args.out}'s runs only for the same pretraining run (--skip-pretrain) "
                             f"and recipe; changed: {changed or 'the pretraining run (no --skip-pretrain)'}")
        for run in previous.get("runs", []):
            done[(run["task"], run["seed"], run["weights"])] = run
    for task in [t for t in args.tasks.split(",") if t]:
        for seed in range(args.seeds):
            for weights, extra in (("pretrained", {}), ("scratch", {"from_scratch": True})):
                if (task, seed, weights) in done:
                    runs.append(done[(task, seed, weights)])
                    continue
                run = _finetune(final, task, seed, labels, args, **extra)
                run["weights"] = weights
                runs.append(run)
                print(f"{task} seed {seed} {weights}: test {run['metric']} {run['test'][run['metric']]:.3f}", flush=True)
                report["runs"], report["summary"] = runs, summarize(runs)
                save()  # after every run: a cut-short run resumes from here
        report["runs"], report["summary"] = runs, summarize(runs)
        save()
    curve = {}
    for n in [int(x) for x in args.curve_labels.split(",") if x] + ([labels] if labels else []):
        scores = {"pretrained": [], "scratch": []}
        kept = previous.get("labels_curve", {}).get(str(n))
        if kept and n != labels and all(kept[w]["n"] == args.curve_seeds for w in scores):
            curve[str(n)] = kept  # resumed: the same label count at the same seeds
            continue
        if n == labels:  # already run above
            for r in runs:
                if r["task"] == args.curve_task and r["seed"] < args.curve_seeds:
                    scores[r["weights"]].append(r["test"][r["metric"]])
        else:
            for seed in range(args.curve_seeds):
                for weights, extra in (("pretrained", {}), ("scratch", {"from_scratch": True})):
                    run = _finetune(final, args.curve_task, seed, n, args, **extra)
                    scores[weights].append(run["test"][run["metric"]])
        curve[str(n)] = {w: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                             "n": len(v)} for w, v in scores.items()}
        report["labels_curve"] = curve
        save()
    tokens_curve = []
    pretraining_log = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    tokens_at = {r["step"]: r["tokens_seen"] for r in pretraining_log if "tokens_seen" in r}
    kept_tokens = {point["step"]: point for point in previous.get("tokens_curve", [])}
    for step, model_dir in (checkpoint_models(run_dir) if args.tokens_curve_seeds else []):
        if step in kept_tokens:  # resumed
            tokens_curve.append(kept_tokens[step])
            continue
        values = [_finetune(model_dir, args.curve_task, seed, labels, args)["test"]
                  for seed in range(args.tokens_curve_seeds)]
        metric = next(r["metric"] for r in runs if r["task"] == args.curve_task) if runs else "accuracy"
        scores = [v[metric] for v in values]
        tokens_curve.append({"step": step, "tokens": tokens_at.get(step), "mean": statistics.fmean(scores),
                             "std": statistics.stdev(scores) if len(scores) > 1 else 0.0})
        report["tokens_curve"] = tokens_curve
        save()
    if args.timing_steps and previous.get("trainer_comparison", {}).get("steps") == args.timing_steps:
        report["trainer_comparison"] = previous["trainer_comparison"]  # resumed
    elif args.timing_steps:
        report["trainer_comparison"] = trainer_comparison(final, args.curve_task, args)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M")
    save()
    if not args.no_plot:
        plot(report, os.path.splitext(args.out)[0] + ".png")
    print(results_table({"runs": runs, "summary": report["summary"]}))


if __name__ == "__main__":
    main()
