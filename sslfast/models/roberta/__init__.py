"""RoBERTa: BERT with RoBERTa's positions, LM head and classification head (drop-in for transformers' RoBERTa
classes), and the in-place transformers patch."""
from sslfast.models.roberta.configuration import RobertaConfig
from sslfast.models.roberta.modeling import (
                                             RobertaForMaskedLM,
                                             RobertaForMultipleChoice,
                                             RobertaForQuestionAnswering,
                                             RobertaForSequenceClassification,
                                             RobertaForTokenClassification,
                                             RobertaModel,
                                             RobertaPreTrainedModel,
                                             roberta_position_ids,
)
from sslfast.models.roberta.patch import patch_roberta

__all__ = ["RobertaConfig", "RobertaPreTrainedModel", "RobertaModel", "RobertaForMaskedLM",
           "RobertaForSequenceClassification", "RobertaForTokenClassification", "RobertaForQuestionAnswering",
           "RobertaForMultipleChoice", "roberta_position_ids", "patch_roberta"]
