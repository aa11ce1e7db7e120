"""Auto classes: ``sslfast.models.AutoModelForMaskedLM.from_pretrained(path)`` loads sslfast's class for the
checkpoint's ``model_type``, as transformers' Auto classes do (from a local directory or a model object; sslfast
never downloads). A ``model_type`` sslfast has no class for raises an error naming what it supports."""
from __future__ import annotations

import json
import os

from sslfast.models._common.family import AUTO_CLASS_NAMES
from sslfast.models._common.hub import CheckpointError
from sslfast.models.families import FAMILIES

__all__ = ["AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM", "AutoModelForCausalLM",
           "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoModelForQuestionAnswering",
           "AutoModelForMultipleChoice"]


def _model_type(source, config) -> str:
    """The ``model_type`` of a config, a model object or a checkpoint directory's config.json."""
    config = config if config is not None else getattr(source, "config", None)
    if config is not None:
        return getattr(config, "model_type", None) or type(config).__name__
    if isinstance(source, (str, os.PathLike)):
        path = os.path.join(source, "config.json")
        if not os.path.isfile(path):
            raise CheckpointError(f"{os.fspath(source)!r} has no config.json (sslfast never downloads; pass a "
                                  "checkpoint directory or a model object)")
        with open(path) as f:
            try:
                return json.load(f).get("model_type")
            except ValueError as exc:
                raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    raise TypeError(f"from_pretrained takes a directory or a model object, got {type(source).__name__}")


class _Auto:
    """Maps ``model_type`` to sslfast's class for one kind of head."""

    classes: dict = {}

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(f"{type(self).__name__} is built with {type(self).__name__}.from_pretrained(path) "
                               f"or .from_config(config)")

    @classmethod
    def model_class(cls, model_type: str) -> type:
        if model_type not in cls.classes:
            raise ValueError(f"{cls.__name__}: sslfast has no class for model_type {model_type!r} (supported: "
                             f"{', '.join(sorted(cls.classes))})")
        return cls.classes[model_type]

    @classmethod
    def from_pretrained(cls, source, *args, config=None, **kwargs):
        """sslfast's class for ``source``'s model type, loaded with that class's ``from_pretrained``."""
        return cls.model_class(_model_type(source, config)).from_pretrained(source, *args, config=config, **kwargs)

    @classmethod
    def from_config(cls, config, **overrides):
        """A freshly initialised model of sslfast's class for ``config``'s model type."""
        for name, value in overrides.items():
            setattr(config, name, value)
        return cls.model_class(_model_type(None, config))(config)


def _auto(name: str, classes: dict) -> type:
    return type(name, (_Auto,), {"classes": classes, "__module__": __name__,
                                 "__doc__": f"transformers' ``{name}`` for sslfast's models: {', '.join(classes)}."})


_CLASSES = {name: {f.model_type: f.auto_classes[name] for f in FAMILIES.values() if name in f.auto_classes}
            for name in AUTO_CLASS_NAMES}
AutoModel = _auto("AutoModel", _CLASSES["AutoModel"])
AutoModelForPreTraining = _auto("AutoModelForPreTraining", _CLASSES["AutoModelForPreTraining"])
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM", _CLASSES["AutoModelForMaskedLM"])
AutoModelForCausalLM = _auto("AutoModelForCausalLM", _CLASSES["AutoModelForCausalLM"])
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification",
                                           _CLASSES["AutoModelForSequenceClassification"])
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification", _CLASSES["AutoModelForTokenClassification"])
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering", _CLASSES["AutoModelForQuestionAnswering"])
AutoModelForMultipleChoice = _auto("AutoModelForMultipleChoice", _CLASSES["AutoModelForMultipleChoice"])
