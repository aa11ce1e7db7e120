"""BERT's family record."""
from sslfast.models._common.family import Family
from sslfast.models.bert.configuration import BertConfig
from sslfast.models.bert.modeling import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from sslfast.models.bert.patch import patch_bert

__all__ = ["BERT", "BERT_SIZES"]

# Google's BERT miniatures (Turc et al., 2019) and BERT-base
BERT_SIZES = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def _build_config(fields, vocab_size, max_length, special):
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=max(512, max_length), pad_token_id=special.pad,
                      **fields)


BERT = Family(
    name="bert", display_name="BERT", config_class=BertConfig,
    objectives={"mlm": BertForMaskedLM, "mlm+nsp": BertForPreTraining, "mlm+sop": BertForPreTraining},
    default_objective="mlm+nsp",
    sizes=BERT_SIZES, task="masked-lm", tokenizer_kind="wordpiece", model_type="bert", patch=patch_bert,
    auto_classes={"AutoModel": BertModel, "AutoModelForPreTraining": BertForPreTraining,
                  "AutoModelForMaskedLM": BertForMaskedLM,
                  "AutoModelForSequenceClassification": BertForSequenceClassification,
                  "AutoModelForTokenClassification": BertForTokenClassification,
                  "AutoModelForQuestionAnswering": BertForQuestionAnswering,
                  "AutoModelForMultipleChoice": BertForMultipleChoice},
    build_config=_build_config,
)
