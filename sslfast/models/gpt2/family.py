"""GPT-2's family record."""
from sslfast.models._common.family import Family
from sslfast.models.gpt2.configuration import GPT2Config
from sslfast.models.gpt2.modeling import (
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from sslfast.models.gpt2.patch import patch_gpt2

__all__ = ["GPT2", "GPT2_SIZES"]

# GPT-2 miniatures with the BERT sizes' shapes, GPT-2 small (124M) and medium (355M)
GPT2_SIZES = {
    "tiny": dict(n_layer=2, n_embd=128, n_head=2),
    "mini": dict(n_layer=4, n_embd=256, n_head=4),
    "small": dict(n_layer=12, n_embd=768, n_head=12),
    "base": dict(n_layer=24, n_embd=1024, n_head=16),
}


def _build_config(fields, vocab_size, max_length, special):
    return GPT2Config(vocab_size=vocab_size, n_positions=max(1024, max_length), bos_token_id=special.eos,
                      eos_token_id=special.eos, pad_token_id=special.eos, **fields)


GPT2 = Family(
    name="gpt2", display_name="GPT-2", config_class=GPT2Config, objectives={"clm": GPT2LMHeadModel},
    sizes=GPT2_SIZES, task="causal-lm", tokenizer_kind="bpe", model_type="gpt2", patch=patch_gpt2,
    auto_classes={"AutoModel": GPT2Model, "AutoModelForPreTraining": GPT2LMHeadModel,
                  "AutoModelForCausalLM": GPT2LMHeadModel,
                  "AutoModelForSequenceClassification": GPT2ForSequenceClassification},
    build_config=_build_config, positions_field="n_positions",
)
