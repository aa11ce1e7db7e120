"""The language-model loss on labelled rows only: hidden states → (optional head transform) → vocabulary
projection fused with cross-entropy (:func:`sslfast.ops.linear_cross_entropy`). Used by BERT's masked-LM
heads, the transformers patch and GPT-2's causal-LM head."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from sslfast.constants import IGNORE_INDEX
from sslfast.models._common.fast_path import fused_path_allowed
from sslfast.ops.cross_entropy import cross_entropy, linear_cross_entropy

__all__ = ["labelled_rows_loss", "shifted_labels"]


def shifted_labels(labels: torch.Tensor, sequence_ends: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Causal-LM targets of packed rows: row t predicts ``labels[t + 1]``; the last row of each sequence
    (``sequence_ends``: their indices) predicts nothing. A (T,) integer copy, the hidden states stay put."""
    target = labels.roll(-1)
    return target.index_fill(0, sequence_ends, ignore_index)


def labelled_rows_loss(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                       bias: Optional[torch.Tensor] = None, *, transform: Optional[Callable] = None,
                       projection: Optional[nn.Module] = None, num_items_in_batch=None,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of the rows of ``hidden`` (T, D) whose label (T,) is not ``ignore_index``, through
    ``transform`` (e.g. BERT's prediction-head transform, run on those rows only) and the projection
    ``weight`` (V, D) / ``bias``, without the T×V logits. ``projection``: the module those weights belong to;
    when it is not plain (an adapter, a hook, a subclass: :mod:`sslfast.models._common.fast_path`) it is called on the
    labelled rows instead, so its logits are built for those rows. The mean over labelled rows, or their sum
    divided by ``num_items_in_batch`` (transformers' convention under gradient accumulation); 0 when no row is
    labelled."""
    keep = torch.nonzero(labels != ignore_index).squeeze(1)  # (M,)
    rows = hidden.index_select(0, keep)
    if transform is not None:
        rows = transform(rows)
    reduction = "mean" if num_items_in_batch is None else "sum"
    targets = labels.index_select(0, keep)
    if projection is None or fused_path_allowed("the LM loss's fused vocabulary projection", projection=projection):
        loss = linear_cross_entropy(rows, weight, targets, bias, ignore_index=ignore_index, reduction=reduction)
    else:
        logits = projection(rows)  # (M, V)
        loss = cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction) if keep.numel() \
            else logits.sum() * 0.0
    if num_items_in_batch is None:
        return loss
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch
