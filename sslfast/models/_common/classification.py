"""Classification heads' shared pieces: transformers' ``problem_type`` loss rule and the classifier dropout."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["sequence_classification_loss", "classifier_dropout"]


def classifier_dropout(config) -> nn.Dropout:
    """``config.classifier_dropout``, or the hidden dropout when it is None (transformers' rule)."""
    p = getattr(config, "classifier_dropout", None)
    return nn.Dropout(config.hidden_dropout_prob if p is None else p)


def sequence_classification_loss(config, logits, labels):
    """transformers' rule: ``problem_type`` (chosen on first use from num_labels and the labels' dtype)."""
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    kind = config.problem_type
    if kind == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if kind == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if kind == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"unknown problem_type {kind!r}")
