"""The record that declares a model family once: what the pretraining runner, the CLI, ``sslfast.patch``, the
Auto classes and the anomaly detector read about it (``sslfast.models.families`` lists the records)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

__all__ = ["Family", "AUTO_CLASS_NAMES", "TASKS"]

# the Auto classes a family may fill (sslfast.models.auto builds one per name)
AUTO_CLASS_NAMES = ("AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM", "AutoModelForCausalLM",
                    "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                    "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice")
# the training tasks of ``sslfast pretrain`` (sslfast.train.tasks maps each to its Task class)
TASKS = ("masked-lm", "causal-lm", "autoencoder")


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    ``name``: the ``--model`` value; ``objectives``: objective → the model class it trains (the first is the
    default); ``sizes``: ``--size`` → config fields; ``task``: one of :data:`TASKS`; ``tokenizer_kind``: what
    ``--tokenizer train`` trains (None: image data); ``model_type``: transformers' name (config.json, Auto
    classes, ``sslfast.patch``); ``build_config(fields, vocab_size, max_length, special)`` → a config for a
    run; ``position_rows(config, max_length)`` → the position rows ``max_length`` tokens need."""
    name: str
    display_name: str
    config_class: type
    objectives: Mapping[str, type]
    sizes: Mapping[str, Mapping[str, Any]]
    task: str
    tokenizer_kind: Optional[str] = None
    model_type: Optional[str] = None
    patch: Optional[Callable] = None
    auto_classes: Mapping[str, type] = dataclasses.field(default_factory=dict)
    build_config: Optional[Callable] = None
    position_rows: Callable[[Any, int], int] = lambda config, max_length: max_length
    positions_field: str = "max_position_embeddings"
    default_objective: Optional[str] = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"family {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        unknown = set(self.auto_classes) - set(AUTO_CLASS_NAMES)
        if unknown:
            raise ValueError(f"family {self.name!r}: unknown Auto classes {sorted(unknown)}")
        if self.default_objective is None:
            object.__setattr__(self, "default_objective", next(iter(self.objectives)))
