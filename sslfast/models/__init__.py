"""Drop-in fast replacements for Hugging Face models, built on sslfast's fused ops."""
from sslfast.models.auto import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForMultipleChoice,
                                 AutoModelForPreTraining, AutoModelForQuestionAnswering,
                                 AutoModelForSequenceClassification, AutoModelForTokenClassification)
from sslfast.models.autoencoder import AutoEncoder, AutoEncoderConfig
from sslfast.models.base import PreTrainedModel
from sslfast.models.bert import (BertForMaskedLM, BertForMultipleChoice, BertForPreTraining,
                                 BertForQuestionAnswering, BertForSequenceClassification,
                                 BertForTokenClassification, BertModel)
from sslfast.models.config import BertConfig
from sslfast.models.gpt2 import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from sslfast.models.hub import CheckpointError
from sslfast.models.kv_cache import KVCache
from sslfast.models.denoising_autoencoder import DenoisingAutoEncoder
from sslfast.models.outputs import ModelOutput
from sslfast.models.vae import VariationalAutoEncoder
from sslfast.models.vqvae import VQVAE

__all__ = [
    "PreTrainedModel", "ModelOutput", "BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
    "BertForMultipleChoice", "GPT2Config", "GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "KVCache",
    "AutoEncoderConfig", "AutoEncoder", "DenoisingAutoEncoder", "VariationalAutoEncoder", "VQVAE", "CheckpointError",
    "AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM", "AutoModelForCausalLM",
    "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoModelForQuestionAnswering",
    "AutoModelForMultipleChoice",
]
