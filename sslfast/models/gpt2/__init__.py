"""GPT-2: configuration, models (drop-in for transformers' GPT-2 classes), the key/value cache, generation,
few-shot prompting and the in-place transformers patch."""
from sslfast.models.gpt2 import fewshot
from sslfast.models.gpt2.configuration import GPT2Config
from sslfast.models.gpt2.kv_cache import KVCache
from sslfast.models.gpt2.modeling import (
                                          Conv1D,
                                          GPT2ForSequenceClassification,
                                          GPT2LMHeadModel,
                                          GPT2Model,
                                          GPT2PreTrainedModel,
)
from sslfast.models.gpt2.patch import patch_gpt2

__all__ = ["GPT2Config", "GPT2PreTrainedModel", "GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification",
           "KVCache", "Conv1D", "fewshot", "patch_gpt2"]
