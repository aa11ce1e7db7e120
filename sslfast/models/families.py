"""Every model family sslfast has, one record each (:class:`Family`): the one table a new family is added to.

The pretraining runner and its CLI (``--model``, ``--size``, ``--objective``), ``sslfast.patch``, the Auto
classes and the anomaly detector read it."""
from __future__ import annotations

from sslfast.models._common.family import Family
from sslfast.models.autoencoders.family import AUTOENCODERS
from sslfast.models.bert.family import BERT
from sslfast.models.gpt2.family import GPT2
from sslfast.models.roberta.family import ROBERTA

__all__ = ["Family", "FAMILIES", "family", "family_for_model_type"]

FAMILIES: dict[str, Family] = {f.name: f for f in (BERT, ROBERTA, GPT2, *AUTOENCODERS)}


def family(name: str) -> Family:
    """The family whose ``--model`` name is ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose from {list(FAMILIES)}")
    return FAMILIES[name]


def family_for_model_type(model_type: str) -> Family:
    """The family of a transformers ``model_type`` ("bert", "roberta", "gpt2")."""
    for f in FAMILIES.values():
        if model_type is not None and f.model_type == model_type:
            return f
    raise ValueError(f"sslfast has no family for model_type {model_type!r} (supported: "
                     f"{sorted(f.model_type for f in FAMILIES.values() if f.model_type)})")
