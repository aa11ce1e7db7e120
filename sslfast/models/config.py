"""Model configurations without transformers: the fields of transformers' configs that the models read."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional


class ConfigMixin:
    """``from_dict`` / ``from_json_file`` / ``to_dict`` for the dataclass configs, as transformers' configs."""
    use_return_dict = True  # outputs are ModelOutput objects unless a forward gets return_dict=False

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a ``config.json`` dict; unknown keys are ignored, ``id2label`` sets ``num_labels``."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if "id2label" in values and "num_labels" not in values and "num_labels" in names:
            kwargs["num_labels"] = len(values["id2label"])
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BertConfig(ConfigMixin):
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
