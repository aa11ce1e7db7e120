"""RoBERTa's family record: BERT's sizes and masked-LM task, a byte-level BPE tokenizer with ``<s>`` ``</s>``
``<pad>`` ``<mask>``, masked-LM only (no next-sentence objective)."""
from sslfast.models._common.family import Family
from sslfast.models.bert.family import BERT_SIZES
from sslfast.models.roberta.configuration import RobertaConfig
from sslfast.models.roberta.modeling import (
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)
from sslfast.models.roberta.patch import patch_roberta

__all__ = ["ROBERTA"]


def _build_config(fields, vocab_size, max_length, special):
    pad = special.pad
    return RobertaConfig(vocab_size=vocab_size, max_position_embeddings=max(512, max_length) + pad + 1,
                         pad_token_id=pad, bos_token_id=special.cls, eos_token_id=special.sep, type_vocab_size=1,
                         layer_norm_eps=1e-5, **fields)


ROBERTA = Family(
    name="roberta", display_name="RoBERTa", config_class=RobertaConfig, objectives={"mlm": RobertaForMaskedLM},
    sizes=BERT_SIZES, task="masked-lm", tokenizer_kind="roberta-bpe", model_type="roberta", patch=patch_roberta,
    auto_classes={"AutoModel": RobertaModel, "AutoModelForPreTraining": RobertaForMaskedLM,  # as transformers
                  "AutoModelForMaskedLM": RobertaForMaskedLM,
                  "AutoModelForSequenceClassification": RobertaForSequenceClassification,
                  "AutoModelForTokenClassification": RobertaForTokenClassification,
                  "AutoModelForQuestionAnswering": RobertaForQuestionAnswering,
                  "AutoModelForMultipleChoice": RobertaForMultipleChoice},
    build_config=_build_config,
    position_rows=lambda config, max_length: max_length + config.pad_token_id + 1,
)
