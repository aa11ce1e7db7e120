"""Few-shot prompting, shown end to end: pretrain a small GPT-2 on the embedded corpus, then score a
sentence-completion task (4 choices) built from held-out documents, zero-, one- and four-shot.

Run: ``python benchmarks/fewshot_demo.py --steps 300 --json benchmarks/results/cpu-<date>-fewshot.json``.
A model this small, trained for minutes, is expected to sit near chance; the point is the mechanics.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--out", default=None, help="pretraining folder (default: a temporary one)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    import sslfast.data as D
    from sslfast.bench.report import write_script_report
    from sslfast.models import GPT2LMHeadModel, fewshot
    from sslfast.train import pretrain
    out = args.out or tempfile.mkdtemp(prefix="sslfast-fewshot-")
    summary = pretrain({"model": "gpt2", "size": args.size, "max_steps": args.steps, "global_batch_size": 32,
                        "max_length": 128, "lr": 1e-3, "warmup": 0.1, "eval_every": 0, "save_every": 0,
                        "out": out, "overwrite": True, "plot": False})
    model = GPT2LMHeadModel.from_pretrained(os.path.join(out, "final"))
    tokenizer = D.load_tokenizer(os.path.join(out, "final"))
    corpus = D.default_corpus()
    held_out = np.random.default_rng(0).permutation(len(corpus))[:int(round(0.02 * len(corpus))) or 1]
    documents = [corpus[i] for i in held_out] if len(held_out) >= 5 else corpus
    task = fewshot.sentence_completion_task(documents if sum(map(len, documents)) > args.examples + 8 else corpus,
                                            n=args.examples, num_choices=4, seed=0)
    results = {k: fewshot.evaluate(model, tokenizer, task, k=k, seed=1) for k in (0, 1, 4)}
    report = {"pretraining": {k: v for k, v in summary.items() if not isinstance(v, str) or k == "final"},
              "task": f"sentence completion, {len(task)} examples, 4 choices",
              "shots": {k: {m: r[m] for m in ("accuracy", "accuracy_normalized", "chance")} for k, r in results.items()}}
    for k, r in results.items():
        print(f"{k}-shot: accuracy {r['accuracy']:.3f} (per-token normalised {r['accuracy_normalized']:.3f}), "
              f"chance {r['chance']:.3f}")
    if args.json:
        write_script_report(args.json, "fewshot", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
