"""BERT configuration without transformers: the fields of ``transformers.BertConfig`` that the models read."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional


@dataclasses.dataclass
class BertConfig:
    """Same field names and defaults as ``transformers.BertConfig`` (BERT-base)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    problem_type: Optional[str] = None
    classifier_dropout: Optional[float] = None
    tie_word_embeddings: bool = True
    model_type: str = "bert"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BertConfig":
        """Build from a ``config.json`` dict; unknown keys are ignored, ``id2label`` sets ``num_labels``."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if "id2label" in values and "num_labels" not in values:
            kwargs["num_labels"] = len(values["id2label"])
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_to_dict(config) -> dict[str, Any]:
    """A ``config.json`` dict from either config type (transformers' or ours)."""
    if hasattr(config, "to_dict"):
        values = dict(config.to_dict())
    else:
        values = dataclasses.asdict(config)
    values.setdefault("model_type", "bert")
    return values


def load_config(directory: str | os.PathLike):
    """``transformers.BertConfig`` when transformers is installed (so HF objects round-trip), else ours."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in {directory!r}")
    try:
        from transformers import BertConfig as HFBertConfig
    except ImportError:
        return BertConfig.from_json_file(path)
    return HFBertConfig.from_json_file(path)
