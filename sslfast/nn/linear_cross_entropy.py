"""LM-head loss module: ``nn.Linear`` weight + cross-entropy, without materializing the logits."""
from __future__ import annotations

import torch
from torch import nn

from sslfast.constants import IGNORE_INDEX
from sslfast.ops.cross_entropy import linear_cross_entropy

__all__ = ["LinearCrossEntropyLoss"]


class LinearCrossEntropyLoss(nn.Module):
    """``loss = CE(hidden @ weight.T + bias, labels)`` through :func:`sslfast.ops.linear_cross_entropy`.

    Holds an ``nn.Linear``-shaped ``weight`` (V, D) and optional ``bias`` (V,), or ties to an existing
    weight (e.g. the input embedding) with ``tied_weight=``. Forward takes ``hidden`` (..., D) and
    ``labels`` (...).
    """

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = False,
                 tied_weight: nn.Parameter | None = None, ignore_index: int = IGNORE_INDEX,
                 label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
                 backend: str = "auto"):
        super().__init__()
        if tied_weight is not None:
            if tuple(tied_weight.shape) != (num_classes, in_features):
                raise ValueError(f"LinearCrossEntropyLoss: tied_weight must be ({num_classes}, {in_features}), "
                                 f"got {tuple(tied_weight.shape)}")
            self.weight = tied_weight
        else:
            self.weight = nn.Parameter(torch.empty(num_classes, in_features))
            nn.init.normal_(self.weight, std=in_features ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.reduction, self.z_loss, self.backend = reduction, z_loss, backend

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(hidden, self.weight, labels, self.bias, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing, reduction=self.reduction,
                                    z_loss=self.z_loss, backend=self.backend)
