"""BERT: configuration, models (drop-in for transformers' BERT classes) and the in-place transformers patch."""
from sslfast.models._common.inputs import token_layout
from sslfast.models.bert.configuration import BertConfig
from sslfast.models.bert.modeling import (
                                          BertForMaskedLM,
                                          BertForMultipleChoice,
                                          BertForPreTraining,
                                          BertForQuestionAnswering,
                                          BertForSequenceClassification,
                                          BertForTokenClassification,
                                          BertModel,
                                          BertPreTrainedModel,
                                          bert_layer,
                                          embed,
                                          run_encoder,
)
from sslfast.models.bert.patch import patch_bert

__all__ = ["BertConfig", "BertPreTrainedModel", "BertModel", "BertForPreTraining", "BertForMaskedLM",
           "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
           "BertForMultipleChoice", "patch_bert", "token_layout", "embed", "bert_layer", "run_encoder"]
