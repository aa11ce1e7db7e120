"""``sslfast finetune``: a pretrained checkpoint (or fresh weights) fine-tuned on a labelled task, in the
pretraining loop (bf16, accumulation, exact resume, torchrun, ``metrics.jsonl`` and its plot).

The run folder holds ``metrics.jsonl`` / ``metrics.png``, ``checkpoints/`` (resumable), ``best/`` (the
weights with the best validation score, in transformers' format with the tokenizer) and ``results.json``
(validation and test scores of ``best/``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Optional, Union

from sslfast._atomic import atomic_write_text
from sslfast.train.config import ConfigError, PretrainConfig
from sslfast.train.pretrain import add_config_flags, config_from_namespace
from sslfast.train.tasks.finetune import FinetuneTask
from sslfast.train.trainer import Trainer

__all__ = ["FinetuneConfig", "finetune", "add_finetune_parser", "run_finetune_command"]


@dataclasses.dataclass
class FinetuneConfig(PretrainConfig):
    """Options of a fine-tuning run: :class:`PretrainConfig`'s loop options, and the task's.

    ``model``: a checkpoint folder (sslfast's or transformers'), a pretraining run folder (its ``final/``) or
    ``scratch:<size>`` (fresh BERT weights of that size, a tokenizer trained on the task's texts);
    ``from_scratch``: the checkpoint's config and tokenizer with fresh weights (the baseline of a pretrained
    run). Training lasts ``epochs`` unless ``max_steps`` / ``max_tokens`` say otherwise; the validation split
    is scored every ``eval_every`` steps (default: each epoch) and the best weights are kept."""
    model: str = "scratch:mini"
    task: str = "rt-polarity"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    from_scratch: bool = False
    epochs: float = 3.0
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    out: Optional[str] = "out/finetune"
    global_batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1
    eval_every: Optional[int] = None
    save_every: Optional[int] = None
    objective: Optional[str] = "finetune"

    def run_name(self) -> str:
        return f"finetune {self.model} on {self.task}"

    def validate(self, world_size: int = 1) -> None:
        # the loop's options are checked as a pretraining run's; the model and task are resolved in prepare()
        loop = {f.name: getattr(self, f.name) for f in dataclasses.fields(PretrainConfig)}
        loop.update(model="bert", objective="mlm", size="mini", model_config=None,
                    max_steps=self.max_steps or (None if self.max_tokens else 1),
                    eval_every=self.eval_every or 0, save_every=self.save_every or 0)
        PretrainConfig(**loop).validate(world_size)
        if not self.epochs > 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.from_scratch and self.model.startswith("scratch:"):
            raise ConfigError("--from-scratch takes a checkpoint's config and tokenizer: give --model a folder")


def finetune(config: Union[FinetuneConfig, dict], *, data=None) -> dict:
    """Fine-tune, then score the best weights on the validation and test splits. Returns the summary
    (``validation`` and ``test`` scores, ``best`` step and folder, timing). ``data``: a
    :class:`~sslfast.data.downstream.DownstreamTask` instead of ``config.task``."""
    import time

    if isinstance(config, dict):
        config = FinetuneConfig.from_dict(config)
    trainer = Trainer(config, data=data, task_factory=FinetuneTask)
    start = time.perf_counter()
    try:
        summary = trainer.train()
    except BaseException:
        trainer.ctx.shutdown()
        raise
    elapsed = time.perf_counter() - start
    if summary.get("stopped"):
        trainer.ctx.shutdown()
        return summary
    task = trainer.task
    model = task.best_model(trainer.model_unwrapped, trainer.out)
    result = {"task": task.task.name, "kind": task.task.kind, "metric": task.task.metric, "model": task.source,
              "seed": config.seed, "train_examples": len(task.train_dataset), "steps": trainer.step,
              "train_seconds": elapsed, "seconds_per_step": elapsed / max(trainer.step, 1),
              "best_step": (task.best or {}).get("step"),
              "validation": task.scores(model, task.eval_dataset), "test": task.scores(model, task.test_dataset)}
    if trainer.out is not None and trainer.ctx.is_main:
        result["best"] = os.path.join(trainer.out, "best")
        atomic_write_text(os.path.join(trainer.out, "results.json"), json.dumps(result, indent=2))
    result["final_loss"] = summary.get("loss")
    trainer.ctx.shutdown()
    return result


_FLAGS = {"model": "checkpoint folder, pretraining run folder, or scratch:<size> (tiny/mini/small/base)",
          "task": "a task name (rt-polarity, trec-6, trec-50, sms-spam, movie-sentiment, dialog-reply) or a "
                  "CSV / TSV / JSONL / .conll file",
          "text_column": "the text column of a file", "text_pair_column": "the second text of a pair task",
          "label_column": "the label column (numbers with fractions: regression)",
          "from_scratch": "the checkpoint's config and tokenizer with fresh weights (the baseline)",
          "epochs": "passes over the training split (unless --max-steps)",
          "max_train_examples": "use only the first N training examples (a hash-ordered sample)",
          "max_eval_examples": "score only the first N validation and test examples (quick runs)"}


def add_finetune_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="fine-tune a pretrained model (or fresh weights) on a labelled task",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       argument_default=argparse.SUPPRESS)
    add_config_flags(p, FinetuneConfig, _FLAGS, skip={"size", "model_config", "objective", "mlm_probability",
                                                      "whole_word_mask", "data", "eval_fraction", "eval_batches"})
    p.set_defaults(func=run_finetune_command)
    return p


def run_finetune_command(args) -> int:
    config = config_from_namespace(args, FinetuneConfig)
    if getattr(args, "print_config", False):
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    result = finetune(config)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: result[k] for k in ("task", "model", "steps", "best_step", "validation", "test")},
                         indent=2))
    return 0
