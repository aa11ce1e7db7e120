"""``sslfast pretrain`` and its Python twin :func:`pretrain`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Union

from sslfast.models.families import FAMILIES, family_for_model_type
from sslfast.train.config import (
    MODELS,
    OBJECTIVES,
    OPTIMIZERS,
    PRECISIONS,
    SIZES,
    ConfigError,
    PretrainConfig,
    read_mapping,
)
from sslfast.train.trainer import Trainer

__all__ = ["pretrain", "add_pretrain_parser", "config_from_args", "config_from_namespace", "add_config_flags"]

_HELP = {
    "model": f"model family: {', '.join(MODELS)}",
    "size": f"model size: {', '.join(SIZES)} (BERT: Google's miniatures and BERT-base)",
    "model_config": "a transformers config.json for the model (instead of --size)",
    "objective": "; ".join(f"{f.name}: {' | '.join(f.objectives)}" + (f" (default {f.default_objective})"
                                                                      if len(f.objectives) > 1 else "")
                           for f in FAMILIES.values() if f.task != "autoencoder"),
    "data": "text: default (the embedded corpus), news (3,824 English news articles, fetched once), or a "
            ".txt / .jsonl / .parquet / .arrow file, a folder of them, or a datasets save_to_disk folder; "
            "images (auto-encoders): digits (8×8), mnist (MNIST-5k, 28×28), fashion-mnist, or .npy / .npz / a folder",
    "text_column": "the text field of .jsonl / Parquet / Arrow / datasets data",
    "tokenizer": "train (on --data: WordPiece for BERT, byte-level BPE for GPT-2 and RoBERTa) or a tokenizer.json / "
                 "folder",
    "vocab_size": "vocabulary size of a trained tokenizer",
    "out": "output folder (run_config.yaml, metrics.jsonl, metrics.png, checkpoints/, final/)",
    "global_batch_size": "examples per optimizer step, over all processes",
    "micro_batch_size": "examples per process and forward pass (default: global / world size); "
                        "accumulation = global / (micro × world)",
    "max_steps": "optimizer steps to train",
    "max_tokens": "stop after this many input tokens",
    "max_length": "tokens per example (sequence length)",
    "lr": "peak learning rate",
    "warmup": "warm-up steps (a value below 1 is a fraction of the run)",
    "schedule": "linear | cosine | constant decay after warm-up",
    "min_lr_ratio": "the schedule decays to this fraction of the peak",
    "optimizer": "adamw (torch, fused) | lamb (large-batch)",
    "weight_decay": "decoupled weight decay (not on biases and LayerNorm)",
    "beta1": "optimizer β1",
    "beta2": "optimizer β2",
    "eps": "optimizer ε",
    "max_grad_norm": "gradient clipping by global norm (0: no clipping)",
    "precision": "fp32 | bf16 (autocast, fp32 master weights)",
    "mlm_probability": "masked-LM masking rate (0.15 BERT, 0.30 MosaicBERT)",
    "whole_word_mask": "mask whole words (all WordPiece pieces together)",
    "compile": "torch.compile the model",
    "activation_checkpointing": "recompute each layer in the backward (less memory, more compute)",
    "dropout": "override the model's dropout probabilities",
    "fsdp": "shard parameters, gradients and optimizer state over processes (FSDP2; sharded checkpoints)",
    "eval_every": "evaluate on the held-out split every N steps (0: only at the end)",
    "eval_fraction": "fraction of documents held out for evaluation",
    "eval_batches": "held-out global batches per evaluation (the same examples every time)",
    "save_every": "checkpoint every N steps (0: only at the end and on SIGTERM/SIGINT)",
    "keep_checkpoints": "checkpoints kept (the newest)",
    "log_every": "log metrics every N steps",
    "resume": "auto (newest valid checkpoint in --out) or a checkpoint / run folder",
    "overwrite": "replace a previous run in --out",
    "seed": "seed of the data order, masking, initialisation and dropout",
    "device": "cpu | cuda (default: cuda when available)",
    "prefetch": "batches built ahead on a background thread",
    "progress": "progress bar",
    "plot": "write metrics.png at the end",
}
_CHOICES = {"model": MODELS, "size": SIZES, "optimizer": OPTIMIZERS, "precision": PRECISIONS,
            "objective": sorted({o for objs in OBJECTIVES.values() for o in objs}),
            "schedule": ("linear", "cosine", "constant")}
_TYPES = {"int": int, "float": float, "str": str, "Optional[int]": int, "Optional[float]": float,
          "Optional[str]": str}


def add_config_flags(p: argparse.ArgumentParser, config_class=PretrainConfig, help_overrides=None,
                     skip=frozenset()) -> None:
    """One flag per field of ``config_class`` (``--config`` file values first, flags over them)."""
    help_text = {**_HELP, **(help_overrides or {})}
    p.add_argument("--config", help="a run config (YAML/JSON with these options) or a transformers config.json")
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type)
        if kind == "bool":  # --flag / --no-flag, so either can override a --config file
            p.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                           help=f"{help_text[field.name]} (default: {'on' if field.default else 'off'})")
            continue
        choices = _CHOICES.get(field.name) if config_class is PretrainConfig or field.name not in ("model",) else None
        p.add_argument(flag, dest=field.name, type=_TYPES[kind], choices=choices,
                       help=f"{help_text[field.name]} (default: {field.default})")
    p.add_argument("--print-config", action="store_true", help="print the resolved run config and exit")


def add_pretrain_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("pretrain", help="pretrain a model: BERT (MLM, NSP, SOP), RoBERTa (MLM), GPT-2 (causal LM) or "
                                         "an auto-encoder (ae, dae, vae, vqvae)",
                       description="Pretrain a model on the embedded corpus or your data. Under torchrun, "
                                   "runs DistributedDataParallel (or FSDP2 with --fsdp) on every process.",
                       argument_default=argparse.SUPPRESS)
    add_config_flags(p)
    p.set_defaults(func=run_pretrain_command)
    return p


def config_from_namespace(args: argparse.Namespace, config_class=PretrainConfig):
    """A ``config_class`` from a ``--config`` file (if any) overridden by the flags given."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file:
        mapping = read_mapping(config_file)
        if config_class is PretrainConfig and ("model_type" in mapping or "architectures" in mapping):
            values["model_config"] = config_file  # a transformers model config
            try:
                values["model"] = family_for_model_type(mapping.get("model_type")).name
            except ValueError:
                values["model"] = mapping.get("model_type")  # validate() names the unknown model
        else:
            values.update(mapping)
    names = {f.name for f in dataclasses.fields(config_class)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return config_class.from_dict(values)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    return config_from_namespace(args, PretrainConfig)


def run_pretrain_command(args) -> int:
    try:
        config = config_from_args(args)
        if getattr(args, "print_config", False):
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        summary = pretrain(config)
    except ConfigError as err:
        print(f"sslfast pretrain: {err}", file=sys.stderr)
        return 2
    if summary.get("stopped") or os.environ.get("RANK", "0") != "0":
        return 0
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}
    print("sslfast pretrain: done: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def pretrain(config: Union[PretrainConfig, dict, str]) -> dict:
    """Run a pretraining job from a :class:`PretrainConfig`, a dict of its options, or a YAML/JSON file.
    Returns the summary (step, tokens, final loss, evaluation metrics, checkpoint and output paths)."""
    if isinstance(config, str):
        config = PretrainConfig.from_file(config)
    elif isinstance(config, dict):
        config = PretrainConfig.from_dict(config)
    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.ctx.shutdown()
