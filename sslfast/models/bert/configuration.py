"""BERT's configuration: the fields of ``transformers.BertConfig`` that the models read."""
from __future__ import annotations

import dataclasses
from typing import Optional

from sslfast.models._common.configuration import ConfigMixin

__all__ = ["BertConfig"]


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
