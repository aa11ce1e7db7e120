"""RoBERTa: transformers' RoBERTa (attn_implementation="sdpa") against ``sslfast.models`` with the same weights.

The rows of :mod:`sslfast.bench.cases.bert` (forward, masked-LM training step; padding id 1, right padding) on
random RoBERTa models: CPU quick L=2 H=256, CPU full the MiniLM shape (L=6 H=384, vocabulary 50265), GPU
RoBERTa-base in bf16 at sequence 128 and 512.
"""
import sslfast.models as models
from sslfast.bench.cases.bert import encoder_cases, unavailable_reason

BENCH_OPS = ("roberta",)  # the `sslfast bench --ops` names these cases serve

__all__ = ["cases", "unavailable_reason"]


def _configs(quick, device):
    import transformers
    common = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=514,
                  type_vocab_size=1, layer_norm_eps=1e-5)
    if quick:
        size = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024)
        return [("random L=2 H=256", transformers.RobertaConfig(**size, **common), None, 8, 128, "fp32")]
    if device == "cuda":
        return [("RoBERTa-base", transformers.RobertaConfig(**common), None, 32, s, "bf16") for s in (128, 512)]
    size = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return [("random MiniLM-size", transformers.RobertaConfig(**size, **common), None, 32, 128, "fp32")]


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import transformers

    return encoder_cases("roberta", _configs(quick, device), transformers.RobertaForMaskedLM,
                         models.RobertaForMaskedLM, models.RobertaModel, device)
