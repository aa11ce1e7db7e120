"""GPT-2's configuration: the fields of ``transformers.GPT2Config`` that the models read."""
from __future__ import annotations

import dataclasses
from typing import Optional

from sslfast.models._common.configuration import ConfigMixin

__all__ = ["GPT2Config"]


@dataclasses.dataclass
class GPT2Config(ConfigMixin):
    """Same field names and defaults as ``transformers.GPT2Config`` (GPT-2 small, 124M)."""
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    use_cache: bool = True
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    pad_token_id: Optional[int] = None
    num_labels: int = 2
    problem_type: Optional[str] = None
    tie_word_embeddings: bool = True
    model_type: str = "gpt2"
