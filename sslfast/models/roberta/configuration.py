"""RoBERTa's configuration: BERT's fields with RoBERTa's defaults (``transformers.RobertaConfig``)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from sslfast.models.bert.configuration import BertConfig

__all__ = ["RobertaConfig"]


@dataclasses.dataclass
class RobertaConfig(BertConfig):
    """Same field names and defaults as ``transformers.RobertaConfig``. Positions start after the padding id:
    a sequence of S tokens needs ``max_position_embeddings >= S + pad_token_id + 1`` (514 for 512 tokens)."""
    vocab_size: int = 50265
    pad_token_id: int = 1
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2
    model_type: str = "roberta"
