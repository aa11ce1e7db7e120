"""Model outputs that read like Hugging Face's ``ModelOutput``: by attribute, by key, or as a tuple.

Each output class declares its fields (the same names and order as transformers'). Fields left ``None`` are
not stored (so ``to_tuple()`` and ``keys()`` list only what was computed, as transformers does); reading a
declared field that is ``None`` gives ``None``, reading a name that is no field raises ``AttributeError``. The
key/value cache is the field ``cache`` (recent transformers' name), also readable as ``past_key_values``.
"""
from __future__ import annotations

__all__ = ["ModelOutput", "BaseModelOutputWithPooling", "BaseModelOutputWithPast", "MaskedLMOutput",
           "BertForPreTrainingOutput", "SequenceClassifierOutput", "TokenClassifierOutput",
           "QuestionAnsweringModelOutput", "MultipleChoiceModelOutput", "CausalLMOutputWithPast",
           "SequenceClassifierOutputWithPast", "AutoEncoderOutput"]


class ModelOutput(dict):
    """``out.logits``, ``out["logits"]``, ``out[0]`` (the first set field) and ``out.to_tuple()`` all work.

    As transformers' ``ModelOutput``, a client may add keys of its own (``out["input_ids"] = ids``, as
    pipelines do; readable as attributes too); they follow the declared fields in ``keys()`` and
    ``to_tuple()``. Reading a name that is neither a field nor an added key raises ``AttributeError``."""

    fields: tuple = ()
    aliases = {"past_key_values": "cache"}  # the key/value cache's name in earlier transformers versions

    def __init__(self, **values):
        unknown = [k for k in values if k not in self.fields]
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}; fields: {list(self.fields)}")
        super().__init__((name, values[name]) for name in self.fields if values.get(name) is not None)

    def __getattr__(self, name):
        name = type(self).aliases.get(name, name) if name not in type(self).fields else name
        if name in type(self).fields:
            return self.get(name)
        if name in self:  # a key a client added
            return dict.__getitem__(self, name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: {list(type(self).fields)}")

    def __setattr__(self, name, value):
        self[type(self).aliases.get(name, name)] = value

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(type(self).aliases.get(key, key) if key not in self else key)

    def __reduce__(self):  # pickling and copy.deepcopy rebuild through __init__
        return type(self), (), None, None, iter(self.items())

    def __setitem__(self, key, value):
        if key not in type(self).fields:  # a client's own key, after the fields
            super().__setitem__(key, value)
            return
        if value is None:
            self.pop(key, None)
            return
        items = {**self, key: value}  # keep the declared order, added keys last
        self.clear()
        self.update((k, items[k]) for k in type(self).fields if k in items)
        self.update((k, v) for k, v in items.items() if k not in type(self).fields)

    def to_tuple(self) -> tuple:
        return tuple(self.values())


def _output(name: str, *fields: str, doc: str) -> type:
    return type(name, (ModelOutput,), {"fields": fields, "__doc__": doc, "__module__": __name__})


BaseModelOutputWithPooling = _output(
    "BaseModelOutputWithPooling", "last_hidden_state", "pooler_output", "hidden_states", "attentions",
    doc="Encoder outputs: ``last_hidden_state`` (B, S, D), ``pooler_output`` (B, D).")
BaseModelOutputWithPast = _output(
    "BaseModelOutputWithPast", "last_hidden_state", "cache", "hidden_states", "attentions",
    doc="Decoder outputs: ``last_hidden_state`` (B, S, D) and the key/value cache.")
MaskedLMOutput = _output("MaskedLMOutput", "loss", "logits", "hidden_states", "attentions",
                         doc="Masked-LM loss and (B, S, V) logits.")
BertForPreTrainingOutput = _output(
    "BertForPreTrainingOutput", "loss", "prediction_logits", "seq_relationship_logits", "hidden_states",
    "attentions", doc="MLM + sentence-pair loss, (B, S, V) MLM logits and (B, 2) pair logits.")
SequenceClassifierOutput = _output("SequenceClassifierOutput", "loss", "logits", "hidden_states", "attentions",
                                   doc="Sequence-classification loss and (B, num_labels) logits.")
TokenClassifierOutput = _output("TokenClassifierOutput", "loss", "logits", "hidden_states", "attentions",
                                doc="Token-classification loss and (B, S, num_labels) logits.")
QuestionAnsweringModelOutput = _output(
    "QuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", "hidden_states", "attentions",
    doc="Span loss and (B, S) start / end logits.")
MultipleChoiceModelOutput = _output("MultipleChoiceModelOutput", "loss", "logits", "hidden_states", "attentions",
                                    doc="Multiple-choice loss and (B, num_choices) logits.")
CausalLMOutputWithPast = _output(
    "CausalLMOutputWithPast", "loss", "logits", "cache", "hidden_states", "attentions",
    doc="Causal-LM loss, (B, S, V) logits and the key/value cache.")
SequenceClassifierOutputWithPast = _output(
    "SequenceClassifierOutputWithPast", "loss", "logits", "cache", "hidden_states", "attentions",
    doc="Sequence-classification loss, (B, num_labels) logits and the key/value cache.")
AutoEncoderOutput = _output(
    "AutoEncoderOutput", "loss", "reconstruction", "latent", "reconstruction_loss", "corrupted", "mu", "logvar",
    "kl", "indices", "vq_loss", "perplexity", "codes_used",
    doc="Auto-encoder outputs: the loss, the reconstruction (the input's shape) and the code; each family member "
        "adds its own fields (denoising: corrupted; VAE: mu, logvar, kl; VQ-VAE: indices, vq_loss, perplexity, "
        "codes_used).")
