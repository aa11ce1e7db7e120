"""Drop-in fast replacements for Hugging Face models, built on sslfast's fused ops."""
from sslfast.models._common.base import PreTrainedModel
from sslfast.models._common.hub import CheckpointError
from sslfast.models._common.outputs import ModelOutput
from sslfast.models.auto import (
                                 AutoModel,
                                 AutoModelForCausalLM,
                                 AutoModelForMaskedLM,
                                 AutoModelForMultipleChoice,
                                 AutoModelForPreTraining,
                                 AutoModelForQuestionAnswering,
                                 AutoModelForSequenceClassification,
                                 AutoModelForTokenClassification,
)
from sslfast.models.autoencoders import (
                                 VQVAE,
                                 AutoEncoder,
                                 AutoEncoderConfig,
                                 DenoisingAutoEncoder,
                                 VariationalAutoEncoder,
)
from sslfast.models.bert import (
                                 BertConfig,
                                 BertForMaskedLM,
                                 BertForMultipleChoice,
                                 BertForPreTraining,
                                 BertForQuestionAnswering,
                                 BertForSequenceClassification,
                                 BertForTokenClassification,
                                 BertModel,
)
from sslfast.models.families import FAMILIES, Family
from sslfast.models.gpt2 import (
                                 GPT2Config,
                                 GPT2ForSequenceClassification,
                                 GPT2LMHeadModel,
                                 GPT2Model,
                                 KVCache,
                                 fewshot,
)
from sslfast.models.roberta import (
                                 RobertaConfig,
                                 RobertaForMaskedLM,
                                 RobertaForMultipleChoice,
                                 RobertaForQuestionAnswering,
                                 RobertaForSequenceClassification,
                                 RobertaForTokenClassification,
                                 RobertaModel,
)

__all__ = [
    "PreTrainedModel", "ModelOutput", "BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
    "BertForMultipleChoice", "RobertaConfig", "RobertaModel", "RobertaForMaskedLM",
    "RobertaForSequenceClassification", "RobertaForTokenClassification", "RobertaForQuestionAnswering",
    "RobertaForMultipleChoice", "FAMILIES", "Family", "GPT2Config", "GPT2Model", "GPT2LMHeadModel",
    "GPT2ForSequenceClassification", "KVCache",
    "AutoEncoderConfig", "AutoEncoder", "DenoisingAutoEncoder", "VariationalAutoEncoder", "VQVAE", "CheckpointError",
    "AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM", "AutoModelForCausalLM",
    "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoModelForQuestionAnswering",
    "AutoModelForMultipleChoice", "fewshot",
]
