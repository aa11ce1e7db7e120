"""The run configuration of ``sslfast pretrain``: every choice of a run, written into its output folder
(``run_config.yaml``) so the run can be reproduced and resumed."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional

from sslfast._atomic import atomic_write_text
from sslfast.models.families import FAMILIES
from sslfast.train.schedule import SCHEDULES

__all__ = ["PretrainConfig", "MODELS", "SIZES", "OBJECTIVES", "OPTIMIZERS", "PRECISIONS", "ConfigError",
           "RESUMABLE_CHANGES"]

MODELS = tuple(FAMILIES)
SIZES = ("tiny", "mini", "small", "base")
OBJECTIVES = {name: tuple(f.objectives) for name, f in FAMILIES.items()}
DEFAULT_OBJECTIVE = {name: f.default_objective for name, f in FAMILIES.items()}
OPTIMIZERS = ("adamw", "lamb")
PRECISIONS = ("fp32", "bf16")

# fields a resumed run may change; any other difference from the saved run is refused
RESUMABLE_CHANGES = {"text_column",  # what it reads is in the data fingerprint
                     "max_steps", "max_tokens", "save_every", "eval_every", "eval_batches", "keep_checkpoints",
                     "log_every", "resume", "overwrite", "out", "progress", "device", "compile", "micro_batch_size",
                     "prefetch", "plot"}


class ConfigError(ValueError):
    """A run configuration that cannot work; the message says which option and why."""


@dataclasses.dataclass
class PretrainConfig:
    """Options of a pretraining run (the CLI flags, with ``-`` as ``_``)."""
    model: str = "bert"
    size: str = "mini"
    model_config: Optional[str] = None  # a transformers config.json instead of --size
    objective: Optional[str] = None  # default per model (bert: mlm+nsp, gpt2: clm)
    data: str = "default"  # default | news | digits | a path
    text_column: str = "text"  # of .jsonl / Parquet / Arrow / datasets data
    tokenizer: str = "train"  # train | a tokenizer.json / folder
    vocab_size: int = 8192  # of a trained tokenizer
    out: Optional[str] = "out/pretrain"  # None (Python API): train in memory, write nothing
    global_batch_size: int = 64
    micro_batch_size: Optional[int] = None  # per process; default: global / world size
    max_steps: Optional[int] = None
    max_tokens: Optional[int] = None
    max_length: int = 128
    lr: float = 5e-4
    warmup: float = 0.06  # steps, or a fraction of the run when below 1
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    max_grad_norm: float = 1.0  # 0: no clipping
    precision: str = "fp32"
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    compile: bool = False
    activation_checkpointing: bool = False
    dropout: Optional[float] = None
    fsdp: bool = False
    eval_every: int = 100
    eval_fraction: float = 0.02
    eval_batches: int = 4  # held-out global batches per evaluation
    save_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 1
    resume: Optional[str] = None  # "auto" or a checkpoint folder
    overwrite: bool = False
    seed: int = 0
    device: Optional[str] = None
    prefetch: int = 2
    progress: bool = True
    plot: bool = True

    def __post_init__(self):
        if self.objective is None:
            self.objective = DEFAULT_OBJECTIVE.get(self.model)

    def run_name(self) -> str:
        """How progress bars and plots name the run."""
        return f"pretrain {self.model}-{self.size} ({self.objective})"

    # --- I/O ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} in the run config; known: {sorted(names)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str) -> "PretrainConfig":
        return cls.from_dict(read_mapping(path))

    def save(self, path: str) -> None:
        atomic_write_text(path, dump_yaml(self.to_dict()))

    # --- checks ---
    def validate(self, world_size: int = 1) -> None:
        """Raise :class:`ConfigError` naming the first option that cannot work."""
        def choose(name, value, choices):
            if value not in choices:
                raise ConfigError(f"unknown {name} {value!r}; choose from {list(choices)}")
        choose("model", self.model, MODELS)
        if self.model_config is None:
            choose("size", self.size, SIZES)
        choose("objective", self.objective, OBJECTIVES[self.model])
        choose("optimizer", self.optimizer, OPTIMIZERS)
        choose("precision", self.precision, PRECISIONS)
        choose("schedule", self.schedule, SCHEDULES)
        if self.max_steps is None and self.max_tokens is None:
            raise ConfigError("say how long to train: --max-steps or --max-tokens")
        for name in ("global_batch_size", "max_length", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_tokens", "micro_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        checks = [
            ("warmup", self.warmup >= 0, "non-negative (steps, or a fraction of the run below 1)"),
            ("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "in [0, 1]"),
            ("beta1", 0.0 <= self.beta1 < 1.0, "in [0, 1)"),
            ("beta2", 0.0 <= self.beta2 < 1.0, "in [0, 1)"),
            ("eps", self.eps > 0, "positive"),
            ("weight_decay", self.weight_decay >= 0, "non-negative"),
            ("max_grad_norm", math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0,
             "finite and non-negative (0 turns clipping off)"),
            ("eval_fraction", 0.0 <= self.eval_fraction < 1.0, "in [0, 1)"),
            ("eval_every", self.eval_every >= 0, "non-negative (0: only at the end)"),
            ("save_every", self.save_every >= 0, "non-negative (0: only at the end and on signals)"),
            ("eval_batches", self.eval_batches >= 0, "non-negative"),
            ("prefetch", self.prefetch >= 0, "non-negative"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {what}, got {getattr(self, name)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"--mlm-probability must be in (0, 1), got {self.mlm_probability}")
        if self.micro_batch_size is not None:
            per_step = self.micro_batch_size * world_size
            if self.global_batch_size % per_step:
                raise ConfigError(f"--global-batch-size {self.global_batch_size} is not divisible by "
                                  f"--micro-batch-size {self.micro_batch_size} × world size {world_size} "
                                  f"(= {per_step})")
        elif self.global_batch_size % world_size:
            raise ConfigError(f"--global-batch-size {self.global_batch_size} is not divisible by the world size "
                              f"{world_size}")

    def micro_batch(self, world_size: int) -> int:
        return self.micro_batch_size or self.global_batch_size // world_size

    def accumulation(self, world_size: int) -> int:
        return self.global_batch_size // (self.micro_batch(world_size) * world_size)

    def differences(self, other: "PretrainConfig") -> list[str]:
        """Options that differ from ``other`` and may not change when a run is resumed."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: saved {theirs.get(k)!r}, now {mine[k]!r}" for k in mine
                if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k)]


def read_mapping(path: str) -> dict:
    """A YAML or JSON file as a dict."""
    if not os.path.isfile(path):
        raise ConfigError(f"no such config file: {path!r}")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        values = json.loads(text)
    else:
        import yaml
        values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ConfigError(f"{path} does not hold a mapping of options")
    return values


def dump_yaml(values: dict) -> str:
    import yaml
    return yaml.safe_dump(values, sort_keys=False)
