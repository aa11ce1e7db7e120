"""Fused linear + softmax cross-entropy. PLACEHOLDER: reference paths only.

The fused kernels land with the cross-entropy issue; until then the functions below compute the
same values the eager way, which defines the semantics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["linear_cross_entropy", "cross_entropy"]


def cross_entropy(logits, labels, *, ignore_index=-100, label_smoothing=0.0, reduction="mean", z_loss=0.0,
                  backend="auto"):
    """Cross-entropy over logits (..., V) and labels (...), as ``F.cross_entropy`` plus PaLM's z-loss."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    lab = labels.reshape(-1)
    loss = F.cross_entropy(flat, lab, ignore_index=ignore_index, label_smoothing=label_smoothing,
                           reduction="none")
    valid = lab != ignore_index
    if z_loss:
        loss = loss + z_loss * torch.logsumexp(flat, -1).pow(2) * valid
    if reduction == "none":
        return loss.reshape(labels.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


def linear_cross_entropy(hidden, weight, labels, bias=None, *, ignore_index=-100, label_smoothing=0.0,
                         reduction="mean", z_loss=0.0, backend="auto"):
    """``cross_entropy(F.linear(hidden, weight, bias), labels)`` without materializing the N×V logits."""
    return cross_entropy(F.linear(hidden, weight, bias), labels, ignore_index=ignore_index,
                         label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss)
